"""Personal models served live: a folder the worker watches.

The registry folder (``--personal-dir``, default ``runs/personal/``, or
``$HARSTREAM_PERSONAL_DIR``) holds one file per calibrated device,
``<name>.personal.json`` (:mod:`~harstream.stream.personal.model_file`),
whose ``device`` is the device's id on the bus (``phone:pixel-7``).
:func:`personal_model_path` gives the usual file name; any name works, the
file says which device it is for.

The worker's loop calls :meth:`PersonalRegistry.poll` often; it looks at the
folder once per ``interval`` (one ``lstat`` per file), and at once when the
folder itself changed (one ``stat`` per poll: a file created, renamed in or
removed), a slice per poll (:data:`LIST_BUDGET_S`: a folder of many
thousand files is looked at over several polls, never in one that holds the
loop), and loads a file that changed — once it has stayed unchanged for
one more look, :data:`SETTLE_LOOK_S` later, so a half-written file is not
read — right there in the loop: a personal model is a few
kilobytes of checked JSON, read in about a millisecond, and loading stops for
the tick once :data:`LOAD_BUDGET_S` is spent (the rest go on the next tick).
The loaded model then serves its device
(:class:`~harstream.stream.core.model_routing.ModelRouter`); a file that fails
its checks is *refused by name* (logged, counted, listed in the stats) and
the device keeps the model it had — so is anything in the folder with a
model's name that is not a regular file (a symlink, a FIFO, a device), and
a ``.keras`` personal model of the old format (with the command that refits
it). A removed file sends its device back to its default mode, and its
model is freed.

:class:`FolderWatch` is the pure part: listings in, files to load and files
gone out.

>>> watch = FolderWatch()
>>> watch.update({"a": (1, 10)})          # first seen: wait for it to settle
([], [])
>>> watch.update({"a": (1, 10)})          # unchanged for one look: load it
(['a'], [])
>>> watch.update({"a": (1, 10)})          # nothing new
([], [])
>>> watch.update({})
([], ['a'])
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harstream.stream.core.model_routing import ModelRouter, ServedModel, served_device
from harstream.stream.core.protocol import check_device_id
from harstream.stream.personal.calibration import device_folder_name
from harstream.stream.personal.model_file import SUFFIX

log = logging.getLogger(__name__)

DEFAULT_PERSONAL_DIR = Path("runs/personal")
#: At most this many refusals are kept by name for the stats.
MAX_REFUSALS_LISTED = 50
#: Seconds of loading per poll; files past it wait for the next poll.
LOAD_BUDGET_S = 0.02
#: Seconds of listing the folder per poll; a larger folder is looked at over several polls.
LIST_BUDGET_S = 0.005
#: Refusals logged one by one per poll; the rest are counted in one line (all are in the stats).
MAX_REFUSALS_LOGGED = 5
#: Seconds until the next look while a new or changed file waits to settle (it is loaded
#: once unchanged for one more look).
SETTLE_LOOK_S = 0.2
#: Files in the folder looked at, at most (a folder of a million files is not listed whole).
MAX_FILES = 100_000
#: Names the registry looks at: the personal-model format, and the old Keras one (refused).
MODEL_SUFFIXES = (SUFFIX, ".keras")


def personal_dir(option: str | None = None) -> Path:
    """The registry folder: ``option``, else ``$HARSTREAM_PERSONAL_DIR``, else ``runs/personal``."""
    return Path(option or os.environ.get("HARSTREAM_PERSONAL_DIR") or DEFAULT_PERSONAL_DIR)


def personal_model_name(device: str) -> str:
    """The file name (without its suffix) of a device's personal model: the
    same safe, unique-per-id name as its calibration folder
    (:func:`~harstream.stream.personal.calibration.device_folder_name`), so no way out
    of the folder and no two devices sharing a file.

    >>> personal_model_name("phone:pixel-7")
    'phone-pixel-7-57f2f006db99'
    """
    check_device_id(device)
    return device_folder_name(device)


def personal_model_path(folder: str | Path, device: str) -> Path:
    """Where ``device``'s personal model goes in the registry ``folder``."""
    return Path(folder) / f"{personal_model_name(device)}{SUFFIX}"


Signature = tuple[int, int, int]  # (modification time ns, bytes, file type bits) of a model file


