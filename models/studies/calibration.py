"""Calibration study: a personal model from a device's first bouts, scored on
its later ones as the worker publishes them, with the device put back turned.

For each subject (the UCI test subjects by default): one random rotation of
the device frame (any angle), the same for both of the subject's sessions —
the same phone worn the same odd way. The personal model
(:func:`~harstream.models.personal.fit_personal`, over the shipped
placement-free model) is calibrated on the first 60 s of walking, sitting
and standing of the subject's first session (their first bouts; HAPT has
30-45 s of each per session, so that is all of it) and scored on the other
session exactly as the worker labels it: every 64-sample step of the
stream, the shared model's probabilities, the personal head
(:func:`~harstream.stream.core.posture.apply_heads`), the display
decoder the worker gives the device, and the worker's stairs gate
(:mod:`~harstream.stream.core.stairs`; HAPT has no barometer, so a
calibrated walk shows the model's uncalibrated stairs as WALKING); a window
counts where it lies wholly inside one labelled activity. The other session is scored as worn at
calibration and with the device put back turned by each half-turn
(top down; screen facing the other way; both).

Scores: ``exact`` on the calibrated activities' windows (STILL shown for
sitting or standing counts as wrong), and per class; an activity that was
not calibrated counts as right when shown as the placement-free model's
class (stairs as stairs, lying as STILL): with a calibrated walk and no
barometer the gate withholds uncalibrated stairs, so they count wrong.

    python -m harstream.models.studies.calibration                       # test subjects
    python -m harstream.models.studies.calibration --subjects validation
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from harstream.models.reports import REPORTS
from harstream.stream.core.activities import ACTIVITIES, STILL
from harstream.stream.core.decoder import display_for, window_motion
from harstream.stream.core.pipeline import STEP, WINDOW, preprocess_recording
from harstream.stream.core.posture import TURNS, PersonalHead, apply_heads, posture_cues
from harstream.stream.core.rate import RATE_HZ
from harstream.stream.core.stairs import StairsEvidence, gated
from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, Recording, load_dataset

from ..artifact import ANY_MODEL, load_artifact
from ..augment import rotate_samples, uniform_rotations
from ..dataset import context_windows
from ..personal import PersonalSettings, fit_personal, window_features
from ..placement_estimate import PlacementEstimator
from ..placement_free import rotate_recording

REPORT = REPORTS / "calibration_study.json"
DEFAULT_ACTIVITIES = ("WALKING", "SITTING", "STANDING")


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


def published(
    head: PersonalHead, base, samples: np.ndarray, labels: np.ndarray, follow_walk: bool = True
) -> tuple[np.ndarray, ...]:
    """``(raw labels, displayed labels, truth (-1: not wholly in one activity))``
    of every window the worker makes of one uninterrupted stream
    (``follow_walk`` False: the head never follows the device's live walk)."""
    processed = preprocess_recording(samples.astype(np.float32))
    starts = np.arange(0, len(samples) - WINDOW + 1, STEP)
    x = context_windows(processed, starts, base.context_steps)
    probs = np.concatenate([np.asarray(base.model(x[i : i + 512])) for i in range(0, len(x), 512)])
    # a fresh copy: its live walk starts where a newly loaded head's does
    head = replace(head, follows_walk=follow_walk)
    cues, features = posture_cues(x), window_features(x, base)
    # window by window in time order, as the worker's batches take a device's windows
    rows = np.concatenate(
        [head.pick(apply_heads(probs[i : i + 1], cues[i : i + 1], [head], features[i : i + 1])) for i in range(len(x))]
    )
    classes = np.array(head.classes)
    display = display_for(head.classes, head.decoder)()
    motion = window_motion(x[:, 0])
    shown = [display.update([round(float(v), 6) for v in r], float(m))[0] for r, m in zip(rows, motion)]
    raw = classes[rows.argmax(1)]
    if gated("personal", head.classes):
        # stairs only on evidence, as the worker gates a calibrated device's raw and shown labels
        # (HAPT has no barometer: the device's calibration and the waist-likeness of its gait)
        estimator = PlacementEstimator.from_metadata(base.metadata)
        likeness = [None] * len(x) if estimator is None else estimator.waist_likeness(x).tolist()
        evidence, ends = StairsEvidence(), (starts + WINDOW) / RATE_HZ
        nothing = [0.0] * len(head.classes)
        raw = np.array(
            [
                evidence.judge(str(r), nothing, head.classes, t, head.calibrated, w)[0]
                for r, t, w in zip(raw, ends, likeness)
            ]
        )
        shown = [
            evidence.judge(s, nothing, head.classes, t, head.calibrated, w)[0] for s, t, w in zip(shown, ends, likeness)
        ]
    window_labels = labels[starts[:, None] + np.arange(WINDOW)]
    whole = (
        (window_labels == window_labels[:, :1]).all(axis=1) & (window_labels[:, 0] >= 1) & (window_labels[:, 0] <= 6)
    )
    truth = np.where(whole, window_labels[:, 0] - 1, -1)
    return raw, np.array(shown), truth


def walk_moved_first(rec: Recording) -> Recording:
    """``rec`` with its first walking bout moved to its start (simulated: the
    person walks before the first posture, as a day mostly goes; HAPT's
    sessions hold their postures first and walk at the end)."""
    labels = np.asarray(rec.labels)
    where = np.flatnonzero(labels == ACTIVITIES.index("WALKING") + 1)
    if len(where) == 0:
        return rec
    start = int(where[0])
    end = (
        start + int(np.argmax(labels[start:] != labels[start]))
        if np.any(labels[start:] != labels[start])
        else len(labels)
    )
    order = np.r_[start:end, 0:start, end : len(labels)]
    return replace(rec, name=rec.name + "+walk-first", samples=rec.samples[order], labels=labels[order])


def study_subject(
    recs: Sequence[Recording],
    rotation: np.ndarray,
    base,
    activities: Sequence[str],
    seconds: float,
    settings: PersonalSettings,
    walk_first: bool = False,
    follow_walk: bool = True,
    turns: Sequence[str] = tuple(TURNS),
) -> dict:
    first, *later = sorted(recs, key=lambda r: r.name)
    if walk_first:
        later = [walk_moved_first(r) for r in later]
    calibration = first_seconds(rotate_recording(first, rotation), activities, seconds)
    fit = fit_personal([calibration], base, settings)
    row: dict = {
        "subject": first.subject,
        "calibrated_on": first.name,
        "calibrated": fit.calibrated,
        "refused": fit.refused,
        "turns": [t for t in fit.head.turns if t != "none"],
        "pairs": [[*p.postures, p.angle, p.accuracy, p.margin] for p in fit.pairs],
        "fit_seconds": round(fit.seconds, 2),
        "scored_on": [r.name for r in later],
    }
    for variant in turns:  # as worn, and put back turned
        turn = np.diag(TURNS[variant]) @ rotation
        raw, shown, truth = [], [], []
        for rec in later:
            r, s, t = published(fit.head, base, rotate_samples(rec.samples, turn), np.asarray(rec.labels), follow_walk)
            raw.append(r)
            shown.append(s)
            truth.append(t)
        y = np.concatenate(truth)
        keep = y >= 0
        y = y[keep]
        expected = expected_names(y, fit.classes)
        for what, got in (("raw", np.concatenate(raw)[keep]), ("shown", np.concatenate(shown)[keep])):
            right = got == expected
            mine = np.isin(np.array(ACTIVITIES)[y], list(activities))
            row[f"{what}_{variant}"] = round(float(right[mine].mean()), 4)
            row[f"{what}_{variant}_all"] = round(float(right.mean()), 4)
            row[f"{what}_{variant}_per_class"] = {
                name: round(float(right[y == i].mean()), 4) for i, name in enumerate(ACTIVITIES) if np.any(y == i)
            }
            # the calibrated postures' windows: right, shown as STILL (honest), or another posture (confidently wrong)
            held = np.isin(np.array(ACTIVITIES)[y], [a for a in activities if a in fit.classes and a != "WALKING"])
            if held.any():
                row[f"{what}_{variant}_postures"] = {
                    "right": round(float(right[held].mean()), 4),
                    "still": round(float((got[held] == STILL).mean()), 4),
                    "other_posture": round(float((~right[held] & (got[held] != STILL)).mean()), 4),
                }
        row[f"windows_{variant}"] = int(len(y))
    return row


def run(
    subjects: Sequence[int],
    activities: Sequence[str],
    seconds: float,
    settings: PersonalSettings,
    seed: int,
    walk_first: bool = False,
    follow_walk: bool = True,
    turns: Sequence[str] = tuple(TURNS),
):
    data = load_dataset()
    base = load_artifact(ANY_MODEL)
    rng = np.random.default_rng(seed)
    rows = []
    for subject, rotation in zip(subjects, uniform_rotations(len(subjects), rng)):
        recs = data.of_subjects([subject])
        if len(recs) < 2:
            print(f"subject {subject}: one session only, skipped", file=sys.stderr)
            continue
        row = study_subject(recs, rotation, base, activities, seconds, settings, walk_first, follow_walk, turns)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith(("per_class", "postures"))}), flush=True)
        rows.append(row)
    summary = summarise(rows)
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


