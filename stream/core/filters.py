"""Causal, stateful filters of the UCI HAR preprocessing.

Each filter keeps the state it needs between calls, so filtering a signal in
one piece or in any chunks gives the same output. State is created from the
first sample seen (as if the signal had been constant before it), which avoids
a start-up transient, most visibly in the 0.3 Hz gravity filter.

Every filter has two verbs: ``apply`` advances one filter over one device's
``(n, channels)`` chunk; the static ``apply_many`` advances several filters
of one design (one per device) over a stacked ``(devices, n, channels)``
array in one vectorised pass. A worker with thousands of devices needs the
latter: each scipy call costs far more in Python overhead than in arithmetic.
``apply_many`` does the same per-element arithmetic, so each device's output
and its state afterwards are bit-identical to its own ``apply``:

>>> banks = [UciFilterBank(), UciFilterBank()]
>>> raw = np.random.default_rng(0).normal(size=(2, 10, 6))
>>> together = UciFilterBank.apply_many(banks, raw)
>>> alone = [UciFilterBank().apply(raw[k]) for k in range(2)]
>>> bool((together == np.stack(alone)).all()), together.shape
(True, (2, 10, 9))
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from harstream.stream.core.rate import RATE_HZ

NOISE_CUTOFF_HZ = 20.0
GRAVITY_CUTOFF_HZ = 0.3
BUTTER_ORDER = 3
MEDIAN_SIZE = 3


@cache
def _signal():
    """``scipy.signal``, imported when a filter is first designed or run: its
    import takes seconds (it brings scipy.stats and scipy.interpolate), which
    a command that never filters (``harstream tail``, the proxy, a refused
    address) should not wait for."""
    from scipy import signal

    return signal


@cache
def butter_lowpass(cutoff_hz: float, rate_hz: float = RATE_HZ, order: int = BUTTER_ORDER) -> np.ndarray:
    """Second-order sections of a Butterworth low-pass."""
    return _signal().butter(order, cutoff_hz, btype="low", fs=rate_hz, output="sos")


@cache
def _unit_steady_state(sos_bytes: bytes, sections: int) -> np.ndarray:
    # sosfilt_zi is a linear solve, far dearer than one chunk of filtering:
    # computed once per filter design, not once per device.
    return _signal().sosfilt_zi(np.frombuffer(sos_bytes).reshape(sections, 6))


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

    @staticmethod
    def apply_many(medians: Sequence[CausalMedian], x: np.ndarray) -> np.ndarray:
        """``medians[k].apply(x[k])`` for every ``k`` at once: ``x`` is ``(D, n, c)``."""
        size = _one_design("median size", [m.size for m in medians])
        _check_stack(medians, x)
        if x.shape[1] == 0:
            return x.copy()
        history = np.stack(
            [
                m._history if m._history is not None else np.repeat(x[k, :1], size - 1, axis=0)
                for k, m in enumerate(medians)
            ]
        )
        padded = np.concatenate([history, x], axis=1)
        if size == 3:
            # Median of three by min/max: the same value np.median picks, at a
            # fraction of its cost on a large stack.
            a, b, c = padded[:, :-2], padded[:, 1:-1], padded[:, 2:]
            out = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
        else:
            out = np.median(np.lib.stride_tricks.sliding_window_view(padded, size, axis=1), axis=-1)
        for k, m in enumerate(medians):
            m._history = padded[k, -(size - 1) :].copy()
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
            self._zi = self._steady_state(x[0])
        y, self._zi = _signal().sosfilt(self.sos, x, axis=0, zi=self._zi)
        return y

    @staticmethod
    def apply_many(filters: Sequence[CausalLowpass], x: np.ndarray) -> np.ndarray:
        """``filters[k].apply(x[k])`` for every ``k`` at once: ``x`` is ``(D, n, c)``;
        all filters must have the same design (``sos``)."""
        sos = _one_design("low-pass sos", [f.sos for f in filters])
        _check_stack(filters, x)
        if x.shape[1] == 0:
            return x.copy()
        # Each device's state, stacked as (sections, D, 2, c) for sosfilt along axis 1.
        zi = np.stack([f._zi if f._zi is not None else f._steady_state(x[k, 0]) for k, f in enumerate(filters)], axis=1)
        y, zi = _signal().sosfilt(sos, x, axis=1, zi=zi)
        for k, f in enumerate(filters):
            f._zi = zi[:, k].copy()
        return y

    def _steady_state(self, first: np.ndarray) -> np.ndarray:
        """Initial state: steady state for a constant input equal to ``first``."""
        return _unit_steady_state(self.sos.tobytes(), len(self.sos))[:, :, None] * first[None, None, :]


class UciFilterBank:
    """Median(3) → low-pass 20 Hz on all six channels; gravity by 0.3 Hz low-pass.

    ``apply`` maps raw ``(n, 6)`` samples (acc g, gyro rad/s) to ``(n, 9)``
    processed samples in UCI channel order: body_acc xyz, body_gyro xyz,
    total_acc xyz. ``apply_many`` does the same for several devices' banks at
    once (see the module docstring).
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

    @staticmethod
    def apply_many(banks: Sequence[UciFilterBank], raw: np.ndarray) -> np.ndarray:
        """``banks[k].apply(raw[k])`` for every ``k`` in one vectorised pass:
        ``raw`` ``(D, n, 6)`` → ``(D, n, 9)``. Output and each bank's state
        afterwards are bit-identical to calling ``apply`` bank by bank. Banks
        must share one design (rate), else ``ValueError`` before any state
        changes."""
        # Check every stage up front, so a refusal leaves all banks untouched.
        _one_design("median size", [b.median.size for b in banks])
        _one_design("low-pass sos", [b.noise.sos for b in banks])
        _one_design("low-pass sos", [b.gravity.sos for b in banks])
        _check_stack(banks, raw)
        clean = CausalLowpass.apply_many(
            [b.noise for b in banks], CausalMedian.apply_many([b.median for b in banks], raw)
        )
        total_acc, gyro = clean[..., :3], clean[..., 3:]
        gravity = CausalLowpass.apply_many([b.gravity for b in banks], total_acc)
        return np.concatenate([total_acc - gravity, gyro, total_acc], axis=-1)


def _one_design(what: str, values: list):
    """The value all filters share, else ValueError: a stack runs one design."""
    if not values:
        raise ValueError("apply_many: no filters")
    first = values[0]
    for v in values[1:]:
        # Designs come from butter_lowpass's cache, so identity is the usual case.
        if v is not first and not np.array_equal(v, first):
            raise ValueError(f"apply_many: filters of different designs ({what} differs); apply them separately")
    return first


def _check_stack(filters: Sequence, x: np.ndarray) -> None:
    if x.ndim != 3 or x.shape[0] != len(filters):
        raise ValueError(
            f"apply_many: expected ({len(filters)}, n, channels) for {len(filters)} filters, got {x.shape}"
        )