class FolderWatch:
    """Which model files to (re)load and which are gone, from successive
    listings ``{name: signature}``; no I/O."""

    def __init__(self) -> None:
        self._previous: dict[str, Signature] = {}
        self._handled: dict[str, Signature] = {}  # the signature last loaded (or refused)
        self._unsettled = False

    def update(self, listing: dict[str, Signature]) -> tuple[list[str], list[str]]:
        """``(names to load, names removed)`` for this listing. A name is
        loaded once its signature held for two looks in a row and differs
        from the one last handled."""
        if listing == self._handled:  # the usual look at a large folder: nothing changed (compared in C)
            self._previous, self._unsettled = listing, False
            return [], []
        handled = self._handled
        new = [(n, sig) for n, sig in listing.items() if handled.get(n) != sig]
        ready = sorted(n for n, sig in new if self._previous.get(n) == sig)
        for name in ready:
            self._handled[name] = listing[name]
        gone = sorted(self._handled.keys() - listing.keys())
        for name in gone:
            del self._handled[name]
        self._previous = listing
        self._unsettled = len(new) > len(ready)
        return ready, gone

    @property
    def unsettled(self) -> bool:
        """Whether the last listing held a file new or changed since it was
        handled, waiting for one more look to load it."""
        return self._unsettled


@dataclass
class RegistryEvent:
    """What one look at the registry changed: ``loaded`` (``model`` serves
    ``device``), ``refused`` (``reason``) or ``removed``."""

    kind: str
    name: str
    device: str | None = None
    reason: str = ""
    model: ServedModel | None = None


def list_models(folder: Path) -> dict[str, Signature]:
    """``{file name: signature}`` of the entries of ``folder`` named like a
    model (:data:`MODEL_SUFFIXES`), whatever their type (the loader refuses
    what is not a regular file); hidden names are skipped (a writer's
    staging); an absent folder lists nothing. All at once: the registry
    takes it a slice per poll (:class:`FolderScan`)."""
    scan = FolderScan(folder)
    while not scan.step(math.inf):
        pass
    return scan.listing


class FolderScan:
    """One look at the folder (what :func:`list_models` gives), taken a slice
    per call of :meth:`step`: listing a folder of many thousand files in one
    go (a few hundred ms for 20,000, seconds for :data:`MAX_FILES`) held the
    worker's loop, and so every device's predictions, that long each look."""

    def __init__(self, folder: Path, clock: Callable[[], float] = time.perf_counter):
        self.folder = folder
        self.clock = clock
        self.listing: dict[str, Signature] = {}
        self.entries = 0
        try:
            self._entries: Any = os.scandir(folder)  # closed when done (an iterator holding the folder open)
        except OSError:  # absent, not a folder, unreadable: nothing
            self._entries = None

    def step(self, budget_s: float) -> bool:
        """List entries for about ``budget_s`` seconds; True once the look is complete."""
        if self._entries is None:
            return True
        started = self.clock()
        for entry in self._entries:
            self.entries += 1
            if self.entries > MAX_FILES:
                log.warning(
                    "personal models: more than %d entries in %s; the rest are not looked at", MAX_FILES, self.folder
                )
                break
            if not entry.name.startswith(".") and entry.name.endswith(MODEL_SUFFIXES):
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                self.listing[entry.name] = (st.st_mtime_ns, st.st_size, st.st_mode)
            if self.entries % 64 == 0 and self.clock() - started > budget_s:
                return False
        self.close()
        return True

    def close(self) -> None:
        if self._entries is not None:
            self._entries.close()
            self._entries = None


