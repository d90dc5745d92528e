"""A device's raw signal decimated for display (the ``g/<device>/`` messages).

Every ``decimation``-th sample by ``seq`` is kept, so which samples are shown
does not depend on how the stream was chunked; :meth:`SignalFeed.take` hands
them out at most every ``interval`` seconds.

>>> import numpy as np
>>> from harstream.stream.core.protocol import SampleBatch
>>> feed = SignalFeed(decimation=5, interval=0.5, now=0.0)
>>> feed.add(SampleBatch("d", seq=3, t0=10.0, samples=np.arange(60, dtype=np.float32).reshape(10, 6)))
>>> s = feed.take("d", now=1.0)
>>> s.t0, s.rate, [row[0] for row in s.acc]      # samples with seq 5 and 10
(10.04, 10.0, [12.0, 42.0])
>>> feed.take("d", now=2.0) is None
True
"""

from __future__ import annotations

import numpy as np

from harstream.stream.core.protocol import SampleBatch, Signal


class SignalFeed:
    """Collects one device's decimated samples between signal messages."""

    __slots__ = ("decimation", "interval", "_parts", "_t0", "_rate", "_last")

    def __init__(self, decimation: int, interval: float, now: float):
        self.decimation = decimation
        self.interval = interval
        self._parts: list[np.ndarray] = []
        self._t0: float | None = None
        self._rate = 0.0
        self._last = now

    def add(self, batch: SampleBatch) -> None:
        first = (-batch.seq) % self.decimation  # keep samples whose seq is a multiple of decimation
        if first >= len(batch):
            return
        if self._t0 is None:
            self._t0 = batch.t0 + first / batch.rate
        self._rate = batch.rate
        self._parts.append(batch.samples[first :: self.decimation])

    def take(self, device: str, now: float) -> Signal | None:
        """The collected samples as a :class:`Signal` once ``interval`` has
        passed since the last one; ``None`` when nothing is due."""
        if not self._parts or self._t0 is None or now - self._last < self.interval:
            return None
        # float64 before rounding: rounding scales by 1e4, which float32 can overflow
        data = np.round(np.concatenate(self._parts).astype(np.float64), 4)
        signal = Signal(device, self._t0, self._rate / self.decimation, data[:, :3].tolist(), data[:, 3:].tolist())
        self.reset()
        self._last = now
        return signal

    def reset(self) -> None:
        """Forget what was collected: a feed must not join samples across a gap."""
        self._parts, self._t0 = [], None
