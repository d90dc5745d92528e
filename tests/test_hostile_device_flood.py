"""A flood of new device ids on the ingest bus: what each costs the worker.

The worker keeps at most 50,000 devices (``WorkerConfig.max_devices``), so
what one device holds decides what a flood of one-sample ids can take. Each
device's final history carried its own copy of the expanded hidden Markov
model (two 48 x 48 matrices, the same for every device of a model): 50 KB a
device, 2.5 GB for a full table. Now that model is shared, read-only.
"""

from __future__ import annotations

import tracemalloc

import numpy as np

from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.protocol import SampleBatch, encode_samples
from harstream.stream.core.worker import StreamCore, WorkerConfig


def test_a_new_device_costs_the_worker_a_few_kilobytes_not_its_own_copy_of_the_history_model():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig())
    frames = [
        encode_samples(SampleBatch(f"flood-{i}", 0, 100.0, np.zeros((1, 6), np.float32), session="s"))
        for i in range(301)
    ]
    core.ingest(frames[0], 0.0)  # the first device makes what every device shares
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for f in frames[1:]:
            core.ingest(f, 0.0)
        per_device = (tracemalloc.get_traced_memory()[0] - before) / 300
    finally:
        tracemalloc.stop()
    assert len(core.devices) == 301
    assert per_device < 20_000, f"{per_device / 1024:.1f} KB per device"  # 50 KB before


def test_devices_of_one_model_share_the_history_model_and_cannot_change_it():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig())
    for name in ("a", "b"):
        core.ingest(encode_samples(SampleBatch(name, 0, 100.0, np.zeros((1, 6), np.float32))), 0.0)
    a, b = core.devices["a"].history, core.devices["b"].history
    assert a._matrix is b._matrix and a._log_matrix is b._log_matrix
    assert not a._matrix.flags.writeable


def _replay_minutes(core: StreamCore, device: str, session: str, minutes: float, now: float) -> dict | None:
    """Send ``minutes`` of a still device from stream time 0, label every window
    SITTING, and return the device's last ``today`` as published."""
    sitting = np.zeros((1, 6), np.float32)
    sitting[0, ACTIVITIES.index("SITTING")] = 1.0
    # a person sitting moves the device a little (a signal without any noise reads as a device set down)
    samples = np.tile(np.array([0, 1, 0, 0, 0, 0], np.float32), (500, 1))
    samples += np.random.default_rng(0).normal(0, 0.01, samples.shape).astype(np.float32)
    today = None
    for k in range(int(minutes * 60 * 50 / 500)):
        core.ingest(encode_samples(SampleBatch(device, 500 * k, 10.0 * k, samples, session=session)), now)
        while core.batch_due(now + 10):
            x, taken = core.take_batch()
            if not taken:
                break
            core.finish_batch(taken, np.repeat(sitting, len(taken), axis=0), now)
    core.settle_quiet(now + 100)
    for update in core.take_history():
        today = update.today or today
    return today


def test_the_same_stretch_of_time_sent_again_after_an_eviction_is_counted_once_in_the_day():
    """A producer sending the same stream times again (a replay from time 0, a
    device evicted while quiet and back) had its day counted twice: past 1,440
    minutes a day, every history message of the device was refused by its readers."""
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(idle_timeout=5.0))
    first = _replay_minutes(core, "again", "s1", 3.0, now=0.0)
    core.evict_idle(1000.0)
    assert "again" not in core.devices
    second = _replay_minutes(core, "again", "s2", 3.0, now=1000.0)
    assert first is not None and second is not None
    assert 2.9 <= first["minutes"]["sitting"] <= 3.0
    assert second["minutes"]["sitting"] == first["minutes"]["sitting"]  # was twice as many
