"""Guided calibration of one phone: labelled takes of its own 50 Hz samples (no I/O).

The ``/phone`` page leads a person through a few activities; for each one it
sends ``start`` and ``stop`` over its WebSocket, and the gateway hands every
50 Hz sample it publishes for that device to the device's
:class:`CalibrationSession` — exactly the samples the worker sees. A take
keeps those whose times fall after the newest reading the gateway had from
the device when ``start`` came, up to the newest one when ``stop`` came: the
gateway publishes a reading's samples a little later (its resampler holds the
newest 0.1 s back), so what is published after ``start`` may still be what
the person did before it, and what is published after ``stop`` may belong
to the take. On
``stop`` the take is checked at once (:func:`check_take`: enough seconds,
the phone moving or still as asked) so the page can offer a retry; on
``finish`` the takes become CSV files in the documented format
(docs/recordings.md, :func:`take_files`) that ``harstream calibrate`` reads
too, and a personal model is fitted from them (by the caller: the stream
package does not import the models).

Files go under a per-device folder named by :func:`device_folder_name`: a
strict ASCII slug of the id plus a hash of the whole id, so no id (``..``,
``/``, odd unicode) can point outside the calibration folder and no two ids
share a folder. Every take is capped in seconds and all of a device's files
together in bytes (:class:`CalibrationLimits`).

>>> s = CalibrationSession("phone:web-1")
>>> s.start("sit")
'SITTING'
>>> s.add(0.0, np.tile([0.0, 1.0, 0.0, 0.0, 0.0, 0.0], (1500, 1)))
>>> check = s.stop()
>>> check.activity, check.seconds, check.moving_share, check.ok
('SITTING', 30.0, 0.0, True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harstream.stream.core.activities import ACTIVITIES, POSTURES
from harstream.stream.core.barometer import AltitudeRate
from harstream.stream.core.errors import InputError
from harstream.stream.core.rate import RATE_HZ

#: What a person may be asked to do, by the names the page and CLI use.
ALIASES = {
    "walk": "WALKING",
    "walking": "WALKING",
    "upstairs": "WALKING_UPSTAIRS",
    "walking_upstairs": "WALKING_UPSTAIRS",
    "downstairs": "WALKING_DOWNSTAIRS",
    "walking_downstairs": "WALKING_DOWNSTAIRS",
    "sit": "SITTING",
    "sitting": "SITTING",
    "stand": "STANDING",
    "standing": "STANDING",
    "lie": "LAYING",
    "lying": "LAYING",
    "laying": "LAYING",
}
#: The same floor the personal model's fit applies (models/personal.py); checked
#: here too so the page can say so right after the step, not at the end.
MIN_SECONDS = 20.0
#: A posture take is refused when the phone moved in more than this share of
#: its windows (a way of walking: when it was still in more than this share).
MAX_WRONG_SHARE = 0.5
#: A 2.56 s window is "moving" when the magnitude of acceleration varies by more
#: than this (g, standard deviation): walking gives 0.1-0.5, a phone at rest
#: in a pocket of a seated person well under 0.02.
MOVING_STD_G = 0.04
WINDOW, STEP = 128, 64
FOLDER_SLUG_CHARS = 40
_SLUG = re.compile(r"[^a-z0-9]+")
CSV_HEADER = "time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label\n"
#: Beside a device's calibration CSVs: its id on the bus (what `harstream calibrate` serves a refit to).
DEVICE_FILE = "device.txt"


class CalibrationError(InputError):
    """A calibration request that cannot be honoured, counted under ``reason``."""

    REASONS = ("calibration", "too_large", "busy")


@dataclass(frozen=True)
class CalibrationLimits:
    """How much one device's calibration may hold."""

    max_take_seconds: float = 120.0  # samples past this in one take are not kept
    max_bytes: int = 4 * 1024 * 1024  # all of a device's CSV files together


DEFAULT_LIMITS = CalibrationLimits()


def parse_activity(name: object) -> str:
    """The activity (an ACTIVITIES name) a page or CLI name stands for.

    >>> parse_activity("lie"), parse_activity("WALKING_UPSTAIRS")
    ('LAYING', 'WALKING_UPSTAIRS')
    """
    if isinstance(name, str) and len(name) <= 40:
        key = name.strip().lower()
        if key in ALIASES:
            return ALIASES[key]
    shown = repr(name)[:60]
    raise CalibrationError(
        "calibration", f"activity {shown}: expected one of walk, upstairs, downstairs, sit, stand, lie"
    )


