"""How `harstream bench stairs` scores the worker's published label: at each
window's end, and on the windows wholly inside one activity."""

from __future__ import annotations

import numpy as np

from harstream.bench.stairs import replay_published, score
from harstream.stream.core.activities import PLACEMENT_FREE
from harstream.stream.core.model_routing import ServedModel
from harstream.stream.data.recordings import Recording


class Always:
    """A runtime that gives every window the same probabilities."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, np.float32)

    def predict(self, x):
        return np.tile(self.probs, (len(x), 1))


def _walk_then_upstairs() -> Recording:
    labels = np.r_[np.full(640, 1), np.full(640, 2)].astype(np.int16)  # HAPT: 1 walking, 2 upstairs
    samples = np.tile(np.float32([1, 0, 0, 0, 0, 0]), (len(labels), 1))
    return Recording("walk-up", 1, samples, labels)


def test_windows_spanning_a_change_count_at_their_end_but_not_among_the_whole_windows():
    served = ServedModel("any", "any", "any@t", PLACEMENT_FREE, runtime=Always([0.9, 0.05, 0.03, 0.02]))
    rows = replay_published(_walk_then_upstairs(), served, gated=False)
    at_end, whole = score(rows), score(rows, whole=True)
    # every window is shown WALKING: right on the walk, wrong on the climb
    assert at_end["windows"] == len(rows) == (1280 - 128) // 64 + 1
    assert whole["windows"] == at_end["windows"] - 1  # the window across the change (ends in the climb)
    assert whole["per_class"]["WALKING"]["recall"] == at_end["per_class"]["WALKING"]["recall"] == 1.0
    assert whole["per_class"]["WALKING_UPSTAIRS"]["windows"] == at_end["per_class"]["WALKING_UPSTAIRS"]["windows"] - 1


def test_stairs_shown_on_flat_walking_count_as_false_alarms_and_the_windows_own_label_is_scored_apart():
    rows = [
        ("WALKING", "WALKING_DOWNSTAIRS", "WALKING", "WALKING"),
        ("WALKING", "WALKING", "WALKING", "WALKING_UPSTAIRS"),
        ("WALKING_UPSTAIRS", "WALKING", None, "WALKING_UPSTAIRS"),
        ("SITTING", "STILL", "SITTING", "STILL"),
    ]
    shown = score(rows)
    assert shown["stairs_false_alarm"] == 0.5 and shown["accuracy"] == 0.5 and shown["stairs_as_walking"] == 1.0
    own = score(rows, raw=True)
    assert own["stairs_false_alarm"] == 0.5 and own["accuracy"] == 0.75
    assert score(rows, whole=True)["windows"] == 3


def test_moving_vs_still_counts_any_walking_class_as_moving_and_postures_are_scored_each():
    rows = [
        ("WALKING", "WALKING_DOWNSTAIRS", "WALKING", "WALKING"),  # moving shown moving: right
        ("WALKING", "STILL", "WALKING", "STILL"),  # a walk shown STILL: wrong
        ("SITTING", "STILL", "SITTING", "STILL"),
        ("STANDING", "WALKING", "STANDING", "WALKING"),  # a posture shown moving: wrong
    ]
    got = score(rows)
    assert got["moving_vs_still"] == 0.5
    assert got["posture_as_still"] == {"SITTING": 1.0, "STANDING": 0.0}
