"""How many devices may have display-only updates between windows: as many as
the worker has room for.

The updates between windows make the now label of a waist-mode device about
1.5 points more accurate and 0.3 s sooner, at about +36-48 % of the worker's
CPU for that device. A fixed number of places either wastes an idle worker's
room (devices past it get the windows-only label, below the raw window label)
or, set high, takes a loaded worker's room. So a worker gives every device a
place while its loop has room, and takes places back, newest first, while the
loop is busier than :attr:`Headroom.high`; the first ``floor`` places
(``WorkerConfig.between_devices``) are never taken back. Pure: the edge measures how busy its loop is
and hands the share to :meth:`StreamCore.fit_between`, which applies
:meth:`Headroom.limit` to its places.

>>> h = Headroom(high=0.8, low=0.5, shed=0.5)
>>> h.limit(holders=10, busy=0.9, floor=2)  # busy: half of the places above the floor go
6
>>> h.limit(holders=6, busy=0.6, floor=2)  # between the marks: keep them, give no new ones
6
>>> h.limit(holders=6, busy=0.3, floor=2) is None  # room: new runs get places again
True
>>> h.limit(holders=2, busy=0.99, floor=2)  # never below the floor
2
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Headroom:
    """When a worker gives and takes back places (shares of one core's time
    spent by its loop, measured over the last period)."""

    high: float = 0.75  # busier than this: take places back
    low: float = 0.5  # idler than this: give places to new runs again
    shed: float = 0.25  # share of the places above the floor taken back per period while busy

    def __post_init__(self) -> None:
        if not (0 <= self.low <= self.high <= 1 and 0 < self.shed <= 1):
            raise ValueError(f"headroom needs 0 <= low <= high <= 1 and 0 < shed <= 1: {self}")

    def limit(self, holders: int, busy: float, floor: int) -> int | None:
        """The place limit for the next period, given ``holders`` places now,
        the loop's ``busy`` share and the ``floor`` never taken back; None =
        no limit."""
        if not math.isfinite(busy):
            return max(floor, holders)
        if busy > self.high:
            return max(floor, holders - math.ceil(self.shed * max(holders - floor, 0)))
        if busy < self.low:
            return None
        return max(floor, holders)
