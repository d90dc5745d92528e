"""How later bouts of a posture differ from the calibrated ones: a stress for studies (never for training).

A calibration sees one or two bouts of sitting and of standing; over a day
the same person sits and stands in many ways, and a phone slides and turns
in a pocket, a watch round a wrist, between bouts. This module draws, per
later bout, one *way* of holding the posture (how the limb is flexed,
rolled about its own long axis and tilted sideways) and one *slip* of the
device on the limb, within ranges set from joint anatomy and seating
geometry (below); :mod:`harstream.models.studies.placement_calibration`
applies them to the scored session's bouts with ``--later-vary``.

Angles are degrees, in the limb's frame of
:func:`~harstream.models.studies.placement_calibration.limb_reading`:
*flexion* from hanging straight down (about the body's sideways axis: a
thigh's inclination from vertical is hip flexion plus the pelvis' tilt; a
forearm's, the elbow's and shoulder's together), *roll* about the limb's
own long axis (a thigh's internal/external rotation; a forearm's
pronation/supination, 0 = as it hangs while walking), *sideways* about the
body's forward axis (a thigh's abduction or adduction; it tilts a vertical
thigh, and only turns a horizontal one about the vertical, which gravity
does not see).

Sources of the ranges (none fitted to data; the project holds no pocket or
wrist recording):

- normal joint ranges (AAOS; Roaas & Andersson 1982): hip flexion 0-120°,
  internal and external rotation 0-45° each, abduction 0-45°, adduction
  0-30°; forearm pronation and supination 0-80° each;
- seating geometry: office chair seats 40-52 cm high (ANSI/BIFMA X5.1)
  against popliteal heights of about 39-49 cm put a thigh within about ±10°
  of horizontal; a sofa's low, deep, compressed seat raises the knees above
  the hips (flexion beyond 90°); a bar stool or a perch on an edge drops
  them (flexion 55-80°);
- crossed legs (knee over knee): the top thigh rolls 20-45° inwards and
  rises 5-20° (hip adduction and internal rotation, Snijders et al. 1995 on
  crossed-leg sitting); an ankle on the other knee (the "figure four", the
  FABER test's position): the top thigh rolled outwards 35-70° and abducted;
- standing: on one leg's weight the loaded hip adducts and the free leg
  flexes 5-20° at the hip; leaning on a wall with the feet forward, both
  thighs incline 5-25°; a foot up on a step or a rail flexes that hip 30-60°;
- a phone in a front trouser pocket shifts between bouts: it turns in the
  pocket's plane (about the thigh's forward axis) up to about ±20°, migrates
  round the thigh (about its long axis) up to ±15°, and tilts out of the
  pocket's plane (the pocket bulges when seated) up to ±10°; a watch turns
  round a loose strap up to ±20° and tilts ±5°;
- a forearm: hanging (0-25°), hands clasped in front or on the hips
  (30-70°), arms folded or reading a phone (60-110°), on a desk or armrest
  (80-100°, palm down: pronated), in the lap (35-70°), chin on hand
  (140-165°).

Where a way's share (``weight``) is a guess, it says so: these are
plausible mixes of how people sit and stand, not measured frequencies.

>>> rng = np.random.default_rng(0)
>>> way = draw_way("thigh", "SITTING", rng)
>>> way.name in {w.name for w in LATER_WAYS["thigh"]["SITTING"]}
True
>>> slip = draw_slip("thigh", rng)
>>> bool(np.allclose(slip @ slip.T, np.eye(3)))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .augment import WAIST_SIDEWAYS, WAIST_UP

#: The body's forward axis in the limb frame (the third of up and sideways).
FORWARD = np.cross(WAIST_SIDEWAYS, WAIST_UP)


@dataclass(frozen=True)
class Way:
    """One way of holding a posture (degrees; roll and sideways signs drawn
    at random where ``either_side``: left or right leg on top, either arm)."""

    name: str
    weight: float  # share of later bouts held this way (a plausible mix, not a measured one)
    flexion: tuple[float, float]
    roll: tuple[float, float]
    sideways: tuple[float, float] = (0.0, 0.0)
    either_side: bool = True


#: Per placement and posture: the ways later bouts are held (see the module doc for the sources).
LATER_WAYS: dict[str, dict[str, tuple[Way, ...]]] = {
    "thigh": {
        "SITTING": (
            Way("upright chair", 0.35, (78.0, 100.0), (-15.0, 15.0)),
            Way("leaning back on a sofa", 0.2, (95.0, 120.0), (-25.0, 25.0)),
            Way("perched on a stool or an edge", 0.1, (55.0, 80.0), (-15.0, 15.0)),
            Way("legs crossed, this thigh on top", 0.15, (95.0, 115.0), (20.0, 45.0), (-10.0, 10.0)),
            Way("ankle on the other knee", 0.1, (80.0, 100.0), (35.0, 70.0), (-10.0, 10.0)),
            Way("legs crossed, this thigh below", 0.1, (80.0, 100.0), (-10.0, 10.0)),
        ),
        "STANDING": (
            Way("upright", 0.4, (-5.0, 10.0), (-10.0, 10.0), (-5.0, 5.0)),
            Way("weight on this leg", 0.15, (-5.0, 5.0), (-10.0, 10.0), (3.0, 10.0)),
            Way("weight on the other leg, this knee bent", 0.2, (5.0, 20.0), (-15.0, 15.0), (3.0, 12.0)),
            Way("leaning on a wall, feet forward", 0.15, (5.0, 25.0), (-10.0, 10.0), (-5.0, 5.0)),
            Way("a foot up on a step or a rail", 0.1, (30.0, 60.0), (-20.0, 20.0), (-10.0, 10.0)),
        ),
    },
    "wrist": {
        "SITTING": (
            Way("forearm on a desk, typing", 0.3, (80.0, 100.0), (-90.0, -50.0), either_side=False),
            Way("hands in the lap", 0.25, (35.0, 70.0), (-60.0, 30.0), either_side=False),
            Way("holding a phone", 0.2, (60.0, 110.0), (-10.0, 70.0), either_side=False),
            Way("on an armrest", 0.1, (80.0, 100.0), (-30.0, 30.0), either_side=False),
            Way("hanging beside the chair", 0.1, (0.0, 25.0), (-30.0, 30.0), either_side=False),
            Way("chin on hand", 0.05, (140.0, 165.0), (0.0, 60.0), either_side=False),
        ),
        "STANDING": (
            Way("arms hanging", 0.4, (0.0, 25.0), (-30.0, 30.0), either_side=False),
            Way("hands clasped in front or on the hips", 0.2, (30.0, 70.0), (-60.0, 30.0), either_side=False),
            Way("holding a phone", 0.2, (60.0, 110.0), (-10.0, 70.0), either_side=False),
            Way("arms folded", 0.1, (70.0, 100.0), (-80.0, -30.0), either_side=False),
            Way("hand in a pocket", 0.1, (15.0, 40.0), (-40.0, 10.0), either_side=False),
        ),
    },
}
#: Per placement: the device's slip on the limb between bouts, ± degrees about
#: the limb's long axis, its forward axis and its sideways axis (module doc).
SLIP_DEGREES: dict[str, tuple[float, float, float]] = {
    "thigh": (15.0, 20.0, 10.0),
    "wrist": (20.0, 5.0, 5.0),
}


def _axis_angle(axis: np.ndarray, degrees: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.deg2rad(degrees) * np.asarray(axis, float)).as_matrix()


def draw_way(placement: str, posture: str, rng: np.random.Generator) -> Way:
    """One way of holding ``posture`` on ``placement``, drawn by weight,
    with its angles drawn within the way's ranges (a :class:`Way` whose
    ranges are single values)."""
    ways = LATER_WAYS[placement][posture]
    weights = np.array([w.weight for w in ways])
    way = ways[int(rng.choice(len(ways), p=weights / weights.sum()))]
    side = float(rng.choice([-1.0, 1.0])) if way.either_side else 1.0
    flexion = float(rng.uniform(*way.flexion))
    roll = side * float(rng.uniform(*way.roll))
    sideways = side * float(rng.uniform(*way.sideways))
    return Way(way.name, way.weight, (flexion, flexion), (roll, roll), (sideways, sideways), way.either_side)


def way_rotation(way: Way) -> np.ndarray:
    """The rotation taking what the waist device reads standing into what a
    device on the limb held as ``way`` (its drawn angles) reads: the limb
    rolled about its axis, flexed, then tilted sideways."""
    orientation = (
        _axis_angle(FORWARD, way.sideways[0])
        @ _axis_angle(WAIST_SIDEWAYS, way.flexion[0])
        @ _axis_angle(WAIST_UP, way.roll[0])
    )
    return orientation.T


def draw_slip(placement: str, rng: np.random.Generator) -> np.ndarray:
    """The rotation of what the limb's device reads by one slip of the
    device on the limb (uniform within :data:`SLIP_DEGREES` about each axis)."""
    along, forward, sideways = SLIP_DEGREES[placement]
    slip = (
        _axis_angle(WAIST_UP, rng.uniform(-along, along))
        @ _axis_angle(FORWARD, rng.uniform(-forward, forward))
        @ _axis_angle(WAIST_SIDEWAYS, rng.uniform(-sideways, sideways))
    )
    return slip.T
