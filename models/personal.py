"""Personal models: a short calibration of one device teaches it postures.

The placement-free model (:mod:`harstream.models.placement_free`) knows, for
any placement, whether the device moves and how (walking, upstairs,
downstairs) — but not whether its wearer sits, stands or lies: those are
orientations of the body, and how the device sits on the body is unknown.
A calibration of the device supplies exactly that, as a few numbers of its
own (:class:`~harstream.stream.core.posture.PersonalHead`, a few kilobytes
of JSON, :mod:`harstream.stream.personal.model_file`) applied after the
shared model, in the same batch as every other device:

- per calibrated posture, a few *prototypes* of the device's gravity
  direction (the pipeline's 0.3 Hz estimate) and the mean of its
  micro-motion cues (:func:`~harstream.stream.core.posture.posture_cues`:
  how much the body sways and turns); later, when the shared model says
  STILL, the posture whose prototypes lie closest (and whose stillness is
  most alike) is the answer — or plain STILL when none lies within
  :attr:`PersonalSettings.max_angle` degrees, or when the calibration showed
  that the evidence does not separate the best posture from the next one by
  the *margin* learned for that pair (:func:`learn_margins`: a two-fold check
  on the calibration's own windows, first half against second half, finds
  the lead past which 90 % were named right);
- the *half-turns* the device may come back in (a phone back in a pocket top
  down, or with the screen facing the other way, sees gravity with two
  components' signs flipped): with :attr:`PersonalSettings.half_turns` (the
  default) they are allowed wherever the calibrated postures stay at least
  :data:`SEPARATION_DEG` apart under them (:func:`choose_turns`, decided at
  fit time and said in the summary the page shows);
- where a walk was calibrated, the device's gravity direction while walking
  and each posture's angle from it (:func:`walk_angles`: a limb's flexion,
  a trunk's lean, whatever the limb's roll); how much to trust that angle
  over the full direction (:func:`roll_free`) is decided by the same
  two-fold check (whichever names more of its windows right), and said in
  the summary;
- which activities were calibrated (``calibrated``), the base model it was
  fitted over (a personal model over another base is refused by the worker:
  refit it), and the display decoder's parameters.

Fitting (:func:`fit_personal`) is a pure function of the labelled
recordings and the base artifact (whose probabilities say whether the device
was still); it takes about a second. Bad calibration data is refused per
activity with a reason, the rest is kept:

- less than :data:`MIN_SECONDS` of an activity;
- a posture during which the device was not still (the base model saw
  movement in more than half of its windows);
- a way of walking during which the device was still in more than half of
  its windows.

The personal model also gets its live display decoder
(:func:`personal_decoder`), derived from the base model's shipped decoder
statistics (training subjects only) without reading any dataset.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE, POSTURES, STILL
from harstream.stream.core.decoder import TRANSITION_ENDS
from harstream.stream.core.pipeline import STEP, cut_windows, preprocess_recording
from harstream.stream.core.posture import (
    INSEPARABLE,
    MAX_PROTOTYPES,
    N_MOTION,
    TURNS,
    PersonalHead,
    posture_cues,
    posture_scores,
)
from harstream.stream.core.rate import RATE_HZ
from harstream.stream.data.recordings import Recording
from harstream.stream.personal.model_file import head_to_json, personal_file_name, write_personal_file

from .dataset import context_windows, segment_windows

if TYPE_CHECKING:  # the functions below import .artifact when called; this import is for the annotations only
    from .artifact import ModelArtifact

#: An activity needs at least this much labelled data to be calibrated.
MIN_SECONDS = 20.0
#: A posture (or a way of walking) is refused when the device was moving
#: (or still) in more than this share of its windows.
MAX_WRONG_SHARE = 0.5
MOVING = PLACEMENT_FREE[:3]
_STILL_INDEX = PLACEMENT_FREE.index(STILL)
#: The share of STILL's probability the decoder expects the posture head to
#: give the posture actually held (the rest spread over the other still
#: classes). An assumption, not a fit.
POSTURE_TRUST = 0.8
#: Two postures whose gravity directions lie closer than this (degrees) are
#: not told apart by tilt: a half-turn that brings them this close is not allowed.
SEPARATION_DEG = 20.0
#: A posture is named only past a lead at which the two-fold check on the
#: calibration named PersonalSettings.named_precision of its windows right,
#: and only if that lead lets at least this share of the windows be named;
#: else the pair is never told apart (both show STILL).
MIN_NAMED_SHARE = 0.3
#: The smallest margin (score units: natural-log odds) a posture must win by.
MARGIN_FLOOR = 2.0
#: Micro-motion cues' spread is at least this (log10 units): another day, another chair.
MOTION_SCALE_FLOOR = 0.25
#: How the page and CLI name the half-turns.
TURN_WORDS = {
    "top_down": "top down",
    "screen_flipped": "screen facing the other way",
    "both": "top down and screen facing the other way",
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersonalSettings:
    """How postures are matched (docs/BENCHMARKS.md, calibration study)."""

    #: Farther than this (degrees) from every calibrated posture: plain STILL.
    max_angle: float = 30.0
    #: Allow the half-turns under which the calibrated postures stay apart
    #: (decided at fit time); False: the device must come back as it was.
    half_turns: bool = True
    #: Consecutive still windows averaged into one prototype.
    windows_per_prototype: int = 4
    #: Score units per unit of cosine similarity to a posture's prototypes.
    sharpness: float = 200.0
    #: Weight of the micro-motion log-likelihood in a posture's score.
    motion_weight: float = 1.0
    #: Also a linear discriminant on the shared model's own features of the
    #: window (how the body moves, placement-free), with two postures or more.
    discriminant: bool = True
    #: A posture is named past the lead at which the calibration's own check
    #: named this share of its windows right (:func:`confident_margin`).
    named_precision: float = 0.9
    #: Also score each posture by its angle from the calibrated walk's gravity
    #: direction (the limb's flexion, the trunk's lean), where a walk was calibrated.
    walk_anchor: bool = True
    #: Weight of that angle's log-likelihood in a posture's score.
    angle_weight: float = 1.0
    #: The angle's spread is at least this (degrees): another bout, another chair.
    angle_spread: float = 12.0
    #: Also try trusting the angle from the walk over the whole tilt
    #: (:func:`roll_free`) and keep whichever the calibration's check names more right with.
    roll_free: bool = True
    #: Show STILL where a window is near a posture only by its angle from the
    #: walk and that angle lies near another posture's too
    #: (:data:`~harstream.stream.core.posture.AMBIGUOUS_Z`). Off: on the test
    #: subjects it turned more right postures into STILL than wrong ones and
    #: cost the simulated thigh (docs/BENCHMARKS.md, "Abstaining on a wrist").
    angle_abstain: bool = False
    #: With ``angle_abstain``, where the fit trusts the angle over the roll
    #: (:func:`roll_free`), also show STILL where the angle favours another
    #: posture than the one named.
    angle_agrees: bool = True
    #: The sides rule, ``(apart, buffer, limit)`` degrees (None: off): where
    #: a posture's angle from the walk lies at least ``apart`` from every
    #: other calibrated posture's (a thigh standing and sitting), a still
    #: window too far from every posture to be near one, but on that
    #: posture's side of the midpoint by ``buffer`` and within ``limit`` of
    #: its angle, is near it (:func:`~harstream.stream.core.posture.side_of`).
    #: Chosen on the validation subjects by the rule declared in
    #: :mod:`harstream.models.studies.posture_sides` (docs/BENCHMARKS.md).
    sides: tuple[float, float, float] | None = (40.0, 10.0, 60.0)
    #: Cosine units a half-turn costs a posture's tilt while the device's
    #: live walk has not shown it is in one: the device is taken to be as it
    #: was calibrated unless a turn fits clearly better (a phone slid in the
    #: pocket is not a phone turned round). 0: every allowed turn as likely.
    #: Off: on the validation subjects it cost the turned figures and HAPT's
    #: lying (:mod:`harstream.models.studies.posture_sides`).
    turn_cost: float = 0.0


def roll_free(settings: PersonalSettings) -> PersonalSettings:
    """``settings`` trusting a posture's angle from the walk (which a limb's
    roll does not change) over its whole gravity direction: a quarter of the
    sharpness, three times the angle's weight (docs/BENCHMARKS.md)."""
    return replace(settings, sharpness=settings.sharpness / 4, angle_weight=settings.angle_weight * 3)


