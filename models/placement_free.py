"""The placement-free model: what any device can know, however it is carried.

Classes :data:`~harstream.stream.core.activities.PLACEMENT_FREE`: WALKING,
WALKING_UPSTAIRS, WALKING_DOWNSTAIRS and STILL (HAPT's sitting, standing and
lying merged: telling them apart needs to know how the device sits on the
body, which only a calibration of that device gives —
:mod:`harstream.models.personal`).

The model is the feature SVM of :mod:`harstream.models.svm` on
:class:`~harstream.models.invariant.PlacementRobustFeatures` (the
orientation-invariant features plus gait features: step and stride
regularity, stride-against-step power, the dominant rotation axis, the
device's tilt swing), served as one ordinary ``.keras`` artifact (metadata
``"placement": "any"``, same window or context-stack input, the same four
probabilities). Training data:

- every training session as recorded at the waist, turned by its own random
  rotation (uniform over all orientations) *before* the pipeline, as if the
  phone had been worn another way round;
- every training session again as a device on a swinging thigh and on a
  swinging forearm (:func:`~harstream.models.augment.simulate_limb`: the
  rigid-body kinematics of a pendulum at the waist's own stride phase —
  frame rotation, lever accelerations, limb rotation rate — with a random
  limb and mounting per session). A thigh and an arm swing once per stride,
  and a waist-trained model reads that swing as stairs (on the validation
  subjects the previous model called 62 % of simulated-thigh and 37 % of
  simulated-wrist flat walking stairs, close to what was measured on real
  pockets and wrists). On a limb, flat walks are taught as WALKING and
  postures as STILL, and its stairs windows as WALKING too
  (``limb_stairs="walking"``). Left out (``"omit"``) they give the waist's
  stairs back some recall (validation 99.35 against 99.06 %) but a limb
  swinging beyond the training ranges then loses WALKING to STILL (wrist:
  12 against 49 % of flat walks WALKING on the validation subjects), so
  they stay. The model's
  stairs are trusted only for a gait like the one they were learned on (the
  waist); a stairs claim elsewhere needs other evidence (a barometer, the
  device's own calibration: the worker's stairs gate);
- optionally (``amplitude``), each window's motion scaled by a random factor
  (the previous recipe; not used now).

Beside the model, a :class:`~harstream.models.placement_estimate.PlacementEstimator`
(waist / thigh / wrist, from one moving window, numpy only) is fitted on the
same windows and stored in the metadata (``"placement_estimate"``): how
waist-like the gait is, for whoever decides whether a stairs claim stands.

The recipe before limbs is still available
(``features=free,limbs=none,amplitude=0.7-1.5``).

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

from .augment import (
    LIMBS,
    Fidgets,
    LimbMotion,
    rotate_samples,
    rotation_within,
    simulate_fidgets,
    simulate_limb,
    uniform_rotations,
)
from .dataset import Windows, labelled_windows
from .invariant import (
    PlacementFreeFeatures,
    PlacementRobustFeatures,
    placement_free_features,
    placement_robust_features,
)
from .placement_estimate import PLACEMENTS, PlacementEstimator, fit_placement_estimator

if TYPE_CHECKING:  # Keras loads slowly; the functions below import it when they run
    import keras

STILL_CLASS = PLACEMENT_FREE.index("STILL")
N_PLACEMENT_FREE = len(PLACEMENT_FREE)
DEFAULT_CONTEXT = (1, 2, 4)
DEFAULT_C = 3.0
#: Motion scaled by a log-uniform factor in this range (see the module doc).
DEFAULT_AMPLITUDE = None
#: Simulated placements added to the training data (see the module doc).
DEFAULT_LIMBS = LIMBS
#: Of a simulated limb's labelled windows, every so-many is used for training (see :func:`recording_features`).
LIMB_EVERY = 2
#: Feature sets: the orientation-invariant ones, and those plus the gait features.
FEATURE_SETS = {"free": PlacementFreeFeatures, "robust": PlacementRobustFeatures}
#: What a simulated limb's stairs windows teach the model (see :class:`Recipe`): the shipped
#: recipe teaches them as WALKING (chosen on the validation subjects; see the module doc).
LIMB_STAIRS = ("walking", "omit")
DEFAULT_LIMB_STAIRS = "walking"
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


def as_recipe_reads(recordings: Sequence[Recording], recipe: Recipe) -> list[Recording]:
    """``recordings`` as a device the recipe is for reads them: without a
    gyroscope (``recipe.gyro`` False) every rotation rate is 0, as the gateway
    serves a phone that sends its accelerometer alone."""
    if recipe.gyro:
        return list(recordings)
    out = []
    for rec in recordings:
        samples = np.array(rec.samples, copy=True)
        samples[:, 3:6] = 0.0
        out.append(replace(rec, samples=samples))
    return out


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
    limbs: tuple[str, ...] = DEFAULT_LIMBS
    features: str = "robust"
    #: a limb's stairs windows: taught as WALKING (``"walking"``), or left out of the model's
    #: training (``"omit"``: only the limb's flat walks and postures are taught; the placement
    #: estimate still learns from all its moving windows)
    limb_stairs: str = DEFAULT_LIMB_STAIRS
    #: False: taught without the gyroscope (every session's rotation rate read as 0, as the
    #: gateway serves a phone that has none), for devices that send the accelerometer alone
    gyro: bool = True

    @property
    def label(self) -> str:
        ctx = "context" + "-".join(map(str, self.context)) if self.context else "single"
        amp = f"+amp{self.amplitude[0]}-{self.amplitude[1]}" if self.amplitude else ""
        limbs = "+limbs-" + "-".join(self.limbs) if self.limbs else ""
        feats = "" if self.features == "free" else f"+{self.features}"
        stairs = "" if self.limb_stairs == "walking" else f"+limbstairs-{self.limb_stairs}"
        gyro = "" if self.gyro else "+nogyro"
        return f"any-svm-C{self.C:g}-{ctx}{amp}{limbs}{feats}{stairs}{gyro}"

    @staticmethod
    def from_label(label: str) -> Recipe:
        """The recipe whose :attr:`label` is ``label`` (a ValueError if none is)."""
        import re

        m = re.fullmatch(
            r"any-svm-C([0-9.eE+-]+)-(single|context[0-9-]+)(\+amp([0-9.]+)-([0-9.]+))?"
            r"(\+limbs-([a-z-]+))?(\+(robust))?(\+limbstairs-(omit))?(\+nogyro)?",
            label,
        )
        if m is None:
            raise ValueError(f"placement-free recipe label {label!r} is not one this module writes")
        context = () if m.group(2) == "single" else tuple(int(v) for v in m.group(2)[len("context") :].split("-"))
        amplitude = (float(m.group(4)), float(m.group(5))) if m.group(3) else None
        limbs = tuple(m.group(7).split("-")) if m.group(6) else ()
        recipe = Recipe(
            context,
            float(m.group(1)),
            amplitude,
            limbs,
            m.group(9) or "free",
            m.group(11) or "walking",
            not m.group(12),
        )
        if recipe.label != label:
            raise ValueError(f"placement-free recipe label {label!r} does not round-trip (got {recipe.label!r})")
        return recipe

    def feature_layer(self):
        """A fresh instance of the recipe's feature layer."""
        if self.features not in FEATURE_SETS:
            raise ValueError(f"recipe {self.label}: unknown feature set {self.features!r} ({sorted(FEATURE_SETS)})")
        return FEATURE_SETS[self.features](name=f"placement_{self.features}_features")

    def compute_features(self, x: np.ndarray) -> np.ndarray:
        """The recipe's features of windows or stacks, as float32."""
        return placement_robust_features(x) if self.features == "robust" else placement_free_features(x)


