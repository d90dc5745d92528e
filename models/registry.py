"""The architecture registry: what a model builder is and where builders live.

Every builder has the signature ``builder(stats: ChannelStats) -> keras.Model``
and returns a model whose input is the pipeline's window, float32
``[None, 128, 9]`` in UCI channel order, and whose output is softmax over the
six activities ``[None, 6]``. Any reshaping or normalisation is a built-in
Keras layer inside the model (``Reshape``, ``Normalization``…), never a
``Lambda``, so the saved ``.keras`` loads in safe mode and takes pipeline
windows directly. ``stats`` are the training windows' per-channel statistics;
a builder that normalises puts them in a ``Normalization`` layer (see
:func:`window_input`).

A builder may return a compiled model (its own optimizer and loss); an
uncompiled one is compiled by :func:`~harstream.models.training.train_model`
with Adam and categorical cross-entropy, as the tutorial did. Training feeds
one-hot labels (float32 ``[n, 6]``), so a builder compiling its own loss must
use a categorical (not sparse) one.

Modules register their builders with :func:`register` when imported:
:mod:`~harstream.models.architectures` (the tutorial's three) and
:mod:`~harstream.models.modern` (ours). The package imports both, so
``ARCHITECTURES`` holds all of them whichever module a caller imports; this
module imports neither (dependencies point one way: builders → registry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.pipeline import WINDOW, WINDOW_CHANNELS

if TYPE_CHECKING:  # keras is imported lazily: importing this module stays cheap
    import keras

N_CLASSES = len(ACTIVITIES)
INPUT_SHAPE = (WINDOW, WINDOW_CHANNELS)


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and variance of training windows (each shape (9,))."""

    mean: np.ndarray
    variance: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> ChannelStats:
        """Statistics of windows ``x`` of shape (n, 128, 9).

        >>> s = ChannelStats.of(np.ones((2, 128, 9), np.float32))
        >>> s.mean.shape, float(s.mean[0]), float(s.variance[0])
        ((9,), 1.0, 0.0)
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1, WINDOW_CHANNELS)
        return cls(mean=x.mean(axis=0), variance=x.var(axis=0))

    @classmethod
    def identity(cls) -> ChannelStats:
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


def build_model(name: str, stats: ChannelStats | None = None) -> keras.Model:
    """Build architecture ``name`` (uncompiled or compiled, as its builder does)."""
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    model = ARCHITECTURES[name](stats if stats is not None else ChannelStats.identity())
    _check_signature(name, model)
    return model


def _check_signature(name: str, model: keras.Model) -> None:
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
        axis=-1,
        mean=stats.mean.astype("float32"),
        variance=stats.variance.astype("float32"),
        name="channel_norm",
    )
    return inputs, norm(inputs)
