"""``harstream simulate``: replay recorded sessions as live devices."""

from __future__ import annotations

import argparse
import sys

from harstream.commands._options import COUNT, HWM, SECONDS, SUBJECT, Number, add_keys, check_endpoints, endpoint_help


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--subjects",
        type=SUBJECT,
        nargs="+",
        metavar="S",
        help="subjects whose sessions to replay (default: HAPT's held-out test subjects 2 4 9 10 12 13 18 20 24; "
        "every session of a CSV or Sensor Logger --source, where one without a subject column or _userNN "
        "in its name is subject 0)",
    )
    parser.add_argument(
        "--source",
        default=None,
        help="recording source: a HAPT RawData folder, a CSV file or folder, Sensor Logger exports (docs/recordings.md) "
        "(default: the embedded HAPT data)",
    )
    parser.add_argument(
        "--speed",
        type=Number(float, 0, 1000),
        default=1.0,
        help="times real time (default 1.0 = 50 Hz wall clock; 0 = as fast as the bus takes)",
    )
    parser.add_argument("--loop", action="store_true", help="repeat each recording forever")
    parser.add_argument(
        "--chunk", type=Number(int, 1, 50_000), default=10, help="samples per message (default 10 = 0.2 s)"
    )
    parser.add_argument(
        "--devices",
        type=COUNT,
        default=None,
        help="number of concurrent devices, cycling the sessions with different start offsets "
        "(default: one per session)",
    )
    parser.add_argument("--publish", default=None, help=endpoint_help("ingest", "connect"))
    parser.add_argument(
        "--duration",
        type=SECONDS,
        default=None,
        help="stop after this many seconds (with --gateway: each phone's first SECONDS of its session; "
        "default: when the sessions end, never with --loop)",
    )
    parser.add_argument(
        "--wait",
        type=Number(int, 0, 100_000),
        default=0,
        metavar="N",
        help="start only once N subscriptions reached the socket (at most 10 s)",
    )
    add_keys(parser)
    parser.add_argument("--hwm", type=HWM, default=100_000, help="send high-water mark in messages (default 100000)")
    parser.add_argument(
        "--pressure",
        type=Number(float, 0.1, 100.0),
        nargs="?",
        const=10.0,
        default=None,
        metavar="HZ",
        help="send a SIMULATED barometer at HZ (default 10) from the recordings' stairs labels, with noise, "
        "drift, door steps and quantisation (simulator/barometer.py); a recording with its own pressure "
        "(a CSV's pressure_hpa column) sends that instead",
    )
    parser.add_argument(
        "--placement",
        choices=("waist", "any"),
        default=None,
        help="declare this placement in every message (any: the worker serves the placement-free model)",
    )
    parser.add_argument(
        "--gateway",
        default=None,
        metavar="ws://HOST:PORT/ws",
        help="send each session as a phone over this gateway WebSocket instead of the bus (real time only; "
        "m/s² and deg/s at --phone-rate Hz with uneven reading times; phones are served in any mode) "
        "and print what each phone was sent back",
    )
    parser.add_argument(
        "--phone-rate",
        type=Number(float, 10.0, 500.0),
        default=100.0,
        help="with --gateway: each phone's rate (Hz; default 100)",
    )
    parser.add_argument(
        "--no-tail-replay",
        dest="tail_replay",
        action="store_false",
        help="do not send each device's last window again to a new subscriber "
        "(a restarted worker then needs 2.56 s of fresh samples per device)",
    )


