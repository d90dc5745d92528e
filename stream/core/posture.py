"""Postures of a calibrated device, applied after the shared placement-free model (pure numpy).

A personal model is a device's own few parameters (:class:`PersonalHead`):
for each calibrated posture a few gravity directions in the device's frame
(*prototypes*) and the mean of a few micro-motion cues, the half-turns the
device may come back in, and how sure the calibration must be before it
names a posture. The shared placement-free model labels the window first
(WALKING, upstairs, downstairs or STILL); :func:`apply_heads` then shares
STILL's probability out over the device's calibrated postures and plain
STILL, for a whole batch of windows of many devices in one vectorised call.

The cues of a window (:func:`posture_cues`): the unit gravity direction
(the pipeline's 0.3 Hz estimate, averaged over the window) and six
orientation-free measures of how still the body is: the spread of the
acceleration magnitude, the rotation energy, the wobble of the gravity
direction (postural sway), and the low-frequency (< 2 Hz) body acceleration
along gravity and across it, and rotation.
A standing person sways; a seated one hardly does, even where the arm is
held the same way. Where the calibration had two postures or more, a linear
discriminant on the shared model's own features of the window (its feature
stage's output: how the body moves, in a placement-free way) adds to that.

The walking anchor: where the calibration had a walk, the head keeps the
device's mean gravity direction while walking (``walk_down``) and, per
posture, the angle between it and the posture's gravity (``walk_angle``:
mean and spread, degrees). On a thigh or a forearm that is the limb's
flexion from hanging (standing near 0°, sitting near 90° on a thigh), on a
waist the trunk's lean from upright (the APE method: sitting leans back);
it does not depend on how the device is rolled about the limb, which
changes from bout to bout where the prototypes' full direction does not
repeat. A still window whose angle from the walk lies within
:data:`ANGLE_GATE_Z` spreads of a posture's is near it even where it is
farther than ``max_angle`` from every prototype. Where a limb's angle
overlaps between postures (a forearm is held alike standing and sitting),
a head with ``angle_abstain`` shows STILL rather than a confident guess: a
window near a posture only by its angle is not named when the angle lies
within :data:`AMBIGUOUS_Z` spreads of another posture's too; and where the
calibration's check chose to trust the angle over the roll
(``angle_trusted``), a posture the angle argues against (it lies nearer, in
spreads, another posture's) is not named either.

The sides rule (``sides``: apart, buffer, limit, degrees): where a
posture's angle from the walk lies at least ``apart`` from every other
calibrated posture's (a thigh: standing near 0°, sitting near 90°; never a
waist, whose postures differ by 2-25°), a still window that is near no
posture by the gates above — a thigh crossed over the other, another
chair, the phone shifted in the pocket — is near the best-scoring posture
all the same where its angle lies on that posture's side of the midpoint
by ``buffer`` and within ``limit`` of the posture's angle, its direction
within ``limit`` of one of the posture's prototypes (:func:`side_of`):
between the two, and beyond the limit (unlike every calibrated posture,
e.g. an uncalibrated lying), it stays STILL.

Half-turns: a phone put back into a pocket turned round (top down, or screen
facing the other way) sees gravity with the signs of two of its components
flipped. :data:`TURNS` are those sign patterns; a head matches the current
direction against its prototypes under the turns it allows (decided when it
was fitted: only where the calibrated postures stay apart under them). A
head's ``turn_cost`` (cosine units) is taken off a match under a half-turn
while the device's live walk has not shown which turn it is in: the device
is as calibrated unless a turn fits clearly better (a phone that slid in
the pocket is not one turned round).

>>> head = PersonalHead(
...     "phone:a", "personal@1", "any@2", ("SITTING", "STANDING"),
...     {"SITTING": [[0.0, 0.0, 1.0]], "STANDING": [[0.0, -1.0, 0.0]]},
...     turns=TURN_NAMES, motion_mean=[[-3.0] * 6, [-3.0] * 6], motion_scale=[1.0] * 6,
...     margins=[[0.0, 1.0], [1.0, 0.0]])
>>> head.classes
('WALKING', 'WALKING_UPSTAIRS', 'WALKING_DOWNSTAIRS', 'SITTING', 'STANDING', 'STILL')
>>> still = np.array([[0.0, 0.0, 0.0, 1.0]])
>>> upside_down = np.array([[0.0, 1.0, 0.0] + [-3.0] * 6])    # standing, top down
>>> head.pick(apply_heads(still, upside_down, [head]))[0].round(2).tolist()
[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from harstream.stream.core.activities import PLACEMENT_FREE, POSTURES, STILL

MOVING = PLACEMENT_FREE[:3]
#: Every class a personal head can output, in a fixed order; a device's own
#: classes are the moving ones, its calibrated postures, then STILL.
SLOTS = (*MOVING, *POSTURES, STILL)
_FIRST_POSTURE = len(MOVING)
_STILL_SLOT = len(SLOTS) - 1
_BASE_STILL = PLACEMENT_FREE.index(STILL)

#: Half-turns of the device about one of its axes, as the sign flips they
#: make of the gravity components (x across the screen, y along it, z out of it).
TURNS: dict[str, tuple[float, float, float]] = {
    "none": (1.0, 1.0, 1.0),
    "top_down": (-1.0, -1.0, 1.0),  # about z: turned in the plane of the screen
    "screen_flipped": (-1.0, 1.0, -1.0),  # about y: the screen faces the other way
    "both": (1.0, -1.0, -1.0),  # about x: top down and the screen the other way
}
TURN_NAMES = tuple(TURNS)
CUE_NAMES = (
    "gravity_x",
    "gravity_y",
    "gravity_z",
    "log_acc_spread",
    "log_rotation_energy",
    "log_tilt_wobble",
    "log_slow_vertical_acc",
    "log_slow_horizontal_acc",
    "log_slow_rotation",
)
N_CUES = len(CUE_NAMES)
N_MOTION = N_CUES - 3
#: At most this many gravity prototypes per posture.
MAX_PROTOTYPES = 16
#: A pair of postures whose margin is this is never told apart: STILL.
INSEPARABLE = 1e6
#: A posture's motion log-likelihood is clipped here (a window unlike every
#: calibrated posture must not swamp the tilt).
MOTION_CLIP = 20.0
#: A window within this many spreads of a posture's angle from the walk is near it.
ANGLE_GATE_Z = 2.0
#: A window near a posture only by its angle from the walk (farther than
#: ``max_angle`` from the posture's every prototype: the limb rolled
#: otherwise) is not named when its angle also lies within this many spreads
#: of another calibrated posture's: the angle does not separate them there,
#: so it shows STILL rather than a confident guess (heads with ``angle_abstain``).
AMBIGUOUS_Z = 2.0
#: The shared model's probability of moving (walking, up or down stairs)
#: past which a window's gravity joins the device's live walk direction,
#: each window with weight :data:`LIVE_WEIGHT`.
LIVE_WALK_P = 0.6
LIVE_WEIGHT = 0.2
#: Only a window at least this far into a run of moving windows counts
#: (4 windows: about 5 s; standing up or sitting down takes 2-4 s).
LIVE_MIN_RUN = 4
#: A live walk within this many degrees of the calibrated walk under a
#: half-turn shows the device is in that turn.
LIVE_MATCH_DEG = 20.0
_SLOW = 25  # samples (0.5 s) of the moving average that keeps the body acceleration below ~2 Hz


def _variance(a: np.ndarray) -> np.ndarray:
    """Variance along the last axis (contiguous: numpy reduces it fastest)."""
    centred = a - a.mean(axis=-1, keepdims=True)
    return np.einsum("...w,...w->...", centred, centred) / a.shape[-1]


def _slow_variance(signal: np.ndarray) -> np.ndarray:
    """Variance over the window of ``(n, c, w)`` after a 0.5 s moving
    average (below about 2 Hz: sway and breathing, not steps), summed over channels."""
    c = np.cumsum(signal, axis=-1)
    slow = (c[..., _SLOW:] - c[..., :-_SLOW]) / _SLOW
    return _variance(slow).sum(axis=-1)


def posture_cues(windows: np.ndarray) -> np.ndarray:
    """``(n, N_CUES)`` cues of preprocessed windows ``(n, 128, 9)`` (of a
    stack ``(n, k, 128, 9)``: its current window): the unit gravity
    direction, then the log10 motion measures of :data:`CUE_NAMES`.

    >>> w = np.zeros((1, 128, 9), np.float32); w[..., 7] = -1.0
    >>> posture_cues(w)[0, :3].tolist()
    [0.0, -1.0, 0.0]
    """
    x = np.asarray(windows, np.float32)
    if x.ndim == 4:
        x = x[:, 0]
    x = np.ascontiguousarray(x.transpose(0, 2, 1), np.float64)  # (n, 9, w): reductions along the last axis
    body, gyro, total = x[:, 0:3], x[:, 3:6], x[:, 6:9]
    gravity = total - body
    mean = gravity.mean(axis=-1)
    down = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-6)
    unit = gravity / np.maximum(np.sqrt(np.einsum("ncw,ncw->nw", gravity, gravity)), 1e-6)[:, None, :]
    wobble = _variance(unit).sum(axis=1)
    spread = np.sqrt(_variance(np.sqrt(np.einsum("ncw,ncw->nw", total, total))))
    rotation = np.einsum("ncw,ncw->n", gyro, gyro) / x.shape[-1]
    vertical = np.einsum("ncw,nc->nw", body, down)  # body acceleration along gravity, and across it
    across = body - vertical[:, None, :] * down[:, :, None]
    motion = np.stack(
        [
            np.log10(spread + 1e-4),
            np.log10(rotation + 1e-7),
            np.log10(wobble + 1e-9),
            np.log10(_slow_variance(vertical[:, None, :]) + 1e-8),
            np.log10(_slow_variance(across) + 1e-8),
            np.log10(_slow_variance(gyro) + 1e-8),
        ],
        axis=1,
    )
    return np.concatenate([down, motion], axis=1).astype(np.float32)


@dataclass(eq=False)
class PersonalHead:
    """One device's calibrated parameters (a few hundred numbers).

    ``prototypes``: per calibrated posture, unit gravity directions ``(m, 3)``;
    ``turns``: the half-turns (:data:`TURNS` names) under which they are
    matched; ``motion_mean`` ``(postures, N_MOTION)`` and ``motion_scale``
    ``(N_MOTION,)``: each posture's mean micro-motion cues and their spread;
    ``walk_down`` ``(3,)`` (or empty) and ``walk_angle`` ``(postures, 2)``:
    the calibrated walk's gravity direction and each posture's angle from
    it, mean and spread (degrees), scored with weight ``angle_weight``;
    ``margins`` ``(postures, postures)``: by how much (score units) the
    best posture must beat each other one to be named, else STILL
    (:data:`INSEPARABLE`: never). Farther than ``max_angle`` degrees from
    every prototype is plain STILL too, and so, with ``angle_abstain``, is
    an angle two postures share (see the module doc; ``angle_trusted``:
    the fit trusted the angle over the roll, so the angle must not argue
    against the name either). ``calibrated`` is every activity the
    calibration accepted (moving ones included).
    """

    device: str
    model_id: str
    base_model: str
    postures: tuple[str, ...]
    prototypes: Mapping[str, Sequence[Sequence[float]]]
    turns: Sequence[str] = ("none",)
    max_angle: float = 30.0
    sharpness: float = 200.0
    motion_mean: Sequence[Sequence[float]] = ()
    motion_scale: Sequence[float] = ()
    motion_weight: float = 1.0
    margins: Sequence[Sequence[float]] = ()
    calibrated: frozenset[str] = frozenset()
    walk_down: Sequence[float] = ()
    walk_angle: Sequence[Sequence[float]] = ()
    angle_weight: float = 1.0
    angle_abstain: bool = False  # STILL where only the angle speaks and two postures' angles overlap (AMBIGUOUS_Z)
    angle_trusted: bool = False  # the fit trusted the angle over the roll: with angle_abstain, it must agree
    # the sides rule: (apart, buffer, limit) degrees, empty: off (see :func:`side_of` and the module doc)
    sides: Sequence[float] = ()
    # cosine units a half-turn costs before the device's walk shows it is in one (0: none)
    turn_cost: float = 0.0
    # a linear discriminant on the shared model's own window features (its feature
    # stage's output for the current window): mean, scale (F,), coef (F, postures), intercept
    feature_mean: Sequence[float] = ()
    feature_scale: Sequence[float] = ()
    feature_coef: Sequence[Sequence[float]] = ()
    feature_intercept: Sequence[float] = ()
    decoder: dict | None = None
    summary: tuple[str, ...] = ()
    follows_walk: bool = True  # False: the live walk direction is never followed (studies' comparison)
    _arrays: tuple = field(default=(), repr=False)
    # the device's gravity direction while walking lately (unit, its frame now): state kept while served
    live_walk: np.ndarray | None = field(default=None, init=False, repr=False)
    live_turn: int | None = field(default=None, init=False, repr=False)  # the turn it shows (walk_turn)
    moving_run: int = field(default=0, init=False, repr=False)  # consecutive moving windows just seen

    def __post_init__(self) -> None:
        self.postures = tuple(self.postures)
        self.turns = tuple(dict.fromkeys(("none", *self.turns)))
        self.calibrated = frozenset(self.calibrated) | frozenset(self.postures)
        k = len(self.postures)
        # every posture's prototypes under every half-turn; which turns count is decided per row
        # (the turns allowed at fit time, and the one the device's own walk shows it is in)
        signs = np.array([TURNS[t] for t in TURN_NAMES], np.float32)  # (4, 3)
        allowed = np.array([t in self.turns for t in TURN_NAMES])
        # (posture, turn, prototype, xyz); penalty -10 (cosine units) for an empty prototype slot
        turned = np.zeros((len(POSTURES), len(TURNS), MAX_PROTOTYPES, 3), np.float32)
        penalty = np.full((len(POSTURES), len(TURNS), MAX_PROTOTYPES), -10.0, np.float32)
        mean = np.zeros((len(POSTURES), N_MOTION), np.float32)
        margins = np.zeros((len(POSTURES), len(POSTURES)), np.float32)
        slots = [POSTURES.index(p) for p in self.postures]
        # the walk's direction under each turn, and each posture's angle from it (spread 1: unused)
        walks = np.zeros((len(TURNS), 3), np.float32)
        angles = np.zeros((len(POSTURES), 2), np.float32)
        angles[:, 1] = 1.0
        anchored = len(self.walk_down) == 3 and len(self.walk_angle) == k and k > 0
        if anchored:
            walks[:] = np.asarray(self.walk_down, np.float32)[None, :] * signs
        for i, (slot, posture) in enumerate(zip(slots, self.postures)):
            protos = np.asarray(self.prototypes[posture], np.float32).reshape(-1, 3)
            turned[slot, :, : len(protos)] = protos[None, :, :] * signs[:, None, :]
            penalty[slot, :, : len(protos)] = 0.0
            if anchored:
                angles[slot] = np.asarray(self.walk_angle, np.float32)[i]
            if k and len(self.motion_mean):
                mean[slot] = np.asarray(self.motion_mean, np.float32)[i]
            for j, other in enumerate(slots):
                if len(self.margins):
                    margins[slot, other] = float(np.asarray(self.margins)[i, j])
        mask = np.zeros(len(POSTURES), bool)
        mask[slots] = True
        scale = np.asarray(self.motion_scale if len(self.motion_scale) else np.ones(N_MOTION), np.float32)
        columns = [SLOTS.index(c) for c in self.classes]
        discriminant = None
        if len(self.feature_coef):
            coef = np.asarray(self.feature_coef, np.float32).reshape(len(self.feature_mean), k)
            padded = np.zeros((len(self.feature_mean), len(POSTURES)), np.float32)
            padded[:, slots] = coef
            intercept = np.zeros(len(POSTURES), np.float32)
            intercept[slots] = np.asarray(self.feature_intercept, np.float32)
            discriminant = (
                np.asarray(self.feature_mean, np.float32),
                np.asarray(self.feature_scale, np.float32),
                padded,
                intercept,
            )
        anchor = (walks, angles) if anchored else None
        # the sides rule's numbers (apart, buffer, limit) and each posture slot's angle from the walk;
        # None: off (as without a walking anchor)
        sides = (
            np.concatenate([np.asarray(self.sides, np.float32), angles[:, 0]])
            if anchored and len(self.sides) == 3
            else None
        )
        self._arrays = (
            turned,
            penalty,
            mean,
            scale,
            margins,
            mask,
            np.array(columns),
            discriminant,
            anchor,
            # the turns allowed at fit time, as a penalty; a turn costs turn_cost until the device's walk shows it
            np.where(allowed, np.where(np.arange(len(TURNS)) == 0, 0.0, -self.turn_cost), -10.0).astype(np.float32),
            sides,
        )
        self.live_walk = None
        self.live_turn = None
        self.moving_run = 0

    def follow_walk(self, down: np.ndarray, windows: int = 1) -> None:
        """Fold the gravity direction of ``windows`` walking windows (their
        mean, ``down``) into the device's live walk direction (each window
        weighs :data:`LIVE_WEIGHT`); nothing without a calibrated walk."""
        if self._arrays[8] is not None:
            _follow([self], np.asarray(down, np.float64).reshape(1, 3), np.array([windows]))

    def walk_turn(self) -> int | None:
        """The half-turn (index into :data:`TURN_NAMES`) the device's live walk
        shows it is in against its calibrated walk, None when it has not
        walked since it was loaded, or matches no turn, or more than one,
        within :data:`LIVE_MATCH_DEG`."""
        return self.live_turn

    @property
    def feature_size(self) -> int:
        """How many of the shared model's features its discriminant takes (0: none)."""
        return len(self.feature_mean) if len(self.feature_coef) else 0

    @property
    def classes(self) -> tuple[str, ...]:
        """What this device is shown: the moving classes, its postures, STILL."""
        return (*MOVING, *self.postures, STILL)

    def pick(self, slots: np.ndarray) -> np.ndarray:
        """Rows over :data:`SLOTS` → rows over this head's :attr:`classes`."""
        return np.asarray(slots)[..., self._arrays[6]]


