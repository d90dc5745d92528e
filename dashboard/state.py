"""What the dashboard knows: per-device buffers and fleet aggregates.

Pure state, no sockets and no Streamlit: :meth:`LiveState.feed` takes the
frames of one output-bus message (or :meth:`LiveState.ingest` an already
decoded one) and everything the page shows is read back from here. Every
buffer is bounded (per device and in the number of devices), so a dashboard
left open for a day uses the same memory as after ten minutes.

Times: ``now`` is the dashboard's own clock (``time.monotonic()``), used for
"seconds since last seen"; prediction and signal times (``t_start``,
``t_end``, ``t0``) are stream times and only compared with each other.

>>> from harstream.stream.core.protocol import Prediction, encode_prediction
>>> state = LiveState()
>>> p = Prediction("phone-1", 0, 0.0, 2.54, "SITTING", [0, 0, 0, .9, .1, 0],
...                "SITTING", [0, 0, 0, .8, .2, 0], "m", 3.0, truth="SITTING")
>>> state.feed(encode_prediction(p), now=10.0)
True
>>> row = state.overview(now=12.0)[0]
>>> row.device, row.activity, row.confidence, row.match, row.age_s
('phone-1', 'SITTING', 0.8, True, 2.0)
"""

from __future__ import annotations

import math
import re
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np
from sklearn.metrics import confusion_matrix

from harstream.stream.core.activities import ACTIVITIES, SET_DOWN, STILL, TRANSITIONS, UNKNOWN
from harstream.stream.core.pipeline import STEP, WINDOW
from harstream.stream.core.placement import PLACEMENTS
from harstream.stream.core.protocol import (
    HistoryUpdate,
    Prediction,
    ProtocolError,
    Signal,
    check_device_id,
    decode_output,
)
from harstream.stream.core.rate import RATE_HZ

# Predicted columns of the confusion matrix: the six classes, then "unknown"
# for windows the worker's smoother would not commit to.
PREDICTED = ACTIVITIES + (UNKNOWN,)
TRANSITION = "TRANSITION"  # a postural transition (ground truth, or the decoder showing one)
UNLABELLED = "UNLABELLED"  # ground truth known to be unlabelled (HAPT label -1)

MAX_PREDICTIONS = 400  # per device: ~8.5 min at one window per 1.28 s
MAX_HISTORY_RUNS = 400  # per device: final history, adjacent pieces of one label joined
SIGNAL_SECONDS = 10.0  # raw signal kept per device (stream seconds)
MAX_SIGNAL_CHUNKS = 400  # hard bound on signal messages kept per device
MAX_SIGNAL_RATE = 1000.0  # Hz: a signal message's rate past this is no signal (the worker sends 10 Hz)
MAX_DEVICES = 2000  # beyond this the least recently seen device is forgotten
MAX_WORKERS = 64  # workers' stats kept; beyond this the least recently heard is forgotten
MAX_DROP_REASONS = 64  # drop reasons taken from one stats message (a worker has a few dozen)
LIVE_AFTER_S = 60.0  # a device not heard from for this long is no longer "live"
FORGET_AFTER_S = 600.0  # ... and is dropped entirely after this long
STALE_AFTER_S = 5.0  # no stats / no predictions for this long: show a banner
ROLLING_WINDOWS = 100  # predictions in the rolling accuracy
MAX_PENDING_PAIRS = 2000  # (truth, prediction) pairs waiting to be folded into the matrix
DISPLAYED = ACTIVITIES + (STILL, TRANSITION, UNKNOWN)  # what a display label is drawn as
#: How a device is served (the prediction's ``mode``), and what each mode can tell apart.
MODE_HINTS = {
    "waist": "the HAPT model: a phone worn at the waist",
    "any": "placement-free: moving or still, and how it moves; postures show as STILL "
    "(calibrate this phone to tell sitting/standing/lying)",
    "personal": "calibrated on this device: the postures it was taught, moving as placement-free",
}
#: How a device's estimated placement (the prediction's ``placement``) is named on the page.
WORN_TEXT = {"waist": "waist", "thigh": "thigh (pocket)", "wrist": "wrist"}
_DIGITS = re.compile(r"(\d+)")


