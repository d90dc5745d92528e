"""Choosing the live display decoder's knobs of a shipped model (a study: the grid search).

Honest protocol, as for the models (docs/evaluation.md):

- the **transition matrix** is counted from the activity sequences of the
  TRAINING subjects' sessions (:func:`harstream.models.decoder_fit.fit_transitions`);
- the **emission model** is the mean of out-of-fold probabilities (models
  of the shipped recipe that did not see the subject) of the training
  subjects' windows in each state;
- the decoder's **tuning knobs** (emission sharpness, transition-state
  evidence, stickiness, switching margin) are chosen on the VALIDATION
  subjects' sessions, replayed through a model of the shipped recipe trained
  on the other 16 training subjects (the shipped model has seen the
  validation subjects, so its probabilities on them would flatter any
  decoder);
- the test subjects are not read here;
  :mod:`harstream.models.studies.live_accuracy` scores them once, with the
  shipped model.

The same machinery serves every model: a :class:`Target` says what its
classes are, how its recipe is fitted and what its sessions look like in
training (the placement-free model's are turned by random rotations).

The shipped waist decoder's knobs were chosen afterwards for the now label
(accuracy at the delay goal) by :mod:`harstream.models.studies.transition_direction`;
``--write`` here puts back the older rule's choice (fewest changes), so run
that study's ``--write`` after it.

Run (writes the ``decoder`` entry of the model's metadata)::

    python -m harstream.models.studies.decoder_tuning [--target waist|any] [--model PATH] [--write] [--reports DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harstream.models.decoder_fit import (
    LabelStatistics,
    fit_transitions,
    label_probability_sums,
    label_states,
    params_for,
)
from harstream.models.reports import REPORTS, add_reports_option
from harstream.stream.core.decoder import DecoderParams
from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, Recording

# ------------------------------------------------------------------ targets


@dataclass(frozen=True)
class Target:
    """A model whose decoder is fitted: its classes and context, how its
    recipe is fitted on training sessions (``fit(recordings) -> model``,
    the model maps windows to probabilities), and its training sessions as
    that fit sees them (``sessions()``: all training subjects' sessions,
    e.g. rotated)."""

    name: str  # also names the caches: docs/reports/<cache_prefix>_*.npz
    classes: tuple[str, ...]
    context: tuple[int, ...]
    fit: Callable[[Sequence[Recording]], Any]
    sessions: Callable[[], list[Recording]]
    cache_prefix: str

    def predict(self, model: Any, rec: Recording) -> np.ndarray:
        """Per-window probabilities of one session, windowed as the worker does."""
        from harstream.models.live_scoring import session_windows

        x = session_windows(rec.samples, context_steps=self.context)
        if len(x) == 0:
            return np.empty((0, len(self.classes)))
        return predict_in_batches(model, x).astype(np.float64)


def waist_target(model: Path | None = None) -> Target:
    """The HAPT (waist) model: the shipped recipe on the sessions as recorded."""
    from harstream.models.artifact import load_artifact
    from harstream.models.dataset import labelled_windows
    from harstream.models.recipe import Recipe, fit
    from harstream.stream.data.recordings import load_embedded

    artifact = load_artifact(model)
    recipe = Recipe.from_json(artifact.metadata["recipe"])

    def fit_model(recs: Sequence[Recording]) -> Any:
        return fit(recipe, labelled_windows(recs, context_steps=recipe.context), seed=0)[0]

    def sessions() -> list[Recording]:
        return [r for r in load_embedded().recordings if r.subject not in set(UCI_TEST_SUBJECTS)]

    return Target("waist", tuple(artifact.classes), tuple(recipe.context), fit_model, sessions, "decoder")


def any_target(model: Path | None = None) -> Target:
    """The placement-free model: its recipe (read back from the artifact's
    architecture label) on the training sessions turned by the rotations its
    own training gave them
    (:func:`~harstream.models.placement_free.sessions_as_shipped`), read
    as its device reads them (no rotation rate for a recipe taught without
    the gyroscope); each refit also gets its simulated limbs, from the same
    sessions as recorded."""
    from harstream.models.artifact import ANY_MODEL, ArtifactError, load_artifact
    from harstream.models.placement_free import Recipe, as_recipe_reads, fit_on_sessions, sessions_as_shipped
    from harstream.stream.data.recordings import load_embedded

    artifact = load_artifact(model or ANY_MODEL)
    meta = artifact.metadata
    try:
        recipe = Recipe.from_label(str(meta.get("architecture")))
    except ValueError as exc:
        raise ArtifactError(f"{artifact.path}: {exc}; the decoder fit cannot refit it") from None
    if tuple(recipe.context) != tuple(artifact.context_steps):
        raise ArtifactError(
            f"{artifact.path}: architecture {recipe.label!r} has context {recipe.context}, "
            f"the artifact {tuple(artifact.context_steps)}"
        )
    seed = int(meta.get("seed", 0))
    recorded: dict[str, Recording] = {}

    def fit_model(recs: Sequence[Recording]) -> Any:
        # the sessions come turned; the fit turns them itself (same seed) and simulates limbs from them as recorded
        return fit_on_sessions([recorded[r.name] for r in recs], recipe, seed)[0]

    def sessions() -> list[Recording]:
        recordings = load_embedded().recordings
        recorded.update({r.name: r for r in recordings})
        # as the device the recipe is for reads them: one taught without the gyroscope is scored without it
        return as_recipe_reads(sessions_as_shipped(recordings, seed)[0], recipe)

    return Target("any", tuple(artifact.classes), tuple(recipe.context), fit_model, sessions, "decoder_any")


TARGETS = {"waist": waist_target, "any": any_target}


def shipped_decoder() -> tuple[dict, dict, dict]:
    """The shipped waist model's ``decoder`` entry, the knobs its now label was
    built with (the now label's own where the entry has them) and its posture
    lock (``lock_motion``, ``lock_settle``, ``moved_switch_at``)."""
    from harstream.models.artifact import DEFAULT_MODEL, metadata_path

    shipped = json.loads(metadata_path(DEFAULT_MODEL).read_text())["decoder"]
    chosen = shipped.get("chosen", {})
    knobs = dict((chosen.get("now_label") or chosen)["knobs"])
    lock = {k: shipped[k] for k in ("lock_motion", "lock_settle", "moved_switch_at")}
    return shipped, knobs, lock


# --------------------------------------------------------------- probabilities


def predict_in_batches(model: Callable[[np.ndarray], Any], x: np.ndarray) -> np.ndarray:
    """``model``'s probabilities for windows ``x`` (at least one), 512 windows a call."""
    return np.concatenate([np.asarray(model(x[i : i + 512])) for i in range(0, len(x), 512)])


def cached(path: Path, sessions: Sequence[Recording], compute) -> list[tuple[Recording, np.ndarray]]:
    """``compute()`` once; later calls read ``path`` if it holds the same sessions."""
    names = [r.name for r in sessions]
    if path.is_file():
        with np.load(path) as z:
            if list(z["names"]) == names:
                return [(r, z[f"p{i}"]) for i, r in enumerate(sessions)]
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, names=np.array(names), **{f"p{i}": p for i, (_, p) in enumerate(result)})
    return result


