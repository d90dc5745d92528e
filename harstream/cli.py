"""The ``harstream`` command: one entry point, one module per subcommand.

Each subcommand lives in ``harstream/commands/<name>.py`` with two functions,
``configure(parser)`` and ``run(args) -> int``; it is imported only when
used, so ``harstream tail`` does not pay for importing TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from harstream.logs import configure_logging, verbose_requested

COMMANDS = {
    "data": "summarise a recording source (embedded HAPT, RawData folder, CSV, UCI folder)",
    "train": "train a model on windows made by the streaming pipeline",
    "calibrate": "fit a personal model from one device's labelled CSVs (postures + placement-free movement)",
    "evaluate": "score the shipped model (or --artifact) on the held-out subjects; --model: repeat train+evaluate, "
    "mean ± std",
    "simulate": "replay recorded sessions as live 50 Hz devices on the bus",
    "worker": "preprocess streams, run the model, publish predictions",
    "broker": "run redis-server for the durable partitioned log (data in runs/broker/)",
    "bridge": "move samples from the ZeroMQ ingest bus into the partitioned Redis log",
    "proxy": "XSUB/XPUB proxy: one well-known address for publishers and subscribers",
    "tail": "print live predictions and stats from the bus",
    "keys": "make CURVE keys for a bus reachable from other machines",
    "gateway": "accept phone sensor apps (WebSocket/HTTP) and publish their samples",
    "dashboard": "the live Streamlit dashboard",
    "demo": "simulator + worker + dashboard in one command",
    "bench": "benchmarks (results go to docs/BENCHMARKS.md)",
}


def _module(name: str):
    return importlib.import_module(f"harstream.commands.{name}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="harstream", description="Real-time human activity recognition")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, TensorFlow's own logs included (also: HARSTREAM_LOG=debug)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    # Before any subcommand is imported: TensorFlow reads its log level once,
    # when it is first imported.
    top_level = argv[: argv.index(chosen)] if chosen else argv
    configure_logging(verbose_requested("-v" in top_level or "--verbose" in top_level))
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Configure only the chosen subcommand: importing all of them would
        # import TensorFlow for every call.
        if name == chosen:
            _module(name).configure(p)
    args = parser.parse_args(argv)
    try:
        return int(_module(args.command).run(args) or 0)
    except KeyboardInterrupt:
        return 130
