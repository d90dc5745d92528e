"""The feature study's building blocks: zero-phase filters and context windows."""

from __future__ import annotations

import numpy as np

from harstream.models.dataset import labelled_windows
from harstream.models.studies.feature_study import zero_phase_preprocess
from harstream.stream.core.pipeline import preprocess_recording
from harstream.stream.data.recordings import Recording


def _tilt_recording(n: int = 1000, at: int = 500) -> np.ndarray:
    samples = np.zeros((n, 6))
    samples[:, 0] = 1.0
    samples[at:, 0], samples[at:, 1] = 0.0, 1.0  # the phone turns 90 degrees at sample ``at``
    return samples


def test_zero_phase_gravity_turns_halfway_at_the_tilt_while_the_causal_one_lags():
    out_zero = zero_phase_preprocess(_tilt_recording())
    out_causal = preprocess_recording(_tilt_recording())
    gravity_y = lambda out: out[:, 7] - out[:, 1]  # total_acc_y - body_acc_y  # noqa: E731
    assert abs(gravity_y(out_zero)[500] - 0.5) < 0.1
    assert gravity_y(out_causal)[500] < 0.1  # the causal filter has not seen the tilt yet


def test_context_windows_sit_whole_steps_before_the_window_or_fall_back_to_the_first_on_its_grid():
    samples = np.zeros((600, 6))
    samples[:, 0] = np.arange(600)  # acc x counts samples; the raw acc survives in total_acc_x
    labels = np.full(600, -1)
    labels[100:400] = 1  # windows start at 100 and 164 (and 228)
    rec = Recording(name="synthetic", subject=1, samples=samples, labels=labels)
    identity = lambda s: np.repeat(s[:, :1], 9, axis=1).astype(np.float32)  # noqa: E731
    windows = labelled_windows([rec], context_steps=(1, 2), preprocess=identity)
    x, y, subjects = windows.x, windows.y, windows.subjects
    assert x.shape == (3, 3, 128, 9) and y.tolist() == [0, 0, 0] and subjects.tolist() == [1, 1, 1]
    assert [int(x[0, k, 0, 0]) for k in range(3)] == [100, 36, 36]  # no window 2 steps back: the first on its grid
    assert [int(x[1, k, 0, 0]) for k in range(3)] == [164, 100, 36]