@dataclass
class OverviewRow:
    """One device in the overview."""

    device: str
    activity: str  # smoothed activity
    confidence: float  # smoothed probability of that activity
    age_s: float  # seconds since its last prediction arrived
    truth: str | None  # ground truth (replays), TRANSITION during transitions
    match: bool | None  # activity == truth; None without a comparable truth
    accuracy: float | None  # rolling accuracy against the truth
    windows: int  # predictions received this session
    lasted_s: float = 0.0  # how long the display has shown this activity (device time)
    mode: str = ""  # how the worker serves it: waist, any, personal ("" from an older worker)
    today: dict | None = None  # minutes of the day from the final history ({"day", "minutes"}), if published
    placement: str | None = None  # where its gait says it is worn (waist, thigh, wrist), if the worker is sure


@dataclass
class Health:
    """Fleet health from the worker's stats messages and our own counters."""

    workers: list[str]
    devices: int | None
    samples_per_s: float | None
    windows_per_s: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    drops: dict[str, int]  # worker drops by reason, summed over workers
    rejects: dict[str, int]  # messages this dashboard could not decode, by reason
    stats_age_s: float | None  # since the last stats message (None: never)
    data_age_s: float | None  # since the last prediction (None: never)
    problem: str | None  # "no_worker", "no_data" or None when all is well


def natural_key(name: str) -> list:
    """Sort key with digit runs compared as numbers.

    >>> sorted(["d.10", "d.2", "d.1"], key=natural_key)
    ['d.1', 'd.2', 'd.10']
    """
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in _DIGITS.split(name) if part]


def truth_category(truth: str | None) -> str | None:
    """The truth as the dashboard compares it: an activity, TRANSITION,
    UNLABELLED, or None when the source knows no truth.

    >>> truth_category("SIT_TO_STAND"), truth_category("LAYING"), truth_category("unknown")
    ('TRANSITION', 'LAYING', 'UNLABELLED')
    """
    if truth is None:
        return None
    if truth in ACTIVITIES:
        return truth
    if truth in TRANSITIONS:
        return TRANSITION
    return UNLABELLED


def display_category(label: str | None) -> str:
    """What a published display label is drawn as: an activity, TRANSITION
    for a postural transition the decoder shows as such, SET_DOWN for the
    final history's device set down (not worn), else UNKNOWN.

    >>> display_category("SIT_TO_LIE"), display_category("WALKING"), display_category(None)
    ('TRANSITION', 'WALKING', 'unknown')
    >>> display_category("SET_DOWN")
    'SET_DOWN'
    """
    if label is not None and (label in ACTIVITIES or label in (STILL, SET_DOWN)):
        return label
    if label in TRANSITIONS:
        return TRANSITION
    return UNKNOWN


def classes_of(p: Prediction) -> list[str]:
    """The classes ``p.probs`` are in: the prediction's own list, or the six
    ACTIVITIES from a worker that predates modes.

    >>> p = Prediction("d", 0, 0.0, 2.54, "STILL", [.1, 0, 0, .9], "STILL", [.1, 0, 0, .9], "m", 1.0,
    ...                mode="any", classes=["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "STILL"])
    >>> classes_of(p)[-1]
    'STILL'
    """
    return list(p.classes) if p.classes else list(ACTIVITIES)


def hop_seconds(p: Prediction) -> float:
    """Device-time seconds between this window and the previous one (one hop,
    1.28 s at 50 Hz), from the window's own span so that the compressed
    timestamps of a sped-up replay do not shrink it."""
    duration = p.t_end - p.t_start
    # t_start/t_end are the first/last sample: WINDOW - 1 periods apart.
    return STEP * duration / (WINDOW - 1) if duration > 0 else STEP / RATE_HZ


