"""Hostile Sensor Logger exports (docs/recordings.md, "Sensor Logger exports"):
zips and folders built to exhaust the reader's time or memory, or to slip
data past its checks, each read through the real reader from a real file.
Every one is refused with the file and what was wrong, or read in bounded
time, never left to fill the memory or hold `harstream data` for hours."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from harstream.cli import main
from harstream.stream.data.recordings import RecordingError, read_sensor_logger_export
from test_sensor_logger_export import T0_NS, G, _acc, _android_files, _gyro, _sensor_csv, _write_zip


@pytest.mark.timeout(60)
def test_an_annotation_of_many_short_words_is_read_at_once(tmp_path):
    # 128 KiB of one-letter words (the csv module's largest field): every run of
    # leading words was joined and looked up, ~30 s for one annotation
    files = _android_files()
    files["Annotation.csv"] = "time,seconds_elapsed,text\n" + "".join(
        f'{T0_NS + k * 1_000_000_000},{k},"walking {"a " * 65_000}"\n' for k in range(3)
    )
    path = _write_zip(tmp_path / "export.zip", files)
    started = time.monotonic()
    (rec,) = read_sensor_logger_export(path)
    assert time.monotonic() - started < 5.0
    assert set(rec.labels.tolist()) <= {-1, 1}


def _stretches(count: int, seconds: float = 3.0, pause: float = 1.0) -> np.ndarray:
    """Reading times at 50 Hz in ``count`` stretches, ``pause`` s of silence between them."""
    return np.concatenate([k * (seconds + pause) + np.arange(0, seconds, 0.02) for k in range(count)])


@pytest.mark.timeout(120)
def test_an_export_cut_by_many_pauses_reads_its_barometer_and_annotations_once(tmp_path):
    # 300 stretches (20 min with a dropout every 3 s) and a 25 Hz barometer: each
    # stretch read the whole Barometer.csv and Annotation.csv again (~30 s here,
    # hours for a day's recording)
    t = _stretches(300)
    tb = np.arange(0, t[-1], 0.04)
    files = {
        "TotalAcceleration.csv": _sensor_csv(t, _acc(t) * G),
        "Gyroscope.csv": _sensor_csv(t, _gyro(t)),
        "Barometer.csv": "time,seconds_elapsed,relativeAltitude,pressure\n"
        + "".join(f"{T0_NS + int(round(s * 1e9))},{s},0,{1000 + s / 1000:.6f}\n" for s in tb),
        "Annotation.csv": "time,seconds_elapsed,text\n"
        + "".join(f"{T0_NS + int(k * 1e9)},{k},{'walking' if k // 4 % 2 else 'sitting'}\n" for k in range(0, 1200, 4)),
    }
    path = _write_zip(tmp_path / "long.zip", files)
    started = time.monotonic()
    recs = read_sensor_logger_export(path)
    assert time.monotonic() - started < 10.0
    assert len(recs) == 300
    rec = recs[7]  # from 28 s: its readings keep their own times, from its first sample
    assert rec.pressure is not None and len(rec.pressure) == 75
    assert rec.pressure[0, 0] == pytest.approx(0.0, abs=1e-6) and rec.pressure[0, 1] == pytest.approx(1000.028)
    # annotations every 4 s: this stretch starts on one naming walking (28 / 4 is odd)
    assert set(rec.labels.tolist()) == {1}


def test_an_annotation_at_a_time_that_is_no_number_is_refused_naming_its_line(tmp_path):
    files = _android_files()
    files["Annotation.csv"] = f"time,seconds_elapsed,text\n{T0_NS},0,walking\nnan,1,sitting\n"
    path = _write_zip(tmp_path / "export.zip", files)
    with pytest.raises(RecordingError, match=r"Annotation.csv line 3: .*time is not a finite number"):
        read_sensor_logger_export(path)
