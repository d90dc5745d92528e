"""Model selection on TRAINING subjects only.

The held-out UCI test subjects are never looked at here. Candidates are
trained on the training subjects minus :data:`VALIDATION_SUBJECTS` and scored
on those validation subjects; the best candidate's recipe (architecture,
augmentation, epochs) is then trained on all training subjects and tested once
per seed by :mod:`harstream.models.studies.compare`.

Run the screen (results appended to ``docs/reports/selection.json``)::

    python -m harstream.models.studies.selection --epochs 30 resnet resnet+aug inception+aug
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from harstream.models.reports import REPORTS

from ..dataset import VALIDATION_SUBJECTS, Windows, labelled_windows, split_by_subject, validation_split
from ..recipe import Recipe, fit, parse_recipe

SELECTION_FILE = REPORTS / "selection.json"


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
        raise ValueError("no selection results yet; run python -m harstream.models.studies.selection first")
    best = max(results, key=lambda r: r["validation_accuracy"])
    return Recipe.from_json(best["recipe"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="screen candidate recipes on the validation subjects")
    parser.add_argument("recipes", nargs="+", help="architecture[+aug], e.g. resnet resnet+aug inception+aug")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=SELECTION_FILE)
    args = parser.parse_args(argv)

    from harstream.stream.data.recordings import load_embedded

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
