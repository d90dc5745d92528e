"""The live display decoder: what a person sees, one window at a time.

A forward filter over a hidden Markov model whose states are the model's
activity classes plus those of HAPT's six postural transitions
(STAND_TO_SIT, ...) whose two postures it names: all six for the waist
model, none for the placement-free one (its STILL takes them in), those
between calibrated postures for a personal model.
The transition matrix (one window step) is counted from the training
subjects' activity sequences (:mod:`harstream.models.decoder_fit`), so the
filter knows that sitting follows STAND_TO_SIT and that walking rarely turns
into lying within 1.28 s. The emission model says how the classifier's
output looks in each state: ``emission[s, c]``, the classifier's mean
probability of class ``c`` in windows of state ``s`` on subjects it was not
trained on (fitted out-of-fold on the training subjects); a window's
evidence for ``s`` is ``sum_c p_c * emission[s, c]``. So a classifier that
often calls standing "sitting" does not throw the filter off, and a
postural transition gets its own look. Without a fitted emission, an
activity's evidence is its own probability and a transition's the mean of
the two postures it joins.

The display is a hysteresis on the filtered posterior: it moves to another
state only when that state's posterior reaches ``switch_at``, so one odd
window does not flip it. No look-ahead, a 12 × 12 matrix-vector product
per window, and :meth:`Decoder.reset` on a gap (the worker calls it when the
device's pipeline restarts).

The posture lock uses the signal as well as the classifier: a person only
changes posture (sitting, standing, lying) by moving. Each window's body
motion (:func:`window_motion`, the mean body-acceleration magnitude the
worker computes from the window's own samples) tells the decoder whether the
body moved since the display last changed. Once a posture has been shown for
``lock_settle`` windows without such movement, the display does not leave it
for another posture or a transition (a steady sitting/standing mix-up of the
classifier is not shown); after movement it switches sooner, at posterior
``moved_switch_at`` instead of ``switch_at``. ``lock_motion = 0`` turns the
lock off, and so does calling :meth:`Decoder.update` without a motion.

Following the raw label (``follow_raw_at``, off when None): the display shows
the window's own label (the classifier's most probable class, what the
worker publishes as ``label``) unless the filtered posterior of that class
is below ``follow_raw_at`` or the posture lock holds it; only then does the
hysteresis decide. So the filter vetoes the raw label's clear blips, and a
change the classifier sees is shown at once instead of after the filter's
lag (chosen per subject on the training subjects:
:mod:`harstream.models.studies.now_rules`). Display only: the filter, and the
history built from the same parameters, do not change.

:meth:`Decoder.peek` answers what the display would show if a window's
probabilities were the next step, without taking them in: the worker's
display-only updates between two windows (a window ending halfway between
them) are peeks, so the filter's state and hysteresis move with the model's
windows only.

The transition direction (``direction``, off when None): each window's
gravity (:func:`~harstream.stream.core.transition_direction.window_gravity`)
with its motion feeds a :class:`~harstream.stream.core.transition_direction.DirectionDetector`;
after a burst of motion it names the posture that follows, and until the
next burst the posture states' evidence is weighed by that verdict (and
transition states are ruled out, as a still stretch is no transition).

>>> params = DecoderParams.uniform(["A", "B"], stay=0.95, switch_at=0.6)
>>> d = Decoder(params)
>>> d.update([0.9, 0.1])[0]
'A'
>>> d.update([0.1, 0.9])[0]          # one odd window: not enough
'A'
>>> d.update([0.1, 0.9])[0]
'B'
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harstream.stream.core.activities import ACTIVITIES, POSTURES, TRANSITIONS, UNKNOWN
from harstream.stream.core.smoothing import Smoother, refusal_reason
from harstream.stream.core.transition_direction import (
    DIRECTION_POSTURES,
    DirectionDetector,
    DirectionParams,
    DirectionParamsError,
)

log = logging.getLogger(__name__)

#: The postural transition each HAPT transition state joins (from, to).
TRANSITION_ENDS = {
    "STAND_TO_SIT": ("STANDING", "SITTING"),
    "SIT_TO_STAND": ("SITTING", "STANDING"),
    "SIT_TO_LIE": ("SITTING", "LAYING"),
    "LIE_TO_SIT": ("LAYING", "SITTING"),
    "STAND_TO_LIE": ("STANDING", "LAYING"),
    "LIE_TO_STAND": ("LAYING", "STANDING"),
}


def is_transition(label: str) -> bool:
    """Whether a published label is a postural transition (shown as such).

    >>> is_transition("SIT_TO_STAND"), is_transition("SITTING"), is_transition("unknown")
    (True, False, False)
    """
    return label in TRANSITIONS


class DecoderParamsError(ValueError):
    """Decoder parameters that are malformed; the message says what and where."""


@dataclass(frozen=True)
class DecoderParams:
    """Everything the decoder needs; ships as the ``decoder`` entry of a model
    artifact's metadata (:meth:`to_json` / :meth:`from_json`)."""

    classes: tuple[str, ...]  # the model's classes, in its output order
    transitions: tuple[str, ...]  # extra states, shown as such (from TRANSITION_ENDS)
    matrix: np.ndarray  # (S, S) row-stochastic, one window step; S = classes + transitions
    initial: np.ndarray  # (S,) state distribution at a (re)start
    sharpness: float = 1.0  # emission = (p + floor) ** sharpness
    floor: float = 0.01
    transition_evidence: float = 1.0
    switch_at: float = 0.5  # posterior a new state needs before the display moves to it
    emission: np.ndarray | None = None  # (S, len(classes)) rows sum to 1; None = identity / mean of ends
    # the posture lock (module docstring); lock_motion 0 = off
    lock_motion: float = 0.0  # window_motion (g) above which the body counts as having moved
    lock_settle: int = 3  # windows a posture is shown before the lock holds it
    moved_switch_at: float = 0.5  # switch_at for leaving a posture after movement
    # which posture follows a transition, from the gravity turn (module docstring); None = off
    direction: DirectionParams | None = None
    # show the raw window label unless its class's posterior is below this (module docstring); None = off
    follow_raw_at: float | None = None

    @property
    def states(self) -> tuple[str, ...]:
        return self.classes + self.transitions

    @classmethod
    def uniform(cls, classes: Sequence[str], stay: float = 0.9, switch_at: float = 0.5) -> DecoderParams:
        """A plain sticky filter over ``classes`` (no transition states): for
        tests and for models without fitted parameters."""
        n = len(classes)
        matrix = np.full((n, n), (1.0 - stay) / max(n - 1, 1)) if n > 1 else np.ones((1, 1))
        np.fill_diagonal(matrix, stay if n > 1 else 1.0)
        return cls(tuple(classes), (), matrix, np.full(n, 1.0 / n), switch_at=switch_at)

    def __post_init__(self) -> None:
        s = len(self.classes) + len(self.transitions)
        matrix = np.asarray(self.matrix, dtype=np.float64)
        initial = np.asarray(self.initial, dtype=np.float64)
        where = "decoder parameters"
        if not self.classes:
            raise DecoderParamsError(f"{where}: no classes")
        unknown = [t for t in self.transitions if t not in TRANSITION_ENDS]
        if unknown:
            raise DecoderParamsError(f"{where}: transitions {unknown} are not among {list(TRANSITION_ENDS)}")
        if matrix.shape != (s, s) or initial.shape != (s,):
            raise DecoderParamsError(
                f"{where}: {s} states need a {s}x{s} matrix and {s} initial probabilities, "
                f"got {matrix.shape} and {initial.shape}"
            )
        for name, arr in (("matrix", matrix), ("initial", initial)):
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise DecoderParamsError(f"{where}: {name} has negative or non-finite entries")
        rows = np.flatnonzero(np.abs(matrix.sum(axis=1) - 1.0) > 1e-6)
        if len(rows) or abs(initial.sum() - 1.0) > 1e-6:
            bad = [self.states[i] for i in rows] or ["initial"]
            raise DecoderParamsError(f"{where}: rows {bad} do not sum to 1")
        for name, value, lo, hi in (
            ("sharpness", self.sharpness, 0.0, 10.0),
            ("floor", self.floor, 0.0, 1.0),
            ("transition_evidence", self.transition_evidence, 0.0, 1e6),
            ("switch_at", self.switch_at, 0.0, 1.0),
            ("lock_motion", self.lock_motion, 0.0, 16.0),
            ("lock_settle", self.lock_settle, 0, 10_000),
            ("moved_switch_at", self.moved_switch_at, 0.0, 1.0),
        ):
            if not (np.isfinite(value) and lo <= value <= hi):
                raise DecoderParamsError(f"{where}: {name} {value} is outside {lo}..{hi}")
        if self.follow_raw_at is not None and not (
            isinstance(self.follow_raw_at, (int, float)) and 0.0 <= self.follow_raw_at <= 1.0
        ):
            raise DecoderParamsError(f"{where}: follow_raw_at {self.follow_raw_at} is outside 0..1 (or null: off)")
        if self.emission is not None:
            emission = np.asarray(self.emission, dtype=np.float64)
            if emission.shape != (s, len(self.classes)):
                raise DecoderParamsError(
                    f"{where}: emission must be {s}x{len(self.classes)} (states x classes), got {emission.shape}"
                )
            if not np.all(np.isfinite(emission)) or np.any(emission < 0) or np.any(emission.sum(1) <= 0):
                raise DecoderParamsError(f"{where}: emission has negative, non-finite or all-zero rows")
            object.__setattr__(self, "emission", emission / emission.sum(1, keepdims=True))
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "initial", initial)

    def to_json(self) -> dict:
        return {
            "classes": list(self.classes),
            "transitions": list(self.transitions),
            "matrix": [[round(float(v), 8) for v in row] for row in self.matrix / self.matrix.sum(1, keepdims=True)],
            "initial": [round(float(v), 8) for v in self.initial],
            "sharpness": self.sharpness,
            "floor": self.floor,
            "transition_evidence": self.transition_evidence,
            "switch_at": self.switch_at,
            "emission": None if self.emission is None else [[round(float(v), 8) for v in row] for row in self.emission],
            "lock_motion": self.lock_motion,
            "lock_settle": self.lock_settle,
            "moved_switch_at": self.moved_switch_at,
            "direction": None if self.direction is None else self.direction.to_json(),
            "follow_raw_at": self.follow_raw_at,
        }

    @classmethod
    def from_json(cls, d: dict) -> DecoderParams:
        if not isinstance(d, dict):
            raise DecoderParamsError(f"decoder parameters: expected an object, got {type(d).__name__}")
        try:
            matrix = np.asarray(d["matrix"], dtype=np.float64)
            initial = np.asarray(d["initial"], dtype=np.float64)
            # renormalise rounding of the stored rows; the checks still see gross errors
            if matrix.ndim == 2 and np.all(np.abs(matrix.sum(1) - 1.0) < 1e-4):
                matrix = matrix / matrix.sum(1, keepdims=True)
            if initial.ndim == 1 and abs(initial.sum() - 1.0) < 1e-4:
                initial = initial / initial.sum()
            return cls(
                classes=tuple(str(c) for c in d["classes"]),
                transitions=tuple(str(t) for t in d.get("transitions", ())),
                matrix=matrix,
                initial=initial,
                sharpness=float(d.get("sharpness", 1.0)),
                floor=float(d.get("floor", 0.01)),
                transition_evidence=float(d.get("transition_evidence", 1.0)),
                switch_at=float(d.get("switch_at", 0.5)),
                emission=None if d.get("emission") is None else np.asarray(d["emission"], dtype=np.float64),
                lock_motion=float(d.get("lock_motion", 0.0)),
                lock_settle=_whole(d.get("lock_settle", 3), "lock_settle"),
                moved_switch_at=float(d.get("moved_switch_at", d.get("switch_at", 0.5))),
                direction=None if d.get("direction") is None else DirectionParams.from_json(d["direction"]),
                follow_raw_at=None if d.get("follow_raw_at") is None else float(d["follow_raw_at"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(Infinity)
            if isinstance(exc, DecoderParamsError):
                raise
            if isinstance(exc, DirectionParamsError):
                raise DecoderParamsError(f"decoder parameters: {exc}") from None
            raise DecoderParamsError(f"decoder parameters: {type(exc).__name__}: {exc}") from None


def _whole(value: Any, name: str) -> int:
    """``value`` as an int if it is a whole number within an int64 (JSON's
    1e308 and Infinity are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) < 2**63 or value != int(value):
        raise DecoderParamsError(f"decoder parameters: {name} {value!r} is not a whole number")
    return int(value)


@dataclass(frozen=True)
class Emission:
    """Each state's evidence from one window's (valid) class probabilities:
    an activity state's is its class's, a transition state's the mean of its
    two postures' (or the fitted ``emission`` map), sharpened. Holds no
    reference to its parameters, so it may be shared and kept apart from them."""

    mix: np.ndarray  # (states, classes)
    scale: np.ndarray  # (states,)
    floor: float
    sharpness: float

    @staticmethod
    def of(params: DecoderParams) -> Emission:
        n, s = len(params.classes), len(params.states)
        if params.emission is not None:
            mix = np.asarray(params.emission, dtype=np.float64)
        else:
            mix = np.zeros((s, n))
            mix[np.arange(n), np.arange(n)] = 1.0
            index = {c: i for i, c in enumerate(params.classes)}
            for k, name in enumerate(params.transitions):
                ends = [index[c] for c in TRANSITION_ENDS[name] if c in index]
                mix[n + k, ends] = 1.0 / len(ends) if ends else 0.0
        scale = np.concatenate([np.ones(n), np.full(s - n, params.transition_evidence)])
        return Emission(mix, scale, float(params.floor), float(params.sharpness))

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        return self.scale * (self.mix @ probs + self.floor) ** self.sharpness


class Decoder:
    """Forward filter + hysteresis for one device; ``update`` once per window.

    ``update(probs, motion)`` returns ``(label shown, posterior of each class)``; the
    label is a class, a transition name, or ``unknown`` before the first
    window. A window whose probabilities are malformed (NaN, outside 0..1,
    not summing to 1, wrong length) is refused: the state does not move, the
    display stays, and :attr:`refused` holds the reason until the next call.
    """

    def __init__(self, params: DecoderParams):
        self.params = params
        self.classes = list(params.classes)
        n, s = len(params.classes), len(params.states)
        self._emission = Emission.of(params)
        self._t = params.matrix.T.copy()  # predict: prior = T @ posterior
        # the postures among the classes, and what the lock keeps them from: other postures, transitions
        self._postures = frozenset(i for i, c in enumerate(params.classes) if c in POSTURES)
        self._lockable = self._postures | frozenset(range(n, s))
        # the transition-direction verdict weighs the posture classes it names
        index = {c: i for i, c in enumerate(params.classes)}
        self._verdict_of = [(index[c], c) for c in DIRECTION_POSTURES if c in index]
        # a still stretch after a verdict is no transition: transition states get the weight of a posture ruled out
        self._not_after_verdict = np.arange(n, s)
        self._detector = (
            DirectionDetector(params.direction) if params.direction is not None and self._postures else None
        )
        self.refused: str | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the past (a gap, a restart): back to the initial state."""
        self._posterior = self.params.initial.copy()
        self._shown: int | None = None
        self._moved = False  # the body moved since the display last changed
        self._held = 0  # windows since the display last changed
        if self._detector is not None:
            self._detector.reset()
        self.refused = None

    def evidence(self, probs: np.ndarray) -> np.ndarray:
        """Each state's evidence from one window's (valid) class probabilities."""
        return self._emission(probs)

    @property
    def shown(self) -> str:
        return self.params.states[self._shown] if self._shown is not None else UNKNOWN

    def class_posterior(self) -> list[float]:
        """The filtered probability of each class (transition states' mass is
        the rest up to 1)."""
        return [round(float(v), 6) for v in self._posterior[: len(self.classes)]]

    def _weigh_by_direction(self, evidence: np.ndarray) -> np.ndarray:
        """``evidence`` with the posture states weighed by the transition
        direction's verdict, when there is one (in place)."""
        verdict = self._detector.verdict if self._detector is not None else None
        direction = self.params.direction
        if verdict is not None and direction is not None:
            for i, name in self._verdict_of:
                evidence[i] *= (verdict[name] + direction.floor) ** direction.weight
            evidence[self._not_after_verdict] *= direction.floor**direction.weight
        return evidence

    def _switch_need(self, best: int, motion: float | None) -> tuple[float, bool]:
        """The posterior state ``best`` needs to take the display over after a
        window with body ``motion`` (the posture lock), and whether the device
        has moved since the shown posture began, counting this window."""
        p = self.params
        if p.lock_motion > 0.0 and motion is not None and np.isfinite(motion) and self._shown in self._postures:
            moved = self._moved or motion > p.lock_motion
            if moved:
                return p.moved_switch_at, moved
            if self._held >= p.lock_settle and best in self._lockable:
                return np.inf, moved  # a settled posture, no movement: only walking may take over
            return p.switch_at, moved
        return p.switch_at, self._moved

    def _choose(self, posterior: np.ndarray, probs: np.ndarray, motion: float | None) -> tuple[int, bool]:
        """The state to show after a window whose class probabilities
        ``probs``, filtered ``posterior`` and body ``motion`` are these, and
        whether the device has moved since the shown posture began (counting
        this window): the raw label where ``follow_raw_at`` lets it through,
        else the hysteresis."""
        threshold = self.params.follow_raw_at
        if threshold is not None:
            raw = int(probs.argmax())
            need, moved = self._switch_need(raw, motion)
            if self._shown is None or raw == self._shown or (posterior[raw] >= threshold and np.isfinite(need)):
                return raw, moved
        best = int(posterior.argmax())
        need, moved = self._switch_need(best, motion)
        if self._shown is None or (best != self._shown and posterior[best] >= need):
            return best, moved
        return self._shown, moved

    def peek(self, probs: Sequence[float], motion: float | None = None) -> tuple[str, list[float]]:
        """What the display would show, and each class's posterior, if
        ``probs`` (with its window's ``motion``) were the next window; the
        state does not move. Refused like :meth:`update` (then the display as it is).

        >>> d = Decoder(DecoderParams.uniform(["A", "B"], stay=0.8, switch_at=0.6))
        >>> d.update([0.9, 0.1])[0], d.peek([0.01, 0.99])[0], d.shown
        ('A', 'B', 'A')
        """
        self.refused = refusal_reason(probs, len(self.classes))
        if self.refused is not None:
            return self.shown, self.class_posterior()
        probs_in = np.asarray(probs, dtype=np.float64)
        evidence = self._weigh_by_direction(self.evidence(probs_in))
        posterior = evidence * (self._t @ self._posterior)
        total = posterior.sum()
        if not np.isfinite(total) or total <= 0.0:
            return self.shown, self.class_posterior()
        posterior /= total
        shown, _ = self._choose(posterior, probs_in, motion)
        return self.params.states[shown], [round(float(v), 6) for v in posterior[: len(self.classes)]]

    def update(
        self, probs: Sequence[float], motion: float | None = None, gravity: Sequence[float] | None = None
    ) -> tuple[str, list[float]]:
        """One window: its class probabilities and, for the posture lock,
        its :func:`window_motion` (``None``: no lock for this window), and for
        the transition direction its
        :func:`~harstream.stream.core.transition_direction.window_gravity`."""
        self.refused = refusal_reason(probs, len(self.classes))
        if self.refused is not None:
            return self.shown, self.class_posterior()
        p = self.params
        probs_in = np.asarray(probs, dtype=np.float64)
        evidence = self.evidence(probs_in)
        if self._detector is not None:
            if motion is not None and gravity is not None and self._detector.push(float(motion), gravity):
                self._moved = True  # a transition is movement, even one the lock's threshold missed
            evidence = self._weigh_by_direction(evidence)
        posterior = evidence * (self._t @ self._posterior)
        total = posterior.sum()
        if not np.isfinite(total) or total <= 0.0:  # evidence ruled out every state: start afresh
            posterior = evidence * p.initial
            total = posterior.sum()
        self._posterior = posterior / total
        shown, self._moved = self._choose(self._posterior, probs_in, motion)
        if shown != self._shown:
            self._shown, self._moved, self._held = shown, False, 0
        else:
            self._held += 1
        if self._detector is not None and self._shown < len(self.classes) and self._shown not in self._postures:
            self._detector.forget()  # walking: the next posture is open again
        return self.shown, self.class_posterior()


def window_motion(windows: np.ndarray) -> np.ndarray:
    """Body motion of each window, the posture lock's cue: the mean magnitude
    of the body acceleration (channels 0-2, g) over the window's samples.
    ``(n, 128, 9)`` windows in, ``(n,)`` out; a few numpy operations per batch.

    >>> w = np.zeros((2, 128, 9), np.float32); w[1, :, 0] = 0.3; w[1, :, 1] = 0.4
    >>> window_motion(w).round(3).tolist()
    [0.0, 0.5]
    """
    body = np.asarray(windows, dtype=np.float32)[:, :, 0:3]
    return np.sqrt(np.einsum("nwc,nwc->nw", body, body)).mean(axis=1)


def decode_sequence(
    params: DecoderParams, probs: np.ndarray, motion: np.ndarray | None = None, gravity: np.ndarray | None = None
) -> list[str]:
    """What the display shows after each window of one uninterrupted stream
    (the offline twin of the worker's per-device decoder; the probabilities
    are rounded to 6 decimals, as the worker publishes and decodes them;
    ``motion`` is each window's :func:`window_motion` and ``gravity`` its
    :func:`~harstream.stream.core.transition_direction.window_gravity`, if known)."""
    decoder = Decoder(params)
    probs = np.asarray(probs, dtype=np.float64)
    moves: list[float | None] = [None] * len(probs) if motion is None else [float(m) for m in motion]
    turns: list[list[float] | None] = (
        [None] * len(probs) if gravity is None else [[float(v) for v in g] for g in gravity]
    )
    return [decoder.update([round(float(v), 6) for v in p], m, g)[0] for p, m, g in zip(probs, moves, turns)]


def display_for(classes: Sequence[str], decoder: dict | None, threshold: float = 0.5):
    """The display core a worker gives each device of a model with ``classes``:
    a :class:`Decoder` from the artifact's ``decoder`` parameters, or, when
    they are missing or do not fit the classes, the raw per-window label
    (:class:`~harstream.stream.core.smoothing.Smoother` over one window) with a
    logged warning. Returns a factory of fresh display cores."""
    reason = None
    params: DecoderParams | None = None
    if decoder is None:
        reason = "the model has no decoder parameters"
    else:
        try:
            params = DecoderParams.from_json(decoder)
        except DecoderParamsError as exc:
            params, reason = None, str(exc)
        if params is not None and list(params.classes) != list(classes):
            reason = f"decoder parameters are for classes {list(params.classes)}, the model has {list(classes)}"
    if reason is not None or params is None:  # params is None only with a reason
        log.warning("%s; showing the raw per-window label", reason)
        return lambda: Smoother(classes, windows=1, threshold=threshold)
    fitted = params
    return lambda: Decoder(fitted)


__all__ = [
    "ACTIVITIES",
    "Decoder",
    "DecoderParams",
    "DecoderParamsError",
    "TRANSITION_ENDS",
    "decode_sequence",
    "display_for",
    "is_transition",
    "window_motion",
]
