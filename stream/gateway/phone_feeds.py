"""Each phone's path to the bus: its times checked, resampled to 50 Hz, cut into bus batches.

A :class:`DeviceFeed` is a small sans-I/O core: ``add(readings, now)`` returns
the :class:`~.protocol.SampleBatch` es ready to publish, or raises
:class:`~.phone_formats.FormatError` before touching any state when the
readings cannot be right:

- ``time``: one message spanning more than ``max_span`` seconds, or starting
  further beyond the device's previous message than the wall clock has moved
  since (plus ``max_ahead``): far-future timestamps never reach the resampler.
  A device clock that stepped forward (set by hand, corrected by network
  time, a replay that skipped a pause) is refused so only until its readings
  have gone on from one another for :data:`CLOCK_STEP_CONFIRM_S` seconds of
  the gateway's clock; then it is taken as the device's clock, like one that
  jumped back: a new segment, pinned afresh.
- ``time`` too: readings that cover more of the device's own time than has
  passed. A device cannot send its signal faster than it happens: the time
  its motion readings cover is taken from a budget of ``signal_rate``
  (:data:`SIGNAL_RATE`) seconds per second of the gateway's clock, that starts with (and keeps up
  to) ``max_span + max_ahead`` seconds, so a flush is whole; without it a
  device within its reading budget could send sparse readings covering
  minutes a second, which the resampler would turn into minutes of 50 Hz
  samples for the worker.
- ``rate_limit``: more readings per second than the device's budget, summed
  over all its connections and HTTP sessions. The budget starts with
  :data:`BUDGET_START_S` seconds' worth and keeps what a quiet device does
  not spend, up to :data:`BUDGET_SAVED_S` seconds' worth: a phone that kept
  reading into a buffer while its screen was off (or its network was down)
  flushes the buffer whole, and one that never pauses gets the rate.

Barometer readings ride along: each batch out carries the device's pressure
readings that came since the previous batch (in the batch's clock), at most
:data:`~harstream.stream.core.protocol.MAX_PRESSURE_ROWS` (a device sending
pressure and no motion keeps its newest, the older counted in
``pressure_overflow``); a reading not later than the device's previous one
is left out and counted (``pressure_order``), and so is one that lands
outside the bus's times on the batch's clock (``pressure_time``: a barometer
on another clock than the motion).

A device without a gyroscope (many budget phones; a browser whose
``rotationRate`` is null) sends its accelerometer alone. Once its
accelerometer has run :data:`NO_GYRO_AFTER_S` seconds since it (re)connected
without a single gyroscope reading, it is served from the accelerometer alone:
its gyro channels read 0 and its batches say ``meta.gyro: false``, so the
worker and anyone reading the bus know; so is one whose gyroscope stops
sending while its accelerometer goes on for :data:`NO_GYRO_AFTER_S` seconds,
with a ``gyro_stopped`` warning. A gyroscope reading later switches it back
(a new segment).

A device whose accelerometer leaves gravity out (a browser's ``acceleration``
instead of ``accelerationIncludingGravity``, Android's linear acceleration)
cannot be labelled: every posture and the gravity split need the 1 g a device
at rest reads. Its readings still flow, but every :data:`GRAVITY_CHECK_S`
seconds whose accelerometer averages under :data:`NO_GRAVITY_BELOW_G` leave a
``no_gravity`` warning in :attr:`DeviceFeed.warning` for the edge to send and
count. One that averages over :data:`UNITS_ABOVE_G` (m/s² sent as g) leaves an
``acc_units`` warning the same way.

A sensor sending fewer than :data:`MIN_RATE_HZ` readings a second (SensorServer
left at its default 200 ms period, Android's ``SENSOR_DELAY_NORMAL``) is too
slow for a 50 Hz pipeline: straight lines drawn between readings 200 ms apart
are not a signal. Its first second is judged, then every
:data:`RATE_CHECK_S` seconds; each time it is found so, a ``low_rate``
warning is left the same way, and the device's readings are left out
(counted in :attr:`DeviceFeed.slow_readings`) until a span of its sensors is
fast enough again. What its first second drew is less than a window: no
label is made from it.

Clocks: a device whose readings are within ``clock_window`` of the gateway's
clock (Sensor Logger, browsers: Unix time) keeps its own times; any other
clock (SensorServer's time since boot, a wrong phone clock) is pinned to the
gateway's clock at first sight and again after it jumps back.

>>> import numpy as np
>>> from .phone_formats import Readings
>>> feed = DeviceFeed("phone:a", now=1000.0)
>>> t = 1000.0 + np.arange(60) / 100.0
>>> batches = feed.add(Readings(t, np.zeros((60, 3)), t, np.zeros((60, 3))), now=1001.0)
>>> [(b.device, b.seq, len(b)) for b in batches]
[('phone:a', 0, 25)]
>>> try:
...     feed.add(Readings(t + 1e6, np.zeros((60, 3)), t + 1e6, np.zeros((60, 3))), now=1001.5)
... except FormatError as exc:
...     print(exc.reason)
time
"""

