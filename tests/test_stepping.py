"""Still only on evidence of stillness: a window that steps is never shown
STILL, and a window at rest never moving, in ``any`` or ``personal`` mode
(stream/core/stepping.py), the detector on synthetic signals and the rule on
the real worker's published label."""

from __future__ import annotations

import numpy as np
import pytest

from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
from harstream.stream.core.model_routing import ModelRouter, ServedModel, personal_model
from harstream.stream.core.pipeline import WINDOW
from harstream.stream.core.protocol import SampleBatch, encode_samples
from harstream.stream.core.stepping import (
    AT_REST,
    MAX_REST_G,
    MIN_BAND_SHARE,
    MIN_REGULARITY,
    MIN_RMS_G,
    NEITHER,
    STEPPING,
    MovingEvidence,
    evidence_of,
    motion_evidence,
    step_measures,
    stepping,
)
from harstream.stream.core.worker import StreamCore

RATE = 50.0
T0 = 1_700_000_000.0
STILL_PROBS = [0.05, 0.02, 0.03, 0.9]  # a walk the model has never seen: its SVM falls back to STILL


class Always:
    """A runtime that gives every window the same probabilities."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, np.float32)

    def predict(self, x):
        return np.tile(self.probs, (len(x), 1))


def _body(signal: np.ndarray) -> np.ndarray:
    """Windows ``(n, 128, 9)`` whose body acceleration is ``signal`` ``(n, 128, 3)``."""
    w = np.zeros(signal.shape[:2] + (9,), np.float32)
    w[:, :, 0:3] = signal
    w[:, :, 8] = 1.0  # gravity along z
    return w


def _gait(amplitude_g: float, step_hz: float, seconds: float = WINDOW / RATE, seed: int = 0) -> np.ndarray:
    """A walk's acceleration (n samples, 3): a vertical bounce at the step
    frequency with its harmonic, a sideways sway at the stride frequency, and
    sensor noise; the device turned at random."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * step_hz * t + rng.uniform(0, 2 * np.pi)
    a = np.stack(
        [
            0.3 * amplitude_g * np.sin(phase / 2),  # sway: once per stride
            0.2 * amplitude_g * np.sin(phase + 1.0),
            amplitude_g * (np.sin(phase) + 0.4 * np.sin(2 * phase + 0.5)),
        ],
        axis=1,
    ) + rng.normal(0, 0.003, (len(t), 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return a @ q.T


@pytest.mark.parametrize("step_hz", [1.3, 1.8, 2.6])
@pytest.mark.parametrize("amplitude_g", [0.12, 0.4, 1.5])
def test_a_walk_at_any_cadence_and_swing_steps_however_the_device_is_turned(step_hz, amplitude_g):
    windows = _body(np.stack([_gait(amplitude_g, step_hz, seed=s) for s in range(5)]))
    assert stepping(windows).all()


def test_a_phone_on_a_table_does_not_step():
    rng = np.random.default_rng(1)
    windows = _body(rng.normal(0, 0.002, (20, WINDOW, 3)))  # MEMS noise, a few mg
    assert not stepping(windows).any()


def test_typing_on_a_phone_in_the_hand_does_not_step():
    """Taps at random times, each a short damped knock of 0.05-0.2 g."""
    rng = np.random.default_rng(2)
    signal = rng.normal(0, 0.003, (20, WINDOW, 3))
    knock = np.exp(-np.arange(10) / 2.0)[:, None] * np.array([0.3, 0.2, 1.0])
    for n in range(20):
        for at in np.flatnonzero(rng.random(WINDOW - 10) < 4 / RATE):  # about 4 taps a second
            signal[n, at : at + 10] += rng.uniform(0.05, 0.2) * knock
    assert not stepping(_body(signal)).any()


def test_fidgeting_and_shifting_weight_do_not_step():
    """Irregular movements: a few smooth pushes of random size, width and time."""
    rng = np.random.default_rng(3)
    t = np.arange(WINDOW)
    signal = rng.normal(0, 0.003, (30, WINDOW, 3))
    for n in range(30):
        for _ in range(rng.integers(1, 4)):
            at, width = rng.uniform(0, WINDOW), rng.uniform(5, 30)
            signal[n] += rng.normal(0, 0.15, 3) * np.exp(-(((t - at) / width) ** 2))[:, None]
    assert stepping(_body(signal)).mean() <= 0.05


def test_a_slow_sway_is_not_a_gait_however_strong():
    t = np.arange(WINDOW) / RATE
    signal = np.zeros((1, WINDOW, 3))
    signal[0, :, 0] = 0.3 * np.sin(2 * np.pi * 0.4 * t)  # 0.4 Hz: slower than any stride
    assert not stepping(_body(signal)).any()


def test_the_measures_do_not_depend_on_how_the_device_is_turned():
    walk = _gait(0.3, 1.9)
    q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(3, 3)))
    np.testing.assert_allclose(step_measures(_body(walk[None])), step_measures(_body((walk @ q.T)[None])), atol=1e-5)


