"""Scoring a live display: what a user watching it would see.

A session is replayed through the live path: 1-second chunks into
:class:`~harstream.stream.core.pipeline.DevicePipeline`, the windows through a
model and the probabilities through a display core
(:class:`~harstream.stream.core.smoothing.Smoother` or
:class:`~harstream.stream.core.decoder.Decoder`). Window ``j`` completes when
stream sample ``64*j+127`` arrives; from then until the next window completes,
the display shows its label. Scored per sample:

- accuracy over samples labelled with an activity (1-6): the label shown at
  that moment vs the true one (nothing shown yet or ``unknown`` count as wrong);
- display delay: for every activity segment, the time from its first sample
  until the display first shows that activity (median, p90; segments never
  shown are counted apart);
- display changes per true change, Ward's event and frame categories, and
  what the display shows during postural transitions (HAPT labels 7-12).

The study that scores the shipped model on the held-out sessions, with its
plots, is :mod:`harstream.models.studies.live_accuracy`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harstream.stream.core.activities import ACTIVITIES, TRANSITIONS, UNKNOWN, class_for
from harstream.stream.core.context import WindowContext
from harstream.stream.core.pipeline import STEP, WINDOW, DevicePipeline
from harstream.stream.data.recordings import Recording

if TYPE_CHECKING:  # the display cores, for the annotations only
    from harstream.stream.core.decoder import Decoder
    from harstream.stream.core.smoothing import Smoother

RATE = 50
NOTHING = -1  # no window yet, or ``unknown``: the display shows no activity
TRANSITION = -2  # the display shows a postural transition (STAND_TO_SIT, ...)
CHUNK = 50  # one second of samples per push, as a phone batches them


def display_code(label: str, classes: Sequence[str] = ACTIVITIES) -> int:
    """Index in ``classes`` of a shown label; TRANSITION or NOTHING otherwise.

    >>> display_code("SITTING"), display_code("SIT_TO_STAND"), display_code("unknown")
    (3, -2, -1)
    >>> from harstream.stream.core.activities import PLACEMENT_FREE
    >>> display_code("STILL", PLACEMENT_FREE)
    3
    """
    if label in classes:
        return list(classes).index(label)
    return TRANSITION if label in TRANSITIONS else NOTHING


def truth_labels(labels: np.ndarray, classes: Sequence[str] = ACTIVITIES) -> np.ndarray:
    """HAPT labels in the terms of a model with ``classes``: an activity
    (1-6) becomes 1 + the index of the class it falls in
    (:func:`~harstream.stream.core.activities.class_for`: a placement-free model's
    STILL for sitting, standing and lying), -1 if none; transitions (7-12)
    and unlabelled time stay. Only for models of at most six classes, so the
    two ranges stay apart.

    >>> from harstream.stream.core.activities import PLACEMENT_FREE
    >>> truth_labels(np.array([1, 4, 5, 6, 8, -1]), PLACEMENT_FREE).tolist()
    [1, 4, 4, 4, 8, -1]
    """
    if len(classes) > len(ACTIVITIES):
        raise ValueError(f"scoring needs at most {len(ACTIVITIES)} classes, the model has {list(classes)}")
    table = np.arange(13, dtype=np.int64)  # label -> label; entry 0 unused
    for i, name in enumerate(ACTIVITIES):
        cls = class_for(name, classes)
        table[i + 1] = -1 if cls is None else 1 + list(classes).index(cls)
    labels = np.asarray(labels).astype(np.int64)
    inside = (labels >= 1) & (labels <= 12)
    return np.where(inside, table[np.clip(labels, 0, 12)], labels)


@dataclass
class SessionReplay:
    """Per-sample truth and what each display showed (class 0-5 or NOTHING)."""

    name: str
    labels: np.ndarray  # HAPT labels in the model's terms (:func:`truth_labels`)
    shown: dict[str, np.ndarray]
    classes: tuple[str, ...] = ACTIVITIES  # what the shown codes index


def display_timeline(n_samples: int, window_classes: Sequence[int]) -> np.ndarray:
    """Per-sample shown class: window ``j``'s class from sample ``64*j+127``
    (when it completes) until the next window completes.

    >>> display_timeline(260, [3, 4]).tolist()[126:130], display_timeline(260, [3, 4])[-1]
    ([-1, 3, 3, 3], np.int64(4))
    """
    shown = np.full(n_samples, NOTHING, dtype=np.int64)
    for j, c in enumerate(window_classes):
        start = STEP * j + WINDOW - 1
        shown[start : start + STEP if j + 1 < len(window_classes) else n_samples] = c
    return shown


def session_windows(
    samples: np.ndarray, chunk: int = CHUNK, context_steps: Sequence[int] = (), between: bool = False
) -> np.ndarray:
    """The session pushed chunk by chunk through a fresh DevicePipeline (and
    a fresh WindowContext for a model with context windows), as the worker does;
    with ``between`` the windows of the worker's offset grid instead (window
    ``k`` covers samples ``32 + 64k … 32 + 64k + 127``, filtered with the rest:
    :func:`~harstream.stream.core.batch_push.push_both`)."""
    from harstream.stream.core.batch_push import push_both

    pipe, second = DevicePipeline(), DevicePipeline()
    context = WindowContext(context_steps) if context_steps else None
    parts = []
    for i in range(0, len(samples), chunk):
        main, offset = push_both([pipe], [second if between else None], [samples[i : i + chunk]])
        windows = offset[0] if between else main[0]
        parts.append(context.push(windows) if context is not None else windows)
    shape = (0, 1 + len(context_steps), WINDOW, 9) if context_steps else (0, WINDOW, 9)
    return np.concatenate(parts) if parts else np.empty(shape, np.float32)


def replay_session(
    rec: Recording,
    predict: Callable[[np.ndarray], np.ndarray],
    displays: dict[str, Callable[[], Smoother | Decoder]],
    chunk: int = CHUNK,
    context_steps: Sequence[int] = (),
    classes: Sequence[str] = ACTIVITIES,
) -> SessionReplay:
    """Replay one recording through pipeline → ``predict`` → each display
    core (name → factory of a fresh ``Smoother`` or ``Decoder``, anything
    with ``update(probs) -> (label, probs)``); ``argmax`` is always added."""
    from harstream.stream.core.decoder import window_motion
    from harstream.stream.core.transition_direction import window_gravity

    x = session_windows(rec.samples, chunk, context_steps)
    probs = predict(x) if len(x) else np.empty((0, len(classes)))
    # the decoder's posture lock sees each window's motion, as the worker hands it over
    own = x[:, 0] if context_steps else x
    motion = window_motion(own) if len(x) else None
    gravity = window_gravity(own) if len(x) else None
    return replay_probabilities(rec, probs, displays, motion, classes, gravity)


def replay_probabilities(
    rec: Recording,
    probs: np.ndarray,
    displays: dict[str, Callable[[], Smoother | Decoder]],
    motion: np.ndarray | None = None,
    classes: Sequence[str] = ACTIVITIES,
    gravity: np.ndarray | None = None,
) -> SessionReplay:
    """The displays of one session whose windows' probabilities over
    ``classes`` (and, for the decoder's posture lock, motion:
    :func:`~harstream.stream.core.decoder.window_motion`) are known; the truth in
    the same classes."""
    n = len(rec.samples)
    shown = {"argmax": display_timeline(n, np.argmax(probs, axis=1) if len(probs) else [])}
    moves: list[float | None] = [None] * len(probs) if motion is None else [float(m) for m in motion]
    turns: list[list[float] | None] = (
        [None] * len(probs) if gravity is None else [[float(v) for v in g] for g in gravity]
    )
    for kind, factory in displays.items():
        core = factory()
        # one window at a time, in stream order, as the worker does
        labels = [
            display_code(core.update([round(float(v), 6) for v in p], m, g)[0], classes)
            for p, m, g in zip(probs, moves, turns)
        ]
        shown[kind] = display_timeline(n, labels)
    return SessionReplay(rec.name, truth_labels(rec.labels, classes), shown, tuple(classes))


def sample_accuracy(labels: np.ndarray, shown: np.ndarray) -> tuple[int, int]:
    """(correct, total) over samples labelled with an activity (1-6)."""
    mask = (labels >= 1) & (labels <= 6)
    return int(np.sum(shown[mask] == labels[mask] - 1)), int(mask.sum())


def display_delays(labels: np.ndarray, shown: np.ndarray) -> tuple[list[float], int]:
    """Seconds from each activity change (an activity segment's first sample;
    not the session's start) until the display first shows that activity; and
    the number of such segments never shown.

    >>> labels = np.array([-1] * 10 + [1] * 100)
    >>> shown = np.array([-1] * 60 + [0] * 50)
    >>> display_delays(labels, shown)
    ([1.0], 0)
    """
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(labels)]])
    delays, missed = [], 0
    for a, b in zip(starts, ends):
        label = int(labels[a])
        if a == 0 or not 1 <= label <= 6:
            continue
        hit = np.flatnonzero(shown[a:b] == label - 1)
        if len(hit):
            delays.append(float(hit[0]) / RATE)
        else:
            missed += 1
    return delays, missed


def display_changes(shown: np.ndarray) -> int:
    """How often the display changed what it shows (after it first showed
    anything); a change to or from ``unknown`` or a transition counts.

    >>> display_changes(np.array([NOTHING, NOTHING, 2, 2, 3, NOTHING, 3]))
    3
    """
    shown = np.asarray(shown)
    first = np.flatnonzero(shown != NOTHING)
    if len(first) == 0:
        return 0
    s = shown[first[0] :]
    return int(np.sum(s[1:] != s[:-1]))


def true_changes(labels: np.ndarray) -> int:
    """How often the true activity (1-6) changed, joining stretches across
    postural transitions and unlabelled time (walk, pause, walk is no change).

    >>> true_changes(np.array([-1, 1, 1, -1, 1, 5, 7, 7, 4, 4]))
    2
    """
    labels = np.asarray(labels)
    act = labels[(labels >= 1) & (labels <= 6)]
    return int(np.sum(act[1:] != act[:-1]))


def runs(codes: np.ndarray, value: int) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges (end exclusive) where ``codes == value``.

    >>> runs(np.array([0, 1, 1, 0, 1]), 1)
    [(1, 3), (4, 5)]
    """
    hit = np.concatenate([[0], (np.asarray(codes) == value).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(hit))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


#: Ward et al. (2011) event categories (ground truth: deletion D, fragmented F,
#: merged M, both FM, correct C; detections: insertion I', fragmenting F',
#: merging M', both FM') and frame categories (frames of insertion I,
#: deletion D, fragmentation F, merge M, over/underfill at start/end Os Oe Us Ue).
EVENT_KEYS = ("total_gt", "total_det", "C", "D", "F", "M", "FM", "I'", "F'", "M'", "FM'")
FRAME_KEYS = ("TP", "TN", "I", "D", "F", "M", "Os", "Oe", "Us", "Ue")


def event_metrics(labels: np.ndarray, shown: np.ndarray, n_classes: int = len(ACTIVITIES)) -> dict[str, dict[str, int]]:
    """Ward's event and frame categories of one session, one activity at a
    time (its true stretches vs the stretches the display showed it), summed
    over the activities (``n_classes``); computed by the ``ward-metrics`` package."""
    from wardmetrics.core_methods import eval_events, eval_segments

    truth = np.where((labels >= 1) & (labels <= 6), labels - 1, NOTHING)
    events = dict.fromkeys(EVENT_KEYS, 0)
    frames = dict.fromkeys(FRAME_KEYS, 0)
    n = len(labels)
    for c in range(n_classes):
        gt, det = runs(truth, c), runs(shown, c)
        if not gt or not det:  # the package needs both; the rest is plain counting
            events["total_gt"] += len(gt)
            events["total_det"] += len(det)
            events["D"] += len(gt)
            events["I'"] += len(det)
            frames["D"] += sum(b - a for a, b in gt)
            frames["I"] += sum(b - a for a, b in det)
            frames["TN"] += n - sum(b - a for a, b in gt + det)
            continue
        _, _, counts, _ = eval_events(list(gt), list(det), 0, n)
        for k in EVENT_KEYS:
            events[k] += int(counts[k])
        _, _, seg_counts, _ = eval_segments(list(gt), list(det), 0, n)
        for k in FRAME_KEYS:
            frames[k] += int(seg_counts[k])
    return {"events": events, "frames": frames}


def events_zero() -> dict[str, int]:
    return dict.fromkeys(EVENT_KEYS, 0)


def frames_zero() -> dict[str, int]:
    return dict.fromkeys(FRAME_KEYS, 0)


def transition_display(labels: np.ndarray, shown: np.ndarray, classes: Sequence[str] = ACTIVITIES) -> dict[str, int]:
    """Sample counts of what was shown during postural transitions (7-12)."""
    shown_t = shown[(labels >= 7) & (labels <= 12)]
    counts = {UNKNOWN: int(np.sum(shown_t == NOTHING)), "transition": int(np.sum(shown_t == TRANSITION))}
    for i, name in enumerate(classes):
        counts[name] = int(np.sum(shown_t == i))
    return counts


def score_replays(replays: list[SessionReplay], events: bool = True) -> dict:
    """Aggregate figures over all sessions, for the raw and smoothed display
    (``events=False`` leaves out Ward's metrics, the slow part, for grids)."""
    out: dict = {"sessions": len(replays), "samples": int(sum(len(r.labels) for r in replays))}
    classes = replays[0].classes if replays else ACTIVITIES
    for kind in replays[0].shown if replays else ():
        correct = total = missed = 0
        delays: list[float] = []
        trans = {UNKNOWN: 0, "transition": 0, **{a: 0 for a in classes}}
        changes = truth_changes = 0
        event_totals = dict.fromkeys(EVENT_KEYS, 0)
        frames = dict.fromkeys(FRAME_KEYS, 0)
        for r in replays:
            shown = r.shown[kind]
            ward = (
                event_metrics(r.labels, shown, len(classes))
                if events
                else {"events": events_zero(), "frames": frames_zero()}
            )
            for k in EVENT_KEYS:
                event_totals[k] += ward["events"][k]
            for k in FRAME_KEYS:
                frames[k] += ward["frames"][k]
            changes += display_changes(shown)
            truth_changes += true_changes(r.labels)
            c, t = sample_accuracy(r.labels, shown)
            correct, total = correct + c, total + t
            d, m = display_delays(r.labels, shown)
            delays += d
            missed += m
            for k, v in transition_display(r.labels, shown, classes).items():
                trans[k] += v
        out[kind] = {
            "sample_accuracy": correct / total if total else float("nan"),
            "labelled_samples": total,
            "delay_median_s": float(np.median(delays)) if delays else float("nan"),
            "delay_p90_s": float(np.percentile(delays, 90)) if delays else float("nan"),
            "segments_followed": len(delays),
            "segments_never_shown": missed,
            "transition_samples": trans,
            "display_changes": changes,
            "true_changes": truth_changes,
            "changes_per_true_change": changes / truth_changes if truth_changes else float("nan"),
            "ward_events": event_totals,
            "ward_frames": frames,
            "delays_s": [round(d, 2) for d in delays],
        }
    return out