def merge_runs(bands: Sequence[dict], key: str) -> list[dict]:
    """Consecutive bands with the same ``key`` joined into one segment
    ``{"start", "end", "label"}`` (None values are skipped).

    >>> merge_runs([{"start": 0, "end": 1, "k": "A"}, {"start": 1, "end": 2, "k": "A"},
    ...             {"start": 2, "end": 3, "k": "B"}], "k")
    [{'start': 0, 'end': 2, 'label': 'A'}, {'start': 2, 'end': 3, 'label': 'B'}]
    """
    runs: list[dict] = []
    for b in bands:
        label = b[key]
        if label is None:
            continue
        if runs and runs[-1]["label"] == label and runs[-1]["end"] == b["start"]:
            runs[-1]["end"] = b["end"]
        else:
            runs.append({"start": b["start"], "end": b["end"], "label": label})
    return runs


class DeviceState:
    """Bounded history of one device's predictions and raw signal."""

    def __init__(self, device: str):
        self.device = device
        self.predictions: deque[Prediction] = deque(maxlen=MAX_PREDICTIONS)
        self.signal: deque[tuple[float, float, np.ndarray, np.ndarray]] = deque(maxlen=MAX_SIGNAL_CHUNKS)
        self._signal_n = 0  # samples in self.signal
        self.last_seen = -math.inf  # dashboard clock, any message
        self.last_prediction = -math.inf  # dashboard clock
        self.windows = 0
        self.scored = 0  # predictions this session with an activity as truth
        self.hits = 0  # ... whose smoothed activity matched it
        # Session confusion matrix: pairs wait in _pending and are folded in
        # by scikit-learn when the matrix is read (one call per tick for the
        # device on screen: a call costs ~10-50 ms of validation, too much to
        # make for every device every second), so ingesting stays O(1).
        self._confusion = np.zeros((len(ACTIVITIES), len(PREDICTED)), dtype=np.int64)
        self._pending_truth: list[str] = []
        self._pending_pred: list[str] = []
        # The display's current run (kept apart from the bounded buffer, so a
        # device that sat still for an hour says an hour): label, seconds.
        self.run_label: str | None = None
        self.run_seconds = 0.0
        self.between: Prediction | None = None  # the newest display-only update between windows
        # The worker's final history (runs of final pieces, bus time), its
        # provisional pieces after them, and the day's minutes it keeps.
        self.final: deque[dict] = deque(maxlen=MAX_HISTORY_RUNS)
        self.provisional: list[dict] = []
        self.today: dict | None = None

    @property
    def latest(self) -> Prediction | None:
        """The newest now label: the last window's, or a display-only update
        between windows that came after it."""
        last = self.predictions[-1] if self.predictions else None
        between = self.between
        if between is not None and (last is None or between.t_end > last.t_end):
            return between
        return last

    def add_prediction(self, p: Prediction, now: float) -> None:
        if p.between:  # a display-only update between windows: the card's label, not a window of the timeline
            self.between = p
            self.last_seen = self.last_prediction = now
            if p.smoothed != self.run_label:
                self.run_label, self.run_seconds = p.smoothed, 0.0
            return
        previous = self.predictions[-1] if self.predictions else None
        # A run goes on while the display keeps its label over consecutive
        # windows; a restarted stream (window numbers start again) starts anew.
        if previous is not None and p.smoothed == self.run_label and p.window == previous.window + 1:
            self.run_seconds += hop_seconds(p)
        else:
            self.run_label, self.run_seconds = p.smoothed, 0.0
        self.predictions.append(p)
        self.last_seen = self.last_prediction = now
        self.windows += 1
        if p.truth in ACTIVITIES:
            self.scored += 1
            self.hits += p.smoothed == p.truth
            self._pending_truth.append(p.truth)
            self._pending_pred.append(p.smoothed if p.smoothed in ACTIVITIES else UNKNOWN)
            if len(self._pending_truth) >= MAX_PENDING_PAIRS:  # bounded even if never on screen
                self._fold()

    def add_history(self, h: HistoryUpdate, now: float) -> None:
        """Take a history revision: final pieces join the final history (a
        piece before what is final already is ignored: final is never
        rewritten), the provisional ones replace the last ones."""
        for piece in h.pieces:
            if not piece["final"]:
                continue
            last = self.final[-1] if self.final else None
            if last is not None and piece["start"] < last["end"] - 1e-6:
                continue
            if last is not None and last["label"] == piece["label"] and abs(last["end"] - piece["start"]) < 1e-6:
                last["end"] = piece["end"]
            else:
                self.final.append({"start": piece["start"], "end": piece["end"], "label": piece["label"]})
        until = self.final[-1]["end"] if self.final else -math.inf
        self.provisional = [
            {"start": max(p["start"], until), "end": p["end"], "label": p["label"]}
            for p in h.pieces
            if not p["final"] and p["end"] > until
        ]
        if h.today is not None:
            self.today = h.today
        self.last_seen = now

    def history_segments(self, seconds: float) -> list[dict]:
        """The final history and its provisional end as segments on the
        timeline's axis (0 = the latest window's end, bus seconds; a sped-up
        replay's bus times are compressed, so its history lane is too);
        provisional ones marked."""
        p = self.latest
        if p is None or not (self.final or self.provisional) or not _is_number(p.t_end):
            return []
        speed = 1.0
        out = []
        for seg, provisional in [(s, False) for s in self.final] + [(s, True) for s in self.provisional]:
            start, end = (seg["start"] - p.t_end) * speed, (seg["end"] - p.t_end) * speed
            if end < -seconds or start > 1.0:
                continue
            start, end = max(start, -seconds), min(end, 1.0)
            out.append({"start": start, "end": end, "label": seg["label"], "provisional": provisional})
        return out

    def add_signal(self, s: Signal, now: float) -> None:
        if not (_is_number(s.t0) and _is_number(s.rate) and 0 < s.rate <= MAX_SIGNAL_RATE):
            raise ValueError(f"signal t0 {s.t0!r} and rate {s.rate!r} must be numbers, rate in 0..{MAX_SIGNAL_RATE}")
        acc = np.asarray(s.acc, dtype=np.float32).reshape(-1, 3)
        gyro = np.asarray(s.gyro, dtype=np.float32).reshape(-1, 3)
        # drawn against one time axis: as many rows of each, finite (a chart cannot draw NaN)
        if len(acc) != len(gyro) or not (np.isfinite(acc).all() and np.isfinite(gyro).all()):
            raise ValueError("signal acc and gyro must be as many rows of 3 finite numbers")
        if len(self.signal) == self.signal.maxlen:
            self._signal_n -= len(self.signal[0][2])
        self.signal.append((float(s.t0), float(s.rate), acc, gyro))
        self._signal_n += len(acc)
        self.last_seen = now
        # Keep just over SIGNAL_SECONDS of samples.
        while self._signal_n - len(self.signal[0][2]) >= SIGNAL_SECONDS * s.rate:
            self._signal_n -= len(self.signal.popleft()[2])

    def confusion(self) -> np.ndarray:
        """Session confusion matrix: rows ACTIVITIES (truth), columns PREDICTED."""
        self._fold()
        return self._confusion.copy()

    def _fold(self) -> None:
        if self._pending_truth:
            self._confusion += confusion_matrix(self._pending_truth, self._pending_pred, labels=list(PREDICTED))[
                : len(ACTIVITIES)
            ]
            self._pending_truth.clear()
            self._pending_pred.clear()

    def rolling_accuracy(self, n: int = ROLLING_WINDOWS) -> float | None:
        """Share of the last ``n`` predictions with an activity as truth that match it."""
        hits = total = 0
        for p in reversed(self.predictions):
            if p.truth in ACTIVITIES:
                total += 1
                hits += p.smoothed == p.truth
                if total == n:
                    break
        return hits / total if total else None

    def timeline(self, seconds: float) -> list[dict]:
        """Bands of the last ``seconds`` of recording, oldest first.

        Consecutive windows start one hop (STEP samples, 1.28 s at 50 Hz)
        apart, so the k-th newest prediction owns ``[-(k+1) hop, -k hop]``
        seconds: bands tile the line in the device's own time, whatever the
        replay speed (stream timestamps of a sped-up replay are compressed).
        """
        bands = []
        end = 0.0
        for p in reversed(self.predictions):
            hop = hop_seconds(p)
            if end - hop < -seconds:
                break
            bands.append(
                {
                    "start": end - hop,
                    "end": end,
                    "predicted": p.smoothed,
                    "raw": p.label,
                    "confidence": max(p.smoothed_probs, default=0.0),
                    "truth": truth_category(p.truth),
                }
            )
            end -= hop
        bands.reverse()
        return bands

    def segments(self, seconds: float) -> dict[str, list[dict]]:
        """The timeline as segments per lane, oldest first: ``display`` (the
        label the worker's decoder published, one segment per decision),
        ``raw`` (the per-window argmax) and ``truth`` (replays only)."""
        bands = self.timeline(seconds)
        return {
            "history": self.history_segments(seconds),
            "display": merge_runs(bands, "predicted"),
            "raw": merge_runs(bands, "raw"),
            "truth": merge_runs(bands, "truth"),
        }

    def signal_frame(self, seconds: float = SIGNAL_SECONDS) -> dict[str, np.ndarray]:
        """The last ``seconds`` of raw signal: ``t`` (seconds before the
        newest sample, <= 0), ``acc`` (m, 3) in g, ``gyro`` (m, 3) in rad/s.

        Chunks are taken in arrival order (ZeroMQ keeps one publisher's
        order) and timed by sample count at their rate, which stays right
        for sped-up replays whose timestamps are compressed."""
        if not self.signal:
            return {"t": np.zeros(0), "acc": np.zeros((0, 3)), "gyro": np.zeros((0, 3))}
        rate = self.signal[-1][1]
        acc = np.concatenate([c[2] for c in self.signal])[-int(seconds * rate) :]
        gyro = np.concatenate([c[3] for c in self.signal])[-int(seconds * rate) :]
        t = (np.arange(len(acc)) - (len(acc) - 1)) / rate
        return {"t": t, "acc": acc, "gyro": gyro}


