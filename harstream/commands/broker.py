"""``harstream broker``: run redis-server for the durable log, data under the project."""

from __future__ import annotations

import argparse

from harstream.commands._options import PORT, Number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default="runs/broker", help="data and log folder (default runs/broker)")
    parser.add_argument("--port", type=PORT, default=6379, help="TCP port on 127.0.0.1 (default 6379)")
    parser.add_argument("--unix", default=None, metavar="PATH", help="serve on this Unix socket instead of TCP")
    parser.add_argument(
        "--persist",
        action="store_true",
        help="append-only file fsynced every second (default: none; the log is a retention buffer)",
    )
    parser.add_argument(
        "--maxmemory-mb",
        type=Number(int, 0, 1 << 20),
        default=0,
        help="refuse writes past this (default 0: no limit)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harstream.commands._running import stop_on_signals
    from harstream.stream.durable.broker import BrokerError, start_redis

    stop = stop_on_signals()  # before redis-server starts: a SIGTERM meanwhile must not orphan it
    try:
        proc, url = start_redis(
            Path(args.dir),
            port=args.port,
            unix_socket=Path(args.unix) if args.unix else None,
            persist=args.persist,
            maxmemory_mb=args.maxmemory_mb,
        )
    except BrokerError as exc:
        raise SystemExit(f"broker: {exc}") from None
    print(
        f"broker: redis-server listening on {url}, data in {Path(args.dir).resolve()}, "
        f"persistence {'AOF everysec' if args.persist else 'off'}",
        flush=True,
    )
    print(f"broker: next `harstream bridge --redis {url}` and `harstream worker --redis {url}`", flush=True)
    while proc.poll() is None:
        if stop.wait(0.2):
            proc.terminate()
            proc.wait(10)
            return 0
    return proc.returncode