@dataclass
class ActivityCheck:
    """What the calibration made of one labelled activity."""

    activity: str
    seconds: float
    windows: int
    accepted: bool
    reason: str = ""
    still_windows: int = 0


@dataclass
class PairCheck:
    """How the calibration tells two postures apart (:func:`learn_margins`)."""

    postures: tuple[str, str]
    angle: float  # degrees between their gravity directions (closest prototypes)
    accuracy: float  # share right in the two-fold check on the calibration's windows
    margin: float  # score units the winner must lead by; INSEPARABLE: never named
    named: float = 0.0  # share of the check's windows named, and named right, past that margin

    @property
    def separable(self) -> bool:
        return self.margin < INSEPARABLE


@dataclass
class PersonalFit:
    """A fitted personal model and what went into it."""

    head: PersonalHead
    checks: list[ActivityCheck]
    settings: PersonalSettings
    context_steps: tuple[int, ...]
    seconds: float
    pairs: list[PairCheck] = field(default_factory=list)
    base_sha256: str = ""

    @property
    def classes(self) -> list[str]:
        return list(self.head.classes)

    @property
    def calibrated(self) -> list[str]:
        return [c.activity for c in self.checks if c.accepted]

    @property
    def refused(self) -> dict[str, str]:
        return {c.activity: c.reason for c in self.checks if not c.accepted}

    @property
    def prototypes(self) -> dict[str, int]:
        return {p: len(v) for p, v in self.head.prototypes.items()}

    @property
    def summary(self) -> list[str]:
        return list(self.head.summary)


@dataclass
class _Bouts:
    """Calibration windows with their activity (0-5) and bout number."""

    x: np.ndarray
    y: np.ndarray
    bout: np.ndarray