def test_evidence_of_scores_only_the_devices_asked_for_in_one_call():
    walk, table = _body(_gait(0.3, 1.9)[None]), np.zeros((2, WINDOW, 9), np.float32)
    got = evidence_of([walk, table, walk, walk[:0]], [True, True, False, True])
    assert got[0].tolist() == [STEPPING] and got[1].tolist() == [AT_REST, AT_REST]
    assert got[2] is None and got[3] is None


def test_a_phone_on_a_table_or_in_a_still_hand_is_at_rest():
    rng = np.random.default_rng(11)
    table = rng.normal(0, 0.002, (20, WINDOW, 3))  # MEMS noise
    hand = table + 0.02 * np.sin(2 * np.pi * rng.uniform(0.2, 8, (20, 1, 3)) * np.arange(WINDOW)[:, None] / RATE)
    assert (motion_evidence(_body(np.concatenate([table, hand]))) == AT_REST).all()


@pytest.mark.parametrize("step_hz", [1.3, 1.8, 2.6])
@pytest.mark.parametrize("amplitude_g", [0.12, 0.4, 1.5])
def test_no_walk_at_any_cadence_and_swing_is_at_rest(step_hz, amplitude_g):
    windows = _body(np.stack([_gait(amplitude_g, step_hz, seed=s) for s in range(5)]))
    assert not (motion_evidence(windows) == AT_REST).any()


def test_a_window_whose_walk_ended_a_second_before_its_end_is_at_rest_though_it_steps():
    walk = _gait(0.4, 1.8, seed=9)
    ended = walk.copy()
    ended[-55:] = np.random.default_rng(9).normal(0, 0.002, (55, 3))  # stood still for the last 1.1 s
    rms, share, regular, _ = step_measures(_body(ended[None]))[0]
    assert rms >= MIN_RMS_G and share >= MIN_BAND_SHARE and regular >= MIN_REGULARITY  # the window steps ...
    assert motion_evidence(_body(ended[None])).tolist() == [AT_REST]  # ... but its end is at rest
    assert motion_evidence(_body(walk[None])).tolist() == [STEPPING]


def test_a_walk_too_gentle_to_step_but_above_rest_is_neither():
    windows = _body(np.stack([_gait(0.07, 1.8, seed=s) for s in range(5)]))  # RMS between 0.05 and 0.08 g
    assert (motion_evidence(windows) == NEITHER).all()


def test_typing_and_fidgeting_are_never_stepping_whatever_their_energy():
    """Knocks of 0.05-0.2 g: at rest when faint, else neither, never stepping."""
    rng = np.random.default_rng(12)
    signal = rng.normal(0, 0.003, (20, WINDOW, 3))
    signal[:, 40:50] += np.linspace(0.05, 0.2, 20)[:, None, None] * np.exp(-np.arange(10) / 2.0)[:, None]
    assert STEPPING not in motion_evidence(_body(signal))


def test_a_stepping_window_labelled_still_is_shown_walking_with_the_bars_on_walking():
    rule = MovingEvidence(PLACEMENT_FREE)
    assert rule.judge("STILL", [0.1, 0.05, 0.05, 0.8], STEPPING) == ("WALKING", [0.9, 0.05, 0.05, 0.0])
    assert rule.last == "steps"


def test_a_window_at_rest_labelled_walking_or_stairs_is_shown_still_with_the_bars_on_still():
    rule = MovingEvidence(PLACEMENT_FREE)
    assert rule.judge("WALKING", [0.6, 0.1, 0.1, 0.2], AT_REST) == ("STILL", [0.0, 0.0, 0.0, 1.0])
    assert rule.last == "rest"
    assert rule.judge("WALKING_DOWNSTAIRS", [0.1, 0.0, 0.7, 0.2], AT_REST)[0] == "STILL"


