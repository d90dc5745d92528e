"""What a worker decides about one partition it owns, without Redis.

:class:`PartitionState` is the sans-I/O core of the worker on the log
(:mod:`~harstream.stream.durable.redis_worker` is the edge that reads and
writes Redis around it). It feeds the partition's devices to a
:class:`~harstream.stream.core.worker.StreamCore` (the worker's one core,
shared by all the partitions it owns, so a model call takes every
partition's windows) through the partition's own
:class:`~harstream.stream.durable.window_keys.WindowGrid`, and decides:

- **what to run**: a window at or below the device's window an earlier owner
  committed (its progress record) is not run through the model again; its
  stored probabilities rebuild the smoother (:meth:`to_run`, :meth:`settle`);
- **what to commit**: every other keyed window, with the device's progress
  record (last window, model, recent probabilities) (:meth:`settle`);
  the fenced commit script skips a window at or below the stored one, so a
  replay never writes twice;
- **what is fenced**: once a write was refused for a lost lease
  (:meth:`fence`), or the lease's last renewal is older than its time to
  live, the partition reads nothing (:meth:`readable`, :meth:`admit`) and
  publishes nothing (:meth:`to_publish`);
- **where a rebuild starts**: ``context + warm-up`` windows before a
  device's first uncommitted window, on the window grid (:meth:`replay_from`).

>>> import numpy as np
>>> from harstream.stream.core.protocol import SampleBatch
>>> from harstream.stream.core.worker import StreamCore, WorkerConfig
>>> from harstream.stream.durable.leases import Lease
>>> core = StreamCore(list("ABCDEF"), "m", WorkerConfig(between_devices=0))  # the log keys windows by number
>>> state = PartitionState(Lease(3, "w", epoch=2), core)
>>> state.load_progress({"d": {"w": 1, "m": "waist", "recent": [[1, [1, 0, 0, 0, 0, 0]]]}})  # no junk
[]
>>> state.admit(SampleBatch("d", 0, 0.0, np.zeros((256, 6), np.float32)), now=0.0)
True
>>> x, taken = state.core.take_batch()
>>> keys, old = state.to_run(taken)
>>> keys, old.tolist()                      # windows 0 and 1 were committed by the earlier owner
([0, 1, 2], [True, True, False])
>>> settled = state.settle(taken, keys, old, np.full((1, 6), 1 / 6), now=0.1)
>>> [row[1] for row in settled.rows], settled.replayed
([2], 2)
>>> state.fence(); state.to_publish(settled), state.readable(now=0.2, ttl_s=0.6)
([], False)
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from harstream.stream.core.incarnation import FOREIGN, JUMP
from harstream.stream.core.model_routing import stats_key
from harstream.stream.core.pipeline import STEP
from harstream.stream.core.protocol import Prediction, SampleBatch
from harstream.stream.core.worker import PendingWindow, StreamCore
from harstream.stream.durable.leases import Lease
from harstream.stream.durable.window_keys import WindowGrid


@dataclass
class Settled:
    """What a labelled batch of one partition comes to."""

    rows: list[tuple[str, int, dict, dict]]  # to commit: (device, window, prediction body, progress record)
    publish: list[Prediction]  # to publish once the commit held
    replayed: int = 0  # windows an earlier owner committed: neither committed again nor published
    unkeyed: int = 0  # windows of a pipeline generation the grid no longer knows


@dataclass
class PartitionState:
    """One owned partition: its lease, the core its devices go to, its window
    grid and what earlier owners committed."""

    lease: Lease
    core: StreamCore
    smooth_windows: int = 5
    grid: WindowGrid = field(default_factory=WindowGrid)
    committed: dict[str, int] = field(default_factory=dict)  # device -> last window an earlier owner wrote
    # their last probabilities: device -> (key of the model that made them, or None if not recorded, {window: probs})
    stored: dict[str, tuple[str | None, dict[int, list[float]]]] = field(default_factory=dict)
    # device -> (model key, (window, probs) of that model) for the progress record
    recent: dict[str, tuple[str, deque]] = field(default_factory=dict)
    renewed: float = 0.0  # monotonic time of the last successful renewal
    fenced: bool = False  # a write was refused: another owner holds the partition
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.core.config.between_devices != 0:
            # the log keys and commits windows by number; a display-only window between two has none
            raise ValueError("a partition's core must give no updates between windows (between_devices=0)")

    # ------------------------------------------------------------ takeover

    def load_progress(self, records: Mapping[str, Mapping | str | bytes]) -> list[str]:
        """Take the partition's progress records (device -> ``{"w", "m",
        "recent"}``, parsed or as the broker holds them, JSON). A record that
        is not one a worker writes (another client's junk: not JSON, a window
        that is no count, probabilities that are no numbers in 0..1) is left
        out, as if the device had none; returns the devices of those."""
        junk = []
        for device, raw in records.items():
            record = progress_record(raw)
            if record is None:
                junk.append(device)
                continue
            w, model, recent = record
            self.committed[device] = w
            self.stored[device] = (model, dict(recent))
            if model is not None:
                self.recent[device] = (model, deque(recent, maxlen=self.smooth_windows))
        return junk

    def replay_from(self, device: str, context_windows: int) -> int:
        """The first seq of ``device`` a rebuild feeds its pipeline: ``context_windows``
        windows before its first uncommitted one (0 for a device never committed)."""
        done = self.committed.get(device)
        return 0 if done is None else max(0, (done + 1 - context_windows) * STEP)

    def count_unlogged(self, first_seq: Mapping[str, int]) -> None:
        """Samples past a device's committed window that the log no longer had
        (``first_seq``: each device's first seq in the replayed tail)."""
        for device, done in self.committed.items():
            if device in first_seq and first_seq[device] > (done + 1) * STEP:
                self.grid.counts["lost_samples"] += first_seq[device] - (done + 1) * STEP

    # ---------------------------------------------------------------- read

    def readable(self, now: float, ttl_s: float) -> bool:
        """Whether the partition may be read: not fenced, renewed within ``ttl_s``."""
        return not self.fenced and self.renewed > now - ttl_s

    def admit(self, batch: SampleBatch, now: float, start_at: int = 0) -> bool:
        """Give one logged batch to the core through the window grid; True if
        the core got samples. A batch the core's incarnation refuses (a seq far
        ahead, another session on a live device) goes to the core unaligned,
        which counts it (``jump``, ``session``) as the bus worker does, and never
        reaches the grid: it must not move the device's seq."""
        if self.fenced:
            return False
        if self.core.judge(batch, now) in (JUMP, FOREIGN):
            self.core.accept(batch, now)
            return False
        admitted = self.grid.admit(batch, start_at=start_at)
        if admitted is None:
            return False
        self.core.accept(admitted, now)
        return True

    # ------------------------------------------------------------- predict

    def to_run(self, taken: Sequence[PendingWindow]) -> tuple[list[int | None], np.ndarray]:
        """Each window's key (device window number; None if unknown) and
        which of them an earlier owner committed (True: not run again)."""
        keys = [self.grid.key(w.device, w.generation, w.window) for w in taken]
        old = np.array([k is not None and k <= self.committed.get(w.device, -1) for w, k in zip(taken, keys)], bool)
        return keys, old

    def settle(
        self, taken: Sequence[PendingWindow], keys: list[int | None], old: np.ndarray, probs_new: np.ndarray, now: float
    ) -> Settled:
        """The predictions of a batch whose new windows (``~old``) the model
        labelled ``probs_new``; the rows to commit and what to publish after."""
        n_classes = (
            len(taken[0].served.output_classes) if taken else 0
        )  # a personal head's windows get the shared model's classes
        probs = np.empty((len(taken), n_classes))
        probs[~old] = probs_new
        for i in np.flatnonzero(old):
            probs[i] = self._stored_probs(taken[int(i)], keys[int(i)])
        predictions = self.core.finish_batch(taken, probs, now)
        settled = Settled([], [])
        for w, pred, key, was_old in zip(taken, predictions, keys, old):
            if key is None:
                settled.unkeyed += 1
                continue
            model, recent = self.recent.get(pred.device, (None, None))
            if model != stats_key(w.served) or recent is None:  # another model's probabilities mean nothing to this one
                recent = deque(maxlen=self.smooth_windows)
                self.recent[pred.device] = (stats_key(w.served), recent)
            recent.append((key, pred.probs))
            if was_old:
                settled.replayed += 1
                continue
            pred = dataclasses.replace(pred, window=key)
            progress = {"w": key, "m": stats_key(w.served), "recent": list(recent)}
            settled.rows.append((pred.device, key, {"v": 1, **pred.__dict__}, progress))
            settled.publish.append(pred)
        return settled

    def devices(self) -> list[str]:
        """The partition's devices the core holds (or held) samples of."""
        return self.grid.devices()

    def fence(self) -> None:
        """A write was refused: another owner holds the partition now."""
        self.fenced = True

    def to_publish(self, settled: Settled) -> list[Prediction]:
        """What may be published of ``settled`` once its commit returned: nothing from a fenced owner."""
        return [] if self.fenced else settled.publish

    def forget(self, devices: Sequence[str]) -> None:
        """The core evicted ``devices``: their next samples start afresh."""
        for device in devices:
            self.grid.forget(device)
            self.committed.pop(device, None)
            self.stored.pop(device, None)
            self.recent.pop(device, None)

    def _stored_probs(self, window: PendingWindow, key: int | None) -> list[float]:
        """The probabilities an earlier owner committed for ``window`` (key
        ``key``), if they came from the model that now serves it; else uniform
        over its classes (the smoother restarts a little less informed)."""
        n = len(window.served.output_classes)  # (a personal head's stored output is not the shared model's: uniform)
        model, probs = self.stored.get(window.device, (None, {}))
        got = probs.get(key) if key is not None else None
        if got is None or len(got) != n or (model is not None and model != stats_key(window.served)):
            return [1.0 / n] * n
        return got


#: The largest window number a progress record may hold (the bus's largest seq, in windows).
MAX_WINDOW = 2**53 // STEP
#: The most classes a stored probability row may have.
MAX_CLASSES = 64


def progress_record(raw: Mapping | str | bytes) -> tuple[int, str | None, list[tuple[int, list[float]]]] | None:
    """``(window, model, recent)`` of one progress record, or None if it is
    not one a worker writes.

    >>> progress_record(b'{"w": 3, "m": "waist", "recent": [[3, [0.5, 0.5]]]}')
    (3, 'waist', [(3, [0.5, 0.5])])
    >>> progress_record(b"junk"), progress_record('{"w": "3"}'), progress_record('{"w": 3, "recent": [[3, ["x"]]]}')
    (None, None, None)
    """
    if not isinstance(raw, Mapping):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, a 5000-digit number, nested too deep
            return None
    if not isinstance(raw, Mapping):
        return None
    w, model, recent = raw.get("w"), raw.get("m"), raw.get("recent", [])
    if not isinstance(w, int) or not _count(w) or not (model is None or isinstance(model, str)):
        return None
    if not isinstance(recent, list):
        return None
    rows = []
    for row in recent[:64]:
        if not (isinstance(row, list) and len(row) == 2 and _count(row[0]) and isinstance(row[1], list)):
            return None
        probs = row[1]
        if len(probs) > MAX_CLASSES or not all(_probability(v) for v in probs):
            return None
        rows.append((int(row[0]), [float(v) for v in probs]))
    return w, model, rows


def _count(value) -> bool:
    return type(value) is int and -1 <= value <= MAX_WINDOW


def _probability(value) -> bool:
    return type(value) in (int, float) and 0.0 <= value <= 1.0