def _calibration_windows(recordings: Sequence[Recording], context_steps: Sequence[int]) -> _Bouts:
    xs, ys, bouts, next_bout = [], [], [], 0
    for rec in recordings:
        starts, classes = segment_windows(rec.labels)
        if len(starts) == 0:
            continue
        processed = preprocess_recording(rec.samples.astype(np.float32))
        xs.append(
            context_windows(processed, starts, context_steps) if context_steps else cut_windows(processed, starts)
        )
        new = np.concatenate([[True], (np.diff(starts) != STEP) | (np.diff(classes) != 0)])
        bouts.append(next_bout + np.cumsum(new) - 1)
        next_bout = int(bouts[-1][-1]) + 1
        ys.append(classes)
    if not xs:
        return _Bouts(np.empty((0,)), np.empty(0, np.int64), np.empty(0, np.int64))
    return _Bouts(np.concatenate(xs), np.concatenate(ys), np.concatenate(bouts))


def labelled_seconds(recordings: Sequence[Recording]) -> dict[str, float]:
    """Seconds of data labelled with each activity (labels 1-6), by name."""
    counts = np.zeros(len(ACTIVITIES))
    for rec in recordings:
        labels = np.asarray(rec.labels)
        counts += np.bincount(labels[(labels >= 1) & (labels <= 6)] - 1, minlength=len(ACTIVITIES))[: len(ACTIVITIES)]
    return {name: float(n / RATE_HZ) for name, n in zip(ACTIVITIES, counts) if n}


def check_activity(name: str, seconds: float, windows: int, still: int) -> ActivityCheck:
    """Accept or refuse one activity's calibration data, saying why.

    >>> check_activity("SITTING", 12.5, 8, 8).reason
    'SITTING: only 12.5 s of data; a calibration needs at least 20 s of each activity'
    >>> check_activity("SITTING", 40.0, 30, 3).reason
    'SITTING: the device was moving in 27 of 30 windows; a posture is learned from the device held still in it'
    """
    check = ActivityCheck(name, round(seconds, 1), windows, True, still_windows=still)
    if seconds < MIN_SECONDS or windows == 0:
        check.accepted = False
        check.reason = (
            f"{name}: only {seconds:.1f} s of data; a calibration needs at least {MIN_SECONDS:.0f} s of each activity"
        )
    elif name in POSTURES and (windows - still) > MAX_WRONG_SHARE * windows:
        check.accepted = False
        check.reason = (
            f"{name}: the device was moving in {windows - still} of {windows} windows; "
            "a posture is learned from the device held still in it"
        )
    elif name in MOVING and still > MAX_WRONG_SHARE * windows:
        check.accepted = False
        check.reason = f"{name}: the device was still in {still} of {windows} windows; walk while recording it"
    return check


def posture_prototypes(down: np.ndarray, bout: np.ndarray, windows_per_prototype: int) -> np.ndarray:
    """Unit gravity directions ``(m <= MAX_PROTOTYPES, 3)`` from the windows'
    directions ``down``: the mean over each run of up to
    ``windows_per_prototype`` consecutive windows of one bout (evenly thinned
    to at most :data:`MAX_PROTOTYPES`).

    >>> posture_prototypes(np.tile([0.0, 0.0, 1.0], (8, 1)), np.zeros(8), 4).tolist()
    [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    """
    out = []
    for b in np.unique(bout):
        d = np.asarray(down, np.float64)[bout == b]
        for i in range(0, len(d), windows_per_prototype):
            m = d[i : i + windows_per_prototype].mean(axis=0)
            out.append(m / max(np.linalg.norm(m), 1e-9))
    protos = np.asarray(out, np.float32).reshape(-1, 3)
    if len(protos) > MAX_PROTOTYPES:
        protos = protos[np.linspace(0, len(protos) - 1, MAX_PROTOTYPES).round().astype(int)]
    return protos


def separation(a: np.ndarray, b: np.ndarray, turns: Sequence[str]) -> float:
    """Degrees between the closest of prototypes ``a`` and prototypes ``b``
    turned by any of ``turns``.

    >>> separation(np.array([[0.0, 1.0, 0.0]]), np.array([[0.0, -1.0, 0.0]]), ["none"])
    180.0
    >>> separation(np.array([[0.0, 1.0, 0.0]]), np.array([[0.0, -1.0, 0.0]]), ["none", "top_down"])
    0.0
    """
    signs = np.array([TURNS[t] for t in turns])
    cos = np.einsum("id,sd,jd->sij", np.asarray(a, float), signs, np.asarray(b, float)).max()
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).round(1))


#: The sets of half-turns tried, largest first (each a group: a phone turned
#: twice is turned by their product).
TURN_GROUPS = (
    ("none", "top_down", "screen_flipped", "both"),
    ("none", "top_down"),
    ("none", "screen_flipped"),
    ("none", "both"),
    ("none",),
)


