"""Serving runtimes agree with the Keras model they were built from."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harstream.models.runtime import (
    NullRuntime,
    Selected,
    TfFunctionRuntime,
    TfliteRuntime,
    check_agreement,
    load_runtime,
    padded_size,
    split_batch,
)


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    """A small untrained LSTM saved and loaded as a real artifact."""
    import keras

    from harstream.models.artifact import load_artifact, save_artifact

    keras.utils.set_random_seed(3)
    inp = keras.Input((128, 9))
    x = keras.layers.LSTM(8)(inp)
    out = keras.layers.Dense(6, activation="softmax")(keras.layers.Dense(8, activation="relu")(x))
    path = save_artifact(keras.Model(inp, out), {"architecture": "tiny-lstm"}, tmp_path_factory.mktemp("m") / "t.keras")
    return load_artifact(path)


@pytest.fixture(scope="module")
def windows():
    return np.random.default_rng(1).normal(0, 0.5, (7, 128, 9)).astype(np.float32)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARSTREAM_CACHE", str(tmp_path))


@given(st.integers(0, 500))
def test_split_batch_covers_the_batch_exactly_with_fixed_sizes(n):
    parts = split_batch(n)
    assert sum(parts) == n and set(parts) <= {1, 4, 16, 64}
    assert padded_size(max(n, 1)) >= min(n, 64)


@pytest.mark.parametrize("builder", [TfliteRuntime, TfFunctionRuntime])
def test_compiled_runtime_matches_keras_on_odd_batch_sizes(tiny_artifact, windows, builder):
    reference = tiny_artifact.model.predict(windows, verbose=0)
    rt = builder(tiny_artifact, (1, 4))
    agreement = check_agreement(rt, reference, windows)  # 7 = 4 + 1 + 1 + 1, or padded to 4 + 4
    assert agreement.ok, agreement
    assert rt.predict(windows[:0]).shape == (0, 6)


def test_auto_serves_with_an_agreeing_runtime_and_keeps_a_fallback(tiny_artifact, windows):
    selected = load_runtime(tiny_artifact, "auto", check=windows, sizes=(1, 4))
    assert selected.name in ("tflite", "tf-function") and selected.fallback is not None
    assert all(c["agrees"] for c in selected.report["candidates"].values())
    np.testing.assert_allclose(selected.predict(windows), tiny_artifact.model.predict(windows, verbose=0), atol=1e-4)


def test_a_disagreeing_runtime_is_detected(tiny_artifact, windows):
    reference = tiny_artifact.model.predict(windows, verbose=0)
    assert not check_agreement(NullRuntime(), reference, windows).ok


def test_a_failing_runtime_falls_back():
    class Broken:
        name = "broken"

        def predict(self, x):
            raise RuntimeError("interpreter crashed")

    selected = Selected(Broken(), NullRuntime())
    assert selected.predict(np.zeros((2, 128, 9), np.float32)).shape == (2, 6)
    assert selected.name == "none" and selected.fallback is None


def test_a_checked_conversion_restarts_from_its_record_and_a_changed_model_is_refused(tiny_artifact, windows, tmp_path):
    import shutil

    from harstream.models.artifact import ArtifactError
    from harstream.models.fast_start import load_cached_runtime

    load_runtime(tiny_artifact, "tflite", check=windows, sizes=(1, 4))  # agrees: leaves the serving record
    path = tmp_path / "copy.keras"  # the record is keyed by the model's hash, so a copy finds it
    shutil.copy(tiny_artifact.path, path)
    shutil.copy(tiny_artifact.path.with_suffix(".json"), path.with_suffix(".json"))
    runtime, meta = load_cached_runtime(path)
    np.testing.assert_allclose(runtime.predict(windows), tiny_artifact.model.predict(windows, verbose=0), atol=1e-4)
    with path.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="file hash does not match"):
        load_cached_runtime(path)
