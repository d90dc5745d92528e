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
from typing import Sequence

import numpy as np

from .activities import UNKNOWN

DEFAULT_WINDOWS = 3
DEFAULT_THRESHOLD = 0.5


class Smoother:
    """Moving average of class probabilities with an ``unknown`` threshold."""

    def __init__(
        self, classes: Sequence[str], windows: int = DEFAULT_WINDOWS, threshold: float = DEFAULT_THRESHOLD
    ):
        if windows < 1:
            raise ValueError(f"smoothing needs at least 1 window, got {windows}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold {threshold} must be within 0..1")
        self.classes = list(classes)
        self.threshold = threshold
        self._recent: deque[np.ndarray] = deque(maxlen=windows)

    def update(self, probs: Sequence[float]) -> tuple[str, list[float]]:
        """Add one window's probabilities; ``(smoothed label, smoothed probs)``."""
        self._recent.append(np.asarray(probs, dtype=np.float64))
        mean = np.mean(self._recent, axis=0)
        best = int(mean.argmax())
        label = self.classes[best] if mean[best] >= self.threshold else UNKNOWN
        return label, [round(float(v), 6) for v in mean]

    def reset(self) -> None:
        self._recent.clear()
