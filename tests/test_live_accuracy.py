"""Live accuracy scoring: the display timeline, delays, transitions, and a
replay through the real pipeline and smoother."""

from __future__ import annotations

import numpy as np

from harstream.models.live_scoring import (
    NOTHING,
    display_delays,
    display_timeline,
    replay_session,
    sample_accuracy,
    score_replays,
    transition_display,
)
from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.smoothing import Smoother
from harstream.stream.data.recordings import Recording


def test_a_window_is_shown_from_its_last_sample_until_the_next_completes():
    shown = display_timeline(300, [2, 5])
    assert (shown[:127] == NOTHING).all()
    assert (shown[127:191] == 2).all()
    assert (shown[191:] == 5).all()


def test_unknown_and_nothing_shown_count_as_wrong_and_unlabelled_samples_are_ignored():
    labels = np.array([-1, -1, 1, 1, 4, 4, 8])
    shown = np.array([0, 0, 0, NOTHING, 3, 0, NOTHING])
    assert sample_accuracy(labels, shown) == (2, 4)


def test_delay_counts_until_the_display_first_shows_the_activity_and_missed_segments():
    labels = np.array([-1] * 10 + [1] * 100 + [7] * 20 + [4] * 200 + [5] * 30)
    shown = np.array([NOTHING] * 10 + [0] * 100 + [0] * 20 + [0] * 75 + [3] * 125 + [0] * 30)
    delays, missed = display_delays(labels, shown)
    assert delays == [0.0, 1.5]
    assert missed == 1  # the STANDING segment never appeared


def test_transition_samples_are_tallied_by_what_was_shown():
    labels = np.array([7, 7, 7, 9, 1])
    shown = np.array([NOTHING, 3, 3, 5, 0])
    counts = transition_display(labels, shown)
    assert counts["unknown"] == 1 and counts["SITTING"] == 2 and counts["LAYING"] == 1 and counts["WALKING"] == 0


def _synthetic_session() -> Recording:
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.full(1000, 1), np.full(150, 7), np.full(1000, 6)]).astype(np.int16)
    samples = rng.normal(0, 0.01, size=(len(labels), 6))
    samples[:, 0] += 1.0
    return Recording("synthetic", 1, samples, labels)


def test_oracle_predictions_replayed_through_pipeline_and_smoother_follow_within_one_step():
    rec = _synthetic_session()
    ends = np.arange(10_000) * 64 + 127

    def oracle(x: np.ndarray) -> np.ndarray:
        # the true activity at each window's last sample; transitions -> uniform
        truth = rec.labels[ends[: len(x)]]
        probs = np.full((len(x), 6), 1 / 6)
        for i, label in enumerate(truth):
            if 1 <= label <= 6:
                probs[i] = np.eye(6)[label - 1]
        return probs

    replay = replay_session(rec, oracle, {"raw": lambda: Smoother(ACTIVITIES, windows=1, threshold=0.5)})
    live = score_replays([replay])
    assert live["raw"]["segments_never_shown"] == 0
    assert max(live["raw"]["delays_s"]) <= 64 / 50  # a window completes every 1.28 s
    assert live["raw"]["sample_accuracy"] > 0.9
    # uniform probabilities during the transition are below the threshold: unknown;
    # the plain argmax display shows some activity instead
    assert live["raw"]["transition_samples"]["unknown"] > 0
    assert live["argmax"]["transition_samples"]["unknown"] == 0


def test_a_constant_wrong_model_scores_zero():
    rec = _synthetic_session()
    replay = replay_session(
        rec, lambda x: np.tile(np.eye(6)[2], (len(x), 1)), {"smoothed": lambda: Smoother(ACTIVITIES)}
    )
    live = score_replays([replay])
    assert live["argmax"]["sample_accuracy"] == 0.0
    assert live["smoothed"]["segments_never_shown"] == 1  # LAYING after the transition


def test_a_display_updated_every_32_samples_shows_the_newest_window_of_either_grid():
    from harstream.models.studies.half_hop import timeline

    # regular windows end at 127 and 191, the offset grid's at 159 and 223
    ends = np.array([127, 191, 159, 223])
    codes = np.array([0, 2, 1, 3])
    shown = timeline(260, ends, codes)
    assert shown[126] == NOTHING
    assert [shown[127], shown[159], shown[191], shown[223], shown[259]] == [0, 1, 2, 3, 3]
    assert shown[158] == 0 and shown[190] == 1
