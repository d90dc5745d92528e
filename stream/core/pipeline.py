"""The per-device streaming preprocessing: raw samples in, UCI windows out.

One implementation serves training and live serving: training windows are
made by pushing whole recordings through :class:`DevicePipeline`, the worker
pushes network chunks through it.
"""

from __future__ import annotations

import numpy as np

from harstream.stream.core.filters import (
    BUTTER_ORDER,
    GRAVITY_CUTOFF_HZ,
    MEDIAN_SIZE,
    NOISE_CUTOFF_HZ,
    UciFilterBank,
)
from harstream.stream.core.rate import RATE_HZ

WINDOW = 128
STEP = 64
# the offset of the display-only second grid of windows (worker option ``between``): halfway between two windows
BETWEEN = STEP // 2
RAW_CHANNELS = 6
WINDOW_CHANNELS = 9
WINDOW_CHANNEL_NAMES = (
    "body_acc_x",
    "body_acc_y",
    "body_acc_z",
    "body_gyro_x",
    "body_gyro_y",
    "body_gyro_z",
    "total_acc_x",
    "total_acc_y",
    "total_acc_z",
)


def preprocessing_params() -> dict:
    """Everything a model's input depends on; stored in model metadata."""
    return {
        "rate_hz": RATE_HZ,
        "median_size": MEDIAN_SIZE,
        "noise_lowpass_hz": NOISE_CUTOFF_HZ,
        "gravity_lowpass_hz": GRAVITY_CUTOFF_HZ,
        "butter_order": BUTTER_ORDER,
        "causal": True,
        "window": WINDOW,
        "step": STEP,
        "input_units": {"acc": "g", "gyro": "rad/s"},
        "channels": list(WINDOW_CHANNEL_NAMES),
    }


class DevicePipeline:
    """Turns one device's raw 50 Hz samples into model-ready windows.

    ``push`` takes ``(n, 6)`` samples (acc x,y,z in g including gravity, gyro
    x,y,z in rad/s) and returns the windows completed by them, float32 of
    shape ``(k, 128, 9)`` in UCI channel order. Window ``j`` covers samples
    ``64*j … 64*j+127`` of the device's stream; :attr:`emitted` counts windows
    so far. The output does not depend on how the input was chunked.

    >>> pipe = DevicePipeline()
    >>> pipe.push(np.zeros((100, 6))).shape      # not a full window yet
    (0, 128, 9)
    >>> pipe.push(np.zeros((92, 6))).shape       # 192 samples: windows at 0 and 64
    (2, 128, 9)
    >>> pipe.emitted, pipe.samples_seen
    (2, 192)
    """

    def __init__(self) -> None:
        self._filters = UciFilterBank()
        self._tail = np.empty((0, WINDOW_CHANNELS))  # processed samples from the next window start
        self.samples_seen = 0
        self.emitted = 0

    @property
    def filters(self) -> UciFilterBank:
        """This device's filter bank; its state is the device's filter history
        (the worker advances many devices' banks at once with
        :meth:`UciFilterBank.apply_many`, then calls :meth:`window_processed`)."""
        return self._filters

    def push(self, samples: np.ndarray) -> np.ndarray:
        raw = check_samples(samples)
        # Validation happens before any state changes, so bad input leaves
        # the pipeline exactly as it was.
        return self.window_processed(self._filters.apply(raw))

    def window_processed(self, processed: np.ndarray) -> np.ndarray:
        """The windowing half of :meth:`push`, on samples this pipeline's
        filters already processed (the worker filters many devices at once)."""
        self.samples_seen += len(processed)
        buf = np.concatenate([self._tail, processed]) if len(self._tail) else processed
        count = 0 if len(buf) < WINDOW else (len(buf) - WINDOW) // STEP + 1
        windows = cut_windows(buf, np.arange(count) * STEP)
        self._tail = buf[count * STEP :].copy()
        self.emitted += count
        return windows


def window_processed_many(pipes: list[DevicePipeline], processed: np.ndarray) -> list[np.ndarray]:
    """:meth:`DevicePipeline.window_processed` of ``processed[k]`` for each of
    ``pipes[k]``, the same windows and state, with one cut per group of
    pipelines whose carried tails are equally long (in a worker, nearly all
    of them): ``processed`` is ``(D, n, 9)``."""
    out: list[np.ndarray] = [np.empty(0)] * len(pipes)
    groups: dict[int, list[int]] = {}
    for k, pipe in enumerate(pipes):
        groups.setdefault(len(pipe._tail), []).append(k)
    n = processed.shape[1]
    for tail, idx in groups.items():
        part = processed[idx]
        buf = np.concatenate([np.stack([pipes[k]._tail for k in idx]), part], axis=1) if tail else part
        count = 0 if buf.shape[1] < WINDOW else (buf.shape[1] - WINDOW) // STEP + 1
        if count:
            view = np.lib.stride_tricks.sliding_window_view(buf, WINDOW, axis=1)[:, : (count - 1) * STEP + 1 : STEP]
            windows = np.ascontiguousarray(view.transpose(0, 1, 3, 2), dtype=np.float32)
        else:
            windows = np.empty((len(idx), 0, WINDOW, WINDOW_CHANNELS), np.float32)
        rest = buf[:, count * STEP :]
        for i, k in enumerate(idx):
            pipe = pipes[k]
            pipe.samples_seen += n
            pipe._tail = rest[i].copy()
            pipe.emitted += count
            out[k] = windows[i]
    return out


def check_samples(samples: np.ndarray, where: str = "samples") -> np.ndarray:
    """Validate raw samples: shape (n, 6), finite numbers. Returns float64."""
    arr = np.asarray(samples)
    if arr.ndim != 2 or arr.shape[1] != RAW_CHANNELS:
        raise ValueError(
            f"{where}: expected shape (n, {RAW_CHANNELS}) (acc x,y,z in g, gyro x,y,z in rad/s), got {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{where}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{where}: {int(bad.sum())} non-finite values, first at row {row} channel {col} ({arr[row, col]})"
        )
    return arr


def cut_windows(processed: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Windows of 128 processed samples beginning at ``starts``, as float32
    ``(len(starts), 128, 9)``."""
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) == 0:
        return np.empty((0, WINDOW, WINDOW_CHANNELS), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(processed, WINDOW, axis=0)[starts]
    return np.ascontiguousarray(view.transpose(0, 2, 1), dtype=np.float32)


def preprocess_recording(samples: np.ndarray) -> np.ndarray:
    """A whole recording through the same causal filters a live device gets:
    ``(n, 6)`` raw → ``(n, 9)`` processed samples (UCI channel order).

    Training cuts its windows from this with :func:`cut_windows`, aligned to
    each labelled segment as UCI HAR did; the filtering is the live code.
    """
    return UciFilterBank().apply(check_samples(samples))