from __future__ import annotations

import itertools

import numpy as np

from harstream.stream.core.barometer import screen_pressure
from harstream.stream.core.protocol import (
    MAX_PRESSURE_ROWS,
    MAX_SAMPLES_PER_MESSAGE,
    MAX_T0,
    SampleBatch,
    new_session_id,
)
from harstream.stream.core.resample import Resampler
from harstream.stream.gateway.admission import RateLimit
from harstream.stream.gateway.phone_formats import FormatError, Readings

MAX_FEEDS = 10_000  # device states kept; beyond this the idle half is forgotten
#: A device clock that stepped forward beyond ``max_ahead`` is taken as the device's clock
#: once its readings have gone on from one another this long (seconds, gateway clock).
CLOCK_STEP_CONFIRM_S = 5.0
#: A new device's reading budget, in seconds of its rate (``max_readings_per_s``).
BUDGET_START_S = 2.0
#: The most a quiet device saves for a flush, in seconds of its rate: what a
#: message may start ahead of the wall clock (``max_ahead``) and a little more.
BUDGET_SAVED_S = 32.0
CLOCK_WINDOW_S = 120.0  # readings this close to the gateway's clock are taken as Unix time
#: Seconds of its own time a device's readings may cover per second of the gateway's clock
#: (a little over 1: clocks that run fast, reading times that jitter).
SIGNAL_RATE = 1.05
#: Seconds of accelerometer readings with no gyroscope reading before a device is served without one.
NO_GYRO_AFTER_S = 3.0
#: An accelerometer whose readings' magnitude averages under this (g) over GRAVITY_CHECK_S
#: seconds leaves gravity out (a device including it reads about 1 g on average, moving or not).
NO_GRAVITY_BELOW_G = 0.5
GRAVITY_CHECK_S = 5.0
#: Above this mean (g) the readings are not in g (m/s² sent as g read about 9.8).
UNITS_ABOVE_G = 3.0
#: A sensor sending fewer readings a second than this (over the time its readings cover) is
#: too slow for the 50 Hz pipeline: SensorServer's default period and Android's
#: SENSOR_DELAY_NORMAL are 200 ms (5 Hz). Its readings are left out, not interpolated.
MIN_RATE_HZ = 10.0
RATE_CHECK_S = 5.0
# A sensor's first span is judged sooner: less than one window of its readings
# reaches the bus before a slow sensor is found slow, so no label is ever made
# from readings drawn as straight lines. A second of a 10 Hz sensor is 10
# readings, enough to tell it from a 5 Hz one.
FIRST_RATE_CHECK_S = 1.0
_CLOCKS = itertools.count(1)  # DeviceFeed.clock: never the same number twice in one gateway


