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