#: Seconds of a worker's running totals its rates on the page are taken over: devices
#: in step finish their windows together, so one stats interval holds several windows or none.
RATE_SPAN_S = 10.0
_TOTALS = {"windows_per_s": "windows", "samples_per_s": "samples"}


class WorkerRates:
    """Windows and samples per second of one worker over its last
    :data:`RATE_SPAN_S`, from the running totals in its stats messages.

    >>> r = WorkerRates()
    >>> for t, w in ((0, 0), (1, 4), (2, 4), (3, 8), (4, 12)):
    ...     r.add(t, {"totals": {"windows": w}})
    >>> r.rate("windows_per_s")
    3.0
    """

    def __init__(self) -> None:
        self._seen: deque[tuple[float, dict[str, float]]] = deque(maxlen=64)  # a flood shortens the span

    def add(self, now: float, stats: dict) -> None:
        totals = stats.get("totals")
        if not isinstance(totals, dict):
            return
        counts = {k: float(v) for k, v in totals.items() if k in _TOTALS.values() and _is_stat(v)}
        if self._seen and any(counts.get(k, 0.0) < v for k, v in self._seen[-1][1].items()):
            self._seen.clear()  # a restarted worker counts from 0 again
        self._seen.append((now, counts))
        while len(self._seen) > 2 and now - self._seen[1][0] >= RATE_SPAN_S:
            self._seen.popleft()

    def rate(self, name: str) -> float | None:
        """Per second over the span, or None before two messages of it."""
        key = _TOTALS.get(name)
        if key is None or len(self._seen) < 2:
            return None
        (t0, first), (t1, last) = self._seen[0], self._seen[-1]
        if t1 <= t0 or key not in first or key not in last:
            return None
        return (last[key] - first[key]) / (t1 - t0)


