"""The Keras layers of a personal model (:mod:`harstream.models.personal`).

They live apart from the fitting code so that :func:`harstream.models.artifact.load_artifact`
can register them for safe-mode loading without importing the module that
itself saves artifacts (no import cycle).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from harstream.stream.core.activities import PLACEMENT_FREE, STILL

from .invariant import PlacementFreeFeatures, gravity_direction

_STILL_INDEX = PLACEMENT_FREE.index(STILL)


@keras.saving.register_keras_serializable(package="harstream")
class PostureHead(keras.layers.Layer):
    """Windows (or stacks) → probabilities over ``postures + 1``: each
    calibrated posture, then *none of them*.

    Two cues, both of the current window:

    - the gravity direction in the device's frame against the calibrated
      ``prototypes`` (unit vectors; ``owners[i]`` is the posture of
      prototype ``i``): farther than ``max_angle`` from all of them means
      none of the calibrated postures (a sigmoid gate), and among them the
      closer, the likelier (``sharpness`` × cosine, as logits);
    - a linear discriminant on the standardised placement-free features
      (``feature_mean``, ``feature_scale``, ``coef`` (features, postures),
      ``intercept``), fitted on the calibration's still windows: sitting
      and standing differ in how still the body is as much as in the tilt
      of a waist, and a device re-attached a little differently moves the
      tilt but not the stillness. Its logits are clipped to ±``LDA_CLIP``.
    """

    LDA_CLIP = 20.0
    GATE_SHARPNESS = 200.0

    def __init__(
        self,
        prototypes: Sequence[Sequence[float]],
        owners: Sequence[int],
        postures: int,
        max_angle: float,
        sign_invariant: bool,
        sharpness: float,
        feature_mean: Sequence[float] = (),
        feature_scale: Sequence[float] = (),
        coef: Sequence[Sequence[float]] = (),
        intercept: Sequence[float] = (),
        **kwargs,
    ):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.prototypes = [[float(v) for v in p] for p in prototypes]
        self.owners = [int(o) for o in owners]
        self.postures = int(postures)
        self.max_angle = float(max_angle)
        self.sign_invariant = bool(sign_invariant)
        self.sharpness = float(sharpness)
        self.feature_mean = [float(v) for v in feature_mean]
        self.feature_scale = [float(v) for v in feature_scale]
        self.coef = [[float(v) for v in row] for row in coef]
        self.intercept = [float(v) for v in intercept]
        protos = np.asarray(self.prototypes, np.float32).reshape(-1, 3)
        self._protos = np.abs(protos) if self.sign_invariant else protos
        member = np.zeros((len(self.owners), self.postures), np.float32)
        member[np.arange(len(self.owners)), self.owners] = 1.0
        self._member = member
        self._features = PlacementFreeFeatures() if self.coef else None

    def build(self, input_shape):
        if self._features is not None:
            window = tuple(input_shape[-2:])
            self._features.build((input_shape[0], *window))
        self.built = True

    def call(self, x):
        x = ops.cast(x, "float32")
        down = gravity_direction(x)
        if self.postures == 0:
            return ops.ones_like(down[:, :1])
        if self.sign_invariant:
            down = ops.abs(down)
        cos = ops.matmul(down, ops.transpose(self._protos))  # (n, prototypes)
        # best prototype of each posture: non-members pushed below any cosine
        per_posture = ops.max(cos[:, :, None] * self._member - 3.0 * (1.0 - self._member), axis=1)  # (n, postures)
        logits = self.sharpness * per_posture
        if self._features is not None:
            current = x[:, 0] if len(x.shape) == 4 else x
            mean, scale = np.asarray(self.feature_mean, np.float32), np.asarray(self.feature_scale, np.float32)
            f = (self._features(current) - mean) / scale
            lda = ops.matmul(f, np.asarray(self.coef, np.float32)) + np.asarray(self.intercept, np.float32)
            logits = logits + ops.clip(lda, -self.LDA_CLIP, self.LDA_CLIP)
        gate = float(np.cos(np.deg2rad(self.max_angle))) - ops.max(per_posture, axis=-1, keepdims=True)
        none = ops.sigmoid(self.GATE_SHARPNESS * gate)
        return ops.concatenate([(1.0 - none) * ops.softmax(logits, axis=-1), none], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.postures + 1)

    def get_config(self):
        return {
            **super().get_config(),
            "prototypes": self.prototypes,
            "owners": self.owners,
            "postures": self.postures,
            "max_angle": self.max_angle,
            "sign_invariant": self.sign_invariant,
            "sharpness": self.sharpness,
            "feature_mean": self.feature_mean,
            "feature_scale": self.feature_scale,
            "coef": self.coef,
            "intercept": self.intercept,
        }


@keras.saving.register_keras_serializable(package="harstream")
class PostureSplit(keras.layers.Layer):
    """``[placement-free probabilities (n, 4), posture probabilities (n, p + 1)]``
    → ``(n, 3 + p + 1)``: the moving classes as they are, STILL's probability
    shared out over the calibrated postures and plain STILL."""

    def call(self, inputs):
        base, posture = inputs
        still = base[:, _STILL_INDEX : _STILL_INDEX + 1]
        return ops.concatenate([base[:, :_STILL_INDEX], still * posture], axis=-1)

    def compute_output_shape(self, input_shapes):
        base, posture = input_shapes
        return (base[0], _STILL_INDEX + posture[1])