class PersonalRegistry:
    """Watches ``folder`` and keeps ``router``'s personal models in step with it.

    ``load(path) -> ServedModel`` is called in the loop (the worker passes
    :func:`harstream.models.personal_serving.load_personal_model` over its
    placement-free model; this package does not import the models); any
    exception it raises refuses that file by name.
    """

    def __init__(
        self,
        folder: str | Path,
        load: Callable[[Path], ServedModel],
        interval: float = 1.0,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.folder = Path(folder)
        self.load = load
        self.interval = interval
        self.clock = clock
        self.watch = FolderWatch()
        self.device_of: dict[str, str] = {}  # file name -> the device it serves
        self.refused: OrderedDict[str, str] = OrderedDict()  # file name -> why (latest refusals)
        self.refusals = 0
        self.refusals_by_reason: dict[str, int] = {}  # reason kind -> count (PersonalModelError.kind)
        self.loads = 0
        self.load_ms_max = 0.0
        # names waiting to be loaded, in order (taken from the front: an OrderedDict does it in
        # O(1), a dict's first key after many deletions is a walk past every deleted slot)
        self._queue: OrderedDict[str, None] = OrderedDict()
        self._next_look = 0.0
        self._folder_mtime: int | None = None  # the folder's own modification time at the last look
        self._scan: FolderScan | None = None  # the look under way, a slice per poll
        self._logged = 0  # refusals logged in this poll

    def poll(self, now: float, router: ModelRouter) -> list[RegistryEvent]:
        """Apply removals and load what is waiting (within
        :data:`LOAD_BUDGET_S`); look at the folder if ``interval`` has passed
        (:data:`SETTLE_LOOK_S` while a file waits to settle) or the folder
        itself changed. Never raises for a bad file."""
        events: list[RegistryEvent] = []
        if self._scan is None and (now >= self._next_look or self._folder_changed()):
            self._scan = FolderScan(self.folder, self.clock)
        if self._scan is not None and self._scan.step(LIST_BUDGET_S):
            listing, self._scan = self._scan.listing, None
            ready, gone = self.watch.update(listing)
            # a file waiting to settle is looked at again soon, not a whole interval later
            self._next_look = now + (min(SETTLE_LOOK_S, self.interval) if self.watch.unsettled else self.interval)
            for name in gone:
                self._queue.pop(name, None)
                self.refused.pop(name, None)
                device = self.device_of.pop(name, None)
                if device is not None and router.drop_personal(device):
                    log.info("personal model %s removed: device %s back to its default mode", name, device)
                    events.append(RegistryEvent("removed", name, device))
            for name in ready:
                self._queue[name] = None
        started = self.clock()
        loaded = 0
        self._logged = 0
        while self._queue and self.clock() - started < LOAD_BUDGET_S:
            name, _ = self._queue.popitem(last=False)
            event = self._load(name, router)
            loaded += event.kind == "loaded"
            events.append(event)
        if self._logged > MAX_REFUSALS_LOGGED:
            log.warning(
                "personal models: %d more refused in this look (stats: personal.refused, refusals_by_reason)",
                self._logged - MAX_REFUSALS_LOGGED,
            )
        if loaded:  # one line per look, not per model (a folder of thousands)
            log.info(
                "%d personal model(s) now serving (%s%s); %d waiting",
                loaded,
                ", ".join(e.name for e in events if e.kind == "loaded")[:200],
                "" if loaded <= 3 else ", ...",
                len(self._queue),
            )
        return events

    def _folder_changed(self) -> bool:
        """Whether the folder itself changed since the last look (one ``stat``:
        a file created, renamed in or removed; a file rewritten in place is
        seen at the next look)."""
        try:
            mtime = os.stat(self.folder).st_mtime_ns
        except OSError:
            mtime = None
        changed = mtime != self._folder_mtime
        self._folder_mtime = mtime
        return changed

    def _load(self, name: str, router: ModelRouter) -> RegistryEvent:
        started = self.clock()
        try:
            model = self.load(self.folder / name)
        except Exception as exc:  # PersonalModelError, or a bug met on one file: refuse this file only
            return self._refuse(name, str(exc) or type(exc).__name__, router, getattr(exc, "kind", "load_error"))
        finally:
            self.loads += 1
            self.load_ms_max = max(self.load_ms_max, (self.clock() - started) * 1000.0)
        device = served_device(model)
        owner = next((n for n, d in self.device_of.items() if d == device and n != name), None)
        if owner is not None:
            return self._refuse(name, f"device {device} is already served by {owner}", router, "device_taken")
        previous = self.device_of.get(name)
        if previous is not None and previous != device:
            router.drop_personal(previous)
        self.device_of[name] = device
        self.refused.pop(name, None)
        router.set_personal(model)
        log.debug("personal model %s (%s) now serves device %s", name, model.model_id, device)
        return RegistryEvent("loaded", name, device, model=model)

    def _refuse(self, name: str, reason: str, router: ModelRouter, kind: str) -> RegistryEvent:
        reason = reason.splitlines()[0][:300] if reason else "unknown error"
        self._logged += 1
        if self._logged <= MAX_REFUSALS_LOGGED:  # a folder of a thousand junk files is not a thousand lines
            log.warning("personal model %s refused: %s (its device keeps the model it had)", name, reason)
        self.refusals += 1
        self.refusals_by_reason[kind] = self.refusals_by_reason.get(kind, 0) + 1
        self.refused.pop(name, None)
        self.refused[name] = reason
        while len(self.refused) > MAX_REFUSALS_LISTED:
            self.refused.popitem(last=False)
        return RegistryEvent("refused", name, self.device_of.get(name), reason)

    def stats(self) -> dict:
        """For the worker's stats message."""
        return {
            "folder": str(self.folder),
            "loaded": len(self.device_of),
            "waiting": len(self._queue),
            "loads": self.loads,
            "load_ms_max": round(self.load_ms_max, 2),
            "refusals": self.refusals,
            "refusals_by_reason": dict(self.refusals_by_reason),
            "refused": dict(self.refused),
        }

    def close(self) -> None:
        """Nothing runs in the background; a look under way is let go."""
        if self._scan is not None:
            self._scan.close()
            self._scan = None
