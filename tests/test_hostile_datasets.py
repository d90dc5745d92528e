"""Dataset folders other than Sensor Logger's made hostile: a HAPT RawData
folder and a UCI HAR Dataset folder handed to ``harstream data`` (the same
readers ``train --data`` and ``simulate --source`` use). Each is refused
naming its file and line, never a traceback, never read as numbers no body
makes, and never held whole in memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

UCI_SIGNALS = [f"{g}_{a}" for g in ("body_acc", "body_gyro", "total_acc") for a in "xyz"]


def write_rawdata(folder: Path, n: int = 300) -> Path:
    """One HAPT session of ``n`` samples at rest, labelled standing."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "acc_exp01_user01.txt").write_text("0.01 -0.02 0.98\n" * n)
    (folder / "gyro_exp01_user01.txt").write_text("0.001 0.002 -0.003\n" * n)
    (folder / "labels.txt").write_text(f"1 1 5 1 {n}\n")
    return folder


def write_uci(root: Path, n: int = 2) -> Path:
    for split in ("train", "test"):
        signals = root / split / "Inertial Signals"
        signals.mkdir(parents=True)
        for name in UCI_SIGNALS:
            (signals / f"{name}_{split}.txt").write_text((" ".join(["0.5"] * 128) + "\n") * n)
        (root / split / f"y_{split}.txt").write_text("1\n" * n)
        (root / split / f"subject_{split}.txt").write_text("3\n" * n)
    return root


def set_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def harstream_data(folder: Path, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harstream", "data", "--data", str(folder)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "file, line, says",
    [
        ("acc_exp01_user01.txt", "1e308 0 1", "acc_exp01_user01.txt line 101, value 1: 1e+308 is beyond ±100 g"),
        ("acc_exp01_user01.txt", "0 0 -980.665", "acc_exp01_user01.txt line 101, value 3: -980.665 is beyond ±100 g"),
        ("gyro_exp01_user01.txt", "0 573 0", "gyro_exp01_user01.txt line 101, value 2: 573 is beyond ±100 rad/s"),
    ],
)
def test_a_rawdata_value_beyond_any_body_is_refused_naming_file_line_and_value(tmp_path, file, line, says):
    # before, 1e308 g was read: `harstream data` summarised it and `simulate`
    # published it as float32 infinity ("overflow encountered in cast")
    folder = write_rawdata(tmp_path / "RawData")
    set_line(folder / file, 101, line)
    done = harstream_data(folder)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_a_uci_window_value_beyond_any_body_is_refused_naming_file_line_and_value(tmp_path):
    root = write_uci(tmp_path / "HARDataset")
    set_line(root / "test/Inertial Signals/body_gyro_y_test.txt", 2, " ".join(["0.5"] * 127 + ["-1e39"]))
    done = harstream_data(root)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "body_gyro_y_test.txt line 2, value 128: -1e+39 is beyond ±100 rad/s" in done.stderr


def test_rawdata_and_uci_at_the_edge_of_the_physical_range_are_read(tmp_path):
    folder = write_rawdata(tmp_path / "RawData")
    set_line(folder / "acc_exp01_user01.txt", 5, "100 -100 1")
    set_line(folder / "gyro_exp01_user01.txt", 5, "-100 100 0")
    assert harstream_data(folder).returncode == 0
    root = write_uci(tmp_path / "HARDataset")
    set_line(root / "train/Inertial Signals/total_acc_x_train.txt", 1, " ".join(["100"] * 128))
    done = harstream_data(root)
    assert done.returncode == 0, done.stderr


GIB = 1 << 30


@pytest.mark.parametrize(
    "file, line",
    [("acc_exp01_user01.txt", 301), ("gyro_exp01_user01.txt", 301), ("labels.txt", 2)],
)
def test_a_rawdata_file_ending_in_a_gigabyte_without_a_line_end_is_refused_at_once(tmp_path, file, line):
    # before, a 1 GiB sparse tail (NUL bytes, no newline) took 20 s and 4 GB of memory
    # to be refused (numpy's reader and then the Python scan held the line whole)
    folder = write_rawdata(tmp_path / "RawData")
    with open(folder / file, "r+b") as f:
        f.truncate(GIB)  # sparse: no disk used
    done = harstream_data(folder, timeout=10)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{file} line {line}: longer than 65,536 bytes without a line end" in done.stderr


def test_a_uci_file_of_one_endless_line_is_refused_at_once(tmp_path):
    root = write_uci(tmp_path / "HARDataset")
    with open(root / "train/Inertial Signals/total_acc_z_train.txt", "wb") as f:
        f.truncate(GIB)
    done = harstream_data(root, timeout=10)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "total_acc_z_train.txt line 1: longer than 65,536 bytes without a line end" in done.stderr


@pytest.mark.parametrize("length, refused", [(65_536, False), (65_537, True)])
def test_a_line_at_the_limit_across_the_readers_chunk_boundary_is_judged_by_its_whole_length(tmp_path, length, refused):
    row = "0.01 -0.02 0.98\n"  # 16 bytes
    before = (1 << 20) // len(row) - 64  # the long line starts 1 KiB before the first 1 MiB ends
    folder = write_rawdata(tmp_path / "RawData", n=before + 200)
    long = "0 0 1" + " " * (length - 5)
    (folder / "acc_exp01_user01.txt").write_text(row * before + long + "\n" + row * 199)
    done = harstream_data(folder)
    if refused:
        assert done.returncode == 2
        assert f"acc_exp01_user01.txt line {before + 1}: longer than 65,536 bytes" in done.stderr
    else:
        assert done.returncode == 0, done.stderr


def test_two_files_naming_the_same_session_are_refused_naming_both(tmp_path):
    # before, acc_exp1_user1.txt and acc_exp01_user01.txt were both session (1, 1):
    # whichever the folder listed last was read and the other silently dropped
    folder = write_rawdata(tmp_path / "RawData")
    (folder / "acc_exp1_user1.txt").write_text("0.5 0.5 0.5\n" * 300)
    done = harstream_data(folder)
    assert done.returncode == 2, done.stdout + done.stderr
    assert (
        "acc_exp1_user1.txt: the same acc file of experiment 1 user 1 as acc_exp01_user01.txt; keep one of them"
        in done.stderr
    )
