"""The gateway's side of guided calibration: messages, files, a fit off the event loop.

A phone that said ``hello`` on ``/ws`` may send, on the same connection::

    {"type": "calibrate", "action": "start", "activity": "sit"}
    {"type": "calibrate", "action": "stop"}          -> the take's check
    {"type": "calibrate", "action": "discard", "activity": "sit"}
    {"type": "calibrate", "action": "finish"}        -> files, fit, the result
    {"type": "calibrate", "action": "cancel"}        -> forget everything
    {"type": "calibrate", "action": "delete"}        -> remove its files and model

A take keeps the 50 Hz samples the gateway publishes for that device whose
times fall between ``start`` and ``stop``: after the newest reading the
device had sent when ``start`` came, up to the newest one when ``stop`` came
(:class:`~.calibration.CalibrationSession`). Samples are published a little
after their readings arrive (the resampler holds the newest 0.1 s back), so
the message order alone would put the end of one activity into the next
take. Answers
are ``{"type": "calibration", "event": "started" | "take" | "fitting" | "done"
| "cancelled" | "deleted" | "error", ...}``.

**Who may calibrate.** Only the connection that holds the device's id, and
only with the device's ``key`` (the one its ``welcome`` gave, shown again in
the ``hello`` of a later connection): the first finished calibration records a
hash of that key beside the device's CSVs (``owner``), and from then on start,
finish and delete need the same key; a session in progress belongs to the key
that opened it. A device with a personal model but no owner record (made by
``harstream calibrate``) cannot be recalibrated from a phone at all. Refusals
are counted as ``not_owner``.

**How many.** A calibration session holds memory and a place among
``max_sessions``: one client address may hold ``per_address`` of them, and a
session untouched for ``idle`` seconds (no calibrate message, no sample of an
open take) is forgotten when room is needed (``calibration_limit``). A fit is
CPU for seconds: one address may have one fit queued or running, and at most
MAX_QUEUED_FITS wait in all (``busy``).

On ``finish`` the takes are written as CSV (docs/recordings.md) under
``<calibration dir>/<device folder>/``, replacing that device's previous
calibration, and ``fit(folder, device, out)`` — supplied by the command that
runs the gateway, since this package does not import the models — fits a
personal model from them and saves it as ``<personal dir>/<device
folder>.personal.json``, the registry the worker watches. Writing and
fitting run in one child process (:class:`FitProcess`), one device at a time,
so no phone's stream waits for TensorFlow, nor shares an interpreter with it;
the model appears in the registry by a rename, never half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import multiprocessing
import os
import pickle
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harstream.stream.core.protocol import SampleBatch
from harstream.stream.files.small_file import read_small_file
from harstream.stream.gateway.counters import Counters
from harstream.stream.personal.calibration import (
    DEFAULT_LIMITS,
    DEVICE_FILE,
    CalibrationError,
    CalibrationLimits,
    CalibrationSession,
    device_folder_name,
    parse_activity,
)
from harstream.stream.personal.model_file import SUFFIX as PERSONAL_SUFFIX

log = logging.getLogger("harstream.gateway")

#: ``fit(csv folder, bus device id, where to write the .personal.json) -> result``;
#: the result has ``calibrated`` (list), ``refused`` ({activity: reason}),
#: ``classes`` and ``fit_seconds``. Runs in a child process (:class:`FitProcess`),
#: so it must pickle.
FitFunction = Callable[[Path, str, Path], dict]
Reply = Callable[[dict], Awaitable[None]]
#: ``newest_reading(device) -> (clock, time)``: the bus time of the newest
#: reading the gateway has had from ``device`` (None before any), and a number
#: that changes whenever its times stop comparing with earlier ones (a
#: reconnection, a clock that jumped).
NewestReading = Callable[[str], tuple[int, float | None]]


def _no_reading(device: str) -> tuple[int, float | None]:
    return 0, None


MAX_SESSIONS = 32  # devices calibrating at once (each holds < 1 MB: 6 takes of 120 s, float32)
MAX_QUEUED_FITS = 4  # fits waiting for the fit process; past this ``busy``
OWNER_FILE = "owner"  # beside a device's CSVs: sha256 of the key that calibrated it


def read_owner_record(path: Path) -> bytes:
    """The owner record at ``path`` (a key's SHA-256 in hex), read on the
    event loop, so never waiting: a FIFO there froze the gateway waiting for a
    writer, so it is read by :func:`~harstream.stream.files.small_file.read_small_file`
    (no symlink followed, a regular file of at most 200 bytes); ``OSError``
    else (``FileNotFoundError`` where there is none)."""
    return read_small_file(path, 200).data.strip()


MODEL_SUFFIXES = (PERSONAL_SUFFIX, ".keras", ".json")  # a personal model in the registry (and the older format)


@dataclass(frozen=True)
class CalibrationPolicy:
    """How many calibration sessions may be held, by whom, for how long."""

    max_sessions: int = MAX_SESSIONS  # in the whole gateway
    per_address: int = 2  # sessions one client address may hold at once
    idle: float = 120.0  # seconds a session may go untouched before it can be forgotten


class CalibrationRefusal(CalibrationError):
    """A calibration refused for who asked rather than what they sent."""

    REASONS = (*CalibrationError.REASONS, "not_owner", "calibration_limit")


def key_hash(key: str) -> str:
    """What the owner record keeps of a key (the key itself is never written)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class _Desk:
    session: CalibrationSession
    touched: float
    owner: str  # key_hash of the key that opened it
    address: str  # the client address that opened it
    fitting: bool = False
    clock: int = 0  # the device's clock its takes' times are on (NewestReading)


class Calibrations:
    """Every device's calibration in this gateway."""

    def __init__(
        self,
        data_dir: str | Path,
        personal_dir: str | Path,
        fit: FitFunction | None,
        counters: Counters,
        limits: CalibrationLimits = DEFAULT_LIMITS,
        policy: CalibrationPolicy = CalibrationPolicy(),
        newest_reading: NewestReading = _no_reading,
    ):
        self.data_dir = Path(data_dir)
        self.newest_reading = newest_reading
        self.personal_dir = Path(personal_dir)
        self.fit = fit
        self.counters = counters
        self.limits = limits
        self.policy = policy
        self._desks: dict[str, _Desk] = {}
        self._fitter = FitProcess()
        self._queued = 0
        self._fitting_from: set[str] = set()  # client addresses with a fit queued or running
        self._tasks: set[asyncio.Task] = set()

    def fitting(self, device: str) -> bool:
        """Whether ``device``'s calibration is queued or being fitted."""
        desk = self._desks.get(device)
        return desk is not None and desk.fitting

    def recording(self, device: str) -> bool:
        desk = self._desks.get(device)
        return desk is not None and desk.session.current is not None

    def feed(self, batch: SampleBatch, clock: int = 0) -> None:
        """A batch the gateway published, its times on the device's ``clock``
        (:data:`NewestReading`): its samples that fall in a take's times are kept."""
        desk = self._desks.get(batch.device)
        if desk is None or desk.fitting:
            return
        self._on_clock(desk, clock)
        desk.session.add(batch.t0, batch.samples)
        if desk.session.current is not None:
            desk.touched = time.monotonic()  # a long take is not idle

    def _newest(self, device: str, desk: _Desk) -> float | None:
        """Where a take starts or stops: the bus time of the device's newest
        reading (on the desk's clock from now on)."""
        clock, newest = self.newest_reading(device)
        self._on_clock(desk, clock)
        return newest

    @staticmethod
    def _on_clock(desk: _Desk, clock: int) -> None:
        """Times on another ``clock`` than the desk's do not compare with the
        take's bounds: the session is told, and the desk follows the clock."""
        if clock != desk.clock:
            desk.session.new_clock()
            desk.clock = clock

    async def handle(self, device: str, msg: dict, reply: Reply, key: str = "", address: str = "") -> None:
        """One ``calibrate`` message of ``device``'s own connection, which holds
        it with ``key`` and comes from client ``address``; never raises for bad
        input: refusals are answered and counted."""
        try:
            await self._handle(device, msg, reply, key_hash(key), address)
        except CalibrationError as exc:
            self.counters.reject(exc.reason, exc.detail)
            await reply({"type": "calibration", "event": "error", "reason": exc.reason, "detail": exc.detail})

    async def _handle(self, device: str, msg: dict, reply: Reply, owner: str, address: str) -> None:
        action = msg.get("action")
        now = time.monotonic()
        if self.fit is None:
            raise CalibrationError("calibration", "calibration is off on this gateway (started without a model to fit)")
        desk = self._desks.get(device)
        if desk is not None and not hmac.compare_digest(desk.owner, owner):
            raise CalibrationRefusal("not_owner", "this device's calibration was started with another key")
        if desk is not None and desk.fitting and action != "cancel":
            raise CalibrationError("busy", "this device's calibration is being fitted; wait for its result")
        if action == "start":
            activity = parse_activity(msg.get("activity"))  # before a desk is opened for it
            if desk is None:
                self._check_owner(device, owner)
                desk = self._open(device, owner, address, now)
                if self._queued == 0:  # the fit process loads its model while the person records
                    self._spawn(self._fitter.prepare(self.fit))
            desk.session.start(activity, after=self._newest(device, desk))
            desk.touched = now
            await reply({"type": "calibration", "event": "started", "activity": activity})
        elif action == "stop":
            desk = self._desk(device)
            check = desk.session.stop(until=self._newest(device, desk))
            await reply({"type": "calibration", "event": "take", **check.as_message()})
        elif action == "discard":
            self._desk(device).session.discard(msg.get("activity"))
            await reply({"type": "calibration", "event": "discarded"})
        elif action == "cancel":
            if desk is not None and not desk.fitting:
                del self._desks[device]
            await reply({"type": "calibration", "event": "cancelled"})
        elif action == "finish":
            desk = self._desk(device)
            if desk.session.current is not None:
                desk.session.stop()
            if not any(take.pieces for take in desk.session.takes.values()):  # files() would be empty
                raise CalibrationError("calibration", "nothing recorded: record at least one activity for 20 s first")
            if desk.address in self._fitting_from:
                raise CalibrationRefusal(
                    "calibration_limit", "a calibration from this address is being fitted; wait for its result"
                )
            if self._queued >= MAX_QUEUED_FITS:
                raise CalibrationError("busy", f"{self._queued} calibrations are being fitted; try again in a minute")
            self._check_owner(device, owner)  # it may have been calibrated under another key meanwhile
            desk.fitting = True
            self._queued += 1
            self._fitting_from.add(desk.address)
            self.counters.count("calibrations")
            await reply({"type": "calibration", "event": "fitting", "activities": sorted(desk.session.takes)})
            self._spawn(self._fit(device, desk, reply))
        elif action == "delete":
            if desk is not None and desk.fitting:
                raise CalibrationError("busy", "this device's calibration is being fitted; wait for its result")
            self._check_owner(device, owner)
            self._desks.pop(device, None)
            removed = await asyncio.to_thread(self._delete, device)  # file system work off the event loop
            self.counters.count("calibrations_deleted")
            await reply({"type": "calibration", "event": "deleted", "removed": removed})
        else:
            raise CalibrationError(
                "calibration", f"action {str(action)[:40]!r}: expected start, stop, discard, finish, cancel or delete"
            )

    def _spawn(self, job: Awaitable[None]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _check_owner(self, device: str, owner: str) -> None:
        """Refuse (``not_owner``) unless ``owner`` made this device's calibration,
        or it has none yet."""
        name = device_folder_name(device)
        try:
            recorded = read_owner_record(self.data_dir / name / OWNER_FILE)
        except FileNotFoundError:
            if any((self.personal_dir / f"{name}{suffix}").exists() for suffix in MODEL_SUFFIXES):
                raise CalibrationRefusal(
                    "not_owner",
                    "this device has a personal model made outside the phone page; "
                    "it can only be replaced or removed where it was made",
                ) from None
            return
        except OSError as exc:
            raise CalibrationRefusal(
                "not_owner", f"this device's owner record cannot be read ({exc.strerror})"
            ) from None
        if not hmac.compare_digest(recorded, owner.encode()):
            raise CalibrationRefusal(
                "not_owner", "this device was calibrated with another key: reconnect with the key of its welcome"
            )

    def _open(self, device: str, owner: str, address: str, now: float) -> _Desk:
        p = self.policy
        for gone in [d for d, desk in self._desks.items() if now - desk.touched > p.idle and not desk.fitting]:
            del self._desks[gone]
        held = sum(1 for desk in self._desks.values() if desk.address == address)
        if held >= p.per_address:
            raise CalibrationRefusal(
                "calibration_limit", f"{held} devices of this address are calibrating; finish or cancel one first"
            )
        if len(self._desks) >= p.max_sessions:
            raise CalibrationError("busy", f"{len(self._desks)} devices are calibrating; try again later")
        desk = self._desks[device] = _Desk(CalibrationSession(device, self.limits), now, owner, address)
        return desk

    def _desk(self, device: str) -> _Desk:
        desk = self._desks.get(device)
        if desk is None:
            raise CalibrationError("calibration", "no calibration under way for this device: start a take first")
        desk.touched = time.monotonic()
        return desk

    def _delete(self, device: str) -> list[str]:
        """Remove a device's calibration files and personal model; what was removed."""
        name = device_folder_name(device)
        removed = []
        folder = self.data_dir / name
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(name)
        for suffix in MODEL_SUFFIXES:
            path = self.personal_dir / f"{name}{suffix}"
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed

    async def _fit(self, device: str, desk: _Desk, reply: Reply) -> None:
        try:
            if self.fit is None:  # turned off since the finish was accepted
                raise RuntimeError("calibration fitting is off")
            result = await self._fitter.run(
                self.fit, self.data_dir, self.personal_dir, device, desk.session, desk.owner
            )
            self.counters.count("calibrations_fitted")
            message = {"type": "calibration", "event": "done", **result}
        except CalibrationError as exc:  # the takes' files over the size limit
            self.counters.reject(exc.reason, exc.detail)
            message = {"type": "calibration", "event": "error", "reason": exc.reason, "detail": exc.detail}
        except Exception as exc:  # unreadable files, a fit error: this device's answer, not the gateway's end
            log.warning("calibration of %s failed: %s", device, exc)
            self.counters.reject("calibration_failed", f"{device}: {exc}")
            message = {
                "type": "calibration",
                "event": "error",
                "reason": "calibration_failed",
                "detail": str(exc)[:300],
            }
        finally:
            self._queued -= 1
            self._fitting_from.discard(desk.address)
            if self._desks.get(device) is desk:
                del self._desks[device]
        await reply(message)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._fitter.close()

    def stats(self) -> dict:
        return {
            "calibrating": len(self._desks),
            "fits_queued": self._queued,
            "max_sessions": self.policy.max_sessions,
            "per_address": self.policy.per_address,
            "idle_s": self.policy.idle,
        }


def write_and_fit(
    fit: FitFunction, data_dir: Path, personal_dir: Path, device: str, session: CalibrationSession, owner: str
) -> dict:
    """In the fit process: render and write the CSVs (with the owner record),
    fit, move the model into the registry."""
    files = session.files()  # raises when too large
    name = device_folder_name(device)
    folder = data_dir / name
    fresh = data_dir / f".{name}.new"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    for file, text in files.items():
        (fresh / file).write_text(text, encoding="utf-8")
    (fresh / DEVICE_FILE).write_text(device + "\n", encoding="utf-8")
    (fresh / OWNER_FILE).write_text(owner + "\n", encoding="ascii")
    shutil.rmtree(folder, ignore_errors=True)  # the previous calibration of this device
    os.replace(fresh, folder)

    # Fit into a hidden folder (the worker skips dot-names), then rename:
    # the registry never shows a half-written model.
    staging = personal_dir / f".{name}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model = f"{name}{PERSONAL_SUFFIX}"
    try:
        result = fit(folder, device, staging / model)
        os.replace(staging / model, personal_dir / model)
        for old in (f"{name}.keras", f"{name}.json"):  # the same device's model in the old Keras format
            (personal_dir / old).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**result, "model": model, "data": str(folder), "files": sorted(files)}


class FitProcess:
    """One child process (spawned, niced) that runs :func:`write_and_fit`, one
    call at a time.

    A fit is CPU for a while (with the shared model in Keras, seconds of
    TensorFlow; from its serving record, numpy and LiteRT): in a thread of the
    gateway it held the interpreter lock long enough to stall every phone's
    stream (and loaded hundreds of MB into the gateway). In its own process it cannot; a fit that
    kills its process (out of memory) is that device's error, and the next fit
    starts a fresh process. ``fit`` is pickled to the child, which keeps the
    last one (and whatever it loaded, such as its base model) for the next call.
    :meth:`prepare` starts the process and lets the fit load what it needs
    (its ``prepare()``, if it has one) while a person is still recording.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        # starting and closing the child happen in different threads (a fit's
        # thread, the event loop's): a close while a start is under way must
        # wait for it, or it finds a process not yet started and the child outlives the gateway
        self._guard = threading.Lock()
        self._process: Any = None
        self._conn: Any = None
        self._closed = False

    async def run(self, fit: FitFunction, *args: Any) -> dict:
        """``write_and_fit(fit, *args)`` in the child; raises its error."""
        blob = pickle.dumps(fit)  # our own object, to our own child
        async with self._lock:
            ok, value = await asyncio.to_thread(self._call, blob, args)
        if ok:
            return value
        if value[0] == "calibration":
            raise CalibrationError(value[1], value[2])
        raise RuntimeError(value[1])

    async def prepare(self, fit: FitFunction) -> None:
        """Get the child ready for ``fit`` (never raises: a failure shows at the fit)."""
        try:
            blob = pickle.dumps(fit)
        except Exception as exc:  # the fit itself will say so to the phone
            log.warning("calibration fit cannot be sent to the fit process: %s", exc)
            return
        async with self._lock:
            ok, value = await asyncio.to_thread(self._call, blob, None)
        if not ok:
            log.warning("calibration fit process not ready: %s", value[-1])

    def _call(self, blob: bytes, args: tuple | None) -> tuple[bool, Any]:
        with self._guard:
            if self._closed:
                return False, ("failed", "the gateway is closing")
            if self._process is None or not self._process.is_alive():
                self._start()
            process, conn = self._process, self._conn
        try:
            conn.send((blob, args))
            return conn.recv()
        except (EOFError, OSError):  # the child died (killed, out of memory)
            if self._process is process:
                self._process = None
            return False, ("failed", f"the fit process ended (exit code {process.exitcode})")

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve_fits, args=(child,), name="calibration-fit", daemon=True)
        self._process.start()
        child.close()

    def close(self) -> None:
        with self._guard:
            self._closed = True
            process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.join(5)


def _serve_fits(conn: Any) -> None:
    """The fit process: fits in, results out, until the gateway goes."""
    with contextlib.suppress(OSError):
        os.nice(10)  # the gateway's phones come first
    parent = os.getppid()

    def follow_parent() -> None:  # a gateway killed outright leaves no fit running
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=follow_parent, daemon=True).start()
    fits: dict[bytes, FitFunction] = {}
    while True:
        try:
            blob, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            fit = fits.get(blob)
            if fit is None:
                fits.clear()
                fit = fits[blob] = pickle.loads(blob)  # from our parent, never from outside input
            if args is None:  # prepare: load what the fits need before the first one
                prepare = getattr(fit, "prepare", None)
                if prepare is not None:
                    prepare()
                reply: tuple[bool, Any] = (True, None)
            else:
                reply = (True, write_and_fit(fit, *args))
        except CalibrationError as exc:
            reply = (False, ("calibration", exc.reason, exc.detail))
        except Exception as exc:
            reply = (False, ("failed", str(exc) or type(exc).__name__))
        conn.send(reply)
