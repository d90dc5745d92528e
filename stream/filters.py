"""Causal, stateful filters of the UCI HAR preprocessing.

Each filter keeps the state it needs between calls, so filtering a signal in
one piece or in any chunks gives the same output. State is created from the
first sample seen (as if the signal had been constant before it), which avoids
a start-up transient, most visibly in the 0.3 Hz gravity filter.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import signal

from .rate import RATE_HZ

NOISE_CUTOFF_HZ = 20.0
GRAVITY_CUTOFF_HZ = 0.3
BUTTER_ORDER = 3
MEDIAN_SIZE = 3


@lru_cache(maxsize=None)
def butter_lowpass(cutoff_hz: float, rate_hz: float = RATE_HZ, order: int = BUTTER_ORDER) -> np.ndarray:
    """Second-order sections of a Butterworth low-pass."""
    return signal.butter(order, cutoff_hz, btype="low", fs=rate_hz, output="sos")


class CausalMedian:
    """Median of the last ``size`` samples, per channel.

    >>> m = CausalMedian(3)
    >>> m.apply(np.array([[1.0], [9.0], [2.0], [3.0]])).ravel().tolist()
    [1.0, 1.0, 2.0, 3.0]
    """

    def __init__(self, size: int = MEDIAN_SIZE):
        self.size = size
        self._history: np.ndarray | None = None  # last size-1 input samples

    def apply(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return x.copy()
        if self._history is None:
            self._history = np.repeat(x[:1], self.size - 1, axis=0)
        padded = np.concatenate([self._history, x])
        view = np.lib.stride_tricks.sliding_window_view(padded, self.size, axis=0)
        out = np.median(view, axis=-1)
        self._history = padded[-(self.size - 1) :].copy()
        return out


class CausalLowpass:
    """A Butterworth low-pass (second-order sections) with carried state."""

    def __init__(self, cutoff_hz: float, rate_hz: float = RATE_HZ, order: int = BUTTER_ORDER):
        self.sos = butter_lowpass(cutoff_hz, rate_hz, order)
        self._zi: np.ndarray | None = None  # (sections, 2, channels)

    def apply(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return x.copy()
        if self._zi is None:
            # Steady state for a constant input equal to the first sample.
            self._zi = signal.sosfilt_zi(self.sos)[:, :, None] * x[0][None, None, :]
        y, self._zi = signal.sosfilt(self.sos, x, axis=0, zi=self._zi)
        return y


class UciFilterBank:
    """Median(3) → low-pass 20 Hz on all six channels; gravity by 0.3 Hz low-pass.

    ``apply`` maps raw ``(n, 6)`` samples (acc g, gyro rad/s) to ``(n, 9)``
    processed samples in UCI channel order: body_acc xyz, body_gyro xyz,
    total_acc xyz.
    """

    def __init__(self, rate_hz: float = RATE_HZ):
        self.median = CausalMedian(MEDIAN_SIZE)
        self.noise = CausalLowpass(NOISE_CUTOFF_HZ, rate_hz)
        self.gravity = CausalLowpass(GRAVITY_CUTOFF_HZ, rate_hz)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        clean = self.noise.apply(self.median.apply(raw))
        total_acc, gyro = clean[:, :3], clean[:, 3:]
        gravity = self.gravity.apply(total_acc)
        return np.concatenate([total_acc - gravity, gyro, total_acc], axis=1)
