"""The resampler against known 50 Hz truth on synthetic irregular streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.stream.core.resample import Resampler


def truth(t: np.ndarray) -> np.ndarray:
    """A smooth 6-channel signal (slow enough for linear interpolation at >= 60 Hz)."""
    t = np.asarray(t)[:, None]
    f = np.array([0.5, 0.8, 1.1, 0.3, 0.7, 1.3])
    return np.sin(2 * np.pi * f * t + np.arange(6)) + np.arange(6) * 0.1


def irregular_times(rng, rate: float, start: float, end: float) -> np.ndarray:
    """Readings at about ``rate`` Hz with +-40 % jitter."""
    steps = rng.uniform(0.6, 1.4, size=int((end - start) * rate * 1.5) + 10) / rate
    t = start + np.cumsum(steps)
    return t[t < end]


def feed(r: Resampler, acc_t, gyro_t, batch_s: float, rng=None, shuffle=False):
    """Push both streams in batches of ``batch_s`` seconds; return all chunks."""
    chunks = []
    edges = np.arange(0, max(acc_t[-1], gyro_t[-1]) + batch_s, batch_s)
    batches = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        for name, t, cols in (("acc", acc_t, slice(0, 3)), ("gyro", gyro_t, slice(3, 6))):
            sel = t[(t >= lo) & (t < hi)]
            if len(sel):
                batches.append((name, sel, truth(sel)[:, cols]))
    if shuffle:
        # Swap neighbouring batches now and then, as HTTP posts can.
        for i in range(0, len(batches) - 1, 3):
            batches[i], batches[i + 1] = batches[i + 1], batches[i]
    for name, t, v in batches:
        r.push(name, t, v)
        chunks += r.pull()
    return chunks


def test_irregular_multirate_streams_match_the_50hz_truth():
    rng = np.random.default_rng(1)
    acc_t = irregular_times(rng, 100, 0.0, 10.0)
    gyro_t = irregular_times(rng, 400, 0.0, 10.0)
    r = Resampler(rate=50.0)
    chunks = feed(r, acc_t, gyro_t, batch_s=0.25)
    samples = np.concatenate([c.samples for c in chunks])
    t0 = chunks[0].t0
    grid = t0 + np.arange(len(samples)) / 50.0
    assert [c.seq for c in chunks] == list(np.cumsum([0] + [len(c.samples) for c in chunks[:-1]]))
    assert len(samples) > 9.5 * 50 - 10  # all but the held-back tail
    np.testing.assert_allclose(samples, truth(grid), atol=0.01)
    assert not any(c.new_segment for c in chunks)


def test_batches_arriving_slightly_out_of_order_are_merged_by_timestamp():
    rng = np.random.default_rng(2)
    acc_t = irregular_times(rng, 60, 0.0, 6.0)
    gyro_t = irregular_times(rng, 60, 0.0, 6.0)
    r = Resampler(rate=50.0, hold=0.3)
    chunks = feed(r, acc_t, gyro_t, batch_s=0.1, shuffle=True)
    samples = np.concatenate([c.samples for c in chunks])
    grid = chunks[0].t0 + np.arange(len(samples)) / 50.0
    np.testing.assert_allclose(samples, truth(grid), atol=0.02)
    assert r.late == 0


def test_a_silent_gap_starts_a_new_segment_with_a_seq_jump_and_no_interpolation():
    rng = np.random.default_rng(3)
    acc_t = np.concatenate([irregular_times(rng, 100, 0, 3), irregular_times(rng, 100, 6, 9)])
    gyro_t = np.concatenate([irregular_times(rng, 200, 0, 3), irregular_times(rng, 200, 6, 9)])
    r = Resampler(rate=50.0, max_gap=0.5)
    chunks = feed(r, acc_t, gyro_t, batch_s=0.2)
    times = np.concatenate([c.t0 + np.arange(len(c.samples)) / 50 for c in chunks])
    assert not ((times > 3.0) & (times < 6.0)).any(), "interpolated across 3 s of silence"
    first_after = next(i for i, c in enumerate(chunks) if c.t0 > 5)
    before, after = chunks[first_after - 1], chunks[first_after]
    assert after.new_segment
    expected_seq = before.seq + len(before.samples) + round((after.t0 - before.t0) * 50) - len(before.samples)
    assert after.seq > before.seq + len(before.samples)
    assert abs(after.seq - expected_seq) <= 1
    samples = np.concatenate([c.samples for c in chunks])
    np.testing.assert_allclose(samples, truth(times), atol=0.01)


def test_a_clock_jumping_back_restarts_on_the_new_time_base():
    rng = np.random.default_rng(4)
    r = Resampler(rate=50.0)
    a1, g1 = irregular_times(rng, 100, 100, 103), irregular_times(rng, 100, 100, 103)
    chunks = feed(r, a1, g1, batch_s=0.2)
    seq_end = chunks[-1].seq + len(chunks[-1].samples)
    a2, g2 = irregular_times(rng, 100, 0, 3), irregular_times(rng, 100, 0, 3)
    later = feed(r, a2, g2, batch_s=0.2)
    assert r.clock_jumps == 1
    assert later[0].new_segment and later[0].seq > seq_end
    assert later[0].t0 < 1.0
    samples = np.concatenate([c.samples for c in later])
    grid = later[0].t0 + np.arange(len(samples)) / 50.0
    np.testing.assert_allclose(samples, truth(grid), atol=0.01)


def test_one_stream_going_silent_bounds_the_buffer_of_the_other():
    r = Resampler(rate=50.0, max_skew=2.0)
    t = np.arange(0, 1, 0.01)
    r.push("acc", t, truth(t)[:, :3])
    r.push("gyro", t, truth(t)[:, 3:])
    r.pull()
    for k in range(1, 30):
        t = np.arange(k, k + 1, 0.01)
        r.push("acc", t, truth(t)[:, :3])
        r.pull()
    assert sum(len(x) for x in r._t.values()) < 200


def test_bad_input_is_refused_with_a_clear_error():
    r = Resampler()
    with pytest.raises(ValueError, match="NaN"):
        r.push("acc", [0.0, 0.1], [[0, 0, 1], [np.nan, 0, 1]])
    with pytest.raises(ValueError, match="stream"):
        r.push("magnet", [0.0], [[0, 0, 1]])


@settings(max_examples=30, deadline=None)
@given(batch=st.floats(0.02, 1.0), seed=st.integers(0, 1000))
def test_output_does_not_depend_on_batch_size(batch, seed):
    rng = np.random.default_rng(seed)
    acc_t = irregular_times(rng, 80, 0.0, 4.0)
    gyro_t = irregular_times(rng, 120, 0.0, 4.0)
    whole = Resampler(hold=0.0)
    whole.push("acc", acc_t, truth(acc_t)[:, :3])
    whole.push("gyro", gyro_t, truth(gyro_t)[:, 3:])
    ref = np.concatenate([c.samples for c in whole.pull()])
    pieces = feed(Resampler(hold=0.0), acc_t, gyro_t, batch_s=batch)
    got = np.concatenate([c.samples for c in pieces])
    n = min(len(ref), len(got))
    assert abs(len(ref) - len(got)) <= 1
    np.testing.assert_allclose(got[:n], ref[:n], atol=1e-12)


def test_readings_far_apart_cost_no_grid_between_them():
    """Two readings per sensor a billion seconds apart: a hole, not 5e10 grid points."""
    import tracemalloc

    r = Resampler(rate=50.0, hold=0.0)
    tracemalloc.start()
    for t in ([0.0, 0.01, 0.02], [1e9, 1e9 + 0.01, 1e9 + 0.02]):
        r.push("acc", np.array(t), np.zeros((3, 3)))
        r.push("gyro", np.array(t), np.zeros((3, 3)))
        chunks = r.pull()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10_000_000, f"pull allocated {peak} bytes"
    assert r.segments == 2 and chunks and chunks[0].new_segment


def test_one_pull_builds_its_grid_in_bounded_passes():
    """A long gap-free span is emitted whole, but never as one giant grid."""
    r = Resampler(rate=50.0, hold=0.0, max_gap=0.6)
    t = np.arange(0, 1000, 0.5)  # 2000 readings, 1000 s, no hole
    r.push("acc", t, np.ones((len(t), 3)))
    r.push("gyro", t, np.ones((len(t), 3)))
    chunks = r.pull()
    assert sum(len(c.samples) for c in chunks) == int(t[-1] * 50) + 1
    assert max(len(c.samples) for c in chunks) <= 10_000