def device_folder_name(device: str) -> str:
    """A folder name for ``device`` that is safe on any file system and
    unique per id: a lower-case ASCII slug (at most 40 characters) and 12 hex
    digits of the id's SHA-256.

    >>> device_folder_name("phone:web-1a2b")
    'phone-web-1a2b-66361f705539'
    >>> device_folder_name("../../etc")
    'etc-74ccf3c5b4c1'
    """
    digest = hashlib.sha256(device.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    ascii_only = unicodedata.normalize("NFKD", device).encode("ascii", "ignore").decode()
    slug = _SLUG.sub("-", ascii_only.lower()).strip("-")[:FOLDER_SLUG_CHARS].strip("-")
    return f"{slug}-{digest}" if slug else digest


def motion_share(samples: np.ndarray) -> float:
    """Share of the 2.56 s windows (50 % overlap) in which the phone moved
    (see :data:`MOVING_STD_G`); 0.0 for fewer samples than one window.

    >>> still = np.tile([0.0, 0.0, 1.0, 0, 0, 0], (256, 1))
    >>> motion_share(still)
    0.0
    """
    if len(samples) < WINDOW:
        return 0.0
    magnitude = np.linalg.norm(np.asarray(samples[:, :3], np.float64), axis=1)
    starts = range(0, len(samples) - WINDOW + 1, STEP)
    moving = [float(magnitude[s : s + WINDOW].std()) > MOVING_STD_G for s in starts]
    return float(np.mean(moving))


@dataclass
class TakeCheck:
    """What one take looked like: enough seconds, moving or still as asked."""

    activity: str
    seconds: float
    moving_share: float
    ok: bool
    reason: str = ""
    truncated: bool = False

    def as_message(self) -> dict:
        return {
            "activity": self.activity,
            "seconds": self.seconds,
            "moving_share": self.moving_share,
            "ok": self.ok,
            "reason": self.reason,
            "truncated": self.truncated,
        }


def check_take(activity: str, seconds: float, moving: float) -> TakeCheck:
    """Accept or question a take, saying which and why.

    >>> check_take("SITTING", 12.0, 0.0).reason
    'SITTING: only 12.0 s recorded; at least 20 s of each activity are needed'
    >>> check_take("SITTING", 30.0, 0.9).reason
    'SITTING: the phone was moving in 90% of the take; hold it still in this posture'
    >>> check_take("WALKING", 30.0, 0.1).reason
    'WALKING: the phone was still in 90% of the take; walk while recording'
    """
    seconds, moving = round(seconds, 1), round(moving, 2)
    reason = ""
    if seconds < MIN_SECONDS:
        reason = f"{activity}: only {seconds:.1f} s recorded; at least {MIN_SECONDS:.0f} s of each activity are needed"
    elif activity in POSTURES and moving > MAX_WRONG_SHARE:
        reason = f"{activity}: the phone was moving in {moving:.0%} of the take; hold it still in this posture"
    elif activity not in POSTURES and 1 - moving > MAX_WRONG_SHARE:
        reason = f"{activity}: the phone was still in {1 - moving:.0%} of the take; walk while recording"
    return TakeCheck(activity, seconds, moving, not reason, reason)


#: Two sample times closer than this (s) are the same time (a grid time computed
#: two ways); far below the 20 ms between samples.
SAME_TIME_S = 1e-6


@dataclass
class Take:
    """One activity's samples, as continuous pieces ``(t0, (n, 6))``: those
    later than ``after`` and not later than ``until`` (None: no bound)."""

    activity: str
    pieces: list[tuple[float, np.ndarray]] = field(default_factory=list)
    truncated: bool = False
    after: float | None = None
    until: float | None = None
    next_t: float | None = None  # where the last piece goes on

    @property
    def samples(self) -> int:
        return sum(len(p) for _, p in self.pieces)

    def all_samples(self) -> np.ndarray:
        return np.concatenate([p for _, p in self.pieces]) if self.pieces else np.empty((0, 6))

    def add(self, t0: float, samples: np.ndarray, max_samples: int) -> None:
        """Keep the samples (50 Hz from ``t0``) that fall in this take's times,
        up to ``max_samples`` in all."""
        t = t0 + np.arange(len(samples)) / RATE_HZ
        inside = np.ones(len(samples), dtype=bool)
        if self.after is not None:
            inside &= t > self.after + SAME_TIME_S
        if self.until is not None:
            inside &= t <= self.until + SAME_TIME_S
        if not inside.any():
            return
        first = int(np.argmax(inside))
        samples = samples[first : first + int(inside.sum())]  # the times in a take's bounds are consecutive
        t0 = float(t[first])
        room = max_samples - self.samples
        if room <= 0:
            self.truncated = True
            return
        if len(samples) > room:
            samples, self.truncated = samples[:room], True
        samples = np.array(samples, np.float32)  # a copy (the caller's batch may be reused), as on the bus
        # A gap (the resampler started a new segment) starts a new piece: a CSV
        # may not pause for more than 0.5 s, and interpolating across would invent data.
        if self.pieces and self.next_t is not None and abs(t0 - self.next_t) < 0.5 / RATE_HZ:
            start, previous = self.pieces[-1]
            self.pieces[-1] = (start, np.concatenate([previous, samples]))
        else:
            self.pieces.append((t0, samples))
        self.next_t = t0 + len(samples) / RATE_HZ

    def drop_short_pieces(self) -> None:
        """Forget pieces too short to give a window."""
        if self.pieces and len(self.pieces[-1][1]) < WINDOW:
            self.next_t = None  # the piece it pointed to goes
        self.pieces = [(t, p) for t, p in self.pieces if len(p) >= WINDOW]


class CalibrationSession:
    """One device's calibration: takes in, checks and CSV files out.

    ``start(activity, after)`` opens a take (a retry replaces that activity's
    earlier take) of the samples later than ``after``, ``add(t0, samples)``
    hands it the device's 50 Hz samples, ``stop(until)`` closes it at
    ``until`` and returns its :class:`TakeCheck`; samples up to ``until`` that
    come after the ``stop`` still join it. ``files()`` renders every kept take.
    ``after`` and ``until`` are times on the samples' clock: the newest
    reading the device had sent when the person pressed start and stop (None:
    from the first sample given, up to the last one before ``stop``).

    >>> s = CalibrationSession("phone:web-1")
    >>> s.start("sit", after=10.0)
    'SITTING'
    >>> s.add(9.9, np.zeros((10, 6)))            # 9.90 ... 10.08 s: the first six were before start
    >>> s.current.pieces[0][0], s.current.samples
    (10.02, 4)
    """

    def __init__(self, device: str, limits: CalibrationLimits = DEFAULT_LIMITS):
        self.device = device
        self.limits = limits
        self.takes: dict[str, Take] = {}
        self.current: Take | None = None
        self._ending: Take | None = None  # the take last stopped, while samples up to its stop may still come

    def start(self, activity: object, after: float | None = None) -> str:
        name = parse_activity(activity)
        self.current = Take(name, after=after)
        return name

    def add(self, t0: float, samples: np.ndarray) -> None:
        """Samples of the device starting at ``t0`` (50 Hz); kept by the take
        whose times they fall in, ignored between takes."""
        if len(samples) == 0:
            return
        limit = int(self.limits.max_take_seconds * RATE_HZ)
        ending = self._ending
        if ending is not None:
            ending.add(t0, samples, limit)
            assert ending.until is not None  # set by stop()
            if t0 + (len(samples) - 1) / RATE_HZ > ending.until + SAME_TIME_S:  # past its stop: it is complete
                self._ending = None
        if self.current is not None:
            self.current.add(t0, samples, limit)

    def new_clock(self) -> None:
        """The samples' clock changed (the device reconnected, its clock
        jumped): times from before no longer compare, and every sample from now
        on came after the open take's start and after the last take's stop."""
        if self.current is not None:
            self.current.after = None
        self._ending = None

    def stop(self, until: float | None = None) -> TakeCheck:
        take = self.current
        if take is None:
            raise CalibrationError("calibration", "stop without a start: no activity is being recorded")
        self.current = None
        take.drop_short_pieces()
        check = check_take(take.activity, take.samples / RATE_HZ, motion_share(take.all_samples()))
        check.truncated = take.truncated
        self.takes[take.activity] = take
        if until is not None:
            take.until = until
            self._ending = take
        return check

    def discard(self, activity: object) -> None:
        """Forget an activity's take (the person skipped it after all)."""
        self.takes.pop(parse_activity(activity), None)

    def files(self) -> dict[str, str]:
        """``{file name: CSV text}`` of every kept take, in ACTIVITIES order.

        Raises :class:`CalibrationError` (``too_large``) when they exceed
        ``limits.max_bytes`` together, or (``calibration``) when there is no take.
        """
        out: dict[str, str] = {}
        for activity in ACTIVITIES:
            take = self.takes.get(activity)
            if take is not None:
                take.drop_short_pieces()  # a piece begun by samples that came after its stop
                for i, (_, piece) in enumerate(take.pieces, 1):
                    out[f"{activity.lower()}-{i}.csv"] = take_csv(piece, activity)
        if not out:
            raise CalibrationError("calibration", "nothing recorded: record at least one activity for 20 s first")
        size = sum(len(text) for text in out.values())
        if size > self.limits.max_bytes:
            raise CalibrationError("too_large", f"calibration files of {size} bytes, at most {self.limits.max_bytes}")
        return out


def take_csv(samples: np.ndarray, activity: str) -> str:
    """One continuous piece as CSV text (docs/recordings.md): time from 0 s
    at 50 Hz, acc in g, gyro in rad/s, the activity as label.

    >>> print(take_csv(np.array([[0.0, 1.0, 0.0, 0.0, 0.0, 0.5]]), "SITTING"), end="")
    time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label
    0.00,0,1,0,0,0,0.5,SITTING
    """
    samples = np.asarray(samples, np.float64)
    if not np.isfinite(samples).all():  # the feed only publishes finite samples; keep the file loadable regardless
        samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
    buf = io.StringIO()
    buf.write(CSV_HEADER)
    t = np.arange(len(samples)) / RATE_HZ
    for ti, row in zip(t, samples):
        buf.write(f"{ti:.2f}," + ",".join(f"{v:.6g}" for v in row) + f",{activity}\n")
    return buf.getvalue()


# --------------------------------------------------------- stairs on a barometer

#: A labelled stairs take whose barometer measured less than this vertical
#: speed (m/s) the labelled way is refused: people climb 0.15-0.4 m/s.
MIN_STAIRS_SPEED = 0.08


def check_stairs_by_barometer(recording: Any) -> tuple[Any, list[str]]:
    """A calibration recording's stairs labels checked against its own
    barometer (its ``pressure_hpa`` column): a labelled upstairs (downstairs)
    stretch whose median vertical speed is not at least
    :data:`MIN_STAIRS_SPEED` up (down) is refused (its labels become -1, so
    no stairs are learned from it) and said why; one without pressure is
    kept as it is. ``recording``: a :class:`~harstream.stream.data.recordings.Recording`
    (any dataclass with 50 Hz ``labels`` and ``pressure`` rows). Returns it
    (relabelled where refused) and one line per stairs activity.

    >>> from harstream.stream.core.barometer import pressure_hpa
    >>> from harstream.stream.data.recordings import Recording
    >>> labels = np.r_[np.full(1500, 1), np.full(1500, 2)].astype(np.int16)     # 30 s walk, 30 s "upstairs"
    >>> t = np.arange(0, 60, 0.5)
    >>> flat = Recording("take", 0, np.zeros((3000, 6)), labels, pressure=np.column_stack([t, pressure_hpa(0 * t)]))
    >>> checked, said = check_stairs_by_barometer(flat)
    >>> said, int((checked.labels == 2).sum())
    (['refused WALKING_UPSTAIRS: its barometer measured +0.00 m/s, not a climb (at least 0.08 m/s up)'], 0)
    """
    labels = np.asarray(recording.labels)
    pressure = recording.pressure
    if pressure is None or not len(pressure):
        return recording, []
    estimator = AltitudeRate()
    estimates = estimator.push(pressure[:, 0], pressure[:, 1])
    times = np.array([e.t for e in estimates])
    speeds = np.array([e.speed for e in estimates])
    said = []
    refused = np.zeros(len(labels), dtype=bool)
    for label, name, sign in ((2, "WALKING_UPSTAIRS", 1.0), (3, "WALKING_DOWNSTAIRS", -1.0)):
        held = labels == label
        if not held.any():
            continue
        # estimates whose whole span lies in the labelled stretch
        inside = held[np.clip((times * RATE_HZ).astype(int), 0, len(labels) - 1)]
        inside &= held[np.clip(((times - estimator.span) * RATE_HZ).astype(int), 0, len(labels) - 1)]
        if not inside.any():
            said.append(f"{name}: kept; its barometer has no reading spanning {estimator.span:g} s of it")
            continue
        speed = float(np.median(speeds[inside]))
        if sign * speed >= MIN_STAIRS_SPEED:
            said.append(f"{name}: its barometer measured {speed:+.2f} m/s")
        else:
            way = "a climb" if sign > 0 else "a descent"
            direction = "up" if sign > 0 else "down"
            said.append(
                f"refused {name}: its barometer measured {speed:+.2f} m/s, not {way} "
                f"(at least {MIN_STAIRS_SPEED:g} m/s {direction})"
            )
            refused |= held
    if not refused.any():
        return recording, said
    return dataclasses.replace(recording, labels=np.where(refused, -1, labels).astype(labels.dtype)), said