def training_features(train: Windows, recipe: Recipe, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features, placement-free labels, subjects)`` of ``train`` (windows or
    stacks, already rotated), with the recipe's amplitude augmentation: the
    windows as they are plus one copy with the motion scaled."""
    x, y, groups = train.x, placement_free_labels(train.y), train.subjects
    feats = recipe.compute_features(x)
    if recipe.amplitude is None:
        return feats, y, groups
    low, high = recipe.amplitude
    rng = np.random.default_rng(seed)
    # one factor per window, the same for all windows of its stack (a person's vigour)
    factors = np.exp(rng.uniform(np.log(low), np.log(high), size=len(x)))
    scaled = recipe.compute_features(scale_motion(x, factors))
    return np.concatenate([feats, scaled]), np.concatenate([y, y]), np.concatenate([groups, groups])


def limb_labels(y: np.ndarray) -> np.ndarray:
    """What the placement-free model is taught for a swinging-limb window of
    HAPT class ``y``: a walk on stairs is WALKING (a limb's gait is not the one
    stairs were learned from; stairs there need other evidence), postures STILL.

    >>> limb_labels(np.arange(6)).tolist()
    [0, 0, 0, 3, 3, 3]
    """
    merged = placement_free_labels(y)
    return np.where(merged < STILL_CLASS, 0, merged)


def limb_recordings(
    recordings: Iterable[Recording], kind: str, seed: int, unseen: bool = False, fidgets: bool = False
) -> list[Recording]:
    """Each HAPT waist recording (as recorded, not turned) as a device on a
    swinging ``kind`` limb would have measured it
    (:func:`~harstream.models.augment.simulate_limb`, a random limb per
    session), then turned by a uniform random rotation (how the pocket or
    strap holds it). Labels are the recording's own; names get ``@kind``.
    ``unseen``: limbs from beyond the training ranges (:meth:`LimbMotion.draw_unseen`).
    ``fidgets``: the limb also moves while its owner sits or stands
    (:func:`~harstream.models.augment.simulate_fidgets`, a random habit per
    session, drawn after the limbs: the limbs are the same as without)."""
    rng = np.random.default_rng([seed, LIMBS.index(kind) + 1] + ([1] if unseen else []))
    draw = LimbMotion.draw_unseen if unseen else LimbMotion.draw
    habits = np.random.default_rng([seed, LIMBS.index(kind) + 1, 2])
    out = []
    for rec in recordings:
        limb = draw(kind, rng)
        samples = simulate_limb(rec.samples, limb, rec.rate)
        if fidgets:
            samples = simulate_fidgets(samples, rec.labels, Fidgets.draw(kind, habits), habits, rec.rate)
        samples = rotate_samples(samples, uniform_rotations(1, rng)[0])
        name = f"{rec.name}@{kind}" + ("+fidgets" if fidgets else "")
        out.append(replace(rec, name=name, samples=samples))
    return out


def recording_features(
    recordings: Iterable[Recording], recipe: Recipe, every: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features, HAPT classes, subjects)`` of the labelled windows of
    ``recordings`` with the recipe's context, exactly the recipe's feature
    layer on :func:`~harstream.models.dataset.labelled_windows`' stacks, but
    each window's features computed once (a window is its successors' context
    too). ``every`` > 1 keeps every so-many labelled window of a recording
    (half-overlapping windows are much alike: the simulated limbs take every
    second one, which halves the SVM's cost with little loss)."""
    from harstream.stream.core.pipeline import cut_windows, preprocess_recording

    from .dataset import context_starts, segment_windows

    size = recipe.feature_layer().size()
    k = 1 + len(recipe.context)
    feats, ys, ss = [], [], []
    for rec in recordings:
        starts, classes = segment_windows(rec.labels)
        starts, classes = starts[::every], classes[::every]
        if len(starts) == 0:
            continue
        grid = context_starts(starts, recipe.context) if recipe.context else starts[:, None]
        unique, where = np.unique(grid, return_inverse=True)
        processed = preprocess_recording(rec.samples.astype(np.float32))
        per_window = recipe.compute_features(cut_windows(processed, unique))
        feats.append(per_window[where.reshape(grid.shape)].reshape(len(starts), k * size))
        ys.append(classes)
        ss.append(np.full(len(classes), rec.subject, dtype=np.int64))
    if not feats:
        return np.empty((0, k * size), np.float32), np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(feats), np.concatenate(ys), np.concatenate(ss)


