"""One edge loop for both workers: the ZeroMQ output edge and the loop around
a transport.

Both workers (the bus worker, :func:`~harstream.stream.bus.zmq_worker.serve`,
and the worker on the durable log,
:func:`~harstream.stream.durable.redis_worker.serve_redis`) run the same
loop: read and predict (the transport's :meth:`Transport.step`), publish,
and do chores on timers (:class:`~harstream.stream.core.chores.Chores`:
signal feeds and subscriptions every 0.1 s, the history of devices gone
quiet every 0.25 s, the idle sweep every second, the places for
display-only updates between windows every second, by the loop's load over 5 s,
the personal-model folder, statistics), each chore guarded: a failure is
counted as ``internal`` and logged once, never the end of the worker. A
transport supplies only what differs: how it reads (and acknowledges) and
which cores it holds.

:class:`OutputEdge` is the output bus: every core output goes out through
:meth:`OutputEdge.publish_outputs` (one place), with room (a subscriber with a
full queue loses its own copy, counted as ``output_hwm``, one per message),
and the subscription messages the XPUB socket receives are read into
:class:`~harstream.stream.core.subscriptions.Subscriptions`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from harstream.stream.core.chores import CHORES_S, IDLE_SWEEP_S, Chores
from harstream.stream.core.model_routing import ModelRouter
from harstream.stream.core.protocol import (
    HistoryUpdate,
    Prediction,
    Signal,
    encode_history,
    encode_prediction,
    encode_signal,
    encode_stats,
)
from harstream.stream.core.subscriptions import Subscriptions
from harstream.stream.core.worker import StreamCore, WorkerStats, format_stats, over_period

log = logging.getLogger(__name__)

#: How often the history of devices gone quiet is looked at (a look at every device):
#: a device that stops is final about WorkerConfig.history_quiet + this after its last sample.
HISTORY_S = 0.25
#: How often places for display-only updates between windows follow the loop's load,
#: measured over the last BUSY_OVER_S seconds.
BETWEEN_PLACES_S = 1.0
BUSY_OVER_S = 5.0


class OutputEdge:
    """The worker's output bus: an XPUB socket set to ``XPUB_NODROP``.

    ``drops`` counts, in messages, what the edge itself loses: ``output_hwm``
    (some subscriber missed a message: its queue was full) and ``internal``
    (an output that could not be encoded or sent)."""

    def __init__(self, pub: Any, subscriptions: Subscriptions | None = None):
        self.pub = pub
        self.subscriptions = subscriptions if subscriptions is not None else Subscriptions()
        self.drops: Counter[str] = Counter()
        self._logged: set[str] = set()

    @classmethod
    def open(
        cls,
        sockets: Any,
        output: str | None,
        *,
        sndhwm: int,
        keys: str | None,
        output_secret: str | None,
        linger: int = 0,
    ) -> OutputEdge:
        """A worker's output edge on a socket opened by ``sockets`` (its
        :class:`~harstream.stream.bus.sockets.BusSockets`) at ``output`` (as in
        :mod:`~harstream.stream.bus.addresses`, bound by default). Without
        ``keys``, a proxy's output secret file ``output_secret`` is shown to
        its back end (only workers may publish output)."""
        import zmq

        from harstream.stream.bus.addresses import output_address
        from harstream.stream.bus.proxy import output_credentials
        from harstream.stream.bus.sockets import SUBSCRIPTION_BYTES

        # XPUB with NODROP: a full subscriber queue makes a non-blocking send fail
        # with EAGAIN, so a loss is seen and counted; the message is then sent
        # again without NODROP, which reaches every subscriber with room (the full
        # one loses its own copy). One stuck subscriber never silences the others.
        pub = sockets.open(
            zmq.XPUB,
            output or output_address(),
            "bind",
            max_message=SUBSCRIPTION_BYTES,
            sndhwm=sndhwm,
            linger=linger,
            options={zmq.XPUB_NODROP: 1, **output_credentials(None if keys else output_secret)},
            retry_bind_s=10.0,
        )
        return cls(pub)

    def send(self, frames: list[bytes]) -> None:
        """Publish one message to every subscriber with room; never blocks, never raises."""
        try:
            if not publish_to_all_with_room(self.pub, frames):
                self._count("output_hwm", "a subscriber's queue is full; it misses output")
        except Exception as exc:  # one output must not stop the worker
            self._count("internal", f"output: {type(exc).__name__}: {exc}")

    def publish_outputs(
        self,
        predictions: Iterable[Prediction] = (),
        signals: Iterable[Signal] = (),
        histories: Iterable[HistoryUpdate] = (),
    ) -> None:
        """The one place the core's outputs leave the worker (a new kind of
        output goes out here too)."""
        for prediction in predictions:
            self._encode_and_send(encode_prediction, prediction)
        for history in histories:
            self._encode_and_send(encode_history, history)
        for signal in signals:
            self._encode_and_send(encode_signal, signal)

    def publish_stats(self, worker_id: str, stats: WorkerStats) -> None:
        self._encode_and_send(encode_stats, worker_id, stats.to_dict())

    def read_subscriptions(self) -> None:
        """Take the subscription messages queued on the XPUB socket (they queue up unless read)."""
        import zmq

        try:
            while True:
                self.subscriptions.feed(self.pub.recv(zmq.NOBLOCK))
        except zmq.Again:
            pass

    def _encode_and_send(self, encode: Callable[..., list[bytes]], *what: Any) -> None:
        try:
            frames = encode(*what)
        except Exception as exc:
            self._count("internal", f"output {encode.__name__}: {type(exc).__name__}: {exc}")
            return
        self.send(frames)

    def _count(self, reason: str, detail: str) -> None:
        self.drops[reason] += 1
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("%s: %s (further ones are counted in stats)", reason, detail)


class Transport(Protocol):
    """What an edge supplies to :func:`run_edge`: how it reads and acknowledges."""

    def step(self, now: float, wake: float, publish: Callable[[list[Prediction]], None]) -> None:
        """Read what came (waiting at most until ``wake``), push it into the
        core(s), acknowledge it, run the due batches and ``publish`` their
        predictions. May raise; the loop counts it and goes on."""

    def cores(self) -> Sequence[StreamCore]:
        """The cores whose signals, idle devices and routes the loop tends."""

    def evict_idle(self, now: float) -> None:
        """Forget devices silent for longer than the idle timeout."""

    def settle_quiet(self, now: float) -> None:
        """Make final the history of devices gone quiet (StreamCore.settle_quiet)."""

    def take_history(self) -> list[HistoryUpdate]:
        """The history revisions made since the last call, to publish (kept
        first where the transport keeps them); may raise like :meth:`step`."""

    def stats(self, now: float) -> WorkerStats:
        """Statistics since the previous call."""


def apply_registry(personal: Any, router: ModelRouter, cores: Iterable[StreamCore], drops: Counter, now: float) -> list:
    """Let the personal-model registry update ``router``; count its refusals
    in ``drops`` (``model_refused``, one per file refused) and move the
    devices concerned at once, in every core."""
    events = personal.poll(now, router)
    drops["model_refused"] += sum(event.kind == "refused" for event in events)
    if events:
        for core in cores:
            core.reroute_all()
    return events


@dataclass
class EdgeOptions:
    """How :func:`run_edge` runs around a transport (both workers pass theirs).

    ``personal`` (a :class:`~harstream.stream.personal.registry.PersonalRegistry`)
    is polled every 0.1 s to keep ``router`` in step with its folder, its
    refusals counted in ``registry_drops``; ``extra_chores`` are the
    transport's own ``(name, period, step(now))``.
    """

    runtime_name: str = "?"
    stats_every: float = 1.0
    print_every: float = 5.0
    printer: Callable[[str], None] | None = print
    personal: Any = None
    router: ModelRouter | None = None
    registry_drops: Counter | None = None
    extra_chores: Sequence[tuple[str, float, Callable[[float], Any]]] = ()


def run_edge(
    transport: Transport, edge: OutputEdge, worker_id: str, stop: Any, options: EdgeOptions | None = None
) -> WorkerStats:
    """Run ``transport`` until ``stop`` (a threading.Event) is set, as ``options``
    say; returns the last statistics."""
    o = options or EdgeOptions()
    cores = transport.cores
    chores = Chores(on_failure=lambda name, exc: edge._count("internal", f"{name}: {type(exc).__name__}: {exc}"))

    def outputs(now: float) -> None:
        edge.read_subscriptions()
        edge.publish_outputs(signals=[s for core in cores() for s in core.take_signals(now)])

    def history(now: float) -> None:
        transport.settle_quiet(now)
        edge.publish_outputs(histories=transport.take_history())  # also what a sweep or a restart settled

    def publish_stats(now: float) -> None:
        stats = transport.stats(now)
        stats.worker, stats.runtime = worker_id, o.runtime_name
        stats.drops = dict(Counter(stats.drops) + edge.drops)
        stats.subscriptions = edge.subscriptions.stats()
        if o.personal is not None:
            stats.personal = o.personal.stats()
        last[0] = stats
        edge.publish_stats(worker_id, stats)
        if o.printer is None:
            return
        unprinted.append(stats)
        if now >= next_print[0]:
            next_print[0] = now + o.print_every
            # the line says what happened over its whole period, not in the last stats message's
            # second: windows of devices started together complete in the same second (0 or all)
            o.printer(format_stats(over_period(unprinted, printed[0], now).to_dict()))
            printed[0] = (now, dict(stats.totals))
            unprinted.clear()

    def fit_between(now: float) -> None:
        # the loop's own CPU time (this thread's) over the last BUSY_OVER_S of wall time: how much
        # of a core it needs, past a start-up's or a reconnection wave's burst
        loop_clock.append((time.thread_time(), now))
        (cpu0, wall0), (cpu1, wall1) = loop_clock[0], loop_clock[-1]
        busy = (cpu1 - cpu0) / max(wall1 - wall0, 1e-9)
        for core in cores():
            core.fit_between(busy)

    now = time.monotonic()
    loop_clock = deque([(time.thread_time(), now)], maxlen=round(BUSY_OVER_S / BETWEEN_PLACES_S) + 1)
    last: list[WorkerStats | None] = [None]
    next_print = [now + o.print_every]
    printed: list[tuple[float, dict[str, int]]] = [(now, {})]
    unprinted: list[WorkerStats] = []  # the stats messages since the last printed line
    chores.every("signals", CHORES_S, outputs, first=now + CHORES_S)
    chores.every("eviction", IDLE_SWEEP_S, transport.evict_idle, first=now + IDLE_SWEEP_S)
    chores.every("history", HISTORY_S, history, first=now + HISTORY_S)
    chores.every("between places", BETWEEN_PLACES_S, fit_between, first=now + BETWEEN_PLACES_S)
    if o.personal is not None and o.router is not None:
        personal, router = o.personal, o.router
        drops = o.registry_drops if o.registry_drops is not None else Counter()
        chores.every("personal models", CHORES_S, lambda t: apply_registry(personal, router, cores(), drops, t))
    for name, period, step in o.extra_chores:
        chores.every(name, period, step, first=now + period)
    chores.every("stats", o.stats_every, publish_stats, first=now + o.stats_every)

    def publish(predictions: list[Prediction]) -> None:
        # the history revisions these windows made go out right after them
        edge.publish_outputs(predictions=predictions, histories=transport.take_history())

    while not stop.is_set():
        chores.guarded("step", transport.step, time.monotonic(), chores.next_due, publish)
        chores.run_due(time.monotonic())
    final = transport.stats(time.monotonic())
    final.worker, final.runtime = worker_id, o.runtime_name
    final.drops = dict(Counter(final.drops) + edge.drops)
    return final


def publish_to_all_with_room(pub: Any, frames: list[bytes]) -> bool:
    """Publish ``frames`` on an XPUB socket set to ``XPUB_NODROP``, never
    blocking. True if every subscriber took it; if one's queue was full
    (EAGAIN), send it again without NODROP, so every subscriber with room gets
    it and only the full one loses its copy, and return False (count it)."""
    import zmq

    try:
        pub.send_multipart(frames, zmq.NOBLOCK)
        return True
    except zmq.Again:
        pass
    pub.setsockopt(zmq.XPUB_NODROP, 0)
    try:
        pub.send_multipart(frames, zmq.NOBLOCK)  # lossy: to everyone with room
    finally:
        pub.setsockopt(zmq.XPUB_NODROP, 1)
    return False
