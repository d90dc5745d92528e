"""``harstream tail``: print live predictions and stats from the output bus;
with ``--final``, the devices' final history instead (``--json``: one JSON
object per final piece, ``{"device", "start", "end", "label"}``, bus time)."""

from __future__ import annotations

import argparse
import sys

from harstream.commands._options import COUNT, add_keys, endpoint_help
from harstream.logs import terminal_safe


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subscribe", default=None, help=endpoint_help("output", "connect"))
    parser.add_argument("--device", action="append", default=None, metavar="D", help="only this device (repeatable)")
    parser.add_argument("--stats", action="store_true", help="also print the workers' stats lines")
    add_keys(parser)
    parser.add_argument(
        "--count", type=COUNT, default=None, help="exit after this many predictions (with --final: final pieces)"
    )
    parser.add_argument(
        "--final", action="store_true", help="print the final history (settled pieces of time), not predictions"
    )
    parser.add_argument("--json", action="store_true", help="with --final: one JSON object per line")


def format_piece(device: str, piece: dict, as_json: bool) -> str:
    """One line per final piece of history.

    >>> format_piece("d1", {"start": 10.0, "end": 11.28, "label": "SITTING", "final": True}, True)
    '{"device": "d1", "start": 10.0, "end": 11.28, "label": "SITTING"}'
    >>> format_piece("d1", {"start": 10.0, "end": 11.28, "label": "SITTING", "final": True}, False)
    'd1                   10.000 .. 11.280  (1.28 s)  SITTING'
    """
    import json

    if as_json:
        return json.dumps({"device": device, "start": piece["start"], "end": piece["end"], "label": piece["label"]})
    length = piece["end"] - piece["start"]
    return f"{device:<20} {piece['start']:.3f} .. {piece['end']:.3f}  ({length:.2f} s)  {piece['label']}"


def format_prediction(p) -> str:
    """One terminal line per prediction: the label shown, its confidence, the
    window's own label, and for a replay its truth, marked ``ok`` or ``≠``
    (not marked where the recording has no label there: truth ``unknown``)."""
    from harstream.stream.core.activities import UNKNOWN

    conf = max(p.smoothed_probs) if p.smoothed_probs else 0.0
    truth = f"  truth {p.truth}" if p.truth else ""
    mark = "" if not p.truth or p.truth == UNKNOWN else ("  ok" if p.truth == p.smoothed else "  ≠")
    return (
        f"{p.device:<20} #{p.window:<5} {p.smoothed:<18} {conf:5.2f}  (raw {p.label}){truth}{mark}"
        f"  {p.latency_ms:.1f} ms"
    )


def run(args: argparse.Namespace) -> int:
    import zmq

    from harstream.commands._running import bus_errors, stop_on_signals
    from harstream.stream.bus.addresses import output_address
    from harstream.stream.bus.sockets import OUTPUT_MESSAGE_BYTES, BusSockets
    from harstream.stream.core.protocol import HistoryUpdate, Prediction, decode_output
    from harstream.stream.core.worker import format_stats

    if args.json and not args.final:
        print("harstream tail: --json goes with --final (one JSON object per final piece)", file=sys.stderr)
        return 2
    kind = b"h/" if args.final else b"p/"
    topics = [kind + (device.encode() + b"/" if device else b"") for device in args.device or [""]]
    if args.stats:
        topics.append(b"stats/")
    # A binding tail (@tcp://...) with keys lets in listed workers only.
    sockets = BusSockets(args.keys)
    with bus_errors("tail"):
        sock = sockets.open(
            zmq.SUB,
            args.subscribe or output_address(),
            "connect",
            max_message=OUTPUT_MESSAGE_BYTES,  # a larger output message is not the worker's
            subscribe=topics,
        )
    stop = stop_on_signals()
    # with --json stdout holds only JSON lines
    where = sys.stderr if args.json else sys.stdout
    print(f"tail: listening on {sock.getsockopt_string(zmq.LAST_ENDPOINT)}", file=where, flush=True)
    seen, bad = 0, 0
    try:
        while (args.count is None or seen < args.count) and not stop.is_set():
            if not sock.poll(200):
                continue
            frames = sock.recv_multipart()
            try:
                msg = decode_output(frames)
                if isinstance(msg, HistoryUpdate):
                    lines = [format_piece(msg.device, p, args.json) for p in msg.final_pieces()]
                else:
                    lines = [format_prediction(msg) if isinstance(msg, Prediction) else format_stats(msg)]
            except Exception as exc:  # malformed, or fields of the wrong type: skip it
                bad += 1
                if bad == 1:
                    print(terminal_safe(f"tail: skipping malformed message ({exc})"), file=sys.stderr, flush=True)
                continue
            if isinstance(msg, HistoryUpdate):
                for line in lines[: None if args.count is None else args.count - seen]:
                    print(terminal_safe(line), flush=True)
                    seen += 1
                continue
            if isinstance(msg, Prediction):
                seen += 1
            print(terminal_safe(lines[0]), flush=True)
    finally:
        sockets.close(0)
    return 0
