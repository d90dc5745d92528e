"""Personal models: a short calibration of one device teaches it postures.

The placement-free model (:mod:`harstream.models.placement_free`) knows, for
any placement, whether the device moves and how (walking, upstairs,
downstairs) — but not whether its wearer sits, stands or lies: those are
orientations of the body, and how the device sits on the body is unknown.
A calibration of the device supplies exactly that. For each posture the
person held, the device's own gravity direction (the pipeline's 0.3 Hz
estimate) is kept as a few *prototypes*; later, when the placement-free
model says STILL, the posture whose prototype lies closest to the current
gravity direction is the answer — or plain STILL when none lies within
:attr:`PersonalSettings.max_angle` degrees (a posture that was not
calibrated falls back to what the placement-free model knows).

A phone in a pocket may go back in upside down or facing the other way: a
half-turn about one of the device's axes flips the sign of two gravity
components. With ``sign_invariant`` (the default) directions are compared by
the absolute values of their components, which such flips leave unchanged.

The personal model is an ordinary artifact: the base model (nested, as it
was) and a :class:`PostureHead` over the same input (a window or a context
stack), merged by :class:`PostureSplit` into probabilities over

    WALKING, WALKING_UPSTAIRS, WALKING_DOWNSTAIRS, <calibrated postures>, STILL

Fitting (:func:`fit_personal`) is a pure function of the labelled
recordings and the base artifact; it takes about a second. Bad calibration
data is refused per activity with a reason, the rest is kept:

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
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE, POSTURES, STILL
from harstream.stream.core.decoder import TRANSITION_ENDS
from harstream.stream.core.pipeline import STEP, cut_windows, preprocess_recording
from harstream.stream.core.rate import RATE_HZ
from harstream.stream.data.recordings import Recording

from .dataset import context_windows, segment_windows
from .invariant import gravity_direction, placement_free_features
from .posture_layers import PostureHead, PostureSplit

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
#: classes). An assumption, not a fit: nothing of the device's own is held
#: out to measure it; the calibration study finds 0.8-1.0 per posture on
#: most devices (docs/BENCHMARKS.md).
POSTURE_TRUST = 0.8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersonalSettings:
    """How postures are matched (chosen on validation subjects: docs/BENCHMARKS.md)."""

    #: Farther than this (degrees) from every calibrated posture: plain STILL.
    max_angle: float = 30.0
    #: Compare |components| (a pocket phone may come back upside down).
    sign_invariant: bool = False
    #: Consecutive still windows averaged into one prototype.
    windows_per_prototype: int = 4
    #: Logits per unit of cosine similarity to a posture's prototypes.
    sharpness: float = 200.0
    #: Also tell calibrated postures apart by a linear discriminant on the
    #: placement-free features (how still the body is), not by tilt alone.
    discriminant: bool = True


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
class PersonalFit:
    """A fitted personal model and what went into it."""

    model: Any  # keras.Model
    classes: list[str]
    checks: list[ActivityCheck]
    settings: PersonalSettings
    context_steps: tuple[int, ...]
    seconds: float
    prototypes: dict[str, int] = field(default_factory=dict)
    decoder: dict | None = None  # the metadata's ``decoder`` entry (None: the display shows the raw label)

    @property
    def calibrated(self) -> list[str]:
        return [c.activity for c in self.checks if c.accepted]

    @property
    def refused(self) -> dict[str, str]:
        return {c.activity: c.reason for c in self.checks if not c.accepted}


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


def posture_prototypes(x: np.ndarray, bout: np.ndarray, windows_per_prototype: int) -> np.ndarray:
    """Unit gravity directions ``(m, 3)``: the mean over each run of up to
    ``windows_per_prototype`` consecutive windows of one bout."""
    directions = np.asarray(gravity_direction(x), np.float64)
    out = []
    for b in np.unique(bout):
        d = directions[bout == b]
        for i in range(0, len(d), windows_per_prototype):
            m = d[i : i + windows_per_prototype].mean(axis=0)
            out.append(m / max(np.linalg.norm(m), 1e-9))
    return np.asarray(out, np.float32).reshape(-1, 3)


def fit_personal(
    recordings: Sequence[Recording],
    base: ModelArtifact | None = None,
    settings: PersonalSettings = PersonalSettings(),
) -> PersonalFit:
    """A personal model from one device's labelled calibration recordings.

    ``base`` is the placement-free artifact (the shipped ``any.keras`` when
    None). Activities without enough data, or whose data contradicts the
    activity (see the module doc), are refused with a reason and left out;
    what they would have taught falls back to the base model's classes.
    """
    from .artifact import ANY_MODEL, ArtifactError, load_artifact

    started = time.perf_counter()
    base = load_artifact(ANY_MODEL) if base is None else base
    if base.placement != "any" or base.classes != list(PLACEMENT_FREE):
        raise ArtifactError(
            f"{base.path}: a personal model builds on a placement-free model (placement 'any'), not {base.placement!r}"
        )
    steps = base.context_steps
    data = _calibration_windows(recordings, steps)
    seconds = labelled_seconds(recordings)
    if len(data.y):
        base_class = np.asarray(base.model(data.x, training=False)).argmax(1)
    else:
        base_class = np.empty(0, np.int64)
    checks: list[ActivityCheck] = []
    postures: list[str] = []
    prototypes: list[np.ndarray] = []
    owners: list[int] = []  # index into postures of each prototype
    still_windows: list[np.ndarray] = []
    for index, name in enumerate(ACTIVITIES):
        if name not in seconds:
            continue
        mine = data.y == index
        still = mine & (base_class == _STILL_INDEX)
        check = check_activity(name, seconds[name], int(mine.sum()), int(still.sum()))
        checks.append(check)
        if check.accepted and name in POSTURES:
            protos = posture_prototypes(data.x[still], data.bout[still], settings.windows_per_prototype)
            prototypes.append(protos)
            owners += [len(postures)] * len(protos)
            still_windows.append(data.x[still])
            postures.append(name)
    classes = [*MOVING, *postures, STILL]
    discriminant = fit_discriminant(still_windows) if settings.discriminant else {}
    head = PostureHead(
        (np.concatenate(prototypes) if prototypes else np.empty((0, 3))).tolist(),
        owners,
        len(postures),
        settings.max_angle,
        settings.sign_invariant,
        settings.sharpness,
        name="posture",
        **discriminant,
    )
    model = build_personal_model(base.model, head)
    return PersonalFit(
        decoder=personal_decoder(base.metadata.get("decoder"), classes, base.model_id),
        model=model,
        classes=classes,
        checks=checks,
        settings=settings,
        context_steps=steps,
        seconds=time.perf_counter() - started,
        prototypes={name: int(np.sum(np.asarray(owners) == i)) for i, name in enumerate(postures)},
    )


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


def fit_discriminant(still_windows: Sequence[np.ndarray]) -> dict:
    """Shrinkage LDA on the placement-free features of each calibrated
    posture's still windows (current window of a stack), as the
    :class:`PostureHead` arguments; empty with fewer than two postures."""
    if len(still_windows) < 2:
        return {}
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    current = [w[:, 0] if w.ndim == 4 else w for w in still_windows]
    feats = placement_free_features(np.concatenate(current)).astype(np.float64)
    y = np.concatenate([np.full(len(w), i) for i, w in enumerate(current)])
    mean, scale = feats.mean(axis=0), feats.std(axis=0)
    scale[scale < 1e-6] = 1.0
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit((feats - mean) / scale, y)
    coef, intercept = lda.coef_, lda.intercept_
    if len(still_windows) == 2:  # binary: sklearn gives one decision for class 1
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return {
        "feature_mean": mean.tolist(),
        "feature_scale": scale.tolist(),
        "coef": coef.T.tolist(),
        "intercept": intercept.tolist(),
    }


def build_personal_model(base: keras.Model, head: PostureHead) -> keras.Model:
    """The base model and a :class:`PostureHead` on the same input, merged
    (with no posture calibrated the head always says "none of them": STILL)."""
    inputs = keras.Input(shape=tuple(base.input_shape[1:]), dtype="float32", name="window")
    probs = base(inputs)
    posture = head(inputs)
    outputs = PostureSplit(name="probabilities")([probs, posture])
    return keras.Model(inputs, outputs, name="personal")


def save_personal(
    fit: PersonalFit,
    path: str | Path,
    device: str,
    base: ModelArtifact,
    command: str | None = None,
) -> Path:
    """Write the personal model as an artifact with its metadata."""
    from .artifact import save_artifact

    metadata = {
        "architecture": "personal",
        "placement": "personal",
        "classes": list(fit.classes),
        "device": device,
        "calibrated": fit.calibrated,
        "refused": fit.refused,
        "calibration": [asdict(c) for c in fit.checks],
        "prototypes": fit.prototypes,
        "posture_settings": asdict(fit.settings),
        "base_model": {"path": base.path.name, "model_id": base.model_id, "sha256": base.metadata.get("sha256")},
        "context_steps": list(fit.context_steps),
        "calibrated_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "fit_seconds": round(fit.seconds, 2),
    }
    if fit.decoder is not None:
        metadata["decoder"] = fit.decoder
    if command:
        metadata["command"] = command
    return save_artifact(fit.model, metadata, path)