def summarise(rows: Sequence[dict]) -> dict:
    """Means (and worst subjects) over :func:`study_subject` rows."""
    summary: dict = {}
    for key in rows[0] if rows else []:
        if key.startswith(("raw_", "shown_")) and not key.endswith(("per_class", "postures")):
            summary[key] = round(float(np.mean([r[key] for r in rows])), 4)
            summary[key + "_min"] = round(float(np.min([r[key] for r in rows])), 4)
    scored = [t for t in TURNS if rows and f"shown_{t}" in rows[0]]
    for what in ("raw", "shown"):
        for variant in scored:
            per = [r[f"{what}_{variant}_per_class"] for r in rows]
            summary[f"{what}_{variant}_per_class"] = {
                c: round(float(np.mean([p[c] for p in per if c in p])), 4)
                for c in ACTIVITIES
                if any(c in p for p in per)
            }
    for what in ("raw", "shown"):
        for variant in scored:
            outcomes = [r[f"{what}_{variant}_postures"] for r in rows if f"{what}_{variant}_postures" in r]
            if outcomes:
                summary[f"{what}_{variant}_postures"] = {
                    k: round(float(np.mean([o[k] for o in outcomes])), 4) for k in outcomes[0]
                }
    summary["fit_seconds_median"] = float(np.median([r["fit_seconds"] for r in rows])) if rows else float("nan")
    return summary


