"""Which posture follows a postural transition, from the signal itself.

A person changes posture (sitting, standing, lying) only by moving, and the
move leaves the device turned: at the waist the gravity direction after
standing up is not the one after sitting down. :class:`DirectionDetector`
watches each window's body motion (:func:`~harstream.stream.core.decoder.window_motion`)
and gravity direction (:func:`window_gravity`): a burst of motion between two
still windows is an *event*; when it ends, a small multinomial logistic
model of the gravity before and after (fitted on the training subjects'
labelled transitions, :mod:`harstream.models.transition_direction`) says
which of HAPT's six transitions it was, or none (a fidget, a walk). The
posture a transition leads to is the *verdict*, carried forward until the
next event that is a transition. The decoder weighs its posture states by it.

Pure numpy, one small matrix product per event; the worker hands each
window's gravity over with its motion.

>>> params = DirectionParams.example()
>>> det = DirectionDetector(params)
>>> standing, sitting = [1.0, -0.13, 0.08], [0.93, 0.17, 0.37]
>>> [det.push(0.01, standing), det.push(0.3, standing)]      # still, then moving
[None, None]
>>> verdict = det.push(0.01, sitting)                        # still again: an event
>>> max(verdict, key=verdict.get)
'SITTING'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: What the model tells apart: HAPT's six postural transitions, then no transition.
NONE = "NONE"
OUTCOMES = ("STAND_TO_SIT", "SIT_TO_STAND", "SIT_TO_LIE", "LIE_TO_SIT", "STAND_TO_LIE", "LIE_TO_STAND", NONE)
#: The posture each transition leads to.
LEADS_TO = {
    "STAND_TO_SIT": "SITTING",
    "SIT_TO_STAND": "STANDING",
    "SIT_TO_LIE": "LAYING",
    "LIE_TO_SIT": "SITTING",
    "STAND_TO_LIE": "LAYING",
    "LIE_TO_STAND": "STANDING",
}
DIRECTION_POSTURES = ("SITTING", "STANDING", "LAYING")
#: Features per event: gravity direction before (3), after (3), and their difference (3).
N_FEATURES = 9


def window_gravity(windows: np.ndarray) -> np.ndarray:
    """Gravity direction of each window's newest half (the samples the window
    added to the stream): the mean total acceleration (channels 6-8, g),
    unnormalised. ``(n, 128, 9)`` windows in, ``(n, 3)`` out.

    >>> w = np.zeros((1, 128, 9), np.float32); w[0, 64:, 6] = 1.0
    >>> window_gravity(w).tolist()
    [[1.0, 0.0, 0.0]]
    """
    x = np.asarray(windows, dtype=np.float32)
    return x[:, x.shape[1] // 2 :, 6:9].mean(axis=1)


def turn_degrees(before: Sequence[float] | np.ndarray | None, after: Sequence[float] | np.ndarray | None) -> float:
    """Degrees the gravity direction turned from ``before`` to ``after``
    (0 to 180; only the directions count, not the lengths), or nan where
    either has no direction: None, a zero vector, anything but three finite
    numbers. The one place this is decided; each caller says what a turn it
    cannot know means to it (the history takes no evidence from it, the
    worker counts it as a turn all the way round).

    Two float32 arrays (the worker's gravity rows) are measured in float32,
    as numpy takes a norm; anything else in float64.

    >>> turn_degrees([0.0, 0.0, 1.0], [0.0, 2.0, 0.0])
    90.0
    >>> turn_degrees([1.0, 0.0, 0.0], [-0.5, 0.0, 0.0])
    180.0
    >>> turn_degrees([1.0, 0.0, 0.0], [0.0, 0.0, 0.0])  # a zero vector has no direction
    nan
    >>> turn_degrees(None, [1.0, 0.0, 0.0]), turn_degrees([1.0, float("nan"), 0.0], [1.0, 0.0, 0.0])
    (nan, nan)
    >>> turn_degrees(np.float32([0, 0, 1]), np.float32([0, 0, 0]))
    nan
    """
    if _float32_row(before) and _float32_row(after):
        a, b = np.asarray(before), np.asarray(after)
        na, nb = float(np.sqrt(a.dot(a))), float(np.sqrt(b.dot(b)))  # np.linalg.norm's own arithmetic
        if not (0.0 < na < math.inf and 0.0 < nb < math.inf):
            return math.nan
        return math.degrees(math.acos(max(-1.0, min(1.0, float(a.dot(b)) / (na * nb)))))
    u, v = _direction(before), _direction(after)
    if u is None or v is None:
        return math.nan
    cos = u[0] * v[0] + u[1] * v[1] + u[2] * v[2]
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def _float32_row(g: object) -> bool:
    return isinstance(g, np.ndarray) and g.dtype == np.float32 and g.shape == (3,)


def _direction(g: Sequence[float] | np.ndarray | None) -> tuple[float, float, float] | None:
    """``g`` scaled to length 1 as three floats, None where it has no direction."""
    try:
        if g is None or len(g) != 3:
            return None
        x, y, z = g
        x, y, z = float(x), float(y), float(z)
    except (TypeError, ValueError):
        return None
    norm = math.sqrt(x * x + y * y + z * z)
    if not (math.isfinite(norm) and norm > 0):
        return None
    return (x / norm, y / norm, z / norm)


def unit(g: Sequence[float] | np.ndarray) -> np.ndarray | None:
    """``g`` scaled to length 1, or None when it is not a usable gravity reading
    (non-finite, or a magnitude outside 0.5..2 g: free fall or a knock)."""
    v = np.asarray(g, dtype=np.float64).reshape(-1)
    if v.shape != (3,) or not np.all(np.isfinite(v)):
        return None
    n = float(np.linalg.norm(v))
    if not 0.5 <= n <= 2.0:
        return None
    return v / n


def event_features(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The model's input for one event: unit gravity before, after, and after − before."""
    return np.concatenate([before, after, after - before])


class DirectionParamsError(ValueError):
    """Transition-direction parameters that are malformed; the message says what."""


@dataclass(frozen=True)
class DirectionParams:
    """The fitted detector (ships inside the decoder's parameters, ``direction``)."""

    coef: np.ndarray  # (len(OUTCOMES), N_FEATURES): logits = coef @ features + intercept
    intercept: np.ndarray  # (len(OUTCOMES),)
    still_motion: float = 0.05  # window_motion (g) at or below which a window is still
    min_confidence: float = 0.5  # a verdict needs P(no transition) below 1 - this
    weight: float = 1.0  # the decoder multiplies a posture's evidence by (verdict + floor) ** weight
    floor: float = 0.05

    def __post_init__(self) -> None:
        coef = np.asarray(self.coef, dtype=np.float64)
        intercept = np.asarray(self.intercept, dtype=np.float64)
        where = "transition direction parameters"
        k = len(OUTCOMES)
        if coef.shape != (k, N_FEATURES) or intercept.shape != (k,):
            raise DirectionParamsError(
                f"{where}: coef must be {k}x{N_FEATURES} and intercept {k}, got {coef.shape} and {intercept.shape}"
            )
        if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(intercept))):
            raise DirectionParamsError(f"{where}: coef or intercept has non-finite entries")
        for name, value, lo, hi in (
            ("still_motion", self.still_motion, 0.0, 16.0),
            ("min_confidence", self.min_confidence, 0.0, 1.0),
            ("weight", self.weight, 0.0, 100.0),
            ("floor", self.floor, 1e-6, 1.0),
        ):
            if not (np.isfinite(value) and lo <= value <= hi):
                raise DirectionParamsError(f"{where}: {name} {value} is outside {lo}..{hi}")
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "intercept", intercept)

    def outcome_probabilities(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """P(each of :data:`OUTCOMES`) for an event with unit gravity ``before`` and ``after``."""
        logits = self.coef @ event_features(before, after) + self.intercept
        e = np.exp(logits - logits.max())
        return e / e.sum()

    def to_json(self) -> dict:
        return {
            "outcomes": list(OUTCOMES),
            "coef": [[round(float(v), 6) for v in row] for row in self.coef],
            "intercept": [round(float(v), 6) for v in self.intercept],
            "still_motion": self.still_motion,
            "min_confidence": self.min_confidence,
            "weight": self.weight,
            "floor": self.floor,
        }

    @classmethod
    def from_json(cls, d: object) -> DirectionParams:
        where = "transition direction parameters"
        if not isinstance(d, dict):
            raise DirectionParamsError(f"{where}: expected an object, got {type(d).__name__}")
        if list(d.get("outcomes", OUTCOMES)) != list(OUTCOMES):
            raise DirectionParamsError(f"{where}: outcomes {d.get('outcomes')} are not {list(OUTCOMES)}")
        try:
            return cls(
                coef=np.asarray(d["coef"], dtype=np.float64),
                intercept=np.asarray(d["intercept"], dtype=np.float64),
                still_motion=float(d.get("still_motion", 0.05)),
                min_confidence=float(d.get("min_confidence", 0.5)),
                weight=float(d.get("weight", 1.0)),
                floor=float(d.get("floor", 0.05)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, DirectionParamsError):
                raise
            raise DirectionParamsError(f"{where}: {type(exc).__name__}: {exc}") from None

    @classmethod
    def example(cls) -> DirectionParams:
        """Hand-set parameters for examples and tests (not fitted): stand-to-sit
        when gravity turns towards +z, sit-to-stand when it turns back."""
        coef = np.zeros((len(OUTCOMES), N_FEATURES))
        coef[OUTCOMES.index("STAND_TO_SIT"), 8] = 20.0
        coef[OUTCOMES.index("SIT_TO_STAND"), 8] = -20.0
        intercept = np.zeros(len(OUTCOMES))
        intercept[OUTCOMES.index(NONE)] = 2.0
        return cls(coef, intercept)


class DirectionDetector:
    """One device's transition-direction state; ``push`` once per window.

    ``push(motion, gravity)`` returns ``None`` while nothing was decided, or,
    when a burst of motion has just ended and the model calls it a
    transition, the verdict: the probability of each posture
    (:data:`DIRECTION_POSTURES`) following it. :attr:`verdict` keeps the last
    one until :meth:`forget` (the decoder calls it when walking is shown);
    while the body moves it is withheld (``None``: the posture is open), and
    comes back when the burst turns out not to be a transition."""

    def __init__(self, params: DirectionParams):
        self.params = params
        self.reset()

    def reset(self) -> None:
        self._still: np.ndarray | None = None  # gravity of the last still window before any burst
        self._moving = False
        self._verdict: dict[str, float] | None = None
        self.last_outcomes: np.ndarray | None = None

    @property
    def verdict(self) -> dict[str, float] | None:
        """The probability of each posture following the last transition; None while moving or unknown."""
        return None if self._moving else self._verdict

    def forget(self) -> None:
        """Drop the verdict (the person walked: the posture is open again)."""
        self._verdict = None

    def push(self, motion: float, gravity: Sequence[float] | np.ndarray) -> dict[str, float] | None:
        g = unit(gravity)
        if g is None or not np.isfinite(motion):
            return None  # an unusable window neither starts nor ends an event
        if motion > self.params.still_motion:
            self._moving = True
            return None
        before, self._still = self._still, g
        if not self._moving or before is None:
            return None
        self._moving = False
        p = self.params.outcome_probabilities(before, g)
        self.last_outcomes = p
        if p[OUTCOMES.index(NONE)] > 1.0 - self.params.min_confidence:
            return None
        leads = dict.fromkeys(DIRECTION_POSTURES, 0.0)
        for name, q in zip(OUTCOMES[:-1], p[:-1]):
            leads[LEADS_TO[name]] += float(q)
        total = sum(leads.values())
        self._verdict = {k: v / total for k, v in leads.items()}
        return self._verdict


__all__ = [
    "DIRECTION_POSTURES",
    "LEADS_TO",
    "NONE",
    "OUTCOMES",
    "DirectionDetector",
    "DirectionParams",
    "DirectionParamsError",
    "event_features",
    "turn_degrees",
    "unit",
    "window_gravity",
]
