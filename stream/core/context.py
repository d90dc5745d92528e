"""A device's recent windows, for models that look at more than the current one.

A context model (``context_steps`` in its metadata, e.g. ``(1, 2, 4)``) takes
for window ``j`` the stack of windows ``j, j-1, j-2, j-4`` — the past
6.4 s of the device at 1.28 s steps. :class:`WindowContext` keeps what that
needs per device. Before the device has that much history, the missing
windows are its first window, so a new device is served from its very first
window on. Training windows follow the same rule
(:func:`harstream.models.dataset.labelled_windows`), so the model never sees
a stack the worker could not build.

The rule does not care what a window is: a server of a staged model
(:mod:`harstream.models.staged`) pushes each window's *feature vector*
``(k, F)`` instead and gets ``(k, 1 + len(steps), F)`` stacks, computing each
window's features once instead of once per decision it is part of.

>>> import numpy as np
>>> ctx = WindowContext((1, 2))
>>> w = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 128, 9), np.float32)   # windows 0..3
>>> ctx.push(w[:1])[:, :, 0, 0].tolist()        # window 0: no past yet
[[0.0, 0.0, 0.0]]
>>> ctx.push(w[1:])[:, :, 0, 0].tolist()        # windows 1, 2, 3 in one call
[[1.0, 0.0, 0.0], [2.0, 1.0, 0.0], [3.0, 2.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_steps(steps: Sequence[int]) -> tuple[int, ...]:
    """``steps`` as a tuple of distinct positive ints, in the given order.

    >>> check_steps([1, 2, 4])
    (1, 2, 4)
    """
    out = tuple(int(s) for s in steps)
    if any(s < 1 for s in out) or len(set(out)) != len(out):
        raise ValueError(f"context steps must be distinct positive window counts, got {list(steps)}")
    return out


class WindowContext:
    """Per-device window history: ``push(windows (k, 128, 9)) -> (k, 1 + len(steps), 128, 9)``,
    or of any per-window array, e.g. features: ``(k, F) -> (k, 1 + len(steps), F)``.

    Output row ``i`` stacks the pushed window and the windows ``steps`` before
    it (the device's first window where there is no such window yet). The
    output does not depend on how the windows were split across pushes.
    """

    def __init__(self, steps: Sequence[int]):
        self.steps = check_steps(steps)
        self._keep = max(self.steps, default=0)
        self._history: list[np.ndarray] = []  # the last ``_keep`` windows, oldest first
        self._first: np.ndarray | None = None
        self.seen = 0  # windows pushed so far

    def push(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows, dtype=np.float32)
        out = np.empty((len(windows), 1 + len(self.steps), *windows.shape[1:]), np.float32)
        for i, window in enumerate(windows):
            if self._first is None:
                self._first = window
            out[i, 0] = window
            for k, step in enumerate(self.steps, start=1):
                # history[-1] is the previous window (step 1)
                out[i, k] = self._history[-step] if step <= len(self._history) else self._first
            self._history.append(window)
            if len(self._history) > self._keep:
                del self._history[0]
            self.seen += 1
        return out
