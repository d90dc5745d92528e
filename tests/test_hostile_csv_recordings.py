"""CSV recordings a person (or a broken exporter) might hand ``harstream
data``, ``simulate`` or ``calibrate``: each refused with its file, line and
column, never a traceback, and never read as numbers no body makes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harstream.stream.data.recordings import RecordingError, load_csv

HEADER = "time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label\n"


def _rows(n: int = 200, row: str = "0,0,1,0,0,0,1", first: int = 0) -> str:
    return "".join(f"{i * 0.02:.2f},{row}\n" for i in range(first, n))


@pytest.mark.parametrize(
    "bad_row, says",
    [
        ("1e300,0,1,0,0,0,1", "line 2, column acc_x: 1e+300 is beyond ±100 g"),
        ("0,0,-9.80665e3,0,0,0,1", "line 2, column acc_z: -9806.65 is beyond ±100 g"),
        ("0,0,1,0,0,5729.6,1", "line 2, column gyro_z: 5729.6 is beyond ±100 rad/s (rotation in rad/s, deg/s"),
    ],
)
def test_a_csv_value_beyond_the_physical_range_is_refused_naming_line_and_column(tmp_path, bad_row, says):
    # before, 1e300 g was read and became inf in float32: a simulated device the worker refused
    # message by message (non_finite), a calibration fitted on overflowing features
    (tmp_path / "r.csv").write_text(HEADER + "0.00," + bad_row + "\n" + _rows(first=1))
    with pytest.raises(RecordingError) as refused:
        load_csv(tmp_path / "r.csv")
    assert says in str(refused.value)


def test_a_csv_at_the_edge_of_the_physical_range_is_read(tmp_path):
    (tmp_path / "edge.csv").write_text(HEADER + _rows(row="100,-100,1,100,-100,0,1"))
    samples = load_csv(tmp_path / "edge.csv").recordings[0].samples
    assert samples.shape == (200, 6) and samples[0].tolist() == [100, -100, 1, 100, -100, 0]


def test_a_field_longer_than_the_csv_reader_takes_is_a_usage_error_naming_its_line_not_a_traceback(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text(HEADER + _rows() + "4.00," + "1" * 200_000 + ",0,1,0,0,0,1\n")
    with pytest.raises(RecordingError) as refused:
        load_csv(path)
    assert "long.csv line 202: not a CSV row we read" in str(refused.value)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from harstream.cli import main; sys.exit(main())",
            "data",
            "--data",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "line 202" in done.stderr


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_csv_saved_as_utf16_or_utf32_is_refused_saying_to_save_it_as_utf8(tmp_path, encoding):
    # before: "unknown '\ufffd\ufffdt\x00i\x00m\x00e\x00', ..." for each column of the header
    (tmp_path / "sheet.csv").write_text(HEADER + _rows(), encoding=encoding)
    with pytest.raises(RecordingError) as refused:
        load_csv(tmp_path / "sheet.csv")
    assert "sheet.csv line 1: UTF-16 or UTF-32 text" in str(refused.value) and "UTF-8" in str(refused.value)


def test_a_tab_separated_file_is_refused_saying_so(tmp_path):
    (tmp_path / "tabs.csv").write_text((HEADER + _rows()).replace(",", "\t"))
    with pytest.raises(RecordingError) as refused:
        load_csv(tmp_path / "tabs.csv")
    assert "separated by commas, not tabs" in str(refused.value)