def fit_placement_free(
    train: Windows,
    recipe: Recipe = Recipe(),
    seed: int = 0,
    verbose: int = 0,
    limbs: dict[str, Windows] | None = None,
) -> tuple[keras.Model, dict]:
    """Fit the placement-free SVM on ``train`` (HAPT classes 0-5, merged here)
    and, when given, simulated ``limbs`` windows by kind (their gait taught as
    WALKING: :func:`limb_labels`); returns the Keras model (input
    ``train.x.shape[1:]``, 4 probabilities in :data:`PLACEMENT_FREE` order)
    and a history dict. With limbs, ``history["placement_estimate"]`` is the
    fitted :class:`~harstream.models.placement_estimate.PlacementEstimator`
    (moving windows: waist against each limb)."""
    waist = training_features(train, recipe, seed)
    limb_parts = {kind: (recipe.compute_features(w.x), w.y, w.subjects) for kind, w in (limbs or {}).items()}
    return fit_features(waist, limb_parts, recipe, seed, train.x.shape[1:], verbose)


def fit_features(
    waist: tuple[np.ndarray, np.ndarray, np.ndarray],
    limbs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    recipe: Recipe,
    seed: int,
    input_shape: tuple[int, ...],
    verbose: int = 0,
) -> tuple[keras.Model, dict]:
    """The fit itself, on features: ``waist`` is ``(features, placement-free
    labels, subjects)``; ``limbs`` by kind ``(features, HAPT classes,
    subjects)`` (relabelled by :func:`limb_labels`)."""
    from .svm import fit_feature_svm

    parts = [waist]
    where = [np.full(len(waist[1]), PLACEMENTS.index("waist"))]
    for kind, (feats, y, groups) in limbs.items():
        parts.append((feats, limb_labels(y), groups))
        where.append(np.full(len(y), PLACEMENTS.index(kind)))
    all_feats = np.concatenate([p[0] for p in parts])
    all_y = np.concatenate([p[1] for p in parts])
    all_groups = np.concatenate([p[2] for p in parts])
    taught = np.ones(len(all_y), bool)  # which windows the model learns from
    if recipe.limb_stairs == "omit":
        stairs = [np.isin(placement_free_labels(y), (1, 2)) for _, y, _ in limbs.values()]
        taught = np.concatenate([taught[: len(waist[1])], *[~s for s in stairs]])
    model, history = fit_feature_svm(
        all_feats[taught],
        all_y[taught],
        all_groups[taught],
        tuple(input_shape),
        C=recipe.C,
        seed=seed,
        layer=recipe.feature_layer(),
        n_classes=N_PLACEMENT_FREE,
        name="placement_free_svm",
        verbose=verbose,
    )
    history["train_windows"] = int(taught.sum())
    if limbs and recipe.features == "robust":
        placement = np.concatenate(where)
        # the estimator sees the current window only (the first of a stack), moving windows only
        current = all_feats[:, : PlacementRobustFeatures.size()]
        moving = all_y != STILL_CLASS
        history["placement_estimate"] = fit_placement_estimator(current[moving], placement[moving])
    return model, history


