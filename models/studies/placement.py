"""Cross-placement study: the placement-free model at the waist, on a thigh and on a wrist.

HAPT's held-out (UCI test) subjects, each session as worn at the waist
(turned by one uniform random rotation, as the shipped model's test) and as
a *simulated* device on a swinging thigh and on a swinging forearm
(:func:`~harstream.models.augment.simulate_limb`: a rigid-body pendulum at
the waist's own stride phase, random amplitude, lever, roll and mounting
per session — physics, not recordings; no real pocket or wrist recording is
used or held by this project), and again with limbs drawn from beyond the
training ranges (``thigh_unseen``, ``wrist_unseen``: larger swings, longer
levers, stronger harmonics; :meth:`~harstream.models.augment.LimbMotion.draw_unseen`). Per placement and model: the confusion of
HAPT's six classes against the four placement-free ones, the model's own
classes (on a limb: flat walking → WALKING, postures → STILL), moving vs
still, flat walking shown as WALKING, stairs false alarms on flat walking,
and, for a model that carries one, the placement estimate's confusion on
moving windows. Each model is scored twice: as it labels each window, and
with the product's rules that a stepping window is never shown STILL and a
window at rest never moving (:mod:`~harstream.stream.core.stepping`; rows
named ``MODEL + steps/rest``: a window the model calls STILL whose body
acceleration steps counts as WALKING, one it calls moving whose body
acceleration is at rest counts as STILL). Scored once, on the test subjects.

    python -m harstream.models.studies.placement                          # docs/reports/placement_study.json,
    python -m harstream.models.studies.placement --models base.keras any  # docs/img/placement_study.png

``--validation``: the shipped recipe fitted on the fit subjects (training
minus validation) and scored, with and without the rules, on the
validation subjects (the figures the rule's thresholds were checked on; the
shipped model has seen the validation subjects, so it cannot be scored
there): ``placement_study_validation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
from harstream.stream.core.stepping import AT_REST, STEPPING, motion_evidence
from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_dataset

from ..artifact import PRETRAINED_DIR, load_artifact
from ..dataset import labelled_windows
from ..placement_estimate import PLACEMENTS, PlacementEstimator
from ..placement_free import TEST_ROTATION_OFFSET, placement_scores, placement_sets
from ..reports import IMAGES, add_reports_option

REPORT_NAME = "placement_study.json"
PICTURE = IMAGES / "placement_study.png"


def _artifact_path(name: str) -> Path:
    return Path(name) if name.endswith(".keras") else PRETRAINED_DIR / f"{name}.keras"


def run(models: Sequence[str], seed: int = 0, subjects: Sequence[int] = UCI_TEST_SUBJECTS) -> dict:
    """Score each model on the test subjects' sessions at every placement."""
    sets = placement_sets(load_dataset().of_subjects(subjects), seed + TEST_ROTATION_OFFSET, unseen=True)
    report: dict = {
        "subjects": list(subjects),
        "seed": seed,
        "simulated": "thigh and wrist are HAPT waist sessions turned into swinging-limb kinematics "
        "(augment.simulate_limb); the waist is HAPT as recorded, turned at random",
        "classes_true": list(ACTIVITIES[:6]),
        "classes_predicted": list(PLACEMENT_FREE),
        "rows": [],
    }
    windows = {}
    for name in models:
        artifact = load_artifact(_artifact_path(name))
        if artifact.placement != "any":
            raise SystemExit(f"{name}: placement {artifact.placement!r}; this study scores placement-free models")
        estimator = PlacementEstimator.from_metadata(artifact.metadata)
        for placement, recs in sets.items():
            started = time.perf_counter()
            key = (placement, tuple(artifact.context_steps))
            if key not in windows:
                windows[key] = labelled_windows(recs, context_steps=artifact.context_steps)
            w = windows[key]
            probs = np.asarray(artifact.model.predict(w.x, batch_size=256, verbose=0))
            predicted = probs.argmax(1)
            confusion = np.zeros((6, len(PLACEMENT_FREE)), int)
            np.add.at(confusion, (w.y, predicted), 1)
            row = {
                "model": name,
                "architecture": artifact.metadata.get("architecture"),
                **placement_scores(predicted, w.y, placement),
                "confusion": confusion.tolist(),
            }
            evidence = motion_evidence(w.x[:, 0] if w.x.ndim == 4 else w.x)  # the current window (context behind)
            ruled = with_steps(predicted, evidence)
            confusion_ruled = np.zeros_like(confusion)
            np.add.at(confusion_ruled, (w.y, ruled), 1)
            ruled_row = {
                "model": f"{name} + steps/rest",
                "architecture": row["architecture"],
                **placement_scores(ruled, w.y, placement),
                "confusion": confusion_ruled.tolist(),
                **_shares(evidence, w.y),
            }
            if estimator is not None:
                moving = w.y < 3
                guess = estimator.probabilities(w.x[moving]).argmax(1)
                row["placement_estimate"] = np.bincount(guess, minlength=len(PLACEMENTS)).tolist()
                truth = PLACEMENTS.index(placement.split("_")[0])
                row["placement_right"] = float(np.mean(guess == truth)) if moving.any() else None
            row["seconds"] = round(time.perf_counter() - started, 1)
            for r in (row, ruled_row):
                print(json.dumps({k: v for k, v in r.items() if k != "confusion"}), flush=True)
                report["rows"].append(r)
    return report


