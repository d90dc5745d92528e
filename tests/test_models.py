"""Architectures, training, artifacts and evaluation, on small slices (CPU, seconds)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harstream.models.architectures import (
    ARCHITECTURES,
    DEFAULT_EPOCHS,
    ChannelStats,
    build_model,
    register,
    window_input,
)
from harstream.models.artifact import ArtifactError, load_artifact, save_artifact
from harstream.models.evaluation import Evaluation, evaluate_model, evaluation_report, plot_confusion_matrix
from harstream.models.studies.repeats import repeat_evaluation, repeat_evaluations, repeat_report
from harstream.models.training import load_training_data, train_and_save, train_model

# Subjects 1, 3, 5, 6 train; 2 and 4 (UCI test subjects) are held out.
SMALL_SLICE = (1, 2, 3, 4, 5, 6)


@pytest.fixture(scope="module")
def small_data(embedded):
    return load_training_data(subjects=SMALL_SLICE)


@pytest.fixture(scope="module")
def trained(small_data, tmp_path_factory):
    """The tutorial CNN-LSTM trained for 2 epochs on four subjects, saved."""
    out = tmp_path_factory.mktemp("artifact") / "small.keras"
    return train_and_save("cnn_lstm", small_data, out, epochs=2, seed=0, verbose=0)


@pytest.fixture
def scratch_architectures():
    """Registry entries added by a test are removed after it."""
    before = set(ARCHITECTURES)
    yield
    for name in set(ARCHITECTURES) - before:
        del ARCHITECTURES[name]
        del DEFAULT_EPOCHS[name]


def build_tiny(stats: ChannelStats):
    """A tiny normalised dense model (fast to train in tests)."""
    import keras

    inputs, x = window_input(stats)
    x = keras.layers.AveragePooling1D(8)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    x = keras.layers.Dropout(0.2)(x)  # so the seed also has to fix dropout masks
    return keras.Model(inputs, keras.layers.Dense(6, activation="softmax")(x), name="tiny")


# ------------------------------------------------------------------ architectures


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_registered_architecture_keeps_the_contract(name, tmp_path):
    """Pipeline windows in, six probabilities out, and a safe-mode round trip."""
    x = np.random.default_rng(0).normal(size=(5, 128, 9)).astype(np.float32)
    model = build_model(name, ChannelStats.of(x))
    probs = np.asarray(model(x))
    assert probs.shape == (5, 6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert not any(type(layer).__name__ == "Lambda" for layer in model.layers)
    loaded = load_artifact(save_artifact(model, {"architecture": name}, tmp_path / f"{name}.keras"))
    np.testing.assert_allclose(np.asarray(loaded.model(x)), probs, atol=1e-6)


def test_seed_architectures_follow_the_tutorial():
    assert (DEFAULT_EPOCHS["lstm"], DEFAULT_EPOCHS["cnn_lstm"], DEFAULT_EPOCHS["conv_lstm"]) == (15, 25, 25)
    lstm = build_model("lstm")
    assert lstm.get_layer("lstm").units == 100 and lstm.get_layer("dropout").rate == 0.5
    cnn = build_model("cnn_lstm")
    assert tuple(cnn.get_layer("subsequences").output.shape[1:]) == (4, 32, 9)
    assert cnn.get_layer("conv1").layer.filters == 64 and cnn.get_layer("conv1").layer.kernel_size == (3,)
    conv = build_model("conv_lstm")
    assert tuple(conv.get_layer("subsequences").output.shape[1:]) == (4, 1, 32, 9)
    assert conv.get_layer("conv_lstm").filters == 64 and conv.get_layer("conv_lstm").kernel_size == (1, 3)


def test_registry_takes_new_architectures_and_rejects_a_wrong_signature(scratch_architectures):
    import keras

    register("tiny_test", build_tiny, epochs=3)
    assert DEFAULT_EPOCHS["tiny_test"] == 3
    assert build_model("tiny_test").output.shape[1:] == (6,)

    def five_classes(stats):
        inputs = keras.Input((128, 9))
        return keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(keras.layers.Flatten()(inputs)))

    register("five_classes", five_classes, epochs=1)
    with pytest.raises(ValueError, match="must map .* -> \\(None, 6\\)"):
        build_model("five_classes")
    with pytest.raises(KeyError, match="unknown architecture 'nope'"):
        build_model("nope")


# ----------------------------------------------------------------------- training


def test_training_windows_come_in_the_expected_counts(embedded):
    data = load_training_data()
    assert (len(data.train), len(data.test)) == (7415, 2996)
    assert sorted(set(data.test.subjects.tolist())) == [2, 4, 9, 10, 12, 13, 18, 20, 24]
    assert not set(data.train.subjects.tolist()) & set(data.test.subjects.tolist())


def write_uci_folder(root: Path, parts: dict) -> Path:
    """A UCI HAR Dataset folder holding ``parts[split] = Windows``."""
    from harstream.stream.data.recordings import UCI_SIGNALS

    for split, w in parts.items():
        signals = root / split / "Inertial Signals"
        signals.mkdir(parents=True)
        for c, signal in enumerate(UCI_SIGNALS):
            np.savetxt(signals / f"{signal}_{split}.txt", w.x[:, :, c], fmt="%.8e")
        np.savetxt(root / split / f"y_{split}.txt", w.y + 1, fmt="%d")
        np.savetxt(root / split / f"subject_{split}.txt", w.subjects, fmt="%d")
    return root


def test_a_uci_har_folder_trains_on_its_own_windows(small_data, tmp_path):
    train = small_data.train.take(np.arange(len(small_data.train)) % 40 == 0)
    test = small_data.test.take(np.arange(len(small_data.test)) % 40 == 0)
    folder = write_uci_folder(tmp_path / "UCI HAR Dataset", {"train": train, "test": test})
    data = load_training_data(folder)
    assert "UCI HAR Dataset windows" in data.windowed_by
    assert (len(data.train), len(data.test)) == (len(train), len(test))
    np.testing.assert_allclose(data.train.x, train.x, atol=1e-6)
    assert data.train.y.tolist() == train.y.tolist()


def test_a_briefly_trained_cnn_lstm_beats_chance_on_other_subjects(trained, small_data):
    assert set(small_data.test.subjects.tolist()) == {2, 4}
    assert not set(small_data.train.subjects.tolist()) & {2, 4}
    assert trained.evaluation.accuracy > 0.5  # chance is 1/6
    assert trained.metadata["test_accuracy"] == pytest.approx(trained.evaluation.accuracy, abs=1e-6)


def test_same_seed_trains_the_same_model(small_data, scratch_architectures):
    register("tiny_test", build_tiny, epochs=1)
    few = small_data.train.take(np.arange(len(small_data.train)) % 4 == 0)
    a, b, c = (train_model("tiny_test", few, seed=seed, verbose=0) for seed in (3, 3, 4))
    x = small_data.test.x[:64]
    np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), atol=1e-6)
    assert not np.allclose(np.asarray(a(x)), np.asarray(c(x)), atol=1e-4)


# ---------------------------------------------------------------------- artifacts


def test_artifact_metadata_records_how_the_model_was_made(trained, small_data):
    meta = trained.metadata
    assert meta["architecture"] == "cnn_lstm" and meta["epochs"] == 2 and meta["seed"] == 0
    assert meta["data"]["source"] == "embedded" and len(meta["data"]["sha256"]) == 64
    assert meta["split"]["test_subjects"] == [2, 4]
    assert meta["windows"] == {"train": len(small_data.train), "test": len(small_data.test)}
    assert meta["training_seconds"] > 0
    assert {"tensorflow", "keras", "numpy"} <= set(meta["library_versions"])
    assert meta["preprocessing"]["window"] == 128


def test_saved_artifact_loads_in_safe_mode_with_identical_outputs(trained, small_data):
    loaded = load_artifact(trained.path)
    x = small_data.test.x[:64]
    np.testing.assert_allclose(np.asarray(loaded.model(x)), np.asarray(trained.model(x)), atol=1e-6)
    assert loaded.model_id.startswith("cnn_lstm@")


def test_a_model_normalising_inside_itself_round_trips(small_data, tmp_path):
    model = build_tiny(ChannelStats.of(small_data.train.x))
    path = save_artifact(model, {"architecture": "tiny"}, tmp_path / "tiny.keras")
    loaded = load_artifact(path)
    x = small_data.test.x[:32]
    np.testing.assert_allclose(np.asarray(loaded.model(x)), np.asarray(model(x)), atol=1e-6)


def _copy_artifact(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_loading_refuses_a_model_made_for_other_preprocessing(trained, tmp_path):
    path = _copy_artifact(trained.path, tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["preprocessing"]["gravity_lowpass_hz"] = 0.5
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="different preprocessing \\(differs in gravity_lowpass_hz\\)"):
        load_artifact(path)


def test_loading_refuses_a_tampered_model_file(trained, tmp_path):
    path = _copy_artifact(trained.path, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="hash does not match its metadata"):
        load_artifact(path)


# --------------------------------------------------------------------- evaluation


def test_evaluation_scores_match_a_hand_count():
    y_true = np.array([0, 0, 1, 1, 2, 5])
    y_pred = np.array([0, 1, 1, 1, 2, 4])
    e = Evaluation.of(y_true, y_pred)
    assert e.accuracy == pytest.approx(4 / 6)
    assert e.confusion[0].tolist() == [1, 1, 0, 0, 0, 0]
    assert e.recall[0] == pytest.approx(0.5) and e.precision[1] == pytest.approx(2 / 3)
    assert e.f1[3] == 0 and e.support.tolist() == [2, 2, 1, 0, 0, 1]


def test_evaluation_report_has_a_confusion_matrix_and_writes_a_png(trained, small_data, output_dir):
    e = evaluate_model(trained.model, small_data.test)
    png = plot_confusion_matrix(e, output_dir / "confusion.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = evaluation_report("small", e, png=png, report_dir=output_dir)
    assert "## Confusion matrix" in report and "| walking |" in report
    assert "![confusion matrix](confusion.png)" in report
    assert sum(int(v) for v in e.confusion.ravel()) == len(small_data.test)


def test_repeat_evaluation_reports_mean_and_std_over_runs(small_data, scratch_architectures):
    register("tiny_test", build_tiny, epochs=2)
    seen = []
    result = repeat_evaluation(
        "tiny_test", small_data.train, small_data.test, repeats=2, on_repeat=lambda r: seen.append(len(r.accuracies))
    )
    assert seen == [1, 2] and result.seeds == [0, 1]
    assert result.mean == pytest.approx(np.mean(result.accuracies))
    assert result.best.accuracy == max(result.accuracies)
    report = repeat_report(result)
    assert "over 2 repeats" in report and "±" in report and "## Confusion matrix" in report


def test_several_architectures_are_repeated_round_robin(small_data, scratch_architectures):
    register("tiny_a", build_tiny, epochs=1)
    register("tiny_b", build_tiny, epochs=1)
    order = []
    few = small_data.train.take(np.arange(len(small_data.train)) % 4 == 0)
    results = repeat_evaluations(
        ["tiny_a", "tiny_b"],
        few,
        small_data.test,
        repeats=2,
        seed=5,
        on_repeat=lambda r: order.append((r.arch, r.seeds[-1])),
    )
    assert order == [("tiny_a", 5), ("tiny_b", 5), ("tiny_a", 6), ("tiny_b", 6)]
    assert results["tiny_a"].accuracies == results["tiny_b"].accuracies  # same builder, same seeds


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def harstream_cli(capsys, monkeypatch):
    """``harstream_cli("train", ...)`` runs the ``harstream`` command's own
    entry point, ``harstream.cli.main()`` reading ``sys.argv`` as the console
    script does, in this process (TensorFlow is imported once, not per
    command); its exit code and what it printed."""
    from harstream.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["harstream", *args])
        code = main()
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["harstream", *args], code, out, err)

    return run


def test_harstream_train_then_evaluate_on_the_command_line(tmp_path, embedded, harstream_cli):
    out = tmp_path / "cli.keras"
    trained = harstream_cli(
        "train", "--model", "cnn_lstm", "--subjects", "1,2", "--epochs", "1", "--progress", "none", "--out", str(out)
    )
    assert trained.returncode == 0, trained.stderr
    assert "windows from 1 subjects" in trained.stdout  # train: subject 1, test: subject 2
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["architecture"] == "cnn_lstm" and meta["epochs"] == 1
    assert meta["command"].startswith("harstream train --model cnn_lstm")

    report = tmp_path / "report" / "cli.md"
    evaluated = harstream_cli("evaluate", "--artifact", str(out), "--report", str(report))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "held-out subjects 2" in evaluated.stdout and "## Confusion matrix" in evaluated.stdout
    assert report.with_suffix(".png").is_file() and "## Per class" in report.read_text()


def test_harstream_train_fits_the_svm_and_records_that_epochs_do_not_apply(tmp_path, embedded, harstream_cli):
    out = tmp_path / "svm.keras"
    trained = harstream_cli("train", "--model", "svm", "--subjects", "1,3,2", "--progress", "none", "--out", str(out))
    assert trained.returncode == 0, trained.stderr
    assert "fitting svm with scikit-learn" in trained.stdout and "held-out subjects:" in trained.stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["architecture"] == "svm" and meta["epochs"] is None and meta["test_accuracy"] > 0.5


def test_harstream_train_fits_an_svm_with_context_windows_that_evaluate_reads_back(tmp_path, embedded, harstream_cli):
    out = tmp_path / "svm_ctx.keras"
    trained = harstream_cli(
        "train", "--model", "svm", "--context", "1,2", "--subjects", "1,3,2", "--progress", "none", "--out", str(out)
    )
    assert trained.returncode == 0, trained.stderr
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["context_steps"] == [1, 2] and meta["input"]["shape"] == [None, 3, 128, 9]
    evaluated = harstream_cli("evaluate", "--artifact", str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "held-out subjects 2" in evaluated.stdout


def test_context_windows_are_refused_for_a_network(tmp_path, capsys):
    from harstream.cli import main

    assert main(["train", "--model", "cnn_lstm", "--context", "1,2", "--out", str(tmp_path / "x.keras")]) == 2
    assert "--context is for --model svm only" in capsys.readouterr().err


def test_cli_names_a_bad_data_source_and_a_bad_artifact(tmp_path, capsys):
    from harstream.cli import main

    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x.keras")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["evaluate", "--artifact", str(tmp_path / "none.keras")]) == 2
    assert "none.keras: no such model file" in capsys.readouterr().err
    assert main(["train", "--subjects", "1,x", "--out", str(tmp_path / "x.keras")]) == 2
    assert "'x' is not a number" in capsys.readouterr().err


def test_evaluating_the_shipped_model_refuses_its_own_training_subjects(capsys):
    from harstream.cli import main

    assert main(["evaluate", "--subjects", "1,3"]) == 2
    assert "none of subjects 1,3 is held out" in capsys.readouterr().err