def fit_on_sessions(
    waist: Sequence[Recording], recipe: Recipe, seed: int, verbose: int = 0
) -> tuple[keras.Model, dict]:
    """:func:`fit_placement_free` on the training sessions ``waist`` *as
    recorded* (not turned): the waist windows come from the sessions turned
    at random (:func:`rotated_recordings` with ``seed``), the limb windows
    from :func:`limb_recordings` of the recipe's limbs."""
    from harstream.stream.core.pipeline import WINDOW, WINDOW_CHANNELS

    turned = as_recipe_reads(rotated_recordings(waist, seed), recipe)
    input_shape = ((1 + len(recipe.context),) if recipe.context else ()) + (WINDOW, WINDOW_CHANNELS)
    if recipe.amplitude is None:
        feats, y, groups = recording_features(turned, recipe)
        waist_part = (feats, placement_free_labels(y), groups)
    else:  # the motion scaling works on windows: take the slow path
        waist_part = training_features(_windows(turned, recipe.context), recipe, seed)
    limbs = {
        kind: recording_features(as_recipe_reads(limb_recordings(waist, kind, seed), recipe), recipe, every=LIMB_EVERY)
        for kind in recipe.limbs
    }
    return fit_features(waist_part, limbs, recipe, seed, input_shape, verbose)


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


