"""The streaming preprocessing: chunk invariance, filter behaviour, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.stream.core.pipeline import STEP, WINDOW, DevicePipeline

RATE = 50.0


def synthetic_recording(n: int = 1500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    acc = np.stack([np.sin(2 * np.pi * 1.5 * t), np.cos(2 * np.pi * 0.7 * t), np.ones(n)], axis=1)
    gyro = rng.normal(0, 0.3, (n, 3))
    return np.concatenate([acc + rng.normal(0, 0.05, (n, 3)), gyro], axis=1)


RECORDING = synthetic_recording()


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(0, len(RECORDING)), max_size=30))
def test_windows_do_not_depend_on_chunking(cuts):
    whole = DevicePipeline().push(RECORDING)
    pipe = DevicePipeline()
    pieces = [pipe.push(part) for part in np.split(RECORDING, sorted(cuts))]
    np.testing.assert_allclose(np.concatenate(pieces), whole, rtol=0, atol=1e-9)


def test_sample_by_sample_equals_one_piece():
    recording = RECORDING[:400]
    whole = DevicePipeline().push(recording)
    pipe = DevicePipeline()
    pieces = [pipe.push(recording[i : i + 1]) for i in range(len(recording))]
    np.testing.assert_allclose(np.concatenate(pieces), whole, rtol=0, atol=1e-9)


def test_windows_start_every_64_samples():
    pipe = DevicePipeline()
    out = pipe.push(RECORDING)
    assert out.shape == ((len(RECORDING) - WINDOW) // STEP + 1, WINDOW, 9)
    assert out.dtype == np.float32
    # consecutive windows overlap by half
    np.testing.assert_array_equal(out[1, :STEP], out[0, STEP:])


def tone(freq_hz: float, n: int = 3000, amplitude: float = 1.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq_hz * np.arange(n) / RATE)


def body_and_gravity(acc_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    samples = np.zeros((len(acc_x), 6))
    samples[:, 0] = acc_x
    windows = DevicePipeline().push(samples)
    # second half of every window: the stream after the filters settled
    body = windows[10:, STEP:, 0].ravel()
    total = windows[10:, STEP:, 6].ravel()
    return body, total - body


def test_slow_tilt_lands_in_gravity():
    tilt = tone(0.05, n=6000)
    body, gravity = body_and_gravity(tilt)
    assert np.std(gravity) == pytest.approx(np.std(tilt), rel=0.05)
    # A causal 0.3 Hz Butterworth lags ~1 s, so a third of a 0.05 Hz tilt's
    # amplitude shows up as body acceleration; an offline (zero-phase) filter
    # would leave none. Slower tilts leave proportionally less.
    assert np.std(body) < 0.4 * np.std(tilt)
    _, slower = body_and_gravity(tone(0.01, n=15000))
    assert np.std(slower) == pytest.approx(np.std(tone(0.01, n=15000)), rel=0.05)


def test_two_hertz_motion_lands_in_body_acceleration():
    body, gravity = body_and_gravity(1.0 + tone(2.0, amplitude=0.5))
    assert np.std(body) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    assert np.std(gravity - gravity.mean()) < 0.05


def test_24_hz_tone_is_attenuated_by_the_noise_lowpass():
    samples = np.zeros((3000, 6))
    samples[:, 3] = tone(24.0)  # gyro x passes only median + 20 Hz low-pass
    passed = DevicePipeline().push(samples)[10:, :, 3]
    samples[:, 3] = tone(5.0)
    reference = DevicePipeline().push(samples)[10:, :, 3]
    assert np.std(passed) < 0.5 * np.std(reference)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((10, 5)), r"expected shape \(n, 6\)"),
        (np.zeros(6), r"expected shape \(n, 6\)"),
        (np.full((10, 6), np.nan), "non-finite"),
        (np.array([[0, 0, 0, 0, 0, np.inf]]), "row 0 channel 5"),
    ],
)
def test_bad_input_is_rejected_and_leaves_state_untouched(bad, message):
    pipe, reference = DevicePipeline(), DevicePipeline()
    first = RECORDING[:100]
    pipe.push(first)
    reference.push(first)
    with pytest.raises(ValueError, match=message):
        pipe.push(bad)
    np.testing.assert_array_equal(pipe.push(RECORDING[100:]), reference.push(RECORDING[100:]))


def test_the_bus_the_recordings_and_the_filters_share_one_sample_rate():
    from harstream.stream.core import filters, protocol, resample
    from harstream.stream.core.pipeline import preprocessing_params
    from harstream.stream.core.rate import RATE_HZ
    from harstream.stream.data import recordings

    assert preprocessing_params()["rate_hz"] == RATE_HZ == 50.0
    assert filters.RATE_HZ is protocol.RATE_HZ is recordings.RATE_HZ is RATE_HZ
    assert resample.Resampler().rate == RATE_HZ


def test_filter_banks_stepped_together_match_each_bank_stepped_alone_bit_for_bit():
    from harstream.stream.core.filters import UciFilterBank

    devices = [synthetic_recording(300, seed=k) * (1 + k / 10) for k in range(5)]
    together, alone = [UciFilterBank() for _ in devices], [UciFilterBank() for _ in devices]
    for k in (1, 3):  # some devices already running, the others new
        together[k].apply(devices[k][:37])
        alone[k].apply(devices[k][:37])
    for lo, hi in ((37, 101), (101, 102), (102, 300)):
        got = UciFilterBank.apply_many(together, np.stack([d[lo:hi] for d in devices]))
        want = np.stack([bank.apply(d[lo:hi]) for bank, d in zip(alone, devices)])
        np.testing.assert_array_equal(got, want)
    # The state carried on is the same too: the next single step agrees.
    for bank_together, bank_alone, d in zip(together, alone, devices):
        np.testing.assert_array_equal(bank_together.apply(d[:20]), bank_alone.apply(d[:20]))


def test_filter_banks_of_different_rates_are_refused_together_and_left_untouched():
    from harstream.stream.core.filters import UciFilterBank

    banks = [UciFilterBank(), UciFilterBank(rate_hz=100.0)]
    with pytest.raises(ValueError, match="different designs"):
        UciFilterBank.apply_many(banks, np.zeros((2, 10, 6)))
    for bank, rate in zip(banks, (50.0, 100.0)):
        np.testing.assert_array_equal(bank.apply(RECORDING[:50]), UciFilterBank(rate_hz=rate).apply(RECORDING[:50]))


def test_scipy_signal_is_imported_when_a_filter_is_first_designed_not_by_the_commands_that_never_filter():
    """``harstream tail`` (which formats the worker's stats) and a worker's
    core start without scipy.signal's seconds of import; designing a filter
    bank brings it."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import harstream.commands.tail, harstream.stream.core.worker\n"
        "print('scipy.signal' in sys.modules)\n"
        "from harstream.stream.core.filters import UciFilterBank\n"
        "UciFilterBank()\n"
        "print('scipy.signal' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.split() == ["False", "True"]