def table(report: dict) -> str:
    turns = list(TURNS)
    lines = [
        "| subject | turns kept | " + " | ".join(f"{t} (shown / raw)" for t in turns) + " |",
        "|---|---|" + "---|" * len(turns),
    ]
    for r in report["rows"]:
        cells = " | ".join(f"{100 * r[f'shown_{t}']:.1f} / {100 * r[f'raw_{t}']:.1f} %" for t in turns)
        lines.append(f"| {r['subject']} | {', '.join(r['turns']) or '—'} | {cells} |")
    s = report["summary"]
    cells = " | ".join(f"{100 * s[f'shown_{t}']:.1f} / {100 * s[f'raw_{t}']:.1f} %" for t in turns)
    lines.append(f"| mean | | {cells} |")
    cells = " | ".join(f"{100 * s[f'shown_{t}_min']:.1f} / {100 * s[f'raw_{t}_min']:.1f} %" for t in turns)
    lines.append(f"| worst subject | | {cells} |")
    return "\n".join(lines)


def add_head_options(parser: argparse.ArgumentParser) -> None:
    """The personal head's settings a study may vary (:class:`PersonalSettings`)."""
    defaults = PersonalSettings()
    parser.add_argument("--max-angle", type=float, default=defaults.max_angle)
    parser.add_argument("--no-half-turns", action="store_true")
    parser.add_argument("--no-discriminant", action="store_true", help="no discriminant on the shared model's features")
    parser.add_argument("--no-walk-anchor", action="store_true", help="no angle from the calibrated walk's gravity")
    parser.add_argument("--angle-weight", type=float, default=defaults.angle_weight)
    parser.add_argument("--angle-spread", type=float, default=defaults.angle_spread)
    parser.add_argument("--sharpness", type=float, default=defaults.sharpness)
    parser.add_argument("--no-roll-free", action="store_true", help="never trust the angle from the walk over the tilt")
    parser.add_argument(
        "--angle-abstain", action="store_true", help="STILL where only an angle two postures share names one"
    )
    parser.add_argument(
        "--no-angle-agrees",
        action="store_true",
        help="with --angle-abstain: name even what a trusted angle argues against",
    )
    parser.add_argument("--no-live-walk", action="store_true", help="heads do not follow the device's live walk")
    parser.add_argument(
        "--sides",
        type=float,
        nargs=3,
        metavar=("APART", "BUFFER", "LIMIT"),
        default=defaults.sides,
        help="the sides rule's degrees (PersonalSettings.sides)",
    )
    parser.add_argument("--no-sides", action="store_true", help="the sides rule off")
    parser.add_argument(
        "--turn-cost", type=float, default=defaults.turn_cost, help="cosine units a half-turn costs (PersonalSettings)"
    )
    parser.add_argument(
        "--walk-first", action="store_true", help="score sessions with their first walk moved to the start (simulated)"
    )


