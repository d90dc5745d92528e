"""The transition direction: which posture follows a burst of motion, and how the decoder weighs it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from harstream.models.transition_direction import Event, event_accuracy, find_events, fit_direction
from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.decoder import Decoder, DecoderParams, DecoderParamsError
from harstream.stream.core.transition_direction import (
    OUTCOMES,
    DirectionDetector,
    DirectionParams,
    DirectionParamsError,
    turn_degrees,
)

STANDING = [1.0, -0.13, 0.08]
SITTING = [0.93, 0.17, 0.37]
STILL, MOVING = 0.01, 0.3


def test_a_burst_between_still_windows_gives_the_posture_that_follows():
    det = DirectionDetector(DirectionParams.example())
    assert det.push(STILL, STANDING) is None
    assert det.push(MOVING, STANDING) is None
    verdict = det.push(STILL, SITTING)
    assert verdict is not None and verdict["SITTING"] > 0.9
    assert det.verdict == verdict  # carried forward
    assert det.push(STILL, SITTING) is None and det.verdict == verdict


def test_the_verdict_is_withheld_while_moving_and_kept_after_a_burst_that_is_no_transition():
    det = DirectionDetector(DirectionParams.example())
    for motion, g in ((STILL, STANDING), (MOVING, STANDING), (STILL, SITTING)):
        det.push(motion, g)
    sitting = det.verdict
    det.push(MOVING, SITTING)
    assert det.verdict is None  # the posture is open while the body moves
    assert det.push(STILL, SITTING) is None  # a fidget: gravity did not turn
    assert det.verdict == sitting


def test_walking_forgets_the_verdict_and_reset_forgets_everything():
    det = DirectionDetector(DirectionParams.example())
    for motion, g in ((STILL, STANDING), (MOVING, STANDING), (STILL, SITTING)):
        det.push(motion, g)
    det.forget()
    assert det.verdict is None
    det.push(MOVING, SITTING)
    det.reset()
    assert det.push(STILL, STANDING) is None  # no still window before: no event


@pytest.mark.parametrize("bad", [[np.nan, 0.0, 1.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [1.0, 0.0]])
def test_an_unusable_gravity_reading_neither_starts_nor_ends_an_event(bad):
    det = DirectionDetector(DirectionParams.example())
    det.push(STILL, STANDING)
    det.push(MOVING, STANDING)
    assert det.push(STILL, bad) is None
    assert det.push(float("nan"), SITTING) is None
    assert det.push(STILL, SITTING) is not None  # the first usable still window ends it


def test_the_turn_between_gravity_directions_ignores_length_and_is_not_known_without_a_direction():
    assert turn_degrees([0.0, 0.0, 1.0], [0.0, 0.0, 9.0]) == 0.0
    assert turn_degrees([0.0, 0.0, 1.0], [0.0, 1.0, 1.0]) == pytest.approx(45.0)
    assert turn_degrees(STANDING, np.negative(STANDING)) == pytest.approx(180.0)
    # the worker's float32 rows are taken as they are
    assert turn_degrees(np.float32(STANDING), np.float32(SITTING)) == pytest.approx(turn_degrees(STANDING, SITTING))
    for none in (
        [0.0, 0.0, 0.0],
        None,
        [1.0, 2.0],
        [np.inf, 0.0, 0.0],
        [np.nan, 0.0, 1.0],
        "abc",
        [None, 1, 2],
        [1e200, 0, 0],
    ):
        assert np.isnan(turn_degrees(none, STANDING)) and np.isnan(turn_degrees(STANDING, none)), none


def test_direction_parameters_round_trip_and_malformed_ones_say_what_is_wrong():
    params = replace(DirectionParams.example(), weight=2.0, still_motion=0.08)
    again = DirectionParams.from_json(params.to_json())
    assert again.weight == 2.0 and again.still_motion == 0.08
    np.testing.assert_allclose(again.coef, params.coef)
    with pytest.raises(DirectionParamsError, match="coef must be 7x9"):
        DirectionParams(np.zeros((3, 9)), np.zeros(7))
    with pytest.raises(DirectionParamsError, match="weight"):
        replace(params, weight=-1.0)
    with pytest.raises(DirectionParamsError, match="outcomes"):
        DirectionParams.from_json({**params.to_json(), "outcomes": ["A"]})


def _standing_classifier() -> list[float]:
    return [0.02, 0.02, 0.02, 0.3, 0.62, 0.02]  # a classifier sure-ish the person stands


def test_a_verdict_outweighs_a_steady_classifier_mix_up_and_without_it_the_classifier_wins():
    base = DecoderParams.uniform(ACTIVITIES, stay=0.9, switch_at=0.5)
    direction = replace(DirectionParams.example(), weight=2.0)
    with_direction, without = Decoder(replace(base, direction=direction)), Decoder(base)
    shown = {"with": [], "without": []}
    for motion, g in [(STILL, STANDING)] * 3 + [(MOVING, STANDING)] + [(STILL, SITTING)] * 4:
        shown["with"].append(with_direction.update(_standing_classifier(), motion, g)[0])
        shown["without"].append(without.update(_standing_classifier(), motion, g)[0])
    assert shown["without"][-1] == "STANDING"
    assert shown["with"][-1] == "SITTING"
    assert shown["with"][:4] == ["STANDING"] * 4  # nothing changes before the event


def test_the_decoder_without_gravity_ignores_the_direction():
    base = DecoderParams.uniform(ACTIVITIES, stay=0.9, switch_at=0.5)
    d = Decoder(replace(base, direction=replace(DirectionParams.example(), weight=2.0)))
    for motion in [STILL] * 3 + [MOVING] + [STILL] * 4:
        label = d.update(_standing_classifier(), motion)[0]
    assert label == "STANDING"


def test_decoder_parameters_carry_the_direction_through_json_and_refuse_a_broken_one():
    base = DecoderParams.uniform(ACTIVITIES)
    params = replace(base, direction=DirectionParams.example())
    again = DecoderParams.from_json(params.to_json())
    assert again.direction is not None
    np.testing.assert_allclose(again.direction.coef, params.direction.coef)
    assert DecoderParams.from_json(base.to_json()).direction is None
    broken = {**params.to_json(), "direction": {"coef": [[1.0]], "intercept": [0.0]}}
    with pytest.raises(DecoderParamsError, match="transition direction parameters"):
        DecoderParams.from_json(broken)


def test_events_are_found_and_labelled_as_the_detector_walks_the_windows():
    motion = np.array([STILL, MOVING, MOVING, STILL, STILL, MOVING, STILL])
    gravity = np.array([STANDING, STANDING, SITTING, SITTING, SITTING, SITTING, SITTING])
    labels = np.array([5, 7, 7, 4, 4, 4, 4])
    events = find_events(motion, gravity, labels, still_motion=0.05)
    assert [(e.end, e.outcome) for e in events] == [(3, "STAND_TO_SIT"), (6, "NONE")]


def test_a_fitted_detector_tells_standing_up_from_sitting_down():
    rng = np.random.default_rng(0)

    def unit(v):
        v = np.asarray(v, dtype=np.float64)
        return v / np.linalg.norm(v)

    events = []
    for _ in range(40):
        stand = unit(np.array(STANDING) + rng.normal(0, 0.03, 3))
        sit = unit(np.array(SITTING) + rng.normal(0, 0.03, 3))
        events += [
            Event(stand, sit, 0, "STAND_TO_SIT"),
            Event(sit, stand, 0, "SIT_TO_STAND"),
            Event(sit, unit(sit + rng.normal(0, 0.01, 3)), 0, "NONE"),
        ]
    params = fit_direction(events, c=10.0)
    assert params.coef.shape == (len(OUTCOMES), 9)
    assert event_accuracy(params, events)["posture_after_right"] > 0.95
    # outcomes never seen in training stay out
    p = params.outcome_probabilities(unit(STANDING), unit(SITTING))
    assert p[OUTCOMES.index("SIT_TO_LIE")] < 1e-6


def test_the_worker_hands_each_windows_gravity_to_the_decoder():
    """A device stands, moves, and comes to rest turned as after sitting down;
    the classifier keeps saying 'standing'. Through a real StreamCore the
    decoder with a direction shows SITTING; the same stream without gravity
    reaching it could not."""
    from harstream.stream.core.protocol import SampleBatch, encode_samples
    from harstream.stream.core.worker import StreamCore, WorkerConfig

    params = replace(
        DecoderParams.uniform(ACTIVITIES, stay=0.9, switch_at=0.5),
        direction=replace(DirectionParams.example(), weight=2.0, still_motion=0.05),
    )
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(display=lambda: Decoder(params), signal_interval=0))
    rng = np.random.default_rng(1)
    stand = np.tile(np.r_[STANDING, 0.0, 0.0, 0.0], (1500, 1))
    burst = np.tile(np.r_[STANDING, 0.0, 0.0, 0.0], (150, 1)) + rng.normal(0, 0.6, (150, 6))
    sit = np.tile(np.r_[SITTING, 0.0, 0.0, 0.0], (1500, 1))
    samples = np.concatenate([stand, burst, sit])
    shown = []
    for seq in range(0, len(samples), 100):
        core.ingest(encode_samples(SampleBatch("d", seq=seq, t0=seq / 50, samples=samples[seq : seq + 100])), now=0.0)
        _, pending = core.take_batch()
        if pending:
            probs = np.tile(_standing_classifier(), (len(pending), 1))
            shown += [p.smoothed for p in core.finish_batch(pending, probs, now=0.0)]
    assert shown[5] == "STANDING"
    assert shown[-1] == "SITTING"
