"""The replay scheduler (pure) and the simulator's ZeroMQ edge."""

from __future__ import annotations

import threading

import numpy as np
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.simulator.replay import ReplayDevice, ReplaySchedule, devices_for, replay
from harstream.stream.core.protocol import DEVICE_ID, decode_samples
from harstream.stream.data.recordings import load_csv


def make_devices(count: int, length: int = 300) -> list[ReplayDevice]:
    return [
        ReplayDevice(
            f"d{i}",
            np.arange(length * 6, dtype=np.float32).reshape(length, 6) / 100 + i,  # within ±100 g
            np.arange(length, dtype=np.int16) % 13,
            start=17 * i,
        )
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
    assert [d.device for d in devices] == [
        recs[0].name,
        recs[1].name,
        f"{recs[0].name}.1",
        f"{recs[1].name}.1",
        f"{recs[0].name}.2",
    ]
    assert len({d.start for d in devices if d.device.startswith(recs[0].name)}) == 3


def test_recordings_named_as_people_name_files_replay_as_valid_distinct_devices(tmp_path):
    # a download's "walk (1).csv" used to stop `harstream simulate` with a traceback on its device id
    header = "time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n"
    rows = "".join(f"{i * 0.02:.2f},0,1,0,0,0,0\n" for i in range(200))
    for name in ("walk (1).csv", "walk [1].csv", f"{'ä' * 80}.csv"):
        (tmp_path / name).write_text(header + rows)
    devices = devices_for(load_csv(tmp_path).recordings, count=4)
    names = [d.device for d in devices]
    assert len(set(names)) == 4 and all(DEVICE_ID.fullmatch(n) for n in names)
    assert "walk_1_" in names and "walk_1_-2" in names


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
    thread, result = replay_in_thread(
        schedule=ReplaySchedule(devices, chunk=7), publish=address, speed=0, wait_subscriptions=1, context=ctx
    )
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
    thread, result = replay_in_thread(
        schedule=ReplaySchedule(devices, chunk=5),
        publish=address,
        speed=200,
        sndhwm=10,
        wait_subscriptions=1,
        context=ctx,
    )
    sub.poll(2000)  # attach and subscribe, then read nothing more
    thread.join(60)
    sub.close(0)
    ctx.term()
    stats = result["stats"]
    assert stats.drops > 0
    assert stats.samples + stats.drops * 5 >= sum(len(d.samples) - d.start for d in devices) - 20 * 5


# ---------------------------------------------------------------- tail replay (core: sans-I/O)


def _batch(device: str, seq: int, n: int = 10, session: str = "s1"):
    from harstream.stream.core.protocol import SampleBatch

    return SampleBatch(device, seq, seq / 50, np.full((n, 6), seq / 1000, np.float32), session=session)


def test_the_tail_keeps_the_fewest_newest_messages_that_hold_a_window():
    from harstream.stream.bus.tail_replay import TailCache

    cache = TailCache(window=128)
    for seq in range(0, 1000, 10):
        cache.push(_batch("d", seq), now=seq / 50)
    out = cache.replay(b"s/", now=20.0)
    assert [b.seq for b in out] == list(range(870, 1000, 10))  # 130 samples: 128 need 13 messages of 10
    assert all(b.meta == {"replay": True} and b.session == "s1" for b in out)


def test_a_replay_answers_only_the_devices_its_prefix_matches():
    from harstream.stream.bus.tail_replay import TailCache
    from harstream.stream.core.protocol import samples_topic

    cache = TailCache(window=10)
    for name in ("a", "b", "c"):
        cache.push(_batch(name, 0), now=0.0)
    assert {b.device for b in cache.replay(samples_topic("b")[:5], now=0.1)} == {
        n for n in "abc" if samples_topic(n).startswith(samples_topic("b")[:5])
    }
    assert [b.device for b in cache.replay(samples_topic("a"), now=0.1)] in (
        ["a"],
        [],
    )  # [] if a's shard was just replayed


def test_a_subscription_storm_replays_each_device_at_most_once_per_interval():
    from harstream.stream.bus.tail_replay import TailCache

    cache = TailCache(window=20, min_interval=1.0)
    cache.push(_batch("d", 0, 20), now=0.0)
    replies = [cache.replay(b"s/", now=0.5 + i * 0.001) for i in range(1000)]  # 1000 subscriptions in 1 s
    assert sum(len(r) for r in replies) == 1 and cache.limited == 999
    assert len(cache.replay(b"s/", now=1.6)) == 1


def test_a_gap_or_a_new_session_starts_the_tail_afresh():
    from harstream.stream.bus.tail_replay import TailCache

    cache = TailCache(window=100, min_interval=0)
    for seq in (0, 10, 20):
        cache.push(_batch("d", seq), now=0.0)
    cache.push(_batch("d", 50), now=0.0)  # samples 30..49 never published
    assert [b.seq for b in cache.replay(b"s/", now=0.1)] == [50]
    cache.push(_batch("d", 60, session="s2"), now=0.1)  # a restarted producer, same seq
    assert [(b.seq, b.session) for b in cache.replay(b"s/", now=0.2)] == [(60, "s2")]


def test_the_cache_is_bounded_in_devices_and_forgets_silent_ones():
    from harstream.stream.bus.tail_replay import TailCache

    cache = TailCache(window=10, max_devices=3, max_age=2.56, min_interval=0)
    for i in range(5):
        cache.push(_batch(f"d{i}", 0), now=float(i))
    assert len(cache) == 3  # d0, d1 forgotten: the least recently published
    assert sorted(b.device for b in cache.replay(b"s/", now=5.0)) == ["d3", "d4"]  # d2 silent 3 s: stale
    assert len(cache) == 2


def test_a_replayed_message_a_worker_already_has_is_counted_as_replayed_not_dropped():
    from harstream.stream.bus.tail_replay import TailCache
    from harstream.stream.core.activities import ACTIVITIES
    from harstream.stream.core.protocol import encode_samples
    from harstream.stream.core.worker import StreamCore

    core, cache = StreamCore(ACTIVITIES, "m"), TailCache(window=128)
    for seq in range(0, 200, 10):
        batch = _batch("d", seq)
        cache.push(batch, now=seq / 50)
        core.ingest(encode_samples(batch), now=seq / 50)
    for batch in cache.replay(b"s/", now=4.0):
        core.ingest(encode_samples(batch), now=4.0)
    core.ingest(encode_samples(_batch("d", 190)), now=4.0)  # the same message, unmarked
    assert core.totals["replayed"] == 13 and core.drops == {"duplicate": 1}
    assert core.totals["samples"] == 200


# ---------------------------------------------------------------- tail replay (edge: real ZeroMQ)


def _read_for(sock, seconds: float) -> list:
    import time

    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.poll(20):
            out.append(decode_samples(sock.recv_multipart()))
    return out


def test_a_new_subscriber_gets_each_devices_tail_before_any_live_message(ipc_address):
    import time

    address = ipc_address("tail")
    ctx = zmq.Context()
    first = ctx.socket(zmq.SUB)
    first.setsockopt(zmq.SUBSCRIBE, b"s/")
    first.bind(address)
    stop = threading.Event()
    sim = threading.Thread(
        target=replay,
        daemon=True,
        kwargs=dict(
            schedule=ReplaySchedule(make_devices(3, 2000), chunk=10, loop=True),
            publish=address,
            speed=2,
            stop=stop,
            wait_subscriptions=1,
            printer=None,
        ),
    )
    sim.start()
    second = None
    try:
        live = _read_for(first, 2.0)  # 200 samples per device at speed 2
        first.close(0)  # the subscriber goes away, as a killed worker does
        time.sleep(0.3)
        second = ctx.socket(zmq.SUB)
        second.setsockopt(zmq.SUBSCRIBE, b"s/")
        second.bind(address)
        got = _read_for(second, 1.0)
    finally:
        stop.set()
        sim.join(10)
        if second is not None:
            second.close(0)
        ctx.term()
    assert not sim.is_alive()
    last_live = {d: max(b.seq + len(b) for b in live if b.device == d) for d in ("d0", "d1", "d2")}
    for device in ("d0", "d1", "d2"):
        mine = [b for b in got if b.device == device]
        replayed = [b for b in mine if b.meta.get("replay") is True]
        # the replay comes first, holds a whole window, and runs straight into the live messages
        assert mine[: len(replayed)] == replayed and sum(len(b) for b in replayed) >= 128
        assert replayed[0].seq < last_live[device]  # it covers samples sent before the new subscriber came
        seqs = [b.seq for b in mine]
        assert seqs == list(range(seqs[0], seqs[0] + 10 * len(seqs), 10))
