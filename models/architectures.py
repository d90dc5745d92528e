"""Model architectures: a registry of builders, the tutorial's three to start.

Every builder has the signature ``builder(stats: ChannelStats) -> keras.Model``
and returns a model whose input is the pipeline's window, float32
``[None, 128, 9]`` in UCI channel order, and whose output is softmax over the
six activities ``[None, 6]``. Any reshaping or normalisation is a built-in
Keras layer inside the model (``Reshape``, ``Normalization``…), never a
``Lambda``, so the saved ``.keras`` loads in safe mode and takes pipeline
windows directly. ``stats`` are the training windows' per-channel statistics;
a builder that normalises puts them in a ``Normalization`` layer (see
:func:`window_input`), the tutorial's builders ignore them (the tutorial fed
raw windows).

A builder may return a compiled model (its own optimizer and loss); an
uncompiled one is compiled by :func:`~harstream.models.training.train_model`
with Adam and categorical cross-entropy, as the tutorial did. Training feeds
one-hot labels (float32 ``[n, 6]``), so a builder compiling its own loss must
use a categorical (not sparse) one.

Adding architectures: call :func:`register` from another module of this
package. Modules listed in ``PLUGIN_MODULES`` (``models/modern.py``) are
imported at the end of this module when they exist, so ``ARCHITECTURES``
always holds everything registered there. A plugin module that exists but
fails to import raises: a broken architecture module is a bug, not a
missing feature.

>>> {"lstm", "cnn_lstm", "conv_lstm"} <= set(ARCHITECTURES)
True
>>> DEFAULT_EPOCHS["lstm"], DEFAULT_EPOCHS["cnn_lstm"], DEFAULT_EPOCHS["conv_lstm"]
(15, 25, 25)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from harstream.stream.activities import ACTIVITIES
from harstream.stream.pipeline import WINDOW, WINDOW_CHANNELS

if TYPE_CHECKING:  # keras is imported lazily: importing this module stays cheap
    import keras

N_CLASSES = len(ACTIVITIES)
INPUT_SHAPE = (WINDOW, WINDOW_CHANNELS)
# The tutorial's sub-sequence split for CNN-LSTM and ConvLSTM: 4 x 32 samples.
N_STEPS, N_LENGTH = 4, WINDOW // 4
PLUGIN_MODULES = ("modern",)


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and variance of training windows (each shape (9,))."""

    mean: np.ndarray
    variance: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> "ChannelStats":
        """Statistics of windows ``x`` of shape (n, 128, 9).

        >>> s = ChannelStats.of(np.ones((2, 128, 9), np.float32))
        >>> s.mean.shape, float(s.mean[0]), float(s.variance[0])
        ((9,), 1.0, 0.0)
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1, WINDOW_CHANNELS)
        return cls(mean=x.mean(axis=0), variance=x.var(axis=0))

    @classmethod
    def identity(cls) -> "ChannelStats":
        """Mean 0, variance 1: normalisation that changes nothing."""
        return cls(np.zeros(WINDOW_CHANNELS), np.ones(WINDOW_CHANNELS))


Builder = Callable[[ChannelStats], "keras.Model"]

ARCHITECTURES: dict[str, Builder] = {}
DEFAULT_EPOCHS: dict[str, int] = {}
DESCRIPTIONS: dict[str, str] = {}


def register(name: str, builder: Builder, epochs: int, description: str = "") -> Builder:
    """Add an architecture to the registry (``harstream train --model name``).

    Re-registering the same name replaces it (so a module can be reloaded).
    """
    if not name.isidentifier():
        raise ValueError(f"architecture name {name!r}: use letters, digits and _ only")
    if epochs < 1:
        raise ValueError(f"architecture {name!r}: default epochs must be >= 1, got {epochs}")
    ARCHITECTURES[name] = builder
    DEFAULT_EPOCHS[name] = int(epochs)
    doc_lines = (builder.__doc__ or "").strip().splitlines()
    DESCRIPTIONS[name] = description or (doc_lines[0] if doc_lines else name)
    return builder


def build_model(name: str, stats: ChannelStats | None = None) -> "keras.Model":
    """Build architecture ``name`` (uncompiled or compiled, as its builder does)."""
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    model = ARCHITECTURES[name](stats if stats is not None else ChannelStats.identity())
    _check_signature(name, model)
    return model


def _check_signature(name: str, model: "keras.Model") -> None:
    in_shape = tuple(model.inputs[0].shape)
    out_shape = tuple(model.outputs[0].shape)
    if in_shape[1:] != INPUT_SHAPE or out_shape[1:] != (N_CLASSES,):
        raise ValueError(
            f"architecture {name!r} maps {in_shape} -> {out_shape}; "
            f"it must map (None, {WINDOW}, {WINDOW_CHANNELS}) -> (None, {N_CLASSES})"
        )


def window_input(stats: ChannelStats | None = None, name: str = "window"):
    """The shared model input, optionally followed by a ``Normalization`` layer.

    Returns ``(inputs, x)``: the ``keras.Input`` for pipeline windows and the
    tensor to build on (normalised with ``stats`` when given).
    """
    import keras

    inputs = keras.Input(shape=INPUT_SHAPE, dtype="float32", name=name)
    if stats is None:
        return inputs, inputs
    norm = keras.layers.Normalization(
        axis=-1, mean=stats.mean.astype("float32"), variance=stats.variance.astype("float32"),
        name="channel_norm",
    )
    return inputs, norm(inputs)


def _head(x, name: str):
    """The tutorial's classifier head: Dense(100, relu) -> softmax(6)."""
    import keras

    x = keras.layers.Dense(100, activation="relu", name="dense")(x)
    return keras.layers.Dense(N_CLASSES, activation="softmax", name="probabilities")(x)


