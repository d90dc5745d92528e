"""The ZeroMQ edge of the stream worker: :func:`serve` runs a
:class:`~harstream.stream.core.worker.StreamCore` between the ingest bus (a SUB
socket) and the output bus (an XPUB socket), with the model's runtime in
between; the durable-log edge is :mod:`~harstream.stream.durable.redis_worker`.

The loop is the edge loop both workers share
(:func:`~harstream.stream.bus.edge.run_edge`: chores on timers, each guarded,
outputs published in one place); this module supplies its transport,
:class:`BusTransport`: receive messages (up to a batch's worth of completed
windows) and run every batch that is full or has waited ``max_wait``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from harstream.stream.bus.edge import EdgeOptions, OutputEdge, publish_to_all_with_room, run_edge
from harstream.stream.core.model_routing import ModelRouter
from harstream.stream.core.protocol import HistoryUpdate, Prediction
from harstream.stream.core.worker import StreamCore, WorkerConfig, WorkerStats

__all__ = ["BusTransport", "attach_retrying", "publish_to_all_with_room", "receive_frames", "run_due_batches", "serve"]

log = logging.getLogger(__name__)


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
    keys: str | None = None,
    router: ModelRouter | None = None,
    personal=None,
    output_secret: str | None = None,
) -> dict:
    """Run the worker on ZeroMQ sockets until ``stop`` (a threading.Event) is set.

    ``runtime`` has ``predict(x) -> probs``. ``router``
    (:class:`~harstream.stream.core.model_routing.ModelRouter`) serves each device
    in its mode, each model with its own ``runtime`` (``runtime`` serves a
    model without one); without it, ``runtime`` serves ``classes``/``model_id``
    to every device. ``personal``
    (:class:`~harstream.stream.personal.registry.PersonalRegistry`) is polled
    for personal models to serve, and closed on return. ``ingest``/``output`` are
    endpoints as in :mod:`~harstream.stream.bus.addresses` (the worker binds both by
    default). ``on_bound(ingest, output)`` is called before ``on_ready`` with
    the addresses actually attached, so ``tcp://127.0.0.1:*`` can let the OS
    pick a free port. ``keys``: a CURVE key folder
    (:mod:`~harstream.stream.bus.auth`); without one, an address off loopback
    is refused. ``output_secret``: the file of a proxy's output secret, shown when
    publishing into its back end (:mod:`~harstream.stream.bus.proxy`). Returns the last statistics.
    """
    import os
    import threading

    import zmq

    from harstream.stream.bus.addresses import ingest_address
    from harstream.stream.bus.sockets import SAMPLE_MESSAGE_BYTES, BusSockets
    from harstream.stream.core.protocol import SAMPLES_PREFIX, shard_prefixes

    config = config or WorkerConfig()
    worker_id = worker_id or (
        f"shard{config.shard[0]}of{config.shard[1]}-{os.getpid()}" if config.shard else f"worker-{os.getpid()}"
    )
    stop = stop or threading.Event()
    sockets = BusSockets(keys, context)
    prefixes = shard_prefixes(*config.shard) if config.shard else [SAMPLES_PREFIX]
    try:
        sub = sockets.open(
            zmq.SUB,
            ingest or ingest_address(),
            "bind",
            max_message=SAMPLE_MESSAGE_BYTES,
            rcvhwm=rcvhwm,
            subscribe=prefixes,
            retry_bind_s=10.0,
        )
        edge = OutputEdge.open(sockets, output, sndhwm=sndhwm, keys=keys, output_secret=output_secret)
        core = StreamCore(classes, model_id, config, worker_id, router=router, subscriptions=edge.subscriptions)
        in_addr, out_addr = sub.getsockopt_string(zmq.LAST_ENDPOINT), edge.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info(
            "worker %s: ingest %s, output %s, %s",
            worker_id,
            in_addr,
            out_addr,
            f"shard {config.shard[0]}/{config.shard[1]}" if config.shard else "all shards",
        )
        if on_bound:
            on_bound(sub.getsockopt_string(zmq.LAST_ENDPOINT), edge.pub.getsockopt_string(zmq.LAST_ENDPOINT))
        core.started = time.monotonic()
        if on_ready:
            on_ready()
        options = EdgeOptions(
            getattr(runtime, "name", "?"), stats_every, print_every, printer, personal, core.router, core.drops
        )
        final = run_edge(BusTransport(sub, core, runtime), edge, worker_id, stop, options)
        return final.to_dict()
    finally:
        if personal is not None:
            personal.close()
        sockets.close(0)


class BusTransport:
    """The bus worker's side of the edge loop: one core fed by a SUB socket;
    nothing to acknowledge (the bus is at-most-once)."""

    def __init__(self, sub, core: StreamCore, runtime):
        import zmq

        self.sub, self.core, self.runtime = sub, core, runtime
        self.poller = zmq.Poller()
        self.poller.register(sub, zmq.POLLIN)

    def cores(self) -> list[StreamCore]:
        return [self.core]

    def step(self, now: float, wake: float, publish: Callable[[list[Prediction]], None]) -> None:
        """Wait for messages until ``wake`` or the oldest window's deadline,
        take up to a batch's worth of completed windows, run every due batch."""
        import zmq

        core = self.core
        deadline = core.next_deadline()
        if deadline is not None:
            wake = min(wake, deadline)
        if self.poller.poll(int(max(0.0, wake - now) * 1000.0)):
            for _ in range(5000):
                try:
                    frames = receive_frames(self.sub.recv, zmq.NOBLOCK)
                except zmq.Again:
                    break
                core.ingest(frames, time.monotonic())  # never raises: bad messages are counted
                if core.ready_devices >= core.config.max_batch:
                    break
        run_due_batches(core, self.runtime, time.monotonic(), publish)

    def evict_idle(self, now: float) -> None:
        self.core.evict_idle(now)

    def settle_quiet(self, now: float) -> None:
        self.core.settle_quiet(now)

    def take_history(self) -> list[HistoryUpdate]:
        return self.core.take_history()

    def stats(self, now: float) -> WorkerStats:
        stats = self.core.stats(now)
        shard = self.core.config.shard
        if shard:
            stats.shard = f"{shard[0]}/{shard[1]}"
        return stats


