"""The models beyond the tutorial: contract, standardisation from training data only,
augmentation geometry, validation split, and a tiny training run."""

from __future__ import annotations

import numpy as np
import pytest

from harstream.models import augment
from harstream.models.dataset import VALIDATION_SUBJECTS, Windows, validation_split
from harstream.stream.data.recordings import UCI_TEST_SUBJECTS


def _windows(n: int, seed: int = 0, offset: float = 0.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, 128, 9)) + offset).astype(np.float32)


@pytest.mark.parametrize("name", ["resnet", "inception", "bilstm", "lstm_std", "features", "hybrid"])
def test_modern_architecture_saves_and_reloads_in_safe_mode_with_same_outputs(name, output_dir):
    from harstream.models.architectures import ARCHITECTURES, ChannelStats, build_model
    from harstream.models.artifact import load_artifact, save_artifact

    assert name in ARCHITECTURES  # registered when the package is imported
    x = _windows(16)
    model = build_model(name, ChannelStats.of(x))
    expected = np.asarray(model(x, training=False))
    assert expected.shape == (16, 6)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)
    path = save_artifact(model, {"architecture": name}, output_dir / f"{name}.keras")
    loaded = load_artifact(path)
    np.testing.assert_allclose(np.asarray(loaded.model(x, training=False)), expected, atol=1e-5)


def test_standardisation_uses_the_training_windows_statistics():
    from harstream.models.modern import build

    train = _windows(64, offset=3.0)
    model = build("resnet", train, width=4)
    norm = next(layer for layer in model.layers if layer.__class__.__name__ == "Normalization")
    mean = np.asarray(norm.mean).reshape(-1)
    np.testing.assert_allclose(mean, train.reshape(-1, 9).mean(axis=0), atol=1e-4)
    assert np.all(np.abs(mean - 3.0) < 0.1)  # not zero, not some other data's mean


def test_rotation_turns_all_three_triplets_by_the_same_rotation():
    rng = np.random.default_rng(0)
    triplet = rng.normal(size=(8, 128, 3)).astype(np.float32)
    x = np.concatenate([triplet, 2 * triplet, -triplet], axis=-1)
    y = augment.rotate(x, max_degrees=20, rng=np.random.default_rng(1))
    assert not np.allclose(y, x, atol=1e-3)  # it did rotate
    np.testing.assert_allclose(y[..., 3:6], 2 * y[..., 0:3], atol=1e-4)
    np.testing.assert_allclose(y[..., 6:9], -y[..., 0:3], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(y[..., :3], axis=-1), np.linalg.norm(x[..., :3], axis=-1), atol=1e-4)


