"""The worker core (no sockets): per-device state, batching, smoothing, rejects.

About the model's windows: the display-only updates between windows (on by
default for the first devices) are off here (``between_devices=0``);
tests/test_between.py has them."""

from __future__ import annotations

import numpy as np
import pytest

from harstream.stream.core.activities import ACTIVITIES, UNKNOWN
from harstream.stream.core.pipeline import DevicePipeline
from harstream.stream.core.protocol import SampleBatch, encode_samples
from harstream.stream.core.smoothing import Smoother
from harstream.stream.core.worker import StreamCore, WorkerConfig


def signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / 50.0
    return (np.sin(2 * np.pi * 1.5 * t + np.arange(6)) * 0.3 + rng.normal(0, 0.05, (n, 6))).astype(np.float32)


def send(core, device, seq, samples, labels=None, now=0.0, t0=1000.0):
    core.ingest(encode_samples(SampleBatch(device, seq, t0 + seq / 50, samples, labels=labels)), now)


def drain(core) -> list:
    """Run every pending window through a fake model (probabilities from the data)."""
    out = []
    while core.pending:
        x, taken = core.take_batch()
        probs = np.tile(np.eye(6)[0] * 0.5 + 0.5 / 6, (len(x), 1))
        out += core.finish_batch(taken, probs, now=1.0)
    return out


def test_windows_match_the_offline_pipeline_whatever_the_chunking():
    data = signal(1000)
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, max_batch=1000))
    seq = 0
    for size in [3, 50, 1, 77, 200, 13] * 10:
        if seq >= len(data):
            break
        send(core, "d", seq, data[seq : seq + size])
        seq += len(data[seq : seq + size])
    x, taken = core.take_batch()
    np.testing.assert_allclose(x, DevicePipeline().push(data), atol=1e-6)
    assert [w.window for w in taken] == list(range(len(x)))


def test_truth_is_the_label_at_the_window_end():
    labels = np.repeat(np.arange(1, 7, dtype=np.int16), 100)  # 600 samples, 6 activities
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0))
    for seq in range(0, 600, 10):
        send(core, "d", seq, signal(600)[seq : seq + 10], labels[seq : seq + 10])
    preds = drain(core)
    assert [p.truth for p in preds] == [ACTIVITIES[labels[64 * j + 127] - 1] for j in range(len(preds))]
    assert preds[0].t_end == pytest.approx(1000.0 + 127 / 50)


def test_a_gap_restarts_the_device_pipeline_and_is_counted():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0))
    send(core, "d", 0, signal(200))
    send(core, "d", 500, signal(200))  # samples 200..499 never arrived
    preds = drain(core)
    assert [p.window for p in preds] == [0, 1, 0, 1]
    assert core.totals["gaps"] == 1 and not core.drops


def test_duplicates_and_late_chunks_are_dropped_and_counted():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0))
    send(core, "d", 0, signal(100))
    send(core, "d", 0 + 50, signal(10))  # behind: overlaps what was seen
    send(core, "d", 100, signal(100))
    send(core, "d", 100, signal(100))  # exact duplicate
    assert core.drops["duplicate"] == 2
    assert [p.window for p in drain(core)] == [0, 1]


def test_seq_zero_means_the_device_started_over():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0))
    send(core, "d", 0, signal(300))
    send(core, "d", 0, signal(128))
    assert core.totals["restarts"] == 1 and [p.window for p in drain(core)] == [0, 1, 2, 0]


def test_malformed_messages_are_counted_and_the_good_device_keeps_being_served():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0))
    good = encode_samples(SampleBatch("good", 0, 0.0, signal(10)))
    for seq in range(0, 256, 10):
        send(core, "good", seq, signal(256)[seq : seq + 10])
        core.ingest([b"garbage"], 0.0)
        core.ingest([good[0], b"{", good[2]], 0.0)
        core.ingest([good[0], good[1], good[2][:-1]], 0.0)
        core.ingest([b"\x00" * 10_000] * 3, 0.0)
    assert len(drain(core)) == 3
    assert core.drops == {"frame_count": 26, "header": 52, "byte_length": 26}


def test_idle_devices_are_evicted():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, idle_timeout=5.0))
    send(core, "old", 0, signal(10), now=0.0)
    send(core, "new", 0, signal(10), now=4.0)
    assert core.evict_idle(now=6.0) == ["old"] and list(core.devices) == ["new"]


def test_a_device_sending_faster_than_real_time_cannot_push_out_the_windows_of_others():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, max_pending=12))
    send(core, "calm", 0, signal(128 + 64 * 2))  # 3 windows waiting
    core.flush()
    send(core, "flood", 0, signal(128 + 64 * 19))  # 20 at once: past its share of the full queue, its own go
    waiting = [w.device for w in core.pending]
    assert waiting.count("calm") == 3 and waiting.count("flood") == 9
    assert core.drops["backlog"] == 11 and core.drops["overload"] == 0


def test_waiting_windows_are_bounded_and_overflow_is_counted():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, max_pending=3))
    send(core, "d", 0, signal(128 + 64 * 9))  # 10 windows at once
    assert len(core.pending) == 3 and core.drops["overload"] == 7
    assert [w.window for w in core.pending] == [7, 8, 9]  # the newest are kept


