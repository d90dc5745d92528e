"""The stream worker: samples in from the ingest bus, predictions out.

The core, :class:`StreamCore`, is a pure state machine with no sockets: feed
it message frames with the time they arrived, take batches of completed
windows, hand back the model's probabilities, and collect the predictions,
signal feed and statistics to publish. :func:`~harstream.stream.bus.zmq_worker.serve`
puts ZeroMQ sockets at its edges, :mod:`~harstream.stream.durable.redis_worker` the
durable log.

Per device the core keeps a :class:`Device`, one small object per concern:
its :class:`~harstream.stream.core.incarnation.Incarnation` (which stream, the
next expected ``seq``), a :class:`~harstream.stream.core.sample_buffer.SampleBuffer`
of raw samples waiting for a whole window, its
:class:`~harstream.stream.core.device_windows.DeviceWindows` (pipeline and, for a
model with context windows, their
:class:`~harstream.stream.core.context.WindowContext`), its display decoder and
its :class:`~harstream.stream.core.signal_feed.SignalFeed` and its final
:class:`~harstream.stream.core.history.History` (fixed-lag pieces of time,
taken with :meth:`StreamCore.take_history`; the day's minutes per device from
its final pieces in :class:`~harstream.stream.core.today.DayTotals`). A
device's history is settled (made final with the look-ahead there is) on a
gap or restart, when it moves to another model, when it has been quiet for
``history_quiet`` seconds, and before it is evicted.

What a message means for its device (accepted, a gap that restarts the
pipeline, a duplicate, another producer's session, an implausible jump) is
the incarnation's rule, documented there and in docs/protocol.md ("Device
identity"). A malformed message is dropped, counted by reason and logged
once per reason; so is a bug met on one message (``internal``): the worker
goes on. With ``stale_after`` set, samples older than that (wall clock) are
dropped as ``stale``; their age is counted from when their producer says it
sent them (``meta.sent``: the gateway sends a phone's held readings late on
purpose), else from their last sample's time.

Raw samples are buffered per device and pushed through the pipeline only when
they complete a window (the pipeline is chunk-invariant, so the windows are
the same), and the devices that completed a window meanwhile are filtered
together in one vectorised call; this cuts filter calls from one per message
to a few per batch.
Devices silent for ``idle_timeout`` seconds are evicted. Every queue is
bounded: windows waiting for inference (oldest dropped, counted as
``overload``) and the number of devices (a full table forgets a device that
never completed a window; only when all have is a new one refused as
``devices_full``).

Display-only updates between windows go to ``between_devices`` waist-mode
devices at a time (:class:`BetweenPlaces`: first come, first served; a device
that leaves frees its place), and to more while the worker's loop has room
(:meth:`StreamCore.fit_between`, :mod:`~harstream.stream.core.headroom`); the
others cost nothing extra.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from harstream.stream.core.barometer import PRESSURE_REASONS
from harstream.stream.core.batch_push import push_both
from harstream.stream.core.decoder import window_motion
from harstream.stream.core.device_windows import DeviceWindows
from harstream.stream.core.headroom import Headroom
from harstream.stream.core.history import History, HistorySettings, Piece, history_params, window_rotation
from harstream.stream.core.incarnation import (
    DUPLICATE,
    FOREIGN,
    GAP,
    JUMP,
    NEXT,
    REPLAYED,
    RESTART,
    TAKEOVER_AFTER,
    Incarnation,
)
from harstream.stream.core.model_routing import ModelRouter, ServedModel, declared_placement, stats_key
from harstream.stream.core.pipeline import WINDOW, check_samples
from harstream.stream.core.placement import PLACEMENTS, PlacementTracker
from harstream.stream.core.posture import N_CUES, apply_heads, posture_cues
from harstream.stream.core.protocol import (
    MAX_T0,
    HistoryUpdate,
    Prediction,
    ProtocolError,
    SampleBatch,
    Signal,
    decode_samples,
    shard_of,
)
from harstream.stream.core.sample_buffer import SampleBuffer
from harstream.stream.core.signal_feed import SignalFeed
from harstream.stream.core.smoothing import DEFAULT_THRESHOLD, DEFAULT_WINDOWS, Smoother
from harstream.stream.core.stairs import MOVING, StairsEvidence, gated
from harstream.stream.core.stepping import MovingEvidence, evidence_of, step_measures
from harstream.stream.core.subscriptions import Subscriptions, WatchedDevices
from harstream.stream.core.today import DayTotals
from harstream.stream.core.transition_direction import turn_degrees, window_gravity

log = logging.getLogger(__name__)

# Reasons the worker drops data besides protocol.REASONS.
WORKER_REASONS = (
    "duplicate",  # seq behind the expected one: duplicate or out-of-order chunk
    "shard",  # a device outside this worker's shard
    "devices_full",  # a new device while max_devices are tracked
    "overload",  # a window dropped because max_pending windows were waiting
    "backlog",  # a full queue: a window of a device holding more than its share of it, dropped
    "pipeline",  # the pipeline refused the samples
    "inference",  # the model runtime failed on a batch
    "output_hwm",  # an output message a subscriber missed: its queue was full
    "probabilities",  # a window's probabilities had NaN or did not sum to 1: not displayed
    "session",  # another session under the id of a live device
    "jump",  # seq further ahead than the time since the device's last message allows
    "stale",  # samples older than stale_after seconds (wall clock) when they arrived
    "internal",  # a bug met on one message or output: that one was dropped, the worker went on
    "model_refused",  # a personal model file that failed to load or disagreed with its metadata
    *PRESSURE_REASONS,  # barometer readings outside 300-1,100 hPa, not finite, or out of time order
    "history",  # a window the history refused: seen already (duplicate, out of order) or malformed times
)


@dataclass
class WorkerStats:
    """A worker's statistics, one shape for every edge (bus, durable log)
    and every reader (:meth:`to_dict` is the stats message's body,
    :meth:`from_dict` reads one back).

    Units: ``drops`` counts *messages* for a refused message (every protocol
    reason, ``duplicate``, ``session``, ``jump``, ``stale``, ``shard``,
    ``devices_full``, ``internal`` met on a message or an output, ``output_hwm``)
    and *windows* for what is lost after windowing (``overload``, ``inference``,
    ``probabilities``); ``model_refused`` counts files. Rates are over the last
    ``interval_s``; ``drops`` and ``totals`` are since start.
    """

    devices: int = 0
    interval_s: float = 0.0
    samples_per_s: float = 0.0
    windows_per_s: float = 0.0
    predictions_per_s: float = 0.0
    messages_per_s: float = 0.0
    batches: int = 0
    batch_mean: float = 0.0
    batch_max: int = 0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    lag_p50_ms: float | None = None
    lag_p99_ms: float | None = None
    pending: int = 0
    pending_high_water: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    model: str = ""
    models: list[dict] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)
    worker: str = ""
    runtime: str = "?"
    # Set by the edge where it has them (absent from the message when None):
    subscriptions: dict | None = None  # the output bus's subscriptions (Subscriptions.stats)
    personal: dict | None = None  # the watched personal-model folder
    shard: str | None = None  # "k/N" of a sharded bus worker
    broker: dict | None = None  # the durable log: partitions, epochs, leases, commits
    between: dict | None = None  # display-only updates between windows (BetweenPlaces.stats), when on

    def to_dict(self) -> dict:
        """The stats message's body: every field, the optional ones only when set."""
        out = {"worker": self.worker, "runtime": self.runtime}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in out and not (value is None and f.name in _OPTIONAL_STATS):
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> WorkerStats:
        """A stats message's body (unknown keys ignored, missing ones default)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


_OPTIONAL_STATS = frozenset({"subscriptions", "personal", "shard", "broker", "between"})


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
    # Of the model given as ``classes``/``model_id`` when no ModelRouter is (one model for all):
    context_steps: tuple[int, ...] = ()  # the model also takes the windows this many steps back
    # a staged model's feature stage, (n, 128, 9) -> (n, F): each window's features are computed
    # once, for all devices' new windows together, and the context stacks feature vectors
    features: Callable[[np.ndarray], np.ndarray] | None = None
    # factory of each device's display core (stream.decoder.display_for); None = moving average
    display: Callable[[], Smoother] | None = None
    # Samples whose last one is older than this many seconds of wall clock are
    # dropped as stale (a restarted worker's queued backlog). None: times are
    # stream times, not judged against the clock (the core's default).
    stale_after: float | None = None
    takeover_after: float = TAKEOVER_AFTER  # seconds a device's session must be quiet before another takes it
    # Refuse messages without a producer session (counted as ``session``): a
    # sessionless producer can be impersonated by anyone publishing its id.
    require_session: bool = False
    history: HistorySettings = HistorySettings()  # the final history's smoother
    history_quiet: float = 1.0  # seconds without samples after which a device's history is settled
    # Seconds a device's declared placement (meta.placement) holds before it may
    # change again: a producer flipping it on every message would otherwise
    # switch the device's model (and log a line) each time. A refused change
    # keeps the current mode and the samples; counted as ``placement_refused``.
    placement_interval: float = 10.0
    # Display-only updates between windows: per waist-mode device a second grid of windows
    # offset by half a step (32 samples); a window of it whose body motion or gravity differs
    # from the window it follows by more than these is labelled by the model (the model's
    # grid's windows as its context) and the display decoder's peek at it is published as a
    # prediction with ``between`` set (never in the history); the others cost only their cut.
    # At least this many devices have them at a time (BetweenPlaces); 0 = off, None = every one.
    # More while the worker's loop has room (between_headroom; None: exactly this many).
    between_devices: int | None = 256
    between_headroom: Headroom | None = Headroom()
    between_motion: float = 0.03  # g of mean body-acceleration magnitude
    between_turn: float = 10.0  # degrees between the gravity directions


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
    served: ServedModel  # the model it was made for (its input shape and classes)
    motion: float | None = None  # the window's body motion (decoder.window_motion): the posture lock's cue
    gravity: tuple[float, float, float] | None = None  # its newest half's gravity: the transition direction's cue
    waist_likeness: float | None = None  # how like the waist gait (the model's own score, if it gives one)
    cue: np.ndarray | None = None  # a calibrated device's posture cues (posture.posture_cues) of this window
    placement: np.ndarray | None = None  # (3,) where the device seems worn (placement.PLACEMENTS), if estimated
    between: bool = False  # a window of the offset grid: display only (WorkerConfig.between_devices)
    # a gated device's window: steps (then never STILL), at rest (never moving) or neither (stepping.motion_evidence)
    stepping: int | None = None
    # its rotation about its own mean (history.window_rotation, rad/s): the history's set-down cue; None for
    # a device without a gyroscope
    rotation: float | None = None
    # its step regularity (stepping.step_measures): the history's cue of a device moved by hand, not walked
    regularity: float | None = None


def one_model_router(classes: Sequence[str], model_id: str, config: WorkerConfig) -> ModelRouter:
    """The router of a worker serving one model to every device (no modes):
    ``classes``/``model_id``, with the config's context steps, display and
    feature stage."""
    return ModelRouter(
        ServedModel(
            "waist",
            "waist",
            model_id,
            tuple(classes),
            config.context_steps,
            config.display,
            features=config.features,
        )
    )


def make_display(served: ServedModel, config: WorkerConfig, windows: int | None = None) -> Smoother:
    """The display decoder of one device served by ``served`` (``update(probs)
    -> (label, probs)``, ``reset()``): the one place that says which decoder
    the worker uses: the model's own (its decoder parameters), else a moving
    average over its classes."""
    if served.display is not None and windows is None:
        return served.display()
    return Smoother(served.classes, config.smooth_windows if windows is None else windows, config.threshold)


def has_between(served: ServedModel, config: WorkerConfig, display: Any) -> bool:
    """Whether a device served by ``served`` with ``display`` may have
    display-only updates between windows: when the worker gives them to any
    device, to waist-mode devices whose display core can peek (whether it
    does is :class:`BetweenPlaces`'s)."""
    return config.between_devices != 0 and served.mode == "waist" and served.head is None and hasattr(display, "peek")


class BetweenPlaces:
    """Which devices have display-only updates between windows: at most
    ``limit`` at a time (None: no limit), first come first served. A device
    asks when a run of its stream starts (its offset grid is placed from the
    run's first sample) and keeps its place over later runs unless the place is
    taken back (:meth:`resize`, newest first); one that leaves (evicted,
    forgotten, moved off waist mode) frees it for the next to ask. A refused
    device waits, counted once, and asks again at its next run.

    >>> places = BetweenPlaces(2)
    >>> [places.ask(d) for d in ("a", "b", "c")]
    [True, True, False]
    >>> places.free("a")
    >>> places.ask("d"), places.ask("c"), places.stats()
    (True, False, {'devices': 2, 'limit': 2, 'refused': 1, 'waiting': 1, 'taken_back': 0})
    >>> places.resize(1), places.stats()["taken_back"]
    (['d'], 1)
    """

    __slots__ = ("limit", "holders", "waiting", "refused", "taken_back")

    def __init__(self, limit: int | None):
        self.limit = limit
        self.holders: dict[str, None] = {}  # devices with a place, oldest first
        self.waiting: set[str] = set()  # devices refused one, still here
        self.refused = 0  # devices refused a place since start (once per wait)
        self.taken_back = 0  # places taken back since start

    def ask(self, device: str) -> bool:
        """Whether ``device`` has a place, taking a free one if it has none."""
        if device in self.holders:
            return True
        if self.limit is not None and len(self.holders) >= self.limit:
            if device not in self.waiting:
                self.waiting.add(device)
                self.refused += 1
            return False
        self.waiting.discard(device)
        self.holders[device] = None
        return True

    def free(self, device: str) -> None:
        """``device`` leaves: its place (or its wait) ends."""
        self.holders.pop(device, None)
        self.waiting.discard(device)

    def resize(self, limit: int | None) -> list[str]:
        """Set the limit; the holders past it lose their places, newest first
        (returned; they wait and ask again at their next run)."""
        self.limit = limit
        over = len(self.holders) - limit if limit is not None else 0
        gone = list(self.holders)[::-1][: max(over, 0)]
        for device in gone:
            del self.holders[device]
            self.waiting.add(device)
        self.taken_back += len(gone)
        return gone

    def stats(self) -> dict:
        """Devices with a place now, the limit, devices refused one since start,
        those still waiting, places taken back since start."""
        return {
            "devices": len(self.holders),
            "limit": self.limit,
            "refused": self.refused,
            "waiting": len(self.waiting),
            "taken_back": self.taken_back,
        }


class Device:
    """What the worker knows about one device: one small object per concern,
    in the order the data flows through them."""

    __slots__ = (
        "name",
        "generation",
        "incarnation",
        "inbox",
        "windows",
        "display",
        "history",
        "signal",
        "ready_at",
        "served",
        "may_between",
        "between",
        "places",
        "placement",
        "placement_at",
        "gyro",
        "route_version",
        "evidence",
        "worn",
    )

    def __init__(
        self,
        name: str,
        seq: int,
        served: ServedModel,
        config: WorkerConfig,
        now: float,
        session: str = "",
        placement: str | None = None,
        route_version: int = 0,
        places: BetweenPlaces | None = None,
        gyro: bool = True,
    ):
        self.name = name
        self.generation = 0  # counts pipeline restarts; a window of an older run skips the display
        self.incarnation = Incarnation(seq, now, session, config.takeover_after)  # which stream, which seq next
        self.inbox = SampleBuffer()  # raw samples waiting for a whole window
        self.served = served  # the model that labels its windows (its mode: waist, any, personal)
        self.placement = placement  # what its samples declared (meta.placement), if anything
        self.placement_at = -math.inf  # when a declared placement last changed its route
        self.gyro = gyro  # False: its samples say it has no gyroscope (meta.gyro false; gyro channels 0)
        self.route_version = route_version  # the router's version when it was routed
        self.windows = DeviceWindows(seq, served.context_steps)  # pipeline + window context
        self.display = make_display(served, config)  # what the screen shows
        # display-only updates between windows: whether it may have them, the worker's places, whether it does
        self.may_between = has_between(served, config, self.display)
        self.places = places if places is not None else BetweenPlaces(config.between_devices)
        self.between = False  # asked for at each run's start (restart)
        self.history = History(history_params(self.display, served.classes), config.history)  # what happened
        self.signal = SignalFeed(config.signal_decimation, config.signal_interval, now)  # decimated raw signal
        self.ready_at: float | None = None  # when buffered samples completed a window
        self.evidence = StairsEvidence()  # its barometer, if it sends pressure: what stairs may be shown
        self.worn = PlacementTracker()  # where it seems worn, from its moving windows (any/personal mode)
        self.restart(seq, session)

    def restart(self, seq: int, session: str) -> list[Piece]:
        """Start the pipeline afresh with ``seq`` of ``session`` as its first
        sample; the history's pending windows become final (returned)."""
        settled = self.history.restart()  # window numbers start again at 0
        self.generation += 1
        if session != self.incarnation.session:  # another producer: another clock for its pressure
            self.evidence = StairsEvidence()
            self.worn = PlacementTracker()  # and perhaps another body: its placement is learned afresh
        self.incarnation.restart(seq, session)
        self.between = self.may_between and self.places.ask(self.name)  # the offset grid starts with a run
        self.windows = DeviceWindows(seq, self.served.context_steps, self.between)
        self.inbox.clear()
        self.display.reset()
        self.signal.reset()  # the display feed must not join samples from both sides of a gap
        return settled

    def serve_with(self, served: ServedModel, config: WorkerConfig) -> list[Piece]:
        """Switch to another model: a display and a history for its classes (the
        old history settled and returned); the window context starts afresh
        only if its context steps or feature stage differ."""
        if served.context_steps != self.served.context_steps or served.features is not self.served.features:
            # (a context of one model's feature vectors means nothing to another model)
            self.windows.restart_context(served.context_steps)
        self.served = served
        self.display = make_display(served, config)
        # an offset grid starts with a run (its windows are placed from the run's first sample):
        # one moved onto waist mode asks for a place at its next run; one moved off frees its place
        self.may_between = has_between(served, config, self.display)
        if not self.may_between:
            self.between = False
            self.places.free(self.name)
            self.windows.stop_between()
        settled = self.history.settle()
        final_until = self.history.final_until
        self.history = History(history_params(self.display, served.classes), config.history)
        self.history.final_until = final_until  # the new model's pieces start where the old ones ended
        return settled


def sent_at(batch: SampleBatch) -> float:
    """When ``batch`` was sent, as its producer says (``meta.sent``, Unix s:
    the gateway sends a phone's held readings late, on purpose), else the time
    of its last sample. Staleness is judged from this.

    >>> sent_at(SampleBatch("d", 0, 100.0, np.zeros((50, 6)), meta={"sent": 130.5}))
    130.5
    >>> sent_at(SampleBatch("d", 0, 100.0, np.zeros((50, 6)), meta={"sent": "soon"}))
    100.98
    >>> sent_at(SampleBatch("d", 0, 100.0, np.zeros((50, 6)), meta={"sent": 10**400}))
    100.98
    """
    sent = batch.meta.get("sent") if batch.meta else None
    # compared, never converted first: a 400-digit int has no float (and is no time)
    if isinstance(sent, (int, float)) and not isinstance(sent, bool) and 0 <= sent < MAX_T0:
        return float(sent)
    return batch.t0 + (len(batch) - 1) / batch.rate


class StreamCore:
    """Per-device state, batching and smoothing of the worker; no sockets.

    >>> from harstream.stream.core.protocol import SampleBatch, encode_samples
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
        router: ModelRouter | None = None,
        subscriptions: Subscriptions | None = None,
    ):
        self.config = config or WorkerConfig()
        self.router: ModelRouter = router if router is not None else one_model_router(classes, model_id, self.config)
        self.classes = list(self.router.waist.classes)
        self.model_id = self.router.waist.model_id
        self.worker_id = worker_id
        self.wall_clock = wall_clock
        self.devices: dict[str, Device] = {}
        # Windows waiting for the model, one queue per served model (key), each oldest first.
        self._queues: dict[str, deque[PendingWindow]] = {}
        self._waiting = 0
        self._waiting_of: Counter[str] = Counter()  # windows waiting, per device
        self._ready: list[Device] = []  # devices whose buffered samples complete a window
        # Devices that never completed a window, oldest first: evicted first when the table is full.
        self._unproven: dict[str, None] = {}
        self.drops: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._latencies: list[float] = []
        self._lags: list[float] = []
        self._batch_sizes: list[int] = []
        self._last_stats: tuple[float, Counter[str]] | None = None
        self._pending_high_water = 0
        self._history: list[HistoryUpdate] = []  # revisions waiting to be published
        self.between_places = BetweenPlaces(self.config.between_devices)  # who has display-only updates between windows
        self.loop_busy: float | None = None  # the edge loop's share of a core, last measured (fit_between)
        self.today = DayTotals(self.config.max_devices)
        self.started: float | None = None
        # The output bus's subscriptions: only devices whose signal topic someone
        # subscribed to get a signal feed (None: every device's is made).
        self._watched = None if subscriptions is None else WatchedDevices(subscriptions)

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
            self._drop("internal", f"undecodable message ({type(exc).__name__}: {exc})")
            return
        try:
            self.accept(batch, now)
        except Exception as exc:  # nor a bug met on one message: drop it and go on
            log.exception("device %s: message dropped", batch.device)
            self._drop("internal", f"device {batch.device}: {type(exc).__name__}: {exc}")

    def accept(self, batch: SampleBatch, now: float) -> None:
        """Take one decoded batch of samples."""
        cfg = self.config
        if cfg.shard is not None and shard_of(batch.device, cfg.n_shards) % cfg.shard[1] != cfg.shard[0]:
            self._drop("shard", f"device {batch.device} is not in shard {cfg.shard[0]}/{cfg.shard[1]}")
            return
        if cfg.require_session and not batch.session:
            self._drop("session", f"device {batch.device}: no producer session, and this worker requires one")
            return
        if cfg.stale_after is not None:
            age = self.wall_clock() - sent_at(batch)
            if age > cfg.stale_after:
                self._drop("stale", f"device {batch.device}: samples {age:.1f} s old (bound {cfg.stale_after:g} s)")
                return
        state = self.devices.get(batch.device)
        placement = self._placement(batch)
        gyro = not batch.meta or batch.meta.get("gyro") is not False
        if state is None:
            if len(self.devices) >= cfg.max_devices and not self._evict_unproven():
                self._drop("devices_full", f"already tracking {cfg.max_devices} devices, all of them proven")
                return
            served = self.router.route(batch.device, placement, gyro)
            state = Device(
                batch.device,
                batch.seq,
                served,
                cfg,
                now,
                batch.session,
                placement,
                self.router.version,
                self.between_places,
                gyro,
            )
            self.devices[batch.device] = state
            self._unproven[batch.device] = None
            if self._watched is not None:
                self._watched.add_if_wanted(batch.device)
            self.totals["devices_seen"] += 1
        else:
            inc = state.incarnation
            verdict = inc.judge(batch.seq, now, batch.session, batch.rate, batch.meta.get("replay") is True)
            if verdict == REPLAYED:  # a producer's tail for a new subscriber: we have it already
                self.totals["replayed"] += 1
                return
            if verdict in (DUPLICATE, FOREIGN, JUMP):
                reason = {DUPLICATE: "duplicate", FOREIGN: "session", JUMP: "jump"}[verdict]
                self._drop(
                    reason,
                    f"device {batch.device}: seq {batch.seq} of session {batch.session!r}, "
                    f"but seq {inc.next_seq} of session {inc.session!r} expected",
                )
                return
            if verdict != NEXT:
                if state.ready_at is not None:
                    self.flush()  # windows the old stream completed go out before the reset
                if verdict == GAP:
                    self.totals["gaps"] += 1
                    self._note(
                        "gap", f"device {batch.device}: samples {inc.next_seq}..{batch.seq - 1} missing; pipeline reset"
                    )
                else:
                    self.totals["restarts"] += 1
                    how = "started over at seq 0" if verdict == RESTART else f"taken over by session {batch.session!r}"
                    self._note("restart", f"device {batch.device} {how}; pipeline reset")
                self._revise(state, state.restart(batch.seq, batch.session))
            if placement is not None and placement != state.placement:
                placement = self._placement_change(state, placement, now)
            if (
                state.route_version != self.router.version
                or (placement is not None and placement != state.placement)
                or gyro != state.gyro
            ):
                self._reroute(state, placement, gyro)
        state.incarnation.advance(batch.seq, len(batch), now)
        state.windows.anchor(batch)  # times of later windows
        state.inbox.append(batch.samples, batch.labels)
        self.totals["samples"] += len(batch)
        if batch.pressure is not None or batch.pressure_refused:
            self._take_pressure(state, batch)
        if cfg.signal_interval > 0 and (self._watched is None or batch.device in self._watched.names):
            state.signal.add(batch)
        if state.ready_at is None and state.windows.completes_window(len(state.inbox)):
            state.ready_at = now
            self._ready.append(state)
            if len(self._ready) >= 4 * cfg.max_batch:
                self.flush()

    def _take_pressure(self, state: Device, batch: SampleBatch) -> None:
        """The batch's barometer readings into the device's evidence; the
        refused ones counted by reason."""
        refused = dict(batch.pressure_refused)
        if batch.pressure is not None and len(batch.pressure):
            pushed = state.evidence.push_pressure(batch.pressure[:, 0], batch.pressure[:, 1], len(batch))
            for reason, n in pushed.items():
                refused[reason] = refused.get(reason, 0) + n
            self.totals["pressure_readings"] += len(batch.pressure)
        for reason, n in refused.items():
            self.drops[reason] += n - 1
            self._drop(reason, f"device {batch.device}: {n} barometer readings refused ({reason})")

    def judge(self, batch: SampleBatch, now: float) -> str | None:
        """What the device's incarnation would make of ``batch`` arriving at
        ``now`` (``incarnation.NEXT``, ``GAP``, ``JUMP``, ``FOREIGN``, ...), or
        None for a device without state; changes nothing. An edge that keeps
        its own seq bookkeeping in front of the core asks this first, so a
        message the core refuses moves nothing there either."""
        state = self.devices.get(batch.device)
        if state is None:
            return None
        return state.incarnation.judge(batch.seq, now, batch.session, batch.rate, batch.meta.get("replay") is True)

    def _placement(self, batch: SampleBatch) -> str | None:
        """The placement the batch declares; a value we do not serve is
        ignored (counted and logged once), its samples are kept."""
        if not batch.meta:
            return None
        try:
            return declared_placement(batch.meta)
        except ValueError as exc:
            self.totals["placement_ignored"] += 1
            self._note("placement_ignored", f"device {batch.device}: {exc}; routed as if it declared none")
            return None

    def _placement_change(self, state: Device, placement: str, now: float) -> str | None:
        """``placement`` if ``state`` may change to it now, else None (the
        device stays as it is; counted, logged once per reason)."""
        interval = self.config.placement_interval
        if now - state.placement_at < interval:
            self.totals["placement_refused"] += 1
            self._note(
                "placement_refused",
                f"device {state.name}: placement {placement!r} within {interval:g} s of its last change; "
                f"stays {state.placement or 'undeclared'}",
            )
            return None
        state.placement_at = now
        return placement

    def _reroute(self, state: Device, placement: str | None, gyro: bool | None = None) -> None:
        """Route ``state`` again (the router changed, or its declared
        placement did, or whether it has a gyroscope); a new model gets a
        fresh display."""
        if placement is not None:
            state.placement = placement
        if gyro is not None:
            state.gyro = gyro
        state.route_version = self.router.version
        served = self.router.route(state.name, state.placement, state.gyro)
        if served is not state.served:
            log.info(
                "device %s: now served in %s mode by %s (was %s by %s)",
                state.name,
                served.mode,
                served.model_id,
                state.served.mode,
                state.served.model_id,
            )
            self.totals["mode_switches"] += 1
            self._revise(state, state.serve_with(served, self.config))

    def reroute_all(self) -> None:
        """Route every device again now (after the router changed), rather
        than on its next message."""
        for state in self.devices.values():
            if state.route_version != self.router.version:
                self._reroute(state, None)

    def flush(self) -> None:
        """Push the buffered samples of every device that completed a window,
        all at once (:func:`~harstream.stream.core.batch_push.push_many`)."""
        if not self._ready:
            return
        ready, self._ready = self._ready, []
        jobs = []
        for state in ready:
            arrived, state.ready_at = state.ready_at, None
            if len(state.inbox) == 0 or arrived is None:  # restarted meanwhile
                continue
            raw, labels = state.inbox.take()
            try:  # validated here so that push_many never fails half-way
                raw = check_samples(raw, f"device {state.name}")
            except ValueError as exc:
                self._drop("pipeline", str(exc))
                continue
            pipe, second = state.windows.pipeline, state.windows.between
            jobs.append((state, raw, labels, arrived, pipe.emitted, pipe.samples_seen, second and second.emitted))
        results, extra = push_both(
            [j[0].windows.pipeline for j in jobs], [j[0].windows.between for j in jobs], [j[1] for j in jobs]
        )
        n = len(jobs)
        # body motion and gravity of both grids' new windows (the model grid's rotation and step regularity
        # too, for the history), all devices' in one call each
        counts = [len(r) for r in results + extra]
        if sum(counts):
            every = np.concatenate(results + extra)
            motions = np.split(window_motion(every), np.cumsum(counts)[:-1])
            turns = np.split(window_gravity(every), np.cumsum(counts)[:-1])
            model_grid = every[: sum(counts[:n])]
            rotations = np.split(window_rotation(model_grid), np.cumsum(counts[:n])[:-1])
            measures = np.split(step_measures(model_grid), np.cumsum(counts[:n])[:-1])
        else:
            motions = turns = rotations = measures = results + extra
        # which between windows the model labels: those whose signal moved away from the window they follow
        fired = [self._between_fired(j, motions[k], turns[k], motions[n + k], turns[n + k]) for k, j in enumerate(jobs)]
        chosen = [e[f] for e, f in zip(extra, fired)]
        both = self._window_inputs([j[0] for j in jobs] * 2, results + chosen)
        inputs, extra_inputs = both[:n], both[n:]
        cues = self._posture_cues([j[0] for j in jobs], results)
        likenesses, placements = self._waist_likeness([j[0] for j in jobs], results)
        steps = evidence_of(results, [gated(j[0].served.mode, j[0].served.classes) for j in jobs], measures[:n])
        for k, ((state, _, labels, arrived, first_window, seen_before, first_between), windows, x) in enumerate(
            zip(jobs, results, inputs)
        ):
            if len(windows):
                self._unproven.pop(state.name, None)  # it completed a window: a real device
            between = [(first_between + int(i), int(i), e) for i, e in zip(fired[k], extra_inputs[k])]
            described = state.windows.describe(windows, labels, first_window, seen_before, x, between)
            cue, likeness, worn = cues[k], likenesses[k], placements[k]
            for w in described:
                i = w.index
                m, g = (motions[n + k], turns[n + k]) if w.between else (motions[k], turns[k])
                self._enqueue(
                    PendingWindow(
                        state.name,
                        state.generation,
                        w.window,
                        w.x,
                        arrived,
                        w.t_start,
                        w.t_end,
                        w.truth,
                        state.served,
                        float(m[i]),
                        (float(g[i][0]), float(g[i][1]), float(g[i][2])),
                        None if w.between else likeness[i],
                        None if cue is None or w.between else cue[i],
                        None if worn is None or w.between else worn[i],
                        w.between,
                        None if steps[k] is None or w.between else int(steps[k][i]),
                        rotation=None if w.between or not state.gyro else float(rotations[k][i]),
                        regularity=None if w.between else float(measures[k][i, 2]),
                    )
                )
            self.totals["windows"] += len(windows)
            self.totals["between"] += len(between)
            self.totals["between_quiet"] += len(extra[k]) - len(between)

    def _between_fired(
        self, job: tuple, motion: np.ndarray, gravity: np.ndarray, b_motion: np.ndarray, b_gravity: np.ndarray
    ) -> np.ndarray:
        """Rows of a device's new between windows worth a model call: body
        motion or gravity changed since the window each follows (its last
        window's cue is kept across flushes); records that cue."""
        state, first_window, first_between = job[0], job[4], job[6]
        cfg, windows = self.config, state.windows
        out = []
        for i in range(len(b_motion)):
            j = first_between + i  # the window it follows
            if first_window <= j < first_window + len(motion):
                m, g = float(motion[j - first_window]), gravity[j - first_window]
            elif windows.last_cue is not None and windows.last_cue[0] == j:
                m, g = windows.last_cue[1], windows.last_cue[2]
            else:
                out.append(i)  # nothing to compare with
                continue
            turn = turn_degrees(b_gravity[i], g)
            if math.isnan(turn):
                turn = 180.0  # no gravity direction (an all-zero reading): as far as it can turn
            if abs(float(b_motion[i]) - m) > cfg.between_motion or turn > cfg.between_turn:
                out.append(i)
        if len(motion):
            windows.last_cue = (first_window + len(motion) - 1, float(motion[-1]), gravity[-1])
        return np.asarray(out, dtype=np.int64)

    def _waist_likeness(
        self, states: list[Device], results: list[np.ndarray]
    ) -> tuple[list[list[float | None]], list[np.ndarray | None]]:
        """Each new window's waist-likeness by its device's model, where it
        gives one and the device's stairs are gated, and its placement
        estimate where the model gives one and the device is served in
        ``any`` or ``personal`` mode (the waist-likeness is then its waist
        column: one call for both): one call per scoring function for all its
        devices' windows (per device, a call costs ~10× a batched window)."""
        out: list[list[float | None]] = [[None] * len(r) for r in results]
        worn: list[np.ndarray | None] = [None] * len(results)
        groups: dict[int, tuple[Callable[[Any], Any], bool, list[int]]] = {}
        for i, (state, windows) in enumerate(zip(states, results)):
            served = state.served
            if not len(windows) or served.mode not in ("any", "personal"):
                continue
            if served.placement_probabilities is not None:
                score, whole = served.placement_probabilities, True
            elif served.waist_likeness is not None and gated(served.mode, served.classes):
                score, whole = served.waist_likeness, False
            else:
                continue
            groups.setdefault(id(score), (score, whole, []))[2].append(i)
        for score, whole, idx in groups.values():
            windows = np.concatenate([results[i] for i in idx])
            try:
                values = np.asarray(score(windows), dtype=np.float64)
                values = values if whole else values.reshape(-1)
                shape = (len(windows), len(PLACEMENTS)) if whole else (len(windows),)
                if values.shape != shape:
                    raise ValueError(f"scores of shape {values.shape} for {len(windows)} windows, expected {shape}")
            except Exception as exc:  # a broken score must not stop the worker: no gait evidence then
                names = ", ".join(states[i].name for i in idx[:3])
                self._drop("internal", f"devices {names}…: waist-likeness failed: {type(exc).__name__}: {exc}")
                continue
            for i, part in zip(idx, np.split(values, np.cumsum([len(results[i]) for i in idx])[:-1])):
                if whole:
                    worn[i] = part
                    like = part[:, PLACEMENTS.index("waist")]
                    if not gated(states[i].served.mode, states[i].served.classes):
                        continue
                else:
                    like = part
                out[i] = [float(v) if np.isfinite(v) else None for v in like]
        return out, worn

    def _posture_cues(self, states: list[Device], results: list[np.ndarray]) -> list[np.ndarray | None]:
        """The posture cues of the new windows of calibrated devices (their
        personal head needs them after the shared model), for all of them in
        one call; None for the other devices."""
        out: list[np.ndarray | None] = [None] * len(states)
        idx = [i for i, (s, r) in enumerate(zip(states, results)) if s.served.head is not None and len(r)]
        if not idx:
            return out
        cues = posture_cues(np.concatenate([results[i] for i in idx]))
        for i, part in zip(idx, np.split(cues, np.cumsum([len(results[i]) for i in idx])[:-1])):
            out[i] = part
        return out

    def _window_inputs(self, states: list[Device], results: list[np.ndarray]) -> list[np.ndarray]:
        """What each device's model takes of its new windows: the windows, or
        for a staged model their features, computed once per model for all its
        devices' windows. Where that call fails, none (those windows are
        dropped, counted)."""
        inputs = list(results)
        by_stage: dict[int, tuple[Callable[[np.ndarray], np.ndarray], list[int]]] = {}
        for i, (state, windows) in enumerate(zip(states, results)):
            if state.served.features is not None and len(windows):
                by_stage.setdefault(id(state.served.features), (state.served.features, []))[1].append(i)
        for features, idx in by_stage.values():
            total = sum(len(results[i]) for i in idx)
            try:
                f = features(np.concatenate([results[i] for i in idx]))
                if len(f) != total:
                    raise ValueError(f"the feature stage returned {len(f)} rows for {total} windows")
            except Exception as exc:  # a broken runtime must not stop the worker
                self._drop("inference", f"{total} windows: feature stage failed: {type(exc).__name__}: {exc}", total)
                for i in idx:
                    inputs[i] = results[i][:0]
                continue
            for i, part in zip(idx, np.split(f, np.cumsum([len(results[i]) for i in idx])[:-1])):
                inputs[i] = part
        return inputs

    def _enqueue(self, window: PendingWindow) -> None:
        if self._waiting >= self.config.max_pending:
            # Full. A device holding more than its share while others wait (a producer sending faster
            # than real time) loses its own newest window, not theirs; else the oldest window goes.
            share = self.config.max_pending / len(self._waiting_of)
            held = self._waiting_of[window.device]
            if held >= share and len(self._waiting_of) > 1:
                self._drop("backlog", f"{window.device} holds {held} of the {self._waiting} windows waiting")
                return
            queue = self._oldest_queue()
            old = queue.popleft()
            self._taken(old.device)
            if not queue:
                del self._queues[old.served.key]
            self._drop("overload", f"{self.config.max_pending} windows waiting; dropped one of {old.device}")
        waiting = self._queues.get(window.served.key)
        if waiting is None:
            waiting = self._queues[window.served.key] = deque()
        waiting.append(window)
        self._waiting += 1
        self._waiting_of[window.device] += 1
        self._pending_high_water = max(self._pending_high_water, self._waiting)

    def _taken(self, device: str, n: int = 1) -> None:
        """``n`` of ``device``'s windows left the queues."""
        self._waiting -= n
        left = self._waiting_of[device] - n
        if left > 0:
            self._waiting_of[device] = left
        else:
            del self._waiting_of[device]

    def _oldest_queue(self) -> deque[PendingWindow]:
        """The model queue whose first window waited longest (few models: a scan)."""
        return min(self._queues.values(), key=lambda q: q[0].arrived)

    # ------------------------------------------------------------ batches

    @property
    def pending(self) -> list[PendingWindow]:
        """Completed windows waiting for a model, oldest first (all models)."""
        self.flush()
        if len(self._queues) == 1:
            return list(next(iter(self._queues.values())))
        return sorted((w for q in self._queues.values() for w in q), key=lambda w: w.arrived)

    @property
    def waiting(self) -> int:
        """How many completed windows wait for a model."""
        self.flush()
        return self._waiting

    def next_deadline(self) -> float | None:
        """Monotonic time by which the waiting windows must run, if any."""
        self.flush()
        return self._oldest_queue()[0].arrived + self.config.max_wait if self._queues else None

    def batch_due(self, now: float) -> bool:
        """Whether a model has a full batch waiting, or a window waited ``max_wait``."""
        self.flush()
        if not self._queues:
            return False
        full = any(len(q) >= self.config.max_batch for q in self._queues.values())
        return full or now >= self._oldest_queue()[0].arrived + self.config.max_wait

    def take_batch(self) -> tuple[np.ndarray, list[PendingWindow]]:
        """Up to ``max_batch`` waiting windows of one model, as one array: the
        model whose oldest window waited longest, so no model starves. The
        windows' ``served`` says which model (and runtime) labels them."""
        self.flush()
        if not self._queues:
            return np.empty((0, WINDOW, 9), np.float32), []
        queue = self._oldest_queue()
        taken = [queue.popleft() for _ in range(min(self.config.max_batch, len(queue)))]
        for w in taken:
            self._taken(w.device)
        if not queue:
            del self._queues[taken[0].served.key]
        self._batch_sizes.append(len(taken))
        return np.stack([w.x for w in taken]), taken

    def finish_batch(self, taken: Sequence[PendingWindow], probs: np.ndarray, now: float) -> list[Prediction]:
        """Predictions for a batch its model has labelled with ``probs``."""
        probs = np.asarray(probs, dtype=np.float64)
        served = taken[0].served if taken else self.router.waist
        if probs.shape != (len(taken), len(served.output_classes)):
            # A runtime that lost rows must not silently lose windows.
            raise ValueError(f"model {served.model_id} returned {probs.shape} for {len(taken)} windows")
        rows: list[np.ndarray] = list(probs)
        calibrated = [i for i, w in enumerate(taken) if w.served.head is not None]
        if calibrated:  # the shared model's batch carries calibrated devices: their heads, all at once
            heads = [taken[i].served.head for i in calibrated]
            cues = np.stack([_cue_of(taken[i]) for i in calibrated])
            # a staged shared model's input is its features: the current window's row is what a head's
            # feature discriminant takes (a model served whole has none: such heads say STILL)
            features = np.stack([taken[i].x[0] for i in calibrated]) if served.features is not None else None
            slots = apply_heads(probs[calibrated], cues, heads, features)
            for i, head, row in zip(calibrated, heads, slots):
                rows[i] = head.pick(row)
        out = []
        wall = self.wall_clock()
        for w, p in zip(taken, rows):
            classes = list(w.served.classes)
            state = self.devices.get(w.device)
            raw = [round(float(v), 6) for v in p]
            # a stepping window is never shown STILL, a window at rest never moving
            steps = MovingEvidence(classes) if w.stepping else None  # None: unknown, 0: neither
            rested = False
            if steps is not None:  # (stream/core/stepping.py): the display and history see it so too
                p = np.asarray(steps.judge(classes[int(p.argmax())], raw, w.stepping)[1])
                raw = [round(float(v), 6) for v in p]
                self.totals["moving_by_steps"] += steps.last == "steps"
                rested = steps.last == "rest"
            if w.between:  # display only: a peek of the device's decoder, no history, no placement
                if state is not None and state.generation == w.generation and state.served is w.served:
                    smoothed, smoothed_probs = state.display.peek(raw, w.motion)
                    if state.display.refused:
                        reason = state.display.refused
                        self._drop("probabilities", f"device {w.device} window {w.window} (between): {reason}")
                else:  # reset, evicted or moved meanwhile: this window stands alone
                    smoothed, smoothed_probs = make_display(w.served, self.config, windows=1).update(raw)
            elif state is not None and state.generation == w.generation and state.served is w.served:
                smoothed, smoothed_probs = state.display.update(raw, w.motion, w.gravity)
                if state.display.refused:
                    self._drop("probabilities", f"device {w.device} window {w.window}: {state.display.refused}")
                pieces = state.history.push(
                    w.window, w.t_start, w.t_end, raw, w.motion, w.gravity, w.rotation, w.regularity
                )
                if state.history.refused and not state.display.refused:
                    self._drop("history", f"device {w.device} window {w.window}: {state.history.refused}")
                self._revise(state, pieces)
            else:  # the device was reset, evicted or moved to another model meanwhile: this window stands alone
                smoothed, smoothed_probs = make_display(w.served, self.config, windows=1).update(raw)
            label = classes[int(p.argmax())]
            worn = None
            if state is not None and w.placement is not None and not w.between:
                # the gait says where the device is worn: moving windows only, shown while moving
                moving = label in MOVING
                placement = state.worn.push(w.placement[None, :], np.array([moving]))
                worn = placement if moving else None
            if steps is not None:
                smoothed, smoothed_probs = steps.judge(smoothed, smoothed_probs, w.stepping)
                self.totals["still_by_rest"] += rested or steps.last == "rest"  # its label or the shown one
            if gated(w.served.mode, classes):  # stairs only on evidence (stream/core/stairs.py)
                evidence = state.evidence if state is not None else StairsEvidence()
                judge = evidence.judge
                label, raw = judge(label, raw, classes, w.t_end, w.served.calibrated, w.waist_likeness)
                smoothed, smoothed_probs = judge(
                    smoothed, smoothed_probs, classes, w.t_end, w.served.calibrated, w.waist_likeness
                )
                if evidence.last:
                    self.totals[f"stairs_{evidence.last}"] += 1
            latency = (now - w.arrived) * 1000.0
            self._latencies.append(latency)
            self._lags.append((wall - w.t_end) * 1000.0)
            out.append(
                Prediction(
                    device=w.device,
                    window=w.window,
                    t_start=w.t_start,
                    t_end=w.t_end,
                    label=label,
                    probs=raw,
                    smoothed=smoothed,
                    smoothed_probs=smoothed_probs,
                    model=w.served.model_id,
                    latency_ms=round(latency, 3),
                    truth=w.truth,
                    worker=self.worker_id,
                    mode=w.served.mode,
                    classes=classes,
                    placement=worn,
                    between=w.between,
                )
            )
        self.totals["predictions"] += len(out)
        return out

    # ----------------------------------------------------- periodic tasks

    def take_signals(self, now: float) -> list[Signal]:
        """Signal messages of devices whose interval has passed."""
        if self.config.signal_interval <= 0:
            return []
        out = []
        for state in self._signal_devices(now):
            try:
                signal = state.signal.take(state.name, now)
            except Exception as exc:  # one device's feed must not stop the others'
                state.signal.reset()
                self._drop("internal", f"signal of {state.name}: {type(exc).__name__}: {exc}")
                continue
            if signal is not None:
                out.append(signal)
        self.totals["signals"] += len(out)
        return out

    def _signal_devices(self, now: float) -> list[Device]:
        """The devices whose signal feed someone can receive."""
        if self._watched is None:
            return list(self.devices.values())
        for name in self._watched.update(self.devices.keys(), now):
            if name in self.devices:  # nobody watches it now: a later feed must not join old samples
                self.devices[name].signal.reset()
        return [self.devices[name] for name in self._watched.names]

    def take_history(self) -> list[HistoryUpdate]:
        """The history revisions made since the last call, to publish in order."""
        out, self._history = self._history, []
        return out

    def _revise(self, state: Device, pieces: list[Piece]) -> None:
        """Queue a revision of ``state``'s history; its final pieces count toward its day."""
        if not pieces:
            return
        final = False
        for p in pieces:
            if p.final:
                final = True
                self.today.add(state.name, p.start, p.end, p.label)
        self._history.append(
            HistoryUpdate(
                state.name,
                [{"start": p.start, "end": p.end, "label": p.label, "final": p.final} for p in pieces],
                state.served.mode,
                self.today.summary(state.name, state.served.classes) if final else None,
                self.worker_id,
            )
        )
        self.totals["history_final"] += sum(p.final for p in pieces)

    def settle_quiet(self, now: float) -> None:
        """Settle the history of devices quiet for ``history_quiet`` seconds:
        their last windows will get no look-ahead, so they are final now."""
        quiet = self.config.history_quiet
        for state in self.devices.values():
            if state.history.pending and now - state.incarnation.last_seen > quiet:
                self._revise(state, state.history.settle())

    def fit_between(self, busy: float) -> list[str]:
        """Give or take back places for display-only updates between windows by
        how ``busy`` the worker's loop was (its share of one core over the last
        period), as ``config.between_headroom`` says; the devices that lost
        theirs are returned (they stop cutting the offset grid at once)."""
        cfg = self.config
        self.loop_busy = round(busy, 3) if math.isfinite(busy) else None
        if cfg.between_headroom is None or not cfg.between_devices:  # fixed, off (0) or every device (None)
            return []
        places = self.between_places
        gone = places.resize(cfg.between_headroom.limit(len(places.holders), busy, cfg.between_devices))
        for name in gone:
            device = self.devices.get(name)
            if device is not None:
                device.between = False
                device.windows.stop_between()
        return gone

    def evict_idle(self, now: float) -> list[str]:
        """Forget devices silent for longer than ``idle_timeout`` (one log line
        per sweep); first settle the history of those quiet for ``history_quiet``."""
        self.settle_quiet(now)
        gone = [d for d, s in self.devices.items() if now - s.incarnation.last_seen > self.config.idle_timeout]
        for device in gone:
            self._revise(self.devices[device], self.devices[device].history.settle())
            del self.devices[device]
            self._unproven.pop(device, None)
            self.between_places.free(device)
        if gone:
            log.info(
                "%d device(s) idle for %.0f s evicted (%s%s)",
                len(gone),
                self.config.idle_timeout,
                ", ".join(gone[:3]),
                ", ..." if len(gone) > 3 else "",
            )
        self.totals["evicted"] += len(gone)
        return gone

    def forget(self, devices: Iterable[str]) -> int:
        """Forget ``devices`` at once, nothing of them published: their state,
        buffered samples and waiting windows (another worker serves them now;
        a worker on the durable log gave their partition away). How many
        waiting windows went with them."""
        gone = {d for d in devices if d in self.devices}
        if not gone:
            return 0
        for device in gone:
            del self.devices[device]
            self._unproven.pop(device, None)
        self._ready = [state for state in self._ready if state.name not in gone]
        dropped = 0
        for key in list(self._queues):
            queue = self._queues[key]
            kept = deque(w for w in queue if w.device not in gone)
            dropped += len(queue) - len(kept)
            if kept:
                self._queues[key] = kept
            else:
                del self._queues[key]
        for device in gone:
            self._taken(device, self._waiting_of.get(device, 0))
        self._history = [h for h in self._history if h.device not in gone]
        return dropped

    def quiet_signals(self, devices: Iterable[str]) -> None:
        """Drop what the signal feeds of ``devices`` collected (samples
        replayed from a log are not news for the display); their feeds go on
        with the next samples."""
        for device in devices:
            state = self.devices.get(device)
            if state is not None:
                state.signal.reset()

    def _evict_unproven(self, look: int = 8) -> bool:
        """Make room by forgetting a device that never completed a window: of
        the ``look`` oldest such, the one with the fewest samples (a flood of
        one-sample ids goes before a real device filling its first window)."""
        oldest = []
        for name in self._unproven:
            oldest.append(name)
            if len(oldest) >= look:
                break
        if not oldest:
            return False

        def samples(name: str) -> int:
            d = self.devices[name]
            return d.windows.pipeline.samples_seen + len(d.inbox)

        victim = min(oldest, key=samples)
        del self.devices[victim]
        del self._unproven[victim]
        self.between_places.free(victim)
        self.totals["evicted_unproven"] += 1
        self._note("evicted_unproven", f"device table full: {victim} (no window yet) forgotten to make room")
        return True

    def stats(self, now: float) -> WorkerStats:
        """Statistics since the previous call (rates) and since start (totals)."""
        if self._last_stats is None:
            since, before = (self.started if self.started is not None else now), Counter[str]()
        else:
            since, before = self._last_stats
        elapsed = max(now - since, 1e-9)
        lat = np.asarray(self._latencies) if self._latencies else None
        lag = np.asarray(self._lags) if self._lags else None
        sizes = self._batch_sizes
        stats = WorkerStats(
            devices=len(self.devices),
            interval_s=round(elapsed, 3),
            samples_per_s=round((self.totals["samples"] - before["samples"]) / elapsed, 1),
            windows_per_s=round((self.totals["windows"] - before["windows"]) / elapsed, 1),
            predictions_per_s=round((self.totals["predictions"] - before["predictions"]) / elapsed, 1),
            messages_per_s=round((self.totals["messages"] - before["messages"]) / elapsed, 1),
            batches=len(sizes),
            batch_mean=round(float(np.mean(sizes)), 2) if sizes else 0.0,
            batch_max=max(sizes) if sizes else 0,
            latency_p50_ms=round(float(np.percentile(lat, 50)), 2) if lat is not None else None,
            latency_p99_ms=round(float(np.percentile(lat, 99)), 2) if lat is not None else None,
            lag_p50_ms=round(float(np.percentile(lag, 50)), 2) if lag is not None else None,
            lag_p99_ms=round(float(np.percentile(lag, 99)), 2) if lag is not None else None,
            pending=self._waiting,
            pending_high_water=self._pending_high_water,
            drops=dict(self.drops),
            totals=dict(self.totals),
            model=self.model_id,
            models=self.router.describe(Counter(stats_key(d.served) for d in self.devices.values())),
            modes=dict(Counter(d.served.mode for d in self.devices.values())),
            worker=self.worker_id,
            between={**self.between_places.stats(), "loop_busy": self.loop_busy}
            if self.config.between_devices != 0
            else None,
        )
        self._last_stats = (now, Counter(self.totals))
        self._latencies, self._lags, self._batch_sizes = [], [], []
        return stats

    # ------------------------------------------------------------ helpers

    @property
    def ready_devices(self) -> int:
        """Devices whose buffered samples complete a window, not yet filtered."""
        return len(self._ready)

    def count_drop(self, reason: str, detail: str, n: int = 1) -> None:
        """Count ``n`` of something dropped (and log the first of each reason);
        the unit is the reason's (:class:`WorkerStats`: messages, or windows)."""
        self._drop(reason, detail, n)

    def _drop(self, reason: str, detail: str, n: int = 1) -> None:
        self.drops[reason] += n
        self._note(reason, detail)

    def _note(self, reason: str, detail: str) -> None:
        # Once per reason at WARNING (a flood must not flood the log), then DEBUG.
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("%s: %s (further ones are counted in stats)", reason, detail)
        else:
            log.debug("%s: %s", reason, detail)


def _cue_of(window: PendingWindow) -> np.ndarray:
    """A window's posture cues; NaN (the head then says plain STILL) for a
    window made before its device was calibrated."""
    return window.cue if window.cue is not None else np.full(N_CUES, np.nan, np.float32)


def over_period(seconds: Sequence[WorkerStats], since: tuple[float, dict[str, int]], now: float) -> WorkerStats:
    """The newest of ``seconds`` (the stats of a period, oldest first) with
    its rates (samples, messages, windows, predictions per second) over the
    time since ``since``, a time and the ``totals`` then, its batches over all
    of them, and its latencies and lags the worst second's: what a line printed
    once a period says of the period, not of its last second alone.

    >>> a = WorkerStats(batches=2, batch_mean=3.0, batch_max=4, latency_p99_ms=9.0, totals={"windows": 16})
    >>> b = WorkerStats(interval_s=1.0, totals={"windows": 30})
    >>> s = over_period([a, b], (0.0, {"windows": 10}), now=5.0)
    >>> s.windows_per_s, s.batches, s.batch_mean, s.batch_max, s.latency_p99_ms
    (4.0, 2, 3.0, 4, 9.0)
    """
    stats = seconds[-1]
    then, before = since
    elapsed = max(now - then, 1e-9)

    def rate(name: str) -> float:
        return round((stats.totals.get(name, 0) - before.get(name, 0)) / elapsed, 1)

    def worst(name: str) -> float | None:
        values = [v for v in (getattr(s, name) for s in seconds) if v is not None]
        return max(values) if values else None

    batches = sum(s.batches for s in seconds)
    return replace(
        stats,
        interval_s=round(elapsed, 3),
        samples_per_s=rate("samples"),
        messages_per_s=rate("messages"),
        windows_per_s=rate("windows"),
        predictions_per_s=rate("predictions"),
        batches=batches,
        batch_mean=round(sum(s.batches * s.batch_mean for s in seconds) / batches, 2) if batches else 0.0,
        batch_max=max(s.batch_max for s in seconds),
        latency_p50_ms=worst("latency_p50_ms"),
        latency_p99_ms=worst("latency_p99_ms"),
        lag_p50_ms=worst("lag_p50_ms"),
        lag_p99_ms=worst("lag_p99_ms"),
    )


def format_stats(stats: dict | WorkerStats) -> str:
    """One line for a terminal."""
    s = stats if isinstance(stats, WorkerStats) else WorkerStats.from_dict(stats)
    drops = ",".join(f"{k}={v}" for k, v in sorted(s.drops.items())) or "none"
    line = (
        f"[{s.worker or '?'}] devices={s.devices} samples/s={s.samples_per_s:.0f} "
        f"windows/s={s.windows_per_s:.1f} batch={s.batch_mean:.1f}(max {s.batch_max}) "
        f"latency p50={s.latency_p50_ms} p99={s.latency_p99_ms} ms "
        f"lag p99={s.lag_p99_ms} ms pending={s.pending} drops={drops}"
    )
    if s.between is not None:
        b = s.between
        line += f" between={b.get('devices')}/{'all' if b.get('limit') is None else b.get('limit')} refused={b.get('refused')}"
        line += f" taken_back={b.get('taken_back', 0)}"
    if s.broker is not None:
        line += (
            f" broker={'up' if s.broker.get('up') else 'DOWN'} partitions={s.broker.get('partitions')} "
            f"lost_samples={s.broker.get('lost_samples')}"
        )
    return line