def placement_scores(predicted: np.ndarray, y: np.ndarray, placement: str) -> dict:
    """What a user sees of the placement-free classes at one placement, from
    predicted placement-free classes and HAPT classes ``y``:

    - ``own_classes``: at the waist, all four classes; on a limb, flat walking
      → WALKING and postures → STILL (a limb's stairs windows are left out:
      without other evidence the model should call them WALKING, which is not
      the truth either — they count in ``moving_vs_still`` and
      ``stairs_as_walking``);
    - ``moving_vs_still``; ``walking_as_walking`` (flat walking shown as
      WALKING); ``stairs_false_alarm`` (flat walking shown as up- or
      downstairs); ``stairs_as_walking`` (stairs shown as WALKING)."""
    truth = placement_free_labels(y)
    predicted = np.asarray(predicted)
    walking = truth == 0
    stairs = (truth == 1) | (truth == 2)
    own = ~stairs if placement != "waist" else np.ones(len(truth), bool)

    def rate(mask: np.ndarray, hit: np.ndarray) -> float:
        return float(np.mean(hit[mask])) if mask.any() else float("nan")

    return {
        "placement": placement,
        "windows": int(len(truth)),
        "own_classes": rate(own, predicted == truth),
        "moving_vs_still": rate(np.ones(len(truth), bool), (predicted == STILL_CLASS) == (truth == STILL_CLASS)),
        "walking_as_walking": rate(walking, predicted == 0),
        "stairs_false_alarm": rate(walking, (predicted == 1) | (predicted == 2)),
        "stairs_as_walking": rate(stairs, predicted == 0),
    }


def placement_sets(recordings: Sequence[Recording], seed: int, unseen: bool = False) -> dict[str, list[Recording]]:
    """The held-out ``recordings`` as worn at each placement: the waist turned
    at random, and simulated thigh and wrist (:func:`limb_recordings`); with
    ``unseen`` also thighs and wrists from beyond the training ranges
    (``thigh_unseen``, ``wrist_unseen``)."""
    sets = {
        "waist": rotated_recordings(recordings, seed),
        **{kind: limb_recordings(recordings, kind, seed) for kind in LIMBS},
    }
    if unseen:
        sets.update({f"{kind}_unseen": limb_recordings(recordings, kind, seed, unseen=True) for kind in LIMBS})
    return sets


def select(recipes: Sequence[Recipe], seed: int = 0, out: Path | None = None, unseen: bool = True) -> list[dict]:
    """Fit each recipe on the fit subjects (training minus validation), score
    it on the validation subjects as worn at the waist (turned at any angle)
    and as simulated thighs and wrists, drawn like the training limbs and
    (``unseen``) from beyond their ranges."""
    from harstream.stream.data.recordings import load_dataset

    from .dataset import VALIDATION_SUBJECTS

    data = load_dataset()
    train_subjects = [s for s in data.subjects() if s not in UCI_TEST_SUBJECTS]
    fit_recs = data.of_subjects(set(train_subjects) - set(VALIDATION_SUBJECTS))
    val_sets = placement_sets(data.of_subjects(VALIDATION_SUBJECTS), seed + TEST_ROTATION_OFFSET, unseen=unseen)
    results = []
    for recipe in recipes:
        started = time.perf_counter()
        model, history = fit_on_sessions(fit_recs, recipe, seed)
        row: dict[str, Any] = {"recipe": recipe.label, "seconds": 0.0}
        for placement, recs in val_sets.items():
            val = _windows(as_recipe_reads(recs, recipe), recipe.context)  # read as the recipe's devices read
            predicted = np.asarray(model.predict(val.x, batch_size=512, verbose=0)).argmax(1)
            row[placement] = {
                k: v for k, v in placement_scores(predicted, val.y, placement).items() if k != "placement"
            }
        row["seconds"] = round(time.perf_counter() - started, 1)
        row["support_vectors"] = history["support_vectors"][0]
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
        report["placements"] = "waist: turned at random; thigh, wrist: simulated swinging limbs (augment.simulate_limb)"
        report["results"] += [{**row, "seed": seed} for row in results]
        out.write_text(json.dumps(report, indent=2) + "\n")
    return results


