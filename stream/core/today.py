"""Each device's day in minutes, from its final history.

Kept by the worker (the publishing side), so a page that reloads is shown
them again with the device's next history message. Only final pieces count;
a piece across midnight (UTC, bus time) is split between the two days, and a
device keeps only its latest day. What is shown depends on what the device's
model can know: the five activities (walking, stairs, sitting, standing,
lying) for a waist or calibrated device, moving and still for one served
placement-free; and, on a day the device lay set down (not worn, the history's
``SET_DOWN``), those minutes apart (``set_down``), never counted as lying or still.

>>> days = DayTotals()
>>> days.add("d1", 0.0, 90.0, "WALKING")
>>> days.add("d1", 90.0, 150.0, "SITTING_WRONG_NAME")   # not an activity: not counted
>>> days.add("d1", 150.0, 210.0, "SITTING")
>>> days.summary("d1", ("WALKING", "SITTING", "STANDING"))
{'day': '1970-01-01', 'minutes': {'walking': 1.5, 'stairs': 0.0, 'sitting': 1.0, 'standing': 0.0, 'lying': 0.0}}
>>> days.summary("d1", ("WALKING", "STILL"))["minutes"]
{'moving': 1.5, 'still': 1.0}
>>> days.add("d1", 210.0, 330.0, "SET_DOWN")             # the phone on a table: apart, not lying
>>> days.summary("d1", ("WALKING", "SITTING", "LAYING"))["minutes"]
{'walking': 1.5, 'stairs': 0.0, 'sitting': 1.0, 'standing': 0.0, 'lying': 0.0, 'set_down': 2.0}
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict
from collections.abc import Sequence

from harstream.stream.core.activities import SET_DOWN, STILL

#: Which summary entry each label counts toward.
CATEGORY = {
    "WALKING": "walking",
    "WALKING_UPSTAIRS": "stairs",
    "WALKING_DOWNSTAIRS": "stairs",
    "SITTING": "sitting",
    "STANDING": "standing",
    "LAYING": "lying",
    STILL: "still",
    SET_DOWN: "set_down",
}
ACTIVITY_VIEW = ("walking", "stairs", "sitting", "standing", "lying")
PLACEMENT_FREE_VIEW = ("moving", "still")
DAY = 86_400.0
MAX_TIME = 1e10


def day_of(t: float) -> str:
    """The UTC date of a bus time (seconds since the epoch).

    >>> day_of(0.0), day_of(86_399.9), day_of(86_400.0)
    ('1970-01-01', '1970-01-01', '1970-01-02')
    """
    return dt.datetime.fromtimestamp(t, dt.UTC).date().isoformat()


class DayTotals:
    """Seconds of each category per device, for its latest day; at most
    ``max_devices`` devices (the least recently added to is forgotten first)."""

    def __init__(self, max_devices: int = 50_000):
        self.max_devices = max_devices
        self._days: OrderedDict[str, tuple[str, dict[str, float]]] = OrderedDict()
        #: per device, the end of the latest time counted: a stretch is counted once, even when
        #: its device comes back (evicted, restarted) and its final pieces cover it again
        self._until: dict[str, float] = {}

    def add(self, device: str, start: float, end: float, label: str) -> None:
        """Count a final piece (a transition, ``unknown`` or a bad time counts nothing);
        only its part after the time already counted for ``device``.

        >>> days = DayTotals()
        >>> days.add("d", 0.0, 600.0, "SITTING"); days.add("d", 0.0, 900.0, "SITTING")   # the same time again
        >>> days.seconds("d")
        ('1970-01-01', {'sitting': 900.0})
        """
        category = CATEGORY.get(label)
        if category is None or not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end <= MAX_TIME):
            return
        counted = self._until.get(device)
        if counted is not None and device in self._days:
            start = max(start, counted)
        if start < end:
            self._until[device] = end
        # only the day the piece ends in is kept: its days before are never looked at (one step, not
        # one per day of a piece that spans years)
        start = max(start, (math.ceil(end / DAY) - 1) * DAY)
        while start < end:
            midnight = (math.floor(start / DAY) + 1) * DAY
            part_end = min(end, midnight)
            self._add_day(device, day_of(start), category, part_end - start)
            start = part_end

    def _add_day(self, device: str, day: str, category: str, seconds: float) -> None:
        held = self._days.get(device)
        if held is None or day > held[0]:
            held = (day, {})
        elif day < held[0]:  # a piece of a day gone by: the device's day has moved on
            return
        held[1][category] = held[1].get(category, 0.0) + seconds
        self._days[device] = held
        self._days.move_to_end(device)
        while len(self._days) > self.max_devices:
            gone, _ = self._days.popitem(last=False)
            self._until.pop(gone, None)

    def restore(self, device: str, day: str, seconds: dict[str, float]) -> None:
        """Take a device's day as kept elsewhere (a durable store after a restart)."""
        clean = {k: float(v) for k, v in seconds.items() if k in CATEGORY.values() and 0 <= float(v) <= DAY}
        held = self._days.get(device)
        if held is None or day >= held[0]:
            self._days[device] = (day, clean)

    def seconds(self, device: str) -> tuple[str, dict[str, float]] | None:
        """The device's day and its seconds per category, if any."""
        return self._days.get(device)

    def summary(self, device: str, classes: Sequence[str]) -> dict | None:
        """``{"day", "minutes"}`` in the view the model's ``classes`` allow."""
        held = self._days.get(device)
        if held is None:
            return None
        day, secs = held
        if STILL in classes:
            moving = secs.get("walking", 0.0) + secs.get("stairs", 0.0)
            still = sum(secs.get(k, 0.0) for k in ("still", "sitting", "standing", "lying"))
            minutes = {"moving": moving / 60.0, "still": still / 60.0}
        else:
            minutes = {k: secs.get(k, 0.0) / 60.0 for k in ACTIVITY_VIEW}
            if secs.get("still"):  # served placement-free earlier today
                minutes["still"] = secs["still"] / 60.0
        if secs.get("set_down"):  # not worn: no activity of its owner, shown apart
            minutes["set_down"] = secs["set_down"] / 60.0
        return {"day": day, "minutes": {k: round(v, 2) for k, v in minutes.items()}}

    def forget(self, device: str) -> None:
        self._days.pop(device, None)
        self._until.pop(device, None)


__all__ = ["ACTIVITY_VIEW", "CATEGORY", "DayTotals", "PLACEMENT_FREE_VIEW", "day_of"]
