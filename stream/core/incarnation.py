"""Which run of a device's stream the worker follows, and where it is in it.

A producer names each run of a device's stream with a random ``session`` id
and numbers its samples with ``seq`` within it. :meth:`Incarnation.judge`
says what the next message means:

>>> inc = Incarnation(seq=0, now=0.0, session="a1")
>>> inc.advance(seq=0, n=10, now=0.2)
>>> [inc.judge(s, now=0.4, session="a1") for s in (10, 50, 5, 10**12)]
['next', 'gap', 'duplicate', 'jump']
>>> inc.judge(0, now=0.4, session="b2"), inc.judge(0, now=3.0, session="b2")
('foreign', 'takeover')

The rules, and why (docs/protocol.md, "Device identity"):

- Another session while the device's own is live (it sent within
  ``takeover_after`` seconds) is **foreign**: dropped, so a second publisher
  under a device's id can neither feed nor reset it. Once the owner has been
  quiet that long, the new session **takes over** (a restarted producer).
- In the same session, ``seq`` ahead of the expected one is a **gap**
  (samples lost; the pipeline restarts there) only if that many samples
  could have been lost in the time since the device's previous message:
  ``rate * (GAP_SPEED * elapsed + GAP_SLACK)``. Further ahead is a **jump**,
  dropped: a forged far-ahead ``seq`` cannot reset the device and make its
  real messages look like duplicates.
- Behind is a **duplicate** — except ``seq`` 0 from a producer that sends no
  session (the protocol's first version), which can only say it started over
  that way: a **restart**.
- Behind in a message the producer marks as a replay (its tail, sent again
  for a subscriber that just joined: :mod:`~harstream.stream.bus.tail_replay`) is
  **replayed**: ignored, and not a drop, since every subscriber that was
  already listening gets the replay too. A replay is never a restart.

>>> inc.judge(5, now=0.4, session="a1", replay=True), inc.judge(10, now=0.4, session="a1", replay=True)
('replayed', 'next')
"""

from __future__ import annotations

from harstream.stream.core.rate import RATE_HZ

NEXT = "next"  # the expected seq: accepted
GAP = "gap"  # plausibly ahead: samples were lost; the pipeline restarts there
JUMP = "jump"  # further ahead than the time since the last message allows: dropped
RESTART = "restart"  # seq 0 behind the expected one, no session: the device started over
DUPLICATE = "duplicate"  # behind: a duplicate or out-of-order chunk, dropped
REPLAYED = "replayed"  # behind, in a producer's replay of its tail: already had, ignored (not a drop)
FOREIGN = "foreign"  # another session while this one is live: dropped
TAKEOVER = "takeover"  # another session after this one went quiet: it restarts the device

TAKEOVER_AFTER = 2.56  # seconds of silence (one window) before another session may take a device
GAP_SPEED = 4.0  # a replay may run this many times faster than real time...
GAP_SLACK = 300.0  # ...and lose up to five minutes of samples at once (a forged jump silences the real device at most that long)


class Incarnation:
    """Session and sequence tracking of one device."""

    __slots__ = ("session", "next_seq", "last_seen", "takeover_after")

    def __init__(self, seq: int, now: float, session: str = "", takeover_after: float = TAKEOVER_AFTER):
        self.session = session
        self.next_seq = seq
        self.last_seen = now
        self.takeover_after = takeover_after

    def judge(self, seq: int, now: float, session: str = "", rate: float = RATE_HZ, replay: bool = False) -> str:
        """What a message of ``session`` starting at ``seq`` arriving at ``now``
        is; ``replay``: the producer marked it as a replay of its tail."""
        if session != self.session:
            return TAKEOVER if now - self.last_seen >= self.takeover_after else FOREIGN
        if seq == self.next_seq:
            return NEXT
        if seq > self.next_seq:
            allowed = rate * (GAP_SPEED * max(now - self.last_seen, 0.0) + GAP_SLACK)
            return GAP if seq - self.next_seq <= allowed else JUMP
        if replay:
            return REPLAYED
        return RESTART if seq == 0 and not session else DUPLICATE

    def restart(self, seq: int, session: str) -> None:
        """Follow ``session`` from ``seq`` on."""
        self.session = session
        self.next_seq = seq

    def advance(self, seq: int, n: int, now: float) -> None:
        """``n`` samples from ``seq`` on were accepted at ``now``."""
        self.next_seq = seq + n
        self.last_seen = now
