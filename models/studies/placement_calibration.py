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
from ..personal import PersonalSettings
from .calibration import DEFAULT_ACTIVITIES, add_head_options, head_settings, study_subject, summarise, table

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
    rec: Recording, placement: str, limb: LimbMotion, rng: np.random.Generator
) -> tuple[Recording, list[dict]]:
    """``rec`` as a device on ``placement`` (in the limb's frame: turn it
    with the pocket's orientation afterwards) would have recorded it, and the
    angle drawn for each still bout (see the module doc)."""
    from scipy.spatial.transform import Rotation, Slerp

    samples = np.asarray(rec.samples, np.float64)
    labels = np.asarray(rec.labels)
    swinging = simulate_limb(samples, limb, rec.rate)
    hanging = limb_reading(limb.offset, 0.0)  # the swing's rest: what simulate_limb gives with the gate shut
    runs = _runs(labels)
    fixed: list[np.ndarray | None] = []  # each run's rotation (None: interpolated)
    drawn = []
    for start, end, label in runs:
        if label in _MOVING_LABELS:
            fixed.append(hanging)
        elif label in _POSTURE_LABELS:
            posture = _POSTURE_LABELS[label]
            flexion, roll = POSTURE_ANGLES[placement][posture].draw(rng)
            down = samples[start:end, 0:3].mean(axis=0)  # the waist's gravity in this bout
            # the waist's own tilt removed, the limb's put in; its sway carried through
            fixed.append(limb_reading(flexion, roll) @ _aligning(down, WAIST_UP))
            drawn.append(
                {
                    "posture": posture,
                    "seconds": round((end - start) / rec.rate, 1),
                    "flexion": round(flexion, 1),
                    "roll": round(roll, 1),
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
    moving = np.isin(labels, _MOVING_LABELS)
    out[moving] = swinging[moving]
    return replace(rec, name=f"{rec.name}@{placement}", samples=out), drawn


def run(
    placement: str,
    subjects: Sequence[int],
    activities: Sequence[str],
    seconds: float,
    settings: PersonalSettings,
    seed: int,
    walk_first: bool = False,
    follow_walk: bool = True,
) -> dict:
    data = load_dataset()
    base = load_artifact(ANY_MODEL)
    rng = np.random.default_rng([seed, PLACEMENTS.index(placement)])
    rows = []
    for subject, pocket in zip(subjects, uniform_rotations(len(subjects), rng)):
        recs = sorted(data.of_subjects([subject]), key=lambda r: r.name)
        if len(recs) < 2:
            print(f"subject {subject}: one session only, skipped", file=sys.stderr)
            continue
        limb = LimbMotion.draw(placement, rng)
        simulated, bouts = [], []
        for rec in recs:
            sim, drawn = simulate_placement(rec, placement, limb, rng)
            simulated.append(sim)
            bouts.append(drawn)
        row = study_subject(simulated, pocket, base, activities, seconds, settings, walk_first, follow_walk)
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
    args = parser.parse_args(argv)
    subjects = {"test": list(UCI_TEST_SUBJECTS), "validation": list(VALIDATION_SUBJECTS)}.get(args.subjects)
    if subjects is None:
        subjects = [int(s) for s in args.subjects.split(",")]
    from pathlib import Path

    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.is_file() else []
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
        )
        report["walk_first"] = args.walk_first
        report["live_walk"] = not args.no_live_walk
        report["subject_set"] = args.subjects
        print(f"\n{placement}, {settings}, subjects {args.subjects}")
        print(table(report), flush=True)
        existing.append(report)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(existing, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
