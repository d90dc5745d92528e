"""The gateway's side of guided calibration: messages, files, a fit off the event loop.

A phone that said ``hello`` on ``/ws`` may send, on the same connection::

    {"type": "calibrate", "action": "start", "activity": "sit"}
    {"type": "calibrate", "action": "stop"}          -> the take's check
    {"type": "calibrate", "action": "discard", "activity": "sit"}
    {"type": "calibrate", "action": "finish"}        -> files, fit, the result
    {"type": "calibrate", "action": "cancel"}        -> forget everything

Between ``start`` and ``stop`` every 50 Hz sample the gateway publishes for
that device is kept too (:class:`~.calibration.CalibrationSession`); only
the connection that holds the device's id can calibrate it. Answers are
``{"type": "calibration", "event": "started" | "take" | "fitting" | "done" |
"cancelled" | "error", ...}``.

On ``finish`` the takes are written as CSV (docs/recordings.md) under
``<calibration dir>/<device folder>/``, replacing that device's previous
calibration, and ``fit(folder, device, out)`` — supplied by the command that
runs the gateway, since this package does not import the models — fits a
personal model from them and saves it as ``<personal dir>/<device
folder>.personal.json``, the registry the worker watches. Writing and
fitting run in one background thread, one device at a time, so no phone's
stream waits for TensorFlow; the model appears in the registry by a rename,
never half-written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harstream.stream.core.protocol import SampleBatch
from harstream.stream.gateway.counters import Counters
from harstream.stream.personal.calibration import (
    DEFAULT_LIMITS,
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
#: ``classes`` and ``fit_seconds``. Runs in a worker thread.
FitFunction = Callable[[Path, str, Path], dict]
Reply = Callable[[dict], Awaitable[None]]

MAX_SESSIONS = 32  # devices calibrating at once (each holds < 1 MB: 6 takes of 120 s, float32)
MAX_QUEUED_FITS = 4  # fits waiting for the thread; past this ``busy``
SESSION_IDLE_S = 600.0  # a calibration untouched this long is forgotten


@dataclass
class _Desk:
    session: CalibrationSession
    touched: float
    fitting: bool = False


class Calibrations:
    """Every device's calibration in this gateway."""

    def __init__(
        self,
        data_dir: str | Path,
        personal_dir: str | Path,
        fit: FitFunction | None,
        counters: Counters,
        limits: CalibrationLimits = DEFAULT_LIMITS,
    ):
        self.data_dir = Path(data_dir)
        self.personal_dir = Path(personal_dir)
        self.fit = fit
        self.counters = counters
        self.limits = limits
        self._desks: dict[str, _Desk] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calibration-fit")
        self._queued = 0
        self._tasks: set[asyncio.Task] = set()

    def recording(self, device: str) -> bool:
        desk = self._desks.get(device)
        return desk is not None and desk.session.current is not None

    def feed(self, batch: SampleBatch) -> None:
        """A batch the gateway published: kept if its device is recording a take."""
        desk = self._desks.get(batch.device)
        if desk is not None and desk.session.current is not None:
            desk.session.add(batch.t0, batch.samples)

    async def handle(self, device: str, msg: dict, reply: Reply) -> None:
        """One ``calibrate`` message of ``device``'s own connection; never raises
        for bad input: refusals are answered and counted."""
        try:
            await self._handle(device, msg, reply)
        except CalibrationError as exc:
            self.counters.reject(exc.reason, exc.detail)
            await reply({"type": "calibration", "event": "error", "reason": exc.reason, "detail": exc.detail})

    async def _handle(self, device: str, msg: dict, reply: Reply) -> None:
        action = msg.get("action")
        now = time.monotonic()
        if self.fit is None:
            raise CalibrationError("calibration", "calibration is off on this gateway (started without a model to fit)")
        desk = self._desks.get(device)
        if desk is not None and desk.fitting and action != "cancel":
            raise CalibrationError("busy", "this device's calibration is being fitted; wait for its result")
        if action == "start":
            activity = parse_activity(msg.get("activity"))  # before a desk is opened for it
            desk = desk or self._open(device, now)
            desk.session.start(activity)
            desk.touched = now
            await reply({"type": "calibration", "event": "started", "activity": activity})
        elif action == "stop":
            check = self._desk(device).session.stop()
            await reply({"type": "calibration", "event": "take", **check.as_message()})
        elif action == "discard":
            self._desk(device).session.discard(msg.get("activity"))
            await reply({"type": "calibration", "event": "discarded"})
        elif action == "cancel":
            self._desks.pop(device, None)
            await reply({"type": "calibration", "event": "cancelled"})
        elif action == "finish":
            desk = self._desk(device)
            if desk.session.current is not None:
                desk.session.stop()
            files = desk.session.files()  # raises when empty or too large
            if self._queued >= MAX_QUEUED_FITS:
                raise CalibrationError("busy", f"{self._queued} calibrations are being fitted; try again in a minute")
            desk.fitting = True
            self._queued += 1
            self.counters.count("calibrations")
            await reply({"type": "calibration", "event": "fitting", "files": sorted(files)})
            task = asyncio.create_task(self._fit(device, files, reply))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            raise CalibrationError(
                "calibration", f"action {str(action)[:40]!r}: expected start, stop, discard, finish or cancel"
            )

    def _open(self, device: str, now: float) -> _Desk:
        for gone in [d for d, desk in self._desks.items() if now - desk.touched > SESSION_IDLE_S and not desk.fitting]:
            del self._desks[gone]
        if len(self._desks) >= MAX_SESSIONS:
            raise CalibrationError("busy", f"{len(self._desks)} devices are calibrating; try again later")
        desk = self._desks[device] = _Desk(CalibrationSession(device, self.limits), now)
        return desk

    def _desk(self, device: str) -> _Desk:
        desk = self._desks.get(device)
        if desk is None:
            raise CalibrationError("calibration", "no calibration under way for this device: start a take first")
        desk.touched = time.monotonic()
        return desk

    async def _fit(self, device: str, files: dict[str, str], reply: Reply) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, self._write_and_fit, device, files)
            self.counters.count("calibrations_fitted")
            message = {"type": "calibration", "event": "done", **result}
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
            self._desks.pop(device, None)
        await reply(message)

    def _write_and_fit(self, device: str, files: dict[str, str]) -> dict:
        """In the fit thread: write the CSVs, fit, move the model into the registry."""
        name = device_folder_name(device)
        folder = self.data_dir / name
        fresh = self.data_dir / f".{name}.new"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(parents=True)
        for file, text in files.items():
            (fresh / file).write_text(text, encoding="utf-8")
        (fresh / "device.txt").write_text(device + "\n", encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)  # the previous calibration of this device
        os.replace(fresh, folder)

        # Fit into a hidden folder (the worker skips dot-names), then rename:
        # the registry never shows a half-written model.
        staging = self.personal_dir / f".{name}.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        fit = self.fit
        if fit is None:  # callers check first; the type checker cannot see it
            raise RuntimeError("calibration fitting is off")
        model = f"{name}{PERSONAL_SUFFIX}"
        try:
            result = fit(folder, device, staging / model)
            os.replace(staging / model, self.personal_dir / model)
            for old in (f"{name}.keras", f"{name}.json"):  # the same device's model in the old Keras format
                (self.personal_dir / old).unlink(missing_ok=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return {**result, "model": model, "data": str(folder)}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict:
        return {"calibrating": len(self._desks), "fits_queued": self._queued}
