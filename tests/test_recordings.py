"""Recording readers: every layout read from small fixtures built here, and
every kind of bad input refused with the file and line named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harstream.stream.data.recordings import (
    RecordingError,
    detect_layout,
    load_csv,
    load_dataset,
    load_hapt_rawdata,
    load_uci_folder,
)

# ------------------------------------------------------------------ builders


def signal(n: int, seed: int) -> np.ndarray:
    """(n, 6) distinct, reproducible samples: acc around 1 g, gyro around 0."""
    rng = np.random.default_rng(seed)
    return np.round(rng.normal([0, 0, 1, 0, 0, 0], 0.1, size=(n, 6)), 6)


def write_rawdata(folder: Path, lengths: dict[tuple[int, int], int], label_rows: list[str]) -> dict:
    """A HAPT RawData folder; returns the samples written per (exp, user)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for (exp, user), n in lengths.items():
        x = signal(n, seed=exp)
        np.savetxt(folder / f"acc_exp{exp:02d}_user{user:02d}.txt", x[:, :3], fmt="%.6f")
        np.savetxt(folder / f"gyro_exp{exp:02d}_user{user:02d}.txt", x[:, 3:], fmt="%.6f")
        written[(exp, user)] = x
    (folder / "labels.txt").write_text("".join(row + "\n" for row in label_rows))
    return written


@pytest.fixture
def rawdata(tmp_path: Path) -> Path:
    """Two sessions of 40 and 30 samples; labels 1-based inclusive."""
    folder = tmp_path / "RawData"
    write_rawdata(folder, {(1, 1): 40, (2, 3): 30}, ["1 1 5 3 6", "1 1 7 7 10", "2 3 1 1 30"])
    return folder


def replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


CSV_HEADER = "time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z"


def write_csv(path: Path, time: np.ndarray, x: np.ndarray, extra: dict[str, list[str]] | None = None) -> None:
    extra = extra or {}
    header = CSV_HEADER + "".join(f",{name}" for name in extra)
    rows = [header]
    for i, t in enumerate(time):
        cells = [repr(float(t))] + [repr(float(v)) for v in x[i]] + [extra[k][i] for k in extra]
        rows.append(",".join(cells))
    path.write_text("\n".join(rows) + "\n")


UCI_SIGNALS = [f"{g}_{a}" for g in ("body_acc", "body_gyro", "total_acc") for a in "xyz"]


def write_uci(root: Path, counts: dict[str, int]) -> None:
    """A UCI HAR folder; value = 10*split + signal + row/100 + column/100000
    (every value within the physical range the reader takes)."""
    for s, (split, n) in enumerate(counts.items()):
        signals = root / split / "Inertial Signals"
        signals.mkdir(parents=True)
        for c, name in enumerate(UCI_SIGNALS):
            rows = 10 * s + c + np.arange(n)[:, None] / 100 + np.arange(128)[None, :] / 100000
            np.savetxt(signals / f"{name}_{split}.txt", rows, fmt="%.6f")
        (root / split / f"y_{split}.txt").write_text("".join(f"{i % 6 + 1}\n" for i in range(n)))
        (root / split / f"subject_{split}.txt").write_text("".join(f"{2 + s}\n" for _ in range(n)))


# ------------------------------------------------------------ HAPT RawData


def test_rawdata_labels_are_1_based_inclusive_and_uncovered_samples_are_minus_1(tmp_path):
    folder = tmp_path / "RawData"
    written = write_rawdata(folder, {(1, 1): 40, (2, 3): 30}, ["1 1 5 3 6", "1 1 7 7 10", "2 3 1 1 30"])
    data = load_hapt_rawdata(folder)
    first, second = data.recordings
    assert (first.name, first.subject, second.name, second.subject) == ("exp01_user01", 1, "exp02_user03", 3)
    np.testing.assert_allclose(first.samples, written[(1, 1)])
    np.testing.assert_allclose(second.samples, written[(2, 3)])
    # Samples 3..6 (1-based) are indices 2..5.
    assert first.labels.tolist() == [-1, -1, 5, 5, 5, 5, 7, 7, 7, 7] + [-1] * 30
    assert second.labels.tolist() == [1] * 30
    assert data.subjects() == [1, 3]


def test_load_dataset_detects_rawdata_folder_and_its_parent(rawdata):
    assert detect_layout(rawdata) == detect_layout(rawdata.parent) == "hapt-rawdata"
    assert [r.name for r in load_dataset(rawdata.parent).recordings] == ["exp01_user01", "exp02_user03"]


