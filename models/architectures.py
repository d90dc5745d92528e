"""The tutorial's three architectures: LSTM, CNN-LSTM and ConvLSTM.

Faithful to the tutorial (raw windows, no standardisation: the builders
ignore ``stats``), registered in :mod:`~harstream.models.registry` under
``lstm``, ``cnn_lstm`` and ``conv_lstm``. The registry's names are re-exported
here for the callers that have always imported them from this module.

>>> {"lstm", "cnn_lstm", "conv_lstm"} <= set(ARCHITECTURES)
True
>>> DEFAULT_EPOCHS["lstm"], DEFAULT_EPOCHS["cnn_lstm"], DEFAULT_EPOCHS["conv_lstm"]
(15, 25, 25)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harstream.stream.core.pipeline import WINDOW, WINDOW_CHANNELS

from .registry import (  # noqa: F401  re-exported: the registry's public names
    ARCHITECTURES,
    DEFAULT_EPOCHS,
    DESCRIPTIONS,
    INPUT_SHAPE,
    N_CLASSES,
    Builder,
    ChannelStats,
    build_model,
    register,
    window_input,
)

if TYPE_CHECKING:
    import keras

# The tutorial's sub-sequence split for CNN-LSTM and ConvLSTM: 4 x 32 samples.
N_STEPS, N_LENGTH = 4, WINDOW // 4


def _head(x, name: str):
    """The tutorial's classifier head: Dense(100, relu) -> softmax(6)."""
    import keras

    x = keras.layers.Dense(100, activation="relu", name="dense")(x)
    return keras.layers.Dense(N_CLASSES, activation="softmax", name="probabilities")(x)


def build_lstm(stats: ChannelStats) -> keras.Model:
    """Tutorial LSTM: LSTM(100) -> Dropout 0.5 -> Dense(100, relu) -> softmax."""
    import keras

    inputs, x = window_input(None)
    x = keras.layers.LSTM(100, name="lstm")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    return keras.Model(inputs, _head(x, "lstm"), name="lstm")


def build_cnn_lstm(stats: ChannelStats) -> keras.Model:
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


def build_conv_lstm(stats: ChannelStats) -> keras.Model:
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
