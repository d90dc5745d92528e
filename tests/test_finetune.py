"""Fine-tuning a model on the user's own CSV recordings."""

from __future__ import annotations

import json
import sys

import numpy as np

from harstream.stream.data.recordings import CHANNELS


def _write_csv(path, rng, parts):
    """parts: list of (label name, seconds); WALKING swings at 2 Hz with gravity on x,
    LAYING lies still with gravity on z."""
    rows, t = [], 0.0
    for label, seconds in parts:
        for _ in range(int(seconds * 50)):
            s = rng.normal(0, 0.02, size=6)
            if label == "WALKING":
                s[0] += 1.0 + 0.4 * np.sin(2 * np.pi * 2 * t)
                s[3] += 0.8 * np.cos(2 * np.pi * 2 * t)
            else:
                s[2] += 1.0
            rows.append([f"{t:.2f}", *(f"{v:.5f}" for v in s), label])
            t += 0.02
    path.write_text("\n".join([",".join(["time", *CHANNELS, "label"])] + [",".join(r) for r in rows]) + "\n")


def _sessions(folder, rng, first):
    """A fresh folder of two sessions: ``a_session`` with the parts ``first``,
    then ``b_session`` (LAYING 20 s, WALKING 20 s), the one fine-tuning holds out."""
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.csv"):
        old.unlink()
    _write_csv(folder / "a_session.csv", rng, first)
    _write_csv(folder / "b_session.csv", rng, [("LAYING", 20), ("WALKING", 20)])
    return folder


def test_finetune_on_own_csv_recordings_learns_them_and_writes_a_loadable_artifact(output_dir):
    from harstream.models.architectures import ChannelStats
    from harstream.models.artifact import load_artifact, save_artifact
    from harstream.models.finetune import finetune
    from harstream.models.modern import build_resnet

    rng = np.random.default_rng(0)
    data = _sessions(output_dir / "mine", rng, [("WALKING", 30), ("LAYING", 30), ("WALKING", 20), ("LAYING", 20)])

    import keras

    keras.utils.set_random_seed(0)  # the base's initial weights must not depend on which tests ran before
    base = build_resnet(ChannelStats.identity(), width=8)
    base_path = save_artifact(base, {"architecture": "resnet", "test_accuracy": 0.5}, output_dir / "base.keras")
    result = finetune(base_path, data, output_dir / "mine.keras", epochs=8, learning_rate=3e-3, replay=0)

    assert result.held_out == "b_session"
    assert result.accuracy_after >= 0.9
    tuned = load_artifact(result.path)
    meta = json.loads(result.path.with_suffix(".json").read_text())
    assert meta["finetune"]["held_out_accuracy_after"] == result.accuracy_after
    assert "test_accuracy" not in meta  # the base model's figure no longer applies
    assert meta["finetuned_from"]["model_id"].startswith("resnet@")
    assert tuned.model.count_params() == base.count_params()


def test_harstream_train_finetune_writes_a_model_from_a_csv(output_dir, capsys, monkeypatch):
    """The command's own entry point, ``harstream.cli.main()`` reading
    ``sys.argv`` as the console script does, in this process (TensorFlow is
    imported once, not again in a subprocess)."""
    from harstream.cli import main
    from harstream.models.architectures import ChannelStats
    from harstream.models.artifact import load_artifact, save_artifact
    from harstream.models.modern import build_resnet

    rng = np.random.default_rng(1)
    csv = output_dir / "one_session.csv"
    _write_csv(csv, rng, [("WALKING", 10), ("LAYING", 10)])
    base = save_artifact(
        build_resnet(ChannelStats.identity(), width=4), {"architecture": "resnet"}, output_dir / "base.keras"
    )
    out = output_dir / "tuned.keras"
    out.unlink(missing_ok=True)
    argv = ["train", "--finetune", str(base), "--data", str(csv), "--out", str(out), "--epochs", "1"]
    monkeypatch.setattr(sys, "argv", ["harstream", *argv, "--progress", "none"])
    capsys.readouterr()
    code = main()
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr[-2000:]
    assert "fine-tuned on" in stdout
    assert load_artifact(out).metadata["finetune"]["own_windows"] > 0


def test_finetuning_an_svm_refits_it_with_the_own_windows_weighted_in(output_dir):
    from harstream.models.artifact import load_artifact, save_artifact
    from harstream.models.dataset import Windows
    from harstream.models.finetune import finetune
    from harstream.models.svm import fit_svm

    rng = np.random.default_rng(2)
    data = _sessions(output_dir / "mine_svm", rng, [("WALKING", 30), ("LAYING", 30)])
    # a base SVM that has never seen anything like these recordings
    x = rng.normal(size=(60, 128, 9)).astype(np.float32)
    base = fit_svm(Windows(x, np.arange(60) % 6, np.arange(60) % 3), seed=0)[0]
    base_path = save_artifact(base, {"architecture": "svm"}, output_dir / "base_svm.keras")

    result = finetune(base_path, data, output_dir / "mine_svm.keras", replay=300)

    assert result.accuracy_after >= 0.9 > result.accuracy_before
    meta = json.loads(result.path.with_suffix(".json").read_text())
    assert meta["finetune"]["method"] == "svm refit"
    assert meta["finetune"]["replay_windows"] == 300
    assert load_artifact(result.path).model.output_shape == (None, 6)


def test_an_svm_refit_without_every_activity_is_refused_by_name():
    import pytest

    from harstream.models.dataset import Windows
    from harstream.models.svm import fit_svm

    x = np.zeros((8, 128, 9), np.float32)
    with pytest.raises(ValueError, match=r"activities \[2, 3, 4, 5\]"):
        fit_svm(Windows(x, np.arange(8) % 2, np.zeros(8, int)))
