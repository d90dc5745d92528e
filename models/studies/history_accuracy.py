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
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harstream.stream.core.activities import ACTIVITIES
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
#: The history's goals (issue: the final history, per sample; its changes per true change).
GOALS = {"sample_accuracy": 0.96, "changes_per_true_change": 1.2, "final_within_s": 3.0}


def offline_pieces(
    params: DecoderParams,
    settings: HistorySettings,
    probs: np.ndarray,
    motion: np.ndarray | None = None,
    gravity: np.ndarray | None = None,
) -> list[Piece]:
    """The final pieces of one uninterrupted session whose window ``j`` has
    ``probs[j]``, and body motion ``motion[j]`` and gravity ``gravity[j]`` if
    given (times in seconds from the session's first sample)."""
    h = History(params, settings)
    out: list[Piece] = []
    for j, p in enumerate(np.asarray(probs, dtype=np.float64)):
        t = STEP * j / RATE
        m = None if motion is None else float(motion[j])
        g = None if gravity is None else [float(v) for v in gravity[j]]
        pushed = h.push(j, t, t + (WINDOW - 1) / RATE, [round(float(v), 6) for v in p], m, g)
        out += [q for q in pushed if q.final]
    return out + h.settle()


def with_motion(sessions: Sequence[tuple]) -> list[tuple]:
    """``(recording, probabilities)`` sessions with each window's body motion
    (:func:`~harstream.stream.core.decoder.window_motion`) and gravity
    (:func:`~harstream.stream.core.transition_direction.window_gravity`) added, as the worker computes them."""
    from harstream.models.live_scoring import session_windows
    from harstream.stream.core.decoder import window_motion
    from harstream.stream.core.transition_direction import window_gravity

    out = []
    for rec, probs, *_ in sessions:
        windows = session_windows(rec.samples)
        if len(windows) != len(probs):
            raise ValueError(f"{rec.name}: {len(windows)} windows of signal for {len(probs)} of probabilities")
        out.append((rec, probs, window_motion(windows), window_gravity(windows)))
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
        "settings": {k: getattr(settings, k) for k in (*GRID, *HANDLED_GRID)},
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
    results: list[dict] = []
    for values in itertools.product(*GRID.values()):
        knobs: dict = dict(zip(GRID, values))
        if knobs["confirm"] > knobs["lag"]:
            continue  # confirmation looks no further than the look-ahead: the same as confirm = lag
        r = score_offline(params, HistorySettings(**knobs), validation)
        keep = ("sample_accuracy", "changes_per_true_change", "activity_changes_per_true_change")
        figures = {k: round(float(r[k]), 4) for k in keep}
        results.append({**knobs, **figures})
        if progress:
            print(knobs, figures, flush=True)
    best = choose_by_rule(results)
    from ..dataset import VALIDATION_SUBJECTS

    return {
        "chosen": {k: best[k] for k in GRID},
        "validation": {k: best[k] for k in keep},
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
    keep = ("sample_accuracy", "changes_per_true_change", "activity_changes_per_true_change")
    results: list[dict] = []
    for values in itertools.product(*HANDLED_GRID.values()):
        knobs: dict = dict(zip(HANDLED_GRID, values))
        off = knobs["handled_motion"] == 0 and knobs["handled_turn"] == 0
        if off and knobs["handled_stay"] != HANDLED_GRID["handled_stay"][0]:
            continue  # off: the stay does not matter
        r = score_offline(params, HistorySettings(**fixed, **knobs), validation)
        results.append({**knobs, **{k: round(float(r[k]), 4) for k in keep}})
        if progress:
            print(results[-1], flush=True)
    best = choose_by_rule(results)
    chosen = {k: best[k] for k in HANDLED_GRID}
    return {
        "fixed": fixed,
        "chosen": chosen,
        "validation": {k: best[k] for k in keep},
        "rule": RULE,
        "inserted_changes": inserted_changes(params, HistorySettings(**fixed, **chosen), validation),
        "inserted_changes_without": inserted_changes(params, HistorySettings(**fixed), validation),
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
    for name, rec in recs.items():
        n = len(rec.samples)
        pieces = sorted(finals[name], key=lambda p: p["start"])
        overlaps += sum(1 for a, b in zip(pieces, pieces[1:]) if b["start"] < a["end"] - 1e-6)
        shown = shown_from_pieces(n, pieces, wall0)
        # no final piece at all (a piece of the handled state shown as "unknown" is final too)
        covered = shown_from_pieces(n, [{**p, "label": ACTIVITIES[0]} for p in pieces], wall0)
        uncovered += int(np.sum(covered == NOTHING))
        unknown += int(np.sum((shown == NOTHING) & (covered != NOTHING)))
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
    sub.add_parser("motion", help="body motion of LAYING windows, lying vs the phone handled (validation subjects)")
    c = sub.add_parser("collect", help="record a worker's published history and predictions")
    c.add_argument("--subscribe", default="tcp://127.0.0.1:5556")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--idle", type=float, default=20.0)
    s = sub.add_parser("score", help="score a collected record against the held-out sessions")
    s.add_argument("record", type=Path)
    s.add_argument("--plot", default=None, metavar="DEVICE", help="also draw this session's timeline")
    args = parser.parse_args(argv)
    if args.command == "choose":
        record = choose()
        (REPORTS / "history_choice.json").write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps({k: v for k, v in record.items() if k != "grid"}, indent=2))
    elif args.command == "handled":
        record = choose_handled()
        (REPORTS / "history_handled.json").write_text(json.dumps(record, indent=2) + "\n")
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
        )
        if args.plot:
            plot_published(args.record, args.plot, Path("docs/img/history_timeline.png"), result["wall0"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
