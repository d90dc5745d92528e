"""``harstream bench transport``: the bus's ceiling with inference off.

Simulator -> ZeroMQ -> worker (``--runtime none``: full decoding, per-device
pipelines and windowing, uniform probabilities instead of a model), the
simulator sending as fast as the bus takes (``--speed 0``, back-pressured,
lossless). Reports samples/s sent and taken, and the same in device
equivalents at 50 Hz.
"""

from __future__ import annotations

import argparse

from harstream.commands._options import SECONDS, SECONDS_OR_OFF, Number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=Number(int, 1, 1_000_000), nargs="+", default=[1000])
    parser.add_argument("--duration", type=SECONDS, default=20.0)
    parser.add_argument("--warmup", type=SECONDS_OR_OFF, default=3.0)
    parser.add_argument("--chunk", type=Number(int, 1, 50_000), nargs="+", default=[10, 25], help="samples per message")
    parser.add_argument("--shards", type=Number(int, 1, 64), nargs="+", default=[1])


def run(args: argparse.Namespace) -> int:
    import os

    from harstream.bench.capacity import measure

    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores shared with other jobs)")
    lines = []
    for shards in args.shards:
        for chunk in args.chunk:
            for n in args.devices:
                ns = argparse.Namespace(
                    duration=args.duration,
                    warmup=args.warmup,
                    runtime="none",
                    model=None,
                    chunk=chunk,
                    speed=0.0,
                    profile=None,
                )
                r = measure(n, shards, ns)
                line = (
                    f"| {n} | {chunk} | {shards} | {r['offered']:,.0f} | {r['taken']:,.0f} | "
                    f"{r['taken'] / 50:,.0f} | {r['taken'] / chunk:,.0f} | {r['sim_drops']} / {r['worker_drops']} "
                    f"| {r['worker_cpu']:.2f} | {r['taken'] / r['worker_cpu'] if r['worker_cpu'] > 0 else 0:,.0f} "
                    f"| {r['sim_cpu']:.2f} | {r['load']:.1f} |"
                )
                print(line, flush=True)
                lines.append(line)
    print(
        "\n| devices | chunk | workers | sent samples/s | taken samples/s | = devices at 50 Hz | messages/s "
        "| drops (sim / worker) | worker CPU (cores) | samples per worker CPU-s | simulator CPU | load avg |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(lines))
    return 0
