"""Stairs only on evidence: what a device in ``any`` or ``personal`` mode may claim.

The placement-free model learned stairs from a waist. A thigh in a pocket
and an arm with a watch swing in ways a waist does not, and that swing reads
as stairs on the flat. So a stairs label of such a device stands only on
evidence that holds where the device is:

(a) its barometer (:class:`~harstream.stream.core.barometer.AltitudeRate`):
    where it says, it decides, both ways: measured climbing or descending
    while moving is stairs (even where the model said WALKING and even after
    a calibrated walk), measured level walking is WALKING; where it only
    leans the way the model's stairs go (the first seconds of a flight), the
    two together are evidence;
(b) stairs the device's own calibration learned (``calibrated``: the
    activity names its personal model was fitted on);
(c) a gait the model can tell is like the waist gait it learned stairs on
    (``waist_likeness`` 0..1 per window, from the placement-free model where
    it gives one; absent, it says nothing). A device does not change
    placement from one window to the next, so the evidence is the device's:
    the mean over its last :data:`GAIT_MEMORY` moving windows once
    :data:`GAIT_MIN_WINDOWS` were seen (the window's own before that). One
    window of a waist's stairs that reads limb-like keeps the stairs, one
    window of a limb's walk that reads waist-like claims none.

Without evidence, moving is WALKING. Without a barometer's word, a
calibrated walk overrides the model's stairs unless stairs were calibrated
too. A browser page has no barometer, so its phones are shown WALKING
unless (b) or (c) holds. Devices in ``waist`` mode are not gated: the HAPT
model's stairs were learned where they are worn.

:class:`StairsEvidence` is one device's part (sans-I/O): ``push_pressure``
takes its barometer readings, ``judge`` turns a label and its probabilities
into what may be shown; probability of the moving classes moves onto the
class shown, so the bars agree with the label.

>>> classes = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "STILL")
>>> ev = StairsEvidence()
>>> ev.judge("WALKING_DOWNSTAIRS", [0.2, 0.1, 0.6, 0.1], classes, t=10.0)   # no evidence
('WALKING', [0.9, 0.0, 0.0, 0.1])
>>> ev.judge("WALKING_DOWNSTAIRS", [0.2, 0.1, 0.6, 0.1], classes, t=10.0, calibrated=frozenset({"WALKING_DOWNSTAIRS"}))
('WALKING_DOWNSTAIRS', [0.2, 0.1, 0.6, 0.1])
>>> import numpy as np
>>> from harstream.stream.core.barometer import pressure_hpa
>>> t = np.arange(0, 20, 0.1)
>>> ev.push_pressure(t, pressure_hpa(0.3 * t))                                # climbing 0.3 m/s
{}
>>> ev.judge("WALKING", [0.7, 0.2, 0.0, 0.1], classes, t=20.0)
('WALKING_UPSTAIRS', [0.0, 0.9, 0.0, 0.1])
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from harstream.stream.core.barometer import DOWN, LEVEL, UP, AltitudeRate

WALKING, UPSTAIRS, DOWNSTAIRS = "WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS"
MOVING = (WALKING, UPSTAIRS, DOWNSTAIRS)
STAIRS = (UPSTAIRS, DOWNSTAIRS)
#: The modes whose stairs need evidence (waist mode keeps the HAPT model's).
GATED_MODES = ("any", "personal")
#: A device whose gait is at least this like the waist one may keep the model's stairs.
WAIST_LIKE = 0.5
#: The gait evidence is the mean waist-likeness of this many of the device's latest moving
#: windows, once it has seen this many (as the page's placement, ``placement.PlacementTracker``).
GAIT_MEMORY = 20
GAIT_MIN_WINDOWS = 5

#: Why a label was shown, counted by the worker (``stairs_<why>``).
BY_BAROMETER, BY_CALIBRATION, BY_GAIT, WITHHELD = "barometer", "calibration", "gait", "withheld"


def gated(mode: str, classes: Sequence[str]) -> bool:
    """Whether a device served in ``mode`` by a model of ``classes`` has its
    stairs gated (any or personal mode, a model that names stairs)."""
    return mode in GATED_MODES and all(c in classes for c in MOVING)


#: Barometer estimates one message's samples pay for: one per hop (0.5 s) of 50 Hz samples ...
ESTIMATES_PER_SAMPLE = 1 / 25
#: ... and a few more, so readings a little ahead of their samples are not left waiting.
ESTIMATES_SLACK = 4


class StairsEvidence:
    """One device's evidence for stairs: its barometer (if it sends pressure)
    and the rule above (see the module doc)."""

    __slots__ = ("barometer", "last", "gait", "_gait_t")

    def __init__(self) -> None:
        self.barometer: AltitudeRate | None = None  # made at the first pressure reading
        self.last = ""  # why the latest judged label was shown (for counting)
        self.gait: deque[float] = deque(maxlen=GAIT_MEMORY)  # the latest moving windows' waist-likeness
        self._gait_t: float | None = None  # the window whose likeness was taken last (judged twice: label, display)

    def waist_like(self, t: float, likeness: float | None, moving: bool) -> float | None:
        """The device's gait evidence for the window ending at ``t`` (see the
        module doc), taking that window's ``likeness`` once if it was ``moving``."""
        if likeness is not None and moving and t != self._gait_t and np.isfinite(likeness):
            self.gait.append(float(likeness))
            self._gait_t = t
        if len(self.gait) >= GAIT_MIN_WINDOWS:
            return float(np.mean(self.gait))
        return likeness

    def push_pressure(
        self, t: np.ndarray | Sequence[float], hpa: np.ndarray | Sequence[float], samples: int | None = None
    ) -> dict[str, int]:
        """Take barometer readings (seconds on the samples' clock, hPa); the
        ones refused, by reason. With ``samples``, the count of samples they
        came with, the barometer works out at most as many estimates as those
        samples' time holds ticks (:data:`ESTIMATES_PER_SAMPLE`), plus
        :data:`ESTIMATES_SLACK`; the rest on a later message: a message of one
        sample cannot buy seconds of fits with a thousand readings spread over hours."""
        if self.barometer is None:
            self.barometer = AltitudeRate()
        before = dict(self.barometer.refused)
        budget = None if samples is None else int(samples * ESTIMATES_PER_SAMPLE) + ESTIMATES_SLACK
        self.barometer.push(t, hpa, budget)
        return {r: n - before.get(r, 0) for r, n in self.barometer.refused.items() if n != before.get(r, 0)}

    def vertical(self, t: float) -> str | None:
        """What the barometer says at ``t``: up, down, level, or None."""
        return None if self.barometer is None else self.barometer.verdict(t)

    def leaning(self, t: float) -> str | None:
        """Which way the barometer leans at ``t`` (weak evidence), or None."""
        return None if self.barometer is None else self.barometer.leaning(t)

    def judge(
        self,
        label: str,
        probs: Sequence[float],
        classes: Sequence[str],
        t: float,
        calibrated: frozenset[str] = frozenset(),
        waist_likeness: float | None = None,
    ) -> tuple[str, list[float]]:
        """The label (and probabilities over ``classes``) that may be shown
        for a window ending at ``t`` that the model labelled ``label``."""
        self.last = ""
        gait = self.waist_like(t, waist_likeness, label in MOVING)
        if label not in MOVING:
            return label, list(probs)
        vertical = self.vertical(t)
        if vertical in (UP, DOWN):
            shown = UPSTAIRS if vertical == UP else DOWNSTAIRS
            self.last = BY_BAROMETER
        elif label in STAIRS and self.leaning(t) == (UP if label == UPSTAIRS else DOWN):
            self.last = BY_BAROMETER  # it backs the model's direction: shown as the model said
            return label, list(probs)
        elif vertical == LEVEL:
            shown = WALKING
            self.last = BY_BAROMETER if label != WALKING else ""
        elif label == WALKING:
            return label, list(probs)
        elif label in calibrated:
            shown, self.last = label, BY_CALIBRATION
        elif WALKING in calibrated:  # a calibrated walk overrides the model's stairs
            shown, self.last = WALKING, WITHHELD
        elif gait is not None and gait >= WAIST_LIKE:
            shown, self.last = label, BY_GAIT
        else:
            shown, self.last = WALKING, WITHHELD
        if shown == label and self.last != BY_BAROMETER:
            return label, list(probs)
        return shown, _moved_onto(probs, classes, shown)


def _moved_onto(probs: Sequence[float], classes: Sequence[str], shown: str) -> list[float]:
    """``probs`` with the moving classes' probability all on ``shown``."""
    out = [float(p) for p in probs]
    moving = [list(classes).index(c) for c in MOVING]
    total = sum(out[i] for i in moving)
    for i in moving:
        out[i] = 0.0
    out[list(classes).index(shown)] = round(total, 6)
    return out
