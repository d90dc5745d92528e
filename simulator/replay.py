"""Replay recorded sessions as live 50 Hz devices on the ingest bus.

:class:`ReplaySchedule` is the pure core: given how many samples of stream
time have elapsed, it says which device sends which slice of its recording.
:func:`replay` paces it against the wall clock and publishes on a ZeroMQ
socket at the edge.

Each device's chunk boundaries are offset by a different phase, so a
thousand devices do not all send in the same millisecond.

>>> import numpy as np
>>> dev = ReplayDevice("d", np.zeros((25, 6), np.float32), np.ones(25, np.int16))
>>> sched = ReplaySchedule([dev], chunk=10)
>>> [(c.seq, len(c.samples)) for c in sched.advance(21)]
[(0, 10), (10, 10)]
>>> [(c.seq, len(c.samples)) for c in sched.advance(1000)], sched.finished
([(20, 5)], True)
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from harstream.stream.core.protocol import MAX_PRESSURE_ROWS, RATE_HZ, SampleBatch, check_device_id

log = logging.getLogger(__name__)


@dataclass
class ReplayDevice:
    """One simulated device: a recording played from ``start``."""

    device: str
    samples: np.ndarray  # (n, 6) float32
    labels: np.ndarray | None  # (n,) int16 or None
    start: int = 0  # first sample of the recording this device plays
    # its barometer (real or simulator.barometer's): (m, 2) rows of (seconds since
    # the recording's first sample, hPa); None: it sends no pressure
    pressure: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_device_id(self.device)
        if len(self.samples) == 0:
            raise ValueError(f"device {self.device}: recording is empty")
        self.start %= len(self.samples)


@dataclass
class Chunk:
    """A slice one device sends: samples ``seq .. seq+len-1`` of its stream."""

    device: str
    seq: int
    samples: np.ndarray
    labels: np.ndarray | None
    pressure: np.ndarray | None = None  # (m, 2): (seconds after the chunk's first sample, hPa)

    def parts(self, max_pressure: int = MAX_PRESSURE_ROWS) -> list[Chunk]:
        """This chunk as consecutive chunks that each carry at most ``max_pressure``
        barometer readings (a bus message's most): a barometer read on every row of a
        CSV, sent with ``--chunk 2000``, does not fit one message. Readings closer
        together than that within one sample (over 50,000 Hz) keep the newest.

        >>> c = Chunk("d", 7, np.zeros((4, 6)), None, np.column_stack([np.arange(8) / 100, np.full(8, 1000.0)]))
        >>> [(p.seq, len(p.samples), p.pressure[:, 0].round(3).tolist()) for p in c.parts(3)]
        [(7, 1, [0.0, 0.01]), (8, 1, [0.0, 0.01]), (9, 1, [0.0, 0.01]), (10, 1, [0.0, 0.01])]
        """
        if self.pressure is None or len(self.pressure) <= max_pressure:
            return [self]
        n = len(self.samples)
        at = np.floor(self.pressure[:, 0] * RATE_HZ + 1e-9).astype(np.int64).clip(0, n - 1)  # the sample each falls in
        before = np.concatenate([[0], np.cumsum(np.bincount(at, minlength=n))])  # readings before sample k
        out, start = [], 0
        while start < n:
            end = max(int(np.searchsorted(before, before[start] + max_pressure, side="right")) - 1, start + 1)
            rows = self.pressure[(at >= start) & (at < end)][-max_pressure:] - [start / RATE_HZ, 0.0]
            labels = None if self.labels is None else self.labels[start:end]
            out.append(Chunk(self.device, self.seq + start, self.samples[start:end], labels, rows))
            start = end
        return out

    def batch(self, t0: float, rate: float = RATE_HZ, session: str = "", meta: dict | None = None) -> SampleBatch:
        pressure = None if self.pressure is None else self.pressure + [t0, 0.0]
        return SampleBatch(
            self.device,
            self.seq,
            t0,
            self.samples,
            rate,
            self.labels,
            meta=meta or {},
            session=session,
            pressure=pressure,
        )


@dataclass
class _Cursor:
    dev: ReplayDevice
    phase: int  # chunk ends are the sample counts congruent to phase mod chunk
    total: int | None  # stream length without --loop
    sent: int = 0  # samples of the stream sent so far (= next seq)


class ReplaySchedule:
    """Which device sends which slice, as stream time advances.

    ``advance(available)`` returns every chunk whose samples all lie below
    ``available`` (samples of stream time elapsed) and that was not sent yet.
    Device ``i`` sends its first chunk after ``i % chunk`` samples (``chunk``
    for phase 0), then every ``chunk`` samples. Without ``loop`` a device stops at the end of its
    recording; with it the recording repeats and ``seq`` keeps counting.
    """

    def __init__(self, devices: Sequence[ReplayDevice], chunk: int = 10, loop: bool = False):
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1 sample, got {chunk}")
        names = [d.device for d in devices]
        if len(set(names)) != len(names):
            raise ValueError("device ids must be unique")
        self.chunk = chunk
        self.loop = loop
        # Devices grouped by phase: group p sends when available % chunk == p.
        self._groups: list[list[_Cursor]] = [[] for _ in range(chunk)]
        for i, dev in enumerate(devices):
            total = None if loop else len(dev.samples) - dev.start
            self._groups[i % chunk].append(_Cursor(dev, i % chunk, total))
        self._available = 0
        self.active = len(devices)

    @property
    def finished(self) -> bool:
        return self.active == 0

    def next_boundary(self) -> int:
        """The smallest ``available`` at which some chunk becomes due."""
        return self._available + 1

    def advance(self, available: int) -> list[Chunk]:
        """Chunks that became due since the last call."""
        out: list[Chunk] = []
        if available <= self._available:
            return out
        first, self._available = self._available + 1, available
        phases: Iterable[int]
        if available - first >= self.chunk:  # a long step: every group is due
            phases = range(self.chunk)
        else:
            phases = sorted({a % self.chunk for a in range(first, available + 1)})
        for phase in phases:
            group = self._groups[phase]
            for cursor in group:
                out.extend(self._due(cursor, available))
            if not self.loop:
                kept = [c for c in group if c.total is None or c.sent < c.total]  # total is set without loop
                self.active -= len(group) - len(kept)
                self._groups[phase] = kept
        return out

    def _due(self, cursor: _Cursor, available: int) -> Iterable[Chunk]:
        while True:
            # Next chunk end: the smallest count above `sent` in the device's phase.
            end = cursor.sent + (cursor.phase - cursor.sent - 1) % self.chunk + 1
            if cursor.total is not None:
                end = min(end, cursor.total)
            if end > available or end <= cursor.sent:
                return
            yield self._slice(cursor, end)

    def _slice(self, cursor: _Cursor, end: int) -> Chunk:
        dev, seq = cursor.dev, cursor.sent
        n = len(dev.samples)
        idx = (dev.start + np.arange(seq, end)) % n
        if idx[0] < idx[-1] and idx[-1] - idx[0] == len(idx) - 1:  # contiguous: a view
            lo = int(idx[0])
            samples, labels = (
                dev.samples[lo : lo + len(idx)],
                None if dev.labels is None else dev.labels[lo : lo + len(idx)],
            )
        else:
            samples, labels = dev.samples[idx], None if dev.labels is None else dev.labels[idx]
        cursor.sent = end
        return Chunk(dev.device, seq, samples, labels, _pressure_of(dev, idx))


def _pressure_of(dev: ReplayDevice, idx: np.ndarray) -> np.ndarray | None:
    """The device's barometer readings while samples ``idx`` of its recording
    play, timed from the first of them (a loop's wrap joins two stretches)."""
    if dev.pressure is None:
        return None
    parts = []
    for run in np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1):
        lo, hi = run[0] / RATE_HZ, (run[-1] + 1) / RATE_HZ
        rows = dev.pressure[(dev.pressure[:, 0] >= lo) & (dev.pressure[:, 0] < hi)]
        after = float(np.flatnonzero(idx == run[0])[0]) / RATE_HZ  # where this stretch starts in the chunk
        parts.append(rows - [lo - after, 0.0])
    return np.concatenate(parts)


_NOT_IN_ID = re.compile(r"[^A-Za-z0-9_.:@+-]+")
#: A recording's part of a device id; the rest of the 64 characters is left for a copy's ``.<k>``.
MAX_NAME_ID = 56


def device_ids(names: Sequence[str]) -> list[str]:
    """A bus device id for each recording name: what an id cannot hold (spaces,
    brackets, accents) becomes ``_``, long names are cut, and names that then
    coincide get ``-2``, ``-3``, ...

    >>> device_ids(["exp01_user01", "my walk (1)", "my walk [1]", ""])
    ['exp01_user01', 'my_walk_1_', 'my_walk_1_-2', 'recording']
    """
    out: list[str] = []
    taken: set[str] = set()
    for name in names:
        base = _NOT_IN_ID.sub("_", name)[:MAX_NAME_ID] or "recording"
        device, k = base, 1
        while device in taken:
            k += 1
            device = f"{base[: MAX_NAME_ID - len(str(k)) - 1]}-{k}"
        taken.add(device)
        out.append(device)
    return out


def devices_for(recordings: Sequence, count: int | None = None, spread: int = 7919) -> list[ReplayDevice]:
    """Devices replaying ``recordings`` (objects with name, samples, labels).

    Each is named after its recording (:func:`device_ids`). With ``count``
    larger than the number of recordings, they are cycled; the
    ``k``-th copy of a recording is called ``<name>.<k>`` and starts ``k *
    spread`` samples in (wrapping), so copies do not move in lockstep.
    """
    if not recordings:
        raise ValueError("no recordings to replay")
    count = len(recordings) if count is None else count
    ids = device_ids([rec.name for rec in recordings])
    out = []
    for i in range(count):
        rec = recordings[i % len(recordings)]
        copy = i // len(recordings)
        name = ids[i % len(recordings)] if copy == 0 else f"{ids[i % len(recordings)]}.{copy}"
        samples = np.asarray(rec.samples, dtype=np.float32)
        pressure = getattr(rec, "pressure", None)
        out.append(
            ReplayDevice(name, samples, np.asarray(rec.labels, np.int16), start=copy * spread, pressure=pressure)
        )
    return out


@dataclass
class ReplayStats:
    messages: int = 0
    samples: int = 0
    drops: int = 0
    replayed: int = 0  # messages sent again for a new subscriber (tail replay)
    elapsed: float = 0.0
    devices: int = 0
    extra: dict = field(default_factory=dict)

    def line(self) -> str:
        rate = self.samples / self.elapsed if self.elapsed else 0.0
        return (
            f"simulate: devices={self.devices} messages={self.messages} samples={self.samples} "
            f"({rate:.0f}/s) drops={self.drops} replayed={self.replayed} elapsed={self.elapsed:.1f}s"
        )


def replay(
    schedule: ReplaySchedule,
    publish: str | None = None,
    speed: float = 1.0,
    rate: float = RATE_HZ,
    sndhwm: int = 100_000,
    stop=None,
    wait_subscriptions: int = 0,
    wait_timeout: float = 10.0,
    duration: float | None = None,
    context=None,
    print_every: float = 5.0,
    printer: Callable[[str], None] | None = print,
    keys: str | None = None,
    tail_replay: bool = True,
    meta: dict | None = None,
    stream_clock: bool = False,
) -> ReplayStats:
    """Publish ``schedule`` on the ingest bus, paced at ``speed`` times real time.

    ``speed=0`` sends as fast as the bus takes it: a full queue is waited on
    (up to a second) before the message is dropped. Otherwise a send never
    blocks: a full queue drops the message and counts it. With
    ``wait_subscriptions`` the replay starts only after that many
    subscriptions reached the socket (or ``wait_timeout`` passed). Every
    message carries the run's random session id. ``keys``: a CURVE key folder
    (needed for an address off loopback).

    ``tail_replay``: keep each device's last window of messages
    (:class:`~harstream.stream.bus.tail_replay.TailCache`) and, when a subscription
    arrives (a worker starting or restarting, or a subscriber reconnecting),
    send them again, marked as replayed, before anything else reaches that
    subscriber: a restarted worker's first window is ready at once instead of
    2.56 s of fresh samples later. Subscriptions are applied by hand
    (``XPUB_MANUAL``) so that the replay is queued to the new subscriber
    before the next live message, and ``IMMEDIATE`` keeps nothing queued for
    a peer that went away (the replay replaces that handover).

    ``meta``: put in every message's header (e.g. ``{"placement": "any"}``).
    ``stream_clock``: time every message by its place in the stream
    (``t0`` = start + seq / rate) whatever the speed (otherwise the time it
    is sent at ``speed=0``, stream time divided by ``speed`` else): a
    barometer's readings then keep their spacing against the samples.
    """
    import threading

    import zmq

    from harstream.stream.bus.addresses import ingest_address
    from harstream.stream.bus.sockets import SUBSCRIPTION_BYTES, BusSockets
    from harstream.stream.core.protocol import encode_samples, new_session_id

    if speed < 0 or not math.isfinite(speed):
        raise ValueError(f"speed must be >= 0, got {speed}")
    stop = stop or threading.Event()
    ctx = context or zmq.Context.instance()
    # XPUB rather than PUB: with XPUB_NODROP a full queue fails the send with
    # EAGAIN (counted) instead of dropping silently, and subscriptions can be
    # seen, which lets a test wait for its worker.
    options = {zmq.XPUB_NODROP: 1}
    tail = None
    if tail_replay:
        from harstream.stream.bus.tail_replay import TailCache

        tail = TailCache()
        options.update({zmq.XPUB_MANUAL: 1, zmq.IMMEDIATE: 1})
        options[zmq.RECONNECT_IVL] = 20  # find a restarted worker's bind within 20 ms
    sockets = BusSockets(keys, ctx)
    stats = ReplayStats(devices=schedule.active)
    # One session per run: a worker tells this run's seq from an earlier run's
    # (or a forger's) and lets it take a device over once the old run is quiet.
    session = new_session_id()
    try:
        # It receives subscriptions only; a binding simulator with keys lets in listed clients only.
        sock = sockets.open(
            zmq.XPUB,
            publish or ingest_address(),
            "connect",
            max_message=SUBSCRIPTION_BYTES,
            sndhwm=sndhwm,
            linger=2000,
            options=options,
        )
        address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("simulate: %d devices -> %s at speed %s", schedule.active, address, speed or "max")
        if wait_subscriptions:
            _wait_subscriptions(sock, wait_subscriptions, wait_timeout, tail is not None)
        start = time.monotonic()
        wall0 = time.time()
        next_print = start + print_every
        available = 0
        while not schedule.finished and not stop.is_set():
            now = time.monotonic()
            if duration is not None and now - start >= duration:
                break
            if speed == 0:
                available += schedule.chunk
            else:
                target = int((now - start) * rate * speed) + 1
                if target < schedule.next_boundary():
                    due = start + (schedule.next_boundary() - 1) / (rate * speed)
                    pause = min(max(due - now, 0.0005), 0.1)
                    if tail is not None and sock.poll(pause * 1000, zmq.POLLIN):
                        _answer_subscriptions(sock, tail, stats)  # a new subscriber waits for no chunk
                    elif tail is None:
                        time.sleep(pause)
                    continue
                available = target
            if tail is not None:
                _answer_subscriptions(sock, tail, stats)
            for chunk in (part for whole in schedule.advance(available) for part in whole.parts()):
                if stream_clock:
                    t0 = wall0 + chunk.seq / rate
                elif speed == 0:
                    t0 = time.time()
                else:
                    t0 = wall0 + chunk.seq / (rate * speed)
                batch = chunk.batch(t0, rate, session, meta)
                frames = encode_samples(batch)
                if _send(sock, frames, wait=speed == 0):
                    stats.messages += 1
                    stats.samples += len(chunk.samples)
                else:
                    stats.drops += 1
                if tail is not None:  # kept even if dropped: a replay may still deliver it
                    tail.push(batch, time.monotonic())
            if printer and now >= next_print:
                next_print = now + print_every
                stats.elapsed = now - start
                printer(stats.line())
        stats.elapsed = time.monotonic() - start
        return stats
    finally:
        sockets.close()


def _send(sock, frames: list[bytes], wait: bool) -> bool:
    import zmq

    try:
        sock.send_multipart(frames, zmq.NOBLOCK)
        return True
    except zmq.Again:
        if not wait:
            return False
    if sock.poll(1000, zmq.POLLOUT):
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            pass
    return False


def _answer_subscriptions(sock, tail, stats: ReplayStats) -> None:
    """Apply every (un)subscription waiting on the manual XPUB; answer each
    subscription with the tail of the devices it matches."""
    import zmq

    from harstream.stream.core.protocol import encode_samples

    while True:
        try:
            message = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        kind, prefix = message[:1], message[1:]
        if kind == b"\x00":
            sock.setsockopt(zmq.UNSUBSCRIBE, prefix)
        elif kind == b"\x01":
            # applied to the pipe it came from (the last one read), so the
            # replay below is the first thing queued for that subscriber
            sock.setsockopt(zmq.SUBSCRIBE, prefix)
            for batch in tail.replay(prefix, time.monotonic()):
                if _send(sock, encode_samples(batch), wait=False):
                    stats.replayed += 1
                else:
                    stats.drops += 1


def _wait_subscriptions(sock, count: int, timeout: float, manual: bool = False) -> None:
    import zmq

    seen = 0
    deadline = time.monotonic() + timeout
    while seen < count:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(left * 1000, zmq.POLLIN):
            log.warning("simulate: %d of %d subscriptions after %.0f s; starting anyway", seen, count, timeout)
            return
        message = sock.recv()
        if manual and message[:1] in (b"\x00", b"\x01"):  # nothing to replay yet: just apply it
            sock.setsockopt(zmq.SUBSCRIBE if message[:1] == b"\x01" else zmq.UNSUBSCRIBE, message[1:])
        if message[:1] == b"\x01":
            seen += 1
