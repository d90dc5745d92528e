"""Placement-free recognition and personal calibration, as a user meets them:
features that do not care how the device is held, the shipped placement-free
artifact, and ``harstream calibrate`` on small labelled CSVs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.models.artifact import ANY_MODEL, ArtifactError, check_compatible, load_artifact
from harstream.models.augment import rotate_samples
from harstream.models.invariant import PlacementFreeFeatures, placement_free_features
from harstream.stream.core.activities import PLACEMENT_FREE
from harstream.stream.core.pipeline import preprocessing_params

RATE = 50


def _window(seed: int) -> np.ndarray:
    """One plausible window: gravity of 1 g in some direction, body motion on top."""
    rng = np.random.default_rng(seed)
    t = np.arange(128) / RATE
    down = rng.normal(size=3)
    down /= np.linalg.norm(down)
    body = 0.3 * np.sin(
        2 * np.pi * rng.uniform(0.5, 3, size=3) * t[:, None] + rng.uniform(0, 6, size=3)
    ) + 0.05 * rng.normal(size=(128, 3))
    gyro = 0.8 * np.sin(2 * np.pi * rng.uniform(0.5, 3, size=3) * t[:, None]) + 0.05 * rng.normal(size=(128, 3))
    return np.concatenate([body, gyro, body + down], axis=1).astype(np.float32)[None]


def _turned(x: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    out = x.copy()
    for part in (slice(0, 3), slice(3, 6), slice(6, 9)):
        out[..., part] = x[..., part] @ rotation.T.astype(np.float32)
    return out


unit_quaternions = st.tuples(*[st.floats(-1, 1) for _ in range(4)]).filter(lambda q: np.linalg.norm(q) > 0.1)


@settings(max_examples=30, deadline=None)
@given(q=unit_quaternions, seed=st.integers(0, 1000))
def test_turning_the_device_frame_leaves_the_placement_free_features_unchanged(q, seed):
    from scipy.spatial.transform import Rotation

    x = _window(seed)
    rotation = Rotation.from_quat(np.asarray(q) / np.linalg.norm(q)).as_matrix()
    before, after = placement_free_features(x), placement_free_features(_turned(x, rotation))
    np.testing.assert_allclose(after, before, rtol=1e-3, atol=2e-3)


def test_the_features_of_a_context_stack_are_each_windows_side_by_side():
    a, b = _window(1), _window(2)
    stack = np.stack([a[0], b[0]])[None]
    np.testing.assert_allclose(
        placement_free_features(stack)[0],
        np.concatenate([placement_free_features(a)[0], placement_free_features(b)[0]]),
        rtol=1e-5,
        atol=1e-5,
    )
    assert placement_free_features(stack).shape == (1, 2 * PlacementFreeFeatures.size())


def test_rotating_raw_samples_turns_both_sensors_by_the_same_rotation():
    samples = np.random.default_rng(0).normal(size=(10, 6))
    half_turn = np.diag([1.0, -1.0, -1.0])
    turned = rotate_samples(samples, half_turn)
    np.testing.assert_allclose(turned[:, [1, 2, 4, 5]], -samples[:, [1, 2, 4, 5]])
    np.testing.assert_allclose(turned[:, [0, 3]], samples[:, [0, 3]])


# ------------------------------------------------------------ the shipped artifact


@pytest.fixture(scope="module")
def any_model():
    return load_artifact(ANY_MODEL)


def test_the_placement_free_model_loads_in_safe_mode_and_says_where_it_may_be_worn(any_model):
    assert any_model.placement == "any"
    assert any_model.classes == list(PLACEMENT_FREE)
    assert tuple(any_model.model.input_shape[1:]) == (1 + len(any_model.context_steps), 128, 9)
    probs = np.asarray(any_model.model(np.repeat(_window(3)[:, None], 1 + len(any_model.context_steps), axis=1)))
    assert probs.shape == (1, 4) and np.isclose(probs.sum(), 1.0, atol=1e-5)


def test_metadata_whose_classes_do_not_fit_its_placement_is_refused():
    meta = {"preprocessing": preprocessing_params(), "placement": "any", "classes": ["WALKING", "SITTING"]}
    with pytest.raises(ArtifactError, match="any model"):
        check_compatible(meta)
    with pytest.raises(ArtifactError, match='placement "pocket" is not one of'):
        check_compatible({**meta, "placement": "pocket"})


# ------------------------------------------------------------ calibration


def _activity(label: str, seconds: float, down, moving: bool, seed: int) -> list[tuple]:
    """Rows (acc xyz, gyro xyz, label) of one synthetic bout: still in a
    posture with gravity ``down``, or a 1.8 Hz walk on top of it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    down = np.asarray(down, float) / np.linalg.norm(down)
    side = np.cross(down, [0.3, 0.5, 0.8])
    side /= np.linalg.norm(side)
    noise = 0.004 * rng.normal(size=(len(t), 6))
    if moving:
        bounce = 0.25 * np.sin(2 * np.pi * 1.8 * t) + 0.08 * np.sin(2 * np.pi * 3.6 * t + 0.4)
        sway = 0.12 * np.sin(2 * np.pi * 0.9 * t)
        acc = down * (1 + bounce[:, None]) + side * sway[:, None]
        gyro = np.outer(0.6 * np.sin(2 * np.pi * 0.9 * t), side) + np.outer(0.3 * np.sin(2 * np.pi * 1.8 * t), down)
    else:
        acc, gyro = np.tile(down, (len(t), 1)), np.zeros((len(t), 3))
    values = np.concatenate([acc, gyro], axis=1) + noise
    return [(*row, label) for row in values]


