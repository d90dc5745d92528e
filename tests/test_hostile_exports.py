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
