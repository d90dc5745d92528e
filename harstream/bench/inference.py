"""``harstream bench inference``: each serving runtime against ``model.predict``.

Per-window latency (a batch of one) and batched throughput of every runtime,
as ratios against the seed's ``model.predict`` on one window measured in the
same run, and each runtime's agreement with Keras on all held-out test
windows. For a staged context model (:mod:`harstream.models.staged`) also
the way a worker serves it: each new window's features once, then the
decision on the stack of feature vectors (a decision costs one window's
features, not 1 + k). Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse

from harstream.commands._options import COUNT, Number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model artifact (default: the shipped model)")
    parser.add_argument("--repeats", type=COUNT, default=30, help="timed calls per measurement (median)")
    parser.add_argument("--batch", type=Number(int, 1, 4096), default=64, help="batch size for throughput")
    parser.add_argument(
        "--check", type=Number(int, 0, 10**7), default=0, help="test windows to check agreement on (default 0 = all)"
    )


def run(args: argparse.Namespace) -> int:
    import os
    import time

    from harstream.models.artifact import load_artifact
    from harstream.models.runtime import BUILDERS, KerasRuntime, check_agreement, check_windows, time_runtime

    artifact = load_artifact(args.model)
    x = check_windows(args.check, context_steps=artifact.context_steps)
    print(f"model {artifact.model_id}, {len(x)} held-out test windows, load average {os.getloadavg()[0]:.1f}")
    keras_rt = KerasRuntime(artifact)
    reference = keras_rt.predict(x)
    one, batch = x[:1], x[: args.batch]
    rows = []
    runtimes = [("keras", lambda: keras_rt)] + [
        (n, (lambda n=n: BUILDERS[n](artifact))) for n in ("tf-function", "tflite")
    ]
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
    if artifact.stages:
        rows += staged_rows(artifact, x, reference, args)
    print()
    print(
        f"| runtime | build s | 1 window ms | speed-up vs predict(1) | batch {args.batch}: windows/s "
        "| throughput vs predict(1) | argmax mismatches | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, built, single, batched, agreement in rows:
        wps = len(batch) / batched
        print(
            f"| {name} | {built:.1f} | {single * 1000:.2f} | {base / single:.1f}× | {wps:,.0f} | "
            f"{wps * base:.0f}× | {agreement.argmax_mismatches} / {agreement.windows} | {agreement.max_abs_diff:.1e} |"
        )
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    return 0


def staged_rows(artifact, x, reference, args) -> list:
    """Rows for serving a staged model: per decision, the features of one new
    window and the decision stage on its feature stack (both runtimes per stage)."""
    import time

    import numpy as np

    from harstream.models.runtime import BUILDERS, check_agreement, time_runtime
    from harstream.models.staged import DECISION_STAGE, FEATURE_STAGE, feature_layer
    from harstream.models.staged_runtime import NumpyFeatures, StagedRuntime, stage_artifact

    n, k = x.shape[:2]
    rows = []
    features_part, decision_part = stage_artifact(artifact, FEATURE_STAGE), stage_artifact(artifact, DECISION_STAGE)
    pairs = [("tf-function", "tf-function"), ("tflite", "tflite")]
    if feature_layer(features_part.model) is not None:
        pairs.append(("numpy", "tflite"))
    for feature_kind, decision_kind in pairs:
        start = time.perf_counter()
        rt = StagedRuntime(
            NumpyFeatures.of_stage(features_part.model)
            if feature_kind == "numpy"
            else BUILDERS[feature_kind](features_part),
            BUILDERS[decision_kind](decision_part),
        )
        name = feature_kind if feature_kind == decision_kind else f"{feature_kind} + {decision_kind}"
        built = time.perf_counter() - start
        agreement = check_agreement(rt, reference, x)
        one_window, one_stack = x[:1, 0], rt.features(x[:1].reshape(k, *x.shape[2:])).reshape(1, k, -1)
        windows = np.ascontiguousarray(x[: args.batch, 0], np.float32)
        stacks = rt.features(x[: args.batch].reshape(-1, *x.shape[2:])).reshape(len(windows), k, -1)
        repeats = max(3, args.repeats // 3)
        single = time_runtime(rt.feature_runtime, one_window, args.repeats) + time_runtime(
            rt.decision_runtime, one_stack, args.repeats
        )
        batched = time_runtime(rt.feature_runtime, windows, repeats) + time_runtime(
            rt.decision_runtime, stacks, repeats
        )
        label = f"{name} staged: features once per window"
        rows.append((label, built, single, batched, agreement))
        print(f"  {label}: 1 decision {single * 1000:.2f} ms, batch {len(windows)} {batched * 1000:.1f} ms", flush=True)
    return rows