def test_rotation_angle_stays_within_the_limit():
    rots = augment.random_rotations(500, max_degrees=10, rng=np.random.default_rng(2))
    angles = np.degrees(np.arccos(np.clip((np.trace(rots, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert angles.max() <= 10.0 + 1e-6 and angles.max() > 8.0


def test_augmentation_keeps_shape_dtype_and_batches_keep_labels():
    x = _windows(10)
    y = np.arange(10) % 6
    out = augment.Augmentation().apply(x, np.random.default_rng(0), channel_std=x.reshape(-1, 9).std(axis=0))
    assert out.shape == x.shape and out.dtype == np.float32
    batches = augment.augmented_batches(x, y, batch_size=4, augmentation=None, seed=0)
    xs, ys = zip(*(batches[i] for i in range(len(batches))))
    order = np.concatenate(ys)
    assert sorted(order.tolist()) == sorted(y.tolist())
    # without augmentation a batch is exactly the training windows of its labels
    first_x, first_y = batches[0]
    idx = [int(np.flatnonzero((x == w).all(axis=(1, 2)))[0]) for w in first_x]
    assert y[idx].tolist() == first_y.tolist()


def test_validation_subjects_are_training_subjects_and_split_is_disjoint():
    assert not set(VALIDATION_SUBJECTS) & set(UCI_TEST_SUBJECTS)
    subjects = np.repeat(np.array([1, 3, 8, 16, 22, 28, 30]), 3)
    w = Windows(np.zeros((len(subjects), 128, 9), np.float32), np.zeros(len(subjects), np.int64), subjects)
    fit_part, val_part = validation_split(w)
    assert set(val_part.subjects.tolist()) == {3, 8, 16, 22, 28}
    assert set(fit_part.subjects.tolist()) == {1, 30}


def test_tiny_resnet_trained_two_epochs_beats_chance_on_unseen_subjects(embedded):
    from harstream.models.dataset import labelled_windows
    from harstream.models.recipe import Recipe, fit
    from harstream.models.studies.compare import predict, score

    train = labelled_windows(embedded.of_subjects([1, 3, 5]))
    test = labelled_windows(embedded.of_subjects([2]))
    recipe = Recipe("resnet", augment.Augmentation(), epochs=2, options={"width": 8})
    model, history = fit(recipe, train, seed=0)
    result = score(test.y, predict(model, test.x))
    assert len(history["loss"]) == 2
    assert result["accuracy"] > 0.4  # chance is about 1/6


def test_report_reads_the_tutorial_models_runs_and_tables_every_model(tmp_path):
    from harstream.models.studies.compare import seed_model_runs, summarise, with_seed_models, write_report

    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "lstm.md").write_text(
        "| run | seed | accuracy | macro F1 | training s |\n|---:|---:|---:|---:|---:|\n"
        "| 1 | 0 | 89.75 | 89.93 | 808 |\n| 2 | 1 | 90.25 | 90.00 | 790 |\n"
    )
    runs = seed_model_runs(reports / "lstm.md")
    assert [r["seed"] for r in runs] == [0, 1]
    assert abs(summarise(runs)["accuracy_mean"] - 0.90) < 1e-9
    cm = (np.eye(6, dtype=int) * 10).tolist()
    mine = {"resnet": {"runs": [{"seed": 0, "accuracy": 0.93, "macro_f1": 0.92, "confusion": cm}], "parameters": 19000}}
    table = with_seed_models(mine, reports)
    assert list(table) == ["lstm (tutorial)", "resnet"]
    text = write_report(table, None, tmp_path / "report.md").read_text()
    assert "| 90.00 ± 0.25 |" in text and "| 93.00 ± 0.00 |" in text
    assert (reports / "confusion_resnet.png").is_file()


def test_report_adds_later_repeats_of_a_tutorial_model_from_sub_folders_once_per_seed(tmp_path):
    from harstream.models.studies.compare import with_seed_models

    header = "| run | seed | accuracy | macro F1 | training s |\n|---:|---:|---:|---:|---:|\n"
    reports = tmp_path / "reports"
    (reports / "seed4").mkdir(parents=True)
    (reports / "lstm.md").write_text(header + "| 1 | 0 | 89.75 | 89.93 | 808 |\n")
    (reports / "seed4" / "lstm.md").write_text(
        header + "| 1 | 4 | 91.00 | 91.00 | 300 |\n| 2 | 0 | 10.00 | 10.00 | 1 |\n"
    )
    entry = with_seed_models({}, reports)["lstm (tutorial)"]
    assert [(r["seed"], r["accuracy"]) for r in entry["runs"]] == [(0, 0.8975), (4, 0.91)]
    assert entry["sources"] == ["reports/lstm.md", "reports/seed4/lstm.md"]


def test_subject_bootstrap_interval_is_narrow_when_subjects_agree_and_wide_when_they_do_not():
    from harstream.models.studies.compare import subject_bootstrap_interval

    agree = {str(s): [95, 100] for s in range(9)}
    differ = {str(s): [60 + 5 * s, 100] for s in range(9)}  # 60 % .. 100 %
    low_a, high_a = subject_bootstrap_interval(agree)
    low_d, high_d = subject_bootstrap_interval(differ)
    assert low_a == high_a == 0.95
    pooled = sum(c for c, _ in differ.values()) / 900
    assert low_d < pooled < high_d and high_d - low_d > 0.05


def test_report_tables_the_feature_study_when_it_was_run(tmp_path):
    import json

    from harstream.models.studies.compare import write_report

    (tmp_path / "reports").mkdir()
    cm = np.eye(6, dtype=int) * 10
    cm[3][4], cm[4][3] = 7, 5
    study = {"features (causal pipeline), C=0.3": {"validation_accuracy": 0.9436, "validation_confusion": cm.tolist()}}
    (tmp_path / "reports" / "feature_study.json").write_text(json.dumps({"studies": study}))
    text = write_report({}, None, tmp_path / "report.md").read_text()
    assert "| features (causal pipeline), C=0.3 | 94.36 | 7 / 5 |" in text


def test_report_tables_the_context_study_when_it_was_run(tmp_path):
    import json

    from harstream.models.studies.compare import write_report

    (tmp_path / "reports").mkdir()
    study = {
        "with": "svm-ctx@1",
        "without": "svm@2",
        "context_steps": [1, 2, 4],
        "command": "python -m x",
        "parts": {"change in view": {"windows": 1019, "with": 0.9882, "without": 0.9607}},
    }
    (tmp_path / "reports" / "context_study.json").write_text(json.dumps(study))
    text = write_report({}, None, tmp_path / "report.md").read_text()
    assert "| change in view | 1,019 | 98.82 | 96.07 |" in text
