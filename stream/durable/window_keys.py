"""Window identities that do not depend on which worker made them.

A worker's pipeline numbers windows from where it started; after a failover
the new owner starts somewhere else. :class:`WindowGrid` sits in front of a
:class:`~harstream.stream.core.worker.StreamCore` and makes every pipeline start
on the device's 64-sample grid (``seq`` a multiple of the window step), so
window ``j`` of a pipeline started at ``seq`` is window ``seq // 64 + j`` of
the device: the same key, (device, window), whoever computes it. A device
that starts at ``seq`` 0 and never skips is numbered exactly as the
single-process worker numbers it.

It also does the seq bookkeeping the core would otherwise see: duplicates are
dropped here, and samples missing from the log (a gap in ``seq``) are counted
as lost samples.

>>> import numpy as np
>>> grid = WindowGrid()
>>> b = grid.admit(SampleBatch("d", seq=100, t0=0.0, samples=np.zeros((40, 6), np.float32)))
>>> b.seq, len(b), grid.key("d", generation=1, window=0)      # cut to seq 128
(128, 12, 2)
>>> grid.admit(SampleBatch("d", seq=140, t0=0.0, samples=np.zeros((5, 6), np.float32))).seq
140
>>> grid.admit(SampleBatch("d", seq=100, t0=0.0, samples=np.zeros((5, 6), np.float32))) is None  # duplicate
True
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from harstream.stream.core.pipeline import STEP
from harstream.stream.core.protocol import SampleBatch


@dataclass
class _Track:
    next_seq: int  # the seq the device's next sample should have
    in_sync: bool  # the core has every sample up to next_seq (same pipeline)
    generation: int = 0  # mirrors the core's pipeline generation of the device
    origins: dict[int, int] = field(default_factory=dict)  # generation -> seq of its window 0


class WindowGrid:
    """Aligns each device's pipeline starts to the window grid; maps the core's
    (generation, window) to the device's absolute window number."""

    def __init__(self, keep_generations: int = 4):
        self._tracks: dict[str, _Track] = {}
        self._keep = keep_generations
        self.counts: Counter[str] = Counter()  # lost_samples, duplicate, aligned_off

    def admit(self, batch: SampleBatch, start_at: int = 0) -> SampleBatch | None:
        """The part of ``batch`` the core should get, or None.

        ``start_at``: samples before this seq are not wanted (a rebuild that
        starts late in the log). A new pipeline always starts on the grid.
        """
        track = self._tracks.get(batch.device)
        end = batch.seq + len(batch)
        if track is not None and batch.seq < track.next_seq and batch.seq != 0:
            self.counts["duplicate"] += 1
            return None
        if track is not None and batch.seq > track.next_seq:
            self.counts["lost_samples"] += batch.seq - track.next_seq
            track.in_sync = False  # the pipeline must not straddle the gap
        if track is not None and track.in_sync and batch.seq == track.next_seq:
            track.next_seq = end
            return batch
        # A new pipeline: first sample on the grid, not before start_at.
        first = max(batch.seq, start_at)
        first += (-first) % STEP
        if track is None:
            track = self._tracks[batch.device] = _Track(next_seq=end, in_sync=False)
        track.next_seq = end
        if first >= end:
            return None
        cut = first - batch.seq
        self.counts["aligned_off"] += cut
        track.in_sync = True
        track.generation += 1
        track.origins[track.generation] = first
        for old in [g for g in track.origins if g <= track.generation - self._keep]:
            del track.origins[old]
        if cut == 0:
            return batch
        labels = None if batch.labels is None else batch.labels[cut:]
        return replace(batch, seq=first, t0=batch.t0 + cut / batch.rate, samples=batch.samples[cut:], labels=labels)

    def key(self, device: str, generation: int, window: int) -> int | None:
        """The device's absolute window number of the core's ``window`` of ``generation``."""
        track = self._tracks.get(device)
        origin = None if track is None else track.origins.get(generation)
        return None if origin is None else origin // STEP + window

    def devices(self) -> list[str]:
        """The devices whose windows the grid numbers."""
        return list(self._tracks)

    def forget(self, device: str) -> None:
        """The core evicted ``device``: its next samples start a new pipeline (generation 1)."""
        self._tracks.pop(device, None)
