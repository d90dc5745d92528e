"""``harstream tail``: print live predictions and stats from the output bus."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--subscribe",
        default=None,
        help="output endpoint (default $HARSTREAM_OUTPUT or tcp://127.0.0.1:5556, connected)",
    )
    parser.add_argument("--device", action="append", default=None, metavar="D", help="only this device (repeatable)")
    parser.add_argument("--stats", action="store_true", help="also print the workers' stats lines")
    parser.add_argument(
        "--keys",
        default=None,
        metavar="DIR",
        help="CURVE key folder (`harstream keys DIR`); required for an address off loopback",
    )
    parser.add_argument("--count", type=int, default=None, help="exit after this many predictions")


def format_prediction(p) -> str:
    """One terminal line per prediction."""
    conf = max(p.smoothed_probs) if p.smoothed_probs else 0.0
    truth = f"  truth {p.truth}" if p.truth else ""
    mark = "" if not p.truth else ("  ok" if p.truth == p.smoothed else "  ≠")
    return (
        f"{p.device:<20} #{p.window:<5} {p.smoothed:<18} {conf:5.2f}  (raw {p.label}){truth}{mark}"
        f"  {p.latency_ms:.1f} ms"
    )


def run(args: argparse.Namespace) -> int:
    import zmq

    from harstream.stream.bus.addresses import attach, output_address
    from harstream.stream.core.protocol import Prediction, decode_output
    from harstream.stream.core.worker import format_stats

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, 1024 * 1024)  # a larger output message is not the worker's
    for device in args.device or [""]:
        sock.setsockopt(zmq.SUBSCRIBE, b"p/" + (device.encode() + b"/" if device else b""))
    if args.stats:
        sock.setsockopt(zmq.SUBSCRIBE, b"stats/")
    from harstream.stream.bus.auth import BusAuthError, secure, start_authenticator

    auth = None
    try:
        if secure(sock, args.subscribe or output_address(), "connect", args.keys) and args.keys is not None:
            auth = start_authenticator(ctx, args.keys)  # a binding tail lets in listed workers only
    except BusAuthError as exc:
        raise SystemExit(f"tail: {exc}") from None
    address = attach(sock, args.subscribe or output_address(), "connect")
    print(f"tail: listening on {address}", flush=True)
    seen, bad = 0, 0
    try:
        while args.count is None or seen < args.count:
            frames = sock.recv_multipart()
            try:
                msg = decode_output(frames)
                line = format_prediction(msg) if isinstance(msg, Prediction) else format_stats(msg)
            except Exception as exc:  # malformed, or fields of the wrong type: skip it
                bad += 1
                if bad == 1:
                    print(f"tail: skipping malformed message ({exc})", flush=True)
                continue
            if isinstance(msg, Prediction):
                seen += 1
            print(line, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(0)
        if auth is not None:
            auth.stop()
    return 0
