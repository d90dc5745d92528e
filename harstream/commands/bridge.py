"""``harstream bridge``: samples from the ZeroMQ ingest bus into the partitioned Redis log."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/0",
        help="broker URL (redis://127.0.0.1:PORT or unix://PATH; default %(default)s)",
    )
    parser.add_argument(
        "--ingest", default=None, help="ingest endpoint (default $HARSTREAM_INGEST or tcp://127.0.0.1:5555, bound)"
    )
    parser.add_argument("--partitions", type=int, default=12, help="partitions of the log (default 12)")
    parser.add_argument("--flush-ms", type=float, default=20.0, help="write interval per partition (default 20)")
    parser.add_argument("--retention", type=float, default=60.0, help="seconds of log kept (default 60)")
    parser.add_argument("--stats-every", type=float, default=5.0, help="seconds between printed stats lines")


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from harstream.stream.durable.bridge import serve_bridge

    if not 1 <= args.partitions <= 1024:
        raise SystemExit(f"bridge: --partitions {args.partitions} outside 1..1024")
    if not 1 <= args.flush_ms <= 1000 or not 10 <= args.retention <= 86400:
        raise SystemExit("bridge: --flush-ms must be within 1..1000 and --retention within 10..86400 s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        final = serve_bridge(
            args.redis,
            args.ingest,
            args.partitions,
            args.flush_ms,
            args.retention,
            stop=stop,
            stats_every=args.stats_every,
            printer=lambda line: print(line, flush=True),
        )
    except ValueError as exc:
        raise SystemExit(f"bridge: {exc}") from None
    except KeyboardInterrupt:
        return 0
    print(f"bridge: stopped; {final}", flush=True)
    return 0
