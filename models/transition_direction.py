"""Fitting the transition-direction detector (:mod:`harstream.stream.core.transition_direction`).

The detector's events are found in the training subjects' sessions exactly
as the worker finds them (each window's motion and gravity, one window at a
time); each event is labelled with the HAPT postural transition (labels
7-12) among its windows, or ``NONE`` when it holds none (a fidget, a walk).
A multinomial logistic regression of the gravity direction before and after
(:func:`~harstream.stream.core.transition_direction.event_features`) on those
events is the detector; its standardisation is folded into the coefficients
so the worker needs only a matrix product.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from harstream.stream.core.activities import TRANSITIONS
from harstream.stream.core.transition_direction import (
    NONE,
    OUTCOMES,
    DirectionParams,
    event_features,
    unit,
)


@dataclass(frozen=True)
class Event:
    """One burst of motion between two still windows, as the detector sees it."""

    before: np.ndarray  # unit gravity of the last still window before the burst
    after: np.ndarray  # unit gravity of the first still window after it
    end: int  # index of that first still window
    outcome: str  # the HAPT transition among its windows, or NONE


def find_events(motion: np.ndarray, gravity: np.ndarray, window_labels: np.ndarray, still_motion: float) -> list[Event]:
    """The events of one session (per-window motion, gravity and HAPT label
    at each window's last sample), walked as :class:`DirectionDetector` walks them.

    >>> m = np.array([0.0, 0.3, 0.3, 0.0, 0.0]); g = np.tile([1.0, 0.0, 0.0], (5, 1))
    >>> [(e.end, e.outcome) for e in find_events(m, g, np.array([5, 7, 7, 4, 4]), 0.05)]
    [(3, 'STAND_TO_SIT')]
    """
    events = []
    still: np.ndarray | None = None
    still_at = -1
    moving = False
    for i, (m, g) in enumerate(zip(motion, gravity)):
        u = unit(g)
        if u is None or not np.isfinite(m):
            continue
        if m > still_motion:
            moving = True
            continue
        before, before_at, still, still_at = still, still_at, u, i
        if not moving or before is None:
            continue
        moving = False
        span = np.asarray(window_labels[before_at + 1 : i + 1])
        inside = span[(span >= 7) & (span <= 12)]
        outcome = TRANSITIONS[int(np.bincount(inside - 7).argmax())] if len(inside) else NONE
        events.append(Event(before, u, i, outcome))
    return events


def fit_direction(events: Sequence[Event], c: float = 1.0, **knobs: float) -> DirectionParams:
    """A :class:`DirectionParams` fitted on ``events`` (logistic regression,
    L2 strength ``1/c``); ``knobs`` are the detector's other fields."""
    from sklearn.linear_model import LogisticRegression

    x = np.stack([event_features(e.before, e.after) for e in events])
    y = np.array([OUTCOMES.index(e.outcome) for e in events])
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = LogisticRegression(C=c, max_iter=2000).fit((x - mean) / scale, y)
    coef = np.zeros((len(OUTCOMES), x.shape[1]))
    intercept = np.full(len(OUTCOMES), -30.0)  # an outcome never seen in training stays out
    coef[model.classes_] = model.coef_ / scale
    intercept[model.classes_] = model.intercept_ - (model.coef_ / scale) @ mean
    return DirectionParams(coef, intercept, **knobs)


def event_accuracy(params: DirectionParams, events: Iterable[Event]) -> dict:
    """How often the detector names each event's outcome, and the posture after a real transition."""
    from harstream.stream.core.transition_direction import LEADS_TO

    right = total = trans = trans_right = 0
    for e in events:
        p = params.outcome_probabilities(e.before, e.after)
        guess = OUTCOMES[int(p.argmax())]
        total += 1
        right += guess == e.outcome
        if e.outcome != NONE:
            trans += 1
            trans_right += guess != NONE and LEADS_TO[guess] == LEADS_TO[e.outcome]
    return {
        "events": total,
        "outcome_accuracy": right / total if total else float("nan"),
        "transitions": trans,
        "posture_after_right": trans_right / trans if trans else float("nan"),
    }