def head_settings(args: argparse.Namespace) -> PersonalSettings:
    return PersonalSettings(
        max_angle=args.max_angle,
        half_turns=not args.no_half_turns,
        discriminant=not args.no_discriminant,
        walk_anchor=not args.no_walk_anchor,
        angle_weight=args.angle_weight,
        angle_spread=args.angle_spread,
        sharpness=args.sharpness,
        roll_free=not args.no_roll_free,
        angle_abstain=args.angle_abstain,
        angle_agrees=not args.no_angle_agrees,
        sides=None if args.no_sides or args.sides is None else tuple(args.sides),
        turn_cost=args.turn_cost,
    )


def subjects_named(choice: str) -> list[int]:
    """``--subjects``: 'test' (the UCI test subjects), 'validation', or numbers such as 2,4,9."""
    from ..dataset import VALIDATION_SUBJECTS

    named = {"test": list(UCI_TEST_SUBJECTS), "validation": list(VALIDATION_SUBJECTS)}
    return named[choice] if choice in named else [int(s) for s in choice.split(",")]


def earlier_runs(path: Path) -> list[dict]:
    """The runs a study's report file holds already (none without the file)."""
    return json.loads(path.read_text()) if path.is_file() else []


def save_run(path: Path, runs: list[dict], report: dict, args: argparse.Namespace) -> None:
    """``report`` with its run's walk options and subject set, added to ``runs``
    (the file's earlier runs), all of them written to ``path``."""
    report["walk_first"] = args.walk_first
    report["live_walk"] = not args.no_live_walk
    report["subject_set"] = args.subjects
    runs.append(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(runs, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harstream.models.studies.calibration", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--subjects", default="test", help="'test' (UCI test subjects), 'validation', or e.g. 2,4,9")
    parser.add_argument("--activities", default=",".join(DEFAULT_ACTIVITIES), help="calibrated activities, or 'all'")
    parser.add_argument("--seconds", type=float, default=60.0, help="first seconds of each activity used")
    parser.add_argument(
        "--named-precision", type=float, nargs="+", default=[PersonalSettings.named_precision], help="one run each"
    )
    add_head_options(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    subjects = subjects_named(args.subjects)
    activities = (
        list(ACTIVITIES) if args.activities == "all" else [a.strip().upper() for a in args.activities.split(",")]
    )
    runs = earlier_runs(args.out)
    for precision in args.named_precision:
        settings = replace(head_settings(args), named_precision=precision)
        report = run(subjects, activities, args.seconds, settings, args.seed, args.walk_first, not args.no_live_walk)
        print(f"\n{settings}, activities {activities}, subjects {args.subjects}")
        print(table(report), flush=True)
        save_run(args.out, runs, report, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
