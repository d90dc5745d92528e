"""The formulas of the per-window feature layers, without Keras.

:class:`~harstream.models.features.WindowFeatures` and
:class:`~harstream.models.invariant.PlacementFreeFeatures` compute their
features with the functions here, in the graph (``xp`` = ``keras.ops``); a
server computes the same features with numpy (``xp`` = ``numpy``), so the
numbers are the same formulas, float error apart. This module imports no
Keras and no TensorFlow: a worker starting from a serving record
(:func:`harstream.models.fast_start.load_cached_runtime`) computes features with
:func:`numpy_features` alone. ``xp`` is always passed: only names numpy and
``keras.ops`` share are used.

>>> x = np.random.default_rng(0).normal(size=(2, 128, 9)).astype("float32")
>>> numpy_features("harstream>WindowFeatures")(x).shape == (2, WINDOW_FEATURES)
True
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from harstream.stream.core.pipeline import WINDOW, WINDOW_CHANNELS
from harstream.stream.core.rate import RATE_HZ

BANDS = 8
BINS = WINDOW // 2  # DFT bins 1..64, DC left out (the mean already has it)
EPS = 1e-6

#: :class:`~harstream.models.features.WindowFeatures`: signals and statistics per signal.
WINDOW_SIGNALS = 20
WINDOW_STATISTICS = 7
WINDOW_FEATURES = WINDOW_SIGNALS * (WINDOW_STATISTICS + BANDS + 1) + 3 + 9
#: :class:`~harstream.models.invariant.PlacementFreeFeatures`.
FREE_SIGNALS = 10
FREE_STATISTICS = 8
FREE_CORRELATIONS = 3
FREE_FEATURES = FREE_SIGNALS * (FREE_STATISTICS + BANDS + 1) + FREE_CORRELATIONS
#: :func:`gait_features` (see its docstring for the list).
GAIT_FEATURES = 12
#: :class:`~harstream.models.invariant.PlacementRobustFeatures`: the placement-free ones and the gait ones.
ROBUST_FEATURES = FREE_FEATURES + GAIT_FEATURES
#: Autocorrelation lags (samples at 50 Hz) where one step (0.3-0.8 s) and one
#: stride (two steps, 0.8-1.28 s: the longest lag a 2.56 s window shows) repeat.
STEP_LAGS = (15, 40)
STRIDE_LAGS = (40, WINDOW // 2 + 1)
#: (rad/s)²: added to the rotation rate's energy on every axis (a gyroscope's noise floor).
ROTATION_FLOOR = 1e-4
#: DFT bins (1 bin = 50/128 Hz) of the stride (0.6-1.3 Hz) and step (1.3-2.8 Hz) frequencies.
STRIDE_BINS = (2, 4)
STEP_BINS = (4, 8)


@lru_cache(maxsize=4)
def dft_matrices(n: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary DFT matrices ``(n, n//2)`` for bins 1..n//2.

    >>> c, s = dft_matrices(8)
    >>> x = np.sin(2 * np.pi * 2 * np.arange(8) / 8)       # bin 2
    >>> np.round(np.hypot(x @ c, x @ s), 6).tolist()
    [0.0, 4.0, 0.0, 0.0]
    """
    t = np.arange(n)[:, None]
    k = np.arange(1, n // 2 + 1)[None, :]
    angle = 2 * np.pi * t * k / n
    cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
    cos.flags.writeable = sin.flags.writeable = False  # shared by every layer and server
    return cos, sin


def channel_first(x: np.ndarray) -> np.ndarray:
    """Windows ``(n, 128, 9)`` as contiguous float32 ``(n, 9, 128)``."""
    return np.ascontiguousarray(np.transpose(x, (0, 2, 1)), np.float32)


def window_features(x, xp: Any):
    """:class:`~harstream.models.features.WindowFeatures` of channel-first
    windows ``(n, 9, 128)``: every statistic runs along the last (time) axis."""
    body, gyro, total = x[:, 0:3], x[:, 3:6], x[:, 6:9]
    signals = []
    for triplet in (body, gyro, total, jerk(body, xp), jerk(gyro, xp)):
        signals += [triplet, xp.sqrt(xp.sum(xp.square(triplet), axis=1, keepdims=True) + EPS)]
    s = xp.concatenate(signals, axis=1)  # (n, 20, 128)

    mean = xp.mean(s, axis=-1)
    centred = s - mean[..., None]
    std = xp.sqrt(xp.mean(xp.square(centred), axis=-1) + EPS)
    median, iqr = _order_statistics(s, xp)
    stats = [mean, std, xp.max(s, axis=-1), xp.min(s, axis=-1), xp.mean(xp.square(s), axis=-1), median, iqr]

    bands, mean_freq = _spectrum(centred, WINDOW_SIGNALS, xp)
    gravity = xp.mean(total, axis=-1)
    direction = gravity / xp.sqrt(xp.sum(xp.square(gravity), axis=-1, keepdims=True) + EPS)
    corr = [axis_correlations(t, xp) for t in (body, gyro, total)]
    return xp.concatenate(stats + [bands, mean_freq, direction] + corr, axis=-1)


def placement_free_features(x, xp: Any):
    """:class:`~harstream.models.invariant.PlacementFreeFeatures` of
    channel-first windows ``(n, 9, 128)`` (statistics along the time axis)."""
    body, gyro, total = x[:, 0:3], x[:, 3:6], x[:, 6:9]
    down = unit(total - body, xp)  # the pipeline's gravity estimate, per sample
    acc_v = dot(body, down, xp)
    acc_h = norm(body - acc_v * down, xp)
    gyro_v = dot(gyro, down, xp)
    gyro_h = norm(gyro - gyro_v * down, xp)
    gyro_m = norm(gyro, xp)
    jerk_v = jerk(acc_v, xp)
    s = xp.concatenate(
        [
            acc_v,
            acc_h,
            norm(body, xp),
            norm(total, xp),
            gyro_v,
            gyro_h,
            gyro_m,
            jerk_v,
            norm(jerk(body, xp), xp),
            norm(jerk(gyro, xp), xp),
        ],
        axis=1,
    )  # (n, FREE_SIGNALS, 128)

    mean = xp.mean(s, axis=-1)
    centred = s - mean[..., None]
    var = xp.mean(xp.square(centred), axis=-1)
    std = xp.sqrt(var + EPS)
    skew = xp.mean(centred * centred * centred, axis=-1) / (var * std + EPS)
    median, iqr = _order_statistics(s, xp)
    stats = [mean, std, xp.max(s, axis=-1), xp.min(s, axis=-1), xp.mean(xp.square(s), axis=-1), median, iqr, skew]

    bands, mean_freq = _spectrum(centred, FREE_SIGNALS, xp)
    corr = correlations(centred, std, [(0, 1), (0, 6), (1, 6)], xp)
    return xp.concatenate(stats + [bands, mean_freq, corr], axis=-1)


def gait_features(x, xp: Any):
    """Twelve features of channel-first windows ``(n, 9, 128)`` that describe
    the gait and how the device swings, none of which depends on the device's
    orientation, and few on where it sits:

    - regularity: the autocorrelation's highest value at one step's lag and
      at one stride's lag, of the total-acceleration magnitude and of the
      rotation-rate magnitude (a walk repeats every step at the waist, every
      stride on a swinging limb; both are high in any walk);
    - stride against step: log power ratio of the stride band (0.6-1.3 Hz)
      to the step band (1.3-2.8 Hz) of the acceleration magnitude, the
      rotation-rate magnitude and the acceleration along gravity;
    - the dominant rotation: the share of the rotation rate's energy about
      its main axis (a pendulum turns about one axis: near 1) and the log of
      that energy;
    - the swing of the device's tilt: mean and spread of how far the total
      acceleration's direction leaves its window mean (a thigh pitches
      ±20-30°, a waist a few degrees), and the mean resultant length of that
      direction.
    """
    body, gyro, total = x[:, 0:3], x[:, 3:6], x[:, 6:9]
    down = unit(total - body, xp)
    magnitude = norm(total, xp)[:, 0]
    spin = norm(gyro, xp)[:, 0]
    vertical = dot(body, down, xp)[:, 0]
    s = xp.stack([magnitude, spin, vertical], axis=1)  # (n, 3, 128)
    centred = s - xp.mean(s, axis=-1, keepdims=True)
    cos, sin = dft_matrices(WINDOW)
    power = xp.square(xp.matmul(centred, cos)) + xp.square(xp.matmul(centred, sin))  # (n, 3, 64)
    lags = np.arange(WINDOW // 2 + 1, dtype=np.float32)
    bins = np.arange(1, BINS + 1, dtype=np.float32)
    lag_cos = np.cos(2 * np.pi * bins[:, None] * lags[None, :] / WINDOW).astype(np.float32)  # (64, 65)
    # circular autocorrelation = inverse DFT of the power (Wiener-Khinchin), normalised at lag 0
    ac = xp.matmul(power[:, 0:2], lag_cos) / (xp.sum(power[:, 0:2], axis=-1, keepdims=True) + EPS)
    regularity = [
        xp.max(ac[..., STEP_LAGS[0] : STEP_LAGS[1]], axis=-1),
        xp.max(ac[..., STRIDE_LAGS[0] : STRIDE_LAGS[1]], axis=-1),
    ]
    stride = xp.sum(power[..., STRIDE_BINS[0] - 1 : STRIDE_BINS[1] - 1], axis=-1)
    step = xp.sum(power[..., STEP_BINS[0] - 1 : STEP_BINS[1] - 1], axis=-1)
    stride_vs_step = xp.log(stride + EPS) - xp.log(step + EPS)  # (n, 3)

    # the rotation rate's energy matrix and its largest eigenvalue (closed form for 3x3 symmetric)
    # plus a floor of (0.01 rad/s)² on every axis, a gyroscope's noise: a still device then
    # reads as turning about no axis in particular (share 1/3), whatever its own noise level
    c = xp.matmul(gyro, xp.transpose(gyro, (0, 2, 1))) / WINDOW + ROTATION_FLOOR * np.eye(3, dtype=np.float32)
    trace = c[:, 0, 0] + c[:, 1, 1] + c[:, 2, 2]
    q = trace / 3.0
    off = xp.square(c[:, 0, 1]) + xp.square(c[:, 0, 2]) + xp.square(c[:, 1, 2])
    p2 = xp.square(c[:, 0, 0] - q) + xp.square(c[:, 1, 1] - q) + xp.square(c[:, 2, 2] - q) + 2.0 * off
    p = xp.sqrt(p2 / 6.0) + 1e-12  # p2 is 0 only when all three axes are alike
    b00, b11, b22 = (c[:, 0, 0] - q) / p, (c[:, 1, 1] - q) / p, (c[:, 2, 2] - q) / p
    b01, b02, b12 = c[:, 0, 1] / p, c[:, 0, 2] / p, c[:, 1, 2] / p
    det = b00 * (b11 * b22 - b12 * b12) - b01 * (b01 * b22 - b12 * b02) + b02 * (b01 * b12 - b11 * b02)
    half_det = xp.clip(det / 2.0, -1.0, 1.0)
    # arccos(h) as arctan2(sqrt(1 - h²), h): LiteRT has ATAN2 but no ACOS op
    angle = xp.arctan2(xp.sqrt(xp.maximum(1.0 - half_det * half_det, 0.0)), half_det) / 3.0
    largest = xp.maximum(q + 2.0 * p * xp.cos(angle), q)  # the largest eigenvalue is never below the mean
    planarity = largest / trace

    direction = unit(total, xp)  # (n, 3, 128)
    mean_dir = xp.mean(direction, axis=-1, keepdims=True)
    resultant = norm(mean_dir, xp)[:, 0, 0]
    along = dot(direction, mean_dir / resultant[:, None, None], xp)
    tilt = norm(direction - along * (mean_dir / resultant[:, None, None]), xp)[:, 0]
    tilt_mean = xp.mean(tilt, axis=-1)
    tilt_std = xp.sqrt(xp.mean(xp.square(tilt - tilt_mean[:, None]), axis=-1) + EPS)
    return xp.concatenate(
        regularity[0:1]
        + regularity[1:2]
        + [
            stride_vs_step,
            xp.stack([planarity, xp.log(largest + EPS), tilt_mean, tilt_std, resultant], axis=-1),
        ],
        axis=-1,
    )


def placement_robust_features(x, xp: Any):
    """:class:`~harstream.models.invariant.PlacementRobustFeatures`: the
    placement-free features followed by :func:`gait_features`."""
    return xp.concatenate([placement_free_features(x, xp), gait_features(x, xp)], axis=-1)


def _order_statistics(s, xp):
    """Median and interquartile range along the time axis."""
    ordered = xp.sort(s, axis=-1)
    q25, q75 = ordered[..., WINDOW // 4], ordered[..., 3 * WINDOW // 4 - 1]
    median = 0.5 * (ordered[..., WINDOW // 2 - 1] + ordered[..., WINDOW // 2])
    return median, q75 - q25


def _spectrum(centred, signals: int, xp):
    """Log energy in BANDS bands (flattened, ``(n, signals·BANDS)``) and the
    mean frequency of each signal; the DFT is a constant matrix product, so
    no FFT op is needed by any runtime."""
    cos, sin = dft_matrices(WINDOW)
    power = xp.square(xp.matmul(centred, cos)) + xp.square(xp.matmul(centred, sin))  # (n, signals, 64)
    bands = xp.log(xp.sum(xp.reshape(power, (-1, signals, BANDS, BINS // BANDS)), axis=-1) + EPS)
    magnitude = xp.sqrt(power + EPS)
    freqs = np.arange(1, BINS + 1, dtype=np.float32) * (RATE_HZ / WINDOW)
    mean_freq = xp.sum(magnitude * freqs, axis=-1) / (xp.sum(magnitude, axis=-1) + EPS)
    return xp.reshape(bands, (-1, signals * BANDS)), mean_freq


def jerk(v, xp: Any):
    """Time derivative (per second) of channel-first signals; the first sample repeats the second's."""
    d = (v[..., 1:] - v[..., :-1]) * RATE_HZ
    return xp.concatenate([d[..., :1], d], axis=-1)


def axis_correlations(triplet, xp: Any):
    """Pearson correlation of (x,y), (x,z), (y,z) within each channel-first window."""
    c = triplet - xp.mean(triplet, axis=-1, keepdims=True)
    sd = xp.sqrt(xp.mean(xp.square(c), axis=-1) + EPS)
    pairs = [(0, 1), (0, 2), (1, 2)]
    return xp.stack([xp.mean(c[:, i] * c[:, j], axis=-1) / (sd[:, i] * sd[:, j]) for i, j in pairs], axis=-1)


def unit(v, xp: Any):
    return v / norm(v, xp)


def norm(v, xp: Any):
    """Length of channel-first vectors ``(n, 3, t)`` → ``(n, 1, t)``."""
    return xp.sqrt(xp.sum(xp.square(v), axis=1, keepdims=True) + EPS)


def dot(a, b, xp: Any):
    return xp.sum(a * b, axis=1, keepdims=True)


def correlations(centred, std, pairs, xp: Any):
    return xp.stack(
        [xp.mean(centred[:, i] * centred[:, j], axis=-1) / (std[:, i] * std[:, j]) for i, j in pairs], axis=-1
    )


#: Feature layers numpy can run, by their Keras registered name: (formulas, features per window).
NUMPY_LAYERS: dict[str, tuple[Callable, int]] = {
    "harstream>WindowFeatures": (window_features, WINDOW_FEATURES),
    "harstream>PlacementFreeFeatures": (placement_free_features, FREE_FEATURES),
    "harstream>PlacementRobustFeatures": (placement_robust_features, ROBUST_FEATURES),
}
# Config keys every Keras layer has; the feature layers have no others (no weights, no options).
_BASE_CONFIG = {"name", "trainable", "dtype"}


def numpy_features(registered_name: str, config: dict | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``windows (n, 128, 9) -> features (n, F)`` float32 by numpy, for the
    feature layer registered as ``registered_name`` with ``config``; a
    ValueError for a layer (or an option of one) numpy cannot run."""
    if registered_name not in NUMPY_LAYERS:
        raise ValueError(f"feature layer {registered_name!r}: no numpy formulas (known: {sorted(NUMPY_LAYERS)})")
    extra = set(config or {}) - _BASE_CONFIG
    if extra:
        raise ValueError(f"feature layer {registered_name!r}: options {sorted(extra)} have no numpy formulas")
    formulas, size = NUMPY_LAYERS[registered_name]

    def features(x: np.ndarray) -> np.ndarray:
        if x.ndim != 3 or x.shape[1:] != (WINDOW, WINDOW_CHANNELS):
            raise ValueError(f"windows must be (n, {WINDOW}, {WINDOW_CHANNELS}), got {x.shape}")
        if len(x) == 0:
            return np.empty((0, size), np.float32)
        return np.asarray(formulas(channel_first(x), np), np.float32)

    return features
