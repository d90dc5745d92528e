"""A training recipe (architecture, options, augmentation, epochs) and the
one way to fit it, used both when choosing a model on the validation subjects
and when training the shipped one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .augment import Augmentation, augmented_batches
from .dataset import Windows
from .training import ESTIMATORS


@dataclass(frozen=True)
class Recipe:
    """Everything a training run depends on, except the data and the seed."""

    architecture: str
    augmentation: Augmentation | None = None
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        opts = "".join(f"-{k}{_option_text(v)}" for k, v in sorted(self.options.items()))
        return self.architecture + opts + ("+aug" if self.augmentation else "")

    @property
    def context(self) -> tuple[int, ...]:
        """Context steps (``context=1-2-4``): the model takes each window with
        the windows 1, 2 and 4 steps before it (:mod:`harstream.stream.core.context`)."""
        return tuple(self.options.get("context", ()))

    @property
    def model_options(self) -> dict:
        """The options for the model builder (everything but the data's context)."""
        return {k: v for k, v in self.options.items() if k != "context"}

    def to_json(self) -> dict:
        d = asdict(self)
        d["label"] = self.label
        return d

    @classmethod
    def from_json(cls, d: dict) -> Recipe:
        aug = d.get("augmentation")
        return cls(
            architecture=d["architecture"],
            augmentation=Augmentation(**aug) if aug else None,
            epochs=int(d["epochs"]),
            batch_size=int(d.get("batch_size", 64)),
            learning_rate=float(d.get("learning_rate", 1e-3)),
            options=dict(d.get("options", {})),
        )


def _option_text(value) -> str:
    return "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _option_value(text: str):
    if "-" in text.strip("-"):  # 1-2-4: a list of ints (context steps)
        return [int(part) for part in text.split("-")]
    return int(text) if text.isdigit() else float(text)


def parse_recipe(text: str, epochs: int) -> Recipe:
    """``resnet``, ``resnet+aug``, ``resnet:width=16+aug`` or
    ``svm:C=1,context=1-2-4`` → a :class:`Recipe`.

    >>> parse_recipe("resnet:width=16+aug", 10).label
    'resnet-width16+aug'
    >>> parse_recipe("svm:C=1,context=1-2-4", 1).context
    (1, 2, 4)
    """
    spec, _, extra = text.partition("+")
    name, _, opts = spec.partition(":")
    options = {k: _option_value(v) for k, v in (o.split("=") for o in opts.split(",") if o)}
    return Recipe(name, Augmentation() if extra == "aug" else None, epochs=epochs, options=options)


def fit(
    recipe: Recipe,
    train: Windows,
    seed: int,
    validation: Windows | None = None,
    verbose: int = 0,
):
    """Train ``recipe`` on ``train``; returns ``(model, history dict)``.

    Adam with a cosine-decayed learning rate over the fixed number of epochs,
    so the last epoch is the model (no peeking at any other split). The
    ``svm`` recipe is fitted by :func:`harstream.models.svm.fit_svm` instead
    (epochs and augmentation do not apply). When
    ``validation`` is given its accuracy is recorded every epoch — for
    selection only.
    """
    import keras

    from .modern import build

    if recipe.architecture in ESTIMATORS:  # fitted by scikit-learn, not by gradient descent
        from .svm import fit_svm

        return fit_svm(train, seed, validation=validation, verbose=verbose, **recipe.model_options)
    if recipe.context:
        raise ValueError(f"{recipe.label}: context windows are implemented for the svm only")
    keras.utils.set_random_seed(seed)
    model = build(recipe.architecture, train.x, **recipe.model_options)
    steps = int(np.ceil(len(train) / recipe.batch_size)) * recipe.epochs
    schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=max(steps, 1))
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    batches = augmented_batches(train.x, train.y, recipe.batch_size, recipe.augmentation, seed)
    val_data = (validation.x, validation.y) if validation is not None else None
    history = model.fit(batches, epochs=recipe.epochs, validation_data=val_data, verbose=verbose)
    return model, {k: [float(v) for v in vals] for k, vals in history.history.items()}
