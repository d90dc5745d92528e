"""Push chunks through many devices' pipelines at once.

A worker with thousands of devices calls the causal filters thousands of
times a second, and each scipy call costs far more in Python overhead than in
arithmetic. :func:`push_many` gives exactly what ``[p.push(c) for p, c in
zip(pipes, chunks)]`` gives, but filters all devices whose chunks have the
same length in one vectorised pass, through the filters' own batched step
(:meth:`~harstream.stream.core.filters.UciFilterBank.apply_many`, bit-identical to
each device's ``apply``), then windows them with
:func:`~harstream.stream.core.pipeline.window_processed_many` (one cut for all
devices whose carried tails are equally long).
``tests/test_worker.py`` checks the windows against
:class:`~harstream.stream.core.pipeline.DevicePipeline`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from harstream.stream.core.filters import UciFilterBank
from harstream.stream.core.pipeline import DevicePipeline, check_samples, window_processed_many


def push_many(pipes: Sequence[DevicePipeline], chunks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Windows completed by each ``chunks[i]`` pushed into ``pipes[i]``.

    >>> pipes = [DevicePipeline(), DevicePipeline()]
    >>> [w.shape for w in push_many(pipes, [np.zeros((128, 6)), np.ones((64, 6))])]
    [(1, 128, 9), (0, 128, 9)]
    """
    out: list[np.ndarray | None] = [None] * len(pipes)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, (pipe, chunk) in enumerate(zip(pipes, chunks)):
        if len(chunk):
            groups[len(chunk)].append(i)
        else:
            out[i] = pipe.push(chunk)
    for idx in groups.values():
        if len(idx) == 1:
            out[idx[0]] = pipes[idx[0]].push(chunks[idx[0]])
            continue
        group = [pipes[i] for i in idx]
        raw = np.stack([check_samples(chunks[i]) for i in idx])  # (D, n, 6); validated first
        processed = _filter_stacked(group, raw)
        for i, windows in zip(idx, window_processed_many(group, processed)):
            out[i] = windows
    return out  # type: ignore[return-value]


def _filter_stacked(pipes: list[DevicePipeline], raw: np.ndarray) -> np.ndarray:
    """UciFilterBank.apply for D devices at once: (D, n, 6) -> (D, n, 9)."""
    return UciFilterBank.apply_many([p.filters for p in pipes], raw)
