"""The wire protocol on the ZeroMQ bus (version 1; see docs/protocol.md).

Pure encode/decode functions, no sockets. Every message is multipart with a
topic frame first; topics are ``/``-delimited so ZeroMQ's prefix matching
never confuses ``dev1`` with ``dev10``:

- ``s/<shard>/<device>/`` samples: [topic, JSON header, float32 LE (n, 6)];
  the header may carry the device's barometer, ``"pressure": [[t_s, hPa], ...]``
- ``p/<device>/``         a prediction: [topic, JSON]
- ``g/<device>/``         a decimated signal feed for display: [topic, JSON]
- ``h/<device>/``         the device's history: final and provisional pieces of time [topic, JSON]
- ``stats/<worker>/``     worker statistics, once a second: [topic, JSON]

A malformed message raises :class:`ProtocolError` with a short ``reason``
(counted by receivers) and a human-readable detail. Never pickle.

>>> batch = SampleBatch("phone-1", seq=0, t0=0.0, samples=np.zeros((2, 6), np.float32))
>>> frames = encode_samples(batch)
>>> frames[0]
b's/16/phone-1/'
>>> decode_samples(frames).samples.shape
(2, 6)
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from harstream.stream.core.barometer import PRESSURE_REASONS, screen_pressure
from harstream.stream.core.errors import InputError
from harstream.stream.core.placement import PLACEMENTS
from harstream.stream.core.rate import RATE_HZ

VERSION = 1
N_SHARDS = 64
UNITS = {"acc": "g", "gyro": "rad/s"}
# Anchored with \Z: ``$`` would also match before a trailing newline.
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}\Z")
SESSION_ID = DEVICE_ID  # same alphabet and length
#: Devices the phone gateway publishes are named ``phone:<id>``; no other producer may use it.
PHONE_NAMESPACE = "phone:"
MAX_SAMPLES_PER_MESSAGE = 5000
# Barometer readings one samples message may carry (25 Hz for 40 s; the header's bound holds them).
MAX_PRESSURE_ROWS = 1000
MAX_HEADER_BYTES = 64 * 1024 + 16
# The largest frame a receiver takes (ZMQ_MAXMSGSIZE; a peer sending more is
# disconnected by ZeroMQ before the frame is held): the header or the samples
# of the largest valid message, with room to spare.
MAX_FRAME_BYTES = 256 * 1024
# Physical range of the samples: beyond any human motion (a hard fall peaks
# near 16 g, a wrist near 40 rad/s) and well inside what arithmetic survives.
MAX_ACC_G = 100.0
MAX_GYRO_RAD_S = 100.0
#: m/s² per g (phones and their apps report m/s²; the bus carries g).
STANDARD_GRAVITY = 9.80665
# t0 in seconds: a Unix time before 2286 or a stream time since 0.
MAX_T0 = 1e10
MAX_SEQ = 2**53  # exact in a float, so times computed from seq stay exact
_FAST_LIMIT = np.float32(min(MAX_ACC_G, MAX_GYRO_RAD_S))
_abs, _max_reduce = np.abs, np.maximum.reduce

SAMPLES_PREFIX = b"s/"
PREDICTION_PREFIX = b"p/"
SIGNAL_PREFIX = b"g/"
HISTORY_PREFIX = b"h/"
STATS_PREFIX = b"stats/"

# Every reason a receiver may count; docs/protocol.md lists the same.
REASONS = (
    "frame_count",  # wrong number of frames
    "topic",  # topic frame not of the expected shape, or not matching the header
    "header",  # header not JSON, not an object, too large, or missing/mistyped fields
    "version",  # unknown protocol version
    "device",  # device id empty, too long or with characters outside [A-Za-z0-9_.:@+-]
    "byte_length",  # samples frame not n*6*4 bytes, or n outside 1..5000
    "non_finite",  # NaN or inf in samples
    "range",  # a sample outside the physical range (|acc| > 100 g, |gyro| > 100 rad/s)
    "time",  # t0 outside 0..1e10 s
    "labels",  # labels present but not n integers
    "session",  # session id not 1-64 characters of [A-Za-z0-9_.:@+-]
    "pressure",  # header pressure not a list of at most 1000 [t_s, hPa] number pairs, or a time outside 0..1e10 s
)


class ProtocolError(InputError):
    """A message that does not follow the protocol (``reason`` in :data:`REASONS`)."""

    REASONS = REASONS


def check_device_id(device: Any) -> str:
    """``device`` if it is a valid device id, else :class:`ProtocolError`."""
    if not isinstance(device, str) or not DEVICE_ID.fullmatch(device):
        raise ProtocolError("device", f"device id {device!r} must be 1-64 characters of A-Z a-z 0-9 _ . : @ + -")
    return device


def check_session_id(session: Any) -> str:
    """``session`` if it is a valid session id, else :class:`ProtocolError`."""
    if not isinstance(session, str) or not SESSION_ID.fullmatch(session):
        raise ProtocolError(
            "session", f"session id {str(session)[:80]!r} must be 1-64 characters of A-Z a-z 0-9 _ . : @ + -"
        )
    return session


def new_session_id() -> str:
    """A fresh random session id (64 bits, hex)."""
    import secrets

    return secrets.token_hex(8)


def shard_of(device: str, n_shards: int = N_SHARDS) -> int:
    """Stable shard of a device id (crc32, the same in every process and run)."""
    return zlib.crc32(device.encode()) % n_shards


def samples_topic(device: str) -> bytes:
    return b"s/%02d/%s/" % (shard_of(device), device.encode())


def shard_prefixes(index: int, count: int) -> list[bytes]:
    """Topic prefixes a worker subscribes to for shard ``index`` of ``count``.

    >>> len(shard_prefixes(0, 2)), shard_prefixes(1, 2)[0]
    (32, b's/01/')
    """
    if not 0 <= index < count <= N_SHARDS:
        raise ValueError(f"shard {index}/{count}: need 0 <= k < N <= {N_SHARDS}")
    return [b"s/%02d/" % s for s in range(N_SHARDS) if s % count == index]


# ------------------------------------------------------------------- samples


@dataclass
class SampleBatch:
    """Consecutive samples of one device.

    ``seq`` is the index of the first sample in the device's stream, so a
    receiver can tell a gap (seq jumps ahead) from a duplicate (seq behind).
    ``t0`` is the time of the first sample in seconds (Unix epoch for live
    data). ``labels`` are optional ground-truth HAPT labels, one per sample.
    ``session`` names this run of the producer's stream of the device (a
    random id it picks when it starts): ``seq`` counts within a session, and
    a worker lets a new session take a device over only once the old one has
    gone quiet (docs/protocol.md, "Device identity"). ``""``: none sent.
    ``pressure``: the device's barometer readings that came with these
    samples, ``(m, 2)`` rows of (time in s on ``t0``'s clock, hPa), or None
    (no barometer: nothing waits for one). Decoding keeps only readings that
    can be right and counts the others by reason in ``pressure_refused``
    (:data:`~harstream.stream.core.barometer.PRESSURE_REASONS`).
    """

    device: str
    seq: int
    t0: float
    samples: np.ndarray
    rate: float = RATE_HZ
    labels: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    session: str = ""
    pressure: np.ndarray | None = None
    pressure_refused: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)


def encode_samples(batch: SampleBatch) -> list[bytes]:
    """Frames of a samples message."""
    check_device_id(batch.device)
    samples = np.ascontiguousarray(batch.samples, dtype="<f4")
    if samples.ndim != 2 or samples.shape[1] != 6:
        raise ValueError(f"samples must be (n, 6), got {samples.shape}")
    if not (math.isfinite(batch.t0) and math.isfinite(batch.rate)):
        raise ValueError(f"t0 {batch.t0} and rate {batch.rate} must be finite")
    header: dict[str, Any] = {
        "v": VERSION,
        "device": batch.device,
        "seq": int(batch.seq),
        "t0": float(batch.t0),
        "rate": float(batch.rate),
        "n": int(len(samples)),
        "units": UNITS,
    }
    if batch.labels is not None:
        header["labels"] = np.asarray(batch.labels, dtype=np.int64).tolist()
    if batch.meta:
        header["meta"] = batch.meta
    if batch.session:
        header["session"] = check_session_id(batch.session)
    if batch.pressure is not None and len(batch.pressure):
        rows = np.asarray(batch.pressure, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != 2 or len(rows) > MAX_PRESSURE_ROWS:
            raise ValueError(f"pressure must be (m <= {MAX_PRESSURE_ROWS}, 2), got {rows.shape}")
        header["pressure"] = rows.tolist()
    return [samples_topic(batch.device), _dumps(header), samples.tobytes()]


def decode_samples(frames: Sequence[bytes]) -> SampleBatch:
    """Parse and validate a samples message; :class:`ProtocolError` if bad."""
    if len(frames) != 3:
        raise ProtocolError("frame_count", f"samples message has {len(frames)} frames, expected 3")
    topic, raw_header, payload = frames
    header = _loads_header(raw_header)
    _check_version(header)
    device = check_device_id(header.get("device"))
    if bytes(topic) != samples_topic(device):
        raise ProtocolError("topic", f"topic {bytes(topic)[:80]!r} does not match device {device!r}")
    seq = _field(header, "seq", int)
    if not 0 <= seq <= MAX_SEQ:
        raise ProtocolError("header", f"seq {seq} outside 0..2**53")
    session = check_session_id(header["session"]) if "session" in header else ""
    t0 = _field(header, "t0", (int, float))
    if not (isinstance(t0, float) and math.isfinite(t0) or isinstance(t0, int)) or not 0 <= t0 < MAX_T0:
        raise ProtocolError("time", f"t0 {str(t0)[:40]} outside 0..{MAX_T0:g} s")
    t0 = float(t0)
    rate = _field(header, "rate", (int, float))
    if rate != RATE_HZ:  # compared as sent: a 400-digit int has no float to be turned into
        # The filters and windows are designed for 50 Hz; producers resample.
        raise ProtocolError("header", f"rate {str(rate)[:40]} Hz; the bus carries {RATE_HZ:g} Hz samples")
    rate = float(rate)
    n = _field(header, "n", int)
    units = header.get("units", UNITS)
    if units != UNITS:
        raise ProtocolError("header", f"units {units!r}; the bus carries {UNITS}")
    if not 1 <= n <= MAX_SAMPLES_PER_MESSAGE:
        raise ProtocolError("byte_length", f"n={n} outside 1..{MAX_SAMPLES_PER_MESSAGE}")
    if len(payload) != n * 24:
        raise ProtocolError("byte_length", f"samples frame has {len(payload)} bytes, expected n*6*4 = {n * 24}")
    samples = np.frombuffer(payload, dtype="<f4").reshape(n, 6)
    # Two cheap ufunc calls for the usual case: the largest |x| within the smaller
    # of the two limits. The max of an array holding NaN is NaN, which fails the
    # test too, so anything unusual takes the checks below, which name the reason.
    if not _max_reduce(_abs(samples), axis=None) <= _FAST_LIMIT:
        if not np.isfinite(samples).all():
            raise ProtocolError("non_finite", f"{int((~np.isfinite(samples)).sum())} NaN/inf values")
        check_sample_range(samples)
    labels = None
    if "labels" in header:
        raw = header["labels"]
        if not (isinstance(raw, list) and len(raw) == n and all(type(v) is int and -32768 <= v <= 32767 for v in raw)):
            raise ProtocolError("labels", f"labels must be a list of {n} integers within int16")
        labels = np.asarray(raw, dtype=np.int16)
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise ProtocolError("header", "meta must be an object")
    batch = SampleBatch(device, seq, t0, samples, rate, labels, meta, session)
    if "pressure" in header:
        batch.pressure, batch.pressure_refused = decode_pressure(header["pressure"])
    return batch


def decode_pressure(raw: Any) -> tuple[np.ndarray, dict[str, int]]:
    """A header's ``pressure`` rows ``[[t_s, hPa], ...]``: the readings that
    can be right, ``(m, 2)``, and the others counted by reason; a list of
    another shape is :class:`ProtocolError` (``pressure``).

    >>> rows, refused = decode_pressure([[1.0, 1000.5], [2.0, 2000.0], [0.5, 1000.4]])
    >>> rows.tolist(), refused
    ([[1.0, 1000.5]], {'pressure_range': 1, 'pressure_order': 1})
    """
    if not isinstance(raw, list) or len(raw) > MAX_PRESSURE_ROWS:
        raise ProtocolError("pressure", f"pressure must be a list of at most {MAX_PRESSURE_ROWS} [t_s, hPa] rows")
    for i, row in enumerate(raw):
        if type(row) is not list or len(row) != 2 or not all(type(v) in (int, float) for v in row):
            raise ProtocolError("pressure", f"pressure[{i}] must be [t_s, hPa] numbers, got {str(row)[:60]}")
    try:
        rows = np.array(raw, dtype=np.float64).reshape(-1, 2)
    except OverflowError:
        raise ProtocolError("pressure", "pressure: a number too large for a float") from None
    times = rows[:, 0]
    if not ((times >= 0) & (times < MAX_T0) | ~np.isfinite(times)).all():
        raise ProtocolError("pressure", f"pressure times must lie within 0..{MAX_T0:g} s")
    t, hpa, refused = screen_pressure(times, rows[:, 1])
    return np.column_stack([t, hpa]), {r: refused[r] for r in PRESSURE_REASONS if refused[r]}


def check_sample_range(samples: np.ndarray) -> None:
    """:class:`ProtocolError` (``range``) unless every (finite) sample is within
    the physical range: acc (columns 0-2) ±100 g, gyro (3-5) ±100 rad/s.

    >>> check_sample_range(np.array([[0, 0, 1, 0, 0, 0]], np.float32))
    >>> check_sample_range(np.array([[1e35, 0, 1, 0, 0, 0]], np.float32))
    Traceback (most recent call last):
    ...
    harstream.stream.core.protocol.ProtocolError: range: 1 samples outside ±100 g / ±100 rad/s (first: row 0, channel 0 = 1e+35)
    """
    bad = (np.abs(samples[:, :3]) > MAX_ACC_G) | (np.abs(samples[:, 3:]) > MAX_GYRO_RAD_S)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ProtocolError(
            "range",
            f"{int(bad.any(axis=1).sum())} samples outside ±{MAX_ACC_G:g} g / ±{MAX_GYRO_RAD_S:g} rad/s "
            f"(first: row {row}, channel {col} = {float(samples[row, col]):g})",
        )


# ---------------------------------------------------------------- predictions


@dataclass
class Prediction:
    """The model's verdict on one window of one device.

    ``window`` counts windows since the device's pipeline (re)started;
    ``t_start``/``t_end`` are the times of its first and last sample.
    ``latency_ms`` runs from the window's last sample arriving at the worker
    to this prediction being sent. ``truth`` is the ground-truth activity at
    the window's end where the source knows it. ``mode`` is how the device
    is served (``waist``, ``any`` or ``personal``; ``""`` from a worker that
    predates modes) and ``model`` the model's id; ``classes`` names the
    entries of ``probs`` and ``smoothed_probs``, in order (None from an older
    worker: then they are the six ACTIVITIES). ``placement`` is where the
    device seems worn (``waist``, ``thigh`` or ``wrist``), estimated from its
    gait in ``any`` and ``personal`` mode; None while unsure, while still, or
    from a worker that does not estimate it. ``between`` marks a display-only
    update from the window ending halfway to the next one (the worker's offset
    grid): ``window`` is then the number of the window it follows, ``t_start``
    and ``t_end`` its own samples' times; it is no window of the model's grid
    and never enters the history (False from a worker that does not make them).
    """

    device: str
    window: int
    t_start: float
    t_end: float
    label: str
    probs: list[float]
    smoothed: str
    smoothed_probs: list[float]
    model: str
    latency_ms: float
    truth: str | None = None
    worker: str = ""
    mode: str = ""
    classes: list[str] | None = None
    placement: str | None = None
    between: bool = False


def encode_prediction(p: Prediction) -> list[bytes]:
    """Frames of a prediction message. Total, like every output encoder: it
    cannot raise (a non-finite number is sent as ``null``)."""
    return [b"p/%s/" % _topic_part(p.device), _dumps_total({"v": VERSION, **p.__dict__})]


def decode_prediction(frames: Sequence[bytes]) -> Prediction:
    body = _single_json(frames, PREDICTION_PREFIX)
    try:
        p = Prediction(**{k: body[k] for k in Prediction.__dataclass_fields__ if k in body})
    except TypeError as exc:
        raise ProtocolError("header", f"prediction lacks fields: {exc}") from exc
    device = check_device_id(p.device)
    for name, most in (("label", 64), ("smoothed", 64), ("model", 200), ("mode", 32), ("worker", 200)):
        _check_text(
            getattr(p, name), f"prediction of device {device}: {name}", most, empty=name not in ("label", "smoothed")
        )
    if p.truth is not None:
        _check_text(p.truth, f"prediction of device {device}: truth", 64)
    for name in ("probs", "smoothed_probs"):  # re-encoded by readers (the gateway, for each phone)
        value = getattr(p, name)
        # (null: a non-finite number, as the encoder writes it)
        if not isinstance(value, list) or len(value) > 64 or not all(v is None or _is_time(v) for v in value):
            raise ProtocolError(
                "header", f"prediction of device {device}: {name} must be a list of at most 64 numbers or nulls"
            )
    if p.classes is not None:
        if not isinstance(p.classes, list) or len(p.classes) > 64:
            raise ProtocolError("header", f"prediction of device {device}: classes must be a list of at most 64")
        for c in p.classes:
            _check_text(c, f"prediction of device {device}: a class", 64)
    if not isinstance(p.between, bool):
        raise ProtocolError(
            "header",
            f"prediction of device {str(p.device)[:64]!r}: between must be true or false, got {p.between!r}"[:300],
        )
    if p.placement is not None and p.placement not in PLACEMENTS:
        raise ProtocolError(
            "header",
            f"prediction of device {str(p.device)[:64]!r}: placement {str(p.placement)[:40]!r} "
            f"is not one of {', '.join(PLACEMENTS)}",
        )
    return p


# ------------------------------------------------------------- signal, stats


@dataclass
class Signal:
    """A decimated slice of one device's raw signal, for display only.

    ``acc`` in g and ``gyro`` in rad/s, each ``(m, 3)`` at ``rate`` Hz,
    first sample at ``t0``.
    """

    device: str
    t0: float
    rate: float
    acc: list[list[float]]
    gyro: list[list[float]]


def signal_topic(device: str) -> bytes:
    """The topic of ``device``'s signal messages; the trailing ``/`` keeps a
    subscription to ``phone-1`` from matching ``phone-10``."""
    return b"g/%s/" % _topic_part(device)


def encode_signal(s: Signal) -> list[bytes]:
    """Frames of a signal message (total: cannot raise)."""
    return [signal_topic(s.device), _dumps_total({"v": VERSION, **s.__dict__})]


def decode_signal(frames: Sequence[bytes]) -> Signal:
    body = _single_json(frames, SIGNAL_PREFIX)
    try:
        return Signal(**{k: body[k] for k in Signal.__dataclass_fields__})
    except KeyError as exc:
        raise ProtocolError("header", f"signal lacks field {exc}") from exc


def encode_stats(worker: str, stats: dict) -> list[bytes]:
    """Frames of a stats message (total: cannot raise)."""
    return [b"stats/%s/" % _topic_part(worker), _dumps_total({"v": VERSION, **stats, "worker": str(worker)})]


def decode_stats(frames: Sequence[bytes]) -> dict:
    """A stats message; the text a reader shows of it (``worker``, ``model``,
    ``runtime``) checked as a prediction's is."""
    body = _single_json(frames, STATS_PREFIX)
    for name in ("worker", "model", "runtime"):
        if name in body:
            _check_text(body[name], f"stats: {name}", 200, empty=True)
    return body


# ------------------------------------------------------------------- history

#: Bounds a receiver checks a history message against.
MAX_HISTORY_PIECES = 64
MAX_TIME = 1e10  # seconds: bus times (epoch seconds or stream seconds) stay below this


@dataclass
class HistoryUpdate:
    """A revision of one device's history (:mod:`~harstream.stream.core.history`).

    ``pieces``: ``{"start", "end", "label", "final"}`` objects in time order
    (bus time, seconds). Final pieces are new, each adjacent to the device's
    previous final piece and never overlapping one; the message's provisional
    pieces replace every provisional piece the device had before (none: the
    device is settled). ``today``: the device's minutes of the day so far from
    its final pieces (``{"day": "YYYY-MM-DD", "minutes": {...}}``, UTC), or None.
    """

    device: str
    pieces: list[dict]
    mode: str = ""
    today: dict | None = None
    worker: str = ""

    def final_pieces(self) -> list[dict]:
        return [p for p in self.pieces if p["final"]]


def history_topic(device: str) -> bytes:
    """The topic of ``device``'s history messages (``/``-terminated, as every topic)."""
    return b"h/%s/" % _topic_part(device)


def encode_history(h: HistoryUpdate) -> list[bytes]:
    """Frames of a history message (total: cannot raise)."""
    return [history_topic(h.device), _dumps_total({"v": VERSION, **h.__dict__})]


def decode_history(frames: Sequence[bytes]) -> HistoryUpdate:
    """A history message, every field checked (a piece's times finite,
    within 0..1e10 and in order, its label text, ``final`` a bool).

    >>> frames = encode_history(HistoryUpdate("d1", [{"start": 1.0, "end": 2.0, "label": "SITTING", "final": True}]))
    >>> decode_history(frames).final_pieces()
    [{'start': 1.0, 'end': 2.0, 'label': 'SITTING', 'final': True}]
    >>> decode_history(encode_history(HistoryUpdate("d1", [{"start": 2.0, "end": 1.0, "label": "A", "final": True}])))
    Traceback (most recent call last):
    ...
    harstream.stream.core.protocol.ProtocolError: header: history of d1, piece 0: start 2.0 and end 1.0 are not times in order within 0..1e+10
    """
    body = _single_json(frames, HISTORY_PREFIX)
    device = check_device_id(body.get("device"))
    pieces = body.get("pieces")
    if not isinstance(pieces, list) or len(pieces) > MAX_HISTORY_PIECES:
        raise ProtocolError("header", f"history of {device}: pieces must be a list of at most {MAX_HISTORY_PIECES}")
    out = []
    for i, p in enumerate(pieces):
        where = f"history of {device}, piece {i}"
        if not isinstance(p, dict):
            raise ProtocolError("header", f"{where}: not an object")
        start, end, label, final = p.get("start"), p.get("end"), p.get("label"), p.get("final")
        if not (_is_time(start) and _is_time(end)):
            raise ProtocolError("header", f"{where}: start and end must be numbers")
        assert isinstance(start, (int, float)) and isinstance(end, (int, float))  # for the type checker
        if not (0.0 <= start < end <= MAX_TIME):
            raise ProtocolError(
                "header", f"{where}: start {start} and end {end} are not times in order within 0..{MAX_TIME:g}"
            )
        if not isinstance(final, bool):
            raise ProtocolError("header", f"{where}: final must be a bool")
        _check_text(label, f"{where}: label", 64)
        out.append({"start": float(start), "end": float(end), "label": label, "final": final})
    today = body.get("today")
    if today is not None and not _valid_today(today):
        raise ProtocolError("header", f"history of {device}: today must be {{day, minutes: {{name: minutes}}}}")
    mode, worker = body.get("mode", ""), body.get("worker", "")
    _check_text(mode, f"history of {device}: mode", 32, empty=True)
    _check_text(worker, f"history of {device}: worker", 200, empty=True)
    return HistoryUpdate(device, out, mode, today, worker)


def _check_text(value: Any, where: str, most: int, empty: bool = False) -> str:
    r"""``value`` if it is text a reader may show as it is: at most ``most``
    printable characters (no control character, so no terminal escape or
    newline; no bidi override or zero-width character, which Python counts
    as unprintable format characters).

    >>> _check_text("WALKING_UPSTAIRS", "label", 64)
    'WALKING_UPSTAIRS'
    >>> _check_text("\x1b[2JSITTING", "label", 64)
    Traceback (most recent call last):
    ...
    harstream.stream.core.protocol.ProtocolError: header: label must be 1-64 printable characters, got '\x1b[2JSITTING'
    """
    if not isinstance(value, str) or len(value) > most or not (value or empty) or not value.isprintable():
        shown = repr(value)[:60] if isinstance(value, str) else f"a {type(value).__name__}"
        raise ProtocolError("header", f"{where} must be {0 if empty else 1}-{most} printable characters, got {shown}")
    return value


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _valid_today(today: Any) -> bool:
    if not isinstance(today, dict) or not isinstance(today.get("day"), str) or len(today["day"]) > 10:
        return False
    minutes = today.get("minutes")
    return (
        isinstance(minutes, dict)
        and len(minutes) <= 16
        and all(
            isinstance(k, str)
            and 0 < len(k) <= 32
            and k.isprintable()  # a category's name is shown
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and 0 <= v <= 1440
            for k, v in minutes.items()
        )
    )


def decode_output(frames: Sequence[bytes]) -> Prediction | Signal | HistoryUpdate | dict:
    """Decode any message of the worker's output bus by its topic."""
    topic = bytes(frames[0]) if frames else b""
    if topic.startswith(HISTORY_PREFIX):
        return decode_history(frames)
    if topic.startswith(PREDICTION_PREFIX):
        return decode_prediction(frames)
    if topic.startswith(SIGNAL_PREFIX):
        return decode_signal(frames)
    if topic.startswith(STATS_PREFIX):
        return decode_stats(frames)
    raise ProtocolError("topic", f"unknown topic {topic[:40]!r}")


# ------------------------------------------------------------------ internals


def _dumps(obj: dict) -> bytes:
    """Compact JSON of a header built here (orjson: a tenth of the stdlib's
    cost, which was an eighth of the simulator's)."""
    return orjson.dumps(obj)


def _dumps_total(obj: dict) -> bytes:
    """JSON of an output message whatever it holds: non-finite floats become
    ``null``, anything JSON lacks (numpy scalars, sets, ...) its number or text.

    orjson first (a tenth of the stdlib's cost; it writes non-finite floats as
    ``null`` itself); what it refuses (a non-text key, a huge int, deep
    nesting) takes the stdlib path below."""
    try:
        return orjson.dumps(obj, default=_jsonable, option=orjson.OPT_SERIALIZE_NUMPY)
    except (orjson.JSONEncodeError, RecursionError):
        pass
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_jsonable).encode()
    except (ValueError, TypeError, RecursionError):
        return json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False, default=_jsonable).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return _finite(value.item())
    return str(value)[:200]


