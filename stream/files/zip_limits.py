"""A zip others may have made, judged by its directory before a byte is unpacked.

Sensor Logger exports and ``.keras`` models are zips. ``zipfile`` reads a
zip's whole directory when it opens one (300,000 empty entries took 6 s and
380 MB before a word was said), as many bytes as the end record says it has
whatever count it gives, and unpacks whatever a member declares. So
:func:`open_zip` reads the end record first and refuses too many files or too
large a directory, and :func:`check_member` refuses a member that declares
more than may be read, or packs tighter than its data could (a zip bomb),
before it is opened. The limits are each caller's (:class:`ZipLimits`);
anything over them is a :class:`ZipRefused` naming the zip, or the member,
and the bound.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path


class ZipRefused(ValueError):
    """A zip, or one of its members, over its limits; the message names it and the bound."""


@dataclass(frozen=True)
class ZipLimits:
    """What one kind of zip may declare."""

    members: int  # files it may hold
    directory_bytes: int  # bytes of directory zipfile may read
    member_bytes: int  # the most one member may unpack to
    max_ratio: int | None = None  # the tightest packing (unpacked : packed) taken (None: not judged)
    ratio_from: int = 1 << 20  # members under this many bytes are not judged by their packing


def _zip_directory(path: Path) -> tuple[int, int] | None:
    """(files, directory bytes) as a zip's end record gives them, read before
    zipfile reads the directory (None without such a record: zipfile says what is wrong)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - (22 + 0xFFFF)))  # the end record, and a comment of up to 64 KiB after it
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) < at + 22:
            return None
        entries = int.from_bytes(tail[at + 10 : at + 12], "little")
        directory = int.from_bytes(tail[at + 12 : at + 16], "little")
        if at < 20 or tail[at - 20 : at - 16] != b"PK\x06\x07":
            return entries, directory
        # ZIP64: the locator before the end record says where the ZIP64 end record is
        f.seek(int.from_bytes(tail[at - 12 : at - 4], "little"))
        record = f.read(56)
        if len(record) < 56 or record[:4] != b"PK\x06\x06":
            return None
        return int.from_bytes(record[32:40], "little"), int.from_bytes(record[40:48], "little")


def open_zip(path: Path, limits: ZipLimits, where: str) -> zipfile.ZipFile:
    """``path`` opened as a zip once its end record shows at most
    ``limits.members`` files in at most ``limits.directory_bytes`` of
    directory; a :class:`ZipRefused` naming ``where`` otherwise, or if it is
    no zip. Its members are judged one by one (:func:`check_member`)."""
    try:
        directory = _zip_directory(path)
    except OSError as exc:
        raise ZipRefused(f"{where}: not a zip file we can read ({exc})") from None
    if directory is not None and (directory[0] > limits.members or directory[1] > limits.directory_bytes):
        raise ZipRefused(
            f"{where}: a zip of {directory[0]:,} files in a directory of {directory[1]:,} bytes; "
            f"at most {limits.members:,} files and {limits.directory_bytes:,} bytes of directory are read"
        )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ZipRefused(f"{where}: not a zip file we can read ({exc})") from None
    if len(archive.infolist()) > limits.members:  # more than its end record said
        archive.close()
        raise ZipRefused(f"{where}: a zip of {len(archive.infolist()):,} files; at most {limits.members:,} are read")
    return archive


def check_member(info: zipfile.ZipInfo, limits: ZipLimits, where: str) -> None:
    """Refuse (:class:`ZipRefused`, naming ``where``) a member that declares
    more than ``limits.member_bytes``, or, when ``limits.max_ratio`` is set,
    packs over that ratio from ``limits.ratio_from`` bytes."""
    size, packed = info.file_size, info.compress_size
    if size > limits.member_bytes:
        raise ZipRefused(f"{where} unpacks to {size:,} bytes, over the {limits.member_bytes:,} read (a zip bomb?)")
    if limits.max_ratio is not None and size > limits.ratio_from and size > limits.max_ratio * packed:
        raise ZipRefused(
            f"{where}: {size:,} bytes packed into {packed:,}, over {limits.max_ratio}:1 (a zip bomb?); not read"
        )
