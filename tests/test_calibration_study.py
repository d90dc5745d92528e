"""The calibration study scores a calibrated device as the worker publishes it."""

from __future__ import annotations

import numpy as np
import pytest

from harstream.models.artifact import ANY_MODEL, load_artifact
from harstream.models.personal import PersonalSettings, fit_personal
from harstream.models.studies.calibration import DEFAULT_ACTIVITIES, first_seconds, published
from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.data.recordings import load_dataset


@pytest.fixture(scope="module")
def subject_two():
    """Subject 2's personal model (walk/sit/stand of the first session) and its later session, as worn."""
    base = load_artifact(ANY_MODEL)
    first, later = sorted(load_dataset().of_subjects([2]), key=lambda r: r.name)[:2]
    fit = fit_personal([first_seconds(first, DEFAULT_ACTIVITIES, 60.0)], base, PersonalSettings())
    return fit.head, base, later


def test_the_study_names_calibrated_postures_with_the_shared_models_own_features(subject_two):
    head, base, later = subject_two
    raw, shown, truth = published(head, base, later.samples, np.asarray(later.labels))
    for name in ("SITTING", "STANDING"):
        mine = truth == ACTIVITIES.index(name)
        assert np.mean(raw[mine] == name) >= 0.8, name  # heads handed the wrong features say STILL throughout
        assert np.mean(shown[mine] == name) >= 0.8, name


def test_the_study_withholds_uncalibrated_stairs_after_a_calibrated_walk_as_the_worker_does(subject_two):
    head, base, later = subject_two
    raw, shown, truth = published(head, base, later.samples, np.asarray(later.labels))
    stairs = np.isin(truth, [ACTIVITIES.index("WALKING_UPSTAIRS"), ACTIVITIES.index("WALKING_DOWNSTAIRS")])
    assert stairs.sum() > 20
    for labels in (raw, shown):
        assert not np.isin(labels, ["WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS"]).any()
        assert np.mean(labels[stairs] == "WALKING") >= 0.9


@pytest.fixture(scope="module")
def subject_two_sessions():
    return sorted(load_dataset().of_subjects([2]), key=lambda r: r.name)


@pytest.mark.parametrize("placement", ["thigh", "wrist"])
def test_a_simulated_placement_sets_each_still_bouts_gravity_at_its_drawn_limb_angle(subject_two_sessions, placement):
    from harstream.models.augment import LimbMotion
    from harstream.models.studies.placement_calibration import limb_reading, simulate_placement

    rng = np.random.default_rng(5)
    rec = subject_two_sessions[0]
    limb = LimbMotion.draw(placement, rng)
    sim, drawn = simulate_placement(rec, placement, limb, rng)
    labels = np.asarray(rec.labels)
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = [s for s in np.r_[0, edges] if labels[s] in (4, 5, 6)]
    assert len(starts) == len(drawn) >= 6
    for start, bout in zip(starts, drawn):
        end = start + int(round(bout["seconds"] * 50))
        down = sim.samples[start:end, :3].mean(axis=0)
        want = limb_reading(bout["flexion"], bout["roll"]) @ np.array([1.0, 0.0, 0.0])
        angle = np.degrees(np.arccos(np.clip(down @ want / np.linalg.norm(down), -1, 1)))
        assert angle < 1.0, (bout, angle)


def test_a_simulated_thigh_keeps_the_recorded_sway_of_a_still_bout(subject_two_sessions):
    from harstream.models.augment import LimbMotion
    from harstream.models.studies.placement_calibration import simulate_placement

    rng = np.random.default_rng(6)
    rec = subject_two_sessions[0]
    sim, _ = simulate_placement(rec, "thigh", LimbMotion.draw("thigh", rng), rng)
    standing = np.flatnonzero(np.asarray(rec.labels) == ACTIVITIES.index("STANDING") + 1)[:500]
    waist = np.linalg.norm(rec.samples[standing, :3], axis=1)
    thigh = np.linalg.norm(sim.samples[standing, :3], axis=1)
    np.testing.assert_allclose(thigh, waist, atol=1e-9)  # a rotation: the magnitude's wobble is the waist's own
    walking = np.asarray(rec.labels) == ACTIVITIES.index("WALKING") + 1
    assert np.std(sim.samples[walking, 3:6]) > 1.5 * np.std(rec.samples[walking, 3:6])  # the thigh swings
