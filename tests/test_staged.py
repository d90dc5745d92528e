"""Staged context models: features once per window, the same probabilities as the whole model."""

from __future__ import annotations

import numpy as np
import pytest

from harstream.models.staged import is_staged, restage, stages
from harstream.stream.core.context import WindowContext
from harstream.stream.core.pipeline import DevicePipeline


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
    staged = np.concatenate(
        [np.asarray(decision_stage(ctx.push(np.asarray(feature_stage(part))))) for part in np.array_split(windows, 4)]
    )
    np.testing.assert_array_equal(staged, whole)


def test_a_saved_staged_model_names_its_stages_in_its_metadata(staged_artifact):
    assert is_staged(staged_artifact.model)
    assert staged_artifact.stages == {
        "features": "feature_stage",
        "decision": "decision_stage",
        "feature_size": 332,
        "windows": 3,
    }


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


#: The compiled runtimes' batch sizes here: each size is a conversion (or a trace) at start.
SIZES = (1, 4)


@pytest.fixture(scope="module")
def _conversions(tmp_path_factory):
    """One LiteRT cache for this module's staged model: the first test that
    serves its stages with LiteRT converts them (at SIZES), the staged record's
    full start below reads them back, as a worker reads the cache it shares
    (keyed by each stage's hash and batch size)."""
    return tmp_path_factory.mktemp("conversions")


@pytest.mark.parametrize("kind", ["tflite", "tf-function"])
def test_each_stage_served_by_a_compiled_runtime_agrees_with_keras(staged_artifact, kind, _conversions, monkeypatch):
    from harstream.models.staged_runtime import load_staged_runtime

    monkeypatch.setenv("HARSTREAM_CACHE", str(_conversions))

    check = WindowContext((1, 2)).push(_stream_windows())
    # batch sizes 1 and 4 (the worker's are 1, 4, 16, 64): half the conversions, the same splits and padding
    runtime = load_staged_runtime(staged_artifact, kind, check=check[:9], sizes=SIZES)
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
    from harstream.stream.core.activities import ACTIVITIES
    from harstream.stream.core.protocol import SampleBatch, encode_samples
    from harstream.stream.core.worker import StreamCore, WorkerConfig

    core = StreamCore(
        ACTIVITIES, "m", WorkerConfig(between_devices=0, context_steps=(1, 2), features=features, max_batch=8)
    )
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
    from harstream.stream.core.activities import ACTIVITIES
    from harstream.stream.core.protocol import SampleBatch, encode_samples
    from harstream.stream.core.worker import StreamCore, WorkerConfig

    def broken(windows):
        raise RuntimeError("interpreter gone")

    core = StreamCore(ACTIVITIES, "m", WorkerConfig(between_devices=0, context_steps=(1, 2), features=broken))
    core.ingest(encode_samples(SampleBatch("d1", 0, 0.0, np.zeros((256, 6), np.float32))), now=0.0)
    assert core.pending == [] and core.drops["inference"] == 3  # windows 0, 1, 2


def test_a_device_moved_to_a_model_with_another_feature_stage_starts_its_context_afresh():
    from harstream.stream.core.model_routing import ServedModel
    from harstream.stream.core.worker import Device, WorkerConfig

    classes = ("WALKING", "STILL")
    waist = ServedModel("waist", "waist", "a", classes, (1, 2), features=lambda w: np.zeros((len(w), 5)))
    anywhere = ServedModel("any", "any", "b", classes, (1, 2), features=lambda w: np.zeros((len(w), 3)))
    device = Device("d", 0, waist, WorkerConfig(), 0.0)
    device.windows.context.push(np.zeros((2, 5), np.float32))
    device.serve_with(anywhere, WorkerConfig())
    assert device.windows.context.seen == 0
    assert device.windows.context.push(np.ones((1, 3), np.float32)).shape == (1, 3, 3)


# ------------------------------------------------------------ fast start from the staged record


@pytest.fixture(scope="module")
def _staged_record(staged_artifact, tmp_path_factory, _conversions):
    """A copy of the staged model whose full start (numpy features + LiteRT
    decision, checked against Keras) left its staged serving record in a cache
    beside it; made once per module (the start converts the model):
    ``(folder, check stacks, the full path's runtime)``. The start ranks its
    candidates as an idle machine does (numpy, then LiteRT, then tf.function):
    timed on a busy one, tf.function can win, and the record would then need
    TensorFlow."""
    import shutil

    from harstream.models import runtime
    from harstream.models.artifact import load_artifact
    from harstream.models.staged_runtime import load_staged_runtime

    folder = tmp_path_factory.mktemp("recorded")
    shutil.copytree(_conversions, folder / "cache")  # the stages' conversions, if a test above made them
    shutil.copy(staged_artifact.path, folder / "ctx.keras")
    shutil.copy(staged_artifact.path.with_suffix(".json"), folder / "ctx.json")
    check = WindowContext((1, 2)).push(_stream_windows())[:9]
    order = {"numpy": 0.0, "tflite": 1.0}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARSTREAM_CACHE", str(folder / "cache"))
        patch.setattr(runtime, "window_cost", lambda rt, sample, n: order.get(rt.name, 2.0))
        full = load_staged_runtime(load_artifact(folder / "ctx.keras"), "auto", check=check, sizes=SIZES)
    assert full.name == "staged(numpy+tflite)", full.report
    return folder, check, full