def build_lstm(stats: ChannelStats) -> "keras.Model":
    """Tutorial LSTM: LSTM(100) -> Dropout 0.5 -> Dense(100, relu) -> softmax."""
    import keras

    inputs, x = window_input(None)
    x = keras.layers.LSTM(100, name="lstm")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    return keras.Model(inputs, _head(x, "lstm"), name="lstm")


def build_cnn_lstm(stats: ChannelStats) -> "keras.Model":
    """Tutorial CNN-LSTM: 4x32 sub-sequences, TimeDistributed CNN, LSTM(100)."""
    import keras
    from keras import layers

    inputs, x = window_input(None)
    x = layers.Reshape((N_STEPS, N_LENGTH, WINDOW_CHANNELS), name="subsequences")(x)
    x = layers.TimeDistributed(layers.Conv1D(64, 3, activation="relu"), name="conv1")(x)
    x = layers.TimeDistributed(layers.Conv1D(64, 3, activation="relu"), name="conv2")(x)
    x = layers.TimeDistributed(layers.Dropout(0.5), name="conv_dropout")(x)
    x = layers.TimeDistributed(layers.MaxPooling1D(2), name="pool")(x)
    x = layers.TimeDistributed(layers.Flatten(), name="flatten")(x)
    x = layers.LSTM(100, name="lstm")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    return keras.Model(inputs, _head(x, "cnn_lstm"), name="cnn_lstm")


def build_conv_lstm(stats: ChannelStats) -> "keras.Model":
    """Tutorial ConvLSTM: (4, 1, 32, 9) -> ConvLSTM2D(64, (1, 3)) -> Dense."""
    import keras
    from keras import layers

    inputs, x = window_input(None)
    x = layers.Reshape((N_STEPS, 1, N_LENGTH, WINDOW_CHANNELS), name="subsequences")(x)
    x = layers.ConvLSTM2D(64, kernel_size=(1, 3), activation="relu", name="conv_lstm")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _head(x, "conv_lstm"), name="conv_lstm")


register("lstm", build_lstm, epochs=15)
register("cnn_lstm", build_cnn_lstm, epochs=25)
register("conv_lstm", build_conv_lstm, epochs=25)


def _import_plugins() -> None:
    for module in PLUGIN_MODULES:
        qualified = f"{__package__}.{module}"
        try:
            importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name != qualified:  # the plugin exists but needs something missing
                raise


_import_plugins()
