"""The altitude-rate estimator: properties a real barometer's quirks must not break."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.stream.core.barometer import AltitudeRate, pressure_hpa, screen_pressure


def _barometer(rate_hz: float, seconds: float, altitude, noise=0.02, quantum=0.01, seed=0, extra=None):
    """Readings of a simulated barometer: ``altitude(t)`` in metres, noise and quantisation in hPa."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, seconds, 1 / rate_hz)
    p = pressure_hpa(altitude(t), 1008.0) + rng.normal(0, noise, len(t))
    if extra is not None:
        p = p + extra(t)
    return t, np.round(p / quantum) * quantum


def _verdicts(t, p, chunk_s=1.0) -> list:
    """What the estimator says at the end of every second, fed 1-s chunks."""
    est, out = AltitudeRate(), []
    for lo in np.arange(0, t[-1] + chunk_s, chunk_s):
        sel = (t >= lo) & (t < lo + chunk_s)
        est.push(t[sel], p[sel])
        out.append(est.verdict(lo + chunk_s - 1e-6))
    return out


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 600), max_size=20), rate=st.sampled_from([1.0, 7.0, 25.0]))
def test_estimates_do_not_depend_on_how_the_readings_were_chunked(cuts, rate):
    t, p = _barometer(rate, 24, lambda t: 0.2 * np.clip(t - 8, 0, None), extra=lambda t: 0.2 * (t > 15))
    cuts = sorted(min(c, len(t)) for c in cuts)
    whole = AltitudeRate().push(t, p)
    est = AltitudeRate()
    pieces = [v for part_t, part_p in zip(np.split(t, cuts), np.split(p, cuts)) for v in est.push(part_t, part_p)]
    assert pieces == whole


@pytest.mark.parametrize("rate", [1.0, 5.0, 25.0])
@pytest.mark.parametrize("climb", [0.15, 0.25, 0.4, -0.3])
def test_a_climb_rate_is_recovered_within_a_tolerance(rate, climb):
    t, p = _barometer(rate, 40, lambda t: climb * t, noise=0.02)
    speeds = np.array([v.speed for v in AltitudeRate().push(t, p) if v.t >= 10])
    assert abs(np.median(speeds) - climb) < 0.03
    error = np.abs(speeds - climb)
    assert np.percentile(error, 95) < (0.08 if rate == 1.0 else 0.04)
    assert error.max() < (0.15 if rate == 1.0 else 0.08)


@pytest.mark.parametrize("rate", [1.0, 5.0, 25.0])
@pytest.mark.parametrize("step_hpa", [0.1, -0.2, 0.4])
def test_a_door_step_is_not_a_climb(rate, step_hpa):
    t, p = _barometer(rate, 60, lambda t: 0 * t, noise=0.01, extra=lambda t: step_hpa * (t >= 30.3))
    said = _verdicts(t, p)
    assert "up" not in said and "down" not in said
    assert said[-1] == "level"


@pytest.mark.parametrize("rate", [5.0, 25.0])
def test_a_door_opened_and_shut_again_is_not_a_climb(rate):
    t, p = _barometer(rate, 60, lambda t: 0 * t, noise=0.02, extra=lambda t: 0.25 * ((t >= 30.3) & (t < 33.1)))
    said = _verdicts(t, p)
    assert "up" not in said and "down" not in said


def test_weather_drift_is_not_a_climb():
    # 3 hPa an hour is a storm coming in: 7 mm/s of apparent climb
    t, p = _barometer(5.0, 600, lambda t: 0 * t, noise=0.02, extra=lambda t: -3.0 * t / 3600)
    said = _verdicts(t, p)
    assert "up" not in said and "down" not in said
    assert said.count("level") > 0.9 * len(said)


def test_stairs_are_told_apart_from_level_walking_in_one_recording():
    # level 30 s, up a flight at 0.25 m/s for 20 s, level 30 s
    t, p = _barometer(10.0, 80, lambda t: 0.25 * np.clip(t - 30, 0, 20))
    said = _verdicts(t, p)
    assert set(said[10:30]) == {"level"}
    assert set(said[38:50]) == {"up"}
    assert set(said[62:]) == {"level"}


def test_a_device_that_never_sent_pressure_has_no_verdict_and_waits_for_nothing():
    est = AltitudeRate()
    assert est.verdict(100.0) is None and est.push([], []) == []


@pytest.mark.parametrize(
    "t, hpa, reason",
    [
        ([1.0], [1200.0], "pressure_range"),
        ([1.0], [299.9], "pressure_range"),
        ([1.0], [float("nan")], "pressure_non_finite"),
        ([float("inf")], [1000.0], "pressure_non_finite"),
        ([1.0, 1.0], [1000.0, 1000.0], "pressure_order"),
        ([2.0, 1.0], [1000.0, 1000.0], "pressure_order"),
    ],
)
def test_readings_that_cannot_be_right_are_refused_by_reason(t, hpa, reason):
    _, _, refused = screen_pressure(t, hpa)
    assert dict(refused) == {reason: 1}
    est = AltitudeRate()
    est.push(t, hpa)
    assert dict(est.refused) == {reason: 1}


def test_a_reading_older_than_one_already_taken_is_refused_across_pushes():
    est = AltitudeRate()
    est.push([10.0, 11.0], [1000.0, 1000.0])
    est.push([10.5, 12.0], [1000.0, 1000.0])
    assert dict(est.refused) == {"pressure_order": 1} and est.readings == 3


def test_a_steady_climb_reads_up_wherever_the_estimates_ticks_fall():
    """The estimator ticks at whole half-seconds of the device's clock, so
    where a stream starts decides how its readings fall into bins. A slow
    climb (0.17 m/s, 0.02 hPa of noise at 10 Hz: the end-to-end test's
    simulated barometer) was read in a few bins as a door step plus level for
    about one start in five; the whole span now tells them apart."""
    from harstream.simulator.barometer import SimulatedBarometer, simulate_pressure

    labels = np.r_[np.full(1000, 1), np.full(1500, 2), np.full(1000, 1)].astype(np.int16)
    rows = simulate_pressure(labels, SimulatedBarometer(rate_hz=10, noise_hpa=0.02, doors_per_min=0), seed=3)
    climbing = [(w * 64 + 127) / 50 for w in range(53) if w * 64 > 1600 and labels[w * 64 + 127] == 2]
    for phase in np.arange(0.0, 1.0, 0.025):
        t0 = 1_700_000_000.0 + phase
        est = AltitudeRate()
        said = []
        for c in range(0, len(labels), 25):  # 0.5-s messages, each window judged when it is complete
            part = rows[(rows[:, 0] >= c / 50) & (rows[:, 0] < (c + 25) / 50)]
            est.push(part[:, 0] + t0, part[:, 1])
            said += [est.verdict(t0 + end) for end in climbing if c / 50 <= end < (c + 25) / 50]
        assert said == ["up"] * len(climbing), (phase, said)
