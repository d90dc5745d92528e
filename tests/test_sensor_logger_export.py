"""Sensor Logger's exported recordings (the app's zip, or it unpacked) read as
recordings: 50 Hz, g and rad/s, in Android's frame, labelled by the export's
name or its annotations, the barometer kept, and refused by name where the
export lacks what harstream needs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from harstream.cli import main
from harstream.stream.data.recordings import RecordingError, detect_layout, load_dataset, load_device_recordings

G = 9.80665
T0_NS = 1_765_000_000_000_000_000  # an epoch time in ns, as the app writes it


def _acc(t: np.ndarray) -> np.ndarray:
    """A smooth motion in g: gravity along y and a 1.5 Hz sway (what a walk looks like, roughly)."""
    return np.column_stack(
        [0.2 * np.sin(2 * np.pi * 1.5 * t), 1.0 + 0.1 * np.cos(2 * np.pi * 1.5 * t), 0.05 * t / t[-1]]
    )


def _gyro(t: np.ndarray) -> np.ndarray:
    return np.column_stack([0.5 * np.sin(2 * np.pi * 0.7 * t), 0.1 * np.ones_like(t), -0.3 * np.cos(2 * np.pi * t)])


def _times(seconds: float, rate: float, seed: int) -> np.ndarray:
    """Uneven reading times, as a phone's are."""
    t = np.arange(0, seconds, 1 / rate)
    return np.sort(t + np.random.default_rng(seed).uniform(-0.3, 0.3, len(t)) / rate).clip(0)


def _sensor_csv(t: np.ndarray, xyz: np.ndarray) -> str:
    rows = [
        f"{T0_NS + int(round(s * 1e9))},{s:.6f},{float(v[2])!r},{float(v[1])!r},{float(v[0])!r}" for s, v in zip(t, xyz)
    ]
    return "time,seconds_elapsed,z,y,x\n" + "\n".join(rows) + "\n"


def _android_files(seconds: float = 12.0) -> dict[str, str]:
    ta, tg = _times(seconds, 100, 1), _times(seconds, 200, 2)
    tb = np.arange(0, seconds, 1.0)
    barometer = "time,seconds_elapsed,relativeAltitude,pressure\n" + "".join(
        f"{T0_NS + int(s * 1e9)},{s},0,{1008.5 - 0.01 * s}\n" for s in tb
    )
    return {
        "TotalAcceleration.csv": _sensor_csv(ta, _acc(ta) * G),
        "Gyroscope.csv": _sensor_csv(tg, _gyro(tg)),
        "Barometer.csv": barometer,
        "Metadata.csv": "version,device name,recording time,platform\n3,Pixel,2026-12-07_10-00-00,android\n",
    }


