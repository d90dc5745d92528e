"""``harstream simulate``: replay recorded sessions as live devices."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--subjects",
        type=int,
        nargs="+",
        metavar="S",
        help="subjects whose sessions to replay (default: the held-out test subjects 2 4 9 10 12 13 18 20 24)",
    )
    parser.add_argument("--source", default=None, help="recording source (default: the embedded HAPT data)")
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="times real time (default 1.0 = 50 Hz wall clock; 0 = as fast as the bus takes)",
    )
    parser.add_argument("--loop", action="store_true", help="repeat each recording forever")
    parser.add_argument("--chunk", type=int, default=10, help="samples per message (default 10 = 0.2 s)")
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        help="number of concurrent devices, cycling the sessions with different start offsets",
    )
    parser.add_argument(
        "--publish",
        default=None,
        help="ingest endpoint (default $HARSTREAM_INGEST or tcp://127.0.0.1:5555, connected; prefix @ to bind)",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument(
        "--wait",
        type=int,
        default=0,
        metavar="N",
        help="start only once N subscriptions reached the socket (at most 10 s)",
    )
    parser.add_argument(
        "--keys",
        default=None,
        metavar="DIR",
        help="CURVE key folder (`harstream keys DIR`); required for an address off loopback",
    )
    parser.add_argument("--hwm", type=int, default=100_000, help="send high-water mark in messages")
    parser.add_argument(
        "--no-tail-replay",
        dest="tail_replay",
        action="store_false",
        help="do not send each device's last window again to a new subscriber "
        "(a restarted worker then needs 2.56 s of fresh samples per device)",
    )


def run(args: argparse.Namespace) -> int:
    from harstream.simulator.replay import ReplaySchedule, devices_for, replay
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_dataset

    subjects = args.subjects or list(UCI_TEST_SUBJECTS)
    dataset = load_dataset(args.source)
    recordings = dataset.of_subjects(subjects)
    if not recordings:
        raise SystemExit(
            f"simulate: no sessions of subjects {subjects} in {dataset.source} (it has subjects {dataset.subjects()})"
        )
    if args.devices is not None and args.devices < 1:
        raise SystemExit("simulate: --devices must be at least 1")
    devices = devices_for(recordings, args.devices)
    schedule = ReplaySchedule(devices, chunk=args.chunk, loop=args.loop)
    print(
        f"simulate: {len(devices)} devices from {len(recordings)} sessions of subjects "
        f"{' '.join(map(str, subjects))}, speed {args.speed or 'max'}, chunk {args.chunk}",
        flush=True,
    )
    stats = replay(
        schedule,
        publish=args.publish,
        speed=args.speed,
        sndhwm=args.hwm,
        wait_subscriptions=args.wait,
        duration=args.duration,
        keys=args.keys,
        tail_replay=args.tail_replay,
        printer=lambda line: print(line, flush=True),
    )
    print(stats.line(), flush=True)
    return 0
