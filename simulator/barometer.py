"""A SIMULATED barometer for recordings that have none (HAPT has no barometer).

Nothing here was measured: the pressure is made up from the recording's
activity labels and a model of a phone barometer, so that the live path's
pressure handling (:mod:`~harstream.stream.core.barometer`, the stairs gate
of :mod:`~harstream.stream.core.stairs`) can be developed and scored on HAPT.
What the model assumes:

- altitude: each labelled upstairs segment (HAPT label 2) climbs at one speed
  drawn from 0.15-0.4 m/s for the whole segment, each downstairs segment
  (label 3) descends likewise; everything else stays level (HAPT labels
  stairs bouts whole; real flights have landings, which this ignores);
- the standard atmosphere turns altitude into pressure, from a sea-level
  pressure drawn from 990-1030 hPa;
- weather drift: a linear trend of up to ±``drift_hpa_per_h``;
- doors and ventilation: events at ``doors_per_min`` (Poisson), each a step
  of 0.05-0.3 hPa either way that either stays (a room held at another
  pressure) or goes back after 1-6 s (a door opened and shut);
- sensor: white noise of ``noise_hpa``, readings quantised to
  ``quantum_hpa``, at ``rate_hz`` with 5 % timing jitter.

>>> labels = np.r_[np.full(500, 1), np.full(1000, 2), np.full(500, 1)].astype(np.int16)  # 20 s up
>>> rows = simulate_pressure(labels, SimulatedBarometer(noise_hpa=0.0, doors_per_min=0.0, drift_hpa_per_h=0.0), seed=1)
>>> climbed_m = float(rows[0, 1] - rows[-1, 1]) / 0.12              # about 0.12 hPa per metre
>>> rows.shape[1], len(rows), bool(2.9 < climbed_m < 8.1)           # 20 s at 0.15-0.4 m/s
(2, 399, True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from harstream.stream.core.barometer import pressure_hpa
from harstream.stream.core.rate import RATE_HZ
from harstream.stream.data.recordings import Recording

UPSTAIRS_LABEL, DOWNSTAIRS_LABEL = 2, 3


@dataclass(frozen=True)
class SimulatedBarometer:
    """How the simulated barometer behaves (see the module doc)."""

    rate_hz: float = 10.0
    noise_hpa: float = 0.03
    quantum_hpa: float = 0.01
    drift_hpa_per_h: float = 2.0
    doors_per_min: float = 0.5
    climb_m_s: tuple[float, float] = (0.15, 0.4)

    def __post_init__(self) -> None:
        if not 0.1 <= self.rate_hz <= 100:
            raise ValueError(f"rate {self.rate_hz} Hz: a barometer reads 0.1-100 Hz")
        if self.noise_hpa < 0 or self.quantum_hpa < 0 or self.doors_per_min < 0:
            raise ValueError("noise, quantum and door rate must not be negative")


def simulated_altitude(labels: np.ndarray, rng: np.random.Generator, climb_m_s=(0.15, 0.4)) -> np.ndarray:
    """Altitude (m) per 50 Hz sample: each stairs segment at its own speed."""
    labels = np.asarray(labels)
    speed = np.zeros(len(labels))
    edges = np.flatnonzero(np.diff(labels)) + 1
    for lo, hi in zip(np.r_[0, edges], np.r_[edges, len(labels)]):
        if labels[lo] in (UPSTAIRS_LABEL, DOWNSTAIRS_LABEL):
            v = rng.uniform(*climb_m_s)
            speed[lo:hi] = v if labels[lo] == UPSTAIRS_LABEL else -v
    return np.cumsum(speed) / RATE_HZ


def simulate_pressure(
    labels: np.ndarray, model: SimulatedBarometer = SimulatedBarometer(), seed: int = 0
) -> np.ndarray:
    """Simulated barometer readings for a 50 Hz recording with ``labels``:
    ``(m, 2)`` rows of (seconds since its first sample, hPa), in time order."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    duration = n / RATE_HZ
    altitude = simulated_altitude(labels, rng, model.climb_m_s)
    period = 1.0 / model.rate_hz
    t = np.arange(0.0, duration - period, period)
    t = t + rng.uniform(0, 0.05 * period, len(t))  # timing jitter
    t = t[t < (n - 1) / RATE_HZ]
    h = np.interp(t, np.arange(n) / RATE_HZ, altitude)
    p = pressure_hpa(h, rng.uniform(990.0, 1030.0))
    p += rng.uniform(-1, 1) * model.drift_hpa_per_h * t / 3600.0
    for _ in range(rng.poisson(model.doors_per_min * duration / 60.0)):
        start, size = rng.uniform(0, duration), rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.3)
        end = start + rng.uniform(1, 6) if rng.random() < 0.5 else np.inf
        p += np.where((t >= start) & (t < end), size, 0.0)
    p += rng.normal(0.0, model.noise_hpa, len(t))
    if model.quantum_hpa > 0:
        p = np.round(p / model.quantum_hpa) * model.quantum_hpa
    return np.column_stack([t, p])


def with_simulated_pressure(
    recording: Recording, model: SimulatedBarometer = SimulatedBarometer(), seed: int = 0
) -> Recording:
    """``recording`` with a simulated barometer (its ``pressure``)."""
    return dataclasses.replace(recording, pressure=simulate_pressure(recording.labels, model, seed))
