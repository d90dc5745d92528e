"""``harstream proxy``: XSUB/XPUB proxies giving several workers one address.

Ingest: producers connect to the front end (default tcp://127.0.0.1:5555, the
usual ingest address); workers connect their SUB to the back end (5557).
Output: workers connect their PUB to the back end (5558); subscribers connect
to the front end (5556, the usual output address). Run workers with
``harstream worker --proxy --shard k/N``. Only workers showing the output
secret (a file made by whichever starts first) may publish on the output back
end: see docs/protocol.md.
"""

from __future__ import annotations

import argparse

from harstream.commands._options import add_keys, check_endpoints, endpoint_help


def configure(parser: argparse.ArgumentParser) -> None:
    from harstream.stream.bus import addresses as bus

    parser.add_argument("--ingest", default=None, help=endpoint_help("ingest", "bind", "ingest front end"))
    parser.add_argument(
        "--ingest-backend",
        default=bus.DEFAULT_PROXY_INGEST_BACKEND,
        help="where workers connect their SUB (default %(default)s)",
    )
    parser.add_argument("--output", default=None, help=endpoint_help("output", "bind", "output front end"))
    parser.add_argument(
        "--output-backend",
        default=bus.DEFAULT_PROXY_OUTPUT_BACKEND,
        help="where workers connect their PUB (default %(default)s)",
    )
    parser.add_argument(
        "--output-secret",
        default=None,
        metavar="FILE",
        help="file of the secret workers must show to publish on the output back end; made if "
        "missing (default: beside an ipc back end, else under $XDG_RUNTIME_DIR or ~/.cache/harstream)",
    )
    parser.add_argument(
        "--open-output",
        action="store_true",
        help="let any publisher into the output back end (anyone who can reach it can forge predictions)",
    )
    add_keys(parser)


def run(args: argparse.Namespace) -> int:
    from harstream.commands._running import bus_errors, stop_on_signals
    from harstream.stream.bus.addresses import ingest_address, output_address
    from harstream.stream.bus.proxy import default_output_secret, run_proxies

    check_endpoints(
        "proxy",
        args.keys,
        ("--ingest", args.ingest or ingest_address(), "bind"),
        ("--ingest-backend", args.ingest_backend, "bind"),
        ("--output", args.output or output_address(), "bind"),
        ("--output-backend", args.output_backend, "bind"),
    )
    stop = stop_on_signals()
    with bus_errors("proxy"):
        run_proxies(
            args.ingest,
            args.ingest_backend,
            args.output,
            args.output_backend,
            stop=stop,
            printer=lambda line: print(line, flush=True),
            keys=args.keys,
            output_secret=None
            if args.open_output
            else (args.output_secret or default_output_secret(args.output_backend)),
        )
    return 0