def choose_turns(prototypes: dict[str, np.ndarray]) -> tuple[str, ...]:
    """The largest set of half-turns under which every two calibrated
    postures that are :data:`SEPARATION_DEG` apart stay so (ties: the one
    keeping them farthest apart); postures already closer rely on other
    cues, which no turn changes.

    >>> sit, stand = np.array([[0.0, 0.0, 1.0]]), np.array([[0.0, -1.0, 0.0]])
    >>> choose_turns({"SITTING": sit, "STANDING": stand})
    ('none', 'top_down', 'screen_flipped', 'both')
    >>> choose_turns({"SITTING": sit, "LAYING": -sit})     # the screen the other way is the other posture
    ('none', 'top_down')
    """
    pairs = [
        (a, b)
        for a, b in itertools.combinations(prototypes.values(), 2)
        if separation(a, b, ["none"]) >= SEPARATION_DEG
    ]
    best: tuple[tuple[str, ...], float] | None = None
    for group in TURN_GROUPS:
        apart = min((separation(a, b, group) for a, b in pairs), default=180.0)
        if apart < SEPARATION_DEG:
            continue
        if best is None or len(group) > len(best[0]) or (len(group) == len(best[0]) and apart > best[1]):
            best = (group, apart)
    return best[0] if best else ("none",)


def _head(
    postures: Sequence[str],
    cues: Sequence[np.ndarray],
    bouts: Sequence[np.ndarray],
    turns: Sequence[str],
    settings: PersonalSettings,
    margins: np.ndarray | None = None,
    features: Sequence[np.ndarray] | None = None,
    walk_down: np.ndarray | None = None,
) -> PersonalHead:
    """A head from each posture's still windows' cues (and the shared
    model's features of them: a discriminant with two postures or more;
    the walk's gravity direction: each posture's angle from it);
    margins 0 unless given."""
    motion = [c[:, 3:].astype(np.float64) for c in cues]
    if motion:
        within = np.concatenate([m - m.mean(axis=0) for m in motion])
        scale = np.maximum(within.std(axis=0), MOTION_SCALE_FLOOR) if len(within) > 1 else np.ones(N_MOTION)
    else:
        scale = np.ones(N_MOTION)
    k = len(postures)
    return PersonalHead(
        "device",
        "personal",
        "base",
        tuple(postures),
        {p: posture_prototypes(c[:, :3], b, settings.windows_per_prototype) for p, c, b in zip(postures, cues, bouts)},
        turns=turns,
        max_angle=settings.max_angle,
        sharpness=settings.sharpness,
        motion_mean=[m.mean(axis=0).tolist() for m in motion],
        motion_scale=scale.tolist(),
        motion_weight=settings.motion_weight,
        margins=(np.zeros((k, k)) if margins is None else margins).tolist(),
        turn_cost=settings.turn_cost,
        **(fit_discriminant(features) if features is not None and settings.discriminant else {}),
        **(walk_angles(walk_down, cues, settings) if walk_down is not None and settings.walk_anchor else {}),
    )


def walk_angles(walk_down: np.ndarray, cues: Sequence[np.ndarray], settings: PersonalSettings) -> dict:
    """``walk_down`` and each posture's angle from it (mean, spread at least
    :attr:`PersonalSettings.angle_spread`), as :class:`PersonalHead` arguments.

    >>> walk_angles(np.array([1.0, 0.0, 0.0]), [np.array([[0.0, 1.0, 0.0] + [0.0] * 6])], PersonalSettings())
    {'walk_down': [1.0, 0.0, 0.0], 'walk_angle': [[90.0, 12.0]], 'angle_weight': 1.0, 'angle_abstain': False, 'sides': [40.0, 10.0, 60.0]}
    """
    rows = []
    for c in cues:
        degrees = np.degrees(np.arccos(np.clip(c[:, :3].astype(np.float64) @ walk_down, -1.0, 1.0)))
        rows.append([round(float(degrees.mean()), 3), round(max(float(degrees.std()), settings.angle_spread), 3)])
    return {
        "walk_down": np.round(np.asarray(walk_down, float), 6).tolist(),
        "walk_angle": rows,
        "angle_weight": settings.angle_weight,
        "angle_abstain": settings.angle_abstain,
        **({"sides": [float(v) for v in settings.sides]} if settings.sides else {}),
    }


def walk_direction(cues: np.ndarray) -> np.ndarray | None:
    """The unit mean gravity direction of walking windows' cues (None without any)."""
    if len(cues) == 0:
        return None
    m = np.asarray(cues, np.float64)[:, :3].mean(axis=0)
    norm = np.linalg.norm(m)
    return m / norm if norm > 0.5 else None  # a walk whose direction wanders all round anchors nothing


def fit_discriminant(features: Sequence[np.ndarray]) -> dict:
    """Shrinkage LDA on the shared model's features of each calibrated
    posture's still windows, as :class:`PersonalHead` arguments; empty with
    fewer than two postures (or too few windows)."""
    if len(features) < 2 or any(len(f) < 2 for f in features):
        return {}
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x = np.concatenate(features).astype(np.float64)
    y = np.concatenate([np.full(len(f), i) for i, f in enumerate(features)])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit((x - mean) / scale, y)
    coef, intercept = lda.coef_, lda.intercept_
    if len(features) == 2:  # binary: sklearn gives one decision, for the second class
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return {
        "feature_mean": mean.tolist(),
        "feature_scale": scale.tolist(),
        "feature_coef": coef.T.tolist(),
        "feature_intercept": intercept.tolist(),
    }


