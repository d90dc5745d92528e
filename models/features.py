"""Hand-crafted window features as a Keras layer, in the spirit of UCI HAR's 561.

The dataset authors' SVM reached about 96 % on features such as per-signal
statistics, spectral band energies and the gravity direction; a feature SVM
on our causal windows does better on the validation subjects than any
end-to-end network we trained (docs/evaluation.md). :class:`WindowFeatures`
computes a compact set of those features *inside* the model, so a hybrid
network (:func:`harstream.models.modern.build_hybrid`) still eats pipeline
windows, saves as one ``.keras`` file and runs in every runtime the worker
has. The layer is registered with Keras (package ``harstream``), so it loads
in safe mode once this module is imported — :mod:`harstream.models.artifact`
imports it before loading any model.

Signals (20): body_acc xyz, body_gyro xyz, total_acc xyz, their jerks
(body_acc and body_gyro, ×50 Hz), and the magnitude of each of those five
triplets. Per signal: mean, std, max, min, energy, median, interquartile range
(7 statistics), log energy in 8 frequency bands of 8 DFT bins each (the DFT
is a constant matrix product, so no FFT op is needed by any runtime), and the
mean frequency. Plus the unit gravity direction (3) and the correlations
between the axes of each raw triplet (9).

>>> import numpy as np
>>> layer = WindowFeatures()
>>> x = np.random.default_rng(0).normal(size=(2, 128, 9)).astype("float32")
>>> tuple(layer(x).shape) == (2, WindowFeatures.size())
True
"""

from __future__ import annotations

import numpy as np

import keras
from keras import ops

from harstream.stream.pipeline import WINDOW, WINDOW_CHANNELS
from harstream.stream.rate import RATE_HZ

SIGNALS = 20
STATISTICS = 7
BANDS = 8
BINS = WINDOW // 2  # DFT bins 1..64, DC left out (the mean already has it)
_EPS = 1e-6


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
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


@keras.saving.register_keras_serializable(package="harstream")
class WindowFeatures(keras.layers.Layer):
    """``(n, 128, 9)`` pipeline windows → ``(n, size())`` features (no weights)."""

    @staticmethod
    def size() -> int:
        return SIGNALS * (STATISTICS + BANDS + 1) + 3 + 9

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        cos, sin = dft_matrices(WINDOW)
        self._cos = cos
        self._sin = sin

    def compute_output_shape(self, input_shape):
        windows = input_shape[1] if len(input_shape) == 4 else 1
        return (input_shape[0], windows * self.size())

    def call(self, x):
        """Features of each window; for a stack ``(n, k, 128, 9)`` (a window and
        its context) the k feature vectors side by side."""
        x = ops.cast(x, "float32")
        if len(x.shape) == 4:
            k = x.shape[1]
            x = ops.reshape(x, (-1, WINDOW, WINDOW_CHANNELS))
            return ops.reshape(self._features(ops.transpose(x, (0, 2, 1))), (-1, k * self.size()))
        return self._features(ops.transpose(x, (0, 2, 1)))

    def numpy_call(self, x: np.ndarray) -> np.ndarray:
        """The features of windows ``(n, 128, 9)`` computed by numpy: the same
        formulas (float error apart), for a server (numpy's vectorised sort is
        some 40× faster than LiteRT's, which dominates the graph's cost)."""
        return self._features(np.ascontiguousarray(np.transpose(x, (0, 2, 1)), np.float32), xp=np)

    def _features(self, x, xp=ops):
        """Features of channel-first windows ``(n, 9, 128)``: every statistic
        runs along the last (time) axis, contiguous in memory.

        ``xp``: keras.ops in the graph, numpy in numpy_call; only names both share."""
        body, gyro, total = x[:, 0:3], x[:, 3:6], x[:, 6:9]
        signals = []
        for triplet in (body, gyro, total, _jerk(body, xp), _jerk(gyro, xp)):
            signals += [triplet, xp.sqrt(xp.sum(xp.square(triplet), axis=1, keepdims=True) + _EPS)]
        s = xp.concatenate(signals, axis=1)  # (n, 20, 128)

        mean = xp.mean(s, axis=-1)
        centred = s - mean[..., None]
        std = xp.sqrt(xp.mean(xp.square(centred), axis=-1) + _EPS)
        ordered = xp.sort(s, axis=-1)
        q25, q75 = ordered[..., WINDOW // 4], ordered[..., 3 * WINDOW // 4 - 1]
        median = 0.5 * (ordered[..., WINDOW // 2 - 1] + ordered[..., WINDOW // 2])
        stats = [mean, std, xp.max(s, axis=-1), xp.min(s, axis=-1), xp.mean(xp.square(s), axis=-1), median, q75 - q25]

        power = xp.square(xp.matmul(centred, self._cos)) + xp.square(xp.matmul(centred, self._sin))  # (n, 20, 64)
        bands = xp.log(xp.sum(xp.reshape(power, (-1, SIGNALS, BANDS, BINS // BANDS)), axis=-1) + _EPS)
        magnitude = xp.sqrt(power + _EPS)
        freqs = np.arange(1, BINS + 1, dtype=np.float32) * (RATE_HZ / WINDOW)
        mean_freq = xp.sum(magnitude * freqs, axis=-1) / (xp.sum(magnitude, axis=-1) + _EPS)

        gravity = xp.mean(total, axis=-1)
        direction = gravity / xp.sqrt(xp.sum(xp.square(gravity), axis=-1, keepdims=True) + _EPS)
        corr = [_axis_correlations(t, xp) for t in (body, gyro, total)]

        return xp.concatenate(
            stats + [xp.reshape(bands, (-1, SIGNALS * BANDS)), mean_freq, direction] + corr, axis=-1
        )


def window_features(x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """:class:`WindowFeatures` of windows ``(n, 128, 9)`` (or stacks with
    context, ``(n, k, 128, 9)``, the k feature vectors side by side) as a
    float32 array, computed in batches."""
    layer = WindowFeatures()
    parts = [np.asarray(layer(x[i : i + batch])) for i in range(0, len(x), batch)]
    width = WindowFeatures.size() * (x.shape[1] if x.ndim == 4 else 1)
    return np.concatenate(parts) if parts else np.empty((0, width), np.float32)


def _jerk(triplet, xp=ops):
    """Time derivative (per second) of channel-first signals; the first sample repeats the second's."""
    d = (triplet[..., 1:] - triplet[..., :-1]) * RATE_HZ
    return xp.concatenate([d[..., :1], d], axis=-1)


def _axis_correlations(triplet, xp=ops):
    """Pearson correlation of (x,y), (x,z), (y,z) within each channel-first window."""
    c = triplet - xp.mean(triplet, axis=-1, keepdims=True)
    sd = xp.sqrt(xp.mean(xp.square(c), axis=-1) + _EPS)
    pairs = [(0, 1), (0, 2), (1, 2)]
    return xp.stack([xp.mean(c[:, i] * c[:, j], axis=-1) / (sd[:, i] * sd[:, j]) for i, j in pairs], axis=-1)


assert WINDOW_CHANNELS == 9  # the triplet slicing above is UCI's channel order