def _finite(value: Any, depth: int = 0) -> Any:
    if depth > 20:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _finite(value.item(), depth + 1)
    if isinstance(value, dict):
        return {str(k): _finite(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, depth + 1) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)[:200]


def _topic_part(name: Any) -> bytes:
    return str(name).encode("utf-8", "replace")


def _loads_header(raw: bytes) -> dict:
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError("header", f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        try:
            header = orjson.loads(raw)  # a fifth of the stdlib's cost
        except orjson.JSONDecodeError:
            # What orjson refuses but JSON parsers commonly take (NaN, 5000-digit
            # numbers, lone surrogates) gets the stdlib's verdict, so that each
            # message is judged, and its rejection counted, as before.
            header = json.loads(bytes(raw))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: also a 5000-digit number
        raise ProtocolError("header", f"header is not JSON we take ({type(exc).__name__}: {str(exc)[:100]})") from exc
    if not isinstance(header, dict):
        raise ProtocolError("header", f"header is a JSON {type(header).__name__}, not an object")
    return header


def _check_version(header: dict) -> None:
    if type(header.get("v")) is not int or header["v"] != VERSION:  # true == 1 in Python, not here
        raise ProtocolError("version", f"protocol version {header.get('v')!r}, this side speaks {VERSION}")


def _field(header: dict, name: str, kind: type | tuple) -> Any:
    value = header.get(name)
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        raise ProtocolError("header", f"field {name!r} missing or not {getattr(kind, '__name__', kind)}")
    return value


def _single_json(frames: Sequence[bytes], prefix: bytes) -> dict:
    if len(frames) != 2:
        raise ProtocolError("frame_count", f"message has {len(frames)} frames, expected 2")
    if not bytes(frames[0]).startswith(prefix):
        raise ProtocolError("topic", f"topic {bytes(frames[0])[:40]!r} does not start with {prefix!r}")
    body = _loads_header(frames[1])
    _check_version(body)
    return body
