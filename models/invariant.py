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

import keras
import numpy as np
from keras import ops

from . import feature_math
from .feature_math import BANDS  # noqa: F401 (re-exported: the feature count's parts)
from .features import FeatureLayer

SIGNALS = feature_math.FREE_SIGNALS
STATISTICS = feature_math.FREE_STATISTICS
CORRELATIONS = feature_math.FREE_CORRELATIONS
_EPS = feature_math.EPS
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
class PlacementFreeFeatures(FeatureLayer):
    """``(n, 128, 9)`` windows → ``(n, size())`` orientation-invariant features
    (no weights); a stack ``(n, k, 128, 9)`` gives the k vectors side by side."""

    formula = staticmethod(feature_math.placement_free_features)

    @staticmethod
    def size() -> int:
        return feature_math.FREE_FEATURES


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


@keras.saving.register_keras_serializable(package="harstream")
class PlacementRobustFeatures(FeatureLayer):
    """:class:`PlacementFreeFeatures` followed by the gait features of
    :func:`~harstream.models.feature_math.gait_features` (regularity at the
    step and stride lags, stride-against-step power, the dominant rotation
    axis's share and energy, the swing of the device's tilt): every one is
    unchanged by turning the device, and together they say how the device
    swings — a waist bounces once per step, a thigh or an arm swings once
    per stride."""

    formula = staticmethod(feature_math.placement_robust_features)

    @staticmethod
    def size() -> int:
        return feature_math.ROBUST_FEATURES


def placement_robust_features(x: np.ndarray, batch: int = 2048) -> np.ndarray:
    """:class:`PlacementRobustFeatures` of windows ``(n, 128, 9)`` or stacks
    ``(n, k, 128, 9)`` (k vectors side by side) as float32, by numpy (the
    same formulas as the layer)."""
    n = len(x)
    k = x.shape[1] if x.ndim == 4 else 1
    flat = x.reshape((-1,) + x.shape[-2:])
    parts = [
        np.asarray(feature_math.placement_robust_features(feature_math.channel_first(flat[i : i + batch]), np))
        for i in range(0, len(flat), batch)
    ]
    size = PlacementRobustFeatures.size()
    out = np.concatenate(parts) if parts else np.empty((0, size), np.float32)
    return out.reshape(n, k * size).astype(np.float32)
