"""The placement-free model: what any device can know, however it is carried.

Classes :data:`~harstream.stream.core.activities.PLACEMENT_FREE`: WALKING,
WALKING_UPSTAIRS, WALKING_DOWNSTAIRS and STILL (HAPT's sitting, standing and
lying merged: telling them apart needs to know how the device sits on the
body, which only a calibration of that device gives —
:mod:`harstream.models.personal`).

The model is the feature SVM of :mod:`harstream.models.svm` on
:class:`~harstream.models.invariant.PlacementFreeFeatures` instead of the
waist features, served as one ordinary ``.keras`` artifact (metadata
``"placement": "any"``, same window or context-stack input). Training data:

- every training session is turned by its own random rotation (uniform over
  all orientations) *before* the pipeline, as if the phone had been worn
  another way round — the features are invariant by construction, so this
  mostly exercises the one non-linear filter (the 3-sample median), which
  does not commute with rotation;
- optionally, each window's motion (body acceleration and rotation rate) is
  scaled by a random factor, so that the classes are not told apart by how
  vigorous a waist moves: a thigh in a pocket swings more, a wrist less
  regularly (``--amplitude``, chosen on validation subjects).

Selection and shipping (validation subjects of
:data:`~harstream.models.dataset.VALIDATION_SUBJECTS` for choices, the UCI
test subjects scored once)::

    python -m harstream.models.placement_free select    # docs/reports/placement_free_selection.json
    python -m harstream.models.placement_free ship      # models/pretrained/any.keras + any.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harstream.models.reports import REPORTS
from harstream.stream.core.activities import PLACEMENT_FREE
from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, Recording

from .augment import rotate_samples, rotation_within
from .dataset import Windows, labelled_windows
from .invariant import PlacementFreeFeatures, placement_free_features

if TYPE_CHECKING:  # Keras loads slowly; the functions below import it when they run
    import keras

STILL_CLASS = PLACEMENT_FREE.index("STILL")
N_PLACEMENT_FREE = len(PLACEMENT_FREE)
DEFAULT_CONTEXT = (1, 2, 4)
DEFAULT_C = 3.0
#: Motion scaled by a log-uniform factor in this range (see the module doc).
DEFAULT_AMPLITUDE = (0.7, 1.5)
#: The test sessions' rotations are drawn from the seed plus this.
TEST_ROTATION_OFFSET = 1000


def placement_free_labels(y: np.ndarray) -> np.ndarray:
    """HAPT classes 0-5 → placement-free classes (postures 3-5 → STILL).

    >>> placement_free_labels(np.arange(6)).tolist()
    [0, 1, 2, 3, 3, 3]
    """
    return np.minimum(np.asarray(y, np.int64), STILL_CLASS)


def rotate_recording(rec: Recording, rotation: np.ndarray) -> Recording:
    """The recording as the same device turned by ``rotation`` would have made it."""
    return replace(rec, samples=rotate_samples(rec.samples, rotation))


def rotated_recordings(
    recordings: Iterable[Recording], seed: int, max_degrees: float | None = None, per: str = "session"
) -> list[Recording]:
    """Each recording turned by a random rotation (:func:`rotation_within`):
    one per session (``per="session"``) or one per subject, shared by all of
    its sessions (``per="subject"``: the same device worn the same way)."""
    rng = np.random.default_rng(seed)
    by_subject: dict[int, np.ndarray] = {}
    out = []
    for rec in recordings:
        if per == "subject":
            if rec.subject not in by_subject:
                by_subject[rec.subject] = rotation_within(max_degrees, rng)
            rotation = by_subject[rec.subject]
        else:
            rotation = rotation_within(max_degrees, rng)
        out.append(rotate_recording(rec, rotation))
    return out


def sessions_as_shipped(recordings: Sequence[Recording], seed: int) -> tuple[list[Recording], list[Recording]]:
    """``(training, test)`` sessions of ``recordings`` turned as :func:`ship`
    turns them for the model shipped with ``seed``: the training subjects'
    sessions by rotations drawn from ``seed``, the test subjects' from
    ``seed + TEST_ROTATION_OFFSET`` (in the order given, the dataset's). What
    the decoder fit and the live scoring of the placement-free model replay."""
    test = set(UCI_TEST_SUBJECTS)
    train = rotated_recordings([r for r in recordings if r.subject not in test], seed)
    held = rotated_recordings([r for r in recordings if r.subject in test], seed + TEST_ROTATION_OFFSET)
    return train, held


def scale_motion(x: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Windows whose body acceleration and rotation rate are multiplied by
    ``factors`` (one per window); gravity (total − body) is kept."""
    f = np.asarray(factors, np.float32).reshape((-1,) + (1,) * (x.ndim - 1))
    out = x.copy()
    out[..., 0:6] *= f
    out[..., 6:9] = (x[..., 6:9] - x[..., 0:3]) + out[..., 0:3]
    return out


@dataclass(frozen=True)
class Recipe:
    """What a placement-free fit depends on besides its data and seed."""

    context: tuple[int, ...] = DEFAULT_CONTEXT
    C: float = DEFAULT_C
    amplitude: tuple[float, float] | None = DEFAULT_AMPLITUDE

    @property
    def label(self) -> str:
        ctx = "context" + "-".join(map(str, self.context)) if self.context else "single"
        amp = f"+amp{self.amplitude[0]}-{self.amplitude[1]}" if self.amplitude else ""
        return f"any-svm-C{self.C:g}-{ctx}{amp}"


def training_features(train: Windows, recipe: Recipe, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features, placement-free labels, subjects)`` of ``train`` (windows or
    stacks, already rotated), with the recipe's amplitude augmentation: the
    windows as they are plus one copy with the motion scaled."""
    x, y, groups = train.x, placement_free_labels(train.y), train.subjects
    feats = placement_free_features(x)
    if recipe.amplitude is None:
        return feats, y, groups
    low, high = recipe.amplitude
    rng = np.random.default_rng(seed)
    # one factor per window, the same for all windows of its stack (a person's vigour)
    factors = np.exp(rng.uniform(np.log(low), np.log(high), size=len(x)))
    scaled = placement_free_features(scale_motion(x, factors))
    return np.concatenate([feats, scaled]), np.concatenate([y, y]), np.concatenate([groups, groups])


def fit_placement_free(
    train: Windows, recipe: Recipe = Recipe(), seed: int = 0, verbose: int = 0
) -> tuple[keras.Model, dict]:
    """Fit the placement-free SVM on ``train`` (HAPT classes 0-5, merged here);
    returns the Keras model (input ``train.x.shape[1:]``, 4 probabilities in
    :data:`PLACEMENT_FREE` order) and a history dict."""
    from .svm import fit_feature_svm

    feats, y, groups = training_features(train, recipe, seed)
    return fit_feature_svm(
        feats,
        y,
        groups,
        train.x.shape[1:],
        C=recipe.C,
        seed=seed,
        layer=PlacementFreeFeatures(name="placement_free_features"),
        n_classes=N_PLACEMENT_FREE,
        name="placement_free_svm",
        verbose=verbose,
    )


def scores(predicted: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy on the placement-free classes and on moving vs still, from
    predicted placement-free classes and HAPT classes ``y``."""
    truth = placement_free_labels(y)
    predicted = np.asarray(predicted)
    return {
        "windows": int(len(truth)),
        "accuracy": float(np.mean(predicted == truth)) if len(truth) else float("nan"),
        "moving_vs_still": float(np.mean((predicted == STILL_CLASS) == (truth == STILL_CLASS)))
        if len(truth)
        else float("nan"),
    }


def _windows(recordings: Sequence[Recording], context: Sequence[int]) -> Windows:
    return labelled_windows(recordings, context_steps=tuple(context))


def select(recipes: Sequence[Recipe], seed: int = 0, out: Path | None = None) -> list[dict]:
    """Fit each recipe on the fit subjects (training minus validation), score
    it on the validation subjects, every session rotated at any angle."""
    from harstream.stream.data.recordings import load_dataset

    from .dataset import VALIDATION_SUBJECTS

    data = load_dataset()
    train_subjects = [s for s in data.subjects() if s not in UCI_TEST_SUBJECTS]
    fit_recs = rotated_recordings(data.of_subjects(set(train_subjects) - set(VALIDATION_SUBJECTS)), seed)
    val_recs = rotated_recordings(data.of_subjects(VALIDATION_SUBJECTS), seed + 1000)
    results = []
    for recipe in recipes:
        started = time.perf_counter()
        fit, val = _windows(fit_recs, recipe.context), _windows(val_recs, recipe.context)
        model, history = fit_placement_free(fit, recipe, seed)
        predicted = np.asarray(model.predict(val.x, batch_size=512, verbose=0)).argmax(1)
        row = {
            "recipe": recipe.label,
            **scores(predicted, val.y),
            "seconds": round(time.perf_counter() - started, 1),
            "support_vectors": history["support_vectors"][0],
        }
        print(json.dumps(row), flush=True)
        results.append(row)
    if out is not None:  # appended: one file holds every screen run
        out.parent.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = (
            json.loads(out.read_text())
            if out.is_file()
            else {
                "validation_subjects": list(VALIDATION_SUBJECTS),
                "rotation": "every fit and validation session turned by one uniform random rotation",
                "results": [],
            }
        )
        report["results"] += [{**row, "seed": seed} for row in results]
        out.write_text(json.dumps(report, indent=2) + "\n")
    return results


def ship(recipe: Recipe, out: Path, seed: int = 0, command: str | None = None) -> dict:
    """Fit ``recipe`` on all training subjects (each session rotated at
    random), score it once on the test subjects (each session rotated at
    random, any angle) and save the artifact ``out`` with its metadata."""
    from harstream.stream.data.recordings import load_dataset

    from .artifact import save_artifact
    from .training import without_optimizer

    data = load_dataset()
    train_subjects = [s for s in data.subjects() if s not in UCI_TEST_SUBJECTS]
    started = time.perf_counter()
    train_recs, test_recs = sessions_as_shipped(data.recordings, seed)
    train = _windows(train_recs, recipe.context)
    model, history = fit_placement_free(train, recipe, seed, verbose=1)
    seconds = time.perf_counter() - started
    test = _windows(test_recs, recipe.context)
    predicted = np.asarray(model.predict(test.x, batch_size=512, verbose=0)).argmax(1)
    result = scores(predicted, test.y)
    metadata = {
        "architecture": recipe.label,
        "placement": "any",
        "classes": list(PLACEMENT_FREE),
        "seed": seed,
        "context_steps": list(recipe.context),
        "data": {
            "source": data.source,
            "sha256": data.sha256,
            "windowed_by": "harstream causal pipeline",
            "rotation": "each session turned by one uniform random rotation before the pipeline",
            "amplitude": list(recipe.amplitude) if recipe.amplitude else None,
        },
        "split": {"test_subjects": list(UCI_TEST_SUBJECTS), "train_subjects": train_subjects},
        "windows": {"train": len(train), "test": len(test)},
        "test_accuracy": round(result["accuracy"], 6),
        "test_moving_vs_still": round(result["moving_vs_still"], 6),
        "test_rotation": "each test session turned by one uniform random rotation (any angle)",
        "support_vectors": history["support_vectors"][0],
        "training_seconds": round(seconds, 1),
        "trained_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if command:
        metadata["command"] = command
    save_artifact(without_optimizer(model), metadata, out)
    print(json.dumps({"out": str(out), **result}), flush=True)
    return result


def _recipe(text: str) -> Recipe:
    """``C=1,context=1-2-4,amplitude=0.7-1.5`` (``context=none``, ``amplitude=none``)."""
    recipe = Recipe()
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key == "C":
            recipe = replace(recipe, C=float(value))
        elif key == "context":
            recipe = replace(recipe, context=() if value == "none" else tuple(int(v) for v in value.split("-")))
        elif key == "amplitude":
            bounds = [] if value == "none" else [float(v) for v in value.split("-")]
            if len(bounds) not in (0, 2):
                raise argparse.ArgumentTypeError(f"recipe {text!r}: amplitude is low-high (0.7-1.5) or none")
            recipe = replace(recipe, amplitude=(bounds[0], bounds[1]) if bounds else None)
        else:
            raise argparse.ArgumentTypeError(f"recipe {text!r}: unknown key {key!r} (C, context, amplitude)")
    return recipe


def main(argv: Sequence[str] | None = None) -> int:
    from .artifact import ANY_MODEL

    parser = argparse.ArgumentParser(
        prog="python -m harstream.models.placement_free", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="step", required=True)
    s = sub.add_parser("select", help="score recipes on the validation subjects")
    s.add_argument("recipes", nargs="*", type=_recipe, help="e.g. C=1,context=1-2-4,amplitude=none")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, default=REPORTS / "placement_free_selection.json")
    p = sub.add_parser("ship", help="fit on all training subjects, test once, save the artifact")
    p.add_argument("--recipe", type=_recipe, default=Recipe())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ANY_MODEL)
    args = parser.parse_args(argv)
    if args.step == "select":
        select(args.recipes or [Recipe()], args.seed, args.out)
    else:
        ship(
            args.recipe,
            args.out,
            args.seed,
            command="python -m harstream.models.placement_free " + " ".join(sys.argv[1:] if argv is None else argv),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
