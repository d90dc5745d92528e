"""The final history, scored: its knobs chosen on validation subjects, then the
worker's published history over the held-out sessions scored once.

Offline (for the choice): each validation session's window probabilities
(from the recipe fitted on the fit subjects, :func:`~harstream.models.studies.decoder_tuning.validation_probabilities`)
through :class:`~harstream.stream.core.history.History` over decoder
parameters fitted on the fit subjects only (the shipped knobs), window ``j``
at stream time ``64 j / 50`` s. Every sample is labelled by the final piece
covering it and scored as :mod:`harstream.models.live_scoring` scores the
display (per sample over activity samples, changes per true change, Ward's
events)::

    python -m harstream.models.studies.history_accuracy choose

The record (``docs/reports/history_choice.json``) also says where the chosen
setting's changes beyond the true ones are (:func:`inserted_changes`: before
a session's first label, after its last, in unlabelled gaps, over labelled
activities; by what was shown, how long, which subject) and keeps the grid's
Pareto front of accuracy against changes (:func:`pareto`). The handled
state's knobs are chosen after the others, on the same subjects with each
window's body motion and gravity (:func:`choose_handled`)::

    python -m harstream.models.studies.history_accuracy handled

The handled state's step cue (a window read as walking or stairs without steps)::

    python -m harstream.models.studies.history_accuracy steps

The set-down state's cue and knobs (a device lying on something, not worn): how
far apart at-rest windows before and after the protocol and still people are
(fit subjects for the statistics, validation subjects for the choice), and the
knobs chosen by :data:`SET_DOWN_RULE`, the others fixed::

    python -m harstream.models.studies.history_accuracy set_down

As published: ``harstream simulate --wait 1`` replays the 19 held-out
sessions at 50 Hz into ``harstream worker``; :func:`collect` (``collect``
subcommand) subscribes to its output and writes every history message and
prediction with the wall time it arrived; ``score`` maps bus times back to
samples (the simulator stamps sample ``i`` at ``wall0 + i / 50``) and scores the
final pieces, the now label (the predictions' ``smoothed``) and how late each
sample became final after its window ended::

    python -m harstream.models.studies.history_accuracy collect --out run.jsonl &
    harstream worker & harstream simulate --wait 1
    python -m harstream.models.studies.history_accuracy score run.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from harstream.stream.core.activities import ACTIVITIES, SET_DOWN
from harstream.stream.core.decoder import DecoderParams
from harstream.stream.core.history import History, HistorySettings, Piece
from harstream.stream.core.pipeline import STEP, WINDOW

from ..live_scoring import NOTHING, SessionReplay, display_code, display_timeline, score_replays, truth_labels

RATE = 50
REPORTS = Path(__file__).resolve().parent.parent.parent / "docs" / "reports"
GRID: dict[str, tuple] = {
    "lag": (1, 2),
    "method": ("marginal", "viterbi"),
    "stay": (0.0, 4.0, 20.0),
    "power": (0.5, 1.0),
    "carry": ("soft", "hard"),
    "min_windows": (1, 3, 5, 8),
    "confirm": (0, 1, 2),
}
#: The handled state's knobs (stream/core/history.py), the others fixed as chosen by :data:`GRID`.
HANDLED_GRID: dict[str, tuple] = {
    "handled_motion": (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35),
    "handled_turn": (0.0, 30.0, 45.0, 60.0, 90.0),
    "handled_stay": (0.3, 0.6, 0.9),
}
#: The handled state's step cue (stream/core/history.py: a window read as walking or stairs without
#: steps), the others fixed as shipped; chosen by :data:`RULE` (``python -m
#: harstream.models.studies.history_accuracy steps``). Its steepness (8) was looked at first on the
#: same validation subjects (2, 4, 8 at 0.1-0.4: 8 kept the most accuracy for its changes).
STEPS_GRID: dict[str, tuple] = {
    "handled_steps": (0.0, 0.1, 0.15, 0.2, 0.25, 0.3),
    "handled_stay": (0.3, 0.6),
}
#: The set-down state's knobs (stream/core/history.py), the others fixed; rotation 0 is off.
SET_DOWN_GRID: dict[str, tuple] = {
    "set_down_motion": (0.006, 0.0065, 0.007, 0.008),
    "set_down_rotation": (0.004, 0.0045, 0.005, 0.0055),
    "set_down_windows": (1, 2, 3),
}
#: Declared before anything was scored. People are never to be shown set down: a setting must show
#: no sample of a labelled activity of the fit subjects as set down (their sessions' signal alone: the
#: state takes no probabilities). Among those, the history's goals on the validation subjects as
#: :data:`RULE` weighs them; ties (the state is rare in HAPT), the one that shows the most validation
#: samples outside labelled activities as set down, then the fewest labelled ones, then the strictest
#: (lower motion and rotation thresholds, more windows in a row).
SET_DOWN_RULE = (
    "settings showing no labelled-activity sample of the fit subjects as set down; among them by RULE on "
    "the validation subjects (>= 96 % per sample, then the fewest activity changes per true change); ties: "
    "the most validation samples outside labelled activities shown set down, then the fewest labelled ones, "
    "then the strictest thresholds"
)
#: The history's goals (issue: the final history, per sample; its changes per true change).
GOALS = {"sample_accuracy": 0.96, "changes_per_true_change": 1.2, "final_within_s": 3.0}


def offline_pieces(
    params: DecoderParams,
    settings: HistorySettings,
    probs: np.ndarray,
    motion: np.ndarray | None = None,
    gravity: np.ndarray | None = None,
    rotation: np.ndarray | None = None,
    steps: np.ndarray | None = None,
) -> list[Piece]:
    """The final pieces of one uninterrupted session whose window ``j`` has
    ``probs[j]``, and body motion ``motion[j]``, gravity ``gravity[j]``,
    rotation ``rotation[j]`` and step regularity ``steps[j]`` if given (times
    in seconds from the session's first sample)."""
    h = History(params, settings)
    out: list[Piece] = []
    for j, p in enumerate(np.asarray(probs, dtype=np.float64)):
        t = STEP * j / RATE
        m = None if motion is None else float(motion[j])
        g = None if gravity is None else [float(v) for v in gravity[j]]
        r = None if rotation is None else float(rotation[j])
        k = None if steps is None else float(steps[j])
        pushed = h.push(j, t, t + (WINDOW - 1) / RATE, [round(float(v), 6) for v in p], m, g, r, k)
        out += [q for q in pushed if q.final]
    return out + h.settle()


def with_motion(sessions: Sequence[tuple], rotation: bool = False, steps: bool = False) -> list[tuple]:
    """``(recording, probabilities)`` sessions with each window's body motion
    (:func:`~harstream.stream.core.decoder.window_motion`), gravity
    (:func:`~harstream.stream.core.transition_direction.window_gravity`) and, with
    ``rotation``, rotation (:func:`~harstream.stream.core.history.window_rotation`), with
    ``steps`` step regularity (:func:`~harstream.stream.core.stepping.step_measures`; rotation
    None unless asked for) added, as the worker computes them."""
    from harstream.models.live_scoring import session_windows
    from harstream.stream.core.decoder import window_motion
    from harstream.stream.core.history import window_rotation
    from harstream.stream.core.stepping import step_measures
    from harstream.stream.core.transition_direction import window_gravity

    out = []
    for rec, probs, *_ in sessions:
        windows = session_windows(rec.samples)
        if len(windows) != len(probs):
            raise ValueError(f"{rec.name}: {len(windows)} windows of signal for {len(probs)} of probabilities")
        cues = [window_motion(windows), window_gravity(windows)]
        if rotation or steps:
            cues.append(window_rotation(windows) if rotation else None)
        if steps:
            cues.append(step_measures(windows)[:, 2])
        out.append((rec, probs, *cues))
    return out


def shown_from_pieces(
    n_samples: int, pieces: Sequence[Piece | dict], t0: float = 0.0, classes: Sequence[str] = ACTIVITIES
) -> np.ndarray:
    """Per-sample code (:func:`~harstream.models.live_scoring.display_code`)
    of the final piece covering sample ``i`` (time ``t0 + i / 50``); NOTHING where none does.

    >>> shown_from_pieces(6, [Piece(0.0, 0.06, "SITTING", True), Piece(0.06, 1.0, "WALKING", True)]).tolist()
    [3, 3, 3, 0, 0, 0]
    """
    shown = np.full(n_samples, NOTHING, dtype=np.int64)
    times = t0 + np.arange(n_samples) / RATE
    for p in pieces:
        start, end, label = (p.start, p.end, p.label) if isinstance(p, Piece) else (p["start"], p["end"], p["label"])
        # half a sample's slack: bus times are rounded to the microsecond
        a, b = np.searchsorted(times, [start - 0.5 / RATE, end - 0.5 / RATE])
        shown[a:b] = display_code(label, classes)
    return shown


def activity_changes(shown: np.ndarray) -> int:
    """Changes between activities shown, joined across transitions and
    nothing shown, as :func:`~harstream.models.live_scoring.true_changes`
    joins the truth (sitting, SIT_TO_STAND, standing is one change).

    >>> activity_changes(np.array([3, 3, -2, -2, 4, -1, 4, 0]))
    2
    """
    a = np.asarray(shown)
    a = a[a >= 0]
    return int(np.sum(a[1:] != a[:-1]))


def add_activity_changes(figures: dict, replays: Sequence[SessionReplay], kind: str) -> dict:
    """``figures`` with ``activity_changes`` and their ratio to the true changes."""
    changes = sum(activity_changes(r.shown[kind]) for r in replays)
    figures["activity_changes"] = changes
    figures["activity_changes_per_true_change"] = changes / figures["true_changes"] if figures["true_changes"] else 0.0
    return figures


def score_offline(
    params: DecoderParams, settings: HistorySettings, sessions: Sequence[tuple], events: bool = False
) -> dict:
    """The history's figures over sessions ``(recording, window probabilities)``."""
    replays = []
    for rec, probs, *signal in sessions:
        n = len(rec.samples)
        pieces = offline_pieces(params, settings, probs, *signal)
        replays.append(
            SessionReplay(
                rec.name,
                truth_labels(rec.labels, params.classes),
                {"history": shown_from_pieces(n, pieces, 0.0, params.classes)},
                tuple(params.classes),
            )
        )
    return add_activity_changes(score_replays(replays, events=events)["history"], replays, "history")


#: The figures each grid row keeps of a scored setting.
FIGURES = ("sample_accuracy", "changes_per_true_change", "activity_changes_per_true_change")


def scored(params: DecoderParams, settings: HistorySettings, validation: Sequence) -> dict:
    """The :data:`FIGURES` of ``settings`` on ``validation`` (:func:`score_offline`), rounded."""
    r = score_offline(params, settings, validation)
    return {k: round(float(r[k]), 4) for k in FIGURES}


def grid_rows(
    grid: Mapping[str, Sequence],
    fixed: dict,
    params: DecoderParams,
    validation: Sequence,
    skip: Callable[[dict], bool],
    progress: bool,
) -> list[dict]:
    """One row per setting of ``grid`` over the ``fixed`` knobs, unless ``skip``
    (it is the same as another): its knobs and :func:`scored` figures."""
    rows: list[dict] = []
    for values in itertools.product(*grid.values()):
        knobs: dict = dict(zip(grid, values))
        if skip(knobs):
            continue
        rows.append({**knobs, **scored(params, HistorySettings(**fixed, **knobs), validation)})
        if progress:
            print(rows[-1], flush=True)
    return rows


def tuning_params() -> DecoderParams:
    """The shipped decoder's knobs over statistics of the fit subjects only
    (transitions and out-of-fold emission without the validation subjects)."""
    from ..artifact import load_artifact
    from ..decoder_fit import params_for
    from .decoder_tuning import label_statistics, waist_target

    chosen = load_artifact().metadata["decoder"]["chosen"]
    # the knobs the shipped parameters were built with (the now label's, where it has its own)
    knobs = (chosen.get("now_label") or {}).get("knobs") or chosen["knobs"]
    target = waist_target()
    return params_for(label_statistics(target, with_validation=False), target.classes, knobs)


#: The choice. Both goals at once: a setting must keep the history >= 96 % per sample. (First
#: written without that condition in its first branch, it picked a lag-1 setting at 1.15 changes
#: and 67 % per sample on validation, which breaks the accuracy goal; the issue asks for <= 1.2
#: "while staying >= 96 %".)
RULE = (
    "among settings with >= 96 % per sample and <= 1.2 activity changes (transitions joined, as the "
    "truth's) per true change on the validation subjects, the most accurate; if none, the fewest such "
    "changes among settings >= 96 % per sample (ties: the more accurate); if none, the most accurate"
)


#: The setting chosen before bouts had a minimum length (the plain lattice).
PREVIOUS = HistorySettings(lag=2, method="marginal", stay=4.0, power=0.5, carry="soft", min_windows=1, confirm=0)


def pareto(results: Sequence[dict]) -> list[dict]:
    """The grid rows no other row beats on both accuracy and changes, most accurate first.

    >>> pareto([{"sample_accuracy": 0.9, "activity_changes_per_true_change": 2},
    ...         {"sample_accuracy": 0.8, "activity_changes_per_true_change": 3},
    ...         {"sample_accuracy": 0.7, "activity_changes_per_true_change": 1}])
    [{'sample_accuracy': 0.9, 'activity_changes_per_true_change': 2}, {'sample_accuracy': 0.7, 'activity_changes_per_true_change': 1}]
    """
    front: list[dict] = []
    for r in sorted(results, key=lambda r: (-r["sample_accuracy"], r["activity_changes_per_true_change"])):
        if not front or r["activity_changes_per_true_change"] < front[-1]["activity_changes_per_true_change"]:
            front.append(r)
    return front


def choose_by_rule(results: Sequence[dict]) -> dict:
    """The setting :data:`RULE` picks from grid rows with ``sample_accuracy`` and
    ``activity_changes_per_true_change``.

    >>> rows = [{"sample_accuracy": 0.97, "activity_changes_per_true_change": 1.9},
    ...         {"sample_accuracy": 0.961, "activity_changes_per_true_change": 1.7},
    ...         {"sample_accuracy": 0.67, "activity_changes_per_true_change": 1.1}]
    >>> choose_by_rule(rows)["activity_changes_per_true_change"]    # none both: fewest changes at >= 96 %
    1.7
    >>> choose_by_rule(rows + [{"sample_accuracy": 0.962, "activity_changes_per_true_change": 1.2}])["sample_accuracy"]
    0.962
    """
    changes = "activity_changes_per_true_change"
    accurate = [r for r in results if r["sample_accuracy"] >= GOALS["sample_accuracy"]]
    both = [r for r in accurate if r[changes] <= GOALS["changes_per_true_change"]]
    if both:
        return max(both, key=lambda r: (r["sample_accuracy"], -r[changes]))
    if accurate:
        return min(accurate, key=lambda r: (r[changes], -r["sample_accuracy"]))
    return max(results, key=lambda r: (r["sample_accuracy"], -r[changes]))


def inserted_changes(params: DecoderParams, settings: HistorySettings, sessions: Sequence[tuple]) -> dict:
    """Where the history's changes beyond the true ones are: every stretch
    the history shows one activity (transition states and nothing dropped and
    joined over, as the changes are counted) that is not a true bout of that
    activity (no more than half of its labelled samples are that activity),
    by where it lies (before the session's first labelled sample, after its
    last, in an unlabelled or transition gap between activities, or over a
    labelled activity), by class pair, duration and subject; and the changes
    the history shows counted on the labelled samples only."""
    from harstream.models.live_scoring import true_changes

    classes = list(params.classes)
    kinds: dict[str, dict] = {}
    changes = changes_labelled = truth_changes = 0
    for rec, probs, *signal in sessions:
        n = len(rec.samples)
        shown = shown_from_pieces(n, offline_pieces(params, settings, probs, *signal), 0.0, classes)
        truth = truth_labels(rec.labels, classes)
        labelled = (truth >= 1) & (truth <= len(classes))
        changes += activity_changes(shown)
        changes_labelled += activity_changes(np.where(labelled, shown, NOTHING))
        truth_changes += true_changes(truth)
        first, last = np.flatnonzero(labelled)[[0, -1]]
        at = np.flatnonzero(shown >= 0)
        edges = np.flatnonzero(np.diff(shown[at]) != 0) + 1
        for a, b in zip(np.r_[0, edges], np.r_[edges, len(at)]):
            code, start, end = int(shown[at[a]]), int(at[a]), int(at[b - 1]) + 1
            under = truth[start:end][labelled[start:end]] - 1
            if len(under) and np.sum(under == code) * 2 >= len(under):
                continue  # a true bout of what it shows
            if len(under):
                kind = "over a labelled activity"
                values, counts = np.unique(under, return_counts=True)
                pair = f"{classes[int(values[counts.argmax()])]} shown as {classes[code]}"
            else:
                kind = (
                    "before the first label" if end <= first else "after the last label" if start > last else "in a gap"
                )
                pair = classes[code]
            k = kinds.setdefault(kind, {"stretches": 0, "seconds": [], "shown": {}, "subjects": {}})
            k["stretches"] += 1
            k["seconds"].append((end - start) / RATE)
            k["shown"][pair] = k["shown"].get(pair, 0) + 1
            k["subjects"][str(rec.subject)] = k["subjects"].get(str(rec.subject), 0) + 1
    for k in kinds.values():
        seconds = np.asarray(k.pop("seconds"))
        k["seconds"] = {
            "median": round(float(np.median(seconds)), 2),
            "shortest": round(float(seconds.min()), 2),
            "longest": round(float(seconds.max()), 2),
            "at_most_2.56": int(np.sum(seconds <= 2.56 + 1e-9)),
            "at_most_6.4": int(np.sum(seconds <= 6.4 + 1e-9)),
        }
        k["shown"] = dict(sorted(k["shown"].items(), key=lambda kv: -kv[1]))
    return {
        "settings": {k: getattr(settings, k) for k in (*GRID, *HANDLED_GRID, *STEPS_GRID, *SET_DOWN_GRID)},
        "activity_changes": changes,
        "activity_changes_on_labelled_samples_only": changes_labelled,
        "true_changes": truth_changes,
        "by_where": kinds,
    }


def choose(progress: bool = True) -> dict:
    """Score every setting of :data:`GRID` on the validation subjects; the
    choice by :data:`RULE`; where the chosen setting's extra changes are
    (:func:`inserted_changes`), and the same for the setting chosen before
    (plain lattice, no confirmation)."""
    from .decoder_tuning import validation_probabilities, waist_target

    params = tuning_params()
    validation = validation_probabilities(waist_target(), progress)
    # confirmation looks no further than the look-ahead: confirm > lag is the same as confirm = lag
    results = grid_rows(GRID, {}, params, validation, lambda knobs: knobs["confirm"] > knobs["lag"], progress)
    best = choose_by_rule(results)
    from ..dataset import VALIDATION_SUBJECTS

    return {
        "chosen": {k: best[k] for k in GRID},
        "validation": {k: best[k] for k in FIGURES},
        "rule": RULE,
        "inserted_changes": inserted_changes(params, HistorySettings(**{k: best[k] for k in GRID}), validation),
        "inserted_changes_before": inserted_changes(params, PREVIOUS, validation),
        "pareto": pareto(results),
        "validation_subjects": list(VALIDATION_SUBJECTS),
        "decoder_parameters": "shipped knobs over transitions and out-of-fold emission of the fit subjects only",
        "grid": results,
    }


def choose_handled(progress: bool = True) -> dict:
    """The handled state's knobs (:data:`HANDLED_GRID`), the other knobs as
    chosen by :func:`choose` (the :class:`HistorySettings` defaults), scored on
    the validation subjects with each window's body motion and chosen by
    :data:`RULE`; where the chosen setting's extra changes are, beside the
    same without the handled state."""
    from ..dataset import VALIDATION_SUBJECTS
    from .decoder_tuning import validation_probabilities, waist_target

    params = tuning_params()
    validation = with_motion(validation_probabilities(waist_target(), progress))
    fixed = {k: getattr(HistorySettings(), k) for k in GRID}

    def skip(knobs: dict) -> bool:  # off: the stay does not matter
        off = knobs["handled_motion"] == 0 and knobs["handled_turn"] == 0
        return off and knobs["handled_stay"] != HANDLED_GRID["handled_stay"][0]

    results = grid_rows(HANDLED_GRID, fixed, params, validation, skip, progress)
    best = choose_by_rule(results)
    chosen = {k: best[k] for k in HANDLED_GRID}
    return {
        "fixed": fixed,
        "chosen": chosen,
        "validation": {k: best[k] for k in FIGURES},
        "rule": RULE,
        "inserted_changes": inserted_changes(params, HistorySettings(**fixed, **chosen), validation),
        "inserted_changes_without": inserted_changes(params, HistorySettings(**fixed), validation),
        "validation_subjects": list(VALIDATION_SUBJECTS),
        "grid": results,
    }


def set_down_cues(sessions: Sequence, with_probs: bool = False) -> dict:
    """Body motion and rotation (g, rad/s; :func:`~harstream.stream.core.decoder.window_motion`,
    :func:`~harstream.stream.core.history.window_rotation`) of windows wholly inside a labelled
    sitting, standing or lying bout, and of windows wholly before a session's first label or after
    its last (where a phone may lie on a table); with ``with_probs`` (sessions ``(recording,
    probs)``) also those edge windows the classifier calls LAYING. Percentiles per group, over all
    its windows and over its still ones (below 0.012 g and 0.02 rad/s), and how many are at rest."""
    from harstream.models.live_scoring import session_windows
    from harstream.stream.core.decoder import window_motion
    from harstream.stream.core.history import window_rotation

    groups: dict[str, list[tuple[float, float]]] = {"labelled sitting, standing, lying": [], "before/after": []}
    groups["before/after, read LAYING"] = []
    laying = list(ACTIVITIES).index("LAYING")
    for item in sessions:
        rec, probs = (item[0], item[1]) if with_probs else (item, None)
        windows = session_windows(rec.samples)
        motion, rotation = window_motion(windows), window_rotation(windows)
        labels = rec.labels
        known = np.flatnonzero((labels >= 1) & (labels <= 12))
        for j in range(len(windows)):
            span = labels[STEP * j : STEP * j + WINDOW]
            cue = (float(motion[j]), float(rotation[j]))
            if span[0] in (4, 5, 6) and np.all(span == span[0]):
                groups["labelled sitting, standing, lying"].append(cue)
            elif STEP * j + WINDOW <= known[0] or STEP * j >= known[-1]:
                groups["before/after"].append(cue)
                if probs is not None and int(np.argmax(probs[j])) == laying:
                    groups["before/after, read LAYING"].append(cue)
    out: dict = {}
    for name, values in groups.items():
        if not values:
            continue
        v = np.asarray(values)
        still = v[(v[:, 0] < 0.012) & (v[:, 1] < 0.02)]
        row: dict = {"windows": len(v), "still_windows (< 0.012 g and < 0.02 rad/s)": len(still)}
        for k, measure in enumerate(("motion_g", "rotation_rad_s")):
            for label, part in (("all", v), ("still", still)):
                if len(part):
                    pct = np.percentile(part[:, k], [0, 1, 5, 50, 95])
                    row[f"{measure} {label} (min, p1, p5, median, p95)"] = [round(float(x), 5) for x in pct]
        for m, r in ((0.0065, 0.0045), (0.007, 0.005)):
            row[f"at rest (< {m} g and < {r} rad/s)"] = int(np.sum((v[:, 0] < m) & (v[:, 1] < r)))
        out[name] = row
    return out


def rest_cues(recordings: Sequence) -> list[tuple]:
    """``(recording, motion, rotation)`` of each recording's windows, as the worker computes them."""
    from harstream.models.live_scoring import session_windows
    from harstream.stream.core.decoder import window_motion
    from harstream.stream.core.history import window_rotation

    out = []
    for rec in recordings:
        windows = session_windows(rec.samples)
        out.append((rec, window_motion(windows), window_rotation(windows)))
    return out


def set_down_labelled(settings: HistorySettings, sessions: Sequence[tuple]) -> dict:
    """How much of labelled activity (samples) and of the rest of the
    sessions ``(recording, motion, rotation)`` (:func:`rest_cues`) the history
    shows set down, from their signal alone (the state takes no
    probabilities: uniform ones stand in)."""
    params = DecoderParams.uniform(list(ACTIVITIES), stay=0.9)
    labelled = other = 0
    for rec, motion, rotation in sessions:
        probs = np.full((len(motion), len(ACTIVITIES)), 1.0 / len(ACTIVITIES))
        pieces = offline_pieces(params, settings, probs, motion, None, rotation)
        down_pieces = [Piece(p.start, p.end, "x", p.final) for p in pieces if p.label == SET_DOWN]
        down = shown_from_pieces(len(rec.samples), down_pieces, 0.0, ["x"]) == 0
        activity = (rec.labels >= 1) & (rec.labels <= 6)
        labelled += int(np.sum(down & activity))
        other += int(np.sum(down & ~activity))
    return {"labelled_samples_set_down": labelled, "other_samples_set_down": other}


def choose_set_down_by_rule(rows: Sequence[dict]) -> dict:
    """The row :data:`SET_DOWN_RULE` picks.

    >>> row = lambda acc, fit, other, m: {"sample_accuracy": acc, "activity_changes_per_true_change": 1.6,
    ...     "fit": {"labelled_samples_set_down": fit}, "validation": {"other_samples_set_down": other,
    ...     "labelled_samples_set_down": 0}, "set_down_motion": m, "set_down_rotation": 0.004, "set_down_windows": 2}
    >>> choose_set_down_by_rule([row(0.961, 0, 0, 0.006), row(0.961, 0, 640, 0.007), row(0.961, 5, 900, 0.008)])["set_down_motion"]
    0.007
    """
    changes = "activity_changes_per_true_change"
    allowed = [r for r in rows if r["fit"]["labelled_samples_set_down"] == 0]
    goal = choose_by_rule(allowed)
    tied = [r for r in allowed if (r["sample_accuracy"], r[changes]) == (goal["sample_accuracy"], goal[changes])]
    return min(
        tied,
        key=lambda r: (
            -r["validation"]["other_samples_set_down"],
            r["validation"]["labelled_samples_set_down"],
            r.get("set_down_motion", 0.0),
            r.get("set_down_rotation", 0.0),
            -r.get("set_down_windows", 0),
        ),
    )


def choose_set_down(progress: bool = True) -> dict:
    """The set-down state's knobs (:data:`SET_DOWN_GRID`), the other knobs as
    shipped (:class:`HistorySettings` defaults), chosen by :data:`SET_DOWN_RULE`;
    the cues' separation on the fit and the validation subjects; where the
    chosen setting's extra changes are, beside the same without the state."""
    from ..dataset import VALIDATION_SUBJECTS
    from .decoder_tuning import training_sessions, validation_probabilities, waist_target

    target = waist_target()
    params = tuning_params()
    raw = validation_probabilities(target, progress)
    validation = with_motion(raw, rotation=True)
    fit = training_sessions(target, with_validation=False)
    fit_cues = rest_cues(fit)
    validation_cues = [(rec, motion, rotation) for rec, _, motion, _, rotation in validation]
    off = {"set_down_rotation": 0.0}
    fixed = {k: v for k, v in vars(HistorySettings()).items() if k not in SET_DOWN_GRID}
    results: list[dict] = []
    for values in [None, *itertools.product(*SET_DOWN_GRID.values())]:
        knobs: dict = off if values is None else dict(zip(SET_DOWN_GRID, values))
        settings = HistorySettings(**fixed, **knobs)
        row = {**knobs, **scored(params, settings, validation)}
        row["fit"] = set_down_labelled(settings, fit_cues)
        row["validation"] = set_down_labelled(settings, validation_cues)
        results.append(row)
        if progress:
            print(row, flush=True)
    best = choose_set_down_by_rule(results)
    chosen = {k: best[k] for k in SET_DOWN_GRID if k in best} or off
    return {
        "fixed": fixed,
        "chosen": chosen,
        "validation": {k: best[k] for k in FIGURES},
        "rule": SET_DOWN_RULE,
        "cues_fit_subjects": set_down_cues(fit),
        "cues_validation_subjects": set_down_cues(raw, with_probs=True),
        "inserted_changes": inserted_changes(params, HistorySettings(**fixed, **chosen), validation),
        "inserted_changes_without": inserted_changes(params, HistorySettings(**fixed, **off), validation),
        "validation_subjects": list(VALIDATION_SUBJECTS),
        "grid": results,
    }


def choose_steps(progress: bool = True) -> dict:
    """The handled state's step cue (:data:`STEPS_GRID`), the other knobs as
    shipped, scored on the validation subjects with every cue the worker
    gives the history and chosen by :data:`RULE`; where the chosen setting's
    extra changes are, beside the same without the cue; and the cue itself:
    the step regularity of the windows the classifier reads as walking or
    stairs, inside labelled walking and stairs bouts, before the first or after
    the last label, in unlabelled gaps."""
    from ..dataset import VALIDATION_SUBJECTS
    from .decoder_tuning import validation_probabilities, waist_target

    params = tuning_params()
    validation = with_motion(validation_probabilities(waist_target(), progress), rotation=True, steps=True)
    fixed = {k: v for k, v in vars(HistorySettings()).items() if k not in STEPS_GRID}

    def skip(knobs: dict) -> bool:  # off: the stay is the shipped one's
        return knobs["handled_steps"] == 0 and knobs["handled_stay"] != HistorySettings().handled_stay

    results = grid_rows(STEPS_GRID, fixed, params, validation, skip, progress)
    best = choose_by_rule(results)
    chosen = {k: best[k] for k in STEPS_GRID}
    off = {**chosen, "handled_steps": 0.0, "handled_stay": HistorySettings().handled_stay}
    groups: dict[str, list[float]] = {"labelled walking or stairs": [], "before/after": [], "gap": [], "other": []}
    for rec, probs, *_, regularity in validation:
        labels = rec.labels
        known = np.flatnonzero((labels >= 1) & (labels <= 12))
        for j in range(len(probs)):
            if ACTIVITIES[int(np.argmax(probs[j]))] not in ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS"):
                continue
            span = labels[STEP * j : STEP * j + WINDOW]
            if span[0] in (1, 2, 3) and np.all(span == span[0]):
                where = "labelled walking or stairs"
            elif STEP * j + WINDOW <= known[0] or STEP * j >= known[-1]:
                where = "before/after"
            elif np.all(span <= 0):
                where = "gap"
            else:
                where = "other"
            groups[where].append(float(regularity[j]))
    cue = {
        name: {
            "windows": len(v),
            "regularity (p5, p25, median, p75)": [round(float(x), 3) for x in np.percentile(v, [5, 25, 50, 75])],
            "below 0.1 / 0.2 / 0.3": [int(np.sum(np.asarray(v) < t)) for t in (0.1, 0.2, 0.3)],
        }
        for name, v in groups.items()
        if v
    }
    return {
        "fixed": fixed,
        "chosen": chosen,
        "validation": {k: best[k] for k in FIGURES},
        "rule": RULE,
        "cue_of_windows_read_as_walking_or_stairs": cue,
        "inserted_changes": inserted_changes(params, HistorySettings(**fixed, **chosen), validation),
        "inserted_changes_without": inserted_changes(params, HistorySettings(**fixed, **off), validation),
        "validation_subjects": list(VALIDATION_SUBJECTS),
        "grid": results,
    }


def lying_motion(sessions: Sequence[tuple]) -> dict:
    """Body motion (:func:`~harstream.stream.core.decoder.window_motion`, g) of the
    windows the classifier calls LAYING: those inside a labelled lying bout,
    and those wholly before a session's first label or after its last (the
    phone handled before and after the protocol): the cue of the history's
    handled state."""
    from harstream.models.live_scoring import session_windows
    from harstream.stream.core.decoder import window_motion

    groups: dict[str, list[float]] = {"labelled lying": [], "before the first / after the last label": []}
    laying = list(ACTIVITIES).index("LAYING")
    for rec, probs in sessions:
        motion = window_motion(session_windows(rec.samples))
        labels = rec.labels
        known = np.flatnonzero((labels >= 1) & (labels <= 12))
        for j in range(min(len(motion), len(probs))):
            if int(np.argmax(probs[j])) != laying:
                continue
            span = labels[STEP * j : STEP * j + WINDOW]
            if np.all(span == laying + 1):
                groups["labelled lying"].append(float(motion[j]))
            elif STEP * j + WINDOW <= known[0] or STEP * j >= known[-1]:
                groups["before the first / after the last label"].append(float(motion[j]))
    out: dict = {}
    for name, values in groups.items():
        v = np.asarray(values)
        out[name] = {
            "windows": len(v),
            "median_g": round(float(np.median(v)), 4),
            "p10_g": round(float(np.percentile(v, 10)), 4),
            "p90_g": round(float(np.percentile(v, 90)), 4),
            "share_above_0.05_g": round(float(np.mean(v > 0.05)), 3),
        }
    return out


# ----------------------------------------------------------------- as published


def collect(address: str, out: Path, idle: float = 20.0, start_timeout: float = 600.0) -> int:
    """Subscribe to a worker's output at ``address``; write each history
    message and prediction, with the wall time it arrived, as JSON lines to
    ``out``, until nothing arrives for ``idle`` seconds after the first message."""
    import zmq

    from harstream.stream.bus.sockets import OUTPUT_MESSAGE_BYTES, BusSockets
    from harstream.stream.core.protocol import HistoryUpdate, Prediction, decode_output

    sub = BusSockets().open(
        zmq.SUB, address, "connect", max_message=OUTPUT_MESSAGE_BYTES, rcvhwm=1_000_000, subscribe=(b"h/", b"p/")
    )
    count, started = 0, False
    with out.open("w") as f:
        while sub.poll(int(1000 * (idle if started else start_timeout))):
            frames = sub.recv_multipart()
            received = time.time()
            started = True
            msg = decode_output(frames)
            if isinstance(msg, HistoryUpdate):
                row = {"kind": "history", "device": msg.device, "pieces": msg.pieces, "today": msg.today}
            elif isinstance(msg, Prediction):
                row = {"kind": "prediction", "device": msg.device, "window": msg.window, "t_start": msg.t_start}
                row |= {"t_end": msg.t_end, "smoothed": msg.smoothed, "label": msg.label, "between": msg.between}
            else:
                continue
            f.write(json.dumps({**row, "received": received}) + "\n")
            count += 1
    sub.close(0)
    return count


def score_published(path: Path, subjects: Sequence[int] | None = None) -> dict:
    """Score a :func:`collect` record against the held-out sessions (by device
    name): the final history, the now label, and when each sample became final."""
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_embedded

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    wanted = set(subjects or UCI_TEST_SUBJECTS)
    recs = {r.name: r for r in load_embedded().recordings if r.subject in wanted}
    finals: dict[str, list[dict]] = {name: [] for name in recs}
    now: dict[str, dict[int, str]] = {name: {} for name in recs}
    # the simulator stamps every device's sample i at wall0 + i / 50, and all start together
    wall0 = min(row["t_start"] for row in rows if row["kind"] == "prediction" and row["device"] in recs)
    for row in rows:
        if row["device"] not in recs:
            continue
        if row["kind"] == "history":
            for p in row["pieces"]:
                if p["final"]:
                    finals[row["device"]].append({**p, "received": row["received"]})
        elif not row.get("between"):  # by time, not by number: a restarted pipeline numbers windows from 0
            # (a display-only update between windows is no window: models/studies/now_published.py scores it)
            now[row["device"]][round((row["t_start"] - wall0) * RATE / STEP)] = row["smoothed"]
    replays, late, overlaps, uncovered, unknown = [], [], 0, 0, 0
    set_down = {"samples": 0, "over_labelled_activity": 0, "sessions": 0}
    for name, rec in recs.items():
        n = len(rec.samples)
        pieces = sorted(finals[name], key=lambda p: p["start"])
        overlaps += sum(1 for a, b in zip(pieces, pieces[1:]) if b["start"] < a["end"] - 1e-6)
        shown = shown_from_pieces(n, pieces, wall0)
        # no final piece at all (a piece of the handled state shown as "unknown" is final too)
        covered = shown_from_pieces(n, [{**p, "label": ACTIVITIES[0]} for p in pieces], wall0)
        uncovered += int(np.sum(covered == NOTHING))
        down = shown_from_pieces(n, [{**p, "label": ACTIVITIES[0]} for p in pieces if p["label"] == SET_DOWN], wall0)
        down_mask = down != NOTHING
        activity = (rec.labels >= 1) & (rec.labels <= 6)
        set_down["samples"] += int(np.sum(down_mask))
        set_down["over_labelled_activity"] += int(np.sum(down_mask & activity))
        set_down["sessions"] += bool(down_mask.any())
        unknown += int(np.sum((shown == NOTHING) & (covered != NOTHING) & ~down_mask))
        windows = max(now[name]) + 1 if now[name] else 0
        now_codes = [display_code(now[name].get(j, "unknown")) for j in range(windows)]
        replays.append(
            SessionReplay(
                name, truth_labels(rec.labels), {"history": shown, "now": display_timeline(n, now_codes)}, ACTIVITIES
            )
        )
        late += finality_lateness(n, pieces, wall0, windows)
    out = score_replays(replays, events=True)
    for kind in ("history", "now"):
        add_activity_changes(out[kind], replays, kind)
    lateness = np.asarray(late)
    out["final_after_window_end_s"] = {
        "median": round(float(np.median(lateness)), 3),
        "p99": round(float(np.percentile(lateness, 99)), 3),
        "max": round(float(lateness.max()), 3),
        "samples_over_3s": int(np.sum(lateness > GOALS["final_within_s"])),
        "samples": len(lateness),
    }
    out["overlapping_final_pieces"] = overlaps
    out["samples_never_final"] = uncovered
    out["samples_final_as_unknown"] = unknown
    out["samples_final_as_set_down"] = set_down
    out["wall0"] = wall0
    return out


def finality_lateness(n_samples: int, pieces: Sequence[dict], wall0: float, windows: int) -> list[float]:
    """For each sample a final piece covers: seconds from the end of its
    window (the one whose middle half holds it; the first window's first
    quarter, the last one's last quarter) until that piece arrived."""
    if not windows:
        return []
    times = wall0 + np.arange(n_samples) / RATE
    index = np.arange(n_samples)
    window = np.clip((index - STEP // 2) // STEP, 0, windows - 1)
    window_end = wall0 + (STEP * window + WINDOW - 1) / RATE
    out: list[float] = []
    for p in pieces:
        a, b = np.searchsorted(times, [p["start"] - 0.5 / RATE, p["end"] - 0.5 / RATE])
        out += (p["received"] - window_end[a:b]).tolist()
    return out


def plot_published(path: Path, device: str, image: Path, wall0: float | None = None) -> Path:
    """Truth, the now label and the final history of one published session."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harstream.stream.data.recordings import load_embedded

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rec = next(r for r in load_embedded().recordings if r.name == device)
    if wall0 is None:
        wall0 = min(r["t_start"] for r in rows if r["kind"] == "prediction")
    n = len(rec.samples)
    pieces = [p for r in rows if r["kind"] == "history" and r["device"] == device for p in r["pieces"] if p["final"]]
    now = {
        round((r["t_start"] - wall0) * RATE / STEP): r["smoothed"]
        for r in rows
        if r["kind"] == "prediction" and r["device"] == device
    }
    truth = truth_labels(rec.labels) - 1
    lines = {
        "truth": np.where((truth >= 0) & (truth < 6), truth, NOTHING),
        "now (card)": display_timeline(n, [display_code(now.get(j, "unknown")) for j in range(max(now) + 1)]),
        "final history": shown_from_pieces(n, pieces, wall0),
    }
    t = np.arange(n) / RATE
    fig, axes = plt.subplots(len(lines), 1, figsize=(12, 4.5), sharex=True)
    for ax, (name, codes) in zip(axes, lines.items()):
        ax.plot(t, np.where(codes >= 0, codes, np.nan), drawstyle="steps-post", lw=1.2)
        ax.set_yticks(range(6), [a.replace("WALKING_", "").title() for a in ACTIVITIES], fontsize=7)
        ax.set_ylim(-0.5, 5.5)
        ax.set_ylabel(name, fontsize=8)
        if name != "truth":
            wrong = (truth >= 0) & (truth < 6) & (codes != truth)
            ax.fill_between(t, -0.5, 5.5, where=wrong, color="tab:red", alpha=0.15, lw=0)
    axes[-1].set_xlabel(f"seconds ({device}; red: wrong while an activity was labelled)")
    fig.tight_layout()
    image.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(image, dpi=110)
    plt.close(fig)
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the final history: choose on validation, score as published")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("choose", help="score the knob grid on the validation subjects")
    sub.add_parser("handled", help="the handled state's knobs on the validation subjects (with motion)")
    sub.add_parser("steps", help="the handled state's step cue on the validation subjects")
    sub.add_parser("set_down", help="the set-down state's cue and knobs (fit and validation subjects)")
    sub.add_parser("motion", help="body motion of LAYING windows, lying vs the phone handled (validation subjects)")
    c = sub.add_parser("collect", help="record a worker's published history and predictions")
    c.add_argument("--subscribe", default="tcp://127.0.0.1:5556")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--idle", type=float, default=20.0)
    s = sub.add_parser("score", help="score a collected record against the held-out sessions")
    s.add_argument("record", type=Path)
    s.add_argument("--plot", default=None, metavar="DEVICE", help="also draw this session's timeline")
    args = parser.parse_args(argv)
    choices = {
        "choose": (choose, "history_choice.json"),
        "handled": (choose_handled, "history_handled.json"),
        "steps": (choose_steps, "history_steps.json"),
        "set_down": (choose_set_down, "history_set_down.json"),
    }
    if args.command in choices:
        run, name = choices[args.command]
        record = run()
        (REPORTS / name).write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps({k: v for k, v in record.items() if k != "grid"}, indent=2))
    elif args.command == "motion":
        from .decoder_tuning import validation_probabilities, waist_target

        record = lying_motion(validation_probabilities(waist_target(), False))
        (REPORTS / "history_motion.json").write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(record, indent=2))
    elif args.command == "collect":
        print(f"collected {collect(args.subscribe, args.out, args.idle)} messages", file=sys.stderr)
    else:
        result = score_published(args.record)
        (REPORTS / "history_published.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
        for kind in ("history", "now"):
            r = result[kind]
            print(
                f"{kind}: {100 * r['sample_accuracy']:.2f} % per sample, "
                f"{r['display_changes']} / {r['true_changes']} = {r['changes_per_true_change']:.2f} changes per "
                f"true change ({r['activity_changes_per_true_change']:.2f} between activities), "
                f"Ward events {r['ward_events']}"
            )
        print("final after window end:", result["final_after_window_end_s"])
        print(
            "overlapping final pieces:",
            result["overlapping_final_pieces"],
            "never final:",
            result["samples_never_final"],
            "final as unknown:",
            result["samples_final_as_unknown"],
            "set down:",
            result["samples_final_as_set_down"],
        )
        if args.plot:
            plot_published(args.record, args.plot, Path("docs/img/history_timeline.png"), result["wall0"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