def run(args: argparse.Namespace) -> int:
    from harstream.commands._running import bus_errors, stop_on_signals
    from harstream.simulator.replay import ReplaySchedule, devices_for, replay
    from harstream.stream.bus.addresses import ingest_address
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, RecordingError, detect_layout, load_dataset

    check_endpoints("simulate", args.keys, ("--publish", args.publish or ingest_address(), "connect"))

    try:
        dataset = load_dataset(args.source)
        layout = detect_layout(args.source)
    except RecordingError as exc:  # a bad file: said in one line, as `harstream data` says it
        print(f"harstream simulate: {exc}", file=sys.stderr)
        return 2
    # HAPT (embedded or RawData): the subjects no model saw; own recordings: all of them
    hapt = layout in ("embedded", "hapt-rawdata")
    subjects = args.subjects or (list(UCI_TEST_SUBJECTS) if hapt else dataset.subjects())
    recordings = dataset.of_subjects(subjects)
    if not recordings:
        raise SystemExit(
            f"simulate: no sessions of subjects {subjects} in {dataset.source} (it has subjects {dataset.subjects()})"
        )
    if args.pressure is not None:
        from harstream.simulator.barometer import SimulatedBarometer, with_simulated_pressure

        model = SimulatedBarometer(rate_hz=args.pressure)  # 0.1-100 Hz, checked by the option's type
        recordings = [
            rec if rec.pressure is not None else with_simulated_pressure(rec, model, seed=i)
            for i, rec in enumerate(recordings)
        ]
    if args.gateway:
        return _as_phones(args, recordings)
    devices = devices_for(recordings, args.devices)
    schedule = ReplaySchedule(devices, chunk=args.chunk, loop=args.loop)
    print(
        f"simulate: {len(devices)} devices from {len(recordings)} sessions of subjects "
        f"{' '.join(map(str, subjects))}, speed {args.speed or 'max'}, chunk {args.chunk}"
        + (f", SIMULATED barometer at {args.pressure:g} Hz" if args.pressure is not None else ""),
        flush=True,
    )
    with bus_errors("simulate"):
        stats = replay(
            schedule,
            publish=args.publish,
            speed=args.speed,
            sndhwm=args.hwm,
            wait_subscriptions=args.wait,
            duration=args.duration,
            keys=args.keys,
            tail_replay=args.tail_replay,
            meta={"placement": args.placement} if args.placement else None,
            # a barometer's readings keep their spacing against the samples at any --speed:
            # a simulated one, or a recording's own (a CSV's pressure_hpa column)
            stream_clock=any(rec.pressure is not None for rec in recordings),
            stop=stop_on_signals(),
            printer=lambda line: print(line, flush=True),
        )
    print(stats.line(), flush=True)
    return 0


def _as_phones(args: argparse.Namespace, recordings: list) -> int:
    """The sessions as phones through the gateway (simulator/phones.py), in real time."""
    import asyncio
    from collections import Counter
    from dataclasses import replace
    from urllib.parse import urlsplit

    from harstream.simulator.phones import PhoneHabits, replay_phones

    if urlsplit(args.gateway).scheme not in ("ws", "wss"):
        raise SystemExit(f"simulate: --gateway {args.gateway!r}: expected a ws:// or wss:// address")
    if args.speed != 1.0 or args.loop or args.devices is not None:
        raise SystemExit(
            "simulate: --gateway streams each session once as one phone in real time (no --speed, --loop or --devices)"
        )
    if args.duration is not None:
        recordings = [
            replace(r, samples=r.samples[: int(args.duration * 50)], labels=r.labels[: int(args.duration * 50)])
            for r in recordings
        ]
    print(
        f"simulate: {len(recordings)} sessions as phones replay-0 … replay-{len(recordings) - 1} "
        f"at {args.phone_rate:g} Hz through {args.gateway}",
        flush=True,
    )
    try:
        runs = asyncio.run(replay_phones(args.gateway, recordings, PhoneHabits(rate_hz=args.phone_rate)))
    except KeyboardInterrupt:
        return 130
    for run in runs:
        shown = Counter(p["smoothed"] for p in run.predictions if not p.get("between"))
        print(
            f"simulate: phone:{run.device} ({run.recording.name}): {sum(shown.values())} labels back "
            f"{dict(shown.most_common())}" + (f", {len(run.errors)} errors: {run.errors[:3]}" if run.errors else ""),
            flush=True,
        )
    return 1 if any(run.errors for run in runs) else 0