def _write_folder(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _write_zip(path: Path, files: dict[str, str], inside: str = "") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(inside + name, text)
    return path


def _grid_error(rec, t_first: float = 0.0) -> tuple[float, float]:
    """Largest difference from the motion the files were made of, on the 50 Hz grid."""
    t = t_first + np.arange(len(rec.samples)) / 50.0
    return float(np.abs(rec.samples[:, :3] - _acc(t)).max()), float(np.abs(rec.samples[:, 3:] - _gyro(t)).max())


def test_an_android_export_zip_is_read_as_50_hz_in_g_and_rad_s(tmp_path):
    path = _write_zip(tmp_path / "walking-2026-12-07_10-00-00.zip", _android_files(), inside="2026-12-07_10-00-00/")
    assert detect_layout(path) == "sensor-logger"
    (rec,) = load_dataset(path).recordings
    start = max(_times(12, 100, 1)[0], _times(12, 200, 2)[0])  # the grid starts where both sensors have read
    acc_error, gyro_error = _grid_error(rec, start)
    assert len(rec.samples) == pytest.approx(50 * 12, abs=3)
    assert acc_error < 0.01 and gyro_error < 0.01  # interpolation error only; m/s² would be off by 8.8 g
    assert rec.name == "walking-2026-12-07_10-00-00" and set(rec.labels.tolist()) == {1}  # WALKING, from the name


def test_an_export_keeps_its_barometer_in_hpa_on_the_recording_s_own_clock(tmp_path):
    (rec,) = load_dataset(_write_folder(tmp_path / "sitting", _android_files())).recordings
    assert rec.pressure is not None and rec.pressure.shape[1] == 2
    assert rec.pressure[:, 1] == pytest.approx(
        1008.5 - 0.01 * np.arange(1, 12), abs=1e-9
    )  # the second 0 is before both sensors read
    assert rec.pressure[0, 0] == pytest.approx(1.0, abs=0.02)
    assert set(rec.labels.tolist()) == {4}  # SITTING, from the folder's name


def test_an_iphone_export_adds_gravity_to_its_acceleration_and_takes_android_s_sign(tmp_path):
    ta = _times(10, 100, 3)
    user = _acc(ta) - np.array([0.0, 1.0, 0.0])  # CoreMotion's user acceleration: gravity removed
    files = {
        # the iPhone's default frame: every acceleration with the opposite sign to Android's
        "Accelerometer.csv": _sensor_csv(ta, -user * G),
        "Gravity.csv": _sensor_csv(ta, -np.tile([0.0, 1.0, 0.0], (len(ta), 1)) * G),
        "Gyroscope.csv": _sensor_csv(ta, _gyro(ta)),
        "Metadata.csv": "version,device name,recording time,platform\n3,iPhone,2026-12-07_10-00-00,iOS\n",
    }
    (rec,) = load_dataset(_write_folder(tmp_path / "standing 2", files)).recordings
    acc_error, _ = _grid_error(rec, ta[0])
    assert acc_error < 0.01
    assert rec.samples[:, 1].mean() == pytest.approx(1.0, abs=0.02)  # upright reads +1 g, as Android's
    assert set(rec.labels.tolist()) == {5}


def test_annotations_label_the_stretches_they_start(tmp_path):
    files = _android_files(seconds=20)
    files["Annotation.csv"] = "time,seconds_elapsed,text,millisecond_press_duration\n" + "".join(
        f"{T0_NS + int(s * 1e9)},{s},{text},300\n" for s, text in ((2, "Sit"), (8, "stand"), (14, "coffee"))
    )
    (rec,) = load_dataset(_write_folder(tmp_path / "2026-12-07_10-00-00", files)).recordings
    t = np.arange(len(rec.labels)) / 50.0 + 0.01  # about where the grid starts
    assert set(rec.labels[t < 1.9].tolist()) == {-1}  # before the first annotation
    assert set(rec.labels[(t > 2.1) & (t < 7.9)].tolist()) == {4}
    assert set(rec.labels[(t > 8.1) & (t < 13.9)].tolist()) == {5}
    assert set(rec.labels[t > 14.1].tolist()) == {-1}  # "coffee" names no activity: its stretch is unlabelled


def test_a_pause_in_the_readings_splits_an_export_into_stretches(tmp_path):
    files = _android_files(seconds=20)
    lines = files["Gyroscope.csv"].splitlines()
    kept = [lines[0]] + [row for row in lines[1:] if not 9.0 < float(row.split(",")[1]) < 11.0]  # 2 s without gyroscope
    files["Gyroscope.csv"] = "\n".join(kept) + "\n"
    recs = load_dataset(_write_folder(tmp_path / "walk", files)).recordings
    assert [r.name for r in recs] == ["walk-1", "walk-2"]
    assert all(8.5 * 50 < len(r.samples) < 9.2 * 50 for r in recs)  # nothing bridged across the pause


def test_a_gyroscope_that_stops_early_is_said_not_quietly_lost(tmp_path, caplog):
    files = _android_files(seconds=20)
    lines = files["Gyroscope.csv"].splitlines()
    files["Gyroscope.csv"] = "\n".join(row for row in lines if row[0] == "t" or float(row.split(",")[1]) < 12) + "\n"
    with caplog.at_level("WARNING"):
        (rec,) = load_dataset(_write_folder(tmp_path / "walk", files)).recordings
    assert len(rec.samples) <= 12 * 50
    assert "only the time both cover is read (8.0 s left out)" in caplog.text


def test_a_paired_watch_becomes_a_recording_of_its_own_in_android_s_frame(tmp_path):
    files = _android_files()
    tw = _times(12, 50, 4)
    acc = _acc(tw)
    gravity = np.tile([0.0, 1.0, 0.0], (len(tw), 1))
    # CoreMotion in g: user acceleration and gravity with the opposite sign to Android's
    rows = "".join(
        f"{T0_NS + int(round(s * 1e9))},{s},{','.join(repr(float(v)) for v in (*-(a - g), *-g, *w))}\n"
        for s, a, g, w in zip(tw, acc, gravity, _gyro(tw))
    )
    files["WristMotion.csv"] = (
        "time,seconds_elapsed,accelerationX,accelerationY,accelerationZ,gravityX,gravityY,gravityZ,"
        "rotationRateX,rotationRateY,rotationRateZ\n" + rows
    )
    recs = load_dataset(_write_folder(tmp_path / "walking", files)).recordings
    assert [r.name for r in recs] == ["walking", "walking.watch"]
    assert _grid_error(recs[1], tw[0])[0] < 0.02 and recs[1].pressure is None


@pytest.mark.parametrize(
    "drop, says",
    [
        (("TotalAcceleration.csv",), "no TotalAcceleration.csv or Accelerometer.csv"),
        (("Gyroscope.csv",), "no Gyroscope.csv; record with Gyroscope enabled"),
    ],
)
def test_an_export_missing_a_sensor_is_refused_naming_what_to_enable(tmp_path, drop, says):
    files = {k: v for k, v in _android_files().items() if k not in drop}
    with pytest.raises(RecordingError, match=says):
        load_dataset(_write_zip(tmp_path / "r.zip", files))


def test_gravity_removed_without_gravity_is_refused_naming_what_to_enable(tmp_path):
    files = _android_files()
    files["Accelerometer.csv"] = files.pop("TotalAcceleration.csv")
    with pytest.raises(RecordingError, match="record with Gravity .or Total Acceleration. enabled"):
        load_dataset(_write_folder(tmp_path / "walk", files))


def test_a_reading_that_is_not_a_number_is_refused_naming_file_and_line(tmp_path):
    files = _android_files()
    lines = files["Gyroscope.csv"].splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ",NaN"
    files["Gyroscope.csv"] = "\n".join(lines) + "\n"
    with pytest.raises(RecordingError, match=r"r.zip: Gyroscope.csv line 6: .* does not hold finite numbers"):
        load_dataset(_write_zip(tmp_path / "r.zip", files))


def test_an_acceleration_beyond_any_body_is_refused_as_a_unit_error(tmp_path):
    files = _android_files()
    ta = _times(12, 100, 1)
    files["TotalAcceleration.csv"] = _sensor_csv(ta, _acc(ta) * G * 1000)  # mm/s² or garbage
    with pytest.raises(RecordingError, match="beyond ±100 g"):
        load_dataset(_write_folder(tmp_path / "walk", files))


def test_a_file_that_is_not_a_zip_is_refused_by_name(tmp_path):
    (tmp_path / "r.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(RecordingError, match="r.zip: not a zip file we can read"):
        load_dataset(tmp_path / "r.zip")


def test_calibration_reads_a_folder_of_exports_one_per_activity(tmp_path):
    folder = tmp_path / "my_phone"
    folder.mkdir()
    _write_zip(folder / "walking.zip", _android_files())
    _write_folder(folder / "sitting-2026-12-07", _android_files())
    recs = load_device_recordings(folder).recordings
    assert sorted((r.name, int(r.labels[0])) for r in recs) == [("sitting-2026-12-07", 4), ("walking", 1)]


def test_a_folder_of_own_csv_recordings_is_read_as_such_beside_a_stray_zip(tmp_path):
    (tmp_path / "walk.csv").write_text(
        "time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n" + "".join(f"{i * 0.02:.2f},0,1,0,0,0,0\n" for i in range(200))
    )
    _write_zip(tmp_path / "photos.zip", {"a.txt": "not a recording"})
    assert detect_layout(tmp_path) == "csv"
    assert [r.name for r in load_dataset(tmp_path).recordings] == ["walk"]


def test_harstream_data_summarises_an_export(tmp_path, capsys):
    path = _write_zip(tmp_path / "standing.zip", _android_files())
    assert main(["data", "--data", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Sensor Logger exports" in out and "STANDING" in out