def test_a_window_at_rest_labelled_still_is_left_alone():
    rule = MovingEvidence(PLACEMENT_FREE)
    assert rule.judge("STILL", [0.3, 0.0, 0.0, 0.7], AT_REST) == ("STILL", [0.3, 0.0, 0.0, 0.7])
    assert rule.last == ""


def test_a_calibrated_device_at_rest_is_shown_its_likeliest_posture_not_walking():
    classes = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING")
    label, probs = MovingEvidence(classes).judge("WALKING", [0.6, 0.0, 0.05, 0.1, 0.25], AT_REST)
    assert label == "STANDING" and probs == [0.0, 0.0, 0.0, 0.1, 0.9]


def test_the_rest_threshold_sits_far_below_any_walk_at_the_trunk():
    """A 2 cm bounce at 1.5 steps a second, a gentle walk at the waist, is
    over twice the rest threshold (RMS of a sine: peak / sqrt 2)."""
    peak_g = (2 * np.pi * 1.5) ** 2 * 0.02 / 9.81
    assert peak_g / np.sqrt(2) > 2 * MAX_REST_G


def test_a_stepping_window_keeps_a_moving_label_for_the_stairs_gate_to_judge():
    rule = MovingEvidence(PLACEMENT_FREE)
    assert rule.judge("WALKING_UPSTAIRS", [0.1, 0.6, 0.1, 0.2], STEPPING) == (
        "WALKING_UPSTAIRS",
        [0.1, 0.6, 0.1, 0.2],
    )
    assert not rule.last


def test_a_window_that_neither_steps_nor_rests_keeps_the_models_label():
    rule = MovingEvidence(PLACEMENT_FREE)
    assert rule.judge("STILL", [0.1, 0.0, 0.0, 0.9], NEITHER)[0] == "STILL"
    assert rule.judge("WALKING", [0.9, 0.0, 0.0, 0.1], NEITHER)[0] == "WALKING"
    assert rule.judge("WALKING", [0.9, 0.0, 0.0, 0.1], None)[0] == "WALKING"


def test_a_calibrated_posture_of_a_stepping_window_is_shown_walking_too():
    classes = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "STILL")
    label, probs = MovingEvidence(classes).judge("STANDING", [0.2, 0.0, 0.0, 0.1, 0.6, 0.1], STEPPING)
    assert label == "WALKING" and probs == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


# ---------------------------------------------------------------- the real worker


def _core(**any_kw) -> StreamCore:
    waist = ServedModel("waist", "waist", "waist@1", ACTIVITIES)
    anywhere = ServedModel("any", "any", "any@1", PLACEMENT_FREE, **any_kw)
    return StreamCore(ACTIVITIES, "waist@1", router=ModelRouter(waist, anywhere))


