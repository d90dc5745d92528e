"""Replay recorded sessions as live phones through the gateway's WebSocket.

What a user's phone does, from a recording: ``hello``, then every 200 ms a
``samples`` message of accelerometer (m/s², gravity included) and gyroscope
(deg/s) readings at the phone's own rate with uneven timestamps, and the
barometer's readings when the recording has them (docs/websocket-protocol.md).
What comes back (``prediction`` messages: the label the phone's page shows) is
kept, so a study can score what a phone's owner saw.

:func:`phone_messages` is the pure core: a recording and a
:class:`PhoneHabits` in, the timed messages out. :func:`replay_phones` paces
them against the wall clock, many phones at once, at the edge.

The phone's readings are the recording's 50 Hz samples interpolated
(linearly) at the phone's own reading times: a phone at 100 Hz here has no
detail above 25 Hz that the recording did not have.

>>> import numpy as np
>>> samples = np.zeros((100, 6), np.float32); samples[:, 0] = 1.0    # 2 s lying still, x up
>>> msgs = phone_messages(samples, None, PhoneHabits(rate_hz=100, jitter=0.0), t0_ms=0.0)
>>> len(msgs), msgs[0][0], len(msgs[0][1]["acc"]), msgs[0][1]["acc"][0]
(10, 0.2, 20, [0.0, 9.8066, 0.0, 0.0])
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from harstream.stream.core.protocol import RATE_HZ, STANDARD_GRAVITY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhoneHabits:
    """How a simulated phone sends: its sensor rate (Hz), the spread of its
    reading times (a share of one period, uniform ±), how often it sends
    (seconds), whether it has a gyroscope, and whether it goes quiet: for
    ``quiet_s`` at the end of every ``quiet_every_s`` it sends nothing (its
    screen off, the app reading on into a buffer) and then sends every
    message it held at once, as real phones do."""

    rate_hz: float = 100.0
    jitter: float = 0.2
    batch_s: float = 0.2
    seed: int = 0
    gyro: bool = True  # False: a phone without a gyroscope (no "gyro" list at all)
    quiet_every_s: float = 0.0  # 0: never quiet
    quiet_s: float = 0.0

    def __post_init__(self) -> None:
        if not 10.0 <= self.rate_hz <= 1000.0:
            raise ValueError(f"phone rate {self.rate_hz} Hz: expected 10-1000 Hz")
        if self.quiet_s < 0 or (self.quiet_s > 0 and not self.quiet_s < self.quiet_every_s):
            raise ValueError(f"quiet {self.quiet_s} s every {self.quiet_every_s} s: expected 0 <= quiet < every")
        if not 0.0 <= self.jitter < 0.5:
            raise ValueError(f"jitter {self.jitter}: expected a share of one period in [0, 0.5)")
        if not 0.02 <= self.batch_s <= 5.0:
            raise ValueError(f"batch {self.batch_s} s: expected 0.02-5 s")


def phone_messages(
    samples: np.ndarray, pressure: np.ndarray | None, habits: PhoneHabits, t0_ms: float
) -> list[tuple[float, dict]]:
    """``(send at, seconds after the first reading; samples message)`` for
    a 50 Hz recording (``(n, 6)``: acc in g, gyro in rad/s) read by a phone
    with ``habits`` whose first reading is at ``t0_ms`` (Unix ms). Each
    message carries the readings of the ``batch_s`` before its send time;
    ``pressure`` rows ``(seconds since the first sample, hPa)`` go with the
    message whose span they fall in."""
    samples = np.asarray(samples, np.float64)
    duration = (len(samples) - 1) / RATE_HZ
    rng = np.random.default_rng(habits.seed)
    period = 1.0 / habits.rate_hz
    times = np.arange(0.0, duration, period)
    times = np.clip(times + rng.uniform(-habits.jitter, habits.jitter, len(times)) * period, 0.0, duration)
    times = np.maximum.accumulate(times)  # a phone's clock does not run back
    at = times * RATE_HZ
    acc = np.column_stack([np.interp(at, np.arange(len(samples)), samples[:, c]) for c in range(3)])
    gyro = np.column_stack([np.interp(at, np.arange(len(samples)), samples[:, c]) for c in range(3, 6)])
    acc_rows = np.column_stack([t0_ms + times * 1000.0, acc * STANDARD_GRAVITY])
    gyro_rows = np.column_stack([t0_ms + times * 1000.0, np.rad2deg(gyro)])
    out = []
    edges = np.arange(habits.batch_s, duration + habits.batch_s, habits.batch_s)
    lo = 0.0
    for hi in edges:
        pick = (times >= lo) & (times < hi) if hi < edges[-1] else times >= lo
        if pick.any():
            message: dict = {"type": "samples", "acc": np.round(acc_rows[pick], 4).tolist()}
            if habits.gyro:
                message["gyro"] = np.round(gyro_rows[pick], 4).tolist()
            if pressure is not None:
                rows = pressure[(pressure[:, 0] >= lo) & (pressure[:, 0] < hi)]
                if len(rows):
                    message["pressure"] = [[t0_ms + t * 1000.0, round(float(h), 3)] for t, h in rows]
            out.append((float(round(hi, 6)), message))
        lo = hi
    if habits.quiet_s > 0:
        out = [(_after_quiet(at, habits), message) for at, message in out]
    return out


def _after_quiet(at: float, habits: PhoneHabits) -> float:
    """When a message due at ``at`` is sent: at the end of the quiet spell it
    falls in, else at once.

    >>> habits = PhoneHabits(quiet_every_s=20.0, quiet_s=5.0)
    >>> _after_quiet(14.0, habits), _after_quiet(16.2, habits), _after_quiet(21.0, habits)
    (14.0, 20.0, 21.0)
    """
    cycle_end = (np.floor(at / habits.quiet_every_s) + 1) * habits.quiet_every_s
    return float(round(cycle_end, 6)) if at > cycle_end - habits.quiet_s else at


@dataclass
class PhoneRun:
    """One replayed phone: its recording, the Unix time of its first reading,
    and what the gateway sent back (``prediction`` messages, in order)."""

    device: str
    recording: object
    t0: float = 0.0
    predictions: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    welcome: dict | None = None
    late_s: float = 0.0  # how far behind its schedule this phone sent at worst (a busy client)


def labelled_to_the_end(run: PhoneRun) -> bool:
    """Whether ``run`` has the label of its recording's last whole window (a
    window's own prediction, not an update between windows; its end read on
    the phone's clock, as :func:`harstream.bench.phones.score_runs` reads it).

    >>> run = PhoneRun("p", type("R", (), {"samples": np.zeros((300, 6))})(), t0=100.0)
    >>> labelled_to_the_end(run)
    False
    >>> run.predictions.append({"t_end": 100.0 + 255 / 50})  # the window of samples 128..255
    >>> labelled_to_the_end(run)
    True
    """
    from harstream.stream.core.pipeline import STEP, WINDOW

    samples = getattr(run.recording, "samples", None)
    if samples is None or len(samples) < WINDOW:
        return False
    last = (len(samples) - WINDOW) // STEP * STEP + WINDOW - 1
    return any(not p.get("between") and round((float(p["t_end"]) - run.t0) * RATE_HZ) >= last for p in run.predictions)


async def stream_phone(
    url: str, run: PhoneRun, messages: list[tuple[float, dict]], settle_s: float = 4.0, hello: dict | None = None
) -> PhoneRun:
    """Connect as ``run.device``, send ``messages`` on their schedule from
    ``run.t0``, keep every ``prediction`` and ``error`` the gateway sends,
    and close once the last whole window's label came back
    (:func:`labelled_to_the_end`), at most ``settle_s`` after the last message."""
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_queue=None, open_timeout=30) as ws:
        greeting = {"type": "hello", "device": run.device, "units": {"acc": "m/s2", "gyro": "deg/s"}, **(hello or {})}
        await ws.send(json.dumps(greeting))
        run.welcome = json.loads(await ws.recv())
        if run.welcome.get("type") != "welcome":
            raise RuntimeError(f"phone {run.device}: the gateway answered {run.welcome}")

        async def listen() -> None:
            async for raw in ws:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "prediction":
                    message["_received"] = time.time()  # for the delay a phone's owner sees
                    run.predictions.append(message)
                elif kind == "error":
                    run.errors.append(message)

        listener = asyncio.create_task(listen())
        try:
            for send_at, message in messages:
                delay = run.t0 + send_at - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                run.late_s = max(run.late_s, -delay)
                await ws.send(json.dumps(at_time(message, run.t0 * 1000.0)))
            settled = time.monotonic() + settle_s
            while time.monotonic() < settled and not labelled_to_the_end(run):
                await asyncio.sleep(0.05)
        finally:
            listener.cancel()
    return run


def at_time(message: dict, t0_ms: float) -> dict:
    """``message`` (made with ``t0_ms`` 0) with every reading time moved by ``t0_ms``.

    >>> at_time({"type": "samples", "acc": [[0.0, 1, 2, 3]], "gyro": []}, 1000.0)
    {'type': 'samples', 'acc': [[1000.0, 1, 2, 3]], 'gyro': []}
    """
    moved = dict(message)
    for key in ("acc", "gyro", "pressure"):
        if key in message:
            moved[key] = [[row[0] + t0_ms, *row[1:]] for row in message[key]]
    return moved


async def replay_phones(
    url: str,
    recordings: Sequence,
    habits: PhoneHabits = PhoneHabits(),
    prefix: str | Sequence[str] = "replay",
    start_in_s: float = 2.0,
    hello: dict | None = None,
) -> list[PhoneRun]:
    """Every recording as its own phone (``{prefix}-{i}``, or the names
    given), all starting together ``start_in_s`` after their messages are
    made, streaming in real time; returns what each phone was sent back. A
    phone's own habits differ by its seed."""
    names = [f"{prefix}-{i}" for i in range(len(recordings))] if isinstance(prefix, str) else list(prefix)
    if len(names) != len(recordings):
        raise ValueError(f"{len(names)} phone names for {len(recordings)} recordings")
    made = []
    for i, rec in enumerate(recordings):  # all made before the clock starts: no phone starts late
        own = replace(habits, seed=habits.seed * 7919 + i)
        made.append(phone_messages(rec.samples, getattr(rec, "pressure", None), own, 0.0))
    t0 = time.time() + start_in_s
    runs = [PhoneRun(name, rec, t0=t0) for name, rec in zip(names, recordings)]
    tasks = [stream_phone(url, run, messages, hello=hello) for run, messages in zip(runs, made)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for run, result in zip(runs, results):
        if isinstance(result, BaseException):
            log.error("phone %s: %s", run.device, result)
            run.errors.append({"type": "error", "reason": "connection", "detail": str(result)})
    return runs