def run_due_batches(core: StreamCore, runtime, now: float, publish: Callable[[list[Prediction]], None]) -> int:
    """Run every due batch of ``core`` through its model's runtime and publish
    each batch's predictions as it is done; a failed model call drops its
    windows (counted as ``inference``, one per window). Windows predicted."""
    done = 0
    while core.batch_due(now):
        x, taken = core.take_batch()
        if not taken:
            break
        try:
            probs = (taken[0].served.runtime or runtime).predict(x)  # the model these windows were made for
            now = time.monotonic()
            predictions = core.finish_batch(taken, probs, now)
        except Exception as exc:  # never die on a batch
            core.count_drop("inference", f"{len(taken)} windows: {type(exc).__name__}: {exc}", len(taken))
            continue
        publish(predictions)
        done += len(taken)
    return done


def receive_frames(recv: Callable, flags: int) -> list[bytes]:
    """One multipart message from a socket's ``recv``, as
    ``Socket.recv_multipart`` would return it, at 60 % of its cost: a frame's
    ``more`` attribute answers what ``recv_multipart`` asks ``getsockopt``
    (an enum conversion per frame), which is a tenth of a small message's
    cost. Raises ``zmq.Again`` (no message) like ``recv``."""
    frame = recv(flags, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = recv(flags, copy=False)
        frames.append(frame.bytes)
    return frames


def attach_retrying(socket, endpoint: str, timeout: float = 10.0) -> str:
    """Bind (or connect) as ``attach`` does, retrying for a while if the
    address is still held: a restarted worker's predecessor may not have
    released it yet (ZeroMQ closes sockets asynchronously)."""
    import errno

    import zmq

    from harstream.stream.bus.addresses import attach

    deadline = time.monotonic() + timeout
    while True:
        try:
            return attach(socket, endpoint, "bind")
        except zmq.ZMQError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                raise
            log.warning("%s is in use; retrying", endpoint)
            time.sleep(0.2)
