"""``python -m harstream.models.restage MODEL.keras…``: flat context models → staged.

Rewrites artifacts made before :mod:`harstream.models.staged` existed (one
chain: the feature layer on the whole window stack, then the decision layers)
in the staged layout, with the same layers and weights. Each is checked on
every held-out test window first (same argmax; the largest probability
difference is recorded in the metadata as ``restaged``), and its metadata is
kept.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from .artifact import load_artifact, save_artifact
from .runtime import check_windows
from .staged import is_staged, restage


def main(argv: Sequence[str] | None = None) -> int:
    """Restage each model given; refuse (and write nothing for) one whose
    staged form changes any test label."""
    parser = argparse.ArgumentParser(prog="python -m harstream.models.restage", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", metavar="MODEL.keras")
    args = parser.parse_args(argv)
    for path in args.models:
        artifact = load_artifact(path)
        if is_staged(artifact.model):
            print(f"{path}: already staged")
            continue
        staged = restage(artifact.model)
        x = check_windows(0, context_steps=artifact.context_steps)
        before = np.concatenate(
            [np.asarray(artifact.model(x[i : i + 512], training=False)) for i in range(0, len(x), 512)]
        )
        after = np.concatenate([np.asarray(staged(x[i : i + 512], training=False)) for i in range(0, len(x), 512)])
        mismatches = int((before.argmax(1) != after.argmax(1)).sum())
        diff = float(np.abs(before - after).max())
        if mismatches:
            raise SystemExit(f"{path}: the staged model changes {mismatches} of {len(x)} test labels; not written")
        meta = {k: v for k, v in artifact.metadata.items() if k not in ("sha256", "input", "stages")}
        meta["restaged"] = {
            "from_sha256": artifact.metadata.get("sha256"),
            "test_windows": len(x),
            "argmax_mismatches": mismatches,
            "max_abs_diff": diff,
            "command": f"python -m harstream.models.restage {path}",
        }
        save_artifact(staged, meta, artifact.path)
        print(f"{path}: staged; {len(x)} test windows, argmax mismatches {mismatches}, max abs diff {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
