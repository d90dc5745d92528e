"""How `harstream bench failover` scores the predictions it received."""

from __future__ import annotations

import math

from harstream.bench.failover import score
from harstream.stream.core.protocol import Prediction
from harstream.stream.durable.partitions import partition_of

PARTITIONS = 12


def prediction(device: str, window: int) -> Prediction:
    t_end = 100.0 + 1.28 * window
    return Prediction(device, window, t_end - 2.56, t_end, "WALKING", [1.0], "WALKING", [1.0], "m", 1.0)


def two_devices_on_two_partitions() -> tuple[str, str]:
    names = [f"dev-{i}" for i in range(50)]
    first = names[0]
    other = next(n for n in names if partition_of(n, PARTITIONS) != partition_of(first, PARTITIONS))
    return first, other


def test_a_device_whose_windows_stop_at_the_kill_counts_its_missing_tail_as_lost():
    orphan, kept = two_devices_on_two_partitions()
    received = [(p.t_end + 0.1, p) for p in (prediction(kept, w) for w in range(20))]
    received += [(p.t_end + 0.1, p) for p in (prediction(orphan, w) for w in range(10))]  # nothing after the kill
    result = score(
        received,
        killed_at=100.0 + 1.28 * 10,
        orphaned={partition_of(orphan, PARTITIONS)},
        partitions=PARTITIONS,
        victim="w0",
    )
    assert math.isinf(result["takeover_s"])
    assert result["lost_windows"] == 9 and result["stalled_devices"] == 1  # windows 10..18; 19 within tolerance


def test_a_takeover_that_resumes_loses_nothing_and_reports_its_longest_wait():
    orphan, kept = two_devices_on_two_partitions()
    received = [(p.t_end + 0.1, p) for p in (prediction(kept, w) for w in range(20))]
    received += [(p.t_end + (0.9 if w == 10 else 0.1), p) for w, p in ((w, prediction(orphan, w)) for w in range(20))]
    result = score(
        received,
        killed_at=100.0 + 1.28 * 9.5,
        orphaned={partition_of(orphan, PARTITIONS)},
        partitions=PARTITIONS,
        victim="w0",
    )
    assert result["lost_windows"] == 0 and result["stalled_devices"] == 0
    assert abs(result["takeover_s"] - 0.9) < 1e-9