def _write_csv(path, bouts) -> None:
    rows = [row for bout in bouts for row in bout]
    lines = ["time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label"]
    lines += [f"{i / RATE:.2f}," + ",".join(f"{v:.5f}" for v in row[:6]) + f",{row[6]}" for i, row in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")


SIT, STAND, LIE = (0.0, 0.6, 0.8), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)


def shown(head, rows, turn=None) -> list[str]:
    """What the worker shows (raw label) for each window of a bout of ``rows``,
    the device turned by the sign pattern ``turn``: the shipped placement-free
    model's probabilities, then the personal head, as the worker applies them."""
    from harstream.models.dataset import context_windows
    from harstream.models.personal import window_features
    from harstream.stream.core.pipeline import preprocess_recording
    from harstream.stream.core.posture import apply_heads, posture_cues

    samples = np.array([r[:6] for r in rows], np.float64)
    if turn is not None:
        samples = samples * np.concatenate([turn, turn])
    processed = preprocess_recording(samples)
    starts = np.arange(256, len(samples) - 127, 64)  # past the filters' settling
    x = context_windows(processed, starts, BASE.context_steps)
    probs = np.asarray(BASE.model(x))
    slots = apply_heads(probs, posture_cues(x), [head] * len(x), window_features(x, BASE))
    return [head.classes[int(i)] for i in head.pick(slots).argmax(1)]


BASE = None


@pytest.fixture(scope="module", autouse=True)
def base_model():
    global BASE
    BASE = load_artifact(ANY_MODEL)
    yield BASE


def calibrate(tmp_path, bouts, *extra) -> tuple:
    from harstream.cli import main
    from harstream.stream.personal.model_file import read_personal_file

    data = tmp_path / "my_phone"
    data.mkdir(exist_ok=True)
    _write_csv(data / "calibration.csv", bouts)
    out = tmp_path / "personal.personal.json"
    assert main(["calibrate", "--data", str(data), "--out", str(out), *extra]) == 0
    return read_personal_file(out), json.loads(out.read_text())