def test_rawdata_hash_changes_with_content(rawdata):
    before = load_hapt_rawdata(rawdata).sha256
    replace_line(rawdata / "acc_exp02_user03.txt", 4, "0.5 0.5 0.5")
    assert load_hapt_rawdata(rawdata).sha256 != before


def _delete(name):
    return lambda folder: (folder / name).unlink()


def _line(name, number, text):
    return lambda folder: replace_line(folder / name, number, text)


def _write(name, text):
    return lambda folder: (folder / name).write_text(text)


def _drop_last_line(name):
    def change(folder):
        lines = (folder / name).read_text().splitlines()
        (folder / name).write_text("\n".join(lines[:-1]) + "\n")

    return change


def _four_columns(name):
    def change(folder):
        rows = np.loadtxt(folder / name)
        np.savetxt(folder / name, np.column_stack([rows, rows[:, 0]]), fmt="%.6f")

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (_delete("gyro_exp02_user03.txt"), "gyro_exp02_user03.txt: missing (needed with acc_exp02_user03.txt)"),
        (_delete("labels.txt"), "labels.txt: missing"),
        (_line("acc_exp01_user01.txt", 5, "0.1 0.2"), "acc_exp01_user01.txt line 5: 2 values, expected 3"),
        (
            _line("gyro_exp01_user01.txt", 3, "0.1 abc 0.3"),
            "gyro_exp01_user01.txt line 3, value 2: 'abc' is not a number",
        ),
        (
            _line("acc_exp01_user01.txt", 9, "0.1 nan 0.3"),
            "acc_exp01_user01.txt line 9, value 2: 'nan' is not a finite number",
        ),
        (_four_columns("acc_exp02_user03.txt"), "acc_exp02_user03.txt line 1: 4 values, expected 3"),
        (_drop_last_line("gyro_exp01_user01.txt"), "gyro_exp01_user01.txt: 39 samples but acc_exp01_user01.txt has 40"),
        (
            _line("labels.txt", 3, "2 3 1 1 31"),
            "labels.txt line 3: end sample 31 is past the end of acc_exp02_user03.txt (30 samples)",
        ),
        (_line("labels.txt", 2, "1 1 7 7"), "labels.txt line 2: 4 values, expected 5"),
        (_line("labels.txt", 2, "1 1 7 7 x"), "labels.txt line 2, end: 'x' is not a whole number"),
        (_line("labels.txt", 2, "1 1 13 7 10"), "labels.txt line 2: activity 13 is not a HAPT label"),
        (_line("labels.txt", 2, "1 1 7 0 10"), "labels.txt line 2: samples 0..10 are not a range"),
        (_line("labels.txt", 2, "1 1 7 6 10"), "labels.txt line 2: samples 6..10 overlap the segment of line 1"),
        (_line("labels.txt", 2, "4 1 7 6 10"), "labels.txt line 2: experiment 4 user 1 has no acc_exp04_user01.txt"),
        (_write("acc_exp02_user03.txt", ""), "acc_exp02_user03.txt: no data rows"),
    ],
)
def test_bad_rawdata_is_refused_naming_file_and_line(rawdata, change, message):
    change(rawdata)
    with pytest.raises(RecordingError) as caught:
        load_hapt_rawdata(rawdata)
    assert message in str(caught.value)
    assert str(rawdata) in str(caught.value)


# ------------------------------------------------------------------ own CSV


def test_csv_at_50hz_is_read_as_is_with_numeric_and_named_labels(tmp_path):
    x = signal(6, seed=1)
    labels = ["1", "WALKING", "", "-1", "sit_to_stand", "unknown"]
    write_csv(tmp_path / "walk_user07.csv", np.arange(6) * 0.02 + 3.0, x, {"label": labels})
    (rec,) = load_csv(tmp_path / "walk_user07.csv").recordings
    assert (rec.name, rec.subject) == ("walk_user07", 7)
    np.testing.assert_allclose(rec.samples, x)
    assert rec.labels.tolist() == [1, 1, -1, -1, 8, -1]


def test_csv_subject_column_beats_file_name_and_default_is_0(tmp_path):
    x = signal(3, seed=2)
    write_csv(tmp_path / "a_user07.csv", np.arange(3) * 0.02, x, {"subject": ["12"] * 3})
    write_csv(tmp_path / "b.csv", np.arange(3) * 0.02, x)
    a, b = load_csv(tmp_path).recordings
    assert (a.subject, b.subject) == (12, 0)
    assert (a.labels == -1).all()


