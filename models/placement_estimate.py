"""Where is the device worn? A per-window estimate: waist, thigh (a trouser
pocket) or wrist (a watch, a phone in a swinging hand).

The placement-free model says a swinging-limb walk is WALKING and keeps its
stairs classes for a gait like the one they were learned from (a HAPT waist).
Whoever decides whether a stairs claim can stand — a barometer gate, a
calibration — needs to know how waist-like the gait is: this estimator gives
that. It is a multinomial logistic regression on the
:class:`~harstream.models.invariant.PlacementRobustFeatures` of one window,
fitted on moving windows of HAPT training subjects as worn (waist, turned at
random) and as simulated thighs and wrists
(:func:`~harstream.models.augment.simulate_limb`), so it has only ever seen
*simulated* limbs. Its few hundred numbers live in the placement-free
model's metadata (``"placement_estimate"``) and it runs on numpy alone.

Only a moving window says anything about the placement: on a still one the
estimate is whatever the features give and should be ignored (gate it with
the model's STILL probability).

>>> import numpy as np
>>> est = PlacementEstimator.uniform()
>>> est.probabilities(np.zeros((2, 128, 9), np.float32)).round(3).tolist()
[[0.333, 0.333, 0.333], [0.333, 0.333, 0.333]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harstream.stream.core.placement import PLACEMENTS, PlacementTracker

from . import feature_math

__all__ = ["PLACEMENTS", "WAIST", "PlacementEstimator", "PlacementTracker", "fit_placement_estimator"]

WAIST = PLACEMENTS.index("waist")


@dataclass(frozen=True)
class PlacementEstimator:
    """Standardise the window's features, then softmax(features · coef + intercept)."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    coef: np.ndarray  # (F, 3)
    intercept: np.ndarray  # (3,)
    classes: tuple[str, ...] = PLACEMENTS

    @staticmethod
    def uniform() -> PlacementEstimator:
        """An estimator that knows nothing (every placement equally likely)."""
        f = feature_math.ROBUST_FEATURES
        return PlacementEstimator(np.zeros(f), np.ones(f), np.zeros((f, 3)), np.zeros(3))

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        """``(n, 3)`` probabilities of :attr:`classes` for windows ``(n, 128, 9)``
        (or stacks ``(n, k, 128, 9)``: the first window, the current one, is used)."""
        x = np.asarray(windows, np.float32)
        if x.ndim == 4:
            x = x[:, 0]
        if x.ndim != 3 or x.shape[1:] != (feature_math.WINDOW, feature_math.WINDOW_CHANNELS):
            raise ValueError(
                f"placement estimate: windows must be (n, {feature_math.WINDOW}, "
                f"{feature_math.WINDOW_CHANNELS}), got {x.shape}"
            )
        feats = feature_math.placement_robust_features(feature_math.channel_first(x), np).astype(np.float64)
        return self.from_features(feats)

    def from_features(self, feats: np.ndarray) -> np.ndarray:
        """``(n, 3)`` probabilities from already computed robust features ``(n, F)``."""
        z = ((feats - self.mean) / self.scale) @ self.coef + self.intercept
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def waist_likeness(self, windows: np.ndarray) -> np.ndarray:
        """``(n,)``: the probability that each window's gait is a waist's."""
        return self.probabilities(windows)[:, WAIST]

    def to_json(self) -> dict:
        return {
            "classes": list(self.classes),
            "features": "harstream>PlacementRobustFeatures of the current window",
            "mean": np.round(self.mean, 7).tolist(),
            "scale": np.round(self.scale, 7).tolist(),
            "coef": np.round(self.coef, 7).tolist(),
            "intercept": np.round(self.intercept, 7).tolist(),
        }

    @staticmethod
    def from_json(entry: dict) -> PlacementEstimator:
        """The estimator stored by :meth:`to_json`; a ValueError naming what is wrong otherwise."""
        f = feature_math.ROBUST_FEATURES
        try:
            classes = tuple(entry["classes"])
            arrays = [np.asarray(entry[k], np.float64) for k in ("mean", "scale", "coef", "intercept")]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"placement estimate: missing or malformed entry ({exc})") from None
        mean, scale, coef, intercept = arrays
        n = len(classes)
        if mean.shape != (f,) or scale.shape != (f,) or coef.shape != (f, n) or intercept.shape != (n,):
            raise ValueError(
                f"placement estimate: shapes mean {mean.shape}, scale {scale.shape}, coef {coef.shape}, "
                f"intercept {intercept.shape}; expected ({f},), ({f},), ({f}, {n}), ({n},)"
            )
        if not all(np.isfinite(a).all() for a in arrays) or (scale <= 0).any():
            raise ValueError("placement estimate: non-finite numbers or a non-positive scale")
        return PlacementEstimator(mean, scale, coef, intercept, classes)

    @staticmethod
    def from_metadata(metadata: dict) -> PlacementEstimator | None:
        """The estimator a placement-free model's metadata carries, or None."""
        entry = metadata.get("placement_estimate")
        return None if entry is None else PlacementEstimator.from_json(entry)


def fit_placement_estimator(
    features: np.ndarray, placements: np.ndarray, C: float = 1.0, classes: Sequence[str] = PLACEMENTS
) -> PlacementEstimator:
    """Fit on robust features ``(n, F)`` of moving windows and their
    placement indices (into ``classes``); balanced classes."""
    from sklearn.linear_model import LogisticRegression

    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    # a feature that does not vary (the gyroscope's, for a model taught without one: float
    # noise around a constant) carries nothing; a scale that the metadata's 7 decimals
    # would round to 0 must not divide by it
    scale = np.where(scale > 1e-6, scale, 1.0)
    model = LogisticRegression(C=C, max_iter=2000, class_weight="balanced")
    model.fit((features - mean) / scale, placements)
    if list(model.classes_) != list(range(len(classes))):
        raise ValueError(f"placement estimate: training windows cover placements {model.classes_.tolist()} only")
    return PlacementEstimator(mean, scale, model.coef_.T.copy(), model.intercept_.copy(), tuple(classes))
