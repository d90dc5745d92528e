"""Two-stage models: each window's features once, then a decision on a context of them.

A context model looks at a window and the windows ``context_steps`` before it
(:mod:`harstream.stream.core.context`). When its first layer computes features of
each window on its own (:class:`~harstream.models.features.WindowFeatures`,
:class:`~harstream.models.invariant.PlacementFreeFeatures`), a whole-model call
computes every window's features 1 + k times, once for each decision it is
part of. A *staged* model keeps the two parts as named sub-models inside the
one ``.keras`` file::

    window stack (n, 1+k, 128, 9) → MergeWindows → feature_stage → SplitWindows → decision_stage → probs
                                    (n(1+k), 128, 9)  (n(1+k), F)   (n, 1+k, F)

so ``model(x_stack)`` works as before (evaluation, training, every runtime),
while a server pulls the stages out (:func:`stages`), computes each window's
features once per device and keeps a context of *feature vectors* (the same
rule as for windows: :class:`~harstream.stream.core.context.WindowContext` works on
any per-window array). The numbers are the same as the flat model's: the
feature layer always ran on the merged ``(n(1+k), 128, 9)`` batch.

The artifact's metadata says ``"stages": {"features": "feature_stage",
"decision": "decision_stage", "feature_size": F, "windows": 1 + k}`` (written
by :func:`~harstream.models.artifact.save_artifact`, read from the model).
:mod:`harstream.models.staged_runtime` serves the stages;
``python -m harstream.models.restage`` rewrites an older flat context model
in this layout.

>>> import numpy as np
>>> from harstream.models.features import WindowFeatures
>>> decision = decision_stage_of([keras.layers.Dense(2, name="head")], windows=3, feature_size=WindowFeatures.size())
>>> model = build_staged_model(WindowFeatures(name="window_features"), decision, windows=3)
>>> feature_stage, decision_stage = stages(model)
>>> x = np.random.default_rng(0).normal(size=(2, 3, 128, 9)).astype("float32")
>>> f = np.asarray(feature_stage(x.reshape(-1, 128, 9))).reshape(2, 3, -1)
>>> bool(np.array_equal(np.asarray(decision_stage(f)), np.asarray(model(x))))
True
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from harstream.stream.core.pipeline import WINDOW, WINDOW_CHANNELS

FEATURE_STAGE = "feature_stage"
DECISION_STAGE = "decision_stage"


@keras.saving.register_keras_serializable(package="harstream")
class MergeWindows(keras.layers.Layer):
    """``(n, k, 128, 9)`` window stacks → ``(n·k, 128, 9)`` windows, stack by stack."""

    def call(self, x):
        return ops.reshape(x, (-1, WINDOW, WINDOW_CHANNELS))

    def compute_output_shape(self, input_shape):
        return (None, WINDOW, WINDOW_CHANNELS)


@keras.saving.register_keras_serializable(package="harstream")
class SplitWindows(keras.layers.Layer):
    """``(n·k, F)`` per-window features → ``(n, k, F)``, undoing :class:`MergeWindows`."""

    def __init__(self, windows: int, **kwargs):
        super().__init__(**kwargs)
        self.windows = int(windows)

    def call(self, f):
        return ops.reshape(f, (-1, self.windows, f.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (None, self.windows, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "windows": self.windows}


def feature_size(layer: keras.layers.Layer) -> int:
    """Features per window of a per-window feature layer."""
    return int(layer.compute_output_shape((None, WINDOW, WINDOW_CHANNELS))[-1])


def decision_stage_of(layers: Sequence[keras.layers.Layer], windows: int, feature_size: int) -> keras.Model:
    """The decision stage: ``(n, windows, F)`` feature stacks, flattened (the
    k vectors side by side, as the flat model's feature layer gave them), then
    ``layers`` in sequence."""
    inputs = keras.Input(shape=(windows, feature_size), dtype="float32", name="feature_stack")
    y = keras.layers.Reshape((windows * feature_size,), name="side_by_side")(inputs)
    for layer in layers:
        y = layer(y)
    return keras.Model(inputs, y, name=DECISION_STAGE)


def build_staged_model(
    features: keras.layers.Layer, decision: keras.Model, windows: int, name: str = "svm"
) -> keras.Model:
    """The whole model over ``(n, windows, 128, 9)`` stacks, built from a
    per-window feature layer and a decision stage (:func:`decision_stage_of`)."""
    window = keras.Input(shape=(WINDOW, WINDOW_CHANNELS), dtype="float32", name="one_window")
    feature_stage = keras.Model(window, features(window), name=FEATURE_STAGE)
    inputs = keras.Input(shape=(windows, WINDOW, WINDOW_CHANNELS), dtype="float32", name="window")
    f = SplitWindows(windows, name="split_windows")(feature_stage(MergeWindows(name="merge_windows")(inputs)))
    return keras.Model(inputs, decision(f), name=name)


def is_staged(model: keras.Model) -> bool:
    """Whether ``model`` carries a feature stage and a decision stage."""
    names = {layer.name for layer in model.layers}
    return FEATURE_STAGE in names and DECISION_STAGE in names


def stages(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """``(feature_stage, decision_stage)`` of a staged model: ``(n, 128, 9) → (n, F)``
    and ``(n, 1 + k, F) → probabilities``."""
    if not is_staged(model):
        raise ValueError(f"model {model.name!r} has no {FEATURE_STAGE!r} and {DECISION_STAGE!r} sub-models")
    return model.get_layer(FEATURE_STAGE), model.get_layer(DECISION_STAGE)


def stage_metadata(model: keras.Model) -> dict | None:
    """What an artifact's metadata says about its stages (None: not staged)."""
    if not is_staged(model):
        return None
    feature_stage, decision_stage = stages(model)
    return {
        "features": FEATURE_STAGE,
        "decision": DECISION_STAGE,
        "feature_size": int(feature_stage.output_shape[-1]),
        "windows": int(decision_stage.input_shape[1]),
    }


def restage(model: keras.Model) -> keras.Model:
    """The staged equivalent of a flat context model ``input → per-window
    feature layer → a chain of layers`` (as :func:`harstream.models.svm.build_svm_model`
    built them before stages existed), with the same layer objects, so the
    same weights and numbers."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or not layers:
        raise ValueError(f"model {model.name!r} takes {shape}: not a context model ((k, 128, 9) stacks)")
    features, chain = layers[0], layers[1:]
    for before, after in zip(layers, layers[1:]):  # a chain: each layer eats the previous one's output
        if after.input is not before.output:
            raise ValueError(f"model {model.name!r}: layer {after.name!r} does not follow {before.name!r}; not a chain")
    windows = shape[0]
    decision = decision_stage_of(chain, windows, feature_size(features))
    return build_staged_model(features, decision, windows, name=model.name)


def feature_layer(feature_stage: keras.Model) -> keras.layers.Layer | None:
    """The feature stage's one feature layer if numpy can run it, else None."""
    layers = [layer for layer in feature_stage.layers if not isinstance(layer, keras.layers.InputLayer)]
    return layers[0] if len(layers) == 1 and hasattr(layers[0], "numpy_call") else None