class LiveState:
    """Everything the dashboard has heard on the output bus."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceState] = {}
        self.stats: dict[str, tuple[float, dict]] = {}  # worker -> (received, stats)
        self.rates: dict[str, WorkerRates] = {}
        self.rejects: Counter[str] = Counter()
        self.messages = 0
        self.first_seen: float | None = None
        self.last_prediction = -math.inf
        self.last_stats = -math.inf

    # ---------------------------------------------------------------- input

    def feed(self, frames: Sequence[bytes], now: float) -> bool:
        """Decode and ingest one message; count and skip it if malformed."""
        try:
            message = decode_output(frames)
        except ProtocolError as exc:
            self.rejects[exc.reason] += 1
            return False
        except (ValueError, TypeError):  # valid JSON, wrong field types
            self.rejects["header"] += 1
            return False
        try:
            self.ingest(message, now)
        except ProtocolError as exc:
            self.rejects[exc.reason] += 1
            return False
        except (ValueError, TypeError, AttributeError):
            self.rejects["header"] += 1
            return False
        return True

    def feed_all(self, messages: Iterable[Sequence[bytes]], now: float) -> int:
        """Feed many messages; returns how many were accepted."""
        return sum(self.feed(frames, now) for frames in messages)

    def ingest(self, message: Prediction | Signal | HistoryUpdate | dict, now: float) -> None:
        """Take one decoded output-bus message."""
        self.messages += 1
        if self.first_seen is None:
            self.first_seen = now
        if isinstance(message, Prediction):
            _check_prediction(message)
            self._device(message.device, now).add_prediction(message, now)
            self.last_prediction = now
        elif isinstance(message, Signal):
            check_device_id(message.device)
            self._device(message.device, now).add_signal(message, now)
        elif isinstance(message, HistoryUpdate):  # checked by decode_history
            self._device(message.device, now).add_history(message, now)
        elif isinstance(message, dict):
            worker = str(message.get("worker", "")) or "worker"
            self.stats.pop(worker, None)  # kept in the order heard, the least recently heard first
            self.stats[worker] = (now, message)
            self.rates.setdefault(worker, WorkerRates()).add(now, message)
            while len(self.stats) > MAX_WORKERS:  # ids that change (restarts) or a publisher inventing them
                forgotten = next(iter(self.stats))
                del self.stats[forgotten]
                self.rates.pop(forgotten, None)
            self.last_stats = now
        else:
            raise TypeError(f"not an output-bus message: {type(message).__name__}")

    def _device(self, device: str, now: float) -> DeviceState:
        state = self.devices.get(device)
        if state is None:
            if len(self.devices) >= MAX_DEVICES:
                self.forget(now, keep=MAX_DEVICES - 1)
            state = self.devices[device] = DeviceState(device)
        return state

    def forget(self, now: float, keep: int = MAX_DEVICES) -> None:
        """Drop devices silent for FORGET_AFTER_S, then the least recently
        seen beyond ``keep``; and workers' stats not heard for as long."""
        for worker in [w for w, (received, _) in self.stats.items() if now - received > FORGET_AFTER_S]:
            del self.stats[worker]
            self.rates.pop(worker, None)
        for name in [d for d, s in self.devices.items() if now - s.last_seen > FORGET_AFTER_S]:
            del self.devices[name]
        if len(self.devices) > keep:
            by_age = sorted(self.devices.values(), key=lambda s: s.last_seen)
            for s in by_age[: len(self.devices) - keep]:
                del self.devices[s.device]

    # --------------------------------------------------------------- output

    def live_devices(self, now: float) -> list[str]:
        """Devices with a prediction in the last LIVE_AFTER_S, in natural
        order (``phone-2`` before ``phone-10``)."""
        return sorted((d for d, s in self.devices.items() if now - s.last_prediction <= LIVE_AFTER_S), key=natural_key)

    def overview(self, now: float) -> list[OverviewRow]:
        """One row per live device, sorted by device id."""
        rows = []
        for name in self.live_devices(now):
            s = self.devices[name]
            p = s.latest
            if p is None:  # live devices have a prediction; a guard for the type checker
                continue
            probs = p.smoothed_probs or p.probs
            classes = classes_of(p)
            if p.smoothed in classes and len(probs) == len(classes):
                confidence = float(probs[classes.index(p.smoothed)])
            else:
                confidence = float(max(probs, default=0.0))
            truth = truth_category(p.truth)
            rows.append(
                OverviewRow(
                    device=name,
                    activity=p.smoothed,
                    confidence=confidence,
                    age_s=max(now - s.last_prediction, 0.0),
                    truth=truth,
                    # a transition on display is neither right nor wrong on the card
                    # (it still counts as a miss in the accuracies)
                    match=(p.smoothed == truth) if truth in ACTIVITIES and p.smoothed not in TRANSITIONS else None,
                    accuracy=s.rolling_accuracy(),
                    windows=s.windows,
                    lasted_s=s.run_seconds,
                    mode=p.mode,
                    today=s.today,
                    placement=p.placement,
                )
            )
        return rows

    def activity_mix(self, now: float) -> dict[str, int]:
        """How many live devices the display shows in each activity now;
        postural transitions count as TRANSITION, anything else as UNKNOWN.
        Keys in DISPLAYED order, only those with a device."""
        counts = Counter(
            display_category(latest.smoothed)
            for d in self.live_devices(now)
            if (latest := self.devices[d].latest) is not None
        )
        return {k: counts[k] for k in DISPLAYED if counts[k]}

    def fleet_accuracy(self) -> tuple[int, int]:
        """``(hits, scored)`` over every device this session: smoothed
        predictions matching an activity as ground truth, out of all such."""
        hits = scored = 0
        for s in self.devices.values():
            hits += s.hits
            scored += s.scored
        return hits, scored

    def health(self, now: float, stale_after: float = STALE_AFTER_S) -> Health:
        """Fleet health; ``problem`` says what the banner should say."""
        fresh_workers = [w for w, (received, _) in self.stats.items() if now - received <= 3 * stale_after]
        fresh = [self.stats[w][1] for w in fresh_workers]
        drops: Counter[str] = Counter()
        for stats in fresh:
            for reason, count in _drops(stats).items():
                drops[reason] += count
        stats_age = now - self.last_stats if self.stats else None
        data_age = now - self.last_prediction if self.last_prediction > -math.inf else None
        if stats_age is None or stats_age > stale_after:
            problem = "no_worker"
        elif data_age is None or data_age > stale_after:
            problem = "no_data"
        else:
            problem = None
        return Health(
            workers=sorted(w for w, (received, _) in self.stats.items() if now - received <= 3 * stale_after),
            devices=None if (n := _sum(fresh, "devices")) is None else int(n),
            samples_per_s=self._rate(fresh_workers, "samples_per_s"),
            windows_per_s=self._rate(fresh_workers, "windows_per_s"),
            latency_p50_ms=_max(fresh, "latency_p50_ms"),
            latency_p99_ms=_max(fresh, "latency_p99_ms"),
            drops=dict(drops),
            rejects=dict(self.rejects),
            stats_age_s=stats_age,
            data_age_s=data_age,
            problem=problem,
        )

    def _rate(self, workers: list[str], name: str) -> float | None:
        """``name`` summed over ``workers``: each over its last seconds where its
        totals say, else as its newest stats message says."""
        values = []
        for w in workers:
            value = self.rates[w].rate(name) if w in self.rates else None
            if value is None:
                value = stats_value(self.stats[w][1], name)
            if value is not None:
                values.append(value)
        return float(sum(values)) if values else None


