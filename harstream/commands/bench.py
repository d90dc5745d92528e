"""``harstream bench <name>``: benchmarks, one module each in harstream/bench/.

Each benchmark module has ``configure(parser)`` and ``run(args) -> int``,
measures against a baseline in the same run, and prints a Markdown row or
table ready for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import importlib

BENCHMARKS = {
    "inference": "per-window latency and batched throughput of each model runtime vs model.predict",
    "capacity": "concurrent 50 Hz devices one (or two sharded) workers keep up with",
    "transport": "samples/s through simulator -> bus -> worker with inference off",
    "gateway": "devices and samples/s one gateway process sustains",
    "failover": "kill -9 one of several workers on the durable Redis log: takeover time, lost and duplicate windows",
    "pipeline": "preprocessing cost per device-second vs a batch offline filter",
    "restart": "first prediction and windows lost after a worker is killed and restarted",
    "stairs": "stairs on evidence: the worker's published label on HAPT held-out subjects, SIMULATED pressure on/off",
    "phones": "held-out sessions streamed in real time as phones through a real gateway and worker, scored on "
    "the label each phone was sent back (waist, SIMULATED thigh and wrist, with and without fidgets)",
    "personal_models": "personal models: noticed -> serving, load time, memory, the heads' cost in a batch",
    "between": "the worker core's CPU with and without the display-only updates between windows (in process)",
    "memory": "the worker core's memory per device and its growth while devices come and go (in process)",
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, help_text in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsShown)
        # Benchmark modules import only argparse at module level; the heavy
        # imports happen inside run().
        _module(name).configure(p)


class DefaultsShown(argparse.HelpFormatter):
    """Help that shows every option's default (a benchmark's settings are its
    figures' conditions), unless the option's help already says it."""

    def _format_action(self, action: argparse.Action) -> str:
        default = action.default
        if (
            action.option_strings
            and default not in (None, False, argparse.SUPPRESS)
            and "default" not in (action.help or "")
        ):
            shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
            action = copy.copy(action)
            action.help = f"{action.help or ''} (default {shown.replace('%', '%%')})".strip()
        return super()._format_action(action)


def run(args: argparse.Namespace) -> int:
    return int(_module(args.benchmark).run(args) or 0)


def _module(name: str):
    return importlib.import_module(f"harstream.bench.{name}")
