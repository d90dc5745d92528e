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

import keras
import numpy as np
from keras import ops

from harstream.stream.core.pipeline import WINDOW, WINDOW_CHANNELS

from . import feature_math
from .feature_math import BANDS, BINS, dft_matrices

SIGNALS = feature_math.WINDOW_SIGNALS
STATISTICS = feature_math.WINDOW_STATISTICS
_EPS = feature_math.EPS
__all__ = [
    "BANDS",
    "BINS",
    "SIGNALS",
    "STATISTICS",
    "FeatureLayer",
    "WindowFeatures",
    "dft_matrices",
    "window_features",
]


class FeatureLayer(keras.layers.Layer):
    """A weightless layer of per-window features whose formula lives in
    :mod:`.feature_math` (one formula for the graph and for numpy). A
    subclass names its ``formula(x_channel_first, xp)`` and ``size()``.

    ``(n, 128, 9)`` windows → ``(n, size())``; a stack ``(n, k, 128, 9)`` (a
    window and its context) gives the k feature vectors side by side."""

    formula = staticmethod(feature_math.window_features)

    @staticmethod
    def size() -> int:
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        windows = input_shape[1] if len(input_shape) == 4 else 1
        return (input_shape[0], windows * self.size())

    def call(self, x):
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
        return self.formula(feature_math.channel_first(x), np)

    def _features(self, x):
        """Features of channel-first windows ``(n, 9, 128)`` in the graph."""
        return self.formula(x, ops)


@keras.saving.register_keras_serializable(package="harstream")
class WindowFeatures(FeatureLayer):
    """``(n, 128, 9)`` pipeline windows → ``(n, size())`` features (no weights)."""

    formula = staticmethod(feature_math.window_features)

    @staticmethod
    def size() -> int:
        return feature_math.WINDOW_FEATURES


def window_features(x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """:class:`WindowFeatures` of windows ``(n, 128, 9)`` (or stacks with
    context, ``(n, k, 128, 9)``, the k feature vectors side by side) as a
    float32 array, computed in batches."""
    layer = WindowFeatures()
    parts = [np.asarray(layer(x[i : i + batch])) for i in range(0, len(x), batch)]
    width = WindowFeatures.size() * (x.shape[1] if x.ndim == 4 else 1)
    return np.concatenate(parts) if parts else np.empty((0, width), np.float32)


assert WINDOW_CHANNELS == 9  # the triplet slicing above is UCI's channel order
