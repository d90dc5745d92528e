"""The stream worker: samples in from the ingest bus, predictions out.

The core, :class:`StreamCore`, is a pure state machine with no sockets: feed
it message frames with the time they arrived, take batches of completed
windows, hand back the model's probabilities, and collect the predictions,
signal feed and statistics to publish. :func:`serve` puts ZeroMQ sockets at
its edges.

Per device the core keeps a :class:`~harstream.stream.pipeline.DevicePipeline`,
for a model with context windows (``WorkerConfig.context_steps``) a
:class:`~harstream.stream.context.WindowContext` of its recent windows, and
the next expected ``seq``:

- ``seq`` as expected: accepted.
- ``seq`` ahead (a gap): the device's pipeline (and window context) restarts
  at the new ``seq`` (filters and windows would otherwise straddle missing
  data); counted as a reset and logged.
- ``seq`` behind: a duplicate or out-of-order chunk, dropped and counted —
  except ``seq == 0``, which means the device (or its replay) started over:
  the pipeline restarts.
- a malformed message: dropped, counted by reason, logged once per reason.

Raw samples are buffered per device and pushed through the pipeline only when
they complete a window (the pipeline is chunk-invariant, so the windows are
the same), and the devices that completed a window meanwhile are filtered
together in one vectorised call; this cuts filter calls from one per message
to a few per batch.
Devices silent for ``idle_timeout`` seconds are evicted. Every queue is
bounded: windows waiting for inference (oldest dropped, counted as
``overload``) and the number of devices (new ones refused as ``devices_full``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .activities import label_name
from .batch_push import push_many
from .context import WindowContext
from .pipeline import STEP, WINDOW, DevicePipeline, check_samples
from .rate import RATE_HZ
from .protocol import (
    Prediction,
    ProtocolError,
    SampleBatch,
    Signal,
    decode_samples,
    shard_of,
)
from .smoothing import DEFAULT_THRESHOLD, DEFAULT_WINDOWS, Smoother

log = logging.getLogger(__name__)

# Reasons the worker drops data besides protocol.REASONS.
WORKER_REASONS = (
    "duplicate",  # seq behind the expected one: duplicate or out-of-order chunk
    "shard",  # a device outside this worker's shard
    "devices_full",  # a new device while max_devices are tracked
    "overload",  # a window dropped because max_pending windows were waiting
    "pipeline",  # the pipeline refused the samples
    "inference",  # the model runtime failed on a batch
    "output_hwm",  # an output message not sent: a subscriber's queue was full
    "probabilities",  # a window's probabilities had NaN or did not sum to 1: not displayed
)


@dataclass
class WorkerConfig:
    """Tunables of the worker core (defaults suit thousands of devices)."""

    max_batch: int = 64  # windows per model call
    max_wait: float = 0.005  # seconds a completed window may wait for a batch to fill
    smooth_windows: int = DEFAULT_WINDOWS
    threshold: float = DEFAULT_THRESHOLD
    idle_timeout: float = 30.0  # seconds without samples before a device is evicted
    max_devices: int = 50_000
    max_pending: int = 8192  # windows waiting for inference
    signal_interval: float = 0.5  # seconds between signal messages per device; 0 = off
    signal_decimation: int = 5  # 50 Hz -> 10 Hz for display
    shard: tuple[int, int] | None = None  # (k, N): only devices with shard_of % N == k
    n_shards: int = 64
    context_steps: tuple[int, ...] = ()  # the model also takes the windows this many steps back
    # a staged model's feature stage, (n, 128, 9) -> (n, F): each window's features are computed
    # once, for all devices' new windows together, and the context stacks feature vectors
    features: Callable[[np.ndarray], np.ndarray] | None = None
    # factory of each device's display core (stream.decoder.display_for); None = moving average
    display: Callable[[], Smoother] | None = None


@dataclass
class PendingWindow:
    """A completed window waiting for the model."""

    device: str
    generation: int
    window: int
    # (128, 9) float32; (1 + len(context_steps), 128, 9) for a context model; with a staged
    # model's feature stage (WorkerConfig.features) feature vectors instead of windows: (1 + k, F)
    x: np.ndarray
    arrived: float  # monotonic time its last sample arrived
    t_start: float
    t_end: float
    truth: str | None


class DeviceState:
    """What the worker knows about one device."""

    __slots__ = (
        "device", "generation", "pipeline", "next_seq", "raw", "raw_labels", "raw_n",
        "labels", "label_base", "has_labels", "last_seen", "smoother", "t0", "seq0", "seq0_batch", "rate",
        "sig", "sig_t0", "sig_last", "ready_at", "context_steps", "context",
    )  # fmt: skip

    def __init__(self, device: str, seq: int, classes: Sequence[str], config: WorkerConfig, now: float):
        self.device = device
        self.generation = 0
        self.smoother = config.display() if config.display else Smoother(classes, config.smooth_windows, config.threshold)
        self.sig: list[np.ndarray] = []
        self.sig_t0: float | None = None
        self.sig_last = now
        self.last_seen = now
        self.ready_at: float | None = None  # when buffered samples completed a window
        self.t0, self.seq0_batch, self.rate = 0.0, seq, RATE_HZ
        self.context_steps = config.context_steps
        self.restart(seq)

    def restart(self, seq: int) -> None:
        """Start the pipeline afresh with ``seq`` as its first sample."""
        self.generation += 1
        self.pipeline = DevicePipeline()
        # the model's past windows must not straddle a gap either
        self.context = WindowContext(self.context_steps) if self.context_steps else None
        self.next_seq = seq
        self.seq0 = seq  # seq of pipeline sample 0
        self.raw: list[np.ndarray] = []
        self.raw_labels: list[np.ndarray | None] = []
        self.raw_n = 0
        self.labels = np.empty(0, np.int16)  # labels of pipeline samples label_base..
        self.label_base = 0
        self.has_labels = False
        self.smoother.reset()
        # The display feed must not join samples from both sides of a gap.
        self.sig = []
        self.sig_t0 = None

    @property
    def next_window_end(self) -> int:
        """Pipeline sample count at which the next window completes."""
        return self.pipeline.emitted * STEP + WINDOW


class StreamCore:
    """Per-device state, batching and smoothing of the worker; no sockets.

    >>> from harstream.stream.protocol import SampleBatch, encode_samples
    >>> core = StreamCore(["A", "B", "C", "D", "E", "F"], model_id="m")
    >>> frames = encode_samples(SampleBatch("d1", seq=0, t0=0.0, samples=np.zeros((128, 6))))
    >>> core.ingest(frames, now=0.0)
    >>> x, pending = core.take_batch()
    >>> x.shape, pending[0].device
    ((1, 128, 9), 'd1')
    >>> core.finish_batch(pending, np.full((1, 6), 1 / 6), now=0.01)[0].window
    0
    """

    def __init__(
        self,
        classes: Sequence[str],
        model_id: str,
        config: WorkerConfig | None = None,
        worker_id: str = "worker",
        wall_clock: Callable[[], float] = time.time,
    ):
        self.classes = list(classes)
        self.model_id = model_id
        self.config = config or WorkerConfig()
        self.worker_id = worker_id
        self.wall_clock = wall_clock
        self.devices: dict[str, DeviceState] = {}
        self._pending: list[PendingWindow] = []
        self._ready: list[DeviceState] = []  # devices whose buffered samples complete a window
        self.drops: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._latencies: list[float] = []
        self._lags: list[float] = []
        self._batch_sizes: list[int] = []
        self._last_stats: tuple[float, Counter[str]] | None = None
        self._pending_high_water = 0
        self.started = None

    # ------------------------------------------------------------- ingest

    def ingest(self, frames: Sequence[bytes], now: float) -> None:
        """Take one message; bad ones are counted and dropped, never raised."""
        self.totals["messages"] += 1
        try:
            batch = decode_samples(frames)
        except ProtocolError as exc:
            self._drop(exc.reason, exc.detail)
            return
        except Exception as exc:  # a decoder bug must not stop the worker
            self._drop("header", f"undecodable message ({type(exc).__name__}: {exc})")
            return
        self.accept(batch, now)

    def accept(self, batch: SampleBatch, now: float) -> None:
        """Take one decoded batch of samples."""
        cfg = self.config
        if cfg.shard is not None and shard_of(batch.device, cfg.n_shards) % cfg.shard[1] != cfg.shard[0]:
            self._drop("shard", f"device {batch.device} is not in shard {cfg.shard[0]}/{cfg.shard[1]}")
            return
        state = self.devices.get(batch.device)
        if state is None:
            if len(self.devices) >= cfg.max_devices:
                self._drop("devices_full", f"already tracking {cfg.max_devices} devices")
                return
            state = self.devices[batch.device] = DeviceState(batch.device, batch.seq, self.classes, cfg, now)
            self.totals["devices_seen"] += 1
        elif batch.seq != state.next_seq:
            if (state.ready_at is not None and batch.seq >= state.next_seq) or batch.seq == 0:
                self.flush()  # windows the old stream completed go out before any reset
            if batch.seq > state.next_seq:
                self.totals["gaps"] += 1
                self._note(
                    "gap",
                    f"device {batch.device}: samples {state.next_seq}..{batch.seq - 1} missing; pipeline reset",
                )
                state.restart(batch.seq)
            elif batch.seq == 0:
                self.totals["restarts"] += 1
                self._note("restart", f"device {batch.device} started over at seq 0; pipeline reset")
                state.restart(0)
            else:
                self._drop(
                    "duplicate",
                    f"device {batch.device}: seq {batch.seq} but {state.next_seq} expected",
                )
                return
        state.last_seen = now
        state.t0, state.seq0_batch, state.rate = batch.t0, batch.seq, batch.rate  # anchor for times
        n = len(batch)
        state.next_seq = batch.seq + n
        state.raw.append(batch.samples)
        state.raw_labels.append(batch.labels)
        state.has_labels |= batch.labels is not None
        state.raw_n += n
        self.totals["samples"] += n
        if cfg.signal_interval > 0:
            self._collect_signal(state, batch)
        if state.ready_at is None and state.pipeline.samples_seen + state.raw_n >= state.next_window_end:
            state.ready_at = now
            self._ready.append(state)
            if len(self._ready) >= 4 * cfg.max_batch:
                self.flush()

    def flush(self) -> None:
        """Push the buffered samples of every device that completed a window,
        all at once (:func:`~harstream.stream.batch_push.push_many`)."""
        if not self._ready:
            return
        ready, self._ready = self._ready, []
        jobs = []
        for state in ready:
            arrived, state.ready_at = state.ready_at, None
            if state.raw_n == 0:  # restarted meanwhile
                continue
            raw = state.raw[0] if len(state.raw) == 1 else np.concatenate(state.raw)
            labels = None
            if state.has_labels:
                labels = np.concatenate(
                    [lab if lab is not None else np.full(len(r), -1, np.int16)
                     for r, lab in zip(state.raw, state.raw_labels)]  # fmt: skip
                )
            state.raw, state.raw_labels, state.raw_n = [], [], 0
            try:  # validated here so that push_many never fails half-way
                raw = check_samples(raw, f"device {state.device}")
            except ValueError as exc:
                self._drop("pipeline", str(exc))
                continue
            jobs.append((state, raw, labels, arrived, state.pipeline.emitted, state.pipeline.samples_seen))
        results = push_many([j[0].pipeline for j in jobs], [j[1] for j in jobs])
        inputs = self._window_inputs(results)
        for (state, _, labels, arrived, first_window, seen_before), windows, x in zip(jobs, results, inputs):
            self._emit(state, windows, x, labels, arrived, first_window, seen_before)

    def _window_inputs(self, results: list[np.ndarray]) -> list[np.ndarray | None]:
        """What the model takes of each device's new windows: the windows, or
        for a staged model their features, computed for all devices in one
        call (None where that call failed: those windows are dropped, counted)."""
        features = self.config.features
        if features is None:
            return list(results)
        counts = [len(w) for w in results]
        if not sum(counts):
            return [None] * len(results)
        try:
            f = features(np.concatenate([w for w in results if len(w)]))
            if len(f) != sum(counts):
                raise ValueError(f"the feature stage returned {len(f)} rows for {sum(counts)} windows")
        except Exception as exc:  # a broken runtime must not stop the worker
            self.drops["inference"] += sum(counts) - 1
            self._drop("inference", f"{sum(counts)} windows: feature stage failed: {type(exc).__name__}: {exc}")
            return [None] * len(results)
        return np.split(f, np.cumsum(counts)[:-1])

    def _emit(self, state: DeviceState, windows: np.ndarray, x: np.ndarray | None, labels: np.ndarray | None,
              now: float, first_window: int, seen_before: int) -> None:  # fmt: skip
        """Queue a device's new ``windows`` (model inputs ``x``: the windows or
        their features; None: not served) for the model."""
        if labels is not None:
            if len(state.labels) == 0:
                state.label_base = seen_before
            state.labels = np.concatenate([state.labels, labels])
        if x is None:
            model_inputs = windows[:0]
        else:
            model_inputs = state.context.push(x) if state.context is not None else x
        for i, x in enumerate(model_inputs):
            j = first_window + i
            end = j * STEP + WINDOW - 1  # pipeline index of the window's last sample
            t_end = state.t0 + (state.seq0 + end - state.seq0_batch) / state.rate
            truth = None
            if labels is not None and 0 <= end - state.label_base < len(state.labels):
                truth = label_name(int(state.labels[end - state.label_base]))
            self._enqueue(
                PendingWindow(state.device, state.generation, j, x, now,
                              t_end - (WINDOW - 1) / state.rate, t_end, truth)  # fmt: skip
            )
        if labels is not None:
            keep_from = state.next_window_end - 1
            cut = max(0, keep_from - state.label_base)
            state.labels = state.labels[cut:]
            state.label_base += cut
        self.totals["windows"] += len(windows)

    def _enqueue(self, window: PendingWindow) -> None:
        if len(self._pending) >= self.config.max_pending:
            old = self._pending.pop(0)
            self._drop("overload", f"{self.config.max_pending} windows waiting; dropped one of {old.device}")
        self._pending.append(window)
        self._pending_high_water = max(self._pending_high_water, len(self._pending))

    def _collect_signal(self, state: DeviceState, batch: SampleBatch) -> None:
        step = self.config.signal_decimation
        first = (-batch.seq) % step  # keep samples whose seq is a multiple of step
        if first >= len(batch):
            return
        if state.sig_t0 is None:
            state.sig_t0 = batch.t0 + first / batch.rate
        state.sig.append(batch.samples[first::step])

    # ------------------------------------------------------------ batches

    @property
    def pending(self) -> list[PendingWindow]:
        """Completed windows waiting for the model, oldest first."""
        self.flush()
        return self._pending

    def next_deadline(self) -> float | None:
        """Monotonic time by which the waiting windows must run, if any."""
        self.flush()
        return self._pending[0].arrived + self.config.max_wait if self._pending else None

    def batch_due(self, now: float) -> bool:
        self.flush()
        return bool(self._pending) and (
            len(self._pending) >= self.config.max_batch or now >= self._pending[0].arrived + self.config.max_wait
        )

    def take_batch(self) -> tuple[np.ndarray, list[PendingWindow]]:
        """Up to ``max_batch`` waiting windows, oldest first, as one array."""
        self.flush()
        taken = self._pending[: self.config.max_batch]
        del self._pending[: self.config.max_batch]
        if not taken:
            return np.empty((0, WINDOW, 9), np.float32), []
        self._batch_sizes.append(len(taken))
        return np.stack([w.x for w in taken]), taken

    def finish_batch(self, taken: Sequence[PendingWindow], probs: np.ndarray, now: float) -> list[Prediction]:
        """Predictions for a batch the model has labelled with ``probs``."""
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (len(taken), len(self.classes)):
            # A runtime that lost rows must not silently lose windows.
            raise ValueError(f"model returned {probs.shape} for {len(taken)} windows")
        out = []
        wall = self.wall_clock()
        for w, p in zip(taken, probs):
            state = self.devices.get(w.device)
            raw = [round(float(v), 6) for v in p]
            if state is not None and state.generation == w.generation:
                smoothed, smoothed_probs = state.smoother.update(raw)
                if state.smoother.refused:
                    self._drop("probabilities", f"device {w.device} window {w.window}: {state.smoother.refused}")
            else:  # the device was reset or evicted meanwhile: this window stands alone
                smoothed, smoothed_probs = Smoother(self.classes, 1, self.config.threshold).update(raw)
            latency = (now - w.arrived) * 1000.0
            self._latencies.append(latency)
            self._lags.append((wall - w.t_end) * 1000.0)
            out.append(
                Prediction(
                    device=w.device, window=w.window, t_start=w.t_start, t_end=w.t_end,
                    label=self.classes[int(p.argmax())], probs=raw, smoothed=smoothed,
                    smoothed_probs=smoothed_probs, model=self.model_id,
                    latency_ms=round(latency, 3), truth=w.truth, worker=self.worker_id,
                )  # fmt: skip
            )
        self.totals["predictions"] += len(out)
        return out

    # ----------------------------------------------------- periodic tasks

    def take_signals(self, now: float) -> list[Signal]:
        """Signal messages of devices whose interval has passed."""
        out = []
        if self.config.signal_interval <= 0:
            return out
        rate = None
        for state in self.devices.values():
            if not state.sig or now - state.sig_last < self.config.signal_interval:
                continue
            rate = state.rate / self.config.signal_decimation
            data = np.round(np.concatenate(state.sig), 4)
            out.append(Signal(state.device, state.sig_t0, rate, data[:, :3].tolist(), data[:, 3:].tolist()))
            state.sig, state.sig_t0, state.sig_last = [], None, now
        return out

    def evict_idle(self, now: float) -> list[str]:
        """Forget devices silent for longer than ``idle_timeout``."""
        gone = [d for d, s in self.devices.items() if now - s.last_seen > self.config.idle_timeout]
        for device in gone:
            del self.devices[device]
            log.info("device %s idle for %.0f s; state evicted", device, self.config.idle_timeout)
        self.totals["evicted"] += len(gone)
        return gone

    def stats(self, now: float) -> dict:
        """Statistics since the previous call (rates) and since start (totals)."""
        if self._last_stats is None:
            since, before = (self.started if self.started is not None else now), Counter()
        else:
            since, before = self._last_stats
        elapsed = max(now - since, 1e-9)
        lat = np.asarray(self._latencies) if self._latencies else None
        lag = np.asarray(self._lags) if self._lags else None
        sizes = self._batch_sizes
        stats = {
            "devices": len(self.devices),
            "interval_s": round(elapsed, 3),
            "samples_per_s": round((self.totals["samples"] - before["samples"]) / elapsed, 1),
            "windows_per_s": round((self.totals["windows"] - before["windows"]) / elapsed, 1),
            "predictions_per_s": round((self.totals["predictions"] - before["predictions"]) / elapsed, 1),
            "messages_per_s": round((self.totals["messages"] - before["messages"]) / elapsed, 1),
            "batches": len(sizes),
            "batch_mean": round(float(np.mean(sizes)), 2) if sizes else 0.0,
            "batch_max": max(sizes) if sizes else 0,
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 2) if lat is not None else None,
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 2) if lat is not None else None,
            "lag_p50_ms": round(float(np.percentile(lag, 50)), 2) if lag is not None else None,
            "lag_p99_ms": round(float(np.percentile(lag, 99)), 2) if lag is not None else None,
            "pending": len(self._pending),
            "pending_high_water": self._pending_high_water,
            "drops": dict(self.drops),
            "totals": dict(self.totals),
            "model": self.model_id,
        }
        self._last_stats = (now, Counter(self.totals))
        self._latencies, self._lags, self._batch_sizes = [], [], []
        return stats

    # ------------------------------------------------------------ helpers

    @property
    def ready_devices(self) -> int:
        """Devices whose buffered samples complete a window, not yet filtered."""
        return len(self._ready)

    def count_drop(self, reason: str, detail: str) -> None:
        """Count (and log the first of each reason) something dropped."""
        self._drop(reason, detail)

    def _drop(self, reason: str, detail: str) -> None:
        self.drops[reason] += 1
        self._note(reason, detail)

    def _note(self, reason: str, detail: str) -> None:
        # Once per reason at WARNING (a flood must not flood the log), then DEBUG.
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("%s: %s (further ones are counted in stats)", reason, detail)
        else:
            log.debug("%s: %s", reason, detail)


def format_stats(stats: dict) -> str:
    """One line for a terminal."""
    drops = ",".join(f"{k}={v}" for k, v in sorted(stats.get("drops", {}).items())) or "none"
    return (
        f"[{stats.get('worker', '?')}] devices={stats['devices']} samples/s={stats['samples_per_s']:.0f} "
        f"windows/s={stats['windows_per_s']:.1f} batch={stats['batch_mean']:.1f}(max {stats['batch_max']}) "
        f"latency p50={stats['latency_p50_ms']} p99={stats['latency_p99_ms']} ms "
        f"lag p99={stats['lag_p99_ms']} ms pending={stats['pending']} drops={drops}"
    )


# ------------------------------------------------------------------- the edge


def serve(
    runtime,
    classes: Sequence[str],
    model_id: str,
    ingest: str | None = None,
    output: str | None = None,
    config: WorkerConfig | None = None,
    worker_id: str | None = None,
    stop=None,
    stats_every: float = 1.0,
    print_every: float = 5.0,
    rcvhwm: int = 200_000,
    sndhwm: int = 200_000,
    context=None,
    on_ready: Callable[[], None] | None = None,
    printer: Callable[[str], None] | None = print,
    on_bound: Callable[[str, str], None] | None = None,
) -> dict:
    """Run the worker on ZeroMQ sockets until ``stop`` (a threading.Event) is set.

    ``runtime`` has ``predict(x) -> probs``. ``ingest``/``output`` are
    endpoints as in :mod:`~harstream.stream.bus` (the worker binds both by
    default). ``on_bound(ingest, output)`` is called before ``on_ready`` with
    the addresses actually attached, so ``tcp://127.0.0.1:*`` can let the OS
    pick a free port. Returns the last statistics.
    """
    import os
    import threading

    import zmq

    from .bus import ingest_address, output_address
    from .protocol import SAMPLES_PREFIX, encode_prediction, encode_signal, encode_stats, shard_prefixes

    config = config or WorkerConfig()
    worker_id = worker_id or (
        f"shard{config.shard[0]}of{config.shard[1]}-{os.getpid()}" if config.shard else f"worker-{os.getpid()}"
    )
    stop = stop or threading.Event()
    ctx = context or zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, rcvhwm)
    sub.setsockopt(zmq.LINGER, 0)
    prefixes = shard_prefixes(*config.shard) if config.shard else [SAMPLES_PREFIX]
    for prefix in prefixes:
        sub.setsockopt(zmq.SUBSCRIBE, prefix)
    # XPUB with NODROP: a full subscriber queue makes a non-blocking send fail
    # with EAGAIN, so drops are counted instead of happening silently.
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, sndhwm)
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    pub.setsockopt(zmq.LINGER, 0)
    core = StreamCore(classes, model_id, config, worker_id)
    try:
        in_addr = _attach_retrying(sub, ingest or ingest_address())
        out_addr = _attach_retrying(pub, output or output_address())
        log.info("worker %s: ingest %s, output %s, %s", worker_id, in_addr, out_addr,
                 f"shard {config.shard[0]}/{config.shard[1]}" if config.shard else "all shards")  # fmt: skip
        if on_bound:
            on_bound(sub.getsockopt_string(zmq.LAST_ENDPOINT), pub.getsockopt_string(zmq.LAST_ENDPOINT))

        def send(frames: list[bytes]) -> None:
            try:
                pub.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                core.count_drop("output_hwm", "a subscriber's queue is full; output dropped")

        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        now = time.monotonic()
        core.started = now
        next_stats, next_print, next_chores = now + stats_every, now + print_every, now + 0.1
        stats: dict = {}
        if on_ready:
            on_ready()
        while not stop.is_set():
            now = time.monotonic()
            deadline = core.next_deadline()
            wake = min(next_chores, deadline if deadline is not None else next_chores)
            if poller.poll(max(0.0, wake - now) * 1000.0):
                for _ in range(5000):
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    core.ingest(frames, time.monotonic())
                    if core.ready_devices >= config.max_batch:
                        break
            now = time.monotonic()
            while core.batch_due(now):
                x, taken = core.take_batch()
                try:
                    probs = runtime.predict(x)
                    now = time.monotonic()
                    predictions = core.finish_batch(taken, probs, now)
                except Exception as exc:  # never die on a batch
                    core.count_drop("inference", f"{len(taken)} windows: {type(exc).__name__}: {exc}")
                    continue
                for p in predictions:
                    send(encode_prediction(p))
            if now >= next_chores:
                next_chores = now + 0.1
                for signal in core.take_signals(now):
                    send(encode_signal(signal))
                core.evict_idle(now)
                try:  # subscription messages queue up on an XPUB unless read
                    while True:
                        pub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    pass
            if now >= next_stats:
                next_stats = now + stats_every
                stats = {"worker": worker_id, "runtime": getattr(runtime, "name", "?"), **core.stats(now)}
                if config.shard:
                    stats["shard"] = f"{config.shard[0]}/{config.shard[1]}"
                send(encode_stats(worker_id, stats))
                if printer and now >= next_print:
                    next_print = now + print_every
                    printer(format_stats(stats))
        return {"worker": worker_id, **core.stats(time.monotonic())}
    finally:
        sub.close(0)
        pub.close(0)


def _attach_retrying(socket, endpoint: str, timeout: float = 10.0) -> str:
    """Bind (or connect) as ``attach`` does, retrying for a while if the
    address is still held: a restarted worker's predecessor may not have
    released it yet (ZeroMQ closes sockets asynchronously)."""
    import errno

    import zmq

    from .bus import attach

    deadline = time.monotonic() + timeout
    while True:
        try:
            return attach(socket, endpoint, "bind")
        except zmq.ZMQError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                raise
            log.warning("%s is in use; retrying", endpoint)
            time.sleep(0.2)
