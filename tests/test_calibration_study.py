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
