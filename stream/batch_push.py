"""Push chunks through many devices' pipelines at once.

A worker with thousands of devices calls the causal filters thousands of
times a second, and each scipy call costs far more in Python overhead than in
arithmetic. :func:`push_many` gives exactly what ``[p.push(c) for p, c in
zip(pipes, chunks)]`` gives, but filters all devices whose chunks have the
same length in one vectorised pass (devices stacked on a leading axis, each
with its own filter state). The per-element arithmetic is the same, so the
windows are identical; ``tests/test_worker.py`` checks that against
:class:`~harstream.stream.pipeline.DevicePipeline`.

It reads and writes the state of the pipeline's filters
(:mod:`~harstream.stream.filters`), and starts a new device's filters the way
they start themselves (steady state for the first sample, ``sosfilt_zi``
computed once per filter instead of once per device); a pipeline in any other
shape is pushed the ordinary way.
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import signal

from .pipeline import DevicePipeline, check_samples


def push_many(pipes: Sequence[DevicePipeline], chunks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Windows completed by each ``chunks[i]`` pushed into ``pipes[i]``.

    >>> pipes = [DevicePipeline(), DevicePipeline()]
    >>> [w.shape for w in push_many(pipes, [np.zeros((128, 6)), np.ones((64, 6))])]
    [(1, 128, 9), (0, 128, 9)]
    """
    out: list[np.ndarray | None] = [None] * len(pipes)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, (pipe, chunk) in enumerate(zip(pipes, chunks)):
        if len(chunk) and _vectorisable(pipe):
            groups[len(chunk)].append(i)
        elif len(chunk) and _startable(pipe):
            # A new device: its filter state starts as filters.py starts it
            # (steady state for its first sample), then it joins a group.
            _start(pipe, check_samples(chunks[i])[0])
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
        for k, i in enumerate(idx):
            out[i] = group[k].window_processed(processed[k])
    return out  # type: ignore[return-value]


def _vectorisable(pipe: DevicePipeline) -> bool:
    f = pipe._filters
    return f.median.size == 3 and f.median._history is not None and f.noise._zi is not None


def _startable(pipe: DevicePipeline) -> bool:
    f = pipe._filters
    return f.median.size == 3 and f.median._history is None and f.noise._zi is None and f.gravity._zi is None


@lru_cache(maxsize=None)
def _unit_zi(sos_bytes: bytes, sections: int) -> np.ndarray:
    """sosfilt_zi of a filter (costly: a linear solve), computed once per filter."""
    return signal.sosfilt_zi(np.frombuffer(sos_bytes).reshape(sections, 6))


def _start(pipe: DevicePipeline, first: np.ndarray) -> None:
    """Initial filter state as the filters create it from the first sample."""
    f = pipe._filters
    f.median._history = np.repeat(first[None, :], f.median.size - 1, axis=0)
    noise_zi = _unit_zi(f.noise.sos.tobytes(), len(f.noise.sos))
    f.noise._zi = noise_zi[:, :, None] * first[None, None, :]
    # The gravity filter's state comes from its own first input (the noise
    # filter's first output): set in _filter_stacked once that is known.


def _filter_stacked(pipes: list[DevicePipeline], raw: np.ndarray) -> np.ndarray:
    """UciFilterBank.apply for D devices at once: (D, n, 6) -> (D, n, 9)."""
    banks = [p._filters for p in pipes]
    padded = np.concatenate([np.stack([b.median._history for b in banks]), raw], axis=1)
    a, b, c = padded[:, :-2], padded[:, 1:-1], padded[:, 2:]
    median = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))  # median of 3, exactly
    noise_zi = np.stack([bk.noise._zi for bk in banks], axis=1)  # (sections, D, 2, 6)
    clean, noise_zi = signal.sosfilt(banks[0].noise.sos, median, axis=1, zi=noise_zi)
    total_acc, gyro = clean[..., :3], clean[..., 3:]
    gravity_zi = np.stack([
        bk.gravity._zi if bk.gravity._zi is not None
        else _unit_zi(bk.gravity.sos.tobytes(), len(bk.gravity.sos))[:, :, None] * total_acc[k, 0][None, None, :]
        for k, bk in enumerate(banks)
    ], axis=1)  # fmt: skip
    gravity, gravity_zi = signal.sosfilt(banks[0].gravity.sos, total_acc, axis=1, zi=gravity_zi)
    for k, bk in enumerate(banks):
        bk.median._history = padded[k, -2:].copy()
        bk.noise._zi = noise_zi[:, k].copy()
        bk.gravity._zi = gravity_zi[:, k].copy()
    return np.concatenate([total_acc - gravity, gyro, total_acc], axis=2)
