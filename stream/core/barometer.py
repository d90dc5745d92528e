"""Vertical speed from a device's barometer: is it climbing, descending or level?

Pressure falls about 0.12 hPa per metre climbed near sea level (the standard
atmosphere, :func:`altitude_m`); people on stairs climb 0.15-0.4 m/s. A phone
barometer reads 1-25 Hz with 0.01-0.05 hPa of noise (0.1-0.4 m), quantised;
the weather drifts it slowly (a few hPa a day: millimetres per second), and
doors, lifts' shafts and ventilation shift it in steps within a second that
are not climbs (a room held at a slight over-pressure: 0.05-0.5 hPa).

:class:`AltitudeRate` is the estimator, sans-I/O and chunk-invariant: push
``(t, hPa)`` readings in time order, take :class:`VerticalSpeed` estimates,
one every ``hop`` seconds of the device's own clock (ticks at whole multiples
of ``hop``), each over the ``span`` seconds before its tick:

1. readings become altitudes (standard atmosphere) and ``bin`` -second bins
   keep their median, which levels rates (1 Hz and 25 Hz weigh alike) and
   shrugs off single outliers and quantisation;
2. a straight line is fitted to the bins (least squares), and so is a line
   with one step at the best place between bins; the step is kept only where
   it explains far more than the noise (an F-like ratio), so a door step is
   taken out rather than read as a climb, while a steady climb (which a step
   explains worse than a line) keeps its slope;
3. the slope is the vertical speed, with its standard error from the fit's
   residuals (never below what the quantisation allows), and a
   ``confidence`` that says how much of the span was covered and whether the
   error is small against stairs' speeds.

Slow drift changes the slope by its own tiny rate only. A device that never
sends pressure never makes an estimator: nothing waits for it.

Readings that cannot be right are refused and counted by reason
(:func:`screen_pressure`): outside 300-1,100 hPa (``pressure_range``), not
finite (``pressure_non_finite``), or not later than the previous reading
(``pressure_order``).

>>> import numpy as np
>>> t = np.arange(0, 30, 0.1)                          # 10 Hz for 30 s
>>> climb = np.clip(t - 10, 0, None) * 0.3               # climbing 0.3 m/s after 10 s
>>> est = AltitudeRate()
>>> out = est.push(t, pressure_hpa(climb, 1000.0))
>>> round(out[-1].speed, 2), out[-1].t, out[-1].confidence > 0.9
(0.3, 29.5, True)
>>> est.push([29.0], [1000.0]), dict(est.refused)     # older than the last reading
([], {'pressure_order': 1})
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Pressures a barometer on the ground can read (hPa): the summit of Everest
#: is near 330, the Dead Sea shore near 1,070.
MIN_HPA = 300.0
MAX_HPA = 1100.0
#: Every reason a pressure reading is refused.
PRESSURE_REASONS = ("pressure_range", "pressure_non_finite", "pressure_order")
SEA_LEVEL_HPA = 1013.25
#: The smallest error we trust a slope to: quantised readings (0.01 hPa ≈ 8 cm)
#: fitted exactly would otherwise claim a certainty they do not have.
MIN_SE = 0.005
#: A standard error this large says nothing about stairs (0.15-0.4 m/s).
USELESS_SE = 0.1
#: Climbing is claimed at this vertical speed (m/s) or more, this many
#: standard errors from level, held for ``HOLD`` consecutive estimates (a step
#: entering the span can fool one or two before the fit takes it out).
CLIMB_SPEED = 0.1
CLIMB_Z = 3.0
HOLD = 3
#: An estimate over the short span (a flight is seen sooner) is used where its
#: standard error is at most this (m/s); otherwise the whole span's ...
SHORT_SE = 0.04
#: ... and where the barometer reads at least this fast (Hz): fewer readings
#: leave the short span's own error estimate too rough to choose by.
SHORT_MIN_HZ = 8.0
#: Level is claimed below this speed with a standard error below ``LEVEL_SE``.
LEVEL_SPEED = 0.07
LEVEL_SE = 0.05
#: An estimate leans up or down at :data:`LEVEL_SPEED` or more and this many standard errors.
LEAN_Z = 2.0
UP, DOWN, LEVEL = "up", "down", "level"
#: An estimate needs readings in at least 4 bins of its span (:meth:`AltitudeRate._fit`).
MIN_READINGS = 4
#: Seconds of estimates kept for lookups (a window is judged by the estimate at its end).
MEMORY_S = 60.0
#: Readings kept at most (a span and a hop of a 500 Hz barometer; phones read 1-25 Hz):
#: readings packed microseconds apart cannot pile up in one device's memory.
MAX_KEPT = 4500


def altitude_m(hpa: np.ndarray | float, reference_hpa: float = SEA_LEVEL_HPA) -> np.ndarray:
    """Height in metres above where the pressure is ``reference_hpa`` (the
    international standard atmosphere's barometric formula).

    >>> round(float(altitude_m(1013.25 - 0.12)), 2)   # 0.12 hPa less: about a metre up
    1.0
    """
    return 44330.77 * (1.0 - (np.asarray(hpa, dtype=np.float64) / reference_hpa) ** 0.190263)


def pressure_hpa(altitude: np.ndarray | float, reference_hpa: float = SEA_LEVEL_HPA) -> np.ndarray:
    """The inverse of :func:`altitude_m`: pressure in hPa at ``altitude`` metres.

    >>> round(float(pressure_hpa(altitude_m(987.6))), 6)
    987.6
    """
    return reference_hpa * (1.0 - np.asarray(altitude, dtype=np.float64) / 44330.77) ** (1.0 / 0.190263)


def screen_pressure(
    t: Sequence[float] | np.ndarray, hpa: Sequence[float] | np.ndarray, after: float | None = None
) -> tuple[np.ndarray, np.ndarray, Counter[str]]:
    """The readings that can be right, in their order, and the others counted
    by reason (:data:`PRESSURE_REASONS`); ``after``: the time of the last
    reading already taken (a reading must be later than every earlier one).

    >>> t, p, refused = screen_pressure([1, 2, 2, 3, 4, 5], [1000, 1000, 1000, float("nan"), 50, 999])
    >>> t.tolist(), p.tolist(), sorted(refused.items())
    ([1.0, 2.0, 5.0], [1000.0, 1000.0, 999.0], [('pressure_non_finite', 1), ('pressure_order', 1), ('pressure_range', 1)])
    """
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    hpa = np.asarray(hpa, dtype=np.float64).reshape(-1)
    if len(t) != len(hpa):
        raise ValueError(f"{len(t)} times for {len(hpa)} pressures")
    refused: Counter[str] = Counter()
    finite = np.isfinite(t) & np.isfinite(hpa)
    in_range = finite & (hpa >= MIN_HPA) & (hpa <= MAX_HPA)
    refused["pressure_non_finite"] = int((~finite).sum())
    refused["pressure_range"] = int((finite & ~in_range).sum())
    keep = np.zeros(len(t), dtype=bool)
    last = -math.inf if after is None else after
    for i in np.flatnonzero(in_range):  # a running maximum: short lists (one message)
        if t[i] > last:
            keep[i] = True
            last = t[i]
        else:
            refused["pressure_order"] += 1
    return t[keep], hpa[keep], +refused


@dataclass(frozen=True)
class VerticalSpeed:
    """The vertical speed over the ``span`` seconds up to ``t``.

    ``speed`` m/s (up is positive), ``se`` its standard error, ``confidence``
    0..1 (the share of the span covered by readings, times how small ``se``
    is against :data:`USELESS_SE`), ``step_m`` a step taken out of the span
    (a door or the ventilation: metres, 0 if none)."""

    t: float
    speed: float
    se: float
    confidence: float
    step_m: float = 0.0


class AltitudeRate:
    """One device's barometer, turned into vertical speeds (see the module doc).

    ``push(t, hpa)`` takes readings (seconds, hPa) in time order and returns
    the estimates whose ticks they completed: a tick's estimate is made once a
    reading later than the tick arrives, so the output does not depend on how
    the readings were chunked. ``latest`` is the newest estimate, ``refused``
    the readings refused by reason, ``last_t`` the time of the newest reading.
    """

    def __init__(
        self,
        span: float = 8.0,
        hop: float = 0.5,
        bin: float = 0.5,
        step_ratio: float = 20.0,
        short_span: float | None = 4.0,
    ):
        if not (0 < bin <= hop <= span and span / bin <= 200):
            raise ValueError(f"need 0 < bin ({bin}) <= hop ({hop}) <= span ({span}) and span/bin <= 200")
        if short_span is not None and not 4 * bin <= short_span < span:
            raise ValueError(f"short span {short_span} must be within 4 bins ({4 * bin}) .. span ({span})")
        self.span, self.hop, self.bin, self.step_ratio, self.short_span = span, hop, bin, step_ratio, short_span
        self._t = np.empty(0)
        self._h = np.empty(0)
        self._reference: float | None = None  # the first reading: altitudes are relative to it
        self._tick = 0  # the next estimate is made at tick * hop seconds
        self.last_t: float | None = None
        self.latest: VerticalSpeed | None = None
        self.refused: Counter[str] = Counter()
        self.readings = 0
        self._run: tuple[str | None, int] = (None, 0)  # the latest estimates' reading, and for how many
        # (tick, verdict) of the last minute of estimates: a window is judged by the
        # estimate at its own end, however far the readings ran ahead of it
        self._verdicts: deque[tuple[float, str | None, VerticalSpeed]] = deque(maxlen=int(MEMORY_S / hop) + 1)

    def push(
        self, t: Sequence[float] | np.ndarray, hpa: Sequence[float] | np.ndarray, max_estimates: int | None = None
    ) -> list[VerticalSpeed]:
        """Take readings; the estimates they completed, oldest first.

        Each estimate is a fit (about half a millisecond), so what one push
        costs is bounded by the readings, not by the time they claim to span:
        a tick whose span cannot hold :data:`MIN_READINGS` readings is passed
        over (it has no estimate), a tick more than :data:`MEMORY_S` and a span
        before the newest reading is never worked out (its estimate would
        not be kept for lookups), and ``max_estimates`` (None: no bound)
        leaves the ticks past it for a later push.

        >>> est = AltitudeRate()
        >>> sparse = est.push(np.arange(1000) * 7.9, np.full(1000, 1000.0))  # 2 h of readings 8 s apart
        >>> len(sparse), est._tick * est.hop >= 7892.1   # no tick had an estimate to make, none was tried
        (0, True)
        """
        t, hpa, refused = screen_pressure(t, hpa, self.last_t)
        self.refused.update(refused)
        if not len(t):
            return []
        if self._reference is None:
            self._reference = float(hpa[0])
            self._tick = math.ceil(t[0] / self.hop)
        self.readings += len(t)
        out: list[VerticalSpeed] = []
        self._t = np.concatenate([self._t, t])[-MAX_KEPT:]
        self._h = np.concatenate([self._h, altitude_m(hpa, self._reference)])[-MAX_KEPT:]
        newest = float(t[-1])
        useful = math.ceil((newest - MEMORY_S - self.span) / self.hop)
        if self._tick < useful:  # estimates that would be gone before anyone asked for them
            self._tick, self._run = useful, (None, 0)
        made = 0
        while self._tick * self.hop < newest:  # every reading up to the tick is in
            tick = self._tick * self.hop
            j = int(np.searchsorted(self._t, tick - self.span, side="right"))
            first = self._t[j]
            if first > tick:  # a silence: nothing in this tick's span, go on to the next reading
                self._tick = max(math.ceil(first / self.hop), self._tick + 1)
                continue
            if int(np.searchsorted(self._t, tick, side="right")) - j < MIN_READINGS:
                # too few readings for a fit until the span can reach the reading that makes enough
                enough = self._t[j + MIN_READINGS - 1] if j + MIN_READINGS - 1 < len(self._t) else newest
                self._tick = max(math.ceil(enough / self.hop), self._tick + 1)
                continue
            if max_estimates is not None and made >= max_estimates:
                break  # the rest on a later push
            made += 1
            estimate = self._estimate(tick)
            if estimate is not None:
                out.append(estimate)
                reading = _reading(estimate)
                self._run = (reading, self._run[1] + 1 if reading == self._run[0] else 1)
                held = None if reading in (UP, DOWN) and self._run[1] < HOLD else reading
                self._verdicts.append((estimate.t, held, estimate))
            self._tick += 1
        keep = self._t > self._tick * self.hop - self.span - self.hop
        self._t, self._h = self._t[keep], self._h[keep]
        self.last_t = newest
        if out:
            self.latest = out[-1]
        return out

    def verdict(self, t: float, max_age: float = 3.0) -> str | None:
        """``up``, ``down`` or ``level`` at time ``t`` (the device's clock), or
        None where the barometer does not say: no estimate in the ``max_age``
        seconds up to ``t`` (within the last minute of estimates), too
        uncertain, or a climb not yet held for :data:`HOLD` estimates.

        >>> est = AltitudeRate()
        >>> t = np.arange(0, 20, 0.2)
        >>> _ = est.push(t, pressure_hpa(-0.25 * t))         # going down 0.25 m/s
        >>> est.verdict(19.5), est.verdict(60.0), est.verdict(1.0)
        ('down', None, None)
        """
        found = self._at(t, max_age)
        return None if found is None else found[1]

    def leaning(self, t: float, max_age: float = 3.0) -> str | None:
        """``up`` or ``down`` where the estimate at ``t`` leans that way
        (at least :data:`LEVEL_SPEED`, :data:`LEAN_Z` standard errors from
        level) without being a held climb: weak evidence that can back another
        witness's claim of that direction, never claim it alone.

        >>> est = AltitudeRate()
        >>> t = np.arange(0, 20, 1.0)
        >>> _ = est.push(t, pressure_hpa(0.09 * t) + np.tile([0.004, -0.004], 10))
        >>> est.verdict(19.0), est.leaning(19.0)
        (None, 'up')
        """
        found = self._at(t, max_age)
        if found is None:
            return None
        v = found[2]
        if abs(v.speed) >= LEVEL_SPEED and abs(v.speed) >= LEAN_Z * v.se:
            return UP if v.speed > 0 else DOWN
        return None

    def _at(self, t: float, max_age: float) -> tuple[float, str | None, VerticalSpeed] | None:
        ticks = [tick for tick, _, _ in self._verdicts]
        i = bisect.bisect_right(ticks, t + 1e-9) - 1  # the newest estimate made by time t
        if i < 0 or t - ticks[i] > max_age:
            return None
        return self._verdicts[i]

    def _estimate(self, tick: float) -> VerticalSpeed | None:
        """The estimate at ``tick``: over the short span where that is precise
        enough (a fast barometer sees a flight begin sooner), else the span;
        where the short span took a step out, the more precise of the two."""
        if self.short_span:
            recent = int(np.count_nonzero(self._t > tick - self.short_span)) - int(np.count_nonzero(self._t > tick))
            if recent >= SHORT_MIN_HZ * self.short_span:
                quick = self._fit(tick, self.short_span)
                if quick is not None and quick.se <= SHORT_SE:
                    if not quick.step_m:
                        return quick
                    # In a few bins a step and a slope look alike: a steady climb's noise can be
                    # read as a door step plus level. The whole span tells them apart better; the
                    # more precise of the two stands.
                    whole = self._fit(tick, self.span)
                    return quick if whole is None or quick.se <= whole.se else whole
        return self._fit(tick, self.span)

    def _fit(self, tick: float, span: float) -> VerticalSpeed | None:
        lo = tick - span
        inside = (self._t > lo) & (self._t <= tick)
        if inside.sum() < 3:
            return None
        n_bins = int(round(span / self.bin))
        which = np.minimum(((self._t[inside] - lo) / self.bin).astype(np.int64), n_bins - 1)
        heights = self._h[inside]
        order = np.lexsort((heights, which))  # by bin, then by height: each bin's median by index
        which, heights = which[order], heights[order]
        present, starts, counts = np.unique(which, return_index=True, return_counts=True)
        y = 0.5 * (heights[starts + (counts - 1) // 2] + heights[starts + counts // 2])
        x = (present + 0.5) * self.bin - span  # bin centres, seconds before the tick
        n = len(x)
        covered = (x[-1] - x[0] + self.bin) / span if n else 0.0
        if n < 4 or covered < 0.5:
            return None
        speed, rss, steps = _line_with_steps(x, y, self.step_ratio)
        # with steps, the slope rests on the spread within each stretch between them
        edges = np.searchsorted(x, sorted(w for w, _ in steps))
        sxx = sum(float(((part - part.mean()) ** 2).sum()) for part in np.split(x, edges) if len(part))
        dof = max(n - 2 - len(steps), 1)
        se = max(math.sqrt(max(rss, 0.0) / dof / max(sxx, 1e-9)), MIN_SE)
        confidence = min(covered, 1.0) * max(0.0, 1.0 - se / USELESS_SE)
        return VerticalSpeed(round(tick, 6), float(speed), float(se), float(confidence), sum(h for _, h in steps))


def _reading(v: VerticalSpeed) -> str | None:
    """What one estimate says: up, down, level, or None (too uncertain)."""
    if abs(v.speed) >= CLIMB_SPEED and abs(v.speed) >= CLIMB_Z * v.se:
        return UP if v.speed > 0 else DOWN
    if abs(v.speed) < LEVEL_SPEED and v.se < LEVEL_SE:
        return LEVEL
    return None


def _line_with_steps(
    x: np.ndarray, y: np.ndarray, ratio: float, max_steps: int = 2
) -> tuple[float, float, list[tuple[float, float]]]:
    """Slope and residual sum of squares of a line through ``(x, y)`` with up
    to ``max_steps`` steps, each kept only where it lowers the residual
    ``ratio`` times more than the noise: ``(slope, rss, [(where, height)])``.
    Two steps take out a door opened and closed again.

    Every place for the next step is tried at once: a step's indicator, less
    its projection on what is already fitted, lowers the residual by
    ``(r·s)² / (s·s)`` (r the current residuals)."""
    n = len(x)
    basis = [np.ones(n), x - x.mean()]
    cuts = np.arange(1, n)  # a step before bin c, c = 1 .. n-1
    indicators = (np.arange(n)[:, None] >= cuts[None, :]).astype(np.float64)  # (n, cuts)
    chosen: list[int] = []
    coef, *_ = np.linalg.lstsq(np.column_stack(basis), y, rcond=None)
    r = y - np.column_stack(basis) @ coef
    rss = float(r @ r)
    while len(chosen) < max_steps and n - len(basis) > 2:
        b = np.column_stack(basis)
        proj, *_ = np.linalg.lstsq(b, indicators, rcond=None)
        s = indicators - b @ proj
        ss = np.einsum("ij,ij->j", s, s)
        gain = np.where(ss > 1e-9, (r @ s) ** 2 / np.maximum(ss, 1e-9), 0.0)
        c = int(gain.argmax())
        after = max(rss - float(gain[c]), 0.0)
        noise = max(after / (n - len(basis) - 1), 0.05**2)  # (5 cm)²: what quantised bins leave at least
        if rss - after <= ratio * noise:
            break
        chosen.append(c)
        basis.append(indicators[:, c])
        coef, *_ = np.linalg.lstsq(np.column_stack(basis), y, rcond=None)
        r = y - np.column_stack(basis) @ coef
        rss = float(r @ r)
    steps = [(float(0.5 * (x[c] + x[c + 1])), float(h)) for c, h in zip(chosen, coef[2:])]
    return float(coef[1]), rss, steps
