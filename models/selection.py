"""Model selection on TRAINING subjects only (issue 6 protocol).

The held-out UCI test subjects are never looked at here. Candidates are
trained on the training subjects minus :data:`VALIDATION_SUBJECTS` and scored
on those validation subjects; the best candidate's recipe (architecture,
augmentation, epochs) is then trained on all training subjects and tested once
per seed by :mod:`harstream.models.compare`.

Run the screen (results appended to ``docs/reports/selection.json``)::

    python -m harstream.models.selection --epochs 30 resnet resnet+aug inception+aug
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .augment import Augmentation, augmented_batches
from .dataset import Windows, labelled_windows, split_by_subject
from .training import ESTIMATORS

#: Five of the 21 UCI training subjects, spread over the range, fixed before
#: any run so that the choice cannot be tuned on results.
VALIDATION_SUBJECTS = (3, 8, 16, 22, 28)
SELECTION_FILE = Path(__file__).resolve().parent.parent / "docs" / "reports" / "selection.json"


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
        the windows 1, 2 and 4 steps before it (:mod:`harstream.stream.context`)."""
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
    def from_json(cls, d: dict) -> "Recipe":
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


def validation_split(train: Windows, subjects: Sequence[int] = VALIDATION_SUBJECTS) -> tuple[Windows, Windows]:
    """(fit, validation) windows, both from training subjects only."""
    return split_by_subject(train, test_subjects=subjects)


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


def screen(recipe: Recipe, train: Windows, seed: int = 0, verbose: int = 0) -> dict:
    """Train on training subjects minus the validation subjects; score on them."""
    fit_part, val_part = validation_split(train)
    start = time.perf_counter()
    model, history = fit(recipe, fit_part, seed, validation=val_part, verbose=verbose)
    val_acc = history.get("val_accuracy", [float("nan")])
    from sklearn.metrics import confusion_matrix

    val_pred = np.argmax(np.asarray(model.predict(val_part.x, batch_size=512, verbose=0)), axis=1)
    return {
        "validation_confusion": confusion_matrix(val_part.y, val_pred, labels=range(6)).tolist(),
        "recipe": recipe.to_json(),
        "seed": seed,
        "validation_subjects": list(VALIDATION_SUBJECTS),
        "fit_windows": len(fit_part),
        "validation_windows": len(val_part),
        "validation_accuracy": val_acc[-1],
        "best_validation_accuracy": max(val_acc),
        "best_epoch": int(np.argmax(val_acc)) + 1,
        "validation_curve": val_acc,
        "parameters": int(model.count_params()),
        "train_seconds": round(time.perf_counter() - start, 1),
    }


def load_selection(path: Path = SELECTION_FILE) -> list[dict]:
    return json.loads(path.read_text()) if path.is_file() else []


def best_recipe(results: list[dict]) -> Recipe:
    """The recipe with the highest final validation accuracy."""
    if not results:
        raise ValueError("no selection results yet; run python -m harstream.models.selection first")
    best = max(results, key=lambda r: r["validation_accuracy"])
    return Recipe.from_json(best["recipe"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="screen candidate recipes on the validation subjects")
    parser.add_argument("recipes", nargs="+", help="architecture[+aug], e.g. resnet resnet+aug inception+aug")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=SELECTION_FILE)
    args = parser.parse_args(argv)

    from harstream.stream.recordings import load_embedded

    recordings = load_embedded().recordings
    for text in args.recipes:
        recipe = parse_recipe(text, args.epochs)
        train, _ = split_by_subject(labelled_windows(recordings, context_steps=recipe.context))
        result = screen(recipe, train, seed=args.seed, verbose=2)
        results = [r for r in load_selection(args.out) if r["recipe"] != result["recipe"] or r["seed"] != args.seed]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results + [result], indent=1) + "\n")
        print(
            f"{recipe.label}: validation {result['validation_accuracy']:.4f} "
            f"(best {result['best_validation_accuracy']:.4f} @ {result['best_epoch']}), "
            f"{result['parameters']} params, {result['train_seconds']} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
