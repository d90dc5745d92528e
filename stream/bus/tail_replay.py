"""A publisher's last window of samples per device, handed to a (re)joining subscriber.

ZeroMQ's publish/subscribe keeps nothing: a worker that starts (or restarts
after a crash) sees only samples published after its subscription reached the
producer, so its first window of each device needs 2.56 s of fresh samples.
A producer that keeps each live device's recent messages can send them again
the moment it sees a new subscription (the "last value cache" pattern of the
ZeroMQ guide), and the new worker builds its first window at once.

:class:`TailCache` is the sans-I/O core: :meth:`~TailCache.push` every batch
published, and :meth:`~TailCache.replay` on a subscription to a topic prefix
returns the batches to send again, marked ``meta["replay"] = True`` with their
own ``session`` and ``seq`` (a worker that already has them counts them as
``replayed``, not as duplicates; docs/protocol.md, "Tail replay").

>>> import numpy as np
>>> from harstream.stream.core.protocol import SampleBatch
>>> cache = TailCache(window=20)
>>> for seq in range(0, 50, 10):
...     cache.push(SampleBatch("d", seq, seq / 50, np.zeros((10, 6), np.float32), session="s1"), now=seq / 50)
>>> [(b.seq, b.meta) for b in cache.replay(b"s/", now=1.0)]      # the fewest messages holding 20 samples
[(30, {'replay': True}), (40, {'replay': True})]
>>> cache.replay(b"s/", now=1.5)                                   # at most one replay per device per second
[]

Bounds: per device the fewest newest messages that hold ``window`` samples
(so at most ``window`` + one message); at most ``max_devices`` devices (the
least recently published is forgotten first); a device silent for ``max_age``
seconds is not replayed (its samples would be stale) and is forgotten; a
device is replayed at most once per ``min_interval`` seconds, whatever the
prefixes, so a storm of subscriptions costs at most ``window / (rate *
min_interval)`` times the live traffic.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, deque

from harstream.stream.core.protocol import SampleBatch, samples_topic

WINDOW = 128  # samples of one model window: what a new worker needs for its first prediction
MIN_INTERVAL = 1.0  # seconds between two replays of one device
MAX_AGE = 2.56  # seconds: a device silent for longer has nothing live to rebuild
MAX_DEVICES = 100_000


@dataclasses.dataclass
class _Tail:
    topic: bytes
    batches: deque  # of SampleBatch, contiguous in seq, one session
    samples: int = 0
    last_push: float = 0.0
    last_replay: float = float("-inf")


class TailCache:
    """Each device's newest ``window`` samples, as the messages that carried them."""

    def __init__(
        self,
        window: int = WINDOW,
        min_interval: float = MIN_INTERVAL,
        max_age: float = MAX_AGE,
        max_devices: int = MAX_DEVICES,
    ):
        if window < 1 or max_devices < 1 or min_interval < 0 or max_age <= 0:
            raise ValueError("window and max_devices must be >= 1, min_interval >= 0, max_age > 0")
        self.window = window
        self.min_interval = min_interval
        self.max_age = max_age
        self.max_devices = max_devices
        self._tails: OrderedDict[str, _Tail] = OrderedDict()  # least recently published first
        self.replayed_batches = 0  # batches handed out for replay
        self.limited = 0  # device replays skipped by min_interval

    def __len__(self) -> int:
        return len(self._tails)

    def push(self, batch: SampleBatch, now: float) -> None:
        """Remember ``batch`` (published at ``now``) as its device's newest."""
        tail = self._tails.get(batch.device)
        if tail is None:
            tail = self._tails[batch.device] = _Tail(samples_topic(batch.device), deque())
            while len(self._tails) > self.max_devices:
                self._tails.popitem(last=False)
        else:
            self._tails.move_to_end(batch.device)
            last = tail.batches[-1] if tail.batches else None
            if last is None or last.session != batch.session or batch.seq != last.seq + len(last):
                tail.batches.clear()  # not contiguous: a replay must not join both sides of a gap
                tail.samples = 0
        tail.batches.append(batch)
        tail.samples += len(batch)
        while tail.samples - len(tail.batches[0]) >= self.window:
            tail.samples -= len(tail.batches.popleft())
        tail.last_push = now

    def replay(self, prefix: bytes, now: float) -> list[SampleBatch]:
        """Batches to send again for a new subscription to topic ``prefix``,
        device by device, each device's in ``seq`` order, marked as replayed."""
        self._forget_silent(now)
        out: list[SampleBatch] = []
        for tail in self._tails.values():
            if not tail.topic.startswith(prefix):
                continue
            if now - tail.last_replay < self.min_interval:
                self.limited += 1
                continue
            tail.last_replay = now
            out.extend(dataclasses.replace(b, meta={**b.meta, "replay": True}) for b in tail.batches)
        self.replayed_batches += len(out)
        return out

    def _forget_silent(self, now: float) -> None:
        while self._tails:
            device, tail = next(iter(self._tails.items()))
            if now - tail.last_push <= self.max_age:
                return
            del self._tails[device]
