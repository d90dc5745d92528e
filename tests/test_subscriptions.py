"""The worker makes a device's signal feed only while someone subscribes to it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq
from conftest import wait_for, worker_thread

from harstream.models.runtime import NullRuntime
from harstream.simulator.replay import ReplayDevice, ReplaySchedule, replay
from harstream.stream.bus.zmq_worker import serve
from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.protocol import SampleBatch, Signal, decode_output, encode_samples
from harstream.stream.core.subscriptions import Subscriptions, WatchedDevices
from harstream.stream.core.worker import StreamCore, WorkerConfig


def test_a_prefix_is_wanted_from_its_first_subscription_to_its_last_unsubscription():
    subs = Subscriptions()
    assert subs.feed(b"\x01g/a/") and not subs.feed(b"\x01g/a/")  # a second subscriber changes nothing
    assert not subs.feed(b"\x00g/a/") and subs.wants(b"g/a/")
    assert subs.feed(b"\x00g/a/") and not subs.wants(b"g/a/")


def test_a_shorter_prefix_wants_every_topic_it_starts():
    subs = Subscriptions()
    subs.feed(b"\x01g/")
    assert subs.wants(b"g/phone-1/") and subs.wants(b"g/phone-2/") and not subs.wants(b"p/phone-1/")


def test_messages_that_are_not_subscriptions_are_counted_and_ignored():
    subs = Subscriptions()
    assert not subs.feed(b"") and not subs.feed(b"\x02g/a/") and not subs.feed(b"\x00g/never-subscribed/")
    assert subs.ignored == 2 and subs.version == 0


def test_the_core_makes_signals_only_of_devices_someone_subscribed_to():
    subs = Subscriptions()
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(signal_interval=0.5), subscriptions=subs)
    subs.feed(b"\x01g/b/")
    for seq in range(0, 50, 10):
        for device in ("a", "b"):
            core.ingest(encode_samples(SampleBatch(device, seq, seq / 50, np.zeros((10, 6), np.float32))), now=0.1)
    assert [s.device for s in core.take_signals(now=1.0)] == ["b"]


def test_a_device_unsubscribed_and_subscribed_again_starts_a_fresh_feed():
    subs = Subscriptions()
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(signal_interval=0.5), subscriptions=subs)
    subs.feed(b"\x01g/a/")
    core.ingest(encode_samples(SampleBatch("a", 0, 0.0, np.zeros((10, 6), np.float32))), now=0.1)
    core.take_signals(now=0.2)  # not due yet; the subscription is taken in
    subs.feed(b"\x00g/a/")
    assert core.take_signals(now=1.0) == []
    subs.feed(b"\x01g/a/")
    core.take_signals(now=1.1)
    core.ingest(encode_samples(SampleBatch("a", 100, 2.0, np.zeros((10, 6), np.float32))), now=1.2)
    (sig,) = core.take_signals(now=2.0)
    assert sig.t0 == 2.0  # none of the samples from before the gap in watching


def test_over_the_bus_the_worker_sends_the_signal_of_the_followed_device_only(ipc_address):
    ingest, output = ipc_address("in"), ipc_address("out")
    with worker_thread(
        NullRuntime(6), ingest=ingest, output=output, config=WorkerConfig(signal_interval=0.1), stats_every=0.1
    ):
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"stats/")
        sub.setsockopt(zmq.SUBSCRIBE, b"g/dev-1/")
        sub.connect(output)
        rng = np.random.default_rng(0)
        devs = [ReplayDevice(f"dev-{i}", rng.normal(0, 0.3, (1000, 6)).astype(np.float32), None) for i in range(5)]
        stop_sim = threading.Event()
        sim = threading.Thread(
            target=replay,
            daemon=True,
            kwargs=dict(
                schedule=ReplaySchedule(devs, chunk=10, loop=True),
                publish=ingest,
                speed=5,
                stop=stop_sim,
                wait_subscriptions=1,
                printer=None,
            ),
        )
        sim.start()
        signals: list[Signal] = []
        stats: list[dict] = []

        def read_until(enough) -> bool:
            def step() -> bool:
                while sub.poll(0):
                    msg = decode_output(sub.recv_multipart())
                    (signals if isinstance(msg, Signal) else stats).append(msg)
                return enough()

            return wait_for(step, timeout=30)

        try:
            assert read_until(lambda: len(signals) >= 10), "no signal of the followed device"
            after = len(stats)
            assert read_until(lambda: len(stats) >= after + 2)
            made = stats[-1]["totals"]["signals"]
            # every signal the worker made went to the one subscriber: dev-1's
            assert {s.device for s in signals} == {"dev-1"}
            assert len(signals) - 10 <= made <= len(signals) + 10
        finally:
            stop_sim.set()
            sim.join(10)
            sub.close(0)
            ctx.term()


def test_past_the_prefix_limit_every_topic_is_wanted_and_the_table_stops_growing():
    from harstream.stream.core.subscriptions import MAX_PREFIXES

    subs = Subscriptions()
    for i in range(MAX_PREFIXES + 5):
        subs.feed(b"\x01g/junk-%d/" % i)
    assert subs.overflowed and subs.wants(b"g/anyone/") and len(subs) == 0
    assert not subs.feed(b"\x00g/junk-1/") and subs.wants(b"g/anyone/")


def test_the_empty_prefix_wants_every_topic():
    subs = Subscriptions()
    subs.feed(b"\x01")
    assert subs.wants(b"g/a/") and subs.wants(b"p/b/")


def test_following_one_device_takes_effect_at_once_and_stopping_names_it():
    subs = Subscriptions()
    watched = WatchedDevices(subs, full_every=1.0)
    devices = {"a", "b"}
    watched.update(devices, now=0.0)
    subs.feed(b"\x01g/a/")
    assert watched.update(devices, now=0.1) == set() and watched.names == {"a"}
    subs.feed(b"\x00g/a/")
    assert watched.update(devices, now=0.2) == {"a"} and watched.names == set()


def test_a_change_to_many_signal_topics_is_applied_at_most_once_per_interval():
    subs = Subscriptions()
    watched = WatchedDevices(subs, full_every=1.0)
    devices = {"a", "b"}
    subs.feed(b"\x01g/")
    watched.update(devices, now=0.0)
    assert watched.names == {"a", "b"}
    subs.feed(b"\x00g/")  # a subscriber toggling a broad prefix costs one look at every device per interval
    watched.update(devices, now=0.5)
    assert watched.names == {"a", "b"}
    watched.update(devices, now=1.0)
    assert watched.names == set()


def test_a_device_that_is_gone_is_no_longer_watched():
    subs = Subscriptions()
    watched = WatchedDevices(subs)
    subs.feed(b"\x01g/a/")
    watched.add_if_wanted("a")
    watched.update({"b"}, now=0.0)
    assert "a" not in watched.names


def test_every_consumer_of_the_subscriptions_is_told_each_change():
    subs = Subscriptions()
    first, second = WatchedDevices(subs), WatchedDevices(subs)  # e.g. two partitions' cores
    subs.feed(b"\x01g/a/")
    first.update({"a"}, now=0.0)
    second.update({"a"}, now=0.0)
    assert first.names == second.names == {"a"}


def test_a_consumer_too_far_behind_is_told_that_anything_may_have_changed():
    from harstream.stream.core.subscriptions import MAX_CHANGES

    subs = Subscriptions()
    for i in range(MAX_CHANGES + 1):
        subs.feed(b"\x01g/d%d/" % i)
    assert subs.changes_since(0) is None and subs.changes_since(subs.version - 1) == [b"g/d%d/" % MAX_CHANGES]


def test_a_prefix_longer_than_any_topic_is_counted_and_not_kept():
    from harstream.stream.core.subscriptions import MAX_PREFIX_BYTES

    subs = Subscriptions()
    assert subs.feed(b"\x01" + b"g/" + b"x" * (MAX_PREFIX_BYTES - 2)) is True  # the longest kept
    assert subs.feed(b"\x01" + b"g/" + b"x" * 60_000) is False
    assert subs.stats()["too_long"] == 1 and len(subs) == 1


def _rss() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(params=["bus", "durable"])
def any_worker(request, ipc_address):
    """A worker of either edge in a thread, binding its output on ``ipc``;
    yields (output address, stop event, thread)."""
    import shutil
    import tempfile
    from pathlib import Path

    output = ipc_address(f"out-{request.param}")
    stop, ready = threading.Event(), threading.Event()
    common = dict(
        runtime=NullRuntime(6),
        classes=ACTIVITIES,
        model_id="none",
        output=output,
        worker_id="w",
        stop=stop,
        stats_every=0.1,
        on_ready=ready.set,
        printer=None,
    )
    cleanup = []
    if request.param == "bus":
        target, kwargs = serve, dict(common, ingest=ipc_address("in-bus"))
    else:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        from harstream.stream.durable.broker import start_redis
        from harstream.stream.durable.redis_worker import LogConfig, serve_redis

        folder = Path(tempfile.mkdtemp(prefix="hs-redis-"))
        proc, url = start_redis(folder, unix_socket=folder / "redis.sock")
        cleanup.append(lambda: (proc.terminate(), proc.wait(10), shutil.rmtree(folder, ignore_errors=True)))
        target, kwargs = serve_redis, dict(common, url=url, log_config=LogConfig(partitions=2))
    thread = threading.Thread(target=target, kwargs=kwargs, daemon=True)
    thread.start()
    assert ready.wait(30), f"{request.param} worker did not start"
    try:
        yield output, stop, thread
    finally:
        stop.set()
        thread.join(30)
        for step in cleanup:
            step()


def test_subscriptions_longer_than_any_topic_cost_a_worker_no_memory_and_its_output_goes_on(any_worker):
    """ZeroMQ keeps a subscription in a trie of a node per byte (~80 bytes each):
    30 prefixes of 60 kB would hold ~140 MB in the worker for as long as it runs."""
    output, _stop, thread = any_worker
    ctx = zmq.Context()
    good = ctx.socket(zmq.SUB)
    good.setsockopt(zmq.SUBSCRIBE, b"stats/")
    good.connect(output)
    hostile = ctx.socket(zmq.SUB)
    hostile.setsockopt(zmq.LINGER, 0)
    try:
        assert wait_for(lambda: good.poll(100) and good.recv_multipart(), timeout=20), "no stats before"
        for i in range(30):  # before connecting: the subscriber's own copy is not the worker's cost
            hostile.setsockopt(zmq.SUBSCRIBE, b"g/%d-" % i + b"x" * 60_000)
        time.sleep(0.5)
        mem0 = _rss()
        hostile.connect(output)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # let both sides' I/O threads move the subscriptions
            hostile.getsockopt(zmq.EVENTS)
            time.sleep(0.05)
        grown = _rss() - mem0
        while good.poll(0):
            good.recv_multipart()
        assert wait_for(lambda: good.poll(100) and good.recv_multipart(), timeout=10), "stats stopped"
    finally:
        hostile.close(0)
        good.close(0)
        ctx.term()
    assert thread.is_alive()
    assert grown < 48 * 2**20, f"the worker's process grew by {grown / 2**20:.0f} MB"