def test_csv_header_is_case_and_order_insensitive(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("Gyro_Z,gyro_y,gyro_x,acc_z,acc_y,acc_x,Time,LABEL\n6,5,4,3,2,1,0.0,2\n6,5,4,3,2,1,0.02,2\n")
    (rec,) = load_csv(path).recordings
    assert rec.samples.tolist() == [[1, 2, 3, 4, 5, 6]] * 2
    assert rec.labels.tolist() == [2, 2]


def test_csv_with_jitter_within_10_percent_is_not_resampled(tmp_path):
    time = np.arange(50) * 0.02 + np.tile([0.0, 0.0015], 25)
    x = signal(50, seed=3)
    write_csv(tmp_path / "r.csv", time, x)
    np.testing.assert_allclose(load_csv(tmp_path / "r.csv").recordings[0].samples, x)


def test_csv_at_100hz_is_resampled_to_50hz_linearly_with_nearest_labels(tmp_path):
    time = np.arange(101) * 0.01  # 1 s at 100 Hz
    ramp = np.column_stack([time * (c + 1) for c in range(6)])
    labels = ["4"] * 50 + ["5"] * 51
    write_csv(tmp_path / "r.csv", time, ramp, {"label": labels})
    (rec,) = load_csv(tmp_path / "r.csv").recordings
    grid = np.arange(51) * 0.02
    np.testing.assert_allclose(rec.samples, np.column_stack([grid * (c + 1) for c in range(6)]), atol=1e-9)
    assert rec.labels.tolist() == [4] * 25 + [5] * 26


def test_csv_with_irregular_timestamps_is_interpolated_by_time(tmp_path):
    rng = np.random.default_rng(4)
    time = np.cumsum(rng.uniform(0.005, 0.035, size=200))
    x = np.column_stack([np.sin(time)] * 3 + [np.cos(time)] * 3)
    write_csv(tmp_path / "r.csv", time, x)
    (rec,) = load_csv(tmp_path / "r.csv").recordings
    grid = time[0] + np.arange(len(rec)) * 0.02
    assert grid[-1] <= time[-1] < grid[-1] + 0.02
    np.testing.assert_allclose(rec.samples[:, 0], np.sin(grid), atol=2e-4)


def test_csv_is_resampled_to_the_samples_a_live_phone_with_the_same_timestamps_gets(tmp_path):
    from harstream.stream.core.resample import Resampler

    rng = np.random.default_rng(8)
    time = 1.7e3 + np.cumsum(rng.uniform(0.004, 0.03, size=600))  # ~70 Hz, jittered
    x = signal(len(time), seed=8)
    write_csv(tmp_path / "r.csv", time, x)
    (rec,) = load_csv(tmp_path / "r.csv").recordings
    live = Resampler(hold=0.0)
    chunks = []
    for part in np.array_split(np.arange(len(time)), 17):  # phone-sized batches
        live.push("acc", time[part], x[part, :3])
        live.push("gyro", time[part], x[part, 3:])
        chunks += live.pull()
    assert chunks[0].t0 == time[0] and not any(c.new_segment for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), rec.samples)


def test_load_dataset_detects_csv_file_and_folder(tmp_path):
    write_csv(tmp_path / "one.csv", np.arange(3) * 0.02, signal(3, 5))
    write_csv(tmp_path / "two.csv", np.arange(4) * 0.02, signal(4, 6))
    assert detect_layout(tmp_path) == detect_layout(tmp_path / "one.csv") == "csv"
    assert [len(r) for r in load_dataset(tmp_path).recordings] == [3, 4]
    assert [r.name for r in load_dataset(tmp_path / "two.csv").recordings] == ["two"]


ROW = "0.04,0.1,0.2,1.0,0.0,0.0,0.0"