def test_devices_outside_the_shard_are_not_processed():
    from harstream.stream.core.protocol import shard_of

    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, shard=(0, 2)))
    names = [f"dev{i}" for i in range(20)]
    for name in names:
        send(core, name, 0, signal(10))
    mine = {n for n in names if shard_of(n) % 2 == 0}
    assert set(core.devices) == mine and core.drops["shard"] == len(names) - len(mine)


def test_a_batch_waits_at_most_max_wait_for_more_windows():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, max_batch=4, max_wait=0.005))
    send(core, "a", 0, signal(128), now=10.0)
    assert not core.batch_due(10.004) and core.batch_due(10.005)
    for name in "bcd":
        send(core, name, 0, signal(128), now=10.001)
    assert core.batch_due(10.001)


def test_smoothed_label_is_unknown_when_windows_disagree():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, smooth_windows=2, threshold=0.6))
    send(core, "d", 0, signal(192))
    x, taken = core.take_batch()
    preds = core.finish_batch(taken, np.array([np.eye(6)[0], np.eye(6)[3]]), now=0.0)
    assert [p.label for p in preds] == ["WALKING", "SITTING"]
    assert [p.smoothed for p in preds] == ["WALKING", UNKNOWN]


def test_smoother_averages_the_last_windows():
    s = Smoother(["a", "b"], windows=3, threshold=0.5)
    for probs in ([1, 0], [1, 0], [0, 1]):
        label, mean = s.update(probs)
    assert label == "a" and mean == pytest.approx([2 / 3, 1 / 3])


def test_signal_feed_is_decimated_to_10_hz_per_device():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, signal_interval=0.5))
    data = signal(100)
    for seq in range(0, 100, 7):
        send(core, "d", seq, data[seq : seq + 7], now=0.1)
    (sig,) = core.take_signals(now=1.0)
    assert sig.rate == 10.0 and len(sig.acc) == 20
    np.testing.assert_allclose(sig.acc, data[::5, :3], atol=1e-4)
    assert core.take_signals(now=2.0) == []


def test_stats_report_rates_latency_and_drops():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0))
    core.started = 0.0
    send(core, "d", 0, signal(256), now=0.0)
    core.ingest([b"x"], 0.0)
    drain(core)
    stats = core.stats(now=2.0)
    assert stats.devices == 1 and stats.samples_per_s == 128.0 and stats.windows_per_s == 1.5
    assert stats.drops == {"frame_count": 1} and stats.latency_p99_ms == pytest.approx(1000.0)


def test_many_devices_filtered_together_get_exactly_their_own_windows(monkeypatch):
    from harstream.stream.core import batch_push

    stacked = []
    real = batch_push._filter_stacked
    monkeypatch.setattr(
        batch_push, "_filter_stacked", lambda pipes, raw: stacked.append(len(pipes)) or real(pipes, raw)
    )
    rng = np.random.default_rng(7)
    data = {f"d{i}": signal(700, seed=i) * (1 + i / 10) for i in range(20)}
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, max_batch=10_000, max_pending=10_000))
    pos = dict.fromkeys(data, 0)
    while any(p < 700 for p in pos.values()):
        for name, samples in data.items():  # interleaved like a live bus
            size = int(rng.choice([10, 10, 10, 64]))
            if pos[name] < 700:
                send(core, name, pos[name], samples[pos[name] : pos[name] + size])
                pos[name] += len(samples[pos[name] : pos[name] + size])
        core.flush()
    x, taken = core.take_batch()
    assert stacked and max(stacked) > 1  # the vectorised path did run
    for name, samples in data.items():
        mine = [i for i, w in enumerate(taken) if w.device == name]
        np.testing.assert_array_equal(x[mine], DevicePipeline().push(samples))


# ------------------------------------------------------- the device's parts, one each


def test_incarnation_tells_next_gap_duplicate_and_restart_apart():
    from harstream.stream.core.incarnation import Incarnation

    inc = Incarnation(seq=100, now=0.0)
    inc.advance(100, 20, now=1.0)
    assert (inc.next_seq, inc.last_seen) == (120, 1.0)
    assert [inc.judge(s, now=1.2) for s in (120, 121, 119, 100, 0)] == [
        "next",
        "gap",
        "duplicate",
        "duplicate",
        "restart",
    ]


def test_incarnation_refuses_a_jump_further_than_the_time_since_the_last_message_allows():
    from harstream.stream.core.incarnation import GAP_SLACK, GAP_SPEED, Incarnation

    inc = Incarnation(seq=0, now=0.0, session="s")
    inc.advance(0, 10, now=10.0)
    most = int(50 * (GAP_SPEED * 2.0 + GAP_SLACK))  # two seconds after the last message
    assert inc.judge(10 + most, now=12.0, session="s") == "gap"
    assert inc.judge(11 + most, now=12.0, session="s") == "jump"
    assert inc.judge(10**12, now=12.0, session="s") == "jump"