class DeviceFeed:
    """One device's resampler, clock offset and reading budget."""

    def __init__(
        self,
        device: str,
        now: float,
        max_gap: float = 0.5,
        max_span: float = 60.0,
        max_ahead: float = 30.0,
        max_readings_per_s: float = 4000.0,
        signal_rate: float = SIGNAL_RATE,
    ):
        self.device = device
        self.resampler = Resampler(max_gap=max_gap)
        self.max_span, self.max_ahead = max_span, max_ahead
        self.budget = RateLimit(
            max_readings_per_s,
            max(BUDGET_SAVED_S, max_ahead + BUDGET_START_S) * max_readings_per_s,
            start=BUDGET_START_S * max_readings_per_s,
            now=now,
        )
        # seconds of the device's own time its readings may still cover (see the module doc)
        self.signal_budget = RateLimit(signal_rate, max_span + max_ahead, now=now)
        self.offset: float | None = None  # device clock → Unix time
        self._jumps = 0
        # a new number whenever the bus times of this device stop comparing with earlier
        # ones (a new feed, a restart, a clock that jumped back or stepped forward)
        self.clock = next(_CLOCKS)
        self._last_t: float | None = None  # newest reading so far, device clock
        self._last_wall = now  # when it arrived, gateway clock
        self.source = ""
        # one producer session per feed, kept across the phone's reconnects: the
        # worker refuses another publisher's samples under this phone's id
        self.session = new_session_id()
        self.samples_out = 0
        self.last_seen = now
        self._pressure = np.empty((0, 2))  # barometer readings waiting for the next batch (device clock)
        self._pressure_last: float | None = None  # newest barometer reading taken, device clock
        self.pressure_refused: dict[str, int] = {}  # readings left out here, by reason
        self._first_acc: float | None = None  # first accelerometer reading since (re)connecting, device clock
        self._last_gyro: float | None = None  # newest gyroscope reading since (re)connecting, device clock
        self._gravity = GravityCheck()
        self.warning: tuple[str, str] | None = None  # (reason, detail) for the edge to send, then clear
        self.warnings = 0  # how many it raised
        # readings on a clock that stepped forward, refused so far: (first seen, newest reading, last seen)
        self._step: tuple[float, float, float] | None = None
        self._rates = {stream: RateCheck(max_gap) for stream in ("acc", "gyro")}
        self.rate_hz: dict[str, float] = {}  # each sensor's rate over its last span checked
        self.slow_readings = 0  # readings not used: their sensor ran under MIN_RATE_HZ

    def check(self, readings: Readings, now: float) -> None:
        """Refuse readings whose times cannot be right (see the module doc); changes nothing."""
        span = _span(readings)
        if span is None:
            return
        lo, hi = span
        if hi - lo > self.max_span:
            raise FormatError("time", f"readings span {hi - lo:.0f} s in one message, at most {self.max_span:g} s")
        if self._last_t is not None:
            ahead = lo - self._last_t
            if ahead > self._allowed_ahead(now):
                raise FormatError(
                    "time",
                    f"readings start {ahead:.0f} s after this device's previous message, "
                    f"but only {now - self._last_wall:.0f} s have passed",
                )

    def add(self, readings: Readings, now: float) -> list[SampleBatch]:
        """Check, then push readings; return the 50 Hz batches ready to publish."""
        stepped = self._clock_stepped(readings, now)
        if not stepped:
            self.check(readings, now)
        if not self.budget.take(len(readings), now):
            raise FormatError("rate_limit", f"more than {self.budget.rate:g} readings/s for device {self.device!r}")
        motion = _span(readings, ("acc_t", "gyro_t"))
        covered = motion[1] - motion[0] if motion is not None else 0.0
        if covered > 0 and not self.signal_budget.take(covered, now):
            raise FormatError(
                "time",
                f"readings cover {covered:.1f} s of this device's time, more than has passed on the gateway's clock "
                "since its earlier readings: a device cannot send its signal faster than it happens",
            )
        if stepped:  # the device's clock now: a new segment, pinned afresh
            self.restart()
        self.last_seen = now
        r = self.resampler
        first = readings.acc_t[:1] if len(readings.acc_t) else readings.gyro_t[:1]
        if self._too_slow(readings):  # not drawn as straight lines between sparse readings
            self.slow_readings += len(readings)
        else:
            for stream in ("acc", "gyro"):
                t = getattr(readings, f"{stream}_t")
                if len(t):
                    r.push(stream, t, getattr(readings, stream))
            self._take_pressure(readings)
            self._choose_streams(readings)
        self._check_gravity(readings)
        if len(readings.acc_t) or len(readings.gyro_t):
            newest = max(float(t.max()) for t in (readings.acc_t, readings.gyro_t) if len(t))
            jumped = r.clock_jumps != self._jumps
            self._last_t = newest if (self._last_t is None or jumped) else max(self._last_t, newest)
            self._last_wall = now
        if len(first) and (self.offset is None or r.clock_jumps != self._jumps):
            if r.clock_jumps != self._jumps:
                self.clock = next(_CLOCKS)
            self.offset = 0.0 if abs(first[0] - now) < CLOCK_WINDOW_S else now - float(first[0])
            self._jumps = r.clock_jumps
        out = []
        for chunk in r.pull():
            for i in range(0, len(chunk.samples), MAX_SAMPLES_PER_MESSAGE):
                part = chunk.samples[i : i + MAX_SAMPLES_PER_MESSAGE]
                # sent: when the gateway published it; a worker judges staleness by that, so a
                # phone's flush of readings it held (screen off, no network) is labelled
                meta = {"source": self.source, "segment": r.segments, "sent": round(now, 3)}
                if not self.has_gyro:
                    meta["gyro"] = False
                t0 = chunk.t0 + i / r.rate + (self.offset or 0.0)
                batch = SampleBatch(self.device, chunk.seq + i, t0, part, meta=meta, session=self.session)
                if len(self._pressure):
                    batch.pressure = self._bus_pressure()
                    self._pressure = self._pressure[:0]
                out.append(batch)
                self.samples_out += len(part)
        return out

    @property
    def newest_reading(self) -> float | None:
        """The bus time of the newest motion reading so far (None before
        any): a calibration take starts and stops there, since the batches
        published so far stop short of it (the resampler holds the newest
        ``hold`` seconds back).

        >>> feed = DeviceFeed("phone:a", now=1000.0)
        >>> t = 1000.0 + np.arange(60) / 100.0
        >>> batches = feed.add(Readings(t, np.zeros((60, 3)), t, np.zeros((60, 3))), now=1001.0)
        >>> feed.newest_reading, round(batches[-1].t0 + (len(batches[-1]) - 1) / 50, 2)
        (1000.59, 1000.48)
        """
        if self._last_t is None or self.offset is None:
            return None
        return self._last_t + self.offset

    def _allowed_ahead(self, now: float) -> float:
        """How far past the device's previous message its next may start
        (device clock): the wall clock's move since, plus ``max_ahead``."""
        return (now - self._last_wall) + self.max_ahead

    def _clock_stepped(self, readings: Readings, now: float) -> bool:
        """Whether ``readings``, too far ahead of the device's previous message,
        go on a clock that stepped forward and has run on for
        :data:`CLOCK_STEP_CONFIRM_S` seconds (see the module doc)."""
        span = _span(readings)
        if span is None or self._last_t is None or not (len(readings.acc_t) or len(readings.gyro_t)):
            return False
        lo, hi = span
        if hi - lo > self.max_span:  # refused by check()
            return False
        if lo - self._last_t <= self._allowed_ahead(now):
            self._step = None  # on the device's known clock
            return False
        step = self._step
        goes_on = (
            step is not None
            and lo >= step[1] - self.resampler.max_gap
            and lo - step[1] <= (now - step[2]) + self.max_ahead
        )
        if step is None or not goes_on:
            self._step = (now, hi, now)
            return False
        self._step = (step[0], max(step[1], hi), now)
        return now - step[0] >= CLOCK_STEP_CONFIRM_S

    @property
    def has_gyro(self) -> bool:
        """Whether this device is served with its gyroscope (see the module doc)."""
        return "gyro" in self.resampler.streams

    def _choose_streams(self, readings: Readings) -> None:
        r = self.resampler
        if len(readings.gyro_t):
            newest = float(readings.gyro_t.max())
            self._last_gyro = newest if self._last_gyro is None else max(self._last_gyro, newest)
            if not self.has_gyro:  # it has one after all
                r.use_streams(("acc", "gyro"))
            return
        if not len(readings.acc_t) or not self.has_gyro:
            return
        if self._first_acc is None:
            self._first_acc = float(readings.acc_t.min())
        newest = float(readings.acc_t.max())
        if r.segments == 0 and newest - self._first_acc >= NO_GYRO_AFTER_S:
            r.use_streams(("acc",))
        elif self._last_gyro is not None and newest - self._last_gyro >= NO_GYRO_AFTER_S:
            # the gyroscope stopped mid-stream: without this, no grid point has both
            # streams again and every later reading is lost without a word
            r.use_streams(("acc",))
            self.warnings += 1
            self.warning = (
                "gyro_stopped",
                f"device {self.device}: no gyroscope reading for {newest - self._last_gyro:.1f} s while the "
                "accelerometer went on; served from the accelerometer alone until the gyroscope is back",
            )

    @property
    def low_rate(self) -> bool:
        """Whether a sensor of this device ran under :data:`MIN_RATE_HZ` over its last span checked."""
        return any(rate < MIN_RATE_HZ for rate in self.rate_hz.values())

    def _too_slow(self, readings: Readings) -> bool:
        """Judge each sensor's rate as its readings come (see :class:`RateCheck`);
        whether this device's readings are to be left out (a ``low_rate`` warning
        with every span found slow)."""
        for stream in ("acc", "gyro"):
            rate = self._rates[stream].push(getattr(readings, f"{stream}_t"))
            if rate is None:
                continue
            self.rate_hz[stream] = rate
            if rate < MIN_RATE_HZ:
                self.warnings += 1
                name = {"acc": "accelerometer", "gyro": "gyroscope"}[stream]
                self.warning = (
                    "low_rate",
                    f"device {self.device}: the {name} ran at {rate:.1f} Hz over {RATE_CHECK_S:g} s; "
                    f"at least {MIN_RATE_HZ:g} Hz is needed (the model works at 50 Hz): set the app's sampling rate "
                    "higher (SensorServer: a sampling period of 20,000 us or less; Android: SENSOR_DELAY_GAME "
                    "or faster); until then its readings are not used",
                )
        return self.low_rate

    def _check_gravity(self, readings: Readings) -> None:
        mean = self._gravity.push(readings.acc_t, readings.acc)
        if mean is None or NO_GRAVITY_BELOW_G <= mean <= UNITS_ABOVE_G:
            return
        self.warnings += 1
        said = f"device {self.device}: the accelerometer averaged {mean:.2f} g over {GRAVITY_CHECK_S:g} s"
        if mean < NO_GRAVITY_BELOW_G:
            self.warning = (
                "no_gravity",
                f"{said}; with gravity included a device reads about 1 g: send acceleration including gravity "
                "(browsers: accelerationIncludingGravity; Android: TYPE_ACCELEROMETER, not linear acceleration)",
            )
        else:
            self.warning = (
                "acc_units",
                f"{said}; a device carried by a person reads about 1 g on average: if these are m/s², "
                'say so in hello ("units": {"acc": "m/s2"})',
            )

    def _take_pressure(self, readings: Readings) -> None:
        for reason, n in readings.pressure_refused.items():
            self.pressure_refused[reason] = self.pressure_refused.get(reason, 0) + n
        if not len(readings.pressure_t):
            return
        t, hpa, refused = screen_pressure(readings.pressure_t, readings.pressure, self._pressure_last)
        for reason, n in refused.items():
            self.pressure_refused[reason] = self.pressure_refused.get(reason, 0) + n
        if len(t):
            self._pressure_last = float(t[-1])
            self._pressure = np.concatenate([self._pressure, np.column_stack([t, hpa])])
            if len(self._pressure) > MAX_PRESSURE_ROWS:
                over = len(self._pressure) - MAX_PRESSURE_ROWS
                self.pressure_refused["pressure_overflow"] = self.pressure_refused.get("pressure_overflow", 0) + over
                self._pressure = self._pressure[over:]

    def _bus_pressure(self) -> np.ndarray | None:
        """The waiting barometer readings on the bus clock; a reading that lands
        outside the bus's times (0 … 1e10 s: a barometer on another clock than
        the motion it rides with) is left out and counted (``pressure_time``),
        so the worker never refuses the batch, and its motion, for it."""
        rows = self._pressure + [self.offset or 0.0, 0.0]
        ok = (rows[:, 0] >= 0.0) & (rows[:, 0] < MAX_T0)
        if not ok.all():
            self.pressure_refused["pressure_time"] = self.pressure_refused.get("pressure_time", 0) + int((~ok).sum())
        return rows[ok] if ok.any() else None

    def restart(self) -> None:
        """A new connection for this device: do not join its data to the old one."""
        self.resampler.restart()
        self.clock = next(_CLOCKS)
        self.offset = None  # the phone may have rebooted: pin its clock afresh
        self._last_t = None
        self._pressure, self._pressure_last = self._pressure[:0], None
        self._first_acc = None
        self._last_gyro = None
        self._gravity = GravityCheck()  # a new connection's clock may differ
        self._step = None
        self._rates = {stream: RateCheck(self.resampler.max_gap) for stream in ("acc", "gyro")}


