"""The ZeroMQ edge of the stream worker: :func:`serve` runs a
:class:`~harstream.stream.core.worker.StreamCore` between the ingest bus (a SUB
socket) and the output bus (an XPUB socket), with the model's runtime in
between; the durable-log edge is :mod:`~harstream.stream.durable.redis_worker`.

The loop: receive messages (up to a batch's worth of completed windows),
run every batch that is full or has waited ``max_wait``, publish the
predictions; every 0.1 s the signal feeds someone subscribed to (the output
socket's subscription messages say who), the personal-model registry and
the subscriptions; every second the idle sweep; statistics every
``stats_every`` seconds. Every step is guarded: a failure is counted
(``internal``), logged once, and the loop goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from harstream.stream.core.model_routing import ModelRouter
from harstream.stream.core.subscriptions import Subscriptions
from harstream.stream.core.worker import StreamCore, WorkerConfig, format_stats

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
    is refused. Returns the last statistics.
    """
    import os
    import threading

    import zmq

    from harstream.stream.bus.addresses import ingest_address, output_address
    from harstream.stream.bus.sockets import SAMPLE_MESSAGE_BYTES, SUBSCRIPTION_BYTES, BusSockets
    from harstream.stream.core.protocol import (
        SAMPLES_PREFIX,
        encode_prediction,
        encode_signal,
        encode_stats,
        shard_prefixes,
    )

    config = config or WorkerConfig()
    worker_id = worker_id or (
        f"shard{config.shard[0]}of{config.shard[1]}-{os.getpid()}" if config.shard else f"worker-{os.getpid()}"
    )
    stop = stop or threading.Event()
    sockets = BusSockets(keys, context)
    prefixes = shard_prefixes(*config.shard) if config.shard else [SAMPLES_PREFIX]
    subscriptions = Subscriptions()
    core = StreamCore(classes, model_id, config, worker_id, router=router, subscriptions=subscriptions)
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
            options={zmq.XPUB_NODROP: 1},
            retry_bind_s=10.0,
        )
        in_addr, out_addr = sub.getsockopt_string(zmq.LAST_ENDPOINT), pub.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info(
            "worker %s: ingest %s, output %s, %s",
            worker_id,
            in_addr,
            out_addr,
            f"shard {config.shard[0]}/{config.shard[1]}" if config.shard else "all shards",
        )
        if on_bound:
            on_bound(sub.getsockopt_string(zmq.LAST_ENDPOINT), pub.getsockopt_string(zmq.LAST_ENDPOINT))

        def send(encode: Callable[..., list[bytes]], *what) -> None:
            """Encode and publish one output message; never raises."""
            try:
                if not publish_to_all_with_room(pub, encode(*what)):
                    core.count_drop("output_hwm", "a subscriber's queue is full; it misses output")
            except Exception as exc:  # one output must not stop the worker
                core.count_drop("internal", f"output {encode.__name__}: {type(exc).__name__}: {exc}")

        def guarded(what: str, step: Callable, *args):
            """Run one chore; a failure is counted, logged once, and the loop goes on."""
            try:
                return step(*args)
            except Exception as exc:
                if "internal" not in core.drops:
                    log.exception("worker %s: %s failed", worker_id, what)
                core.count_drop("internal", f"{what}: {type(exc).__name__}: {exc}")
                return None

        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        now = time.monotonic()
        core.started = now
        next_stats, next_print, next_chores = now + stats_every, now + print_every, now + 0.1
        next_sweep = now + 1.0  # idle devices: a sweep looks at every device, and the timeout is 30 s
        stats: dict = {}
        if on_ready:
            on_ready()
        while not stop.is_set():
            now = time.monotonic()
            deadline = guarded("scheduling", core.next_deadline)
            wake = min(next_chores, deadline if deadline is not None else next_chores)
            if poller.poll(int(max(0.0, wake - now) * 1000.0)):
                for _ in range(5000):
                    try:
                        frames = receive_frames(sub.recv, zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    guarded("ingest", core.ingest, frames, time.monotonic())
                    if core.ready_devices >= config.max_batch:
                        break
            now = time.monotonic()
            while guarded("batching", core.batch_due, now):
                taken: list = []
                try:
                    x, taken = core.take_batch()
                    if not taken:
                        break
                    probs = (taken[0].served.runtime or runtime).predict(x)  # the model these windows were made for
                    now = time.monotonic()
                    predictions = core.finish_batch(taken, probs, now)
                except Exception as exc:  # never die on a batch
                    core.count_drop("inference", f"{len(taken)} windows: {type(exc).__name__}: {exc}")
                    continue
                for p in predictions:
                    send(encode_prediction, p)
            if now >= next_chores:
                next_chores = now + 0.1
                for signal in guarded("signals", core.take_signals, now) or ():
                    send(encode_signal, signal)
                if now >= next_sweep:
                    next_sweep = now + 1.0
                    guarded("eviction", core.evict_idle, now)
                if personal is not None:
                    guarded("personal models", apply_registry, personal, core, now)
                try:  # subscription messages queue up on an XPUB unless read
                    while True:
                        subscriptions.feed(pub.recv(zmq.NOBLOCK))
                except zmq.Again:
                    pass
            if now >= next_stats:
                next_stats = now + stats_every
                stats = guarded("stats", core.stats, now) or {}
                stats = {
                    "worker": worker_id,
                    "runtime": getattr(runtime, "name", "?"),
                    **stats,
                    "subscriptions": subscriptions.stats(),
                }
                if personal is not None:
                    stats["personal"] = personal.stats()
                if config.shard:
                    stats["shard"] = f"{config.shard[0]}/{config.shard[1]}"
                send(encode_stats, worker_id, stats)
                if printer and now >= next_print:
                    next_print = now + print_every
                    guarded("printing", lambda s=stats: printer(format_stats(s)))
        return {"worker": worker_id, **core.stats(time.monotonic())}
    finally:
        if personal is not None:
            personal.close()
        sockets.close(0)


def apply_registry(personal, core: StreamCore, now: float) -> list:
    """Let the personal-model registry update the core's router; count its
    refusals and move the devices concerned at once."""
    events = personal.poll(now, core.router)
    for event in events:
        if event.kind == "refused":
            core.drops["model_refused"] += 1
    if events:
        core.reroute_all()
    return events


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


def publish_to_all_with_room(pub, frames: list[bytes]) -> bool:
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