def test_incarnation_lets_another_session_in_only_after_the_owner_went_quiet():
    from harstream.stream.core.incarnation import Incarnation

    inc = Incarnation(seq=0, now=0.0, session="owner", takeover_after=2.0)
    inc.advance(0, 10, now=5.0)
    assert inc.judge(10, now=6.9, session="intruder") == "foreign"
    assert inc.judge(10, now=6.9, session="") == "foreign"  # nor a producer sending none
    assert inc.judge(0, now=6.9, session="owner") == "duplicate"  # seq 0 restarts only without sessions
    assert inc.judge(0, now=7.0, session="restarted") == "takeover"


def test_sample_buffer_gives_back_its_chunks_in_order_with_unlabelled_gaps_marked():
    from harstream.stream.core.sample_buffer import SampleBuffer

    buf = SampleBuffer()
    a, b = signal(5), signal(7, seed=1)
    buf.append(a, np.arange(5, dtype=np.int16))
    buf.append(b)
    raw, labels = buf.take()
    np.testing.assert_array_equal(raw, np.concatenate([a, b]))
    assert labels.tolist() == [0, 1, 2, 3, 4] + [-1] * 7
    assert len(buf) == 0 and buf.take()[1] is None


def test_device_windows_number_time_and_label_windows_like_the_offline_pipeline():
    from harstream.stream.core.device_windows import DeviceWindows

    data, labels = signal(320), np.repeat(np.arange(1, 6, dtype=np.int16), 64)
    dw = DeviceWindows(seq=1000)
    dw.anchor(SampleBatch("d", 1000, 20.0, data, labels=labels))
    assert dw.completes_window(128) and not dw.completes_window(127)
    out = dw.describe(dw.pipeline.push(data), labels, first_window=0, seen_before=0)
    np.testing.assert_allclose(np.stack([w.x for w in out]), DevicePipeline().push(data), atol=1e-6)
    assert [w.window for w in out] == [0, 1, 2, 3]
    assert [w.t_end for w in out] == pytest.approx([20.0 + (64 * j + 127) / 50 for j in range(4)])
    assert [w.truth for w in out] == [ACTIVITIES[labels[64 * j + 127] - 1] for j in range(4)]


def test_signal_feed_keeps_every_fifth_sample_by_seq_whatever_the_chunking():
    from harstream.stream.core.signal_feed import SignalFeed

    data = signal(60)
    feed = SignalFeed(decimation=5, interval=0.5, now=0.0)
    for seq in range(0, 60, 7):
        feed.add(SampleBatch("d", seq, 100.0 + seq / 50, data[seq : seq + 7]))
    assert feed.take("d", now=0.4) is None  # not due yet
    sig = feed.take("d", now=0.5)
    assert sig.t0 == 100.0 and sig.rate == 10.0
    np.testing.assert_allclose(sig.gyro, data[::5, 3:], atol=1e-4)
    feed.add(SampleBatch("d", 60, 101.2, data[:5]))
    feed.reset()
    assert feed.take("d", now=5.0) is None  # a reset forgets what was collected


# ------------------------------------------------------------- identity and bounds


def test_a_second_session_under_a_live_device_id_neither_feeds_nor_resets_it():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, takeover_after=2.0))
    data = signal(256)
    for seq in range(0, 256, 32):
        core.ingest(
            encode_samples(SampleBatch("d", seq, 1000 + seq / 50, data[seq : seq + 32], session="real")), now=seq / 50
        )
        core.ingest(encode_samples(SampleBatch("d", 0, 1000.0, signal(32, seed=9), session="forger")), now=seq / 50)
    x, _ = core.take_batch()
    np.testing.assert_allclose(x, DevicePipeline().push(data), atol=1e-6)  # the real device's windows only
    assert core.drops["session"] == 8 and core.totals["restarts"] == 0


def test_stale_samples_are_dropped_against_the_wall_clock():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, stale_after=5.0), wall_clock=lambda: 2000.0)
    core.ingest(encode_samples(SampleBatch("old", 0, 1990.0, signal(10))), now=0.0)
    core.ingest(encode_samples(SampleBatch("new", 0, 1999.0, signal(10))), now=0.0)
    assert core.drops["stale"] == 1 and list(core.devices) == ["new"]


def test_a_full_device_table_forgets_a_device_with_no_window_before_refusing():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, max_devices=3))
    send(core, "proven", 0, signal(128))
    core.flush()
    send(core, "filling", 0, signal(100))
    send(core, "flood-1", 0, signal(1))
    send(core, "flood-2", 0, signal(1))  # evicts flood-1 (fewest samples), not "filling"
    assert set(core.devices) == {"proven", "filling", "flood-2"}
    assert core.totals["evicted_unproven"] == 1 and not core.drops


def test_a_worker_requiring_sessions_refuses_a_producer_that_names_none():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, require_session=True))
    data = signal(128)
    core.ingest(encode_samples(SampleBatch("anon", 0, 0.0, data)), now=0.0)
    core.ingest(encode_samples(SampleBatch("named", 0, 0.0, data, session="s1")), now=0.0)
    _, taken = core.take_batch()
    assert [w.device for w in taken] == ["named"] and core.drops["session"] == 1
