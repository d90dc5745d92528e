"""Architectures beyond the tutorial: standardised inputs, a small
ResNet-style 1D-CNN, an InceptionTime-style network, a stacked
bidirectional LSTM, and two that use hand-crafted features
(:mod:`harstream.models.features`): a feature MLP and a ResNet + features
hybrid.

Every builder follows :mod:`harstream.models.registry`' contract:
``builder(stats)`` where ``stats`` are the TRAINING windows' per-channel mean
and variance (never test data), put into a ``keras.layers.Normalization``
layer inside the model; it returns an uncompiled ``keras.Model`` that eats
pipeline windows directly and outputs class probabilities. Only built-in
layers and our registered ``WindowFeatures`` (no ``Lambda``), so the saved
``.keras`` file loads in Keras safe mode. They are
registered in ``ARCHITECTURES`` (``harstream train --model resnet``).

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(32, 128, 9)).astype("float32")
>>> model = build("resnet", x, width=8)
>>> tuple(model(np.zeros((2, 128, 9), "float32")).shape)
(2, 6)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .registry import N_CLASSES, ChannelStats, register, window_input


def _stem(stats: ChannelStats):
    import keras

    inputs, x = window_input(stats)
    # Each channel's window mean is the phone's orientation relative to
    # gravity (total_acc) -- the cue that tells sitting from standing; hand
    # it straight to the classifier instead of hoping pooling keeps it.
    means = keras.layers.GlobalAveragePooling1D(name="channel_means")(x)
    return inputs, x, means


def _head(inputs, features, means, dropout: float, name: str):
    import keras

    x = keras.layers.Concatenate(name="features")([features, means])
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(N_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def _conv_bn(x, filters: int, kernel: int, activation: bool = True):
    import keras

    x = keras.layers.Conv1D(filters, kernel, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x) if activation else x


def _residual_block(x, filters: int, kernel: int):
    import keras

    shortcut = x
    y = _conv_bn(x, filters, kernel)
    y = _conv_bn(y, filters, kernel, activation=False)
    if shortcut.shape[-1] != filters:
        shortcut = _conv_bn(shortcut, filters, 1, activation=False)
    return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))


def _resnet_trunk(x, width: int):
    """Stem conv, three residual blocks with pooling between them, global
    average pooling."""
    import keras

    x = _conv_bn(x, width, 7)
    x = _residual_block(x, width, 5)
    x = keras.layers.MaxPooling1D(2)(x)
    x = _residual_block(x, 2 * width, 5)
    x = keras.layers.MaxPooling1D(2)(x)
    x = _residual_block(x, 2 * width, 3)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return x


def build_resnet(stats: ChannelStats, width: int = 32, dropout: float = 0.3):
    """Small ResNet-style 1D-CNN: stem conv, three residual blocks with
    pooling between them, global average pooling (+ channel means)."""
    inputs, x, means = _stem(stats)
    x = _resnet_trunk(x, width)
    return _head(inputs, x, means, dropout, "resnet")


def _inception_module(x, filters: int, kernels: tuple[int, ...], bottleneck: int):
    import keras

    b = keras.layers.Conv1D(bottleneck, 1, padding="same", use_bias=False)(x) if x.shape[-1] > 1 else x
    branches = [keras.layers.Conv1D(filters, k, padding="same", use_bias=False)(b) for k in kernels]
    pooled = keras.layers.MaxPooling1D(3, strides=1, padding="same")(x)
    branches.append(keras.layers.Conv1D(filters, 1, padding="same", use_bias=False)(pooled))
    y = keras.layers.Concatenate()(branches)
    y = keras.layers.BatchNormalization()(y)
    return keras.layers.ReLU()(y)


def build_inception(
    stats: ChannelStats,
    filters: int = 16,
    depth: int = 3,
    kernels: tuple[int, ...] = (9, 19, 39),
    dropout: float = 0.3,
):
    """InceptionTime-style network (Ismail Fawaz et al. 2020), scaled down:
    ``depth`` inception modules (bottleneck, three kernel sizes, max-pool
    branch) with a residual shortcut over the stack, global average pooling."""
    import keras

    inputs, x, means = _stem(stats)
    shortcut = x
    for _ in range(depth):
        x = _inception_module(x, filters, kernels, bottleneck=filters)
    width = filters * (len(kernels) + 1)
    shortcut = _conv_bn(shortcut, width, 1, activation=False)
    x = keras.layers.ReLU()(keras.layers.Add()([x, shortcut]))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return _head(inputs, x, means, dropout, "inception")


def build_bilstm(stats: ChannelStats, units: int = 32, dropout: float = 0.3):
    """Stacked bidirectional LSTM (two layers) on standardised windows."""
    import keras

    inputs, x, means = _stem(stats)
    x = keras.layers.Bidirectional(keras.layers.LSTM(units, return_sequences=True))(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(units))(x)
    return _head(inputs, x, means, dropout, "bilstm")


def _feature_branch(inputs, units: int):
    """Hand-crafted features of the raw window, batch-normalised (statistics
    of training batches only) and mixed by one dense layer."""
    import keras

    from .features import WindowFeatures

    f = WindowFeatures(name="window_features")(inputs)
    f = keras.layers.BatchNormalization(name="feature_norm")(f)
    return keras.layers.Dense(units, activation="relu", name="feature_mix")(f)


def build_features(stats: ChannelStats, units: int = 128, dropout: float = 0.3):
    """Hand-crafted features (:mod:`harstream.models.features`) and a small
    MLP: the UCI authors' approach with a network in place of the SVM."""
    import keras

    inputs, _ = window_input(stats)
    x = _feature_branch(inputs, units)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(N_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="features")


def build_hybrid(stats: ChannelStats, width: int = 16, units: int = 64, dropout: float = 0.3):
    """The ResNet's learned features side by side with the hand-crafted ones:
    both feed the classifier, so it can lean on whichever tells sitting from
    standing for a given window."""
    import keras

    inputs, x, means = _stem(stats)
    x = _resnet_trunk(x, width)
    x = keras.layers.Concatenate()([x, _feature_branch(inputs, units)])
    return _head(inputs, x, means, dropout, "hybrid")


def build_standardised_lstm(stats: ChannelStats, units: int = 100, dropout: float = 0.5):
    """The seed LSTM with standardised inputs: isolates what standardisation alone gives."""
    import keras

    inputs, x = window_input(stats)
    x = keras.layers.LSTM(units)(x)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(100, activation="relu")(x)
    outputs = keras.layers.Dense(N_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="lstm_std")


#: name -> builder(stats) for the models of this module.
BUILDERS: dict[str, Callable[..., object]] = {
    "lstm_std": build_standardised_lstm,
    "resnet": build_resnet,
    "inception": build_inception,
    "bilstm": build_bilstm,
    "features": build_features,
    "hybrid": build_hybrid,
}


#: Epochs for ``harstream train --model NAME``. That command trains with the
#: tutorial's loop (constant-rate Adam, no augmentation, default widths); the
#: shipped recipe (width 16, augmentation, cosine decay) is trained by
#: ``python -m harstream.models.studies.compare run`` -- see docs/evaluation.md.
EPOCHS = {"lstm_std": 15, "resnet": 10, "inception": 10, "bilstm": 10, "features": 30, "hybrid": 10}


def build(name: str, train_x: np.ndarray, **options):
    """Build ``name`` with its standardisation set from the training windows ``train_x``."""
    if name not in BUILDERS:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[name](ChannelStats.of(train_x), **options)


for _name, _builder in BUILDERS.items():
    register(_name, _builder, epochs=EPOCHS[_name])
