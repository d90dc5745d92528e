"""`harstream train --data my_csvs/` on a user's own recordings, as
docs/recordings.md and docs/evaluation.md lead one to: recordings of some
activities only, and no subject column (so no held-out subject). The SVM
needs every activity: that is said in one line naming the missing ones, with
exit code 2, not a traceback of class numbers; and a run with nothing held
out says it will not be scored. The real command."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _csv(path, label: str, seconds: float = 3.0) -> None:
    rows = ["time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label"]
    rows += [f"{k / 50:.2f},1.0,0.0,0.0,0.0,0.0,0.0,{label}" for k in range(int(seconds * 50))]
    path.write_text("\n".join(rows) + "\n")


def test_the_svm_on_own_recordings_of_some_activities_names_the_missing_ones(tmp_path):
    _csv(tmp_path / "walk.csv", "WALKING")
    _csv(tmp_path / "sit.csv", "SITTING")
    done = subprocess.run(
        [sys.executable, "-m", "harstream", "train", "--model", "svm", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("harstream train: ")
    for missing in ("WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "STANDING", "LAYING"):
        assert missing in error
    assert "WALKING," not in error and "SITTING" not in error
    assert "--finetune" in error
    assert "no held-out windows" in done.stdout


def test_no_windows_of_the_chosen_subjects_names_those_the_source_has(tmp_path):
    """`harstream evaluate --data my_csvs/` windows the held-out subjects only;
    an own CSV is subject 0, and the refusal said only "no labelled windows
    (subjects [2, 4, …])"."""
    from harstream.models.training import load_training_data

    _csv(tmp_path / "walk.csv", "WALKING")
    with pytest.raises(ValueError, match=r"it has subjects \[0\].*--test-subjects"):
        load_training_data(tmp_path, subjects=[2, 4, 9])