def test_calibrate_writes_a_personal_model_that_names_the_calibrated_postures(tmp_path, capsys):
    head, doc = calibrate(
        tmp_path,
        [
            _activity("WALKING", 30, STAND, True, 0),
            _activity("SITTING", 30, SIT, False, 1),
            _activity("STANDING", 30, STAND, False, 2),
        ],
    )
    printed = capsys.readouterr().out
    assert "calibrated SITTING" in printed and "calibrated STANDING" in printed and "calibrated WALKING" in printed
    assert doc["placement"] == "personal" and doc["device"] == "my_phone"
    assert head.classes == ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "STILL")
    assert doc["calibrated"] == ["WALKING", "SITTING", "STANDING"] and head.calibrated == {
        "WALKING",
        "SITTING",
        "STANDING",
    }
    assert head.base_model == BASE.model_id and doc["base_model"]["sha256"] == BASE.metadata["sha256"]
    assert len(json.dumps(doc)) < 16_000  # the device's few parameters, not a model

    def most(labels):
        return max(set(labels), key=labels.count)

    assert most(shown(head, _activity("SITTING", 15, SIT, False, 7))) == "SITTING"
    assert most(shown(head, _activity("STANDING", 15, STAND, False, 8))) == "STANDING"
    # lying was never calibrated: the model says what it knows, still
    assert most(shown(head, _activity("LAYING", 15, LIE, False, 9))) == "STILL"


def test_an_out_path_of_the_old_keras_form_gets_the_personal_suffix_and_says_so(tmp_path, capsys):
    from harstream.cli import main

    data = tmp_path / "phone"
    data.mkdir()
    _write_csv(data / "a.csv", [_activity("STANDING", 30, STAND, False, 0)])
    assert main(["calibrate", "--data", str(data), "--device", "phone:x", "--out", str(tmp_path / "p.keras")]) == 0
    assert "a personal model is p.personal.json now" in capsys.readouterr().out
    assert (tmp_path / "p.personal.json").is_file() and not (tmp_path / "p.keras").exists()


def test_calibration_refuses_an_activity_with_too_little_data_or_a_moving_posture_and_keeps_the_rest(tmp_path, capsys):
    head, doc = calibrate(
        tmp_path,
        [
            _activity("STANDING", 30, STAND, False, 0),
            _activity("LAYING", 12, LIE, False, 1),  # too short
            _activity("SITTING", 30, SIT, True, 2),  # never still while "sitting"
        ],
    )
    printed = capsys.readouterr().out
    assert "refused LAYING: only 12.0 s of data" in printed
    assert "refused SITTING: the device was moving in" in printed
    assert doc["calibrated"] == ["STANDING"]
    assert set(doc["refused"]) == {"LAYING", "SITTING"}
    assert head.classes == ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "STANDING", "STILL")


# A phone in a trouser pocket: standing, the thigh is upright (gravity along the
# phone's long axis); sitting, it is level (gravity through the screen).
POCKET_STAND, POCKET_SIT = (0.08, 0.97, 0.2), (0.15, 0.25, 0.95)
HALF_TURNS = {
    "top_down": np.array([-1.0, -1.0, 1.0]),
    "screen_flipped": np.array([-1.0, 1.0, -1.0]),
    "both": np.array([1.0, -1.0, -1.0]),
}


@pytest.mark.parametrize("turn", list(HALF_TURNS))
def test_pocket_postures_keep_their_names_when_the_phone_goes_back_turned_round(tmp_path, capsys, turn):
    head, doc = calibrate(
        tmp_path,
        [
            _activity("WALKING", 30, POCKET_STAND, True, 0),
            _activity("SITTING", 30, POCKET_SIT, False, 1),
            _activity("STANDING", 30, POCKET_STAND, False, 2),
        ],
    )
    assert doc["turns"] == ["none", "top_down", "screen_flipped", "both"]
    assert any("keep their names when the device comes back turned" in line for line in doc["summary"])
    standing = shown(head, _activity("STANDING", 20, POCKET_STAND, False, 11), HALF_TURNS[turn])
    sitting = shown(head, _activity("SITTING", 20, POCKET_SIT, False, 12), HALF_TURNS[turn])
    assert standing.count("STANDING") >= 0.9 * len(standing)
    assert sitting.count("SITTING") >= 0.9 * len(sitting)


