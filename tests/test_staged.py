"""Staged context models: features once per window, the same probabilities as the whole model."""

from __future__ import annotations

import numpy as np
import pytest

from harstream.models.staged import is_staged, restage, stages
from harstream.stream.context import WindowContext
from harstream.stream.pipeline import DevicePipeline


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARSTREAM_CACHE", str(tmp_path))


@pytest.fixture(scope="module")
def context_svm():
    """A small context SVM ((1, 2) steps) fitted on random stacks."""
    from harstream.models.dataset import Windows
    from harstream.models.svm import fit_svm

    rng = np.random.default_rng(5)
    x = rng.normal(size=(36, 3, 128, 9)).astype(np.float32)
    return fit_svm(Windows(x, np.arange(36) % 6, np.arange(36) % 3), seed=0, C=1.0)[0]


@pytest.fixture(scope="module")
def staged_artifact(context_svm, tmp_path_factory):
    from harstream.models.artifact import load_artifact, save_artifact

    path = tmp_path_factory.mktemp("staged") / "ctx.keras"
    return load_artifact(save_artifact(context_svm, {"architecture": "svm", "context_steps": [1, 2]}, path))


def _stream_windows(n_samples: int = 1400, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    samples = rng.normal(scale=0.2, size=(n_samples, 6))
    samples[:, 0] += 1.0
    return DevicePipeline().push(samples)


def _flat_context_model(windows: int = 3):
    """A context model as they were built before stages: one chain from the stack."""
    import keras

    from harstream.models.features import WindowFeatures

    keras.utils.set_random_seed(1)
    inputs = keras.Input((windows, 128, 9))
    f = WindowFeatures(name="window_features")(inputs)
    f = keras.layers.Normalization(mean=0.0, variance=100.0, name="feature_scaler")(f)
    return keras.Model(inputs, keras.layers.Dense(6, activation="softmax", name="head")(f))


def test_a_fitted_context_svm_carries_a_feature_stage_and_a_decision_stage(context_svm):
    feature_stage, decision_stage = stages(context_svm)
    assert feature_stage.input_shape == (None, 128, 9)
    assert decision_stage.input_shape == (None, 3, feature_stage.output_shape[-1])


def test_the_stages_give_exactly_the_whole_models_probabilities(context_svm):
    x = np.random.default_rng(3).normal(size=(5, 3, 128, 9)).astype(np.float32)
    feature_stage, decision_stage = stages(context_svm)
    f = np.asarray(feature_stage(x.reshape(-1, 128, 9))).reshape(5, 3, -1)
    np.testing.assert_array_equal(np.asarray(decision_stage(f)), np.asarray(context_svm(x)))


def test_a_feature_context_gives_what_a_window_context_gives(context_svm):
    """The serving rule: each window's features once, stacked per device like windows."""
    windows = _stream_windows()
    feature_stage, decision_stage = stages(context_svm)
    whole = np.asarray(context_svm(WindowContext((1, 2)).push(windows)))
    ctx = WindowContext((1, 2))
    staged = np.concatenate([np.asarray(decision_stage(ctx.push(np.asarray(feature_stage(part)))))
                             for part in np.array_split(windows, 4)])  # fmt: skip
    np.testing.assert_array_equal(staged, whole)


def test_a_saved_staged_model_names_its_stages_in_its_metadata(staged_artifact):
    assert is_staged(staged_artifact.model)
    assert staged_artifact.stages == {"features": "feature_stage", "decision": "decision_stage",
                                      "feature_size": 332, "windows": 3}  # fmt: skip


def test_metadata_naming_stages_the_model_lacks_is_refused(output_dir):
    import json

    from harstream.models.artifact import ArtifactError, load_artifact, save_artifact

    path = save_artifact(
        _flat_context_model(), {"architecture": "flat", "context_steps": [1, 2]}, output_dir / "flat.keras"
    )
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["stages"] = {"features": "feature_stage", "decision": "decision_stage", "feature_size": 332, "windows": 3}
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="names stages"):
        load_artifact(path)


def test_restaging_a_flat_context_model_keeps_its_numbers():
    flat = _flat_context_model()
    x = np.random.default_rng(4).normal(size=(6, 3, 128, 9)).astype(np.float32)
    staged = restage(flat)
    assert is_staged(staged) and not is_staged(flat)
    np.testing.assert_array_equal(np.asarray(staged(x)), np.asarray(flat(x)))


def test_a_one_window_model_cannot_be_restaged():
    import keras

    inputs = keras.Input((128, 9))
    model = keras.Model(inputs, keras.layers.Dense(6)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="not a context model"):
        restage(model)