@pytest.mark.parametrize(
    "text, message",
    [
        ("time,acc_x,acc_y,acc_z,gyro_x,gyro_y\n", "r.csv line 1 (header): missing gyro_z"),
        (CSV_HEADER + ",magnet_x\n", "r.csv line 1 (header): unknown 'magnet_x'"),
        (CSV_HEADER.replace(",", ";") + "\n", "separated by commas, not semicolons"),
        ("", "r.csv line 1: empty; a header row is required"),
        (CSV_HEADER + "\n", "r.csv: no data rows after the header"),
        (f"{CSV_HEADER}\n0.0,0,0,1,0,0,0\n0.02,0,0,1,0,0\n", "r.csv line 3: 6 fields, the header has 7"),
        (
            f"{CSV_HEADER}\n0.0,0,0,1,0,0,0\n\n0.02,0,zero,1,0,0,0\n",
            "r.csv line 4, column acc_y: 'zero' is not a finite number",
        ),
        (
            f"{CSV_HEADER}\n0.0,0,0,1,0,0,0\n0.02,0,0,,0,0,0\n",
            "r.csv line 3, column acc_z: empty is not a finite number",
        ),
        (
            f"{CSV_HEADER},label\n0.0,0,0,1,0,0,0,1\n0.02,0,0,1,0,0,0,JOGGING\n",
            "r.csv line 3, column label: 'JOGGING' is not a HAPT label",
        ),
        (f"{CSV_HEADER},label\n0.0,0,0,1,0,0,0,13\n", "r.csv line 2, column label: '13' is not a HAPT label"),
        (
            f"{CSV_HEADER},subject\n0.0,0,0,1,0,0,0,1\n0.02,0,0,1,0,0,0,2\n",
            "r.csv line 3, column subject: subject '2' differs",
        ),
        (
            f"{CSV_HEADER}\n0.0,0,0,1,0,0,0\n0.02,0,0,1,0,0,0\n0.02,0,0,1,0,0,0\n",
            "r.csv line 4, column time: 0.02 is not after",
        ),
        (f"{CSV_HEADER}\n0,0,0,1,0,0,0\n20,0,0,1,0,0,0\n40,0,0,1,0,0,0\n", "column time: median step 20 means 0.05 Hz"),
        (
            f"{CSV_HEADER}\n0.0,0,0,1,0,0,0\n0.02,0,0,1,0,0,0\n0.04,0,0,1,0,0,0\n1.0,0,0,1,0,0,0\n",
            "r.csv line 5, column time: 0.96 s pause",
        ),
    ],
)
def test_bad_csv_is_refused_naming_file_line_and_column(tmp_path, text, message):
    (tmp_path / "r.csv").write_text(text)
    with pytest.raises(RecordingError) as caught:
        load_csv(tmp_path / "r.csv")
    assert message in str(caught.value)


def test_empty_csv_folder_and_missing_path_are_refused(tmp_path):
    with pytest.raises(RecordingError, match="no \\*.csv files"):
        load_csv(tmp_path)
    with pytest.raises(RecordingError, match="no such file or folder"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(RecordingError, match="not a recording source"):
        load_dataset(tmp_path)


# ----------------------------------------------------------- UCI HAR folder


def test_uci_folder_gives_windows_in_uci_channel_order_with_classes_0_to_5(tmp_path):
    write_uci(tmp_path / "HARDataset", {"train": 3, "test": 2})
    windows = load_uci_folder(tmp_path)  # finds HARDataset/ below
    assert windows.x.shape == (5, 128, 9) and windows.x.dtype == np.float32
    assert windows.split.tolist() == ["train"] * 3 + ["test"] * 2
    assert windows.y.tolist() == [0, 1, 2, 0, 1]
    assert windows.subjects.tolist() == [2, 2, 2, 3, 3]
    # Channel c of row r in split s holds 10 s + c + r / 100 (+ time / 100000).
    test = windows.part("test")
    np.testing.assert_allclose(test.x[1, 5, :], 10 + np.arange(9) + 0.01 + 0.00005, rtol=1e-6)
    np.testing.assert_allclose(windows.x[2, 127, :], np.arange(9) + 0.02 + 0.00127, rtol=1e-6, atol=1e-7)


def test_load_dataset_refuses_uci_folder_and_points_to_load_uci_folder(tmp_path):
    write_uci(tmp_path, {"train": 1, "test": 1})
    assert detect_layout(tmp_path) == "uci-har"
    with pytest.raises(RecordingError, match="load_uci_folder"):
        load_dataset(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        (_delete("test/y_test.txt"), "y_test.txt: missing"),
        (_delete("train/Inertial Signals/body_gyro_z_train.txt"), "body_gyro_z_train.txt: missing"),
        (
            _line("train/Inertial Signals/total_acc_y_train.txt", 2, " ".join(["1.0"] * 127)),
            "total_acc_y_train.txt line 2: 127 values, expected 128",
        ),
        (
            _line("test/Inertial Signals/body_acc_x_test.txt", 1, "x " + " ".join(["1.0"] * 127)),
            "body_acc_x_test.txt line 1, value 1: 'x' is not a number",
        ),
        (
            _drop_last_line("test/Inertial Signals/body_acc_z_test.txt"),
            "body_acc_z_test.txt: 1 rows but test/Inertial Signals/body_acc_x_test.txt has 2",
        ),
        (
            _write("train/subject_train.txt", "1\n1\n"),
            "subject_train.txt: 2 rows but train/Inertial Signals/body_acc_x_train.txt has 3",
        ),
        (
            _write("train/y_train.txt", "1\n\n7\n1\n"),
            "y_train.txt line 3: 7 is not a whole number 1-6 (activity per window)",
        ),
        (_write("test/subject_test.txt", "4\n2.5\n"), "subject_test.txt line 2: 2.5 is not a whole number 0 or more"),
    ],
)
def test_bad_uci_folder_is_refused_naming_file_and_line(tmp_path, change, message):
    write_uci(tmp_path, {"train": 3, "test": 2})
    change(tmp_path)
    with pytest.raises(RecordingError) as caught:
        load_uci_folder(tmp_path)
    assert message in str(caught.value)


