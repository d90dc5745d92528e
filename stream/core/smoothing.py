"""Smoothing of per-window predictions, as the dataset authors did live.

Reyes-Ortiz et al. filtered the classifier's output over consecutive windows
and left postural transitions (not among the six classes) to a rejection
rule. Here: the mean of the class probabilities of the last ``windows``
windows; below ``threshold`` for the best class the answer is ``unknown``.

>>> s = Smoother(["A", "B"], windows=2, threshold=0.6)
>>> s.update([0.9, 0.1])[0]
'A'
>>> s.update([0.1, 0.9])            # mean (0.5, 0.5): no class reaches 0.6
('unknown', [0.5, 0.5])
>>> s.update([0.1, 0.9])[0]
'B'
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from harstream.stream.core.activities import UNKNOWN

DEFAULT_WINDOWS = 3
DEFAULT_THRESHOLD = 0.5
#: How far a window's probabilities may miss 1 in sum (the worker rounds them
#: to 6 decimals, so a few 1e-6; anything past this is a broken model output).
SUM_TOLERANCE = 1e-3


def refusal_reason(probs: Sequence[float], n_classes: int) -> str | None:
    """Why one window's class probabilities cannot be displayed, or ``None``.

    >>> refusal_reason([0.5, 0.5], 2) is None
    True
    >>> refusal_reason([0.5, float("nan")], 2)
    'probabilities contain NaN or infinity'
    >>> refusal_reason([0.5, 0.6], 2)
    'probabilities sum to 1.1, not 1'
    """
    if type(probs) is list and len(probs) == n_classes and all(type(v) is float for v in probs):
        # The worker's case, without numpy: NaN or infinity makes the sum NaN or
        # infinite, which fails its test, so those take the checks below.
        if -SUM_TOLERANCE <= min(probs) and max(probs) <= 1 + SUM_TOLERANCE and abs(sum(probs) - 1.0) <= SUM_TOLERANCE:
            return None
    try:
        p = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError):
        return "probabilities are not numbers"
    if p.shape != (n_classes,):
        return f"{p.shape} probabilities for {n_classes} classes"
    if not np.all(np.isfinite(p)):
        return "probabilities contain NaN or infinity"
    if np.any(p < -SUM_TOLERANCE) or np.any(p > 1 + SUM_TOLERANCE):
        return "probabilities outside 0..1"
    if abs(p.sum() - 1.0) > SUM_TOLERANCE:
        return f"probabilities sum to {p.sum():.6g}, not 1"
    return None


class Smoother:
    """Moving average of class probabilities with an ``unknown`` threshold."""

    def __init__(self, classes: Sequence[str], windows: int = DEFAULT_WINDOWS, threshold: float = DEFAULT_THRESHOLD):
        if windows < 1:
            raise ValueError(f"smoothing needs at least 1 window, got {windows}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold {threshold} must be within 0..1")
        self.classes = list(classes)
        self.threshold = threshold
        self._recent: deque[np.ndarray] = deque(maxlen=windows)
        self._last: tuple[str, list[float]] = (UNKNOWN, [])
        self.refused: str | None = None

    def update(
        self, probs: Sequence[float], motion: float | None = None, gravity: Sequence[float] | None = None
    ) -> tuple[str, list[float]]:
        """Add one window's probabilities; ``(smoothed label, smoothed probs)``
        (``motion`` and ``gravity``, the decoder's signal cues, are not used here).
        Malformed probabilities (:func:`refusal_reason`) are refused: the
        answer stays the previous one and :attr:`refused` says why."""
        self.refused = refusal_reason(probs, len(self.classes))
        if self.refused is not None:
            return self._last
        self._recent.append(np.asarray(probs, dtype=np.float64))
        mean = np.mean(self._recent, axis=0)
        best = int(mean.argmax())
        label = self.classes[best] if mean[best] >= self.threshold else UNKNOWN
        self._last = (label, [round(float(v), 6) for v in mean])
        return self._last

    def peek(self, probs: Sequence[float], motion: float | None = None) -> tuple[str, list[float]]:
        """What :meth:`update` would answer for ``probs``, leaving the state as
        it is (a display-only update between windows); refused like it."""
        self.refused = refusal_reason(probs, len(self.classes))
        if self.refused is not None:
            return self._last
        mean = np.mean([*self._recent, np.asarray(probs, dtype=np.float64)][-(self._recent.maxlen or 1) :], axis=0)
        best = int(mean.argmax())
        return (self.classes[best] if mean[best] >= self.threshold else UNKNOWN), [round(float(v), 6) for v in mean]

    def reset(self) -> None:
        self._recent.clear()
        self._last = (UNKNOWN, [])
        self.refused = None
