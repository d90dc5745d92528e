"""Every served model gets a display decoder that fits its classes: the
placement-free model ships one, a personal model gets one at calibration
and the worker shows its decoded label; a model without one shows the raw
label with a warning and keeps serving."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from harstream.models.artifact import ANY_MODEL, load_artifact, metadata_path
from harstream.models.decoder_fit import LabelStatistics, label_states, params_for
from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
from harstream.stream.core.decoder import Decoder, DecoderParams, display_for
from harstream.stream.core.model_routing import ModelRouter, ServedModel
from harstream.stream.core.protocol import SampleBatch, encode_samples
from harstream.stream.core.smoothing import Smoother
from harstream.stream.core.worker import StreamCore, WorkerConfig
from harstream.stream.data.recordings import Recording

RATE = 50
DEVICE = "phone:decoded"


def test_the_placement_free_model_ships_decoder_parameters_for_its_own_classes():
    meta = json.loads(metadata_path(ANY_MODEL).read_text())
    params = DecoderParams.from_json(meta["decoder"])
    assert list(params.classes) == meta["classes"] == list(PLACEMENT_FREE)
    assert params.transitions == ()  # a placement-free display cannot name SIT_TO_STAND
    stats = LabelStatistics.from_json(meta["decoder"]["label_statistics"])
    assert stats.classes == PLACEMENT_FREE and stats.counts.sum() > 1000  # counted on the training sessions
    assert isinstance(display_for(meta["classes"], meta["decoder"])(), Decoder)


def test_statistics_over_hapt_labels_give_the_waist_decoder_its_twelve_states_unchanged():
    rng = np.random.default_rng(0)
    counts, sums = rng.integers(0, 50, (12, 12)).astype(float), rng.uniform(0, 9, (12, 6))
    stats = LabelStatistics(counts, ACTIVITIES, sums)
    params = params_for(stats, ACTIVITIES, {"pseudocount": 0.1})
    expected = (counts + 0.1) / (counts + 0.1).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(params.matrix, expected)
    np.testing.assert_allclose(params.emission, (sums + 0.5 / 6) / (sums + 0.5 / 6).sum(axis=1, keepdims=True))


def test_postures_and_their_transitions_fall_into_still_for_a_placement_free_model():
    counts = np.zeros((12, 12))  # rows and columns: HAPT labels 1-12
    counts[3, 3], counts[3, 7], counts[7, 4], counts[0, 0] = 10, 1, 1, 5  # sit, sit -> SIT_TO_STAND -> stand; walk
    transitions, _ = label_states(PLACEMENT_FREE)
    params = params_for(
        LabelStatistics(counts, PLACEMENT_FREE, np.ones((12, 4))), PLACEMENT_FREE, {"pseudocount": 1e-9}
    )
    assert transitions == () and params.matrix[3, 3] > 0.999 and params.matrix[0, 0] > 0.999


# ---------------------------------------------------------------- personal


def _bout(label: int, seconds: float, down, moving: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic bout: still with gravity ``down``, or a 1.8 Hz walk on top of it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    down = np.asarray(down, float) / np.linalg.norm(down)
    side = np.cross(down, [0.3, 0.5, 0.8])
    side /= np.linalg.norm(side)
    if moving:
        acc = (
            down * (1 + 0.25 * np.sin(2 * np.pi * 1.8 * t))[:, None]
            + side * (0.12 * np.sin(2 * np.pi * 0.9 * t))[:, None]
        )
        gyro = np.outer(0.6 * np.sin(2 * np.pi * 0.9 * t), side)
    else:
        acc, gyro = np.tile(down, (len(t), 1)), np.zeros((len(t), 3))
    samples = np.concatenate([acc, gyro], axis=1) + 0.004 * rng.normal(size=(len(t), 6))
    return samples, np.full(len(t), label, np.int16)


@pytest.fixture(scope="module")
def personal_file(tmp_path_factory):
    """A personal model calibrated on walking, sitting and standing, saved as the calibration saves it."""
    from harstream.models.personal import PersonalSettings, fit_personal, save_personal

    bouts = [_bout(1, 30, (0, 1, 0), True, 0), _bout(4, 30, (0, 0.6, 0.8), False, 1), _bout(5, 30, (0, 1, 0), False, 2)]
    rec = Recording("calibration", 0, np.concatenate([b[0] for b in bouts]), np.concatenate([b[1] for b in bouts]))
    base = load_artifact(ANY_MODEL)
    fit = fit_personal([rec], base, PersonalSettings(discriminant=False))  # postures from gravity and cues alone
    return save_personal(fit, tmp_path_factory.mktemp("personal") / "p.keras", DEVICE, base)


def test_a_saved_personal_model_carries_decoder_parameters_for_its_classes(personal_file):
    meta = json.loads(metadata_path(personal_file).read_text())
    params = DecoderParams.from_json(meta["decoder"])
    assert list(params.classes) == meta["classes"] == [*PLACEMENT_FREE[:3], "SITTING", "STANDING", "STILL"]
    assert params.transitions == ("STAND_TO_SIT", "SIT_TO_STAND")  # both of its ends were calibrated
    sitting = params.states.index("SITTING")
    assert params.emission[sitting].argmax() == sitting  # sitting is expected to look like sitting


def _window(core: StreamCore, seq: int, probs: list[float], gravity=(0.0, 0.0, 0.0), motion=None):
    """The device's next window (its first 128 samples, then 64 more each):
    still with ``gravity``, plus ``motion`` (t in s -> (n, 3) acceleration in
    g) if given; its model labels it ``probs``."""
    samples = np.zeros((64 if seq else 128, 6))
    samples[:, :3] = gravity
    if motion is not None:
        samples[:, :3] += motion(np.arange(len(samples)) / RATE)
    core.ingest(encode_samples(SampleBatch(DEVICE, seq, 1000.0 + seq / RATE, samples)), 0.0)
    _, taken = core.take_batch()
    return core.finish_batch(taken, np.tile(probs, (len(taken), 1)), now=0.0)


def _shift(t: np.ndarray) -> np.ndarray:
    """A push of 0.3 g forward and back over half a second, as in shifting one's weight."""
    return np.outer(0.3 * np.sin(2 * np.pi * (t - 0.4) / 0.5) * ((t >= 0.4) & (t < 0.9)), [0.0, 0.6, 0.8])


