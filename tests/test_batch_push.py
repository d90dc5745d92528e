"""push_many: many devices' pipelines at once give what each pipeline gives alone."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.stream.core.batch_push import push_many
from harstream.stream.core.pipeline import DevicePipeline


def _streams(devices: int, n: int = 700, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(devices):
        s = rng.normal(scale=0.3, size=(n, 6))
        s[:, 0] += 1.0
        out.append(s)
    return out


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(
        st.lists(st.sampled_from([0, 10, 50, 64, 64, 64, 130]), min_size=1, max_size=8), min_size=1, max_size=6
    )
)
def test_push_many_gives_each_device_its_own_pipelines_windows(sizes):
    """Devices chunked differently (so their carried tails differ), several pushes each."""
    streams = _streams(len(sizes))
    alone = [DevicePipeline() for _ in sizes]
    together = [DevicePipeline() for _ in sizes]
    offsets = [0] * len(sizes)
    for step in range(max(len(s) for s in sizes)):
        chunks = []
        for d, plan in enumerate(sizes):
            n = plan[step] if step < len(plan) else 0
            chunks.append(streams[d][offsets[d] : offsets[d] + n])
            offsets[d] += n
        expected = [pipe.push(chunk) for pipe, chunk in zip(alone, chunks)]
        got = push_many(together, chunks)
        for e, g in zip(expected, got):
            assert g.dtype == np.float32 and g.shape == e.shape
            np.testing.assert_array_equal(g, e)
    for a, t in zip(alone, together):
        assert (a.emitted, a.samples_seen) == (t.emitted, t.samples_seen)