# -------------------------------------------------------------- stats keys

# The worker's stats keys, with the spellings we also accept, so a renamed
# key degrades to "n/a" on the page rather than an exception.
_STATS_KEYS: dict[str, tuple[str, ...]] = {
    "devices": ("devices", "n_devices", "active_devices"),
    "samples_per_s": ("samples_per_s", "samples_s", "samples_per_sec", "sample_rate"),
    "windows_per_s": ("windows_per_s", "windows_s", "windows_per_sec", "window_rate"),
    "latency_p50_ms": ("latency_p50_ms", "p50_ms", "latency_ms_p50"),
    "latency_p99_ms": ("latency_p99_ms", "p99_ms", "latency_ms_p99"),
}


def stats_value(stats: dict, name: str) -> float | None:
    """A number from a stats message by its dashboard name, or None.

    Looks at the top level and one level down (e.g. ``{"latency_ms":
    {"p50": ...}}``)."""
    for key in _STATS_KEYS.get(name, (name,)):
        value = stats.get(key)
        if _is_stat(value):
            return float(value)
    if name.startswith("latency_") and isinstance(stats.get("latency_ms"), dict):
        value = stats["latency_ms"].get(name.split("_")[1])
        if _is_stat(value):
            return float(value)
    if isinstance(value := stats.get(name), (list, dict)) and name == "devices":
        return float(len(value))
    return None


