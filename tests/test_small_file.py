"""read_small_file: the one way a small file others may write is read (key
files, owner records, personal models, model metadata)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harstream.stream.files.small_file import FileRefused, read_small_file


def test_a_small_regular_file_is_read_with_its_mode(tmp_path):
    path = tmp_path / "owner"
    path.write_bytes(b"ab12\n")
    path.chmod(0o640)
    got = read_small_file(path, 200)
    assert got.data == b"ab12\n"
    assert got.mode & 0o777 == 0o640


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # in a child: were it to wait for a writer, the timeout ends it (and the test)
    code = (
        "import sys; from harstream.stream.files.small_file import read_small_file; read_small_file(sys.argv[1], 200)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=20)
    assert f"FileRefused: {fifo}: not a regular file but a FIFO" in done.stderr


def test_a_symlink_is_refused_unless_followed(tmp_path):
    target = tmp_path / "real"
    target.write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(FileRefused, match="not a regular file but a symlink"):
        read_small_file(link, 200)
    assert read_small_file(link, 200, follow_symlinks=True).data == b"x"


def test_a_followed_symlink_to_a_device_is_refused(tmp_path):
    link = tmp_path / "endless"
    link.symlink_to("/dev/zero")
    with pytest.raises(FileRefused, match="not a regular file but a device"):
        read_small_file(link, 200, follow_symlinks=True)


def test_an_oversized_file_is_refused_unread_naming_it_and_the_bound(tmp_path):
    path = tmp_path / "big"
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # sparse: read, it would be a gigabyte
    with pytest.raises(FileRefused) as refused:
        read_small_file(path, 4096)
    assert str(refused.value) == f"{path}: over 4,096 bytes"
    (tmp_path / "exact").write_bytes(b"y" * 4096)
    assert len(read_small_file(tmp_path / "exact", 4096).data) == 4096


def test_a_missing_file_is_the_open_s_own_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_small_file(tmp_path / "none", 200)
