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

:func:`push_both` does the same and also windows the same filtered samples
into a second, offset grid where a device has one (the worker's display-only
updates between windows): that grid's pipeline sees the device's processed
samples from sample :data:`~harstream.stream.core.pipeline.BETWEEN` of the run
on, so its window ``k`` covers samples ``32 + 64k … 32 + 64k + 127``; its own
filters are never used (one filter pass serves both grids).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from harstream.stream.core.filters import UciFilterBank
from harstream.stream.core.pipeline import (
    BETWEEN,
    WINDOW,
    WINDOW_CHANNELS,
    DevicePipeline,
    check_samples,
    window_processed_many,
)


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


def push_both(
    pipes: Sequence[DevicePipeline], seconds: Sequence[DevicePipeline | None], chunks: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """:func:`push_many`, and for each device with a second pipeline
    (``seconds[i]`` not None) the windows of its offset grid (module
    docstring) completed by the same chunk; no window for the others.

    >>> pipes, second = [DevicePipeline()], [DevicePipeline()]
    >>> main, offset = push_both(pipes, second, [np.zeros((160, 6))])
    >>> main[0].shape, offset[0].shape, second[0].samples_seen
    ((1, 128, 9), (1, 128, 9), 128)
    """
    none = np.empty((0, WINDOW, WINDOW_CHANNELS), np.float32)
    out: list[np.ndarray] = [none] * len(pipes)
    extra: list[np.ndarray] = [none] * len(pipes)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, (pipe, chunk) in enumerate(zip(pipes, chunks)):
        if len(chunk):
            groups[len(chunk)].append(i)
        else:
            out[i] = pipe.push(chunk)
    for n, idx in groups.items():
        group = [pipes[i] for i in idx]
        before = [p.samples_seen for p in group]
        raw = np.stack([check_samples(chunks[i]) for i in idx])  # (D, n, 6); validated first
        processed = _filter_stacked(group, raw) if len(idx) > 1 else group[0].filters.apply(raw[0])[None]
        for i, windows in zip(idx, window_processed_many(group, processed)):
            out[i] = windows
        # the offset grid: devices past their first BETWEEN samples together, the others one by one
        steady = [k for k, i in enumerate(idx) if seconds[i] is not None and before[k] >= BETWEEN]
        if steady:
            grids = [seconds[idx[k]] for k in steady]
            for k, windows in zip(steady, window_processed_many(grids, processed[steady])):
                extra[idx[k]] = windows
        for k, i in enumerate(idx):
            second = seconds[i]
            if second is not None and before[k] < BETWEEN:
                extra[i] = second.window_processed(processed[k, min(BETWEEN - before[k], n) :])
    return out, extra


def _filter_stacked(pipes: list[DevicePipeline], raw: np.ndarray) -> np.ndarray:
    """UciFilterBank.apply for D devices at once: (D, n, 6) -> (D, n, 9)."""
    return UciFilterBank.apply_many([p.filters for p in pipes], raw)