# ------------------------------------------------------- harstream data CLI


def harstream_data(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harstream", "data", *args], capture_output=True, text=True, timeout=120
    )


def test_data_command_summarises_a_rawdata_folder(rawdata):
    done = harstream_data("--data", str(rawdata), "--sessions")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "HAPT RawData folder" in out
    assert "sessions  2\n" in out and "subjects  2\n" in out and "samples   70 (0:00:01 at 50 Hz)" in out
    assert "  5 STANDING                         4" in out
    assert "  1 WALKING                         30" in out
    assert " -1 unknown                         32" in out
    assert "exp02_user03" in out


def test_data_command_summarises_a_uci_folder(tmp_path):
    write_uci(tmp_path, {"train": 3, "test": 2})
    done = harstream_data("--data", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "windows   5\n" in done.stdout
    assert "0 WALKING                         1        1        2" in done.stdout
    assert "windows                           3        2        5" in done.stdout


def test_data_command_reports_bad_input_on_stderr_with_exit_code_2(rawdata):
    replace_line(rawdata / "labels.txt", 1, "1 1 5 3 99")
    done = harstream_data("--data", str(rawdata))
    assert done.returncode == 2
    assert "labels.txt line 1: end sample 99 is past the end of acc_exp01_user01.txt (40 samples)" in done.stderr


def test_data_command_on_embedded_data_prints_61_sessions(embedded):
    done = harstream_data()  # embedded is the default; the fixture has warmed the cache
    assert done.returncode == 0, done.stderr
    assert "sessions  61\n" in done.stdout
    assert "subjects  30\n" in done.stdout
    assert "samples   1,122,772" in done.stdout


# ------------------------------------------------------------ large CSV files


def _long_csv(path: Path, n: int = 1050) -> None:
    time = np.arange(n) / 50
    labels = [("WALKING", "SITTING", "4")[(i // 300) % 3] for i in range(n)]
    pressure = [f"{1000 + i / 1000:.3f}" if i % 25 == 0 else "" for i in range(n)]
    write_csv(path, time, signal(n, seed=5), {"label": labels, "subject": ["7"] * n, "pressure_hpa": pressure})


def test_a_csv_read_a_chunk_at_a_time_is_the_csv_read_whole(tmp_path, monkeypatch):
    import harstream.stream.data.recordings as recordings

    path = tmp_path / "long.csv"
    _long_csv(path)
    whole = recordings.read_csv_recording(path)
    monkeypatch.setattr(recordings, "CSV_CHUNK_ROWS", 100)  # eleven chunks, a label run across each edge
    chunked = recordings.read_csv_recording(path)
    assert np.array_equal(chunked.samples, whole.samples) and np.array_equal(chunked.labels, whole.labels)
    assert np.array_equal(chunked.pressure, whole.pressure) and chunked.pressure[0, 0] == 0.0
    assert chunked.subject == whole.subject == 7 and len(whole.samples) == 1050


@pytest.mark.parametrize(
    "line, text, says",
    [
        (778, "15.52,0,0,1,0,0,abc,WALKING,7,", "line 778, column gyro_z"),
        (901, "17.98,0,0,1,0,0,0,WALKING,8,", "line 901, column subject: subject '8' differs from '7'"),
    ],
)
def test_a_bad_row_in_a_later_chunk_is_named_by_its_own_line(tmp_path, monkeypatch, line, text, says):
    import harstream.stream.data.recordings as recordings

    path = tmp_path / "long.csv"
    _long_csv(path)
    replace_line(path, line, text)
    monkeypatch.setattr(recordings, "CSV_CHUNK_ROWS", 100)
    with pytest.raises(RecordingError, match=says):
        recordings.read_csv_recording(path)