def test_postures_a_half_turn_would_confuse_allow_only_the_turns_that_keep_them_apart(tmp_path, capsys):
    face_up, face_down = (0.0, 0.05, 1.0), (0.0, 0.05, -1.0)  # a phone on a chest: sitting back, lying face down
    head, doc = calibrate(
        tmp_path, [_activity("SITTING", 30, face_up, False, 1), _activity("LAYING", 30, face_down, False, 2)]
    )
    assert doc["turns"] == ["none", "top_down"]  # turning the screen the other way would swap them
    assert any("screen facing the other way" in line and "look alike" in line for line in doc["summary"])
    # the turn that is allowed keeps the name
    assert shown(head, _activity("SITTING", 20, face_up, False, 3), HALF_TURNS["top_down"]).count("SITTING") >= 5


def test_without_half_turns_a_phone_put_back_turned_shows_still(tmp_path, capsys):
    head, doc = calibrate(
        tmp_path,
        [_activity("SITTING", 30, POCKET_SIT, False, 1), _activity("STANDING", 30, POCKET_STAND, False, 2)],
        "--no-half-turns",
    )
    assert doc["turns"] == ["none"]
    assert set(shown(head, _activity("STANDING", 20, POCKET_STAND, False, 3), HALF_TURNS["top_down"])) == {"STILL"}


