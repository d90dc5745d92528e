"""Window features that do not depend on how the device is held.

A phone in a pocket, a hand or a bag, or a watch, measures the same motion
in a frame turned by some unknown rotation. Everything here is computed from
quantities that such a rotation leaves unchanged: lengths of vectors and
dot products between them. The pipeline already estimates gravity (the
0.3 Hz low-pass of the acceleration: total − body), so at every sample we
know which way is *down* in the device's own frame, and split

- the body acceleration into its component along gravity (signed: up/down
  bounce) and its magnitude across it (horizontal sway),
- the rotation rate into its component about the vertical (turning) and its
  magnitude about horizontal axes (tilting, swinging),

plus the magnitudes of body acceleration, total acceleration and rotation
rate, and the jerks of the vertical acceleration, the body acceleration and
the rotation rate. Per signal: mean, std, max, min, energy, median,
interquartile range, skewness (stairs differ from level walking mostly in
the asymmetry of the vertical bounce), log energy in 8 bands and the mean
frequency; plus three correlations between vertical acceleration,
horizontal acceleration and rotation rate.

The gravity *direction* itself is deliberately left out: it says how the
device sits on the body, which is exactly what varies between placements.
Rotating the window's three triplets by one rotation leaves every feature
unchanged up to float error (property-tested).

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(2, 128, 9)).astype("float32")
>>> x[..., 6:9] += x[..., 0:3] + np.array([0, 0, 1], np.float32)   # total = body + gravity
>>> layer = PlacementFreeFeatures()
>>> tuple(layer(x).shape) == (2, PlacementFreeFeatures.size())
True
"""

from __future__ import annotations

import numpy as np

import keras
from keras import ops

from harstream.stream.pipeline import WINDOW, WINDOW_CHANNELS
from harstream.stream.rate import RATE_HZ

from .features import BANDS, BINS, dft_matrices

SIGNALS = 10
STATISTICS = 8
CORRELATIONS = 3
_EPS = 1e-6
#: The signals, in feature order (each gets STATISTICS + BANDS + 1 features).
SIGNAL_NAMES = (
    "acc_vertical",
    "acc_horizontal",
    "acc_body_magnitude",
    "acc_total_magnitude",
    "gyro_vertical",
    "gyro_horizontal",
    "gyro_magnitude",
    "jerk_vertical",
    "jerk_body_magnitude",
    "jerk_gyro_magnitude",
)


@keras.saving.register_keras_serializable(package="harstream")
class PlacementFreeFeatures(keras.layers.Layer):
    """``(n, 128, 9)`` windows → ``(n, size())`` orientation-invariant features
    (no weights); a stack ``(n, k, 128, 9)`` gives the k vectors side by side."""

    @staticmethod
    def size() -> int:
        return SIGNALS * (STATISTICS + BANDS + 1) + CORRELATIONS

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._cos, self._sin = dft_matrices(WINDOW)

    def compute_output_shape(self, input_shape):
        windows = input_shape[1] if len(input_shape) == 4 else 1
        return (input_shape[0], windows * self.size())

    def call(self, x):
        x = ops.cast(x, "float32")
        if len(x.shape) == 4:
            k = x.shape[1]
            return ops.reshape(self._features(ops.reshape(x, (-1, WINDOW, WINDOW_CHANNELS))), (-1, k * self.size()))
        return self._features(x)

    def _features(self, x):
        body, gyro, total = x[..., 0:3], x[..., 3:6], x[..., 6:9]
        down = _unit(total - body)  # the pipeline's gravity estimate, per sample
        acc_v = _dot(body, down)
        acc_h = _norm(body - acc_v * down)
        gyro_v = _dot(gyro, down)
        gyro_h = _norm(gyro - gyro_v * down)
        gyro_m = _norm(gyro)
        jerk_v = _jerk(acc_v)
        s = ops.concatenate(
            [acc_v, acc_h, _norm(body), _norm(total), gyro_v, gyro_h, gyro_m, jerk_v, _norm(_jerk(body)), _norm(_jerk(gyro))],
            axis=-1,
        )  # (n, 128, SIGNALS)

        mean = ops.mean(s, axis=1)
        centred = s - mean[:, None, :]
        var = ops.mean(ops.square(centred), axis=1)
        std = ops.sqrt(var + _EPS)
        skew = ops.mean(centred * centred * centred, axis=1) / (var * std + _EPS)
        ordered = ops.sort(ops.transpose(s, (0, 2, 1)), axis=-1)  # (n, SIGNALS, 128)
        q25, q75 = ordered[..., WINDOW // 4], ordered[..., 3 * WINDOW // 4 - 1]
        median = 0.5 * (ordered[..., WINDOW // 2 - 1] + ordered[..., WINDOW // 2])
        stats = [mean, std, ops.max(s, axis=1), ops.min(s, axis=1), ops.mean(ops.square(s), axis=1), median, q75 - q25, skew]

        seq = ops.transpose(centred, (0, 2, 1))
        power = ops.square(ops.matmul(seq, self._cos)) + ops.square(ops.matmul(seq, self._sin))  # (n, SIGNALS, 64)
        bands = ops.log(ops.sum(ops.reshape(power, (-1, SIGNALS, BANDS, BINS // BANDS)), axis=-1) + _EPS)
        magnitude = ops.sqrt(power + _EPS)
        freqs = np.arange(1, BINS + 1, dtype=np.float32) * (RATE_HZ / WINDOW)
        mean_freq = ops.sum(magnitude * freqs, axis=-1) / (ops.sum(magnitude, axis=-1) + _EPS)

        corr = _correlations(centred, std, [(0, 1), (0, 6), (1, 6)])
        return ops.concatenate(stats + [ops.reshape(bands, (-1, SIGNALS * BANDS)), mean_freq, corr], axis=-1)


def placement_free_features(x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """:class:`PlacementFreeFeatures` of windows (or stacks) as float32, in batches."""
    layer = PlacementFreeFeatures()
    parts = [np.asarray(layer(x[i : i + batch])) for i in range(0, len(x), batch)]
    width = PlacementFreeFeatures.size() * (x.shape[1] if x.ndim == 4 else 1)
    return np.concatenate(parts) if parts else np.empty((0, width), np.float32)


def gravity_direction(x):
    """Unit gravity direction of each window in the device frame (mean of
    total − body over the window), ``(n, 3)``; of the first window of a stack."""
    if len(x.shape) == 4:
        x = x[:, 0]
    g = ops.mean(x[..., 6:9] - x[..., 0:3], axis=1)
    return g / ops.sqrt(ops.sum(ops.square(g), axis=-1, keepdims=True) + _EPS)


def _unit(v):
    return v / _norm(v)


def _norm(v):
    return ops.sqrt(ops.sum(ops.square(v), axis=-1, keepdims=True) + _EPS)


def _dot(a, b):
    return ops.sum(a * b, axis=-1, keepdims=True)


def _jerk(v):
    """Time derivative (per second); the first sample repeats the second's."""
    d = (v[:, 1:, :] - v[:, :-1, :]) * RATE_HZ
    return ops.concatenate([d[:, :1, :], d], axis=1)


def _correlations(centred, std, pairs):
    return ops.stack(
        [ops.mean(centred[..., i] * centred[..., j], axis=1) / (std[:, i] * std[:, j]) for i, j in pairs], axis=-1
    )