def with_steps(predicted: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """Placement-free class indices as the worker shows them in any mode
    (stream/core/stepping.py): given each window's motion evidence, a
    stepping window the model calls STILL is WALKING, a window at rest it
    calls moving is STILL."""
    still, walking = PLACEMENT_FREE.index("STILL"), PLACEMENT_FREE.index("WALKING")
    shown = np.where((evidence == STEPPING) & (predicted == still), walking, predicted)
    return np.where((evidence == AT_REST) & (predicted != still), still, shown)


def _shares(evidence: np.ndarray, y: np.ndarray) -> dict[str, list[float]]:
    """The share of each HAPT class's windows that step and that are at rest."""
    return {
        f"{name}_share": [float(np.mean(evidence[y == c] == value)) for c in range(6)]
        for name, value in (("stepping", STEPPING), ("rest", AT_REST))
    }


def _scored(name: str, predicted: np.ndarray, evidence: np.ndarray, w, placement: str) -> list[dict]:
    """The model's own row and its row with the rules."""
    ruled = with_steps(predicted, evidence)
    return [
        {"model": name, **placement_scores(predicted, w.y, placement)},
        {"model": f"{name} + steps/rest", **placement_scores(ruled, w.y, placement), **_shares(evidence, w.y)},
    ]


def run_validation(seed: int = 0) -> dict:
    """The shipped recipe fitted without the validation subjects, scored on
    them at every placement, with and without the rules."""
    from ..dataset import VALIDATION_SUBJECTS
    from ..placement_free import Recipe, fit_on_sessions

    data = load_dataset()
    fit = data.of_subjects({s for s in data.subjects() if s not in UCI_TEST_SUBJECTS} - set(VALIDATION_SUBJECTS))
    recipe = Recipe()
    model, _ = fit_on_sessions(fit, recipe, seed)
    sets = placement_sets(data.of_subjects(VALIDATION_SUBJECTS), seed + TEST_ROTATION_OFFSET, unseen=True)
    report: dict = {"subjects": list(VALIDATION_SUBJECTS), "seed": seed, "recipe": recipe.label, "rows": []}
    for placement, recs in sets.items():
        w = labelled_windows(recs, context_steps=recipe.context)
        predicted = np.asarray(model.predict(w.x, batch_size=512, verbose=0)).argmax(1)
        for row in _scored(
            "fit without validation", predicted, motion_evidence(w.x[:, 0] if w.x.ndim == 4 else w.x), w, placement
        ):
            print(json.dumps(row), flush=True)
            report["rows"].append(row)
    return report


def table(report: dict) -> str:
    """The report as a Markdown table."""
    lines = [
        "| model | placement | own classes | moving vs still | walking → WALKING | stairs false alarm "
        "(flat walking) | stairs → WALKING | placement estimate right |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        right = f"{100 * r['placement_right']:.1f} %" if r.get("placement_right") is not None else "—"
        lines.append(
            f"| {r['model']} | {r['placement']} | {100 * r['own_classes']:.1f} % | "
            f"{100 * r['moving_vs_still']:.1f} % | {100 * r['walking_as_walking']:.1f} % | "
            f"{100 * r['stairs_false_alarm']:.1f} % | {100 * r['stairs_as_walking']:.1f} % | {right} |"
        )
    return "\n".join(lines)


def draw(report: dict, path: Path) -> Path:
    """One confusion matrix (rows: true HAPT class, share of the row) per model and placement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in report["rows"]))
    placements = list(dict.fromkeys(r["placement"] for r in report["rows"]))
    fig, axes = plt.subplots(
        len(models), len(placements), figsize=(3.6 * len(placements), 3.2 * len(models)), squeeze=False
    )
    short_true = ["walk", "up", "down", "sit", "stand", "lie"]
    short_pred = ["WALK", "UP", "DOWN", "STILL"]
    for r in report["rows"]:
        ax = axes[models.index(r["model"])][placements.index(r["placement"])]
        m = np.asarray(r["confusion"], float)
        share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(share.shape[0]):
            for j in range(share.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{100 * share[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] > 0.6 else "black",
                )
        ax.set_xticks(range(len(short_pred)), short_pred, fontsize=7)
        ax.set_yticks(range(len(short_true)), short_true, fontsize=7)
        ax.set_title(f"{Path(r['model']).stem}: {r['placement']}", fontsize=9)
    fig.suptitle("HAPT test subjects; thigh and wrist simulated (share of each true class, %)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harstream.models.studies.placement", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--models", nargs="+", default=["any"], help="shipped names or .keras paths")
    parser.add_argument("--seed", type=int, default=0, help="rotation and limb seed (test offset added)")
    add_reports_option(parser)
    parser.add_argument("--picture", type=Path, default=PICTURE, help=f"confusion matrices (default: {PICTURE})")
    parser.add_argument("--validation", action="store_true", help="fit without the validation subjects, score them")
    args = parser.parse_args(argv)
    if args.validation:
        report = run_validation(args.seed)
        out = args.reports / "placement_study_validation.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(table(report))
        return 0
    report = run(args.models, args.seed)
    report["command"] = "python -m harstream.models.studies.placement " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    out = args.reports / REPORT_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    draw(report, args.picture)
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
