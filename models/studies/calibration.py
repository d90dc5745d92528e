"""Calibration study: a personal model from a device's first bouts, scored on
its later ones.

For each subject (the UCI test subjects by default): one random rotation of
the device frame (any angle), the same for both of the subject's sessions —
the same phone worn the same odd way. The personal model
(:func:`~harstream.models.personal.fit_personal`, on the shipped
placement-free model) is calibrated on the first 60 s of each calibrated
activity of the subject's first session (their first bouts; HAPT has 30-45 s
of each activity per session, so that is all of it) and scored on every
labelled window of the other session. A posture that was not calibrated
counts as right when shown as STILL (that is all the model can know of it).

``--flip`` also scores the other session with the device put back upside
down (an extra half-turn about its x axis), as a pocket phone may be.

    python -m harstream.models.studies.calibration                        # walk/sit/stand, test subjects
    python -m harstream.models.studies.calibration --activities all --flip
    python -m harstream.models.studies.calibration --subjects validation --max-angle 20 30 45
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from harstream.models.reports import REPORTS
from harstream.stream.core.activities import ACTIVITIES, STILL
from harstream.stream.core.rate import RATE_HZ
from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, Recording, load_dataset

from ..artifact import ANY_MODEL, load_artifact
from ..augment import rotate_samples, uniform_rotations
from ..dataset import labelled_windows
from ..personal import PersonalSettings, fit_personal
from ..placement_free import rotate_recording

REPORT = REPORTS / "calibration_study.json"
DEFAULT_ACTIVITIES = ("WALKING", "SITTING", "STANDING")
#: Half a turn about the device's x axis: the phone back in the pocket upside down.
FLIP = np.diag([1.0, -1.0, -1.0])


def first_seconds(rec: Recording, activities: Sequence[str], seconds: float) -> Recording:
    """``rec`` with only the first ``seconds`` of each of ``activities`` labelled
    (everything else unlabelled; the samples, and so the filters, unchanged)."""
    labels = np.full(len(rec.labels), -1, rec.labels.dtype)
    for name in activities:
        label = ACTIVITIES.index(name) + 1
        where = np.flatnonzero(rec.labels == label)[: int(seconds * RATE_HZ)]
        labels[where] = label
    return replace(rec, labels=labels)


def expected_names(y: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """What a personal model with ``classes`` should show for HAPT classes ``y``:
    the activity when it knows it, else STILL (an uncalibrated posture)."""
    names = np.array(ACTIVITIES)[y]
    return np.where(np.isin(names, list(classes)), names, STILL)


def study_subject(
    recs: Sequence[Recording],
    rotation: np.ndarray,
    base,
    activities: Sequence[str],
    seconds: float,
    settings: PersonalSettings,
    flip: bool,
) -> dict:
    first, *later = sorted(recs, key=lambda r: r.name)
    calibration = first_seconds(rotate_recording(first, rotation), activities, seconds)
    fit = fit_personal([calibration], base, settings)
    row: dict = {
        "subject": first.subject,
        "calibrated_on": first.name,
        "calibrated": fit.calibrated,
        "refused": fit.refused,
        "fit_seconds": round(fit.seconds, 2),
    }
    variants = {"same": rotation, **({"flipped": FLIP @ rotation} if flip else {})}
    for variant, turn in variants.items():
        test = labelled_windows(
            [replace(r, samples=rotate_samples(r.samples, turn)) for r in later], context_steps=fit.context_steps
        )
        predicted = np.array(fit.classes)[np.asarray(fit.model.predict(test.x, batch_size=256, verbose=0)).argmax(1)]
        expected = expected_names(test.y, fit.classes)
        row[f"accuracy_{variant}"] = float(np.mean(predicted == expected))
        row[f"windows_{variant}"] = int(len(expected))
        row[f"per_activity_{variant}"] = {
            name: round(float(np.mean(predicted[test.y == i] == expected[test.y == i])), 4)
            for i, name in enumerate(ACTIVITIES)
            if np.any(test.y == i)
        }
    row["scored_on"] = [r.name for r in later]
    return row


def run(
    subjects: Sequence[int],
    activities: Sequence[str],
    seconds: float,
    settings: PersonalSettings,
    seed: int,
    flip: bool,
) -> dict:
    data = load_dataset()
    base = load_artifact(ANY_MODEL)
    rng = np.random.default_rng(seed)
    rows = []
    for subject, rotation in zip(subjects, uniform_rotations(len(subjects), rng)):
        recs = data.of_subjects([subject])
        if len(recs) < 2:
            print(f"subject {subject}: one session only, skipped", file=sys.stderr)
            continue
        row = study_subject(recs, rotation, base, activities, seconds, settings, flip)
        print(json.dumps({k: v for k, v in row.items() if not k.startswith("per_activity")}), flush=True)
        rows.append(row)
    summary = (
        {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key.startswith("accuracy_")} if rows else {}
    )
    summary["min_accuracy_same"] = float(min(r["accuracy_same"] for r in rows)) if rows else float("nan")
    summary["fit_seconds_median"] = float(np.median([r["fit_seconds"] for r in rows])) if rows else float("nan")
    summary["fit_seconds_max"] = float(max(r["fit_seconds"] for r in rows)) if rows else float("nan")
    return {
        "subjects": list(subjects),
        "activities": list(activities),
        "seconds_per_activity": seconds,
        "settings": settings.__dict__,
        "seed": seed,
        "base_model": base.model_id,
        "rows": rows,
        "summary": summary,
    }


def table(report: dict) -> str:
    flip = any("accuracy_flipped" in r for r in report["rows"])
    head = "| subject | calibrated | refused | fit s | later session" + (" | upside down |" if flip else " |")
    lines = [head, "|---|---|---|---|---|" + ("---|" if flip else "")]
    for r in report["rows"]:
        refused = "; ".join(r["refused"]) or "—"
        line = f"| {r['subject']} | {', '.join(a.lower() for a in r['calibrated'])} | {refused} | {r['fit_seconds']:.1f} | {100 * r['accuracy_same']:.1f} %"
        lines.append(line + (f" | {100 * r['accuracy_flipped']:.1f} % |" if flip else " |"))
    s = report["summary"]
    mean = f"| mean | | | {s['fit_seconds_median']:.1f} (median) | {100 * s['accuracy_same']:.1f} %"
    lines.append(mean + (f" | {100 * s['accuracy_flipped']:.1f} % |" if flip else " |"))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from ..dataset import VALIDATION_SUBJECTS

    parser = argparse.ArgumentParser(
        prog="python -m harstream.models.studies.calibration", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--subjects", default="test", help="'test' (UCI test subjects), 'validation', or e.g. 2,4,9")
    parser.add_argument("--activities", default=",".join(DEFAULT_ACTIVITIES), help="calibrated activities, or 'all'")
    parser.add_argument("--seconds", type=float, default=60.0, help="first seconds of each activity used")
    parser.add_argument("--max-angle", type=float, nargs="+", default=[PersonalSettings.max_angle])
    parser.add_argument(
        "--sign",
        choices=["invariant", "signed", "both"],
        default="signed" if not PersonalSettings.sign_invariant else "invariant",
    )
    parser.add_argument("--sharpness", type=float, nargs="+", default=[PersonalSettings.sharpness])
    parser.add_argument(
        "--discriminant", choices=["on", "off", "both"], default="on" if PersonalSettings.discriminant else "off"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip", action="store_true", help="also score the later session upside down")
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    subjects = {"test": list(UCI_TEST_SUBJECTS), "validation": list(VALIDATION_SUBJECTS)}.get(args.subjects)
    if subjects is None:
        subjects = [int(s) for s in args.subjects.split(",")]
    activities = (
        list(ACTIVITIES) if args.activities == "all" else [a.strip().upper() for a in args.activities.split(",")]
    )
    reports = []
    signs = {"invariant": [True], "signed": [False], "both": [True, False]}[args.sign]
    discriminants = {"on": [True], "off": [False], "both": [True, False]}[args.discriminant]
    for angle, sign, sharpness, discriminant in itertools.product(args.max_angle, signs, args.sharpness, discriminants):
        settings = PersonalSettings(
            max_angle=angle, sign_invariant=sign, sharpness=sharpness, discriminant=discriminant
        )
        report = run(subjects, activities, args.seconds, settings, args.seed, args.flip)
        print(f"\n{settings}, activities {activities}, subjects {args.subjects}")
        print(table(report), flush=True)
        reports.append(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(args.out.read_text()) if args.out.is_file() else []
    args.out.write_text(json.dumps(existing + reports, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
