"""Calibration on a simulated thigh pocket and a simulated wrist, scored as the worker publishes it.

HAPT is one placement (a waist); there is no pocket or wrist recording in
this project. This study makes them from HAPT's own sessions, honestly
simulated, and runs the calibration study
(:func:`~harstream.models.studies.calibration.study_subject`: the personal
model fitted on the first 60 s of walking, sitting and standing of the
first session, the other session scored as the worker publishes it, as worn
and put back turned by each half-turn) on them.

What is simulated, per placement (``thigh``: a phone in a trouser pocket;
``wrist``: a watch):

- **walking and stairs**: the limb swinging on the recorded waist's gait
  (:func:`~harstream.models.augment.simulate_limb`, one limb drawn per
  subject by :meth:`~harstream.models.augment.LimbMotion.draw`);
- **each sitting, standing and lying bout**: the device's gravity direction
  set by a limb angle drawn *per bout* from :data:`POSTURE_ANGLES` (flexion
  from hanging straight down, and a roll about the limb's long axis): a thigh
  is near vertical standing and near horizontal sitting; lying leaves it
  horizontal, rolled anywhere from face up to on its side (so a thigh alone
  hardly tells lying from sitting — true of real thigh monitors); a forearm
  is held anywhere from hanging to horizontal standing and from half-raised to
  past horizontal sitting (the ranges overlap: some standing and sitting bouts
  hold the arm alike). The recorded waist's micro-motion (postural sway,
  breathing) is carried through that rotation unchanged; nothing is added
  (no gestures, no typing, no fidgeting of a limb);
- **transitions and unlabelled gaps**: the orientation turned smoothly
  (spherical interpolation) from the bout before to the bout after, its
  rotation rate added to the gyroscope;
- **the device in the pocket or strap**: one uniformly random orientation per
  subject, the same in both sessions (the study then puts it back turned by
  each half-turn for the scored session).

What is real: the subject, the labels, the bouts' order and length, the
waist's gait and sway. What is not: every limb angle and swing above. The
figures are a check of the personal model's logic under pocket- and
wrist-like geometry, not a measurement on a pocket or a wrist.

    python -m harstream.models.studies.placement_calibration                  # test subjects, both placements
    python -m harstream.models.studies.placement_calibration --subjects validation --placements thigh
    python -m harstream.models.studies.placement_calibration --walk-first     # each scored session's walk first
    python -m harstream.models.studies.placement_calibration --sway           # can sway alone tell sitting from standing?
    python -m harstream.models.studies.placement_calibration --later-vary --vary-draws 2   # later bouts held otherwise

``--later-vary``: the scored session's sitting and standing bouts are held
in ways drawn from :mod:`~harstream.models.later_bouts` (legs crossed, a
sofa, a foot on a rail; a forearm on a desk, holding a phone) and the device
slips on the limb afresh each bout; the calibration session stays as above.

``--sway`` measures what the simulated placements' micro-motion can say at
all: the simulated limb carries the waist's recorded sway through a rotation,
and every sway cue here is orientation-free, so it is the waist's. On the
training subjects, each subject's sitting and standing cue means from the
first session name the second session's windows (nearest in spreads), from
one window's cues (:func:`~harstream.stream.core.posture.posture_cues`)
averaged over the last 1, 4 or 8 windows of the bout (up to ~10 s), and from
the body acceleration's, the rotation's and the acceleration magnitude's
power in 0.1-1 Hz and 1-3 Hz (and their ratio) over the last 10.24 s.

The head's settings are options (``--sharpness``, ``--angle-weight``,
``--no-walk-anchor``, ``--no-roll-free``, ``--no-live-walk``: see
:func:`~harstream.models.studies.calibration.add_head_options`); figures
and choices in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from harstream.models.reports import REPORTS
from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.rate import RATE_HZ
from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, Recording, load_dataset

from ..artifact import ANY_MODEL, load_artifact
from ..augment import WAIST_SIDEWAYS, WAIST_UP, LimbMotion, simulate_limb, uniform_rotations
from ..later_bouts import LATER_WAYS, draw_slip, draw_way, way_rotation
from ..personal import PersonalSettings
from .calibration import (
    DEFAULT_ACTIVITIES,
    add_head_options,
    earlier_runs,
    head_settings,
    save_run,
    study_subject,
    subjects_named,
    summarise,
    table,
)

REPORT = REPORTS / "placement_calibration_study.json"
PLACEMENTS = ("thigh", "wrist")
_MOVING_LABELS = (1, 2, 3)
_POSTURE_LABELS = {ACTIVITIES.index(p) + 1: p for p in ("SITTING", "STANDING", "LAYING")}


@dataclass(frozen=True)
class AngleRange:
    """A limb's orientation in a still posture, drawn per bout (degrees):
    flexion from hanging straight down (about the sideways axis) and roll
    about the limb's own long axis."""

    flexion: tuple[float, float]
    roll: tuple[float, float]

    def draw(self, rng: np.random.Generator) -> tuple[float, float]:
        return float(rng.uniform(*self.flexion)), float(rng.uniform(*self.roll))


