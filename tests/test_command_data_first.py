"""`harstream evaluate` and `harstream train` read and check their data before
they import TensorFlow: a wrong `--data` is said at once, not after the
seconds TensorFlow takes to load. The real command (`python -m harstream`), in
a fresh interpreter that says, after it ended, whether TensorFlow was imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harstream.models.artifact import DEFAULT_MODEL

# `python -m harstream ARGS`, then what it imported
_RUN = """
import json, runpy, sys
sys.argv = ["harstream", *sys.argv[1:]]
try:
    runpy.run_module("harstream", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(m for m in ("tensorflow", "keras") if m in sys.modules)}))
"""


def harstream(*argv: str) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", _RUN, *argv], capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def own_recordings(folder: Path) -> Path:
    """A user's CSV folder as docs/recordings.md describes it: no subject
    column, so subject 0, a training subject; none is held out."""
    folder.mkdir()
    rows = ["time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label"]
    rows += [f"{k / 50:.2f},1.0,0.0,0.0,0.0,0.0,0.0,WALKING" for k in range(300)]
    (folder / "walk.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["evaluate", "--data", "{missing}"], "harstream evaluate: {missing}: no such file or folder"),
        (["evaluate", "--data", "{csvs}"], "harstream evaluate: {csvs}: no labelled windows of subjects [2, 4, 9"),
        (["evaluate", "--model", "lstm", "--data", "{missing}"], "harstream evaluate: {missing}: no such file"),
        (["train", "--data", "{missing}"], "harstream train: {missing}: no such file or folder"),
        (
            ["train", "--finetune", str(DEFAULT_MODEL), "--data", "{missing}", "--out", "{out}"],
            "harstream train --finetune: {missing}: no such file or folder",
        ),
    ],
    ids=[
        "evaluate-missing",
        "evaluate-nothing-held-out",
        "evaluate-model-missing",
        "train-missing",
        "finetune-missing",
    ],
)
def test_a_data_error_is_said_before_tensorflow_is_imported(tmp_path, argv, said):
    where = {"missing": str(tmp_path / "no-such-folder"), "out": str(tmp_path / "tuned.keras")}
    if "{csvs}" in argv:
        where["csvs"] = str(own_recordings(tmp_path / "my_csvs"))
    got, stderr = harstream(*(a.format(**where) for a in argv))
    assert got["code"] == 2, stderr
    assert "Traceback" not in stderr
    assert said.format(**where) in stderr
    assert got["loaded"] == [], f"{' '.join(argv)} imported {got['loaded']} before saying: {stderr.strip()}"
