"""`harstream data --sessions` keeps its columns when a CSV's name is long
(a folder of calibration bouts such as exp17_user09_walking_upstairs_0.csv)."""

from __future__ import annotations

from harstream.commands.data import describe_dataset
from harstream.stream.data.recordings import load_csv


def _csv(path, rows: int = 100) -> None:
    lines = ["time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label"]
    lines += [f"{k / 50:.2f},1,0,0,0,0,0,WALKING" for k in range(rows)]
    path.write_text("\n".join(lines) + "\n")


def test_session_rows_line_up_whatever_the_file_names(tmp_path):
    _csv(tmp_path / "a_user02.csv")
    _csv(tmp_path / "exp17_user09_walking_upstairs_0_long_name.csv")
    text = describe_dataset(load_csv(tmp_path), "CSV recordings", sessions=True)
    table = text.split("\n\nsession")[1].splitlines()
    header = "session" + table[0]
    rows = table[1:]
    assert len(rows) == 2
    ends = {len(row) for row in rows} | {len(header.rstrip())}  # every row ends its last column together
    assert len(ends) == 1, text
    assert all(row.split()[1] in ("2", "9") for row in rows)  # the subject column read from each name


def test_a_csvs_barometer_column_is_reported_so_a_new_file_can_be_checked(tmp_path):
    """docs/recordings.md: `harstream data --data walk.csv` is the quickest check of
    a new file, pressure_hpa column included; the summary said nothing of it."""
    _csv(tmp_path / "plain.csv")
    plain = describe_dataset(load_csv(tmp_path), "CSV recordings").splitlines()
    assert not [line for line in plain if line.startswith("barometer")]
    lines = ["time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label,pressure_hpa"]
    lines += [f"{k / 50:.2f},1,0,0,0,0,0,WALKING," + ("1008.4" if k % 10 == 0 else "") for k in range(100)]
    (tmp_path / "stairs.csv").write_text("\n".join(lines) + "\n")
    text = describe_dataset(load_csv(tmp_path), "CSV recordings")
    assert "barometer 1 of 2 sessions, 10 readings" in text.splitlines(), text
