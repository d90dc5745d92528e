"""Context windows: the worker's per-device history and the training windows agree."""

from __future__ import annotations

import numpy as np
import pytest

from harstream.models.dataset import context_windows
from harstream.stream.core.context import WindowContext
from harstream.stream.core.pipeline import STEP, DevicePipeline, preprocess_recording


def _samples(n: int = 1500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = rng.normal(scale=0.1, size=(n, 6))
    s[:, 0] += 1.0
    return s


def test_live_context_equals_the_training_context_of_the_same_stream():
    samples = _samples()
    pipe, ctx = DevicePipeline(), WindowContext((1, 2, 4))
    live = np.concatenate([ctx.push(pipe.push(chunk)) for chunk in np.array_split(samples, 17)])
    starts = np.arange(len(live)) * STEP  # the worker's windows lie on the stream's 64-sample grid
    offline = context_windows(preprocess_recording(samples), starts, (1, 2, 4))
    np.testing.assert_allclose(live, offline, atol=1e-5)


def test_context_does_not_depend_on_how_windows_are_pushed():
    windows = np.random.default_rng(1).normal(size=(9, 128, 9)).astype(np.float32)
    one = WindowContext((1, 3)).push(windows)
    ctx = WindowContext((1, 3))
    parts = np.concatenate([ctx.push(windows[:2]), ctx.push(windows[2:2]), ctx.push(windows[2:])])
    np.testing.assert_array_equal(one, parts)
    assert ctx.seen == 9


def test_a_new_device_is_served_from_its_first_window_with_that_window_as_its_past():
    first = np.ones((1, 128, 9), np.float32)
    out = WindowContext((1, 2, 4)).push(first)
    assert out.shape == (1, 4, 128, 9)
    np.testing.assert_array_equal(out[0], np.repeat(first, 4, axis=0))


@pytest.mark.parametrize("steps", [(0,), (-1,), (2, 2)])
def test_context_steps_must_be_distinct_positive_counts(steps):
    with pytest.raises(ValueError, match="context steps"):
        WindowContext(steps)


def _send(core, device: str, seq: int, samples: np.ndarray) -> None:
    from harstream.stream.core.protocol import SampleBatch, encode_samples

    core.ingest(encode_samples(SampleBatch(device, seq, 1000.0 + seq / 50, samples.astype(np.float32))), 0.0)


def test_the_worker_hands_a_context_model_each_window_stacked_with_its_past():
    from harstream.stream.core.activities import ACTIVITIES
    from harstream.stream.core.worker import StreamCore, WorkerConfig

    samples = _samples(900).astype(np.float32)
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(max_batch=1000, context_steps=(1, 2)))
    for seq in range(0, 900, 50):
        _send(core, "d", seq, samples[seq : seq + 50])
    x, taken = core.take_batch()
    expected = WindowContext((1, 2)).push(DevicePipeline().push(samples))
    assert x.shape == (len(expected), 3, 128, 9)
    np.testing.assert_allclose(x, expected, atol=1e-6)


def test_after_a_gap_the_worker_starts_the_past_afresh():
    from harstream.stream.core.activities import ACTIVITIES
    from harstream.stream.core.worker import StreamCore, WorkerConfig

    samples = _samples(700, seed=3).astype(np.float32)
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(max_batch=1000, context_steps=(1,)))
    _send(core, "d", 0, samples[:300])
    core.take_batch()
    _send(core, "d", 10_000, samples[300:])  # samples 300..9999 missing
    x, _ = core.take_batch()
    first_after_gap = DevicePipeline().push(samples[300:])[0]
    np.testing.assert_allclose(x[0, 1], first_after_gap, atol=1e-6)  # its past is itself, not the old stream


def _context_svm(steps: tuple[int, ...]):
    from harstream.models.dataset import Windows
    from harstream.models.svm import fit_svm

    rng = np.random.default_rng(5)
    x = rng.normal(size=(36, 1 + len(steps), 128, 9)).astype(np.float32)
    return fit_svm(Windows(x, np.arange(36) % 6, np.arange(36) % 3), seed=0, C=1.0)[0]


def test_a_context_model_loads_with_the_steps_its_metadata_names(output_dir):
    from harstream.models.artifact import load_artifact, save_artifact

    path = save_artifact(
        _context_svm((1, 2)), {"architecture": "svm", "context_steps": [1, 2]}, output_dir / "ctx.keras"
    )
    artifact = load_artifact(path)
    assert artifact.context_steps == (1, 2) and artifact.model.input_shape == (None, 3, 128, 9)


def test_a_model_whose_input_disagrees_with_its_context_metadata_is_refused(output_dir):
    from harstream.models.artifact import ArtifactError, load_artifact, save_artifact

    path = save_artifact(
        _context_svm((1, 2)), {"architecture": "svm", "context_steps": [1]}, output_dir / "bad_ctx.keras"
    )
    with pytest.raises(ArtifactError, match=r"takes \(3, 128, 9\) per window but its metadata \(context_steps \[1\]\)"):
        load_artifact(path)


def test_live_accuracy_replays_a_context_model_with_the_workers_stacks():
    from harstream.models.live_scoring import session_windows

    samples = _samples(800, seed=7)
    expected = WindowContext((1, 4)).push(DevicePipeline().push(samples))
    np.testing.assert_allclose(session_windows(samples, chunk=50, context_steps=(1, 4)), expected, atol=1e-6)


def test_a_context_of_feature_vectors_follows_the_same_rule_as_windows():
    windows = np.random.default_rng(2).normal(size=(7, 128, 9)).astype(np.float32)
    features = windows.mean(axis=1)  # any per-window vector
    stacked_windows = WindowContext((1, 2, 4)).push(windows)
    ctx = WindowContext((1, 2, 4))
    stacked_features = np.concatenate([ctx.push(features[:3]), ctx.push(features[3:])])
    assert stacked_features.shape == (7, 4, 9)
    np.testing.assert_array_equal(stacked_features, stacked_windows.mean(axis=2))