def _wrist(label: str, seconds: float, sway_degrees: float, seed: int) -> list[tuple]:
    """A still arm resting the same way whether its owner sits or stands; a
    standing body sways (a slow wobble of the tilt of a degree or two, and the
    rotation that comes with it), a seated one hardly does."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    down = np.array([0.35, -0.25, 0.9])
    down /= np.linalg.norm(down)
    axis = np.cross(down, [1.0, 0.0, 0.0])
    axis /= np.linalg.norm(axis)
    amplitude = np.deg2rad(sway_degrees)
    phase = rng.uniform(0, 6, 3)
    angle = amplitude * (
        np.sin(2 * np.pi * 0.25 * t + phase[0])
        + 0.6 * np.sin(2 * np.pi * 0.6 * t + phase[1])
        + 0.3 * np.sin(2 * np.pi * 1.3 * t + phase[2])
    )
    rate = np.gradient(angle, 1 / RATE)
    tilted = np.cos(angle)[:, None] * down + np.sin(angle)[:, None] * np.cross(axis, down)
    acc = tilted + 0.002 * rng.normal(size=(len(t), 3))
    gyro = rate[:, None] * axis + 0.003 * rng.normal(size=(len(t), 3))
    return [(*row, label) for row in np.concatenate([acc, gyro], axis=1)]


def test_on_a_wrist_sitting_and_standing_held_alike_are_told_apart_by_the_bodys_sway(tmp_path, capsys):
    head, doc = calibrate(tmp_path, [_wrist("SITTING", 40, 0.1, 1), _wrist("STANDING", 40, 1.5, 2)])
    (pair,) = doc["pairs"]
    assert pair["angle"] < 20 and pair["accuracy"] >= 0.9 and pair["margin"] < 1e6
    assert any("told apart by how still the body is" in line for line in doc["summary"])
    standing = shown(head, _wrist("STANDING", 30, 1.5, 21))
    sitting = shown(head, _wrist("SITTING", 30, 0.1, 22))
    assert "SITTING" not in standing and standing.count("STANDING") >= 0.7 * len(standing)
    assert "STANDING" not in sitting and sitting.count("SITTING") >= 0.7 * len(sitting)


def test_on_a_wrist_postures_nothing_separates_show_still_not_a_confident_wrong_posture(tmp_path, capsys):
    head, doc = calibrate(tmp_path, [_wrist("SITTING", 40, 0.8, 1), _wrist("STANDING", 40, 0.8, 2)])
    (pair,) = doc["pairs"]
    assert pair["margin"] >= 1e6
    assert any("could not be told apart" in line and "STILL" in line for line in doc["summary"])
    for label, seed in (("STANDING", 31), ("SITTING", 32)):
        assert set(shown(head, _wrist(label, 30, 0.8, seed))) == {"STILL"}


def test_calibrate_names_an_unreadable_recording_and_exits_2(tmp_path, capsys):
    from harstream.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("time,acc_x\n0,1\n")
    assert main(["calibrate", "--data", str(bad), "--out", str(tmp_path / "x.keras")]) == 2
    assert "bad.csv" in capsys.readouterr().err


def _rolled(direction, axis, degrees: float) -> tuple[float, float, float]:
    """``direction`` turned by ``degrees`` about ``axis`` (Rodrigues)."""
    from scipy.spatial.transform import Rotation

    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return tuple(Rotation.from_rotvec(np.deg2rad(degrees) * axis).apply(np.asarray(direction, float)))


def test_a_thigh_on_another_chair_still_sits_by_its_angle_from_the_walk(tmp_path, capsys):
    head, doc = calibrate(
        tmp_path,
        [
            _activity("WALKING", 30, POCKET_STAND, True, 0),
            _activity("SITTING", 30, POCKET_SIT, False, 1),
            _activity("STANDING", 30, POCKET_STAND, False, 2),
        ],
    )
    assert len(doc["walk_down"]) == 3 and doc["walk_angle"][0][0] > 60  # sitting: the thigh far from upright
    # the same thigh flexion, the leg rolled 60° about its own length: far from the sitting prototypes
    other_chair = _rolled(POCKET_SIT, POCKET_STAND, 60.0)
    down = np.asarray(other_chair) / np.linalg.norm(other_chair)
    protos = np.asarray(head.prototypes["SITTING"])
    assert np.degrees(np.arccos((protos @ down).max())) > head.max_angle
    sitting = shown(head, _activity("SITTING", 20, other_chair, False, 13))
    assert sitting.count("SITTING") >= 0.9 * len(sitting)


def test_a_thigh_crossed_over_the_other_still_sits_though_like_no_calibrated_bout(tmp_path, capsys):
    head, doc = calibrate(
        tmp_path,
        [
            _activity("WALKING", 30, POCKET_STAND, True, 0),
            _activity("SITTING", 30, POCKET_SIT, False, 1),
            _activity("STANDING", 30, POCKET_STAND, False, 2),
        ],
    )
    assert doc["settings"]["sides"] == [40.0, 10.0, 60.0]  # the calibration's default
    # the thigh rolled 40° about its length and the knee raised 30° more (this thigh on top)
    raised = _rolled(_rolled(POCKET_SIT, POCKET_STAND, 40.0), np.cross(POCKET_STAND, POCKET_SIT), 30.0)
    down = np.asarray(raised) / np.linalg.norm(raised)
    protos = np.asarray(head.prototypes["SITTING"])
    assert np.degrees(np.arccos((protos @ down).max())) > head.max_angle
    sitting_angle, spread = head.walk_angle[0]
    assert abs(np.degrees(np.arccos(down @ np.asarray(head.walk_down))) - sitting_angle) > 2 * spread
    # walked to the sofa (the device's walk shows it is as calibrated, no half-turn), then sat so
    rows = _activity("WALKING", 20, POCKET_STAND, True, 7) + _activity("SITTING", 30, raised, False, 14)
    sitting = shown_in_order(dataclasses.replace(head), rows, np.ones(3))[-12:]  # well inside the sitting
    assert sitting.count("SITTING") >= 11, sitting
    without = shown_in_order(dataclasses.replace(head, sides=()), rows, np.ones(3))[-12:]  # the rule off: STILL
    assert without.count("STILL") >= 11, without


def _forearm(flexion: float, roll: float) -> tuple[float, float, float]:
    """Gravity on a forearm flexed ``flexion`` degrees from hanging (hanging: along x) and rolled ``roll``."""
    f, r = np.deg2rad(flexion), np.deg2rad(roll)
    return (float(np.cos(f)), float(np.sin(f) * np.cos(r)), float(np.sin(f) * np.sin(r)))


def test_a_forearm_rolled_otherwise_each_bout_is_told_by_its_angle_from_the_walk(tmp_path, capsys):
    head, doc = calibrate(
        tmp_path,
        [
            _activity("WALKING", 30, _forearm(0, 0), True, 0),
            _activity("SITTING", 25, _forearm(70, 0), False, 1),
            _activity("STANDING", 25, _forearm(40, 180), False, 2),
            _activity("SITTING", 25, _forearm(70, 100), False, 3),
            _activity("STANDING", 25, _forearm(40, 280), False, 4),
        ],
    )
    assert any("more than by its exact direction" in line for line in doc["summary"])  # the check chose it
    # later bouts rolled otherwise again: each nearer the other posture's direction than its own
    standing = shown(head, _activity("STANDING", 20, _forearm(40, 0), False, 5))
    sitting = shown(head, _activity("SITTING", 20, _forearm(70, 180), False, 6))
    assert standing.count("STANDING") >= 0.9 * len(standing)
    assert sitting.count("SITTING") >= 0.9 * len(sitting)


def shown_in_order(head, rows, turn) -> list[str]:
    """Like :func:`shown`, the head given one window at a time in time order (as the worker's batches do)."""
    from harstream.models.dataset import context_windows
    from harstream.models.personal import window_features
    from harstream.stream.core.pipeline import preprocess_recording
    from harstream.stream.core.posture import apply_heads, posture_cues

    samples = np.array([r[:6] for r in rows], np.float64) * np.concatenate([turn, turn])
    processed = preprocess_recording(samples)
    starts = np.arange(256, len(samples) - 127, 64)
    x = context_windows(processed, starts, BASE.context_steps)
    probs, cues, features = np.asarray(BASE.model(x)), posture_cues(x), window_features(x, BASE)
    return [
        head.classes[
            int(head.pick(apply_heads(probs[i : i + 1], cues[i : i + 1], [head], features[i : i + 1])).argmax())
        ]
        for i in range(len(x))
    ]


# a phone worn so that turning its screen the other way brings standing onto sitting
ODD_WALK, ODD_STAND, ODD_SIT = (0.6, 0.7, 0.4), (0.62, 0.72, 0.3), (-0.55, 0.75, -0.2)


def test_a_phone_put_back_in_a_turn_its_postures_forbid_stands_again_once_its_walk_shows_the_turn(tmp_path, capsys):
    head, doc = calibrate(
        tmp_path,
        [
            _activity("WALKING", 30, ODD_WALK, True, 0),
            _activity("SITTING", 30, ODD_SIT, False, 1),
            _activity("STANDING", 30, ODD_STAND, False, 2),
        ],
    )
    assert "screen_flipped" not in doc["turns"]
    flipped = HALF_TURNS["screen_flipped"]
    rows = _activity("WALKING", 20, ODD_WALK, True, 7) + _activity("STANDING", 30, ODD_STAND, False, 8)
    labels = shown_in_order(head, rows, flipped)
    standing = labels[-12:]  # well inside the standing part
    assert standing.count("STANDING") >= 10, labels
    assert head.walk_turn() == 2  # TURN_NAMES: none, top_down, screen_flipped, both


def test_before_its_first_walk_a_phone_in_a_forbidden_turn_is_not_named_standing(tmp_path, capsys):
    head, _ = calibrate(
        tmp_path,
        [
            _activity("WALKING", 30, ODD_WALK, True, 0),
            _activity("SITTING", 30, ODD_SIT, False, 1),
            _activity("STANDING", 30, ODD_STAND, False, 2),
        ],
    )
    labels = shown_in_order(head, _activity("STANDING", 30, ODD_STAND, False, 8), HALF_TURNS["screen_flipped"])
    assert "STANDING" not in labels  # the turn is not known: its tilt looks like sitting, or like nothing


def test_a_few_seconds_of_movement_between_postures_is_not_taken_for_the_devices_walk():
    from harstream.stream.core.posture import LIVE_MIN_RUN, PersonalHead, apply_heads

    head = PersonalHead(
        "phone:a", "p", "any@1", ("SITTING", "STANDING"),
        {"SITTING": [[0.0, 0.0, 1.0]], "STANDING": [[0.0, 1.0, 0.0]]},
        motion_mean=[[-3.0] * 6, [-3.0] * 6], motion_scale=[1.0] * 6, margins=[[0.0, 2.0], [2.0, 0.0]],
        walk_down=[0.0, 1.0, 0.0], walk_angle=[[90.0, 12.0], [0.0, 12.0]],
    )  # fmt: skip
    moving, still = np.array([[0.9, 0.0, 0.0, 0.1]]), np.array([[0.0, 0.0, 0.0, 1.0]])
    turning = np.array([[0.0, 0.7, 0.7] + [-3.0] * 6])  # gravity on its way from standing to sitting

    def one(base):
        apply_heads(base, turning, [head])

    for base in [still] + [moving] * 3 + [still]:  # standing up or sitting down: 2-4 s
        one(base)
    assert head.live_walk is None
    for _ in range(LIVE_MIN_RUN):  # a walk lasts
        one(moving)
    assert head.live_walk is not None


def _overlapping_head(abstain: bool, sitting_angle: float = 75.0, standing_angle: float = 45.0, trusted: bool = False):
    from harstream.stream.core.posture import PersonalHead

    return PersonalHead(
        "watch:a", "p", "any@1", ("SITTING", "STANDING"),
        {"SITTING": [[0.0, 0.0, 1.0]], "STANDING": [[0.0, 1.0, 0.0]]},
        motion_mean=[[-3.0] * 6, [-3.0] * 6], motion_scale=[1.0] * 6, margins=[[0.0, 2.0], [2.0, 0.0]],
        walk_down=[0.0, 1.0, 0.0], walk_angle=[[sitting_angle, 12.0], [standing_angle, 12.0]],
        angle_abstain=abstain, angle_trusted=trusted,
    )  # fmt: skip


def _shown(head, degrees_from_walk: float) -> str:
    from harstream.stream.core.posture import apply_heads

    a = np.deg2rad(degrees_from_walk)
    cues = np.array([[np.sin(a), np.cos(a), 0.0] + [-3.0] * 6])  # away from the walk, about z
    return head.classes[int(head.pick(apply_heads(np.array([[0.0, 0.0, 0.0, 1.0]]), cues, [head]))[0].argmax())]


def test_a_wrist_held_at_an_angle_two_postures_share_shows_still_not_a_confident_posture():
    # 55° from the walk: within two spreads of standing's 45° and of sitting's 75°, and far from every prototype
    assert _shown(_overlapping_head(abstain=True), 55.0) == "STILL"
    assert _shown(_overlapping_head(abstain=False), 55.0) == "STANDING"  # what it said before


def test_a_wrist_held_at_an_angle_only_one_posture_has_is_still_named():
    # 25° from the walk: within two spreads of standing's 45°, more than four from sitting's 75°
    assert _shown(_overlapping_head(abstain=True), 25.0) == "STANDING"


def test_a_window_on_a_postures_own_prototype_is_named_even_where_the_angles_overlap():
    # both postures' angles near 10-20°, but the window lies on standing's prototype: its whole tilt says so
    assert _shown(_overlapping_head(abstain=True, sitting_angle=20.0, standing_angle=10.0), 0.0) == "STANDING"


def test_where_the_calibration_trusts_the_angle_a_posture_the_angle_argues_against_shows_still():
    # on standing's prototype, but its angle (0°) is sitting's (20°) more than standing's (45°)
    assert _shown(_overlapping_head(True, sitting_angle=20.0, standing_angle=45.0, trusted=True), 0.0) == "STILL"
    assert _shown(_overlapping_head(True, sitting_angle=20.0, standing_angle=45.0, trusted=False), 0.0) == "STANDING"


def _thigh_head(sides=(40.0, 10.0, 60.0), postures=("SITTING", "STANDING"), angles=((85.0, 12.0), (5.0, 12.0))):
    """A thigh's head, the walk along y: sitting 85° from it, standing 5° (prototypes there, unrolled)."""
    from harstream.stream.core.posture import PersonalHead

    protos = {p: [_from_walk(a[0], 0.0)] for p, a in zip(postures, angles)}
    return PersonalHead(
        "phone:a", "p", "any@1", postures, protos,
        motion_mean=[[-3.0] * 6] * len(postures), motion_scale=[1.0] * 6,
        margins=(2.0 * (1 - np.eye(len(postures)))).tolist(),
        walk_down=[0.0, 1.0, 0.0], walk_angle=[list(a) for a in angles], sides=sides,
    )  # fmt: skip


def _from_walk(degrees: float, roll: float) -> list[float]:
    """Gravity ``degrees`` from the walk (along y), rolled ``roll`` degrees about the walk's direction."""
    a, r = np.deg2rad(degrees), np.deg2rad(roll)
    return [float(np.sin(a) * np.cos(r)), float(np.cos(a)), float(np.sin(a) * np.sin(r))]


def _named(head, degrees: float, roll: float = 0.0) -> str:
    from harstream.stream.core.posture import apply_heads

    cues = np.array([_from_walk(degrees, roll) + [-3.0] * 6])
    return head.classes[int(head.pick(apply_heads(np.array([[0.0, 0.0, 0.0, 1.0]]), cues, [head]))[0].argmax())]


def test_a_thigh_crossed_over_the_other_sits_by_the_side_of_the_midpoint_it_lies_on():
    # the knee raised to 115° and the thigh rolled 40°: more than two spreads from sitting's 85°, 30° from every prototype
    assert _named(_thigh_head(sides=()), 115.0, 40.0) == "STILL"  # without the rule: honest, exact-wrong
    assert _named(_thigh_head(), 115.0, 40.0) == "SITTING"
    assert _named(_thigh_head(), 62.0, -35.0) == "SITTING"  # perched on a stool, the phone turned in the pocket
    assert _named(_thigh_head(), 34.0, 45.0) == "STANDING"  # a foot up on a rail, the phone turned in the pocket


def test_a_still_thigh_between_its_postures_or_beyond_them_stays_still():
    head = _thigh_head()
    assert _named(head, 45.0) == "STILL"  # the midpoint (within the buffer): either could be it
    assert _named(head, 42.0, 30.0) == "STILL"
    assert _named(head, 150.0) == "STILL"  # beyond the limit: like neither (a leg up a wall)
    # on sitting's side in angle, but 90° from its every direction: lying on a side, not calibrated
    assert _named(head, 120.0, 90.0) == "STILL"


def test_where_calibrated_postures_lie_close_in_angle_an_uncalibrated_lying_stays_still():
    # a waist: standing 5° from the walk, sitting leaning back 20°; lying is 90° from the walk
    head = _thigh_head(angles=((20.0, 12.0), (5.0, 12.0)))
    assert _named(head, 90.0) == "STILL"
    assert _named(head, 60.0, 40.0) == "STILL"
    # a thigh that calibrated lying too: sitting and lying lie close, so the rule names neither there
    three = _thigh_head(postures=("SITTING", "STANDING", "LAYING"), angles=((85.0, 12.0), (5.0, 12.0), (95.0, 12.0)))
    assert _named(three, 125.0, 40.0) == "STILL"
    assert _named(three, 34.0, 45.0) == "STANDING"  # standing lies far from both