def ship(recipe: Recipe, out: Path, seed: int = 0, command: str | None = None) -> dict:
    """Fit ``recipe`` on all training subjects (each session rotated at
    random, plus the recipe's simulated limbs), score it once on the test
    subjects (each session rotated at random, any angle) and save the
    artifact ``out`` with its metadata (and the placement estimate)."""
    from harstream.stream.data.recordings import load_dataset

    from .artifact import save_artifact
    from .training import without_optimizer

    data = load_dataset()
    train_subjects = [s for s in data.subjects() if s not in UCI_TEST_SUBJECTS]
    started = time.perf_counter()
    test_recs = as_recipe_reads(sessions_as_shipped(data.recordings, seed)[1], recipe)
    train_originals = [r for r in data.recordings if r.subject not in set(UCI_TEST_SUBJECTS)]
    model, history = fit_on_sessions(train_originals, recipe, seed, verbose=1)
    seconds = time.perf_counter() - started
    test = _windows(test_recs, recipe.context)
    predicted = np.asarray(model.predict(test.x, batch_size=512, verbose=0)).argmax(1)
    result = scores(predicted, test.y)
    estimator: PlacementEstimator | None = history.get("placement_estimate")
    metadata = {
        "architecture": recipe.label,
        "placement": "any",
        "gyroscope": recipe.gyro,
        "classes": list(PLACEMENT_FREE),
        "seed": seed,
        "context_steps": list(recipe.context),
        "data": {
            "source": data.source,
            "sha256": data.sha256,
            "windowed_by": "harstream causal pipeline",
            "rotation": "each session turned by one uniform random rotation before the pipeline",
            "amplitude": list(recipe.amplitude) if recipe.amplitude else None,
            "limbs": list(recipe.limbs),
            "limb_simulation": "each training session also as a device on a swinging thigh and forearm "
            "(augment.simulate_limb: pendulum at the waist's stride phase, lever accelerations, random limb and "
            "rotation per session); "
            + (
                "their walks and stairs taught as WALKING, postures as STILL"
                if recipe.limb_stairs == "walking"
                else "their flat walks taught as WALKING, postures as STILL, their stairs left out of the model's "
                "training (the placement estimate learns from all their moving windows)"
            ),
        },
        "split": {"test_subjects": list(UCI_TEST_SUBJECTS), "train_subjects": train_subjects},
        "windows": {"train": int(history.get("train_windows", 0)) or None, "test": len(test)},
        "test_accuracy": round(result["accuracy"], 6),
        "test_moving_vs_still": round(result["moving_vs_still"], 6),
        "test_rotation": "each test session turned by one uniform random rotation (any angle)",
        "support_vectors": history["support_vectors"][0],
        "training_seconds": round(seconds, 1),
        "trained_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if estimator is not None:
        metadata["placement_estimate"] = estimator.to_json()
    if command:
        metadata["command"] = command
    save_artifact(without_optimizer(model), metadata, out)
    print(json.dumps({"out": str(out), **result}), flush=True)
    return result


def _recipe(text: str) -> Recipe:
    """``C=1,context=1-2-4,amplitude=0.7-1.5,limbs=thigh-wrist,features=robust,limb_stairs=omit,gyro=no``
    (``context=none``, ``amplitude=none``, ``limbs=none``, ``features=free``, ``limb_stairs=walking``,
    ``gyro=yes``)."""
    recipe = Recipe()
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key == "C":
            recipe = replace(recipe, C=float(value))
        elif key == "context":
            recipe = replace(recipe, context=() if value == "none" else tuple(int(v) for v in value.split("-")))
        elif key == "limbs":
            limbs = () if value == "none" else tuple(value.split("-"))
            if set(limbs) - set(LIMBS):
                raise argparse.ArgumentTypeError(f"recipe {text!r}: limbs are {'-'.join(LIMBS)} or none")
            recipe = replace(recipe, limbs=limbs)
        elif key == "limb_stairs":
            if value not in LIMB_STAIRS:
                raise argparse.ArgumentTypeError(f"recipe {text!r}: limb_stairs is {' or '.join(LIMB_STAIRS)}")
            recipe = replace(recipe, limb_stairs=value)
        elif key == "features":
            if value not in FEATURE_SETS:
                raise argparse.ArgumentTypeError(f"recipe {text!r}: features are {' or '.join(FEATURE_SETS)}")
            recipe = replace(recipe, features=value)
        elif key == "gyro":
            if value not in ("yes", "no"):
                raise argparse.ArgumentTypeError(f"recipe {text!r}: gyro is yes or no")
            recipe = replace(recipe, gyro=value == "yes")
        elif key == "amplitude":
            bounds = [] if value == "none" else [float(v) for v in value.split("-")]
            if len(bounds) not in (0, 2):
                raise argparse.ArgumentTypeError(f"recipe {text!r}: amplitude is low-high (0.7-1.5) or none")
            recipe = replace(recipe, amplitude=(bounds[0], bounds[1]) if bounds else None)
        else:
            raise argparse.ArgumentTypeError(
                f"recipe {text!r}: unknown key {key!r} (C, context, amplitude, limbs, features, limb_stairs, gyro)"
            )
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