def _walk(t: np.ndarray) -> np.ndarray:
    """A 0.3 g bounce at 1.8 steps a second along gravity (z)."""
    return np.outer(0.3 * np.sin(2 * np.pi * 1.8 * t), [0.0, 0.0, 1.0])


def test_the_worker_shows_a_personal_models_decoded_label_so_one_odd_window_does_not_flip_it(personal_file):
    from harstream.models.personal_serving import load_personal_model

    base = load_artifact(ANY_MODEL)
    anywhere = ServedModel("any", "any", base.model_id, PLACEMENT_FREE)
    model = load_personal_model(
        personal_file, anywhere, lambda classes, meta: display_for(classes, meta.get("decoder"))
    )
    router = ModelRouter(ServedModel("waist", "waist", "hapt@1", ACTIVITIES), anywhere)
    router.set_personal(model)
    core = StreamCore(ACTIVITIES, "hapt@1", WorkerConfig(signal_interval=0), router=router)
    # the shared model's classes (WALKING, UPSTAIRS, DOWNSTAIRS, STILL); the device held as it sat when calibrated
    still, walking = [0.04, 0.03, 0.03, 0.9], [0.9, 0.03, 0.03, 0.04]
    seq, published = 0, []
    for probs in [still] * 6 + [walking] + [still] * 2:
        # the blip: shifting in the seat, one push the model takes for a step
        shift = _shift if probs is walking else None
        published += _window(core, seq, probs, gravity=(0.0, 0.6, 0.8), motion=shift)
        seq += 128 if seq == 0 else 64
    assert [p.mode for p in published] == ["personal"] * 9
    assert [p.label for p in published][6] == "WALKING"  # the raw label flips on the blip ...
    assert [p.smoothed for p in published] == ["SITTING"] * 9  # ... the decoded display does not


def test_a_model_without_decoder_parameters_is_served_with_its_raw_label_and_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="harstream.stream.core.decoder"):
        factory = display_for(PLACEMENT_FREE, None)
    anywhere = ServedModel("any", "any", "free@2", PLACEMENT_FREE, display=factory)
    core = StreamCore(
        ACTIVITIES,
        "hapt@1",
        WorkerConfig(signal_interval=0),
        router=ModelRouter(ServedModel("waist", "waist", "hapt@1", ACTIVITIES), anywhere),
    )
    seq, shown = 0, []
    for probs in [[0.1, 0.1, 0.1, 0.7]] * 3 + [[0.7, 0.1, 0.1, 0.1]]:  # at rest, then walking off
        walk = _walk if probs[0] > 0.5 else None
        shown += [p.smoothed for p in _window(core, seq, probs, gravity=(0.0, 0.0, 1.0), motion=walk)]
        seq += 128 if seq == 0 else 64
    assert shown == ["STILL", "STILL", "STILL", "WALKING"]  # each window's own label
    assert isinstance(factory(), Smoother)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "raw per-window label" in warnings[0].getMessage()
