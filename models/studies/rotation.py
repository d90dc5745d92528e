"""Rotation study: how the waist model and the placement-free model cope
with a device worn another way round.

Every held-out session is turned by one random rotation of the device frame
*before* the pipeline (acc and gyro alike), as if the phone had been clipped
on differently: none, up to 30°, up to 90° (random axis, angle uniform), or
any orientation (uniform over all rotations). Scored on the windows of the
UCI test subjects: the waist model on its six classes and, merged, on the
placement-free four; the placement-free model on its four; both on moving vs
still. Repeated for a few rotation seeds (mean, and min–max).

    python -m harstream.models.studies.rotation                 # docs/reports/rotation_study.json
    python -m harstream.models.studies.rotation --seeds 0 1 2 --models default any
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harstream.models.reports import REPORTS
from harstream.stream.core.activities import PLACEMENT_FREE
from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_dataset

from ..artifact import PRETRAINED_DIR, load_artifact
from ..dataset import labelled_windows
from ..placement_free import placement_free_labels, rotated_recordings, scores

REPORT = REPORTS / "rotation_study.json"
#: Condition name → largest angle in degrees (None: any orientation).
CONDITIONS = {"none": 0.0, "<=30deg": 30.0, "<=90deg": 90.0, "any": None}


def score_model(artifact, rotation: float | None, seed: int, subjects: Sequence[int]) -> dict:
    """Scores of one artifact on the sessions of ``subjects``, each turned by
    its own random rotation within ``rotation`` degrees (seeded)."""
    recs = load_dataset().of_subjects(subjects)
    if rotation != 0.0:
        recs = rotated_recordings(recs, seed, rotation)
    windows = labelled_windows(recs, context_steps=artifact.context_steps)
    probs = np.asarray(artifact.model.predict(windows.x, batch_size=256, verbose=0))
    predicted = probs.argmax(1)
    if artifact.placement == "any":
        return scores(predicted, windows.y)
    # the waist model: its own six classes, and merged into the placement-free four
    merged = scores(placement_free_labels(predicted), windows.y)
    return {
        "windows": merged["windows"],
        "accuracy_6": float(np.mean(predicted == windows.y)),
        "accuracy": merged["accuracy"],
        "moving_vs_still": merged["moving_vs_still"],
    }


def run(models: Sequence[str], seeds: Sequence[int], subjects: Sequence[int] = UCI_TEST_SUBJECTS) -> dict:
    report: dict = {"subjects": list(subjects), "seeds": list(seeds), "classes_any": list(PLACEMENT_FREE), "rows": []}
    for name in models:
        artifact = load_artifact(PRETRAINED_DIR / f"{name}.keras" if not name.endswith(".keras") else name)
        for condition, degrees in CONDITIONS.items():
            started = time.perf_counter()
            per_seed = [
                score_model(artifact, degrees, seed, subjects) for seed in (seeds if degrees != 0.0 else seeds[:1])
            ]
            row = {
                "model": name,
                "placement": artifact.placement,
                "rotation": condition,
                "seconds": round(time.perf_counter() - started, 1),
            }
            for key in per_seed[0]:
                values = [s[key] for s in per_seed]
                row[key] = float(np.mean(values))
                if key != "windows" and len(values) > 1:
                    row[f"{key}_range"] = [float(min(values)), float(max(values))]
            print(json.dumps(row), flush=True)
            report["rows"].append(row)
    return report


def table(report: dict) -> str:
    """The report as a Markdown table."""
    lines = [
        "| model | rotation | 6 classes | 4 placement-free classes | moving vs still |",
        "|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        six = f"{100 * r['accuracy_6']:.1f} %" if "accuracy_6" in r else "—"
        lines.append(
            f"| {r['model']} ({r['placement']}) | {r['rotation']} | {six} | "
            f"{100 * r['accuracy']:.1f} % | {100 * r['moving_vs_still']:.2f} % |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harstream.models.studies.rotation", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--models", nargs="+", default=["default", "any"], help="shipped names or .keras paths")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="rotation seeds")
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    report = run(args.models, args.seeds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
