"""The hand-crafted feature layer: each feature means what its name says."""

from __future__ import annotations

import numpy as np

from harstream.models.features import BANDS, SIGNALS, STATISTICS, WindowFeatures

RATE = 50.0
T = np.arange(128) / RATE


def _features(x: np.ndarray) -> np.ndarray:
    return np.asarray(WindowFeatures()(x.astype(np.float32)))


def _window(**channels: np.ndarray) -> np.ndarray:
    """A window of zeros with the named channels (index -> signal) set."""
    x = np.zeros((1, 128, 9), np.float32)
    for index, signal in channels.items():
        x[0, :, int(index[1:])] = signal
    return x


def _block(f: np.ndarray, stat: int) -> np.ndarray:
    """Statistic ``stat`` (0 mean, 1 std, 2 max, 3 min, 4 energy, 5 median, 6 iqr) of the 20 signals."""
    return f[0, stat * SIGNALS : (stat + 1) * SIGNALS]


def test_statistics_of_a_known_signal():
    ramp = np.linspace(-1.0, 1.0, 128)
    f = _features(_window(c0=ramp))
    assert abs(_block(f, 0)[0]) < 1e-5  # mean
    assert abs(_block(f, 1)[0] - ramp.std()) < 1e-3  # std
    assert abs(_block(f, 2)[0] - 1.0) < 1e-6 and abs(_block(f, 3)[0] + 1.0) < 1e-6  # max, min
    assert abs(_block(f, 4)[0] - np.mean(ramp**2)) < 1e-4  # energy
    assert abs(_block(f, 5)[0]) < 1e-2  # median
    assert abs(_block(f, 6)[0] - (np.percentile(ramp, 75) - np.percentile(ramp, 25))) < 0.03  # iqr


def test_band_energy_peaks_in_the_band_of_the_tone():
    tone = np.sin(2 * np.pi * 10.0 * T)  # 10 Hz: DFT bin ~25.6 of 64, band 3 (bins 25-32)
    f = _features(_window(c0=tone))
    start = STATISTICS * SIGNALS
    bands = f[0, start : start + BANDS]  # signal 0's eight bands
    assert int(np.argmax(bands)) == 3


def test_mean_frequency_is_the_frequency_of_a_pure_tone():
    def mean_freq(hz: float) -> float:
        f = _features(_window(c0=np.sin(2 * np.pi * hz * T)))
        return float(f[0, (STATISTICS + BANDS) * SIGNALS])

    for bin_ in (13, 38):  # tones on a DFT bin (k * 50/128 Hz) do not leak into others
        hz = bin_ * RATE / 128
        assert abs(mean_freq(hz) - hz) < 0.05


def test_gravity_direction_is_the_unit_mean_of_total_acceleration():
    f = _features(_window(c6=np.full(128, 0.6), c7=np.full(128, 0.0), c8=np.full(128, -0.8)))
    start = (STATISTICS + BANDS + 1) * SIGNALS
    np.testing.assert_allclose(f[0, start : start + 3], [0.6, 0.0, -0.8], atol=1e-4)


def test_axis_correlation_sees_coupled_and_opposed_axes():
    s = np.sin(2 * np.pi * 2.0 * T)
    f = _features(_window(c0=s, c1=s, c2=-s))
    start = (STATISTICS + BANDS + 1) * SIGNALS + 3
    np.testing.assert_allclose(f[0, start : start + 3], [1.0, -1.0, -1.0], atol=1e-3)


def test_features_are_finite_for_a_perfectly_still_window():
    assert np.isfinite(_features(np.zeros((2, 128, 9)))).all()