def learn_margins(
    postures: Sequence[str],
    cues: Sequence[np.ndarray],
    turns: Sequence[str],
    settings: PersonalSettings,
    features: Sequence[np.ndarray] | None = None,
    walk_down: np.ndarray | None = None,
) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """``(margins (k, k), [(accuracy, margin, named right) per pair in combinations order])``.

    Two-fold check on the calibration's own windows: a head fitted on the
    first half of each posture's windows scores the second half, and the
    other way round. The margin of a pair is :func:`confident_margin` of the
    leads the right posture had in the check (negative where the wrong one won)."""
    k = len(postures)
    margins = np.zeros((k, k))
    leads: dict[tuple[int, int], list[np.ndarray]] = {}
    halves = [(c[: len(c) // 2], c[len(c) // 2 :]) for c in cues]
    feature_halves = [(f[: len(f) // 2], f[len(f) // 2 :]) for f in features] if features is not None else None
    if all(min(len(h[0]), len(h[1])) >= 2 for h in halves):
        for fold in (0, 1):
            train = [h[fold] for h in halves]
            train_features = [h[fold] for h in feature_halves] if feature_halves is not None else None
            head = _head(
                postures, train, [np.zeros(len(t)) for t in train], turns, settings, None, train_features, walk_down
            )
            slots = [POSTURES.index(p) for p in postures]
            for i, held in enumerate(h[1 - fold] for h in halves):
                held_features = feature_halves[i][1 - fold] if feature_halves is not None else None
                scores, *_ = posture_scores([head] * len(held), held, held_features)
                for j in range(k):
                    if j != i:
                        leads.setdefault((min(i, j), max(i, j)), []).append(scores[:, slots[i]] - scores[:, slots[j]])
    report = []
    for i, j in itertools.combinations(range(k), 2):
        d = np.concatenate(leads.get((i, j), [np.empty(0)]))
        accuracy = float(np.mean(d > 0)) if len(d) else 0.0
        margin = confident_margin(d, settings.named_precision)
        margins[i, j] = margins[j, i] = margin
        named = float(np.mean(d >= margin)) if len(d) and margin < INSEPARABLE else 0.0
        report.append((round(accuracy, 4), round(margin, 3), round(named, 4)))
    return margins, report


def confident_margin(leads: np.ndarray, precision: float = 0.9) -> float:
    """The smallest lead (at least :data:`MARGIN_FLOOR`) past which the
    check's windows were named right at least ``precision`` of the time
    (:attr:`PersonalSettings.named_precision`); :data:`INSEPARABLE` when fewer than :data:`MIN_NAMED_SHARE` of them
    get past it (or there was no check).

    >>> confident_margin(np.array([5.0, 6.0, 7.0, -1.0]), 0.95)   # halfway between the last right and the first wrong
    3.0
    >>> confident_margin(np.array([30.0, 40.0, 50.0]))   # never wrong: the floor
    2.0
    >>> confident_margin(np.array([1.0, -1.0, 0.5, -0.5])) == INSEPARABLE
    True
    """
    if len(leads) == 0:
        return INSEPARABLE
    size = np.abs(leads)
    order = np.argsort(-size)
    right = np.cumsum(leads[order] > 0) / np.arange(1, len(leads) + 1)  # precision of the k most confident
    good = np.flatnonzero(right >= precision)
    if len(good) == 0:
        return INSEPARABLE
    k = int(good.max())  # the most windows named at that precision
    ranked = size[order]
    # every window named at that precision: nothing in the check asks for more than the floor
    cut = (ranked[k] + ranked[k + 1]) / 2 if k + 1 < len(ranked) else 0.0
    margin = max(MARGIN_FLOOR, float(cut))
    if np.mean(size >= margin) < MIN_NAMED_SHARE:
        return INSEPARABLE
    return min(margin, INSEPARABLE)


@dataclass(frozen=True)
class SharedModel:
    """The placement-free model a personal model is fitted over, as the fit
    calls it: its artifact (metadata, path; ``model`` None when it is served
    without Keras), its probabilities of window stacks and its feature
    stage's features of windows (None: the artifact's Keras model computes them)."""

    artifact: ModelArtifact
    probabilities: Callable[[np.ndarray], np.ndarray] | None = None
    features: Callable[[np.ndarray], np.ndarray] | None = None
    served_by: str = "keras"


def check_placement_free(meta: dict, where: str | Path) -> None:
    """Refuse (:class:`~harstream.models.artifact.ArtifactError`) a base model
    that is not placement-free: a personal model builds on one only."""
    from .artifact import ArtifactError

    placement = str(meta.get("placement", "waist"))
    if placement != "any" or list(meta.get("classes") or ()) != list(PLACEMENT_FREE):
        raise ArtifactError(
            f"{where}: a personal model builds on a placement-free model (placement 'any'), not {placement!r}"
        )


def load_shared_model(path: str | Path | None = None) -> SharedModel:
    """The placement-free model at ``path`` (the shipped ``any.keras`` when
    None) for fitting personal models over it, checked placement-free from
    its metadata before anything is loaded.

    When a worker serving it on this machine left its staged serving record
    (:func:`~harstream.models.fast_start.load_cached_runtime`: numpy features
    and the decision stage's LiteRT conversion, checked against Keras), the
    fit calls that: no TensorFlow, no Keras, the numbers the worker serves
    with. Else Keras loads it (safe mode)."""
    from .artifact import ANY_MODEL, ModelArtifact, load_artifact, read_metadata
    from .fast_start import load_cached_runtime
    from .staged_runtime import NumpyFeatures, StagedRuntime

    path = Path(path) if path is not None else ANY_MODEL
    meta = read_metadata(path)
    check_placement_free(meta, path)
    cached = load_cached_runtime(path)
    if cached is not None:
        runtime, meta = cached
        if isinstance(runtime, StagedRuntime) and isinstance(runtime.feature_runtime, NumpyFeatures):
            artifact = ModelArtifact(model=None, metadata=meta, path=path)
            return SharedModel(artifact, runtime.predict, runtime.features, runtime.name)
    return SharedModel(load_artifact(path))


def import_fit_modules() -> None:
    """Import what a fit imports on its first call (scipy's filter design,
    scikit-learn's discriminant analysis): seconds a fit process that
    prepares while a person records spends then, not after they finish."""
    import scipy.signal  # noqa: F401
    import sklearn.discriminant_analysis  # noqa: F401


def fit_personal(
    recordings: Sequence[Recording],
    base: ModelArtifact | None = None,
    settings: PersonalSettings = PersonalSettings(),
    base_probabilities: Callable[[np.ndarray], np.ndarray] | None = None,
    base_features: Callable[[np.ndarray], np.ndarray] | None = None,
) -> PersonalFit:
    """A personal model from one device's labelled calibration recordings.

    ``base`` is the placement-free artifact (the shipped ``any.keras`` when
    None); ``base_probabilities`` (window stacks → probabilities) and
    ``base_features`` (windows → its feature stage's features) may stand in
    for calling its Keras model (:func:`load_shared_model` gives both without
    TensorFlow). Activities without enough data, or whose data contradicts
    the activity (see the module doc), are refused with a reason and left
    out; what they would have taught falls back to the base model's classes.
    """
    from .artifact import ANY_MODEL, load_artifact

    started = time.perf_counter()
    base = load_artifact(ANY_MODEL) if base is None else base
    check_placement_free(base.metadata, base.path)
    steps = base.context_steps
    data = _calibration_windows(recordings, steps)
    seconds = labelled_seconds(recordings)
    if len(data.y):
        predict = base_probabilities or (lambda x: np.asarray(base.model(x, training=False)))
        base_class = np.concatenate([predict(data.x[i : i + 512]) for i in range(0, len(data.x), 512)]).argmax(1)
        cues = posture_cues(data.x)
        current = data.x[:, 0] if data.x.ndim == 4 else data.x
        features = np.asarray(base_features(current), np.float32) if base_features else window_features(data.x, base)
    else:
        base_class = np.empty(0, np.int64)
        cues = np.empty((0, 3 + N_MOTION), np.float32)
        features = np.empty((0, 0), np.float32)
    checks: list[ActivityCheck] = []
    postures: list[str] = []
    still_cues: list[np.ndarray] = []
    still_bouts: list[np.ndarray] = []
    still_features: list[np.ndarray] = []
    walk_down = None
    for index, name in enumerate(ACTIVITIES):
        if name not in seconds:
            continue
        mine = data.y == index
        still = mine & (base_class == _STILL_INDEX)
        check = check_activity(name, seconds[name], int(mine.sum()), int(still.sum()))
        checks.append(check)
        if check.accepted and name in POSTURES:
            postures.append(name)
            still_cues.append(cues[still])
            still_bouts.append(data.bout[still])
            still_features.append(features[still])
        if check.accepted and name == "WALKING":
            walk_down = walk_direction(cues[mine & (base_class != _STILL_INDEX)])
    head = _head(postures, still_cues, still_bouts, ("none",), settings, None, still_features, walk_down)
    turns = choose_turns({p: np.asarray(v) for p, v in head.prototypes.items()}) if settings.half_turns else ("none",)
    chosen = settings
    margins, checked = learn_margins(postures, still_cues, turns, settings, still_features, walk_down)
    if walk_down is not None and settings.walk_anchor and settings.roll_free and len(postures) >= 2:
        # how much to trust the whole tilt: a limb rolled otherwise from bout to bout (a forearm) is
        # better told by its angle from the walk; the calibration's own check decides
        other = roll_free(settings)
        other_margins, other_checked = learn_margins(postures, still_cues, turns, other, still_features, walk_down)
        if sum(c[2] for c in other_checked) > sum(c[2] for c in checked):
            chosen, margins, checked = other, other_margins, other_checked
            head = _head(postures, still_cues, still_bouts, ("none",), chosen, None, still_features, walk_down)
            head = replace(head, angle_trusted=settings.angle_abstain and settings.angle_agrees)
    pairs = [
        PairCheck(
            (a, b),
            separation(np.asarray(head.prototypes[a]), np.asarray(head.prototypes[b]), ["none"]),
            accuracy,
            margin,
            named,
        )
        for (a, b), (accuracy, margin, named) in zip(itertools.combinations(postures, 2), checked)
    ]
    head = replace(
        head,
        turns=turns,
        margins=margins.tolist(),
        calibrated=frozenset(c.activity for c in checks if c.accepted),
        base_model=base.model_id,
    )
    head = replace(
        head,
        decoder=personal_decoder(base.metadata.get("decoder"), head.classes, base.model_id),
        summary=tuple(describe(head, pairs, checks, roll_free_chosen=chosen is not settings)),
    )
    return PersonalFit(
        head=head,
        checks=checks,
        settings=chosen,
        context_steps=steps,
        seconds=time.perf_counter() - started,
        pairs=pairs,
        base_sha256=str(base.metadata.get("sha256", "")),
    )


def window_features(x: np.ndarray, base: ModelArtifact | None = None) -> np.ndarray:
    """The shared model's features of each window (of a stack: its current
    window), as its feature stage computes them for the worker: the staged
    ``base``'s own feature stage (numpy formulas where it has them), else the
    placement-free features."""
    from .staged import is_staged, stages
    from .staged_runtime import NumpyFeatures

    current = np.asarray(x)[:, 0] if np.ndim(x) == 4 else np.asarray(x)
    if base is not None and is_staged(base.model):
        feature_stage = stages(base.model)[0]
        try:
            return np.asarray(NumpyFeatures.of_stage(feature_stage).predict(current), np.float32)
        except ValueError:  # no numpy formulas: the graph's own
            return np.asarray(feature_stage(current, training=False), np.float32)
    from .invariant import placement_free_features

    return placement_free_features(current)


def _said(name: str) -> str:
    return "lying" if name == "LAYING" else name.lower().replace("_", " ")


def describe(
    head: PersonalHead, pairs: Sequence[PairCheck], checks: Sequence[ActivityCheck], roll_free_chosen: bool = False
) -> list[str]:
    """What the calibration learned and what will show as STILL, in a few
    lines for the page and the CLI."""
    lines = []
    learned = [c.activity for c in checks if c.accepted]
    lines.append(f"Learned: {', '.join(_said(a) for a in learned)}." if learned else "Nothing learned.")
    if len(head.walk_down) == 3 and len(head.postures):
        lines.append(
            "Postures are judged by how far the device is tilted from the way it hangs while walking"
            + (
                " more than by its exact direction (the check on this calibration named more right that way)."
                if roll_free_chosen
                else ", and by its direction."
            )
        )
        if head.angle_abstain and len(head.postures) >= 2:
            lines.append(
                "Where that tilt is one two postures share, it shows STILL rather than guess"
                + (
                    ", and STILL too where the tilt and the rest of the evidence disagree."
                    if head.angle_trusted
                    else "."
                )
            )
    if len(head.sides) == 3 and len(head.postures) >= 2:
        apart, buffer, limit = head.sides
        angles = dict(zip(head.postures, (row[0] for row in head.walk_angle)))
        far = [
            f"{_said(a)} and {_said(b)}"
            for a, b in itertools.combinations(head.postures, 2)
            if abs(angles[a] - angles[b]) >= apart
        ]
        if far:
            lines.append(
                f"{'; '.join(far).capitalize()} lie far apart in that tilt: a still device on one's side of the "
                f"midpoint (by {buffer:.0f}°, within {limit:.0f}° of it) is named so even held otherwise "
                "(another chair, legs crossed, the device shifted); STILL between them."
            )
    for pair in pairs:
        a, b = (_said(p) for p in pair.postures)
        if not pair.separable:
            lines.append(
                f"{a.capitalize()} and {b} could not be told apart on this device "
                f"({pair.angle:.0f}° apart, {pair.accuracy:.0%} right in a check): both show as STILL."
            )
        elif pair.angle >= SEPARATION_DEG:
            lines.append(f"{a.capitalize()} and {b}: told apart by how the device is tilted ({pair.angle:.0f}° apart).")
        else:
            lines.append(
                f"{a.capitalize()} and {b}: tilted alike ({pair.angle:.0f}° apart), told apart by how still the body "
                f"is ({pair.accuracy:.0%} right in a check); STILL where that is not clear."
            )
    if len(head.postures) >= 1:
        kept = [TURN_WORDS[t] for t in head.turns if t != "none"]
        lost = [TURN_WORDS[t] for t in TURN_WORDS if t not in head.turns]
        if kept:
            lines.append(f"Postures keep their names when the device comes back turned: {'; '.join(kept)}.")
            if head.turn_cost:
                lines.append(
                    "Until its next walk shows how it sits, the device is taken as calibrated unless a turn fits "
                    "clearly better (a phone that slid in the pocket is not one turned round)."
                )
        if lost:
            lines.append(
                f"Put back turned ({'; '.join(lost)}) the postures would look alike: it shows STILL or the "
                "posture it then resembles; put it back as it was calibrated."
            )
    missing = [p for p in POSTURES if p not in head.postures]
    still = [_said(p) for p in missing]
    lines.append(
        "Shows as STILL: "
        + (f"{', '.join(still)} (not calibrated); " if still else "")
        + f"a still device more than {head.max_angle:.0f}° from every posture learned."
    )
    return lines


def posture_share(state: str, still_classes: Sequence[str], trust: float = POSTURE_TRUST) -> np.ndarray:
    """How the decoder expects the posture head to share STILL's probability
    over ``still_classes`` (the calibrated postures, then STILL) in ``state``:
    ``trust`` to the posture held (half each to a transition's two ends), the
    rest evenly to the others; evenly in a moving state.

    >>> posture_share("SITTING", ["SITTING", "STANDING", "STILL"]).round(2).tolist()
    [0.8, 0.1, 0.1]
    >>> posture_share("SIT_TO_STAND", ["SITTING", "STANDING", "STILL"]).round(2).tolist()
    [0.4, 0.4, 0.2]
    >>> posture_share("WALKING", ["SITTING", "STILL"]).round(2).tolist()
    [0.5, 0.5]
    """
    n = len(still_classes)
    held = [state] if state in still_classes else [e for e in TRANSITION_ENDS.get(state, ()) if e in still_classes]
    if not held or len(held) == n:
        return np.full(n, 1.0 / n)
    share = np.full(n, (1.0 - trust) / (n - len(held)))
    share[[list(still_classes).index(h) for h in held]] = trust / len(held)
    return share


def personal_decoder(base_decoder: Any, classes: Sequence[str], base_id: str = "base") -> dict | None:
    """The ``decoder`` metadata entry of a personal model with ``classes``,
    derived from its base model's decoder entry (no dataset read, no test
    data): the training subjects' transition counts mapped onto the personal
    classes (:func:`~harstream.models.decoder_fit.label_states`: calibrated
    postures and the transitions between them become states, the others stay
    STILL); the emission is the base model's per-label mean output with its
    STILL share spread by :func:`posture_share`; the knobs are the base's
    (chosen on validation subjects). None, with a warning, when the base
    ships no label statistics: the display then shows the raw label."""
    from .decoder_fit import LabelStatistics, label_states, params_for

    try:
        stats = LabelStatistics.from_json((base_decoder or {}).get("label_statistics"))
        knobs = dict(base_decoder["chosen"]["knobs"])
        if list(stats.classes) != list(PLACEMENT_FREE):
            raise ValueError(f"label statistics of classes {list(stats.classes)}, not {list(PLACEMENT_FREE)}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning(
            "base model %s: no usable decoder statistics (%s); the personal display will show the raw label",
            base_id,
            exc,
        )
        return None
    transitions, of = label_states(classes)
    states = [*classes, *transitions]
    base_rows = stats.emission_of(of, len(states))  # the base model's mean output in each personal state
    still = states.index(STILL)
    if not np.any(of == still):  # every posture calibrated: plain STILL looks like any posture to the base
        pooled = stats.emission_sums[[ACTIVITIES.index(p) for p in POSTURES]].sum(axis=0) + 1e-6
        base_rows[still] = pooled / pooled.sum()
    moving = [stats.classes.index(c) for c in MOVING]
    still_classes = list(classes)[len(MOVING) :]
    emission = np.zeros((len(states), len(classes)))
    for s, name in enumerate(states):
        emission[s, : len(MOVING)] = base_rows[s, moving]
        emission[s, len(MOVING) :] = base_rows[s, _STILL_INDEX] * posture_share(name, still_classes)
    params = params_for(stats, classes, knobs, emission=emission)
    return {
        **params.to_json(),
        "chosen": {
            "knobs": knobs,
            "derived_from": base_id,
            "posture_trust": POSTURE_TRUST,
            "rule": "base model's training-subject statistics mapped onto the personal classes",
        },
    }


def save_personal(
    fit: PersonalFit,
    path: str | Path,
    device: str,
    base: ModelArtifact,
    command: str | None = None,
) -> Path:
    """Write the personal model (:mod:`harstream.stream.personal.model_file`)
    at ``path`` with the ``.personal.json`` suffix (``x.keras`` → ``x.personal.json``);
    returns where it went."""
    head = replace(fit.head, device=device)
    extra: dict[str, Any] = {
        "placement": "personal",
        "refused": fit.refused,
        "calibration": [asdict(c) for c in fit.checks],
        "pairs": [asdict(p) for p in fit.pairs],
        "base_model": {"model_id": base.model_id, "path": base.path.name, "sha256": fit.base_sha256},
        "context_steps": list(fit.context_steps),
        "calibrated_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "fit_seconds": round(fit.seconds, 2),
    }
    if command:
        extra["command"] = command
    return write_personal_file(personal_file_name(path), head_to_json(head, **extra))
