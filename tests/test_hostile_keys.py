"""CURVE key folders made hostile (``harstream keys DIR``, then ``--keys DIR``):
a junk, truncated or wrong-length key file, a FIFO or a symlink loop among the
clients' keys. A part given such a folder refuses to start, naming the file;
before, a bad file in ``clients/`` made pyzmq let no client in without a word,
and a FIFO there froze the part at start-up (SIGTERM could not stop it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harstream.stream.bus.auth import generate_keys


@pytest.fixture(scope="module")
def made_keys(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("keys") / "k"
    generate_keys(folder)
    return folder


def proxy(keys: Path, port: int) -> subprocess.CompletedProcess:
    """``harstream proxy --keys`` on four loopback ports; it must stop by itself within 10 s."""
    ends = [f"tcp://127.0.0.1:{port + i}" for i in range(4)]
    return subprocess.run(
        [sys.executable, "-m", "harstream", "proxy", "--keys", str(keys), "--ingest", ends[0]]
        + ["--ingest-backend", ends[1], "--output", ends[2], "--output-backend", ends[3]],
        capture_output=True,
        text=True,
        timeout=10,
    )


def _junk(folder: Path) -> str:
    (folder / "clients" / "notes.key").write_text("my other laptop\n")
    return "clients/notes.key: no public-key line"


def _truncated(folder: Path) -> str:
    path = folder / "bus.key_secret"
    path.write_bytes(path.read_bytes()[:200])
    return "bus.key_secret: no public-key line"


def _short_key(folder: Path) -> str:
    path = folder / "bus.key_secret"
    path.write_text(path.read_text().replace('secret-key = "', 'secret-key = "', 1).replace('"\n', 'AB"\n', 2))
    return "bus.key_secret: its public-key is not 40 Z85 characters"


def _fifo(folder: Path) -> str:
    os.mkfifo(folder / "clients" / "pipe.key")
    return "clients/pipe.key: not a regular file"


def _loop(folder: Path) -> str:
    (folder / "clients" / "loop.key").symlink_to("loop2.key")
    (folder / "clients" / "loop2.key").symlink_to("loop.key")
    return "clients/loop.key: cannot be read (Too many levels of symbolic links)"


def _huge(folder: Path) -> str:
    with open(folder / "clients" / "big.key", "wb") as f:
        f.truncate(1 << 30)
    return "clients/big.key: over 4,096 bytes; not a key file"


@pytest.mark.parametrize(
    "spoil", [_junk, _truncated, _short_key, _fifo, _loop, _huge], ids=lambda f: f.__name__.strip("_")
)
def test_a_bad_key_file_stops_the_part_at_start_naming_it(made_keys, tmp_path, spoil):
    folder = tmp_path / "k"
    shutil.copytree(made_keys, folder)
    says = spoil(folder)
    done = proxy(folder, 46200)
    assert done.returncode == 1, done.stdout + done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_a_secret_key_others_may_read_is_taken_with_a_warning(made_keys, tmp_path):
    folder = tmp_path / "k"
    shutil.copytree(made_keys, folder)
    (folder / "bus.key_secret").chmod(0o644)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harstream", "proxy", "--keys", str(folder)]
        + [
            f"--{name}=tcp://127.0.0.1:{46700 + i}"
            for i, name in enumerate(("ingest", "ingest-backend", "output", "output-backend"))
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        seen = ""
        while "proxy output" not in seen and proc.poll() is None:
            seen += proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(10)
    assert "bus.key_secret: a secret key others on this machine may read (mode 644); chmod 600 it" in seen
    assert "proxy output" in seen