def _span(
    readings: Readings, sensors: tuple[str, ...] = ("acc_t", "gyro_t", "pressure_t")
) -> tuple[float, float] | None:
    """The first and last reading time of ``readings`` over ``sensors`` (every
    one by default; the motion sensors' span is what the resampler turns into
    50 Hz samples), device clock; None when they hold none."""
    times = [t for t in (getattr(readings, name) for name in sensors) if len(t)]
    if not times:
        return None
    return min(float(t.min()) for t in times), max(float(t.max()) for t in times)


class RateCheck:
    """How many readings a second one sensor sends, over its first
    :data:`FIRST_RATE_CHECK_S` seconds and then each span of
    :data:`RATE_CHECK_S` seconds of its own clock, counting only the time its
    readings cover (a hole longer than ``max_gap`` is silence, not a slow
    sensor; repeated times are not counted).

    >>> check = RateCheck()
    >>> check.push(np.arange(0, 0.8, 0.2)) is None                 # 0.6 s at 5 Hz: not yet
    True
    >>> round(check.push(np.arange(0.8, 1.6, 0.2)), 1)             # SensorServer's default
    5.0
    >>> check.push(np.arange(1.6, 4.6, 0.2)) is None               # then every 5 s
    True
    >>> watch = RateCheck()
    >>> round(watch.push(np.r_[np.arange(0, 0.6, 0.04), np.arange(4, 7, 0.04)]), 1)  # 25 Hz, a 3.4 s hole
    25.0
    """

    def __init__(self, max_gap: float = 0.5) -> None:
        self.max_gap = max_gap
        self.last: float | None = None  # newest reading so far
        self.since: float | None = None  # the span's first reading
        self.intervals = 0
        self.covered = 0.0  # seconds between readings no further apart than max_gap
        self.span = FIRST_RATE_CHECK_S  # this span's length; RATE_CHECK_S after the first

    def push(self, t: np.ndarray) -> float | None:
        """Take reading times; the span's rate (Hz) when they complete one, else None."""
        if not len(t):
            return None
        t = np.sort(np.asarray(t, dtype=np.float64))
        if self.last is not None and t[0] >= self.last:
            t = np.concatenate([[self.last], t])
        dt = np.diff(t)
        kept = (dt > 0) & (dt <= self.max_gap)
        self.intervals += int(kept.sum())
        self.covered += float(dt[kept].sum())
        self.last = float(t[-1]) if self.last is None else max(self.last, float(t[-1]))
        self.since = float(t[0]) if self.since is None else self.since
        if self.last - self.since < self.span or self.covered <= 0:
            return None
        rate = self.intervals / self.covered
        self.intervals, self.covered, self.since, self.span = 0, 0.0, None, RATE_CHECK_S
        return rate


