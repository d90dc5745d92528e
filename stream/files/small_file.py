"""A small file others may write, read without waiting and within a bound.

Key files, a device's owner record, personal models, a model's metadata: each
is opened without blocking (a FIFO there waits for a writer, freezing whoever
reads it) and, unless asked, without following a symlink; it must be a
regular file of at most its bound, checked on the open file before a byte is
read. Anything else is a :class:`FileRefused` naming the file.

>>> import os, tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> (folder / "owner").write_bytes(b"ab12")
4
>>> read_small_file(folder / "owner", 200).data
b'ab12'
>>> os.mkfifo(folder / "pipe")
>>> try:
...     read_small_file(folder / "pipe", 200)
... except FileRefused as exc:
...     print(exc.strerror)
not a regular file but a FIFO
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import NamedTuple


class FileRefused(OSError):
    """A file refused unread: ``strerror`` says why (``not a regular file but
    a FIFO``, ``over 4,096 bytes``), ``filename`` which file."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


class SmallFile(NamedTuple):
    """What :func:`read_small_file` read: the bytes, and the file's mode (its
    permission bits, as it was when read)."""

    data: bytes
    mode: int


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_small_file(path: str | Path, limit: int, *, follow_symlinks: bool = False) -> SmallFile:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes, opened
    without blocking and (unless ``follow_symlinks``) without following a
    symlink. A symlink not followed, anything but a regular file, or a file
    over ``limit`` bytes (by its size, or by what could be read should it grow)
    is a :class:`FileRefused`; an error of the open itself (no such file, no
    permission, a symlink loop) is raised as it is, an ``OSError``."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks and os.path.islink(path):
            raise FileRefused(errno.ELOOP, "not a regular file but a symlink", str(path)) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "no file")
            raise FileRefused(errno.EINVAL, f"not a regular file but {kind}", str(path))
        if info.st_size > limit:
            raise FileRefused(errno.EFBIG, f"over {limit:,} bytes", str(path))
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
        if len(data) > limit:  # it grew after the check
            raise FileRefused(errno.EFBIG, f"over {limit:,} bytes", str(path))
        return SmallFile(data, info.st_mode)
    finally:
        os.close(fd)
