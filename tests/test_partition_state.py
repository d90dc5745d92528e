"""What a worker on the log decides about a partition, without a server:
takeover (what to run again), idempotence (what to commit), fencing (what
a stale owner may do), and the seq rules of the bus on the durable path.
The real-server tests are tests/test_durable_log.py and tests/test_hostile_durable.py."""

from __future__ import annotations

import numpy as np
import pytest

from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.protocol import SampleBatch
from harstream.stream.core.worker import StreamCore, WorkerConfig
from harstream.stream.durable.leases import Lease
from harstream.stream.durable.partition_state import PartitionState


def state(**progress) -> PartitionState:
    config = WorkerConfig(signal_interval=0, between_devices=0)  # as the durable worker makes it: windows only
    s = PartitionState(Lease(0, "w", epoch=1), StreamCore(ACTIVITIES, "m", config))
    s.load_progress(progress)
    return s


def samples(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.3, (n, 6)).astype(np.float32)


def run_all(s: PartitionState, now: float = 1.0):
    """Every waiting window through a uniform 'model'; what the state settles on."""
    x, taken = s.core.take_batch()
    keys, old = s.to_run(taken)
    probs = np.full((int((~old).sum()), len(ACTIVITIES)), 1 / len(ACTIVITIES))
    return keys, old, s.settle(taken, keys, old, probs, now)


def test_a_taking_over_owner_starts_context_windows_early_and_runs_only_uncommitted_windows():
    stored = [1, 0, 0, 0, 0, 0]
    s = state(d={"w": 5, "m": "waist", "recent": [[4, stored], [5, stored]]})
    start = s.replay_from("d", context_windows=3)
    assert start == (5 + 1 - 3) * 64
    assert s.admit(SampleBatch("d", start, 0.0, samples(64 * 6)), now=0.0)
    keys, old, settled = run_all(s)
    assert keys == [3, 4, 5, 6, 7]
    assert old.tolist() == [True, True, True, False, False]  # committed by the earlier owner: not run again
    assert [row[1] for row in settled.rows] == [6, 7] and settled.replayed == 3
    assert [p.window for p in settled.publish] == [6, 7]
    # the earlier owner's probabilities stand for its windows in the progress record (and the smoother)
    recent = settled.rows[0][3]["recent"]
    assert {w for w, _ in recent} >= {4, 5} and all(probs == stored for w, probs in recent if w in (4, 5))


def test_a_window_at_or_below_the_committed_one_is_never_committed_again():
    s = state(d={"w": 2, "recent": []})
    s.admit(SampleBatch("d", 0, 0.0, samples(64 * 8)), now=0.0)
    keys, _, settled = run_all(s)
    assert keys == list(range(7))
    assert [row[1] for row in settled.rows] == [3, 4, 5, 6]


def test_window_keys_do_not_depend_on_where_a_pipeline_started():
    whole, late = state(), state()
    x = samples(64 * 10)
    whole.admit(SampleBatch("d", 0, 0.0, x), now=0.0)
    late.admit(SampleBatch("d", 100, 2.0, x[100:]), now=0.0)  # cut to seq 128, the grid
    keys_whole, _, _ = run_all(whole)
    keys_late, _, _ = run_all(late)
    assert keys_late == keys_whole[2:]


def test_a_fenced_owner_reads_nothing_and_publishes_nothing():
    s = state()
    s.renewed = 10.0
    assert s.readable(now=10.1, ttl_s=0.6)
    s.admit(SampleBatch("d", 0, 0.0, samples(128)), now=10.0)
    _, _, settled = run_all(s)
    assert settled.rows and s.to_publish(settled) == settled.publish
    s.fence()
    assert s.to_publish(settled) == [] and not s.readable(now=10.1, ttl_s=0.6)
    assert not s.admit(SampleBatch("d", 128, 0.0, samples(64)), now=10.2)


def test_an_owner_not_renewed_within_its_lease_time_reads_nothing():
    s = state()
    s.renewed = 10.0
    assert not s.readable(now=10.7, ttl_s=0.6)


def test_a_seq_far_ahead_under_a_live_device_is_refused_and_moves_nothing():
    s = state()
    assert s.admit(SampleBatch("d", 0, 0.0, samples(100), session="own"), now=0.0)
    assert not s.admit(SampleBatch("d", 10**10, 0.0, samples(10), session="own"), now=0.1)
    assert not s.admit(SampleBatch("d", 10**10, 0.0, samples(10), session="other"), now=0.1)
    assert s.core.drops == {"jump": 1, "session": 1}
    assert s.admit(SampleBatch("d", 100, 0.0, samples(28), session="own"), now=0.2)  # the device goes on
    keys, _, _ = run_all(s)
    assert keys == [0]


def test_a_replayed_window_of_another_model_starts_from_uniform_probabilities():
    s = state(d={"w": 1, "m": "personal:d", "recent": [[1, [1, 0, 0, 0, 0, 0]]]})
    s.admit(SampleBatch("d", 0, 0.0, samples(192)), now=0.0)
    _, old, settled = run_all(s)
    assert old.tolist() == [True, True]
    assert settled.rows == [] and settled.replayed == 2
    assert s.recent["d"][1][-1][1] == [round(1 / 6, 6)] * 6  # not the other model's [1, 0, ...]


def test_evicted_devices_are_forgotten_everywhere():
    s = state(d={"w": 1, "recent": []})
    s.admit(SampleBatch("d", 0, 0.0, samples(64)), now=0.0)
    s.forget(["d"])
    assert "d" not in s.committed and "d" not in s.stored and s.grid.key("d", 1, 0) is None


def test_a_core_giving_updates_between_windows_is_refused_for_a_partition():
    # the log keys and commits windows by number; a display-only update between two has none
    with pytest.raises(ValueError, match="between"):
        PartitionState(Lease(0, "w", epoch=1), StreamCore(ACTIVITIES, "m", WorkerConfig()))