@pytest.mark.parametrize("kind", ["tflite", "tf-function"])
def test_each_stage_served_by_a_compiled_runtime_agrees_with_keras(staged_artifact, kind):
    from harstream.models.staged_runtime import load_staged_runtime

    check = WindowContext((1, 2)).push(_stream_windows())
    runtime = load_staged_runtime(staged_artifact, kind, check=check[:9])
    assert runtime.name == f"staged({kind}+{kind})"
    expected = np.asarray(staged_artifact.model(check))
    got = runtime.predict(check[:7])  # an odd batch: split into 4 + 1 + 1 + 1 or padded
    np.testing.assert_allclose(got, expected[:7], atol=1e-5)
    assert (got.argmax(1) == expected[:7].argmax(1)).all()


def test_the_shipped_models_are_staged():
    from harstream.models.artifact import ANY_MODEL, DEFAULT_MODEL, load_artifact

    for path in (DEFAULT_MODEL, ANY_MODEL):
        artifact = load_artifact(path)
        assert artifact.stages is not None and artifact.stages["windows"] == 1 + len(artifact.context_steps)


def test_a_staged_svm_is_still_refitted_when_fine_tuned(context_svm):
    from harstream.models.finetune import is_svm

    assert is_svm(context_svm) and not is_svm(_flat_context_model())


def _serve_core(samples: np.ndarray, predict, features=None, chunk: int = 50) -> np.ndarray:
    """Probabilities a worker core gives for one device's stream (no sockets)."""
    from harstream.stream.activities import ACTIVITIES
    from harstream.stream.protocol import SampleBatch, encode_samples
    from harstream.stream.worker import StreamCore, WorkerConfig

    core = StreamCore(ACTIVITIES, "m", WorkerConfig(context_steps=(1, 2), features=features, max_batch=8))
    out = []
    for seq in range(0, len(samples), chunk):
        part = samples[seq : seq + chunk].astype(np.float32)
        core.ingest(encode_samples(SampleBatch("d1", seq, 1000.0 + seq / 50, part)), now=0.0)
        while core.pending:
            x, taken = core.take_batch()
            probs = predict(x)
            out.append(np.asarray(probs))
            core.finish_batch(taken, probs, now=0.0)
    return np.concatenate(out)


def test_a_worker_serving_the_stages_gives_the_whole_models_probabilities(context_svm):
    rng = np.random.default_rng(8)
    samples = rng.normal(scale=0.2, size=(1500, 6))
    samples[:, 0] += 1.0
    feature_stage, decision_stage = stages(context_svm)
    whole = _serve_core(samples, lambda x: np.asarray(context_svm(x)))
    staged = _serve_core(
        samples, lambda f: np.asarray(decision_stage(f)), features=lambda w: np.asarray(feature_stage(w))
    )
    assert len(whole) == 22
    np.testing.assert_array_equal(staged, whole)


def test_a_failing_feature_stage_drops_its_windows_counted_and_the_worker_goes_on(context_svm):
    from harstream.stream.activities import ACTIVITIES
    from harstream.stream.protocol import SampleBatch, encode_samples
    from harstream.stream.worker import StreamCore, WorkerConfig

    def broken(windows):
        raise RuntimeError("interpreter gone")

    core = StreamCore(ACTIVITIES, "m", WorkerConfig(context_steps=(1, 2), features=broken))
    core.ingest(encode_samples(SampleBatch("d1", 0, 0.0, np.zeros((256, 6), np.float32))), now=0.0)
    assert core.pending == [] and core.drops["inference"] == 3  # windows 0, 1, 2


def test_a_device_moved_to_a_model_with_another_feature_stage_starts_its_context_afresh():
    from harstream.stream.model_routing import ServedModel
    from harstream.stream.worker import Device, WorkerConfig

    classes = ("WALKING", "STILL")
    waist = ServedModel("waist", "waist", "a", classes, (1, 2), features=lambda w: np.zeros((len(w), 5)))
    anywhere = ServedModel("any", "any", "b", classes, (1, 2), features=lambda w: np.zeros((len(w), 3)))
    device = Device("d", 0, waist, WorkerConfig(), 0.0)
    device.windows.context.push(np.zeros((2, 5), np.float32))
    device.serve_with(anywhere, WorkerConfig())
    assert device.windows.context.seen == 0
    assert device.windows.context.push(np.ones((1, 3), np.float32)).shape == (1, 3, 3)
