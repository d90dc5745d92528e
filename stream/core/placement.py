"""Where a device is worn, as the page shows it: one small tracker per
device over its model's per-window placement estimates (waist, thigh — a
trouser pocket —, wrist).

Only a moving window says anything about the placement, so the tracker keeps
the moving windows' estimates; a name once enough of them agree, else None
("not sure yet"). The estimates themselves come from the served model
(``ServedModel.placement_probabilities``); this module is numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The placements an estimate names, in the order of its probabilities.
PLACEMENTS = ("waist", "thigh", "wrist")


class PlacementTracker:
    """One device's placement, from its moving windows' estimates: the mean
    of the last ``memory`` moving windows' probabilities; a name once at
    least ``min_windows`` moving windows were seen and one placement holds
    more than ``confident`` of the mean (else None: "not sure yet").

    >>> t = PlacementTracker(min_windows=2)
    >>> t.push(np.array([[0.1, 0.8, 0.1]]), moving=np.array([True])) is None
    True
    >>> t.push(np.array([[0.2, 0.7, 0.1], [0.9, 0.05, 0.05]]), moving=np.array([True, False]))
    'thigh'
    """

    __slots__ = ("memory", "min_windows", "confident", "classes", "_recent")

    def __init__(
        self, memory: int = 20, min_windows: int = 5, confident: float = 0.6, classes: Sequence[str] = PLACEMENTS
    ):
        self.memory, self.min_windows, self.confident = int(memory), int(min_windows), float(confident)
        self.classes = tuple(classes)
        self._recent: list[np.ndarray] = []

    def push(self, probabilities: np.ndarray, moving: np.ndarray) -> str | None:
        """Take windows' ``(n, 3)`` estimates and whether each was moving; the placement now (or None)."""
        for p in np.asarray(probabilities, np.float64)[np.asarray(moving, bool)]:
            if p.shape == (len(self.classes),) and np.isfinite(p).all():  # a broken estimate is no evidence
                self._recent.append(p)
        del self._recent[: -self.memory]
        return self.placement()

    def mean(self) -> np.ndarray | None:
        return np.mean(self._recent, axis=0) if self._recent else None

    def placement(self) -> str | None:
        mean = self.mean()
        if mean is None or len(self._recent) < self.min_windows or mean.max() <= self.confident:
            return None
        return self.classes[int(mean.argmax())]
