"""Personal models served live: a folder the worker watches.

The registry folder (``--personal-dir``, default ``runs/personal/``, or
``$HARSTREAM_PERSONAL_DIR``) holds one artifact per calibrated device:
``<name>.keras`` and its ``<name>.json`` metadata, whose ``device`` is the
device's id on the bus (``phone:pixel-7``) and whose ``placement`` is
``personal``. :func:`personal_model_path` gives the usual file name; any
name works, the metadata says which device a model is for.

The worker's loop calls :meth:`PersonalRegistry.poll` often; it looks at the
folder's modification times once per ``interval`` (cheap: one ``stat`` per
file), and hands a file that changed — once it has stayed unchanged for one
more look, so a half-written file is not read — to a background thread that
loads it (Keras safe mode, hash and metadata checks, the serving runtime: a
few seconds that must never block the loop). The loaded model then serves
its device (:class:`~harstream.stream.core.model_routing.ModelRouter`); a file
that fails to load or disagrees with its metadata is *refused by name*
(logged, counted, listed in the stats) and the device keeps the model it
had. A removed file sends its device back to its default mode.

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
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harstream.stream.core.model_routing import ModelRouter, ServedModel
from harstream.stream.core.protocol import check_device_id
from harstream.stream.personal.calibration import device_folder_name

log = logging.getLogger(__name__)

DEFAULT_PERSONAL_DIR = Path("runs/personal")
#: A model file larger than this is refused unread (a personal model is a few hundred kB).
#: At most this many refusals are kept by name for the stats.
MAX_REFUSALS_LISTED = 50


def personal_dir(option: str | None = None) -> Path:
    """The registry folder: ``option``, else ``$HARSTREAM_PERSONAL_DIR``, else ``runs/personal``."""
    return Path(option or os.environ.get("HARSTREAM_PERSONAL_DIR") or DEFAULT_PERSONAL_DIR)


def personal_model_name(device: str) -> str:
    """The file name (without ``.keras``) of a device's personal model: the
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
    return Path(folder) / f"{personal_model_name(device)}.keras"


Signature = tuple[int, int]  # (modification time ns, bytes) of a model's two files together


class FolderWatch:
    """Which model files to (re)load and which are gone, from successive
    listings ``{name: signature}``; no I/O."""

    def __init__(self) -> None:
        self._previous: dict[str, Signature] = {}
        self._handled: dict[str, Signature] = {}  # the signature last loaded (or refused)

    def update(self, listing: dict[str, Signature]) -> tuple[list[str], list[str]]:
        """``(names to load, names removed)`` for this listing. A name is
        loaded once its signature held for two looks in a row and differs
        from the one last handled."""
        ready = [
            n for n, sig in sorted(listing.items()) if self._previous.get(n) == sig and self._handled.get(n) != sig
        ]
        for name in ready:
            self._handled[name] = listing[name]
        gone = sorted(n for n in self._handled if n not in listing)
        for name in gone:
            del self._handled[name]
        self._previous = dict(listing)
        return ready, gone


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
    """``{name: signature}`` of the ``.keras`` files in ``folder`` (with their
    ``.json``, whose changes count too); an absent folder lists nothing."""
    out: dict[str, Signature] = {}
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return out
    stats = {}
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        stats[entry.name] = (st.st_mtime_ns, st.st_size)
    for name, (mtime, size) in stats.items():
        if name.endswith(".keras"):
            stem = name[: -len(".keras")]
            meta = stats.get(stem + ".json", (0, 0))
            out[stem] = (max(mtime, meta[0]), size + meta[1])
    return out


class PersonalRegistry:
    """Watches ``folder`` and keeps ``router``'s personal models in step with it.

    ``load(path) -> ServedModel`` runs in one background thread; the worker
    passes :func:`harstream.models.personal_serving.load_personal_model`
    (this package does not import the models, which import it).
    """

    def __init__(self, folder: str | Path, load: Callable[[Path], ServedModel], interval: float = 1.0):
        self.folder = Path(folder)
        self.load = load
        self.interval = interval
        self.watch = FolderWatch()
        self.device_of: dict[str, str] = {}  # file name -> the device it serves
        self.refused: dict[str, str] = {}  # file name -> why (latest refusals)
        self.refusals = 0
        self._loading: dict[str, Future] = {}
        self._stale: set[str] = set()  # changed again while loading: load once more when done
        self._next_look = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="personal-models")

    def poll(self, now: float, router: ModelRouter) -> list[RegistryEvent]:
        """Apply finished loads and removals to ``router``; look at the folder
        if ``interval`` has passed. Never blocks on a load, never raises for
        a bad file."""
        events = self._finished(router)
        if now < self._next_look:
            return events
        self._next_look = now + self.interval
        ready, gone = self.watch.update(list_models(self.folder))
        for name in gone:
            self._stale.discard(name)
            device = self.device_of.pop(name, None)
            self.refused.pop(name, None)
            if device is not None and router.drop_personal(device):
                log.info("personal model %s removed: device %s back to its default mode", name, device)
                events.append(RegistryEvent("removed", name, device))
        for name in ready:
            if name in self._loading:
                self._stale.add(name)
            else:
                self._start(name)
        return events

    def _start(self, name: str) -> None:
        path = self.folder / f"{name}.keras"
        log.info("personal model %s: loading in the background", path)
        self._loading[name] = self._pool.submit(self.load, path)

    def _finished(self, router: ModelRouter) -> list[RegistryEvent]:
        events = []
        for name in [n for n, f in self._loading.items() if f.done()]:
            future = self._loading.pop(name)
            if name in self._stale:  # the file changed while it loaded: this result is old
                self._stale.discard(name)
                self._start(name)
                continue
            try:
                model = future.result()
            except Exception as exc:  # ArtifactError, a Keras or conversion error: refuse this file only
                events.append(self._refuse(name, str(exc) or type(exc).__name__))
                continue
            device = model.key.removeprefix("personal:")
            owner = next((n for n, d in self.device_of.items() if d == device and n != name), None)
            if owner is not None:
                events.append(self._refuse(name, f"device {device} is already served by {owner}.keras"))
                continue
            if not (self.folder / f"{name}.keras").is_file():  # removed while it loaded
                continue
            previous = self.device_of.get(name)
            if previous is not None and previous != device:
                router.drop_personal(previous)
            self.device_of[name] = device
            self.refused.pop(name, None)
            router.set_personal(model)
            log.info("personal model %s (%s) now serves device %s", name, model.model_id, device)
            events.append(RegistryEvent("loaded", name, device, model=model))
        return events

    def _refuse(self, name: str, reason: str) -> RegistryEvent:
        reason = reason.splitlines()[0][:300] if reason else "unknown error"
        log.warning("personal model %s.keras refused: %s (its device keeps the model it had)", name, reason)
        self.refusals += 1
        self.refused.pop(name, None)
        self.refused[name] = reason
        while len(self.refused) > MAX_REFUSALS_LISTED:
            del self.refused[next(iter(self.refused))]
        return RegistryEvent("refused", name, self.device_of.get(name), reason)

    def stats(self) -> dict:
        """For the worker's stats message."""
        return {
            "folder": str(self.folder),
            "loaded": len(self.device_of),
            "loading": len(self._loading),
            "refusals": self.refusals,
            "refused": dict(self.refused),
        }

    def close(self) -> None:
        """Stop loading (a load under way finishes in its thread, unused)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