def _drops(stats: dict) -> dict[str, int]:
    for key in ("drops", "dropped", "rejects", "rejected"):
        value = stats.get(key)
        if isinstance(value, dict):
            return {str(k)[:64]: int(v) for k, v in list(value.items())[:MAX_DROP_REASONS] if _is_stat(v)}
    return {}


def _sum(stats: list[dict], name: str) -> float | None:
    values = [v for s in stats if (v := stats_value(s, name)) is not None]
    return float(sum(values)) if values else None


def _max(stats: list[dict], name: str) -> float | None:
    values = [v for s in stats if (v := stats_value(s, name)) is not None]
    return max(values) if values else None


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: The largest count, total or rate a stats message may give (a worker's sample total
#: at 500,000 a second reaches it in 63 years): beyond it, or below 0, a number is
#: left out as a missing one. 1e308 devices from two workers summed to inf, and the
#: health line's int() of it raised on every refresh; totals of -1e308 then 1e308
#: made a rate of inf windows a second.
MAX_STAT = 1e15


def _is_stat(value: Any) -> TypeGuard[int | float]:
    return _is_number(value) and 0 <= value <= MAX_STAT


_NUMBER_TYPES = {float, int}


def _check_prediction(p: Prediction) -> None:
    """Reject predictions the page could not draw (wrong types, sizes, NaN)."""
    check_device_id(p.device)
    if not isinstance(p.smoothed, str) or not isinstance(p.label, str):
        raise ValueError("label and smoothed must be strings")
    for probs in (p.probs, p.smoothed_probs):
        # Exact types (not isinstance) refuse bools; the sum catches NaN and
        # inf, which JSON lets through. Set of types: C speed for 6 values.
        if not isinstance(probs, list) or not set(map(type, probs)) <= _NUMBER_TYPES:
            raise ValueError("probs must be lists of numbers")
        if not math.isfinite(sum(probs)):
            raise ValueError("probs must be finite")
    if not isinstance(p.mode, str) or len(p.mode) > 32:
        raise ValueError("mode must be a short string")
    if p.placement is not None and p.placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}")
    if p.classes is not None and not (
        isinstance(p.classes, list)
        and len(p.classes) == len(p.probs) <= 64
        and all(isinstance(c, str) and len(c) <= 64 for c in p.classes)
    ):
        raise ValueError("classes must name each entry of probs")
    if not (_is_number(p.t_start) and _is_number(p.t_end)):
        raise ValueError("t_start and t_end must be numbers")
    if type(p.window) is not int or not _is_number(p.latency_ms):  # both are written into the page's text
        raise ValueError("window must be an integer and latency_ms a number")
