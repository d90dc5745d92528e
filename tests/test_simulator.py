"""The replay scheduler (pure) and the simulator's ZeroMQ edge."""

from __future__ import annotations

import threading

import numpy as np
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.simulator.replay import ReplayDevice, ReplaySchedule, devices_for, replay
from harstream.stream.protocol import decode_samples


def make_devices(count: int, length: int = 300) -> list[ReplayDevice]:
    return [
        ReplayDevice(
            f"d{i}",
            np.arange(length * 6, dtype=np.float32).reshape(length, 6) / 100 + i,  # within ±100 g
            np.arange(length, dtype=np.int16) % 13,
            start=17 * i,
        )  # fmt: skip
        for i in range(count)
    ]


@settings(max_examples=30, deadline=None)
@given(steps=st.lists(st.integers(1, 40), min_size=1, max_size=200), chunk=st.integers(1, 25))
def test_every_device_sends_its_recording_exactly_once_in_order(steps, chunk):
    devices = make_devices(5)
    sched = ReplaySchedule(devices, chunk=chunk)
    got: dict[str, list] = {d.device: [] for d in devices}
    available = 0
    for step in steps + [10_000]:
        available += step
        for c in sched.advance(available):
            assert len(c.samples) <= chunk and c.seq + len(c.samples) <= available
            got[c.device].append(c)
    assert sched.finished
    for dev in devices:
        chunks = got[dev.device]
        assert [c.seq for c in chunks] == list(np.cumsum([0] + [len(c.samples) for c in chunks[:-1]]))
        np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), dev.samples[dev.start :])
        np.testing.assert_array_equal(np.concatenate([c.labels for c in chunks]), dev.labels[dev.start :])


def test_devices_send_at_different_phases():
    sched = ReplaySchedule(make_devices(10), chunk=10)
    first = {}
    for available in range(1, 11):
        for c in sched.advance(available):
            first.setdefault(c.device, available)
    assert sorted(first.values()) == list(range(1, 11))


def test_loop_wraps_the_recording_and_keeps_counting():
    (dev,) = make_devices(1, length=50)
    sched = ReplaySchedule([dev], chunk=10, loop=True)
    chunks = sched.advance(120)
    assert not sched.finished and chunks[-1].seq == 110
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks])[50:100], dev.samples)


def test_more_devices_than_sessions_cycle_with_offsets(embedded):
    recs = embedded.of_subjects([2])
    devices = devices_for(recs, count=5)
    assert [d.device for d in devices] == [recs[0].name, recs[1].name, f"{recs[0].name}.1",
                                           f"{recs[1].name}.1", f"{recs[0].name}.2"]  # fmt: skip
    assert len({d.start for d in devices if d.device.startswith(recs[0].name)}) == 3


def replay_in_thread(**kwargs) -> tuple[threading.Thread, dict]:
    """Run replay() in a thread (the receiving socket must keep being polled
    for ZeroMQ to attach it and forward its subscriptions)."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("stats", replay(printer=None, **kwargs)))
    thread.start()
    return thread, result


def test_replay_publishes_every_sample_with_seq_and_labels_over_zeromq():
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"s/")
    sub.bind("tcp://127.0.0.1:*")
    address = sub.getsockopt_string(zmq.LAST_ENDPOINT)
    devices = make_devices(3)
    expected = sum(len(d.samples) - d.start for d in devices)
    thread, result = replay_in_thread(schedule=ReplaySchedule(devices, chunk=7), publish=address, speed=0,
                                      wait_subscriptions=1, context=ctx)  # fmt: skip
    received: dict[str, list] = {}
    got = 0
    while got < expected and sub.poll(5000):
        b = decode_samples(sub.recv_multipart())
        received.setdefault(b.device, []).append(b)
        got += len(b)
    thread.join(10)
    sub.close(0)
    ctx.term()
    assert result["stats"].drops == 0 and result["stats"].samples == expected == got
    for dev in devices:
        batches = received[dev.device]
        assert [b.seq for b in batches] == sorted(b.seq for b in batches)
        np.testing.assert_array_equal(np.concatenate([b.samples for b in batches]), dev.samples[dev.start :])
        np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), dev.labels[dev.start :])
        assert all(b.t0 > 1e9 for b in batches)  # wall-clock epoch


def test_a_full_queue_drops_and_counts_instead_of_blocking():
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)  # subscribes, then stops reading
    sub.setsockopt(zmq.RCVHWM, 10)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind("tcp://127.0.0.1:*")
    address = sub.getsockopt_string(zmq.LAST_ENDPOINT)
    devices = make_devices(20, length=2000)
    thread, result = replay_in_thread(schedule=ReplaySchedule(devices, chunk=5), publish=address, speed=200,
                                      sndhwm=10, wait_subscriptions=1, context=ctx)  # fmt: skip
    sub.poll(2000)  # attach and subscribe, then read nothing more
    thread.join(60)
    sub.close(0)
    ctx.term()
    stats = result["stats"]
    assert stats.drops > 0
    assert stats.samples + stats.drops * 5 >= sum(len(d.samples) - d.start for d in devices) - 20 * 5