#: Per placement and posture: where the limb is held. Thigh: standing near
#: vertical (a slight flexion or lean), sitting near horizontal (a chair's or a
#: sofa's seat; legs turned in or out a little), lying horizontal rolled from
#: face up to on its side. Wrist: standing from hanging to a forearm held
#: level (a phone read, arms folded), sitting from half-raised (hands in the
#: lap) to past level (a desk, a raised hand), any forearm roll within ±60°:
#: sitting and standing overlap between 45° and 70°.
POSTURE_ANGLES: dict[str, dict[str, AngleRange]] = {
    "thigh": {
        "STANDING": AngleRange((-5.0, 15.0), (-10.0, 10.0)),
        "SITTING": AngleRange((65.0, 100.0), (-20.0, 20.0)),
        "LAYING": AngleRange((80.0, 100.0), (-90.0, 90.0)),
    },
    "wrist": {
        "STANDING": AngleRange((0.0, 70.0), (-60.0, 60.0)),
        "SITTING": AngleRange((45.0, 100.0), (-60.0, 60.0)),
        "LAYING": AngleRange((60.0, 120.0), (-90.0, 90.0)),
    },
}


def _axis_angle(axis: np.ndarray, degrees: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.deg2rad(degrees) * np.asarray(axis, float)).as_matrix()