class GravityCheck:
    """The mean magnitude of an accelerometer's readings over each span of
    :data:`GRAVITY_CHECK_S` seconds (its own clock).

    >>> check = GravityCheck()
    >>> check.push(np.arange(0, 3, 0.01), np.full((300, 3), 0.02)) is None    # 3 s: not yet
    True
    >>> round(check.push(np.arange(3, 6, 0.01), np.full((300, 3), 0.02)), 3)  # linear acceleration
    0.035
    """

    def __init__(self) -> None:
        self.total = 0.0  # sum of |acc| (g) in the current span
        self.n = 0
        self.since: float | None = None  # the span's first reading

    def push(self, t: np.ndarray, acc: np.ndarray) -> float | None:
        """Take readings; the span's mean |acc| (g) when they complete one, else None."""
        if not len(t):
            return None
        self.total += float(np.linalg.norm(acc, axis=1).sum())
        self.n += len(t)
        self.since = float(t.min()) if self.since is None else self.since
        if float(t.max()) - self.since < GRAVITY_CHECK_S:
            return None
        mean = self.total / self.n
        self.total, self.n, self.since = 0.0, 0, None
        return mean


class FeedTable:
    """Device id → :class:`DeviceFeed`, bounded: past ``max_feeds`` the idle half not in ``keep`` is forgotten."""

    def __init__(self, max_feeds: int = MAX_FEEDS, **feed_options: float):
        self.max_feeds = max_feeds
        self.options = feed_options
        self._feeds: dict[str, DeviceFeed] = {}

    def __len__(self) -> int:
        return len(self._feeds)

    def __getitem__(self, device: str) -> DeviceFeed:
        return self._feeds[device]

    def items(self):
        return self._feeds.items()

    def newest_reading(self, device: str) -> tuple[int, float | None]:
        """``(clock, bus time of the newest reading)`` of ``device``
        (:attr:`DeviceFeed.newest_reading`; ``clock`` changes when its times
        stop comparing with earlier ones); ``(0, None)`` for a device without a feed."""
        feed = self._feeds.get(device)
        return (0, None) if feed is None else (feed.clock, feed.newest_reading)

    def start(self, device: str, now: float, keep: set[str] | frozenset[str] = frozenset()) -> DeviceFeed:
        """The feed of a device that (re)connects: new, or restarted as a new segment."""
        feed = self._feeds.get(device)
        if feed is None:
            feed = self._feeds[device] = DeviceFeed(device, now, **self.options)
            if len(self._feeds) > self.max_feeds:
                idle = sorted((f.last_seen, d) for d, f in self._feeds.items() if d not in keep and d != device)
                for _, gone in idle[: len(self._feeds) - self.max_feeds // 2]:
                    del self._feeds[gone]
        else:
            feed.restart()
        return feed