@pytest.fixture
def recorded_staged_model(_staged_record, tmp_path, monkeypatch):
    """The recorded staged model and its cache, copied for this test alone (tests
    change the model file or the cached decision); ``(path, check stacks, the
    full path's runtime)``."""
    import shutil

    folder, check, full = _staged_record
    mine = shutil.copytree(folder, tmp_path / "recorded")
    monkeypatch.setenv("HARSTREAM_CACHE", str(mine / "cache"))
    return mine / "ctx.keras", check, full


_FAST_START = """
import json, sys
import numpy as np
from harstream.models.fast_start import load_cached_runtime
runtime, meta = load_cached_runtime(sys.argv[1])
probs = runtime.predict(np.load(sys.argv[2]))
print(json.dumps({"name": runtime.name, "probs": probs.tolist(),
                  "loaded": sorted(m for m in ("tensorflow", "keras") if m in sys.modules)}))
"""


def test_a_staged_model_starts_again_from_its_record_without_tensorflow_and_the_same_numbers(
    recorded_staged_model, tmp_path
):
    import json
    import subprocess
    import sys

    path, check, full = recorded_staged_model
    np.save(tmp_path / "check.npy", check)
    out = subprocess.run(
        [sys.executable, "-c", _FAST_START, str(path), str(tmp_path / "check.npy")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["name"] == "staged(numpy+tflite)" and got["loaded"] == []
    np.testing.assert_allclose(np.array(got["probs"], np.float32), full.predict(check), rtol=0, atol=1e-6)


def test_a_worker_restarted_on_a_staged_model_serves_from_the_record_without_tensorflow(
    recorded_staged_model, tmp_path
):
    import os
    import subprocess
    import sys
    import threading

    path = recorded_staged_model[0]
    cmd = [
        sys.executable,
        "-m",
        "harstream",
        "worker",
        "--single-model",
        "--model",
        str(path),
        "--ingest",
        f"ipc://{tmp_path}/in",
        "--publish",
        f"ipc://{tmp_path}/out",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        for _ in range(600):  # at most 60 s
            if any("fast start" in line for line in lines) or proc.poll() is not None:
                break
            threading.Event().wait(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    start = [line for line in lines if "fast start" in line]
    assert start and "staged(numpy+tflite)" in start[0] and "TensorFlow not loaded" in start[0], lines


def test_a_staged_record_is_refused_when_the_model_file_changed(recorded_staged_model):
    from harstream.models.artifact import ArtifactError
    from harstream.models.fast_start import load_cached_runtime

    path = recorded_staged_model[0]
    assert load_cached_runtime(path) is not None
    with path.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="file hash does not match"):
        load_cached_runtime(path)


def test_a_staged_record_is_not_used_when_a_decision_file_changed(recorded_staged_model):
    from harstream.models.artifact import read_metadata
    from harstream.models.fast_start import load_cached_runtime
    from harstream.models.runtime import tflite_cache_dir
    from harstream.models.staged_runtime import DECISION_STAGE, stage_sha256

    path = recorded_staged_model[0]
    key = stage_sha256(read_metadata(path)["sha256"], DECISION_STAGE)
    blob = tflite_cache_dir() / f"{key[:16]}-b4.tflite"
    blob.write_bytes(blob.read_bytes()[:-8] + b"\0" * 8)
    assert load_cached_runtime(path) is None  # the worker takes the full path, which converts again


def test_numpy_features_need_no_keras_and_name_what_they_cannot_run():
    import subprocess
    import sys

    code = (
        "import sys; from harstream.models.feature_math import numpy_features; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
    from harstream.models.feature_math import numpy_features

    with pytest.raises(ValueError, match="no numpy formulas"):
        numpy_features("harstream>SomethingElse")
    with pytest.raises(ValueError, match="options"):
        numpy_features("harstream>WindowFeatures", {"bands": 4})


def test_the_stage_names_of_the_runtime_are_the_staged_models():
    from harstream.models import staged, staged_runtime

    assert (staged_runtime.FEATURE_STAGE, staged_runtime.DECISION_STAGE) == (
        staged.FEATURE_STAGE,
        staged.DECISION_STAGE,
    )


@pytest.mark.parametrize("layer_name", ["WindowFeatures", "PlacementFreeFeatures", "PlacementRobustFeatures"])
def test_the_numpy_features_are_the_graph_features(layer_name):
    from harstream.models import features, invariant
    from harstream.models.staged_runtime import NumpyFeatures

    layer = getattr(features, layer_name, None) or getattr(invariant, layer_name)
    x = _stream_windows()[:20]
    numpy_rt = NumpyFeatures(f"harstream>{layer_name}")
    np.testing.assert_allclose(numpy_rt.predict(x), np.asarray(layer()(x)), rtol=1e-4, atol=1e-4)
    assert numpy_rt.predict(x[:0]).shape == (0, layer.size())
