"""Fitting the live display decoder (:mod:`harstream.stream.core.decoder`) of a model.

Honest protocol, as for the models (docs/evaluation.md):

- the **transition matrix** is counted from the activity sequences (labels
  1-12, postural transitions included) of the TRAINING subjects' sessions,
  at the worker's window step, then mapped onto the model's classes
  (:func:`label_states`: a placement-free model's STILL gathers sitting,
  standing, lying and the transitions between them);
- the **emission model** is the mean of out-of-fold probabilities (models
  of the shipped recipe that did not see the subject) of the training
  subjects' windows in each state;
- the decoder's **tuning knobs** (emission sharpness, transition-state
  evidence, stickiness, switching margin) are chosen on the VALIDATION
  subjects' sessions, replayed through a model of the shipped recipe trained
  on the other 16 training subjects (the shipped model has seen the
  validation subjects, so its probabilities on them would flatter any
  decoder);
- the test subjects are not read here; :mod:`harstream.models.live_accuracy`
  scores them once, with the shipped model.

The same machinery serves every model: a :class:`Target` says what its
classes are, how its recipe is fitted and what its sessions look like in
training (the placement-free model's are turned by random rotations). The
per-label statistics (:class:`LabelStatistics`) are stored beside the
parameters, so a personal model's decoder is derived at calibration time
without reading the dataset (:func:`harstream.models.personal.personal_decoder`).

Run (writes the ``decoder`` entry of the model's metadata)::

    python -m harstream.models.decoder_fit [--target waist|any] [--model PATH] [--write]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harstream.stream.core.activities import ACTIVITIES, TRANSITIONS, class_for
from harstream.stream.core.decoder import TRANSITION_ENDS, DecoderParams
from harstream.stream.core.pipeline import STEP, WINDOW
from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, Recording

REPORTS = Path(__file__).resolve().parent.parent / "docs" / "reports"
PARETO = REPORTS / "decoder_pareto.json"
CACHE = REPORTS / "decoder_validation_probs.npz"
#: HAPT labels 1-12: the six activities, then the six postural transitions.
N_LABELS = len(ACTIVITIES) + len(TRANSITIONS)
#: Windows of uniform output added to every state's emission (none is ruled out by an unseen output).
EMISSION_SMOOTHING = 0.5


def window_label_sequence(labels: np.ndarray) -> np.ndarray:
    """HAPT label at each window's last sample (the worker's window grid):
    the state sequence the decoder's transition matrix is counted on.

    >>> window_label_sequence(np.array([1] * 200 + [7] * 100)).tolist()
    [1, 1, 7]
    """
    n = (len(labels) - WINDOW) // STEP + 1
    if n <= 0:
        return np.empty(0, np.int64)
    return np.asarray(labels)[STEP * np.arange(n) + WINDOW - 1].astype(np.int64)


def count_transitions(sequences: Iterable[np.ndarray], n_states: int = N_LABELS) -> np.ndarray:
    """Counts ``C[i, j]`` of state ``i`` followed by state ``j`` one window
    later, states 0-11 = HAPT labels 1-12. Pairs touching an unlabelled
    stretch (-1) are bridged: the last labelled state before it is joined to
    the first after it, since a live stream does not pause there.

    >>> count_transitions([np.array([1, 1, -1, -1, 7, 4])], 12)[[0, 0, 6], [0, 6, 3]].tolist()
    [1.0, 1.0, 1.0]
    """
    counts = np.zeros((n_states, n_states))
    for seq in sequences:
        seq = np.asarray(seq)
        seq = seq[(seq >= 1) & (seq <= n_states)] - 1
        np.add.at(counts, (seq[:-1], seq[1:]), 1.0)
    return counts


def fit_transitions(recordings: Sequence[Recording]) -> np.ndarray:
    """Transition counts (12 × 12, HAPT labels) of the given sessions at the window step."""
    return count_transitions(window_label_sequence(r.labels) for r in recordings)


# ------------------------------------------------- from HAPT labels to a model's states


def label_states(classes: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """The decoder's states for a model with ``classes``: its classes, then
    the HAPT transitions whose two postures it names; and the state each
    HAPT label 1-12 falls in (entry ``label - 1``; -1: none). An activity
    falls in its class (:func:`~harstream.stream.core.activities.class_for`); a
    transition the model cannot show falls in the class of its two ends when
    they share one (a placement-free model: STILL), else in none.

    >>> label_states(ACTIVITIES)[1].tolist() == list(range(12))
    True
    >>> transitions, of = label_states(("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "STILL"))
    >>> transitions, of.tolist()
    ((), [0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3])
    >>> transitions, of = label_states(("WALKING", "SITTING", "STANDING", "STILL"))
    >>> transitions, of.tolist()
    (('STAND_TO_SIT', 'SIT_TO_STAND'), [0, -1, -1, 1, 2, 3, 4, 5, -1, -1, -1, -1])
    """
    transitions = tuple(t for t in TRANSITIONS if all(end in classes for end in TRANSITION_ENDS[t]))
    states = [*classes, *transitions]
    of = np.full(N_LABELS, -1, dtype=np.int64)
    for i, name in enumerate(ACTIVITIES):
        cls = class_for(name, classes)
        of[i] = -1 if cls is None else states.index(cls)
    for k, name in enumerate(TRANSITIONS):
        if name in transitions:
            of[len(ACTIVITIES) + k] = states.index(name)
            continue
        ends = {class_for(end, classes) for end in TRANSITION_ENDS[name]}
        if len(ends) == 1 and None not in ends:
            of[len(ACTIVITIES) + k] = states.index(ends.pop())
    return transitions, of


def state_counts(label_counts: np.ndarray, of: np.ndarray, n_states: int) -> np.ndarray:
    """HAPT-label transition counts (12 × 12) gathered into states (``of``
    from :func:`label_states`). A label in no state is bridged: what came
    into it is passed on to where it went, in proportion.

    >>> c = np.zeros((12, 12)); c[0, 1] = 2; c[1, 1] = 5; c[1, 3] = 2
    >>> of = np.array([0, -1, 1] + [1] * 9)
    >>> state_counts(c, of, 2).tolist()
    [[0.0, 2.0], [0.0, 0.0]]
    """
    counts = np.asarray(label_counts, dtype=np.float64).copy()
    for u in np.flatnonzero(of < 0):
        out, into = counts[u].copy(), counts[:, u].copy()
        out[u] = into[u] = 0.0
        if out.sum() > 0:
            counts += np.outer(into, out / out.sum())
        counts[u, :] = 0.0
        counts[:, u] = 0.0
    gather = np.zeros((len(of), n_states))
    mapped = np.flatnonzero(of >= 0)
    gather[mapped, of[mapped]] = 1.0
    return gather.T @ counts @ gather


@dataclass(frozen=True)
class LabelStatistics:
    """What the training subjects say about each HAPT label (1-12), for any
    set of classes: transition counts one window apart, and the sums of a
    classifier's out-of-fold probabilities (over ``classes``, its output) in
    the windows ending in each label. Shipped beside the decoder parameters
    (:meth:`to_json`), so other class sets can be derived later."""

    counts: np.ndarray  # (12, 12)
    classes: tuple[str, ...]
    emission_sums: np.ndarray  # (12, len(classes))

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts, dtype=np.float64)
        sums = np.asarray(self.emission_sums, dtype=np.float64)
        where = "decoder label statistics"
        if counts.shape != (N_LABELS, N_LABELS) or sums.shape != (N_LABELS, len(self.classes)):
            raise ValueError(
                f"{where}: counts must be {N_LABELS}x{N_LABELS} and emission sums {N_LABELS}x{len(self.classes)}, "
                f"got {counts.shape} and {sums.shape}"
            )
        for name, arr in (("counts", counts), ("emission_sums", sums)):
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValueError(f"{where}: {name} has negative or non-finite entries")
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "emission_sums", sums)
        object.__setattr__(self, "classes", tuple(self.classes))

    def emission_of(self, of: np.ndarray, n_states: int) -> np.ndarray:
        """``(n_states, len(classes))``: the mean probability of each class
        in the windows of each state (``of`` from :func:`label_states`),
        with :data:`EMISSION_SMOOTHING` windows of uniform output added."""
        n = len(self.classes)
        sums = np.full((n_states, n), EMISSION_SMOOTHING / n)
        for label in np.flatnonzero(of >= 0):
            sums[of[label]] += self.emission_sums[label]
        return sums / sums.sum(axis=1, keepdims=True)

    def to_json(self) -> dict:
        return {
            "classes": list(self.classes),
            "counts": self.counts.astype(int).tolist()
            if np.all(self.counts == self.counts.round())
            else [[round(float(v), 6) for v in row] for row in self.counts],
            "emission_sums": [[round(float(v), 6) for v in row] for row in self.emission_sums],
        }

    @classmethod
    def from_json(cls, d: Any) -> LabelStatistics:
        if not isinstance(d, dict):
            raise ValueError(f"decoder label statistics: expected an object, got {type(d).__name__}")
        try:
            return cls(
                np.asarray(d["counts"], dtype=np.float64),
                tuple(str(c) for c in d["classes"]),
                np.asarray(d["emission_sums"], dtype=np.float64),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"decoder label statistics: {type(exc).__name__}: {exc}") from None


def label_probability_sums(sessions: Sequence[tuple[Recording, np.ndarray]], n_classes: int) -> np.ndarray:
    """``(12, n_classes)``: the sums of the probabilities of the windows
    whose last sample carries each HAPT label (windows of unlabelled time
    are left out)."""
    sums = np.zeros((N_LABELS, n_classes))
    for rec, probs in sessions:
        states = window_label_sequence(rec.labels)[: len(probs)]
        keep = (states >= 1) & (states <= N_LABELS)
        np.add.at(sums, states[keep] - 1, probs[: len(states)][keep])
    return sums


def fit_emission(
    sessions: Sequence[tuple[Recording, np.ndarray]], n_classes: int = 6, smoothing: float = EMISSION_SMOOTHING
) -> np.ndarray:
    """``(12, n_classes)``: the mean probability the classifier gives each
    class in windows whose last sample is in each state (HAPT labels 1-12),
    from out-of-fold probabilities; ``smoothing`` windows of uniform output
    are added to every state so none is ruled out by an unseen output."""
    sums = label_probability_sums(sessions, n_classes) + smoothing / n_classes
    return sums / sums.sum(axis=1, keepdims=True)


def build_params(
    counts: np.ndarray,
    classes: Sequence[str] = ACTIVITIES,
    pseudocount: float = 1.0,
    sharpness: float = 1.0,
    floor: float = 0.01,
    transition_evidence: float = 1.0,
    switch_at: float = 0.5,
    emission: np.ndarray | None = None,
    transitions: Sequence[str] = TRANSITIONS,
) -> DecoderParams:
    """Decoder parameters from transition counts between the states
    (``classes`` then ``transitions``; for the waist model HAPT's labels
    1-12) and the tuning knobs. Every pair of states gets ``pseudocount`` so
    no change is impossible."""
    m = counts + pseudocount
    matrix = m / m.sum(axis=1, keepdims=True)
    visits = counts.sum(axis=1) + 1.0
    return DecoderParams(
        classes=tuple(classes),
        transitions=tuple(transitions),
        matrix=matrix,
        initial=visits / visits.sum(),
        sharpness=sharpness,
        floor=floor,
        transition_evidence=transition_evidence,
        switch_at=switch_at,
        emission=emission,
    )


def params_for(
    stats: LabelStatistics, classes: Sequence[str], knobs: dict, emission: np.ndarray | None = None
) -> DecoderParams:
    """Decoder parameters for a model with ``classes`` from the label
    statistics and the knobs of :data:`GRID`. The emission comes from the
    statistics when they describe the same classes; a model whose output
    differs (a personal model on a placement-free base) passes its own."""
    transitions, of = label_states(classes)
    n_states = len(classes) + len(transitions)
    if emission is None:
        if list(stats.classes) != list(classes):
            raise ValueError(
                f"the label statistics describe a classifier of {list(stats.classes)}, not {list(classes)}; "
                "pass the emission"
            )
        emission = stats.emission_of(of, n_states)
    return build_params(
        state_counts(stats.counts, of, n_states), classes, transitions=transitions, emission=emission, **knobs
    )


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
        from .live_accuracy import session_windows

        x = session_windows(rec.samples, context_steps=self.context)
        if len(x) == 0:
            return np.empty((0, len(self.classes)))
        return np.concatenate([np.asarray(model(x[i : i + 512])) for i in range(0, len(x), 512)]).astype(np.float64)


def waist_target(model: Path | None = None) -> Target:
    """The HAPT (waist) model: the shipped recipe on the sessions as recorded."""
    from harstream.stream.data.recordings import load_embedded

    from .artifact import load_artifact
    from .dataset import labelled_windows
    from .recipe import Recipe, fit

    artifact = load_artifact(model)
    recipe = Recipe.from_json(artifact.metadata["recipe"])

    def fit_model(recs: Sequence[Recording]) -> Any:
        return fit(recipe, labelled_windows(recs, context_steps=recipe.context), seed=0)[0]

    def sessions() -> list[Recording]:
        return [r for r in load_embedded().recordings if r.subject not in set(UCI_TEST_SUBJECTS)]

    return Target("waist", tuple(artifact.classes), tuple(recipe.context), fit_model, sessions, "decoder")


def any_target(model: Path | None = None) -> Target:
    """The placement-free model: its recipe on the training sessions turned
    by the rotations its own training gave them
    (:func:`~harstream.models.placement_free.sessions_as_shipped`)."""
    from harstream.stream.data.recordings import load_embedded

    from .artifact import ANY_MODEL, ArtifactError, load_artifact
    from .dataset import labelled_windows
    from .placement_free import Recipe, fit_placement_free, sessions_as_shipped

    artifact = load_artifact(model or ANY_MODEL)
    meta = artifact.metadata
    amplitude = (meta.get("data") or {}).get("amplitude")
    recipe = Recipe(context=tuple(artifact.context_steps), amplitude=tuple(amplitude) if amplitude else None)
    if recipe.label != meta.get("architecture"):  # C is not in the metadata: the label must agree
        raise ArtifactError(
            f"{artifact.path}: architecture {meta.get('architecture')!r} is not the recipe "
            f"{recipe.label!r} the decoder fit would refit"
        )
    seed = int(meta.get("seed", 0))

    def fit_model(recs: Sequence[Recording]) -> Any:
        return fit_placement_free(labelled_windows(recs, context_steps=recipe.context), recipe, seed)[0]

    def sessions() -> list[Recording]:
        return sessions_as_shipped(load_embedded().recordings, seed)[0]

    return Target("any", tuple(artifact.classes), tuple(recipe.context), fit_model, sessions, "decoder_any")


TARGETS = {"waist": waist_target, "any": any_target}


# --------------------------------------------------------------- probabilities


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
    from .dataset import VALIDATION_SUBJECTS

    held = set() if with_validation else set(VALIDATION_SUBJECTS)
    return [r for r in target.sessions() if r.subject not in held]


def validation_probabilities(target: Target, progress: bool = True) -> list[tuple[Recording, np.ndarray]]:
    """Per-window probabilities of each validation session from the target's
    recipe trained on the fit subjects only (cached)."""
    from .dataset import VALIDATION_SUBJECTS

    sessions = [r for r in target.sessions() if r.subject in set(VALIDATION_SUBJECTS)]

    def compute() -> list[tuple[Recording, np.ndarray]]:
        start = time.perf_counter()
        model = target.fit(training_sessions(target, with_validation=False))
        if progress:
            print(
                f"decoder_fit: {target.name} model fitted on the fit subjects ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        return [(rec, target.predict(model, rec)) for rec in sessions]

    path = CACHE if target.cache_prefix == "decoder" else REPORTS / f"{target.cache_prefix}_validation_probs.npz"
    return cached(path, sessions, compute)


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
                f"decoder_fit: {target.name} fold {k + 1}/{folds} (subjects {held}) "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
    return [(r, out[r.name]) for r in recordings]


def oof_fit_subjects(target: Target) -> list[tuple[Recording, np.ndarray]]:
    """Out-of-fold probabilities of the 16 fit subjects (4 folds): for tuning."""
    recs = training_sessions(target, with_validation=False)
    return cached(
        REPORTS / f"{target.cache_prefix}_oof_fit.npz", recs, lambda: out_of_fold_probabilities(target, recs, 4)
    )


def oof_training_subjects(target: Target) -> list[tuple[Recording, np.ndarray]]:
    """Out-of-fold probabilities of all 21 training subjects (7 folds): for the shipped parameters."""
    recs = training_sessions(target, with_validation=True)
    return cached(
        REPORTS / f"{target.cache_prefix}_oof_train.npz", recs, lambda: out_of_fold_probabilities(target, recs, 7)
    )


def label_statistics(target: Target, with_validation: bool) -> LabelStatistics:
    """Transition counts and out-of-fold emission sums of the target's
    training subjects (without the validation subjects': for tuning)."""
    sessions = oof_training_subjects(target) if with_validation else oof_fit_subjects(target)
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
    from harstream.stream.core.decoder import Decoder

    from .live_accuracy import replay_probabilities, score_replays

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


def fit_decoder(target: Target, progress: bool = True) -> tuple[DecoderParams, dict, LabelStatistics]:
    """Choose the knobs on the validation subjects (transitions and emission
    fitted on the 16 fit subjects), then refit transitions and emission on
    all 21 training subjects with those knobs. Returns the parameters to
    ship, a record of how they were chosen, and the label statistics they
    were built from."""
    from harstream.stream.core.smoothing import Smoother

    from .live_accuracy import replay_probabilities, score_replays

    classes = target.classes
    tuning_stats = label_statistics(target, with_validation=False)
    validation = validation_probabilities(target, progress)
    raw = score_replays(
        [replay_probabilities(r, p, {"raw": lambda: Smoother(classes, 1, 0.5)}, classes=classes) for r, p in validation]
    )["raw"]
    grid = grid_for(classes)
    results = tune(tuning_stats, classes, validation, grid, progress=progress)
    knobs, chosen = choose(results, raw)
    stats = label_statistics(target, with_validation=True)
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
    from .dataset import VALIDATION_SUBJECTS

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
    args = parser.parse_args(argv)
    from .artifact import ANY_MODEL, DEFAULT_MODEL, metadata_path

    target = TARGETS[args.target](args.model)
    params, record, stats = fit_decoder(target)
    front = record.pop("pareto")  # the study, kept beside the report rather than in the artifact
    pareto_file = PARETO if args.target == "waist" else REPORTS / f"decoder_{args.target}_pareto.json"
    pareto_file.write_text(json.dumps(front, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    print("validation Pareto front written to", pareto_file)
    if args.write:
        model = args.model or (ANY_MODEL if args.target == "any" else DEFAULT_MODEL)
        print("wrote", write_decoder(params, record, metadata_path(model), stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
