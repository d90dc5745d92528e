"""The live display decoder: blips do not flip it, real changes are followed
within the stated delay, gaps reset it, bad input is refused and counted, and
the worker publishes exactly what the offline decoder computes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import replayed_predictions, worker_thread

from harstream.stream.core.activities import ACTIVITIES, UNKNOWN
from harstream.stream.core.decoder import (
    Decoder,
    DecoderParams,
    DecoderParamsError,
    decode_sequence,
    display_for,
    window_motion,
)
from harstream.stream.core.protocol import SampleBatch, encode_samples
from harstream.stream.core.smoothing import Smoother
from harstream.stream.core.transition_direction import window_gravity
from harstream.stream.core.worker import StreamCore, WorkerConfig

AB = ["A", "B"]
#: The decoder's stated delay for a sustained change the classifier gives 0.8: two windows (2.56 s).
STATED_DELAY_WINDOWS = 2


def sticky() -> DecoderParams:
    params = DecoderParams.uniform(AB, stay=0.95, switch_at=0.6)
    return DecoderParams(params.classes, (), params.matrix, params.initial, sharpness=2.0, switch_at=0.6)


def shown_after(core, probs: list[list[float]]) -> list[str]:
    return [core.update(p)[0] for p in probs]


def test_a_single_odd_window_does_not_flip_the_display():
    windows = [[0.6, 0.4]] * 10 + [[0.2, 0.8]] + [[0.6, 0.4]] * 3
    assert set(shown_after(Decoder(sticky()), windows)) == {"A"}


def test_a_moving_average_would_flip_on_that_same_window():
    # the reason for the decoder: the old 3-window average shows the blip
    windows = [[0.6, 0.4]] * 10 + [[0.2, 0.8]] + [[0.6, 0.4]] * 3
    assert "B" in shown_after(Smoother(AB, windows=3, threshold=0.5), windows)


def test_a_sustained_change_is_shown_within_the_stated_delay():
    shown = shown_after(Decoder(sticky()), [[0.6, 0.4]] * 10 + [[0.2, 0.8]] * 5)
    assert shown[10 + STATED_DELAY_WINDOWS - 1] == "B" and shown[-1] == "B"


def test_a_confident_change_is_shown_on_its_first_window_where_a_moving_average_lags():
    windows = [[0.9, 0.1]] * 10 + [[0.01, 0.99]] * 3
    assert shown_after(Decoder(sticky()), windows)[10] == "B"
    assert shown_after(Smoother(AB, windows=3, threshold=0.5), windows)[10] == "A"


def test_a_reset_forgets_the_past_activity():
    decoder = Decoder(sticky())
    shown_after(decoder, [[0.9, 0.1]] * 20)
    decoder.reset()
    assert decoder.shown == UNKNOWN
    assert decoder.update([0.4, 0.6])[0] == "B"  # without the reset the long A would hold


def test_a_postural_transition_is_shown_as_such_and_is_followed_by_the_posture():
    # STANDING -> STAND_TO_SIT -> SITTING
    classes = ["SITTING", "STANDING", "WALKING"]
    # standing turns into the transition, hardly ever straight into walking
    matrix = np.array(
        [[0.97, 0.01, 0.01, 0.01], [0.005, 0.96, 0.005, 0.03], [0.01, 0.01, 0.97, 0.01], [0.3, 0.01, 0.01, 0.68]]
    )
    # a transition window looks half standing, half sitting
    emission = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9], [0.45, 0.45, 0.1]])
    params = DecoderParams(
        tuple(classes),
        ("STAND_TO_SIT",),
        matrix,
        np.array([0.1, 0.7, 0.1, 0.1]),
        sharpness=2.0,
        switch_at=0.5,
        emission=emission,
        transition_evidence=4.0,
    )
    windows = [[0.05, 0.9, 0.05]] * 5 + [[0.5, 0.5, 0.0]] * 3 + [[0.9, 0.05, 0.05]] * 3
    shown = decode_sequence(params, np.array(windows))
    assert shown[:5] == ["STANDING"] * 5
    assert "STAND_TO_SIT" in shown[5:8]
    assert shown[-1] == "SITTING"


def test_probabilities_with_nan_or_a_wrong_sum_are_refused_and_leave_the_display():
    decoder = Decoder(sticky())
    decoder.update([0.9, 0.1])
    for bad, reason in (([float("nan"), 0.5], "NaN"), ([0.7, 0.7], "sum"), ([1.0], "classes")):
        assert decoder.update(bad)[0] == "A"
        assert reason in decoder.refused
    decoder.update([0.9, 0.1])
    assert decoder.refused is None


def test_parameters_round_trip_through_json_and_malformed_ones_are_named():
    params = sticky()
    again = DecoderParams.from_json(params.to_json())
    np.testing.assert_allclose(again.matrix, params.matrix)
    assert again.sharpness == params.sharpness
    bad = params.to_json() | {"matrix": [[0.5, 0.6], [0.5, 0.5]]}
    with pytest.raises(DecoderParamsError, match="do not sum to 1"):
        DecoderParams.from_json(bad)
    with pytest.raises(DecoderParamsError, match="2x2 matrix"):
        DecoderParams.from_json(params.to_json() | {"matrix": [[1.0]]})


def test_a_model_whose_classes_have_no_decoder_falls_back_to_the_raw_label_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="harstream.stream.core.decoder"):
        core = display_for(["X", "Y"], sticky().to_json())()
    assert isinstance(core, Smoother) and "raw per-window label" in caplog.text
    assert core.update([0.2, 0.8])[0] == "Y"  # the window alone
    assert isinstance(display_for(AB, sticky().to_json())(), Decoder)


def test_the_shipped_model_carries_decoder_parameters_for_its_classes():
    import json

    from harstream.models.artifact import DEFAULT_MODEL, metadata_path

    meta = json.loads(metadata_path(DEFAULT_MODEL).read_text())
    params = DecoderParams.from_json(meta["decoder"])
    assert list(params.classes) == meta["classes"] and len(params.transitions) == 6


# ------------------------------------------------------------- the posture lock

POSTURAL = ["SITTING", "STANDING", "WALKING"]
SIT, STAND, WALK = [0.8, 0.15, 0.05], [0.15, 0.8, 0.05], [0.05, 0.05, 0.9]
STILL, MOVING = 0.01, 0.4  # window_motion of a still body and of a postural transition (g)


def posture_lock(lock_motion: float = 0.2) -> DecoderParams:
    from dataclasses import replace

    return replace(DecoderParams.uniform(POSTURAL, stay=0.9, switch_at=0.5), lock_motion=lock_motion, lock_settle=3)


def shown_with_motion(params: DecoderParams, windows: list[tuple[list[float], float | None]]) -> list[str]:
    decoder = Decoder(params)
    return [decoder.update(p, m)[0] for p, m in windows]


def test_a_settled_posture_is_not_left_for_another_without_movement():
    # the classifier mistakes sitting for standing for four windows; the body never moved
    windows = [(SIT, STILL)] * 6 + [(STAND, STILL)] * 4 + [(SIT, STILL)] * 2
    assert set(shown_with_motion(posture_lock(), windows)) == {"SITTING"}


def test_without_the_lock_that_same_mix_up_is_shown():
    windows = [(SIT, STILL)] * 6 + [(STAND, STILL)] * 4 + [(SIT, STILL)] * 2
    assert "STANDING" in shown_with_motion(posture_lock(lock_motion=0.0), windows)
    assert "STANDING" in shown_with_motion(posture_lock(), [(p, None) for p, _ in windows])  # no motion: no lock


def test_a_real_sit_to_stand_with_movement_is_followed():
    windows = [(SIT, STILL)] * 6 + [(STAND, MOVING)] + [(STAND, STILL)] * 4
    shown = shown_with_motion(posture_lock(), windows)
    assert shown[:6] == ["SITTING"] * 6
    assert shown[6 + 1] == "STANDING" and shown[-1] == "STANDING"


def test_walking_takes_over_a_locked_posture():
    windows = [(SIT, STILL)] * 6 + [(WALK, STILL)] * 3
    assert shown_with_motion(posture_lock(), windows)[-1] == "WALKING"


def test_a_fresh_posture_is_not_locked_before_it_settles():
    # walking, then the classifier's first still window says sitting, the next ones standing
    windows = [(WALK, MOVING)] * 3 + [(SIT, STILL)] + [(STAND, STILL)] * 3
    assert shown_with_motion(posture_lock(), windows)[-1] == "STANDING"


def test_window_motion_is_the_mean_body_acceleration_magnitude():
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(3, 128, 9)).astype(np.float32)
    expected = np.linalg.norm(windows[:, :, 0:3], axis=2).mean(axis=1)
    np.testing.assert_allclose(window_motion(windows), expected, rtol=1e-5)


def test_lock_knobs_round_trip_through_json_and_out_of_range_ones_are_named():
    params = posture_lock()
    again = DecoderParams.from_json(params.to_json())
    assert (again.lock_motion, again.lock_settle, again.moved_switch_at) == (0.2, 3, 0.5)
    with pytest.raises(DecoderParamsError, match="lock_motion"):
        DecoderParams.from_json(params.to_json() | {"lock_motion": -1.0})
    old = {k: v for k, v in params.to_json().items() if k not in ("lock_motion", "lock_settle", "moved_switch_at")}
    assert DecoderParams.from_json(old).lock_motion == 0.0  # parameters from before the lock: no lock


# ------------------------------------------------------------- following the raw label


def follow_raw(at: float | None = 0.2, params: DecoderParams | None = None) -> DecoderParams:
    from dataclasses import replace

    return replace(params or sticky(), follow_raw_at=at)


def test_a_change_the_classifier_sees_is_shown_at_once_where_the_hysteresis_lagged():
    windows = [[0.9, 0.1]] * 10 + [[0.2, 0.8]] * 3  # the classifier says B from window 10 on
    assert shown_after(Decoder(sticky()), windows)[10] == "A"  # the hysteresis waits for 0.6
    assert shown_after(Decoder(follow_raw()), windows)[10:] == ["B"] * 3


def test_a_clear_blip_is_still_vetoed_by_the_filter():
    windows = [[0.9, 0.1]] * 10 + [[0.45, 0.55]] + [[0.9, 0.1]] * 3  # B's posterior stays far below 0.2
    assert set(shown_after(Decoder(follow_raw()), windows)) == {"A"}
    assert "B" in shown_after(Decoder(follow_raw(0.0)), windows)  # no veto: the raw label itself


def test_a_peek_follows_the_raw_label_and_leaves_the_state():
    decoder = Decoder(follow_raw())
    shown_after(decoder, [[0.9, 0.1]] * 10)
    assert decoder.peek([0.2, 0.8])[0] == "B" and decoder.shown == "A"
    assert Decoder(sticky()).peek([0.2, 0.8])[0] == "B"  # a fresh decoder shows its first window


def test_the_posture_lock_still_holds_a_settled_posture_against_the_raw_label():
    params = follow_raw(0.0, posture_lock())
    windows = [(SIT, STILL)] * 6 + [(STAND, STILL)] * 4 + [(SIT, STILL)] * 2
    assert set(shown_with_motion(params, windows)) == {"SITTING"}
    moved = [(SIT, STILL)] * 6 + [(STAND, MOVING)] + [(STAND, STILL)] * 2
    assert shown_with_motion(params, moved)[6] == "STANDING"  # after movement, at once


def test_follow_raw_round_trips_through_json_and_older_parameters_load_without_it():
    again = DecoderParams.from_json(follow_raw(0.2).to_json())
    assert again.follow_raw_at == 0.2
    old = {k: v for k, v in follow_raw(0.2).to_json().items() if k != "follow_raw_at"}
    assert DecoderParams.from_json(old).follow_raw_at is None  # parameters from before it: the hysteresis alone
    assert DecoderParams.from_json(follow_raw(None).to_json()).follow_raw_at is None
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(DecoderParamsError, match="follow_raw_at"):
            DecoderParams.from_json(sticky().to_json() | {"follow_raw_at": bad})


def test_following_the_raw_label_leaves_the_history_s_lattice_as_it_was():
    from harstream.stream.core.history import HistorySettings, Lattice

    settings = HistorySettings()
    before, after = Lattice.build(sticky(), settings), Lattice.build(follow_raw(0.2), settings)
    for name in ("matrix", "initial", "plain", "log_matrix", "base"):
        np.testing.assert_array_equal(getattr(before, name), getattr(after, name))
    np.testing.assert_array_equal(before.evidence.mix, after.evidence.mix)
    assert (before.evidence.floor, before.evidence.sharpness) == (after.evidence.floor, after.evidence.sharpness)


# ------------------------------------------------------------- in the worker


def _core_with_decoder() -> StreamCore:
    params = DecoderParams.uniform(ACTIVITIES, stay=0.95, switch_at=0.6)
    return StreamCore(ACTIVITIES, "m", WorkerConfig(display=lambda: Decoder(params), signal_interval=0))


def _window(core: StreamCore, seq: int, probs: np.ndarray):
    core.ingest(encode_samples(SampleBatch("d", seq=seq, t0=seq / 50, samples=np.zeros((128, 6)))), now=0.0)
    _, pending = core.take_batch()
    return core.finish_batch(pending, np.tile(probs, (len(pending), 1)), now=0.0)


def test_the_worker_resets_the_decoder_on_a_gap_and_counts_refused_probabilities():
    core = _core_with_decoder()
    walking, laying = np.eye(6)[0] * 0.88 + 0.02, np.eye(6)[5] * 0.55 + 0.075  # each sums to 1
    assert [p.smoothed for p in _window(core, 0, walking)] == ["WALKING"]
    # a gap: samples 128..999 never came; the next window starts from nothing
    assert [p.smoothed for p in _window(core, 1000, laying)] == ["LAYING"]
    bad = np.full(6, np.nan)
    assert [p.smoothed for p in _window(core, 2000, bad)] == [UNKNOWN]  # a fresh device state after the gap
    assert core.drops["probabilities"] == 1


def test_a_published_session_equals_the_offline_decoder_on_loopback(embedded, shipped_model):
    """A real worker on 127.0.0.1 with the shipped model and its decoder; one
    held-out session replayed; every published label equals the offline one."""
    from harstream.models.live_scoring import session_windows

    artifact, runtime = shipped_model
    params = DecoderParams.from_json(artifact.metadata["decoder"])
    rec = embedded.of_subjects([9])[0]
    rec = type(rec)(rec.name, rec.subject, rec.samples[:6000], rec.labels[:6000])  # 2 minutes, ~90 windows
    x = session_windows(rec.samples.astype(np.float32), 10, artifact.context_steps)
    own = x[:, 0] if artifact.context_steps else x
    offline = decode_sequence(params, runtime.predict(x), window_motion(own), window_gravity(own))

    config = WorkerConfig(
        context_steps=artifact.context_steps, display=display_for(artifact.classes, artifact.metadata["decoder"])
    )
    with worker_thread(runtime, artifact.classes, artifact.model_id, config=config, stats_every=0.2) as w:
        # windows, not the updates between them
        got = replayed_predictions(w, rec, len(offline), keep=lambda p: not p.between)
    got.sort(key=lambda p: p.window)
    assert [p.window for p in got] == list(range(len(offline)))
    assert [p.smoothed for p in got] == offline
