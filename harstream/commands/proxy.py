"""``harstream proxy``: XSUB/XPUB proxies giving several workers one address.

Ingest: producers connect to the front end (default tcp://127.0.0.1:5555, the
usual ingest address); workers connect their SUB to the back end (5557).
Output: workers connect their PUB to the back end (5558); subscribers connect
to the front end (5556, the usual output address). Run workers with
``harstream worker --proxy --shard k/N``.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    from harstream.stream.bus import addresses as bus

    parser.add_argument("--ingest", default=None, help=f"ingest front end, bound (default {bus.DEFAULT_INGEST})")
    parser.add_argument(
        "--ingest-backend",
        default=bus.DEFAULT_PROXY_INGEST_BACKEND,
        help="where workers connect their SUB (default %(default)s)",
    )
    parser.add_argument("--output", default=None, help=f"output front end, bound (default {bus.DEFAULT_OUTPUT})")
    parser.add_argument(
        "--output-backend",
        default=bus.DEFAULT_PROXY_OUTPUT_BACKEND,
        help="where workers connect their PUB (default %(default)s)",
    )
    parser.add_argument(
        "--keys",
        default=None,
        metavar="DIR",
        help="CURVE key folder (`harstream keys DIR`); required for an address off loopback",
    )


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from harstream.stream.bus.proxy import run_proxies

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run_proxies(
            args.ingest,
            args.ingest_backend,
            args.output,
            args.output_backend,
            stop=stop,
            printer=lambda line: print(line, flush=True),
            keys=args.keys,
        )
    except KeyboardInterrupt:
        pass
    except ValueError as exc:  # BusAuthError
        raise SystemExit(f"proxy: {exc}") from None
    return 0
