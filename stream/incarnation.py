"""Which run of a device's stream the worker follows, and where it is in it.

``seq`` numbers a device's samples; :meth:`Incarnation.judge` says what the
next message's ``seq`` means against the one expected:

>>> inc = Incarnation(seq=0, now=0.0)
>>> inc.advance(seq=0, n=10, now=0.1)
>>> inc.judge(10), inc.judge(50), inc.judge(5), inc.judge(0)
('next', 'gap', 'duplicate', 'restart')
"""

from __future__ import annotations

NEXT = "next"  # the expected seq: accepted
GAP = "gap"  # ahead of the expected seq: samples were lost; the pipeline restarts there
RESTART = "restart"  # seq 0 behind the expected one: the device started over
DUPLICATE = "duplicate"  # behind: a duplicate or out-of-order chunk, dropped


class Incarnation:
    """Sequence tracking of one device."""

    __slots__ = ("next_seq", "last_seen")

    def __init__(self, seq: int, now: float):
        self.next_seq = seq
        self.last_seen = now

    def judge(self, seq: int) -> str:
        """What a message starting at ``seq`` is: :data:`NEXT`, :data:`GAP`,
        :data:`RESTART` or :data:`DUPLICATE`."""
        if seq == self.next_seq:
            return NEXT
        if seq > self.next_seq:
            return GAP
        return RESTART if seq == 0 else DUPLICATE

    def advance(self, seq: int, n: int, now: float) -> None:
        """``n`` samples from ``seq`` on were accepted at ``now``."""
        self.next_seq = seq + n
        self.last_seen = now