#: The feature discriminant's logits are clipped here (one odd feature must not decide alone).
LDA_CLIP = 20.0


def posture_scores(
    heads: Sequence[PersonalHead], cues: np.ndarray, features: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(scores, best cosine, usable, angle z, angle off)`` per row and posture slot, row ``i``
    scored by ``heads[i]`` (a slot is usable where the posture was
    calibrated and the row has what its head needs: the shared model's
    features ``features[i]`` for a head with a feature discriminant;
    unusable slots score -1e9; angle z: how many spreads the row's angle
    from the walk lies from the posture's, inf without a walking anchor;
    angle off ``(n, 3, turns)``: how many degrees it lies from the
    posture's, under each half-turn that counts, inf elsewhere)."""
    cues = np.asarray(cues, np.float32)
    turned = np.stack([h._arrays[0] for h in heads])  # (n, 3, T, P, 3)
    turn_penalty = np.stack([h._arrays[9] for h in heads])  # (n, T): 0 where the turn counts
    live = [h.live_turn for h in heads]
    for i, t in enumerate(live):
        if t is not None:  # the device's own walk shows the turn it is in: that one counts, alone
            turn_penalty[i] = -10.0
            turn_penalty[i, t] = 0.0
    mean = np.stack([h._arrays[2] for h in heads])  # (n, 3, D)
    scale = np.stack([h._arrays[3] for h in heads])  # (n, D)
    mask = np.stack([h._arrays[5] for h in heads])  # (n, 3)
    sharp = np.array([h.sharpness for h in heads], np.float32)[:, None]
    weight = np.array([h.motion_weight for h in heads], np.float32)[:, None]
    cosines = np.einsum("nktpd,nd->nktp", turned, cues[:, :3]) + np.stack([h._arrays[1] for h in heads])
    per_turn = cosines.max(axis=3) + turn_penalty[:, None, :]  # (n, 3, T): the best prototype under each turn
    best = per_turn.max(axis=2)  # (n, 3)
    tilt = sharp * best
    anchored = np.full(best.shape, np.inf, np.float32)  # (n, 3): z of the angle from the walk
    off = np.full(per_turn.shape, np.inf, np.float32)  # (n, 3, T): degrees from the posture's angle, per turn
    with_anchor = [i for i, h in enumerate(heads) if h._arrays[8] is not None]
    if with_anchor:
        a = np.asarray(with_anchor)
        walks = np.stack([heads[i]._arrays[8][0] for i in with_anchor])  # (m, T, 3)
        for r, i in enumerate(with_anchor):  # where the device walked in a turn, its live walk stands for it there
            if live[i] is not None:
                walks[r, live[i]] = heads[i].live_walk
        angles = np.stack([heads[i]._arrays[8][1] for i in with_anchor])  # (m, 3, 2)
        degrees = np.degrees(np.arccos(np.clip(np.einsum("mtd,md->mt", walks, cues[a, :3]), -1.0, 1.0)))
        apart = np.abs(degrees[:, None, :] - angles[:, :, :1])  # (m, 3, T)
        zed = apart / angles[:, :, 1:]
        off[a] = np.where(per_turn[a] > -5.0, apart, np.inf)
        w = np.array([heads[i].angle_weight for i in with_anchor], np.float32)[:, None, None]
        term = np.maximum(-0.5 * w * zed * zed, -MOTION_CLIP)
        tilt[a] = (sharp[a][:, :, None] * per_turn[a] + term).max(axis=2)
        anchored[a] = np.where(per_turn[a] > -5.0, zed, np.inf).min(axis=2)  # over the turns that count
    z = (cues[:, None, 3:] - mean) / scale[:, None, :]
    likelihood = np.maximum(-0.5 * np.einsum("nkd,nkd->nk", z, z), -MOTION_CLIP)
    scores = tilt + weight * likelihood
    with_lda = [i for i, h in enumerate(heads) if h._arrays[7] is not None]
    if with_lda:
        width = None if features is None else np.asarray(features).reshape(len(heads), -1).shape[1]
        fits = [i for i in with_lda if width == heads[i].feature_size]
        for i in set(with_lda) - set(fits):  # no features, or not the ones it was fitted on: no posture
            mask[i] = False
        if fits:
            f = np.asarray(features, np.float32).reshape(len(heads), -1)[fits]
            parts = [heads[i]._arrays[7] for i in fits]
            centred = (f - np.stack([p[0] for p in parts])) / np.stack([p[1] for p in parts])
            lda = np.einsum("nf,nfk->nk", centred, np.stack([p[2] for p in parts])) + np.stack([p[3] for p in parts])
            scores[fits] += np.clip(np.nan_to_num(lda), -LDA_CLIP, LDA_CLIP)
    return np.where(mask, scores, -1e9), best, mask, anchored, np.where(mask[:, :, None], off, np.inf)


def side_of(heads: Sequence[PersonalHead], off: np.ndarray, mask: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Per row, the posture slot whose side of the angle from the walk the
    row lies on (the sides rule, see the module doc), -1 where none (the
    head's rule is off, or the row lies in the buffer, or farther than the
    limit from the posture's angle or from its every prototype — unlike it
    in the whole direction too, as an uncalibrated lying is — or a posture
    near the named one in angle leaves it unsure, or two half-turns that
    count name two postures). ``off``, ``mask``, ``best``: from :func:`posture_scores`."""
    off_rule = np.array([np.inf, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32)  # apart inf: no two postures that far apart
    sides = np.stack([off_rule if h._arrays[10] is None else h._arrays[10] for h in heads])  # (n, 6)
    apart, buffer, limit, means = sides[:, 0], sides[:, 1], sides[:, 2], sides[:, 3:]
    far = np.abs(means[:, :, None] - means[:, None, :]) >= apart[:, None, None]  # (n, k, k')
    others = mask[:, None, :] & ~np.eye(mask.shape[1], dtype=bool)[None]  # (n, k, k'): the other calibrated postures
    # k is named under a turn where every other posture is far from it in angle and the row lies
    # past the midpoint between them by the buffer, and within the limit of k's angle
    with np.errstate(invalid="ignore"):  # inf - inf where a turn does not count: nan, never past the buffer
        lead = off[:, None, :, :] - off[:, :, None, :]  # (n, k, k', T): degrees nearer k than k'
    beyond = np.where(others[..., None], far[..., None] & (lead >= 2.0 * buffer[:, None, None, None]), True)
    alone = others.any(axis=2)  # (n, k): k has another calibrated posture to lie apart from
    alike = best >= np.cos(np.deg2rad(limit))[:, None]  # (n, k): within the limit of a prototype, too
    named = beyond.all(axis=2) & (off <= limit[:, None, None]) & (mask & alone & alike)[:, :, None]
    side = named.any(axis=2)  # (n, k): under some turn that counts
    return np.where(side.sum(axis=1) == 1, side.argmax(axis=1), -1)


def follow_walks(heads: Sequence[PersonalHead], base: np.ndarray, cues: np.ndarray, finite: np.ndarray) -> None:
    """Each anchored head's live walk direction follows its rows the shared
    model says are moving, from the :data:`LIVE_MIN_RUN`-th window of a run
    of them on (one update per device and call; rows in time order)."""
    moving = (np.asarray(base)[:, :_FIRST_POSTURE].sum(axis=1) >= LIVE_WALK_P) & finite
    rows: dict[int, list[int]] = {}
    for i, head in enumerate(heads):
        if head._arrays[8] is None or not head.follows_walk:
            continue
        # a walk lasts: a posture's change (a few seconds of movement) is not one
        head.moving_run = head.moving_run + 1 if moving[i] else 0
        if head.moving_run >= LIVE_MIN_RUN:
            rows.setdefault(id(head), []).append(i)
    if rows:
        idx = list(rows.values())
        flat = np.concatenate(idx)
        group = np.repeat(np.arange(len(idx)), [len(i) for i in idx])
        sums = np.zeros((len(idx), 3))  # each device's windows' summed direction: its mean's direction
        np.add.at(sums, group, np.asarray(cues, np.float64)[flat, :3])
        _follow([heads[i[0]] for i in idx], sums, np.bincount(group))


def _follow(heads: Sequence[PersonalHead], down: np.ndarray, windows: np.ndarray) -> None:
    """Fold ``down`` ``(m, 3)`` (the mean of ``windows`` walking windows each)
    into each of ``heads``' live walk, and say which turn each now shows."""
    d = down / np.maximum(np.linalg.norm(down, axis=1, keepdims=True), 1e-9)
    known = np.array([h.live_walk is not None for h in heads])
    old = np.stack([h.live_walk if h.live_walk is not None else np.zeros(3) for h in heads])
    keep = np.where(known, (1.0 - LIVE_WEIGHT) ** windows, 0.0)[:, None]
    live = keep * old + (1.0 - keep) * d
    live /= np.maximum(np.linalg.norm(live, axis=1, keepdims=True), 1e-9)
    walks = np.stack([h._arrays[8][0] for h in heads]).astype(np.float64)  # (m, T, 3)
    close = np.einsum("mtd,md->mt", walks, live) >= np.cos(np.deg2rad(LIVE_MATCH_DEG))
    turn = close.argmax(axis=1)
    unique = close.sum(axis=1) == 1  # a walk two turns leave alike shows neither
    for h, v, t, u in zip(heads, live, turn.tolist(), unique.tolist()):
        h.live_walk = v
        h.live_turn = t if u else None


def apply_heads(
    base: np.ndarray, cues: np.ndarray, heads: Sequence[PersonalHead], features: np.ndarray | None = None
) -> np.ndarray:
    """Probabilities over :data:`SLOTS` for windows whose placement-free
    probabilities are ``base`` ``(n, 4)`` and cues ``cues`` ``(n, N_CUES)``,
    row ``i`` of device ``heads[i]``: the moving classes as the shared model
    said; STILL's probability given to the postures the head is sure of, else
    left on STILL. ``features``: the shared model's features of each row's
    window (for heads with a feature discriminant; without them such a head
    says STILL). Use :meth:`PersonalHead.pick` for a device's own columns.
    Then the rows the shared model says are moving update their heads'
    live walk direction (:func:`follow_walks`), for the calls after this one:
    call it with each device's windows in time order, as the worker does."""
    base = np.asarray(base, np.float64)
    n = len(base)
    out = np.zeros((n, len(SLOTS)))
    out[:, :_FIRST_POSTURE] = base[:, :_FIRST_POSTURE]
    still = base[:, _BASE_STILL]
    if n == 0:
        return out
    cues = np.asarray(cues, np.float32)
    finite = np.isfinite(cues).all(axis=1)
    cues = np.where(finite[:, None], cues, 0.0)
    scores, best, mask, zed, off = posture_scores(heads, cues, features)
    follow_walks(heads, base, cues, finite)  # after: a window's walk counts for the windows after it
    gate = np.array([np.cos(np.deg2rad(h.max_angle)) for h in heads])
    top = scores.argmax(axis=1)
    rows = np.arange(n)
    near = (np.where(mask, best, -np.inf).max(axis=1) >= gate) | (zed[rows, top] <= ANGLE_GATE_Z)
    # near no posture, but on the best one's side of the angle, far from the others (only the rows it may change)
    ruled = np.array([i for i in np.flatnonzero(~near).tolist() if heads[i]._arrays[10] is not None], np.intp)
    if len(ruled):
        near[ruled] = side_of([heads[int(i)] for i in ruled], off[ruled], mask[ruled], best[ruled]) == top[ruled]
    near &= finite & mask.any(axis=1)
    margins = np.stack([h._arrays[4] for h in heads])[rows, top]  # (n, 3): top against each
    lead = scores[rows, top][:, None] - scores
    beaten = (lead >= margins) | ~mask
    beaten[rows, top] = True
    sure = near & beaten.all(axis=1)
    # near only by the angle from the walk, and that angle is near another posture's too: not told apart
    by_angle_only = best[rows, top] < gate
    others = np.where(mask, zed, np.inf)
    others[rows, top] = np.inf
    overlap = (others <= AMBIGUOUS_Z).any(axis=1)
    abstains = np.array([h.angle_abstain for h in heads])
    sure &= ~(abstains & by_angle_only & overlap)
    # where the calibration chose to trust the angle over the roll, a name the angle disagrees with is not given
    agrees = np.array([h.angle_abstain and h.angle_trusted for h in heads])
    sure &= ~(agrees & (zed[rows, top] > others.min(axis=1)))
    finite_scores = np.where(mask, scores, -np.inf)
    shifted = np.exp(finite_scores - finite_scores.max(axis=1, keepdims=True, initial=-1e30))
    share = shifted / np.maximum(shifted.sum(axis=1, keepdims=True), 1e-30)
    out[:, _FIRST_POSTURE:_STILL_SLOT] = (still * sure)[:, None] * share
    out[:, _STILL_SLOT] = still * ~sure
    return out
