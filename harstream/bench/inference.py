"""``harstream bench inference``: each serving runtime against ``model.predict``.

Per-window latency (a batch of one) and batched throughput of every runtime,
as ratios against the seed's ``model.predict`` on one window measured in the
same run, and each runtime's agreement with Keras on all held-out test
windows. Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model artifact (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per measurement (median)")
    parser.add_argument("--batch", type=int, default=64, help="batch size for throughput")
    parser.add_argument("--check", type=int, default=0,
                        help="test windows to check agreement on (default 0 = all)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import os
    import time

    import numpy as np

    from harstream.models.artifact import load_artifact
    from harstream.models.runtime import BUILDERS, KerasRuntime, check_agreement, check_windows, time_runtime

    artifact = load_artifact(args.model)
    x = check_windows(args.check, context_steps=artifact.context_steps)
    print(f"model {artifact.model_id}, {len(x)} held-out test windows, load average {os.getloadavg()[0]:.1f}")
    keras_rt = KerasRuntime(artifact)
    reference = keras_rt.predict(x)
    one, batch = x[:1], x[: args.batch]
    rows = []
    runtimes = [("keras", lambda: keras_rt)] + [(n, (lambda n=n: BUILDERS[n](artifact))) for n in ("tf-function", "tflite")]
    base = None
    for name, build in runtimes:
        start = time.perf_counter()
        rt = build()
        built = time.perf_counter() - start
        single = time_runtime(rt, one, args.repeats)
        batched = time_runtime(rt, batch, max(3, args.repeats // 3))
        agreement = check_agreement(rt, reference, x)
        if base is None:
            base = single
        rows.append((name, built, single, batched, agreement))
        print(f"  {name}: 1 window {single * 1000:.2f} ms, batch {len(batch)} {batched * 1000:.1f} ms", flush=True)
    print()
    print(f"| runtime | build s | 1 window ms | speed-up vs predict(1) | batch {args.batch}: windows/s "
          "| throughput vs predict(1) | argmax mismatches | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name, built, single, batched, agreement in rows:
        wps = len(batch) / batched
        print(f"| {name} | {built:.1f} | {single * 1000:.2f} | {base / single:.1f}× | {wps:,.0f} | "
              f"{wps * base:.0f}× | {agreement.argmax_mismatches} / {agreement.windows} | {agreement.max_abs_diff:.1e} |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    return 0
