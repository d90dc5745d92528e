"""The pressure_hpa column of CSV recordings, and calibration's stairs checked by it."""

from __future__ import annotations

import numpy as np
import pytest

from harstream.stream.core.barometer import pressure_hpa
from harstream.stream.data.recordings import RecordingError, read_csv_recording
from harstream.stream.personal.calibration import check_stairs_by_barometer

HEADER = "time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label,pressure_hpa\n"


def _csv(tmp_path, climb_m_s: float, every: int = 5, name="take.csv"):
    """30 s walking then 30 s labelled upstairs at 50 Hz; a 10 Hz barometer
    climbing ``climb_m_s`` during the stairs (empty cells between readings)."""
    t = np.arange(3000) / 50
    label = np.where(t < 30, "walking", "walking_upstairs")
    height = climb_m_s * np.clip(t - 30, 0, None)
    hpa = pressure_hpa(height, 1004.0)
    lines = [
        f"{ti:.2f},0,1,0,0,0,0,{lab},{f'{p:.3f}' if i % every == 0 else ''}\n"
        for i, (ti, lab, p) in enumerate(zip(t, label, hpa))
    ]
    path = tmp_path / name
    path.write_text(HEADER + "".join(lines))
    return path


def test_the_pressure_column_is_read_with_times_from_the_first_row(tmp_path):
    rec = read_csv_recording(_csv(tmp_path, 0.25))
    assert rec.pressure.shape == (600, 2)
    np.testing.assert_allclose(rec.pressure[:2, 0], [0.0, 0.1])
    assert rec.pressure[-1, 1] < rec.pressure[0, 1]  # it climbed


def test_a_recording_without_the_column_has_no_pressure(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n0,0,1,0,0,0,0\n0.02,0,1,0,0,0,0\n")
    assert read_csv_recording(path).pressure is None


@pytest.mark.parametrize("value", ["1200", "nan", "high"])
def test_a_pressure_that_cannot_be_right_is_an_error_naming_its_line(tmp_path, value):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "0,0,1,0,0,0,0,walking,1001\n0.02,0,1,0,0,0,0,walking," + value + "\n")
    with pytest.raises(RecordingError, match=r"bad.csv line 3, column pressure_hpa"):
        read_csv_recording(path)


def test_calibration_keeps_stairs_its_barometer_saw_climbing(tmp_path):
    rec, said = check_stairs_by_barometer(read_csv_recording(_csv(tmp_path, 0.25)))
    assert (rec.labels == 2).sum() == 1500
    assert said and said[0].startswith("WALKING_UPSTAIRS: its barometer measured +0.2")


def test_calibration_refuses_stairs_its_barometer_saw_level(tmp_path):
    rec, said = check_stairs_by_barometer(read_csv_recording(_csv(tmp_path, 0.0)))
    assert (rec.labels == 2).sum() == 0 and (rec.labels == 1).sum() == 1500
    assert said[0].startswith("refused WALKING_UPSTAIRS")
