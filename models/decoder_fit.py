"""The live display decoder's parameters (:mod:`harstream.stream.core.decoder`) for a model's classes.

What the product uses to build a decoder:

- the **transition matrix** is counted from the activity sequences (labels
  1-12, postural transitions included) of the training subjects' sessions,
  at the worker's window step, then mapped onto the model's classes
  (:func:`label_states`: a placement-free model's STILL gathers sitting,
  standing, lying and the transitions between them);
- the **emission model** is the mean of a classifier's out-of-fold
  probabilities in the windows of each state;
- the **tuning knobs** (emission sharpness, transition-state evidence,
  stickiness, switching margin) are given.

The per-label statistics (:class:`LabelStatistics`) are stored beside the
parameters, so a personal model's decoder is derived at calibration time
without reading the dataset (:func:`harstream.models.personal.personal_decoder`).
How the shipped models' statistics are gathered and their knobs chosen on the
validation subjects (the grid search) is the study
:mod:`harstream.models.studies.decoder_tuning`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harstream.stream.core.activities import ACTIVITIES, TRANSITIONS, class_for
from harstream.stream.core.decoder import TRANSITION_ENDS, DecoderParams
from harstream.stream.core.pipeline import STEP, WINDOW
from harstream.stream.data.recordings import Recording

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
    statistics and the knobs (:data:`~harstream.models.studies.decoder_tuning.GRID`). The emission comes from the
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