def _stream(core: StreamCore, device: str, samples: np.ndarray, probs, meta=None) -> list:
    """Stream raw 50 Hz ``samples`` (acc in g with gravity, gyro) in 1-s
    messages; the model labels every window ``probs``."""
    out = []
    for s in range(len(samples) // 50):
        batch = SampleBatch(device, s * 50, T0 + s, samples[s * 50 : (s + 1) * 50], meta=meta or {})
        core.ingest(encode_samples(batch), now=float(s))
        while core.waiting:
            x, taken = core.take_batch()
            n = len(taken[0].served.classes)
            p = np.tile(np.asarray(list(probs) + [0.0] * (n - len(probs))), (len(taken), 1))
            out.extend(core.finish_batch(taken, p, now=float(s)))
    return out


def _walking_samples(seconds: int, amplitude_g: float = 0.5) -> np.ndarray:
    acc = _gait(amplitude_g, 1.8, seconds=seconds, seed=7) + np.array([0.0, 0.0, 1.0])  # with gravity
    return np.column_stack([acc, np.zeros((len(acc), 3))]).astype(np.float32)


def _still_samples(seconds: int) -> np.ndarray:
    rng = np.random.default_rng(8)
    acc = rng.normal(0, 0.002, (seconds * 50, 3)) + np.array([0.0, 0.0, 1.0])
    return np.column_stack([acc, np.zeros((len(acc), 3))]).astype(np.float32)


def test_a_walk_the_model_calls_still_is_published_walking_in_any_mode():
    core = _core()
    got = _stream(core, "phone:pocket", _walking_samples(30), STILL_PROBS)[3:]  # after the filters settle
    assert got and {p.label for p in got} == {"WALKING"} and {p.smoothed for p in got} == {"WALKING"}
    assert all(p.smoothed_probs[3] == 0.0 for p in got)  # the bars agree with the label
    assert core.totals["moving_by_steps"] > 0


def test_a_device_at_rest_the_model_calls_still_stays_still():
    got = _stream(_core(), "phone:table", _still_samples(30), STILL_PROBS)
    assert got and {p.smoothed for p in got} == {"STILL"}


def test_a_device_at_rest_the_model_calls_walking_is_published_still_and_counted():
    core = _core()
    got = _stream(core, "phone:table", _still_samples(30), [0.8, 0.05, 0.05, 0.1])
    assert got and {p.label for p in got} == {"STILL"} and {p.smoothed for p in got} == {"STILL"}
    assert all(p.smoothed_probs[0] == 0.0 for p in got)  # the bars agree with the label
    assert core.totals["still_by_rest"] == len(got) and core.totals["moving_by_steps"] == 0


def test_a_calibrated_device_at_rest_is_published_its_posture_not_walking():
    classes = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING")
    core = _core()
    core.router.set_personal(personal_model("phone:cal", "cal@1", classes))
    got = _stream(core, "phone:cal", _still_samples(30), [0.7, 0.0, 0.0, 0.05, 0.25])
    assert got and {p.smoothed for p in got} == {"STANDING"}


def test_a_device_at_rest_declaring_the_waist_keeps_the_models_walking():
    core = _core()
    got = _stream(core, "phone:belt", _still_samples(30), [1, 0, 0, 0, 0, 0], meta={"placement": "waist"})
    assert got and {p.label for p in got} == {"WALKING"} and core.totals["still_by_rest"] == 0


def test_a_device_declaring_the_waist_keeps_the_models_label():
    got = _stream(_core(), "phone:belt", _walking_samples(30), [0, 0, 0, 1, 0, 0], meta={"placement": "waist"})
    assert got and {p.label for p in got} == {"SITTING"}


def test_a_calibrated_device_stepping_is_published_walking_not_a_posture():
    classes = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING")
    core = _core()
    core.router.set_personal(personal_model("phone:cal", "cal@1", classes))
    got = _stream(core, "phone:cal", _walking_samples(30), [0.05, 0.0, 0.0, 0.05, 0.9])[3:]
    assert got and {p.smoothed for p in got} == {"WALKING"}


def test_the_placement_study_scores_the_rule_as_the_worker_applies_it():
    from harstream.models.studies.placement import with_steps

    predicted = np.array([3, 3, 1, 0, 0, 2, 3])  # STILL, STILL, UPSTAIRS, WALKING, WALKING, DOWNSTAIRS, STILL
    got = with_steps(predicted, np.array([STEPPING, NEITHER, STEPPING, STEPPING, AT_REST, AT_REST, AT_REST]))
    assert got.tolist() == [0, 3, 1, 0, 3, 3, 3]


def test_a_hapt_training_subjects_postures_stay_still_and_walks_are_walking_over_the_real_worker(embedded):
    """Subject 1 (a training subject) streamed as a live device in any mode,
    its model always saying STILL: what steps is the walk, not the postures."""
    from harstream.bench.stairs import replay_published

    served = ServedModel("any", "any", "still@1", PLACEMENT_FREE, runtime=Always(STILL_PROBS))
    rows = [r for rec in embedded.recordings if rec.subject == 1 for r in replay_published(rec, served, gated=True)]
    whole = [(inside, shown) for _, shown, inside, _ in rows if inside is not None]
    postures = [shown for inside, shown in whole if inside in ("SITTING", "STANDING", "LAYING", "LYING")]
    walks = [shown for inside, shown in whole if inside == "WALKING"]
    assert len(postures) > 100 and postures.count("STILL") == len(postures)
    assert len(walks) > 50 and walks.count("WALKING") / len(walks) >= 0.95
