"""What phone sensor apps send, parsed into timestamped readings in g and rad/s.

Pure functions, no I/O. Three formats (see docs/websocket-protocol.md and
docs/phones.md):

- **harstream** JSON over WebSocket: a ``hello`` naming the device and units,
  then ``samples`` messages with ``acc`` and ``gyro`` rows ``[t_ms, x, y, z]``
  and, from a device with a barometer, ``pressure`` rows ``[t_ms, hPa]``.
- **Sensor Logger** (iOS/Android app) HTTP push / WebSocket:
  ``{messageId, sessionId, deviceId, payload: [{name, time (epoch ns), values: {x, y, z}}]}``
  in m/s² and rad/s. Total acceleration is ``totalacceleration`` (Android) or
  ``accelerometer + gravity``; iOS reports acceleration with the opposite sign
  on all three axes unless "Standardise Units & Frames" is on.
- **SensorServer** (Android app): one event per message
  ``{type, values: [x, y, z], timestamp (ns since boot), accuracy}``,
  m/s² including gravity and rad/s; ``android.sensor.pressure`` ``values: [hPa]``.

Barometer readings (Sensor Logger's ``barometer``, SensorServer's pressure,
our ``pressure`` rows) travel as :attr:`Readings.pressure_t` /
:attr:`Readings.pressure`; readings that cannot be right (outside
300-1,100 hPa, not finite, out of time order) are left out and counted by
reason in :attr:`Readings.pressure_refused`, and the motion of the message is
kept.

Every problem raises :class:`FormatError` with a ``reason`` the gateway counts
and a ``detail`` that says what and where.

>>> r = parse_sensor_server({"type": "android.sensor.accelerometer",
...                          "values": [0, 0, 9.80665], "timestamp": 2_000_000_000})
>>> r.acc_t.tolist(), r.acc.tolist()
([2.0], [[0.0, 0.0, 1.0]])
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np

from harstream.stream.core.barometer import PRESSURE_REASONS, screen_pressure
from harstream.stream.core.errors import InputError
from harstream.stream.core.protocol import STANDARD_GRAVITY

MAX_ACC_G = 50.0  # no phone accelerometer reads beyond this; larger is garbage
MAX_GYRO_RAD_S = 100.0  # ~5700 °/s; phone gyros saturate near 35 rad/s
MAX_ROWS = 5000  # readings per stream per message
MAX_SESSION_CHARS = 128  # a Sensor Logger sessionId (a UUID or a date-time is under 40)
MAX_INT_DIGITS = 20  # a JSON integer longer than this is garbage (and costly to convert)
#: A phone's own device id. The gateway publishes it as ``phone:<id>``, which
#: must fit the bus's 64 characters, hence 58.
LOCAL_DEVICE_ID = re.compile(r"[A-Za-z0-9_.:@+-]{1,58}")
#: A device's key as a phone shows it back (a welcome's key is 22 URL-safe
#: characters): printable ASCII only, so comparing and hashing it cannot fail.
KEY = re.compile(r"[!-~]{0,128}")

ACC_UNITS = {"g": 1.0, "m/s2": 1.0 / STANDARD_GRAVITY, "m/s^2": 1.0 / STANDARD_GRAVITY}
GYRO_UNITS = {"rad/s": 1.0, "deg/s": math.pi / 180.0}
FRAMES = {"android": 1.0, "w3c": 1.0, "ios": -1.0}  # sign that turns acc into Android's frame

# Every reason the gateway may count for a refused message or connection.
REASONS = (
    "json",  # not JSON, or not a JSON object
    "too_large",  # message/body over the size limit
    "fields",  # a required field missing, or an unknown message type
    "types",  # a field of the wrong type or shape
    "values",  # NaN/inf, |acc| > 50 g, |gyro| > 100 rad/s, negative time
    "units",  # unknown unit or frame name
    "device",  # device id not 1-58 of [A-Za-z0-9_.:@+-]
    "order",  # samples before hello, or a second hello
    "auth",  # missing or wrong token
    "device_in_use",  # the device id is held by another connection
    "rate_limit",  # more messages or readings per second than allowed
    "busy",  # too many connections or devices
    "idle",  # connection closed for sending nothing
    "late",  # readings older than what was already published (dropped)
    "http",  # a POST the Sensor Logger path cannot use
    "time",  # readings spanning too long, or far beyond the device's previous message
    *PRESSURE_REASONS,  # barometer readings outside 300-1,100 hPa, not finite, or out of time order (left out)
    "pressure_overflow",  # barometer readings beyond 1,000 waiting for motion to travel with (oldest left out)
    "gyro_stopped",  # warning: the gyroscope stopped mid-stream; served from the accelerometer alone (kept)
    "pressure_time",  # barometer readings landing outside 0-1e10 s on the bus clock (another clock than the motion)
)


class FormatError(InputError):
    """A message a phone sent that we cannot use (``reason`` in :data:`REASONS`)."""

    REASONS = REASONS


@dataclass
class Readings:
    """Readings from one message: times in seconds, acc in g (with gravity), gyro in rad/s."""

    acc_t: np.ndarray = field(default_factory=lambda: np.empty(0))
    acc: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))
    gyro_t: np.ndarray = field(default_factory=lambda: np.empty(0))
    gyro: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))
    device: str | None = None
    session: str | None = None
    pressure_t: np.ndarray = field(default_factory=lambda: np.empty(0))  # s, the device's clock
    pressure: np.ndarray = field(default_factory=lambda: np.empty(0))  # hPa
    pressure_refused: dict[str, int] = field(default_factory=dict)
    watch: Readings | None = None  # a paired watch's readings in the same message (Sensor Logger's wristmotion)

    def __len__(self) -> int:
        return len(self.acc_t) + len(self.gyro_t) + len(self.pressure_t)

    def take_pressure(self, t: np.ndarray, hpa: np.ndarray) -> None:
        """Keep the barometer readings that can be right; count the others by reason."""
        kept_t, kept, refused = screen_pressure(t, hpa)
        self.pressure_t, self.pressure = kept_t, kept
        for reason, n in refused.items():
            self.pressure_refused[reason] = self.pressure_refused.get(reason, 0) + n


@dataclass
class Hello:
    """The first message of a harstream connection."""

    device: str
    acc_scale: float  # multiply to get g (includes the frame's sign)
    gyro_scale: float  # multiply to get rad/s
    key: str | None = None


def load_message(raw: str | bytes) -> dict:
    """A JSON object from one message, else :class:`FormatError`."""
    try:
        msg = json.loads(raw, parse_int=_parse_int)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError("json", f"message is not JSON ({exc})") from None
    except RecursionError:
        raise FormatError("json", "message is nested too deeply") from None
    if not isinstance(msg, dict):
        raise FormatError("json", f"message is a JSON {type(msg).__name__}, expected an object")
    return msg


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise FormatError("values", f"an integer of {len(digits)} digits (at most {MAX_INT_DIGITS})")
    return int(digits)


def detect_format(msg: dict) -> str:
    """``harstream``, ``sensorlogger`` or ``sensorserver`` for a parsed message."""
    if "payload" in msg:
        return "sensorlogger"
    if "type" in msg and isinstance(msg.get("type"), str) and msg["type"].startswith("android.sensor."):
        return "sensorserver"
    if msg.get("type") in ("hello", "samples"):
        return "harstream"
    raise FormatError(
        "fields",
        "unrecognised message: expected a harstream {type: hello|samples}, "
        "a Sensor Logger {payload: [...]} or a SensorServer {type: android.sensor.*}",
    )


def check_device(device: Any, where: str = "device") -> str:
    """``device`` if it is a valid phone device id (whole string, 1-58 characters), else :class:`FormatError`.

    >>> check_device("web-1a2b")
    'web-1a2b'
    >>> try:
    ...     check_device("web-1\\n")
    ... except FormatError as exc:
    ...     print(exc.reason)
    device
    """
    if not isinstance(device, str) or not LOCAL_DEVICE_ID.fullmatch(device):
        raise FormatError("device", f"{where} {str(device)[:80]!r} must be 1-58 characters of A-Z a-z 0-9 _ . : @ + -")
    return device


# ---------------------------------------------------------------- harstream


def parse_hello(msg: dict) -> Hello:
    """``{type: hello, device, units: {acc, gyro}, frame?, key?}`` → :class:`Hello`."""
    if msg.get("type") != "hello":
        raise FormatError("order", f"first message must be a hello, got type {msg.get('type')!r}")
    device = check_device(msg.get("device"))
    units = msg.get("units", {"acc": "g", "gyro": "rad/s"})
    if not isinstance(units, dict):
        raise FormatError("types", "hello.units must be an object {acc, gyro}")
    acc = _choice(units.get("acc", "g"), ACC_UNITS, "hello.units.acc")
    gyro = _choice(units.get("gyro", "rad/s"), GYRO_UNITS, "hello.units.gyro")
    frame = _choice(msg.get("frame", "android"), FRAMES, "hello.frame")
    key = msg.get("key")
    if key is not None and not (isinstance(key, str) and KEY.fullmatch(key)):
        raise FormatError("types", "hello.key must be the key of a welcome: at most 128 printable ASCII characters")
    return Hello(device, acc * frame, gyro, key)


def _choice(value: Any, table: dict[str, float], where: str) -> float:
    """``table[value]`` for a name in ``table``; anything else (another name, a
    number, a list) is :class:`FormatError` ``units`` naming the choices."""
    if not isinstance(value, str) or value not in table:
        raise FormatError("units", f"{where} {str(value)[:40]!r}: expected one of {sorted(table)}")
    return table[value]


def parse_samples(msg: dict, hello: Hello) -> Readings:
    """``{type: samples, acc: [[t_ms, x, y, z], ...], gyro: [...], pressure?: [[t_ms, hPa], ...]}``
    → :class:`Readings`.

    >>> hello = Hello("p", 1.0, 1.0)
    >>> r = parse_samples({"type": "samples", "acc": [], "pressure": [[1000, 1001.5], [1040, 5000]]}, hello)
    >>> r.pressure_t.tolist(), r.pressure.tolist(), r.pressure_refused
    ([1.0], [1001.5], {'pressure_range': 1})
    """
    if msg.get("type") != "samples":
        raise FormatError("fields", f"message type {msg.get('type')!r}: expected samples")
    if "acc" not in msg and "gyro" not in msg and "pressure" not in msg:
        # pressure alone is a message too: its readings ride with the device's next batch
        raise FormatError("fields", "samples message has none of acc, gyro and pressure")
    out = Readings(device=hello.device)
    for name, scale in (("acc", hello.acc_scale), ("gyro", hello.gyro_scale)):
        rows = _rows(msg.get(name, []), name)
        if len(rows):
            t, v = rows[:, 0] / 1000.0, rows[:, 1:] * scale
            setattr(out, f"{name}_t", t)
            setattr(out, name, v)
    if "pressure" in msg:
        rows = _rows(msg["pressure"], "pressure", width=2)
        out.take_pressure(rows[:, 0] / 1000.0, rows[:, 1])
    check_readings(out)
    return out


# ------------------------------------------------------------- Sensor Logger

SENSOR_LOGGER_SENSORS = ("accelerometer", "gravity", "totalacceleration", "gyroscope")
BAROMETER = "barometer"  # Sensor Logger's entry: values {pressure (hPa), relativeAltitude (m)}
#: Sensor Logger's watch app (Apple Watch, Wear OS): the watch's motion, in the phone's pushes.
WRIST_MOTION = "wristmotion"
WRIST_FIELDS = tuple(
    f"{kind}{axis}" for kind in ("acceleration", "gravity", "rotationRate") for axis in "XYZ"
)  # user acceleration and gravity: g (m/s² when "Standardise Units & Frames" is on); rotation rate: rad/s
WATCH_SUFFIX = ".watch"  # the watch's device id: the phone's deviceId + this


def parse_sensor_logger(msg: dict, platform: str = "android") -> Readings:
    """One Sensor Logger batch → :class:`Readings` with total acceleration.

    ``platform="ios"`` flips the acceleration sign (Sensor Logger's iOS default
    frame); ``android`` also fits iOS with "Standardise Units & Frames" on.
    A paired watch's ``wristmotion`` entries become :attr:`Readings.watch`.
    Other sensors in the payload (location, battery, …) are ignored.

    >>> batch = {"deviceId": "a1", "sessionId": "s", "messageId": 3, "payload": [
    ...   {"name": "totalacceleration", "time": 10**18, "values": {"x": 0, "y": 9.80665, "z": 0}},
    ...   {"name": "gyroscope", "time": 10**18, "values": {"x": 0.1, "y": 0, "z": 0}}]}
    >>> r = parse_sensor_logger(batch)
    >>> r.device, r.acc.tolist(), r.gyro.tolist()
    ('a1', [[0.0, 1.0, 0.0]], [[0.1, 0.0, 0.0]])
    >>> batch["payload"].append({"name": "barometer", "time": 10**18, "values": {"pressure": 1009.9}})
    >>> parse_sensor_logger(batch).pressure.tolist()
    [1009.9]
    """
    if platform not in ("android", "ios"):
        raise FormatError("units", f"platform {platform[:40]!r}: expected android or ios")
    device = check_device(msg.get("deviceId"), "deviceId")
    session = msg.get("sessionId")
    if session is not None and not (
        isinstance(session, str) and len(session) <= MAX_SESSION_CHARS or _is_number(session)
    ):
        # it keys the session's claim and message order, held for thousands of sessions
        raise FormatError("types", f"sessionId must be a string of at most {MAX_SESSION_CHARS} characters")
    payload = msg.get("payload")
    if not isinstance(payload, list):
        raise FormatError("types", "payload must be a list of {name, time, values}")
    if len(payload) > 4 * MAX_ROWS:
        raise FormatError("too_large", f"payload has {len(payload)} entries, at most {4 * MAX_ROWS}")
    found: dict[str, list[list[float]]] = {name: [] for name in SENSOR_LOGGER_SENSORS}
    barometer: list[list[float]] = []
    wrist: list[list[float]] = []
    for i, entry in enumerate(payload):
        if not isinstance(entry, dict):
            raise FormatError("types", f"payload[{i}] is not an object")
        name = entry.get("name")
        if not isinstance(name, str) or (name not in found and name not in (BAROMETER, WRIST_MOTION)):
            continue  # another sensor (or no name at all): not read, like location or battery
        t, values = entry.get("time"), entry.get("values")
        if not _is_number(t):
            raise FormatError("types", f"payload[{i}] ({name}): time must be a number (epoch ns)")
        if name == WRIST_MOTION:
            if not isinstance(values, dict) or not all(_is_number(values.get(k)) for k in WRIST_FIELDS):
                raise FormatError(
                    "types", f"payload[{i}] (wristmotion): values must hold numbers {', '.join(WRIST_FIELDS)}"
                )
            wrist.append([float(t) / 1e9, *(float(values[k]) for k in WRIST_FIELDS)])
            continue
        if name == BAROMETER:
            if not isinstance(values, dict):
                raise FormatError("types", f"payload[{i}] (barometer): values must hold pressure, a number (hPa)")
            hpa = values.get("pressure")
            if hpa is not None and not _is_number(hpa):
                raise FormatError("types", f"payload[{i}] (barometer): pressure must be a number (hPa)")
            # null (JavaScript's JSON.stringify writes NaN so) or absent: one reading
            # that is not a number, left out and counted like a NaN
            barometer.append([float(t) / 1e9, math.nan if hpa is None else float(hpa)])
            continue
        if not isinstance(values, dict) or not all(_is_number(values.get(k)) for k in "xyz"):
            raise FormatError("types", f"payload[{i}] ({name}): values must be {{x, y, z}} numbers")
        found[name].append([float(t) / 1e9, float(values["x"]), float(values["y"]), float(values["z"])])
    rows = {name: np.array(v, dtype=np.float64).reshape(-1, 4) for name, v in found.items()}
    for name, r in rows.items():
        if len(r) > MAX_ROWS:
            raise FormatError("too_large", f"{len(r)} {name} readings, at most {MAX_ROWS} per batch")
        order = np.argsort(r[:, 0], kind="stable")
        rows[name] = r[order]
    sign = -1.0 if platform == "ios" else 1.0
    out = Readings(device=device, session=None if session is None else str(session))
    if len(rows["totalacceleration"]):
        total = rows["totalacceleration"]
        out.acc_t, out.acc = total[:, 0], total[:, 1:] * (sign / STANDARD_GRAVITY)
    elif len(rows["accelerometer"]):
        acc, grav = rows["accelerometer"], rows["gravity"]
        if not len(grav):
            raise FormatError(
                "fields",
                "batch has accelerometer (gravity removed) but no gravity or totalacceleration; "
                "enable Gravity or Total Acceleration in Sensor Logger",
            )
        # Gravity changes slowly; interpolate it onto the accelerometer's times.
        g = np.column_stack([np.interp(acc[:, 0], grav[:, 0], grav[:, k]) for k in (1, 2, 3)])
        out.acc_t, out.acc = acc[:, 0], (acc[:, 1:] + g) * (sign / STANDARD_GRAVITY)
    if len(rows["gyroscope"]):
        out.gyro_t, out.gyro = rows["gyroscope"][:, 0], rows["gyroscope"][:, 1:]
    if barometer:
        if len(barometer) > MAX_ROWS:
            raise FormatError("too_large", f"{len(barometer)} barometer readings, at most {MAX_ROWS} per batch")
        b = np.array(barometer, dtype=np.float64)
        b = b[np.argsort(b[:, 0], kind="stable")]  # batches list sensors apart; time orders them
        out.take_pressure(b[:, 0], b[:, 1])
    if wrist:
        out.watch = _watch_readings(np.array(wrist, dtype=np.float64), device, out.session)
    check_readings(out)
    return out


def _watch_readings(rows: np.ndarray, device: str, session: str | None) -> Readings:
    """Sensor Logger's ``wristmotion`` rows ``[t, acceleration xyz, gravity xyz,
    rotationRate xyz]`` → the watch's :class:`Readings` (device ``<deviceId>.watch``).

    By default the app writes them as CoreMotion does: in g, with the opposite
    sign to Android (gravity along -z face up); with "Standardise Units &
    Frames" in m/s², Android's frame. A watch carried by a person reads about
    1 g of gravity, so the size of the gravity vector says which.
    """
    if len(rows) > MAX_ROWS:
        raise FormatError("too_large", f"{len(rows)} wristmotion readings, at most {MAX_ROWS} per batch")
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    # a deviceId too long to name its watch too leaves the watch without an id (device None: not
    # published, counted by the edge), never the phone's own readings refused with it
    watch = device + WATCH_SUFFIX if LOCAL_DEVICE_ID.fullmatch(device + WATCH_SUFFIX) else None
    total, gravity = rows[:, 1:4] + rows[:, 4:7], rows[:, 4:7]
    standardised = float(np.median(np.linalg.norm(gravity, axis=1))) > 3.0  # m/s², Android's frame
    scale = 1.0 / STANDARD_GRAVITY if standardised else -1.0
    out = Readings(rows[:, 0], total * scale, rows[:, 0].copy(), rows[:, 7:10], device=watch, session=session)
    return check_readings(out)


class MessageOrder:
    """Puts one session's batches back in ``messageId`` order, waiting boundedly.

    Sensor Logger numbers its pushes 0, 1, 2, …; concurrent HTTP requests may
    arrive swapped. A batch ahead of the next expected id waits until the
    missing one arrives, or until ``max_pending`` batches wait or the oldest
    has waited ``max_wait`` seconds; then the missing one is given up on.
    :meth:`due` gives up on it by the clock alone, for a phone that sent
    nothing after (its recording stopped, or the missing batch was lost).

    A batch the gateway refused leaves a hole nothing will fill:
    :meth:`refused` tells the order so, and the batches after it go on at once.

    >>> order = MessageOrder()
    >>> order.add(0, "a", now=0.0), order.add(2, "c", now=0.1), order.add(1, "b", now=0.2)
    (['a'], [], ['b', 'c'])
    >>> order.add(4, "e", now=0.3), order.refused(3, now=0.4)
    ([], ['e'])
    >>> order.add(6, "g", now=1.0), order.due(now=2.0), order.due(now=4.1)
    ([], [], ['g'])
    """

    def __init__(self, max_pending: int = 4, max_wait: float = 3.0):
        self.max_pending, self.max_wait = max_pending, max_wait
        self.next: int | None = None
        self.pending: dict[int, tuple[float, Any]] = {}
        self.skipped = 0

    def add(self, message_id: Any, item: Any, now: float) -> list:
        """Items now ready, in order (``message_id`` not an int: ready at once)."""
        if not _is_number(message_id) or isinstance(message_id, float) or self.next is None or message_id < self.next:
            if _is_number(message_id) and not isinstance(message_id, float) and self.next is None:
                self.next = message_id + 1
            return [] if item is _REFUSED else [item]
        self.pending[message_id] = (now, item)
        return self.due(now)

    def due(self, now: float) -> list:
        """Items ready now, in order, giving up on a missing batch that the
        oldest waiting one has waited ``max_wait`` for."""
        ready: list = []
        if self.next is None:  # pending only ever holds ids at or after a known next
            return ready
        while self.pending:
            if self.next in self.pending:
                ready.append(self.pending.pop(self.next)[1])
                self.next += 1
                continue
            oldest = min(t for t, _ in self.pending.values())
            if len(self.pending) > self.max_pending or now - oldest > self.max_wait:
                # Give up on the missing batch; its readings will count as late.
                first = min(self.pending)
                self.skipped += first - self.next
                self.next = first
                continue
            break
        return [item for item in ready if item is not _REFUSED]

    def refused(self, message_id: Any, now: float) -> list:
        """Items now ready, in order, once the batch ``message_id`` was refused
        (a batch already waiting under that id is kept: it was not refused)."""
        if _is_number(message_id) and message_id in self.pending:
            return []
        return self.add(message_id, _REFUSED, now)


_REFUSED = object()  # stands in the order for a batch the gateway refused


# --------------------------------------------------------------- SensorServer

SENSOR_SERVER_TYPES = {
    "android.sensor.accelerometer": "acc",
    "android.sensor.gyroscope": "gyro",
    "android.sensor.pressure": "pressure",  # values: [hPa]
}


def parse_sensor_server(msg: dict) -> Readings:
    """One SensorServer event → :class:`Readings` (time = ns since boot, in s)."""
    sensor = msg.get("type")
    kind = SENSOR_SERVER_TYPES.get(sensor) if isinstance(sensor, str) else None
    if kind is None:
        raise FormatError(
            "fields", f"sensor type {str(msg.get('type'))[:60]!r}: expected one of {sorted(SENSOR_SERVER_TYPES)}"
        )
    values, ts = msg.get("values"), msg.get("timestamp")
    if not _is_number(ts):
        raise FormatError("types", "timestamp must be a number (ns since boot)")
    if kind == "pressure":
        if not (isinstance(values, list) and len(values) >= 1 and _is_number(values[0])):
            raise FormatError("types", "pressure values must be a list whose first entry is a number (hPa)")
        out = Readings()
        out.take_pressure(np.array([ts / 1e9]), np.array([float(values[0])]))
        return check_readings(out)
    if not (isinstance(values, list) and len(values) >= 3 and all(_is_number(v) for v in values[:3])):
        raise FormatError("types", "values must be a list of 3 numbers")
    v = np.array([values[:3]], dtype=np.float64)
    out = Readings()
    if kind == "acc":
        out.acc_t, out.acc = np.array([ts / 1e9]), v / STANDARD_GRAVITY
    else:
        out.gyro_t, out.gyro = np.array([ts / 1e9]), v
    check_readings(out)
    return out


# ------------------------------------------------------------------ phyphox

#: phyphox sensor inputs read (``/config``'s ``inputs[].source``) → our stream.
PHYPHOX_SOURCES = {"accelerometer": "acc", "gyroscope": "gyro", "pressure": "pressure"}
#: A phyphox buffer name: its experiments' names are short identifiers (accX, acc_time, gyrZ, pressure).
PHYPHOX_BUFFER = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def phyphox_buffers(config: dict) -> dict[str, tuple[str, ...]]:
    """The buffers of a phyphox experiment (its ``/config`` answer) that hold
    what we read: ``{"acc": (t, x, y, z), "gyro": (t, x, y, z), "pressure": (t, x)}``.

    An experiment whose acceleration has gravity removed (phyphox's "Acceleration
    without g", source ``linear_acceleration``) is refused with what to run instead.

    >>> phyphox_buffers({"inputs": [{"source": "accelerometer", "outputs": [
    ...     {"x": "accX"}, {"y": "accY"}, {"z": "accZ"}, {"t": "acc_time"}]}]})
    {'acc': ('acc_time', 'accX', 'accY', 'accZ')}
    """
    inputs = config.get("inputs") if isinstance(config, dict) else None
    if not isinstance(inputs, list):
        raise FormatError("types", "phyphox /config: inputs must be a list")
    found: dict[str, tuple[str, ...]] = {}
    sources = []
    for entry in inputs[:64]:
        if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
            continue
        source = entry["source"].lower()
        sources.append(source[:40])
        kind = PHYPHOX_SOURCES.get(source)
        outputs = entry.get("outputs")
        if kind is None or kind in found or not isinstance(outputs, list):
            continue
        names = {k: v for o in outputs if isinstance(o, dict) for k, v in o.items() if isinstance(v, str)}
        wanted = ("t", "x") if kind == "pressure" else ("t", "x", "y", "z")
        if all(k in names and PHYPHOX_BUFFER.fullmatch(names[k]) for k in wanted):
            found[kind] = tuple(names[k] for k in wanted)
    if "acc" not in found:
        hint = (
            'its acceleration has gravity removed; run phyphox\'s "Acceleration with g" or a simple experiment '
            "with Accelerometer and Gyroscope"
            if "linear_acceleration" in sources
            else "run an experiment with the accelerometer (a simple experiment with Accelerometer and Gyroscope)"
        )
        raise FormatError("fields", f"phyphox experiment reads {', '.join(sources) or 'no sensor'}: {hint}")
    return found


def parse_phyphox(answer: dict, buffers: dict[str, tuple[str, ...]]) -> Readings:
    """One phyphox ``/get`` answer → :class:`Readings` (experiment time in s;
    acceleration in m/s² → g, rotation in rad/s, pressure in hPa). A row with a
    value phyphox could not give (``null``) is left out, as a stream's rows beyond
    its shortest buffer (read while the phone appended).

    >>> b = {"acc": ("t", "x", "y", "z")}
    >>> r = parse_phyphox({"buffer": {"t": {"buffer": [0.01, 0.02]}, "x": {"buffer": [0, 0]},
    ...     "y": {"buffer": [9.80665, None]}, "z": {"buffer": [0, 0]}}}, b)
    >>> r.acc_t.tolist(), r.acc.tolist()
    ([0.01], [[0.0, 1.0, 0.0]])
    """
    got = answer.get("buffer") if isinstance(answer, dict) else None
    if not isinstance(got, dict):
        raise FormatError("types", "phyphox /get: buffer must be an object")
    out = Readings()
    for kind, names in buffers.items():
        columns = []
        for name in names:
            entry = got.get(name)
            values = entry.get("buffer") if isinstance(entry, dict) else None
            if values is None:
                break  # not in this answer: the experiment has no such buffer any more
            if not isinstance(values, list) or len(values) > MAX_ROWS:
                raise FormatError("too_large" if isinstance(values, list) else "types", f"phyphox buffer {name}")
            if not all(v is None or _is_number(v) for v in values):
                raise FormatError("types", f"phyphox buffer {name}: values must be numbers or null")
            columns.append([math.nan if v is None else float(v) for v in values])
        if len(columns) < len(names):
            continue
        n = min(len(c) for c in columns)
        rows = np.array([c[:n] for c in columns], dtype=np.float64).T.reshape(n, len(names))
        rows = rows[np.isfinite(rows).all(axis=1)]
        if kind == "pressure":
            out.take_pressure(rows[:, 0], rows[:, 1])
        elif kind == "acc":
            out.acc_t, out.acc = rows[:, 0], rows[:, 1:] / STANDARD_GRAVITY
        else:
            out.gyro_t, out.gyro = rows[:, 0], rows[:, 1:]
    return check_readings(out)


# ------------------------------------------------------------------ checks


def check_readings(r: Readings) -> Readings:
    """Refuse NaN/inf, negative times and physically absurd values."""
    if len(r.pressure_t) and r.pressure_t.min() < 0:
        raise FormatError("values", f"pressure: negative time {r.pressure_t.min():.3f} s")
    for name, t, v, limit, unit in (
        ("acc", r.acc_t, r.acc, MAX_ACC_G, "g"),
        ("gyro", r.gyro_t, r.gyro, MAX_GYRO_RAD_S, "rad/s"),
    ):
        if not (np.isfinite(t).all() and np.isfinite(v).all()):
            raise FormatError("values", f"{name}: NaN or infinite value")
        if len(t) and t.min() < 0:
            raise FormatError("values", f"{name}: negative time {t.min():.3f} s")
        if len(v) and np.abs(v).max() > limit:
            row = int(np.abs(v).max(axis=1).argmax())
            raise FormatError(
                "values", f"{name} reading {row}: |{np.abs(v).max():.4g}| {unit} exceeds {limit:g} {unit}"
            )
    return r


def _is_number(x: Any) -> TypeGuard[int | float]:
    # Huge JSON integers would overflow float(); they are garbage anyway.
    if isinstance(x, int) and not isinstance(x, bool):
        return abs(x) < 2**63
    return isinstance(x, float)


_NUMBER_TYPES = (int, float)  # type() is checked exactly, so bools are refused


def _rows(raw: Any, name: str, width: int = 4) -> np.ndarray:
    shape = "[t_ms, x, y, z]" if width == 4 else "[t_ms, hPa]"
    if not isinstance(raw, list):
        raise FormatError("types", f"{name} must be a list of {shape} rows")
    if len(raw) > MAX_ROWS:
        raise FormatError("too_large", f"{len(raw)} {name} rows, at most {MAX_ROWS} per message")
    # The hot loop of the gateway: exact type tests, no function call per value.
    for i, row in enumerate(raw):
        if type(row) is not list or len(row) != width or not all(type(x) in _NUMBER_TYPES for x in row):
            raise FormatError("types", f"{name}[{i}] must be {shape} numbers, got {str(row)[:60]}")
    try:
        rows = np.array(raw, dtype=np.float64).reshape(-1, width)
    except OverflowError:
        raise FormatError("values", f"{name}: a number too large for a float") from None
    if len(rows) and not (np.abs(rows[:, 0]) < 1e15).all():  # ms: beyond year 33658
        big = float(np.abs(rows[:, 0]).max())
        like, by = ("nanoseconds", "1,000,000") if big >= 1e17 else ("microseconds", "1,000")
        raise FormatError(
            "values",
            f"{name}: time {big:.4g} is beyond any clock in milliseconds (t_ms must be < 1e15); "
            f"it looks like {like}: divide by {by}",
        )
    check_spacing(rows[:, 0], name)
    return rows


#: Readings closer than this (ms) come from no sensor (20 kHz): times in seconds read as ms.
MIN_SPACING_MS = 0.05


def check_spacing(t_ms: np.ndarray, name: str) -> None:
    """Refuse reading times whose usual spacing no sensor has: ``t_ms`` in seconds.

    >>> check_spacing(np.arange(10) * 10.0, "acc")                  # 100 Hz in ms
    >>> try:
    ...     check_spacing(np.arange(10) * 0.01, "acc")              # 100 Hz in seconds
    ... except FormatError as exc:
    ...     print(exc.reason)
    time
    """
    if len(t_ms) < 5:
        return
    steps = np.diff(np.sort(t_ms))
    steps = steps[steps > 0]
    if len(steps) >= 4 and float(np.median(steps)) < MIN_SPACING_MS:
        step = float(np.median(steps))
        raise FormatError(
            "time",
            f"{name}: readings {step:.3g} ms apart ({1000 / step:,.0f} Hz); t_ms is in milliseconds and these "
            "look like seconds: multiply by 1,000",
        )