def _aligning(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit direction ``a`` onto ``b``."""
    from scipy.spatial.transform import Rotation

    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(np.dot(a, b))
    if s < 1e-9:
        if c > 0:
            return np.eye(3)
        other = np.array([0.0, 1.0, 0.0]) if abs(a[1]) < 0.9 else np.array([0.0, 0.0, 1.0])
        axis = np.cross(a, other)
        return Rotation.from_rotvec(np.pi * axis / np.linalg.norm(axis)).as_matrix()
    return Rotation.from_rotvec(axis / s * np.arctan2(s, c)).as_matrix()


def limb_reading(flexion: float, roll: float) -> np.ndarray:
    """The rotation taking what the waist device reads into what a device on a
    limb flexed by ``flexion`` and rolled by ``roll`` (degrees) reads (the
    limb's frame, as :func:`~harstream.models.augment.simulate_limb` gives it:
    hanging straight down it reads gravity like the waist standing)."""
    orientation = _axis_angle(WAIST_SIDEWAYS, flexion) @ _axis_angle(WAIST_UP, roll)
    return orientation.T


def _runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """``(start, end, label)`` of each run of equal labels."""
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(labels)]])
    return [(int(s), int(e), int(labels[s])) for s, e in zip(starts, ends)]


def simulate_placement(
    rec: Recording,
    placement: str,
    limb: LimbMotion,
    rng: np.random.Generator,
    vary: np.random.Generator | None = None,
) -> tuple[Recording, list[dict]]:
    """``rec`` as a device on ``placement`` (in the limb's frame: turn it
    with the pocket's orientation afterwards) would have recorded it, and the
    angle drawn for each still bout (see the module doc).

    ``vary``: the later bouts vary (:mod:`~harstream.models.later_bouts`,
    drawn from this generator): each sitting and standing bout is held in a
    way drawn from :data:`~harstream.models.later_bouts.LATER_WAYS` instead
    of :data:`POSTURE_ANGLES`, and the device slips on the limb afresh for
    every labelled bout, moving ones included (``rng`` draws what it draws
    without, so the limb and pocket of later subjects stay the same)."""
    from scipy.spatial.transform import Rotation, Slerp

    samples = np.asarray(rec.samples, np.float64)
    labels = np.asarray(rec.labels)
    swinging = simulate_limb(samples, limb, rec.rate)
    hanging = limb_reading(limb.offset, 0.0)  # the swing's rest: what simulate_limb gives with the gate shut
    runs = _runs(labels)
    fixed: list[np.ndarray | None] = []  # each run's rotation (None: interpolated)
    slips: list[np.ndarray] = []  # each run's slip of the device on the limb (identity without ``vary``)
    drawn = []
    for start, end, label in runs:
        slip = draw_slip(placement, vary) if vary is not None and label >= 1 else np.eye(3)
        slips.append(slip)
        if label in _MOVING_LABELS:
            fixed.append(slip @ hanging)
        elif label in _POSTURE_LABELS:
            posture = _POSTURE_LABELS[label]
            flexion, roll = POSTURE_ANGLES[placement][posture].draw(rng)
            held = limb_reading(flexion, roll)
            way = None
            if vary is not None and posture in LATER_WAYS[placement]:
                way = draw_way(placement, posture, vary)
                flexion, roll = way.flexion[0], way.roll[0]
                held = way_rotation(way)
            down = samples[start:end, 0:3].mean(axis=0)  # the waist's gravity in this bout
            # the waist's own tilt removed, the limb's put in; its sway carried through
            fixed.append(slip @ held @ _aligning(down, WAIST_UP))
            drawn.append(
                {
                    "posture": posture,
                    "seconds": round((end - start) / rec.rate, 1),
                    "flexion": round(flexion, 1),
                    "roll": round(roll, 1),
                    **(
                        {"way": way.name, "sideways": round(way.sideways[0], 1), "slip_deg": _degrees(slip)}
                        if way is not None
                        else {}
                    ),
                }
            )
        else:
            fixed.append(None)
    n = len(samples)
    rotation = np.empty((n, 3, 3))
    for i, (start, end, _) in enumerate(runs):
        if fixed[i] is not None:
            rotation[start:end] = fixed[i]
            continue
        before = next((fixed[j] for j in range(i - 1, -1, -1) if fixed[j] is not None), None)
        after = next((fixed[j] for j in range(i + 1, len(runs)) if fixed[j] is not None), None)
        before = after if before is None else before
        after = before if after is None else after
        if before is None or after is None:
            rotation[start:end] = hanging
            continue
        ends = Rotation.from_matrix(np.stack([before, after]))
        rotation[start:end] = Slerp([0.0, 1.0], ends)(np.linspace(0.0, 1.0, end - start)).as_matrix()
    out = np.empty_like(samples)
    out[:, 0:3] = np.einsum("nij,nj->ni", rotation, samples[:, 0:3])
    # the device's own rotation rate while it turns (its orientation is rotationᵀ): log of R(t)ᵀR(t+dt), per second
    step = np.einsum("nij,nkj->nik", rotation[:-1], rotation[1:])
    own = Rotation.from_matrix(step).as_rotvec() * rec.rate
    own = np.concatenate([own[:1], 0.5 * (own[1:] + own[:-1]), own[-1:]])
    out[:, 3:6] = np.einsum("nij,nj->ni", rotation, samples[:, 3:6]) + own
    for (start, end, label), slip in zip(runs, slips):
        if label in _MOVING_LABELS:  # the swinging limb, read by the device as it sits on it in this run
            out[start:end, 0:3] = swinging[start:end, 0:3] @ slip.T
            out[start:end, 3:6] = swinging[start:end, 3:6] @ slip.T
    return replace(rec, name=f"{rec.name}@{placement}", samples=out), drawn


def _degrees(rotation: np.ndarray) -> float:
    """How far ``rotation`` turns (degrees)."""
    return round(float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)))), 1)


_SWAY_SAMPLES = 512  # 10.24 s


def _band_powers(segment: np.ndarray) -> list[float]:
    """log10 power in 0.1-1 Hz and 1-3 Hz, and their ratio, of the body
    acceleration, the rotation and the acceleration magnitude of a
    preprocessed ``(n, 9)`` segment."""
    f = np.fft.rfftfreq(len(segment), 1.0 / RATE_HZ)
    slow, fast = (f >= 0.1) & (f < 1.0), (f >= 1.0) & (f < 3.0)
    taper = np.hanning(len(segment))[:, None]
    out = []
    for signal in (segment[:, 0:3], segment[:, 3:6], np.linalg.norm(segment[:, 6:9], axis=1, keepdims=True)):
        power = (np.abs(np.fft.rfft((signal - signal.mean(axis=0)) * taper, axis=0)) ** 2).sum(axis=1)
        lo, hi = power[slow].sum() + 1e-12, power[fast].sum() + 1e-12
        out += [np.log10(lo), np.log10(hi), np.log10(lo / hi)]
    return out


def _sway_cues(rec: Recording, windows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(window cues, their posture, band powers, their posture)`` of a
    recording's sitting and standing windows wholly inside one bout (window
    cues averaged over up to ``windows`` windows of the bout)."""
    from harstream.stream.core.pipeline import STEP, WINDOW, preprocess_recording
    from harstream.stream.core.posture import posture_cues

    processed = preprocess_recording(np.asarray(rec.samples, np.float32)).astype(np.float64)
    labels = np.asarray(rec.labels)
    keep = list(_POSTURE_LABELS)[:2]  # sitting, standing
    starts = np.arange(0, len(processed) - WINDOW + 1, STEP)
    span = labels[starts[:, None] + np.arange(WINDOW)]
    y = np.where((span == span[:, :1]).all(axis=1), span[:, 0], -1)
    cues = posture_cues(processed[starts[:, None] + np.arange(WINDOW)].astype(np.float32))[:, 3:].astype(np.float64)
    smoothed = cues.copy()
    for i in range(len(cues)):
        j = i
        while j > 0 and i - j < windows - 1 and y[j - 1] == y[i]:
            j -= 1
        smoothed[i] = cues[j : i + 1].mean(axis=0)
    chosen = np.isin(y, keep)
    bands, band_y = [], []
    for end in range(_SWAY_SAMPLES, len(processed) + 1, STEP):
        run_labels = labels[end - _SWAY_SAMPLES : end]
        if run_labels[0] in keep and (run_labels == run_labels[0]).all():
            bands.append(_band_powers(processed[end - _SWAY_SAMPLES : end]))
            band_y.append(run_labels[0])
    return smoothed[chosen], y[chosen], np.array(bands), np.array(band_y)


def _nearest_mean(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray) -> float | None:
    """Share of ``test`` named right by the nearer posture mean of ``train``
    (distance in the pooled within-posture spread, at least 0.25)."""
    classes = np.unique(train_y)
    if len(classes) < 2 or len(np.unique(test_y)) < 2:
        return None
    means = np.stack([train[train_y == c].mean(axis=0) for c in classes])
    spread = np.maximum(np.concatenate([train[train_y == c] - m for c, m in zip(classes, means)]).std(axis=0), 0.25)
    distance = (((test[:, None, :] - means[None]) / spread) ** 2).sum(axis=2)
    return float(np.mean(classes[distance.argmin(axis=1)] == test_y))


def sway_separation(subjects: Sequence[int]) -> dict:
    """How well sway alone names sitting against standing in another session (see the module doc)."""
    data = load_dataset()
    result: dict = {"subjects": list(subjects)}
    for windows in (1, 4, 8):
        window_scores, band_scores = [], []
        for subject in subjects:
            recs = sorted(data.of_subjects([subject]), key=lambda r: r.name)
            if len(recs) < 2:
                continue
            (c1, y1, b1, by1), (c2, y2, b2, by2) = (_sway_cues(r, windows) for r in recs[:2])
            score = _nearest_mean(c1, y1, c2, y2)
            if score is not None:
                window_scores.append(score)
            if windows == 1:
                band = _nearest_mean(b1, by1, b2, by2) if len(b1) and len(b2) else None
                if band is not None:
                    band_scores.append(band)
        result[f"window_cues_over_{windows}"] = {
            "mean": round(float(np.mean(window_scores)), 4),
            "worst": round(float(np.min(window_scores)), 4),
            "subjects": len(window_scores),
        }
        if band_scores:
            result["band_powers_10s"] = {
                "mean": round(float(np.mean(band_scores)), 4),
                "worst": round(float(np.min(band_scores)), 4),
                "subjects": len(band_scores),
            }
    return result


def run(
    placement: str,
    subjects: Sequence[int],
    activities: Sequence[str],
    seconds: float,
    settings: PersonalSettings,
    seed: int,
    walk_first: bool = False,
    follow_walk: bool = True,
    later_vary: bool = False,
    vary_draws: int = 1,
    turns: Sequence[str] | None = None,
) -> dict:
    data = load_dataset()
    base = load_artifact(ANY_MODEL)
    rng = np.random.default_rng([seed, PLACEMENTS.index(placement)])
    # the later bouts' ways and slips from their own generator: the limbs and pockets stay those without them
    vary = np.random.default_rng([seed, PLACEMENTS.index(placement), 1]) if later_vary else None
    rows = []
    for subject, pocket in zip(subjects, uniform_rotations(len(subjects), rng)):
        recs = sorted(data.of_subjects([subject]), key=lambda r: r.name)
        if len(recs) < 2:
            print(f"subject {subject}: one session only, skipped", file=sys.stderr)
            continue
        limb = LimbMotion.draw(placement, rng)
        simulated, bouts = [], []
        for i, rec in enumerate(recs):  # the first session calibrates (as study_subject takes it); the rest vary
            sim, drawn = simulate_placement(rec, placement, limb, rng, vary if i else None)
            simulated.append(sim)
            bouts.append(drawn)
            for draw in range(1, vary_draws if i else 1):  # the same session, held otherwise
                if vary is None:
                    break
                extra, drawn = simulate_placement(
                    rec, placement, limb, np.random.default_rng(int(vary.integers(2**32))), vary
                )
                simulated.append(replace(extra, name=f"{extra.name}#{draw}"))
                bouts.append(drawn)
        row = study_subject(
            simulated, pocket, base, activities, seconds, settings, walk_first, follow_walk, *([turns] if turns else [])
        )
        row["placement"] = placement
        row["limb"] = limb.__dict__
        row["bouts"] = bouts
        print(
            json.dumps({k: v for k, v in row.items() if not k.endswith(("per_class", "postures")) and k != "bouts"}),
            flush=True,
        )
        rows.append(row)
    return {
        "placement": placement,
        "simulated": __doc__.split("What is simulated")[1].split("    python -m")[0].strip() if __doc__ else "",
        "subjects": list(subjects),
        "activities": list(activities),
        "seconds_per_activity": seconds,
        "settings": settings.__dict__,
        "seed": seed,
        "base_model": base.model_id,
        "rate_hz": RATE_HZ,
        "later_vary": later_vary,
        "vary_draws": vary_draws if later_vary else 0,
        "rows": rows,
        "summary": summarise(rows),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from ..dataset import VALIDATION_SUBJECTS

    parser = argparse.ArgumentParser(
        prog="python -m harstream.models.studies.placement_calibration", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--subjects", default="test", help="'test' (UCI test subjects), 'validation', or e.g. 2,4,9")
    parser.add_argument("--placements", default=",".join(PLACEMENTS), help="thigh, wrist, or both")
    parser.add_argument("--seconds", type=float, default=60.0, help="first seconds of each activity used")
    add_head_options(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPORT))
    parser.add_argument("--sway", action="store_true", help="only: sway alone, sitting vs standing, training subjects")
    parser.add_argument(
        "--later-vary",
        action="store_true",
        help="the scored session's postures held in other ways, the device slipping between bouts (models/later_bouts.py)",
    )
    parser.add_argument(
        "--vary-draws",
        type=int,
        default=1,
        help="with --later-vary: the scored session this many times, each held otherwise",
    )
    args = parser.parse_args(argv)
    if args.sway:
        held_out = {*UCI_TEST_SUBJECTS, *VALIDATION_SUBJECTS}
        result = sway_separation([s for s in range(1, 31) if s not in held_out])
        print(json.dumps(result, indent=2))
        return 0
    subjects = subjects_named(args.subjects)
    from pathlib import Path

    out = Path(args.out)
    runs = earlier_runs(out)
    settings = head_settings(args)
    for placement in [p.strip() for p in args.placements.split(",")]:
        if placement not in PLACEMENTS:
            parser.error(f"placement {placement!r}: expected one of {', '.join(PLACEMENTS)}")
        report = run(
            placement,
            subjects,
            DEFAULT_ACTIVITIES,
            args.seconds,
            settings,
            args.seed,
            args.walk_first,
            not args.no_live_walk,
            args.later_vary,
            args.vary_draws,
        )
        print(f"\n{placement}{' (later bouts vary)' if args.later_vary else ''}, {settings}, subjects {args.subjects}")
        print(table(report), flush=True)
        save_run(out, runs, report, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
