"""``harstream bridge``: samples from the ZeroMQ ingest bus into the partitioned Redis log."""

from __future__ import annotations

import argparse

from harstream.commands._options import (
    PARTITIONS,
    STATS_EVERY,
    Number,
    add_broker,
    add_keys,
    check_broker,
    check_endpoints,
    endpoint_help,
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_broker(
        parser, "redis://127.0.0.1:6379/0", "broker URL (redis://127.0.0.1:PORT or unix://PATH; default %(default)s)"
    )
    parser.add_argument("--ingest", default=None, help=endpoint_help("ingest", "bind"))
    parser.add_argument("--partitions", type=PARTITIONS, default=12, help="partitions of the log (default 12)")
    parser.add_argument(
        "--flush-ms", type=Number(float, 1, 1000), default=20.0, help="write interval per partition (default 20)"
    )
    parser.add_argument(
        "--retention", type=Number(float, 10, 86_400), default=60.0, help="seconds of log kept (default 60)"
    )
    parser.add_argument(
        "--stats-every", type=STATS_EVERY, default=5.0, help="seconds between printed stats lines (default 5)"
    )
    add_keys(parser)


def run(args: argparse.Namespace) -> int:
    from harstream.commands._running import bus_errors, stop_on_signals
    from harstream.stream.bus.addresses import ingest_address
    from harstream.stream.durable.bridge import serve_bridge

    check_broker("bridge", args)
    check_endpoints("bridge", args.keys, ("--ingest", args.ingest or ingest_address(), "bind"))
    stop = stop_on_signals()
    try:
        with bus_errors("bridge"):
            final = serve_bridge(
                args.redis,
                args.ingest,
                args.partitions,
                args.flush_ms,
                args.retention,
                stop=stop,
                stats_every=args.stats_every,
                printer=lambda line: print(line, flush=True),
                keys=args.keys,
                allow_remote_broker=args.allow_remote_broker,
            )
    except ValueError as exc:  # the broker refused, the partition count disagreeing
        raise SystemExit(f"bridge: {exc}") from None
    print(f"bridge: stopped; {final}", flush=True)
    return 0