def training_sessions(target: Target, with_validation: bool) -> list[Recording]:
    """The target's training sessions (as its fit sees them), with or without the validation subjects'."""
    from harstream.models.dataset import VALIDATION_SUBJECTS

    held = set() if with_validation else set(VALIDATION_SUBJECTS)
    return [r for r in target.sessions() if r.subject not in held]


def validation_probabilities(
    target: Target, progress: bool = True, reports: Path = REPORTS
) -> list[tuple[Recording, np.ndarray]]:
    """Per-window probabilities of each validation session from the target's
    recipe trained on the fit subjects only (cached in ``reports``)."""
    from harstream.models.dataset import VALIDATION_SUBJECTS

    sessions = [r for r in target.sessions() if r.subject in set(VALIDATION_SUBJECTS)]

    def compute() -> list[tuple[Recording, np.ndarray]]:
        start = time.perf_counter()
        model = target.fit(training_sessions(target, with_validation=False))
        if progress:
            print(
                f"decoder_tuning: {target.name} model fitted on the fit subjects ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        return [(rec, target.predict(model, rec)) for rec in sessions]

    return cached(reports / f"{target.cache_prefix}_validation_probs.npz", sessions, compute)


def out_of_fold_probabilities(
    target: Target, recordings: Sequence[Recording], folds: int, progress: bool = True
) -> list[tuple[Recording, np.ndarray]]:
    """Per-window probabilities of every session from a model of the
    target's recipe that did not see its subject: subjects split into
    ``folds`` groups, each predicted by a model fitted on the others. What
    the model says on people it has not met, which is what the emission
    model must describe (its outputs on its own training windows are near
    perfect)."""
    subjects = sorted({r.subject for r in recordings})
    groups = [subjects[k::folds] for k in range(folds)]
    out: dict[str, np.ndarray] = {}
    for k, held in enumerate(groups):
        start = time.perf_counter()
        model = target.fit([r for r in recordings if r.subject not in held])
        for rec in (r for r in recordings if r.subject in held):
            out[rec.name] = target.predict(model, rec)
        if progress:
            print(
                f"decoder_tuning: {target.name} fold {k + 1}/{folds} (subjects {held}) "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
    return [(r, out[r.name]) for r in recordings]


def oof_fit_subjects(target: Target, reports: Path = REPORTS) -> list[tuple[Recording, np.ndarray]]:
    """Out-of-fold probabilities of the 16 fit subjects (4 folds): for tuning."""
    recs = training_sessions(target, with_validation=False)
    return cached(
        reports / f"{target.cache_prefix}_oof_fit.npz", recs, lambda: out_of_fold_probabilities(target, recs, 4)
    )


def oof_training_subjects(target: Target, reports: Path = REPORTS) -> list[tuple[Recording, np.ndarray]]:
    """Out-of-fold probabilities of all 21 training subjects (7 folds): for the shipped parameters."""
    recs = training_sessions(target, with_validation=True)
    return cached(
        reports / f"{target.cache_prefix}_oof_train.npz", recs, lambda: out_of_fold_probabilities(target, recs, 7)
    )


def label_statistics(target: Target, with_validation: bool, reports: Path = REPORTS) -> LabelStatistics:
    """Transition counts and out-of-fold emission sums of the target's
    training subjects (without the validation subjects': for tuning)."""
    sessions = oof_training_subjects(target, reports) if with_validation else oof_fit_subjects(target, reports)
    return LabelStatistics(
        fit_transitions([r for r, _ in sessions]),
        target.classes,
        label_probability_sums(sessions, len(target.classes)),
    )


# ------------------------------------------------------------------ tuning


#: The grid the knobs are chosen from on the validation subjects (the joint
#: tuning for the three goals: see docs/report.md for its Pareto front).
GRID = {
    "pseudocount": (0.01, 0.1, 1.0),
    "sharpness": (1.0, 2.0, 3.0, 4.0),
    "floor": (0.01,),
    "transition_evidence": (0.1, 0.5, 1.0),
    "switch_at": (0.5, 0.6, 0.7, 0.8, 0.9),
}
#: The display goals: per-sample accuracy, median delay (s), changes per true change.
GOALS = {"sample_accuracy": 0.93, "delay_median_s": 1.0, "changes_per_true_change": 1.5}


def grid_for(classes: Sequence[str]) -> dict:
    """:data:`GRID`, without the transition-state knob for a model that has no transition states."""
    if label_states(classes)[0]:
        return GRID
    return {**GRID, "transition_evidence": (1.0,)}


def score_params(params: DecoderParams, sessions: Sequence[tuple[Recording, np.ndarray]]) -> dict:
    """The live figures of the decoder display over sessions with known window probabilities."""
    from harstream.models.live_scoring import replay_probabilities, score_replays
    from harstream.stream.core.decoder import Decoder

    replays = [
        replay_probabilities(rec, probs, {"decoder": lambda: Decoder(params)}, classes=params.classes)
        for rec, probs in sessions
    ]
    return score_replays(replays, events=False)["decoder"]


def choose(results: list[tuple[dict, dict]], raw: dict) -> tuple[dict, dict]:
    """The knobs to ship, decided on the validation subjects: among the
    settings that meet the delay goal and are at least as accurate per
    sample as the raw label (``raw``, scored the same way), the one with the
    fewest display changes per true change (ties: accuracy). If none
    qualifies, the most accurate."""
    ok = [
        kr
        for kr in results
        if kr[1]["sample_accuracy"] >= raw["sample_accuracy"] and kr[1]["delay_median_s"] <= GOALS["delay_median_s"]
    ]
    if not ok:
        return max(results, key=lambda kr: kr[1]["sample_accuracy"])
    return min(ok, key=lambda kr: (round(kr[1]["changes_per_true_change"], 2), -kr[1]["sample_accuracy"]))


def pareto(results: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
    """Settings no other setting beats on all three goals at once (more
    accurate, no slower, no more changes), most accurate first."""
    keys = ("sample_accuracy", "delay_median_s", "changes_per_true_change")

    def figures(r: dict) -> tuple[float, float, float]:
        return (round(r[keys[0]], 4), round(r[keys[1]], 2), round(r[keys[2]], 2))

    def beats(a: dict, b: dict) -> bool:
        fa, fb = figures(a), figures(b)
        return fa != fb and fa[0] >= fb[0] and fa[1] <= fb[1] and fa[2] <= fb[2]

    front = [kr for kr in results if not any(beats(other[1], kr[1]) for other in results)]
    return sorted(front, key=lambda kr: -kr[1]["sample_accuracy"])


def tune(
    stats: LabelStatistics,
    classes: Sequence[str],
    validation: Sequence[tuple[Recording, np.ndarray]],
    grid: dict = GRID,
    progress: bool = True,
) -> list[tuple[dict, dict]]:
    """Score every knob setting of ``grid`` on the validation sessions."""
    results = []
    for values in itertools.product(*grid.values()):
        knobs = dict(zip(grid, values))
        r = score_params(params_for(stats, classes, knobs), validation)
        r = {k: v for k, v in r.items() if k != "delays_s"}
        results.append((knobs, r))
        if progress:
            print(
                f"{knobs}: {100 * r['sample_accuracy']:.2f} % delay {r['delay_median_s']:.2f} s "
                f"changes/true {r['changes_per_true_change']:.2f}",
                flush=True,
            )
    return results


def fit_decoder(
    target: Target, progress: bool = True, reports: Path = REPORTS
) -> tuple[DecoderParams, dict, LabelStatistics]:
    """Choose the knobs on the validation subjects (transitions and emission
    fitted on the 16 fit subjects), then refit transitions and emission on
    all 21 training subjects with those knobs. Returns the parameters to
    ship, a record of how they were chosen, and the label statistics they
    were built from."""
    from harstream.models.live_scoring import replay_probabilities, score_replays
    from harstream.stream.core.smoothing import Smoother

    classes = target.classes
    tuning_stats = label_statistics(target, with_validation=False, reports=reports)
    validation = validation_probabilities(target, progress, reports)
    raw = score_replays(
        [replay_probabilities(r, p, {"raw": lambda: Smoother(classes, 1, 0.5)}, classes=classes) for r, p in validation]
    )["raw"]
    grid = grid_for(classes)
    results = tune(tuning_stats, classes, validation, grid, progress=progress)
    knobs, chosen = choose(results, raw)
    stats = label_statistics(target, with_validation=True, reports=reports)
    params = params_for(stats, classes, knobs)
    keep = ("sample_accuracy", "delay_median_s", "changes_per_true_change")
    rotated = " (each session turned by the rotation the model's training gave it)" if target.name == "any" else ""
    record = {
        "knobs": knobs,
        "validation": {k: round(float(chosen[k]), 4) for k in keep},
        "validation_raw": {k: round(float(raw[k]), 4) for k in keep},
        "grid": {k: list(v) for k, v in grid.items()},
        "rule": "meets the median-delay goal (<= 1.0 s) and is no less accurate than the raw label on the "
        "validation subjects; of those, the fewest display changes per true change",
        "pareto": [{**k, **{m: round(float(v), 4) for m, v in r.items() if m in keep}} for k, r in pareto(results)],
        "fitted_on": "transitions: training subjects' label sequences; emission: out-of-fold probabilities "
        f"of the training subjects (7 folds by subject){rotated}; knobs: chosen on validation subjects "
        + ", ".join(map(str, _validation_subjects())),
    }
    return params, record, stats


def _validation_subjects() -> tuple[int, ...]:
    from harstream.models.dataset import VALIDATION_SUBJECTS

    return VALIDATION_SUBJECTS


def write_decoder(
    params: DecoderParams, record: dict, metadata_file: Path, stats: LabelStatistics | None = None
) -> Path:
    """Put the ``decoder`` entry into a model's metadata JSON (nothing else
    changes): the parameters, how they were chosen, and the label statistics
    they came from."""
    meta = json.loads(metadata_file.read_text())
    entry = {**params.to_json(), "chosen": record}
    if stats is not None:
        entry["label_statistics"] = stats.to_json()
    meta["decoder"] = entry
    metadata_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return metadata_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="fit the live display decoder on training subjects, choose on validation"
    )
    parser.add_argument(
        "--target",
        choices=sorted(TARGETS),
        default="waist",
        help="which model's recipe: waist (HAPT) or any (placement-free)",
    )
    parser.add_argument(
        "--model", type=Path, default=None, help="model artifact whose metadata gets the entry (default: shipped)"
    )
    parser.add_argument("--write", action="store_true", help="write the decoder entry into the model's metadata")
    add_reports_option(parser)
    args = parser.parse_args(argv)
    from harstream.models.artifact import ANY_MODEL, DEFAULT_MODEL, metadata_path

    target = TARGETS[args.target](args.model)
    params, record, stats = fit_decoder(target, reports=args.reports)
    front = record.pop("pareto")  # the study, kept beside the report rather than in the artifact
    pareto_file = args.reports / (
        "decoder_pareto.json" if args.target == "waist" else f"decoder_{args.target}_pareto.json"
    )
    pareto_file.write_text(json.dumps(front, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    print("validation Pareto front written to", pareto_file)
    if args.write:
        model = args.model or (ANY_MODEL if args.target == "any" else DEFAULT_MODEL)
        print("wrote", write_decoder(params, record, metadata_path(model), stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
