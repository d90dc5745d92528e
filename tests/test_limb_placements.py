"""A device on a swinging thigh or wrist: the simulation that makes one from
a waist recording, the gait features that tell it apart, the placement
estimate, and a placement-free model that calls a swinging-limb walk WALKING."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.models import feature_math
from harstream.models.augment import Fidgets, LimbMotion, gait_phase, simulate_fidgets, simulate_limb
from harstream.models.invariant import PlacementRobustFeatures, placement_robust_features
from harstream.models.placement_estimate import PLACEMENTS, PlacementEstimator
from harstream.models.placement_free import Recipe, limb_labels, placement_scores
from harstream.stream.core.pipeline import WINDOW, preprocess_recording
from harstream.stream.data.recordings import Recording

RATE = 50.0


def _waist_walk(seconds: float = 30.0, cadence: float = 1.8, still: float = 10.0, seed: int = 0) -> np.ndarray:
    """HAPT-like waist samples: ``still`` s standing (x reads +1 g), then a
    walk bouncing along x at ``cadence`` steps/s and swaying along z at half of it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int((still + seconds) * RATE)) / RATE
    walking = (t >= still).astype(float)
    acc = np.zeros((len(t), 3))
    acc[:, 0] = 1.0 + walking * (0.25 * np.sin(2 * np.pi * cadence * t) + 0.08 * np.sin(4 * np.pi * cadence * t))
    acc[:, 1] = walking * 0.15 * np.sin(2 * np.pi * cadence * t + 1.0)
    acc[:, 2] = walking * 0.1 * np.sin(np.pi * cadence * t)
    gyro = np.zeros((len(t), 3))
    gyro[:, 0] = walking * 0.4 * np.sin(np.pi * cadence * t)
    gyro[:, 1] = walking * 0.3 * np.sin(2 * np.pi * cadence * t)
    return np.concatenate([acc, gyro], axis=1) + 0.003 * rng.normal(size=(len(t), 6))


def _limb(kind: str, **changes) -> LimbMotion:
    base = LimbMotion.draw(kind, np.random.default_rng(0))
    from dataclasses import replace

    return replace(base, **changes)


def _windows(samples: np.ndarray) -> np.ndarray:
    processed = preprocess_recording(samples)
    starts = np.arange(0, len(processed) - WINDOW + 1, WINDOW // 2)
    return np.stack([processed[s : s + WINDOW] for s in starts]).astype(np.float32)


def _dominant_hz(signal: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(signal - signal.mean())) ** 2
    return float(np.fft.rfftfreq(len(signal), 1 / RATE)[np.argmax(power)])


# ------------------------------------------------------------ the simulation


@pytest.mark.parametrize(
    ("kind", "drawn", "unseen"),
    [
        (
            "thigh",
            (
                27.739233746429086,
                0.08093601412916109,
                0.25744424357926954,
                0.10384619671527331,
                0.31265404784005446,
                5.47653346366633,
                3.811604993109835,
                9.589931219679968,
                1.0087249982930846,
            ),
            (
                36.498559452686926,
                0.3028319671145463,
                0.017206504032783308,
                5.3872299529679575,
                0.3711343610598829,
                6.497133105998255,
                1.1036768144935105,
                12.26357844699773,
                1.0082922440498183,
            ),
        ),
        (
            "wrist",
            (
                18.82834868446472,
                0.10791468550554813,
                0.25744424357926954,
                0.10384619671527331,
                0.703317559800068,
                18.51684481372127,
                3.811604993109835,
                14.589931219679968,
                0.8174499965861691,
            ),
            (
                26.498559452686923,
                0.40283196711454633,
                0.017206504032783308,
                5.3872299529679575,
                0.771134361059883,
                20.62141638249782,
                1.1036768144935105,
                17.26357844699773,
                0.567062441469363,
            ),
        ),
    ],
)
def test_a_seed_draws_the_same_limbs_as_the_per_limb_code_did(kind, drawn, unseen):
    """The values the thigh's and the wrist's own draw functions gave for seed 0
    (one table-driven draw replaced them): the shipped model's training limbs
    depend on them."""
    from dataclasses import astuple

    rng = np.random.default_rng(0)
    assert astuple(LimbMotion.draw(kind, rng))[1:] == pytest.approx(drawn, rel=1e-12)
    assert astuple(LimbMotion.draw_unseen(kind, rng))[1:] == pytest.approx(unseen, rel=1e-12)


def test_the_gait_phase_runs_at_half_the_step_rate_and_the_gate_opens_only_while_walking():
    samples = _waist_walk(cadence=1.8)
    phase, gate = gait_phase(samples)
    walk = slice(int(15 * RATE), int(38 * RATE))
    stride_hz = (phase[walk][-1] - phase[walk][0]) / (2 * np.pi) / ((walk.stop - walk.start) / RATE)
    assert stride_hz == pytest.approx(0.9, abs=0.03)
    assert gate[: int(8 * RATE)].max() < 0.05 and gate[walk].min() > 0.95


def test_a_thigh_swings_at_the_stride_frequency_with_the_amplitude_it_was_given():
    samples = _waist_walk(cadence=1.8)
    limb = _limb("thigh", swing=25.0, harmonic=0.0, roll=0.0, offset=0.0, lever=0.01)
    thigh = simulate_limb(samples, limb)
    walk = slice(int(15 * RATE), int(38 * RATE))
    spin = thigh[walk, 3:6] - samples[walk, 3:6]  # the limb's own rotation rate (about z at small angles)
    assert _dominant_hz(spin[:, 2]) == pytest.approx(0.9, abs=0.1)
    # a ±25° pendulum at 0.9 Hz turns at up to A·ω = 0.436 · 2π·0.9 ≈ 2.47 rad/s
    assert np.abs(spin[:, 2]).max() == pytest.approx(np.deg2rad(25) * 2 * np.pi * 0.9, rel=0.1)
    # gravity turns through the device frame (no lever here: a lever near the free
    # pendulum's length would cancel it): the y reading swings by ±sin(25°) on top of the waist's own
    assert np.ptp(thigh[walk, 1]) > 2 * np.sin(np.deg2rad(25)) > 2.5 * np.ptp(samples[walk, 1])


def test_a_still_wearer_gets_no_swing_only_the_limb_s_fixed_angle():
    samples = _waist_walk(seconds=0.0, still=20.0)
    wrist = simulate_limb(samples, _limb("wrist", offset=10.0))
    np.testing.assert_allclose(
        np.linalg.norm(wrist[:, 0:3], axis=1), np.linalg.norm(samples[:, 0:3], axis=1), atol=0.01
    )
    assert np.abs(wrist[:, 3:6]).max() < 0.05


def test_the_lever_adds_centripetal_and_tangential_acceleration_that_no_rotation_of_the_waist_gives():
    samples = _waist_walk(cadence=1.8)
    walk = slice(int(15 * RATE), int(38 * RATE))
    waist = np.linalg.norm(samples[walk, :3], axis=1)

    def change(lever: float) -> float:
        limb = simulate_limb(samples, _limb("wrist", lever=lever, swing=20.0, trunk_coupling=1.0))
        return float(np.std(np.linalg.norm(limb[walk, :3], axis=1) - waist))

    # turning a frame never changes a vector's length; only the lever does
    assert change(0.0) < 0.01
    assert change(0.75) > 0.1


def _sitting(seconds: float = 120.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A still device (gravity along x, sensor noise only) labelled 10 s
    standing, ``seconds`` sitting, then 10 s walking (HAPT labels 5, 4, 1)."""
    rng = np.random.default_rng(seed)
    n = int((seconds + 20) * RATE)
    samples = 0.002 * rng.normal(size=(n, 6))
    samples[:, 0] += 1.0
    labels = np.full(n, 4)
    labels[: int(10 * RATE)] = 5
    labels[-int(10 * RATE) :] = 1
    return samples, labels


def _habit(kind: str, **changes) -> Fidgets:
    from dataclasses import replace

    return replace(Fidgets.draw(kind, np.random.default_rng(0)), **changes)


def test_a_limb_fidgets_only_while_its_owner_sits_or_stands():
    samples, labels = _sitting()
    moved = simulate_fidgets(samples, labels, _habit("wrist", per_minute=30.0), np.random.default_rng(1))
    walking = labels == 1
    assert np.array_equal(moved[walking], samples[walking])
    assert np.abs(moved[~walking] - samples[~walking]).max() > 0.1


def test_a_fidget_turns_the_device_without_changing_the_size_of_gravity():
    """With no travel and no vibration the device only turns: |acc| stays 1 g
    while gravity's direction in the device swings by tens of degrees."""
    samples, labels = _sitting()
    samples[:, :3] = [1.0, 0.0, 0.0]
    samples[:, 3:] = 0.0
    habit = _habit("wrist", per_minute=20.0, distance=(0.0, 0.0), tremor_g=0.0, angle=(40.0, 60.0))
    moved = simulate_fidgets(samples, labels, habit, np.random.default_rng(2))
    assert np.allclose(np.linalg.norm(moved[:, :3], axis=1), 1.0, atol=1e-9)
    assert np.degrees(np.arccos(np.clip(moved[:, 0], -1, 1))).max() > 30.0
    assert np.abs(moved[:, 3:]).max() > 0.5  # the gyroscope sees the turn (rad/s)


def test_a_fidgeting_wrist_moves_well_above_rest_yet_does_not_step():
    """Reaches and gestures are not a gait: most of a gesturing wrist's
    windows have motion a resting device never shows, and (almost) none of
    them steps, so the stepping rule cannot force them to WALKING."""
    from harstream.stream.core.stepping import STEPPING, motion_evidence, step_measures

    samples, labels = _sitting(seconds=300.0)
    moved = simulate_fidgets(samples, labels, _habit("wrist", per_minute=15.0), np.random.default_rng(3))
    sitting = _windows(moved)[3:-6]  # windows wholly inside the sitting bout
    assert np.median(step_measures(sitting)[:, 0]) > 0.05
    assert np.mean(motion_evidence(sitting) == STEPPING) < 0.02


def test_an_unknown_limb_is_refused_by_name():
    with pytest.raises(ValueError, match="limb kind 'ankle'"):
        LimbMotion.draw("ankle", np.random.default_rng(0))


# ------------------------------------------------------------ gait features


def test_the_robust_features_are_the_placement_free_ones_followed_by_the_gait_ones():
    x = _windows(_waist_walk())
    feats = placement_robust_features(x)
    assert feats.shape == (len(x), PlacementRobustFeatures.size())
    free = feature_math.placement_free_features(feature_math.channel_first(x), np)
    np.testing.assert_allclose(feats[:, : feature_math.FREE_FEATURES], free, rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(q=st.tuples(*[st.floats(-1, 1) for _ in range(4)]).filter(lambda q: np.linalg.norm(q) > 0.1))
def test_turning_the_device_leaves_the_gait_features_unchanged(q):
    from scipy.spatial.transform import Rotation

    x = _windows(simulate_limb(_waist_walk(seconds=10.0, still=2.0), _limb("thigh")))
    rotation = Rotation.from_quat(np.asarray(q) / np.linalg.norm(q)).as_matrix().astype(np.float32)
    turned = x.copy()
    for part in (slice(0, 3), slice(3, 6), slice(6, 9)):
        turned[..., part] = x[..., part] @ rotation.T
    before = placement_robust_features(x)[:, feature_math.FREE_FEATURES :]
    after = placement_robust_features(turned)[:, feature_math.FREE_FEATURES :]
    np.testing.assert_allclose(after, before, rtol=2e-3, atol=2e-3)


def test_a_swinging_thigh_repeats_per_stride_and_turns_harder_about_one_axis_than_a_waist():
    waist = _waist_walk()
    thigh = simulate_limb(waist, _limb("thigh", swing=25.0, harmonic=0.0))
    gait = slice(feature_math.FREE_FEATURES, None)
    w = placement_robust_features(_windows(waist)[-8:])[:, gait].mean(axis=0)
    t = placement_robust_features(_windows(thigh)[-8:])[:, gait].mean(axis=0)
    stride_vs_step_accel, planarity, rotation_energy = 2, 7, 8
    assert t[stride_vs_step_accel] > w[stride_vs_step_accel]
    assert t[planarity] > 0.8 > w[planarity]
    assert t[rotation_energy] > w[rotation_energy] + 1.0


# ------------------------------------------------------------ labels and scores


def test_a_limb_s_stairs_are_taught_as_walking_and_its_postures_as_still():
    assert limb_labels(np.array([0, 1, 2, 3, 4, 5])).tolist() == [0, 0, 0, 3, 3, 3]


def test_placement_scores_count_stairs_claims_on_flat_walking_as_false_alarms():
    y = np.array([0, 0, 0, 0, 1, 3])
    predicted = np.array([0, 2, 1, 0, 0, 3])
    s = placement_scores(predicted, y, "thigh")
    assert s["walking_as_walking"] == 0.5 and s["stairs_false_alarm"] == 0.5
    assert s["stairs_as_walking"] == 1.0
    assert s["own_classes"] == pytest.approx(3 / 5)  # the limb's stairs window is left out


@pytest.mark.parametrize(
    "label",
    [
        "any-svm-C3-context1-2-4+amp0.7-1.5",
        "any-svm-C3-context1-2-4+limbs-thigh-wrist+robust",
        "any-svm-C3-context1-2-4+limbs-thigh-wrist+robust+limbstairs-omit",
        "any-svm-C1-single",
    ],
)
def test_a_recipe_label_reads_back_as_the_recipe_that_wrote_it(label):
    assert Recipe.from_label(label).label == label


def test_a_recipe_label_this_module_never_writes_is_refused():
    with pytest.raises(ValueError, match="not one this module writes"):
        Recipe.from_label("any-lstm-context1")


# ------------------------------------------------------------ the placement estimate


def test_the_placement_estimate_round_trips_through_json_and_refuses_a_broken_entry():
    rng = np.random.default_rng(0)
    f = PlacementRobustFeatures.size()
    est = PlacementEstimator(
        rng.normal(size=f), rng.uniform(0.5, 2, size=f), rng.normal(size=(f, 3)), rng.normal(size=3)
    )
    again = PlacementEstimator.from_json(est.to_json())
    x = _windows(_waist_walk())[:3]
    np.testing.assert_allclose(again.probabilities(x), est.probabilities(x), atol=1e-5)
    broken = {**est.to_json(), "coef": [[0.0, 1.0]]}
    with pytest.raises(ValueError, match="shapes"):
        PlacementEstimator.from_json(broken)
    with pytest.raises(ValueError, match="windows must be"):
        est.probabilities(np.zeros((2, 64, 9)))


@pytest.fixture(scope="module")
def tiny_fit():
    """A placement-free model and estimator fitted on three HAPT subjects (waist, thigh, wrist)."""
    from harstream.models.placement_free import fit_on_sessions
    from harstream.stream.data.recordings import load_dataset

    data = load_dataset()
    recipe = Recipe(context=(), C=3.0)
    model, history = fit_on_sessions(data.of_subjects([1, 3, 5]), recipe, seed=0)
    return data, recipe, model, history["placement_estimate"]


def _held_out(data, kind: str) -> tuple[np.ndarray, np.ndarray]:
    from harstream.models.dataset import labelled_windows
    from harstream.models.placement_free import placement_sets

    recs: list[Recording] = placement_sets(data.of_subjects([8]), seed=7)[kind]
    w = labelled_windows(recs, context_steps=())
    return w.x, w.y


@pytest.mark.parametrize("kind", ["thigh", "wrist"])
def test_a_model_taught_swinging_limbs_calls_a_held_out_limb_walk_walking_and_says_where_it_is(tiny_fit, kind):
    data, recipe, model, estimator = tiny_fit
    x, y = _held_out(data, kind)
    walking = y == 0
    predicted = np.asarray(model.predict(x[walking], verbose=0)).argmax(1)
    assert np.mean(predicted == 0) >= 0.9
    guess = estimator.probabilities(x[y < 3]).argmax(1)
    assert np.mean(guess == PLACEMENTS.index(kind)) >= 0.7


def test_the_placement_estimate_calls_a_held_out_waist_walk_waist_like(tiny_fit):
    data, _, _, estimator = tiny_fit
    x, y = _held_out(data, "waist")
    assert np.mean(estimator.waist_likeness(x[y < 3]) > 0.5) >= 0.7


# ------------------------------------------------------------ the shipped model


@pytest.fixture(scope="module")
def shipped():
    from harstream.models.artifact import ANY_MODEL, load_artifact

    return load_artifact(ANY_MODEL)


def test_the_shipped_placement_free_model_carries_a_placement_estimate_over_its_own_features(shipped):
    estimator = PlacementEstimator.from_metadata(shipped.metadata)
    assert estimator is not None and estimator.classes == PLACEMENTS
    assert shipped.metadata["data"]["limbs"] == ["thigh", "wrist"]


def test_an_estimate_fitted_with_a_feature_that_does_not_vary_survives_its_metadata():
    """A model taught without the gyroscope has gyroscope features that are a
    constant give or take float noise: the stored estimate must load again."""
    from harstream.models import feature_math
    from harstream.models.placement_estimate import fit_placement_estimator

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(90, feature_math.ROBUST_FEATURES))
    feats[:, 3] = -27.6 + 1e-8 * rng.normal(size=90)  # log energy of a zero signal, float noise
    estimator = fit_placement_estimator(feats, np.arange(90) % 3)
    again = PlacementEstimator.from_json(estimator.to_json())
    assert again.scale[3] == 1.0
    assert np.allclose(again.coef, estimator.coef, atol=1e-6)


def test_the_shipped_model_without_the_gyroscope_carries_an_estimate_that_loads():
    from harstream.models.artifact import ANY_NO_GYRO_MODEL, load_artifact

    bare = load_artifact(ANY_NO_GYRO_MODEL)
    assert bare.metadata["gyroscope"] is False and "+nogyro" in bare.metadata["architecture"]
    assert PlacementEstimator.from_metadata(bare.metadata) is not None


@pytest.mark.parametrize("kind", ["thigh", "wrist"])
def test_the_shipped_model_calls_a_test_subject_s_simulated_limb_walk_walking_not_stairs(shipped, kind):
    from harstream.models.dataset import labelled_windows
    from harstream.models.placement_free import placement_sets
    from harstream.stream.data.recordings import load_dataset

    recs = placement_sets(load_dataset().of_subjects([2]), seed=11)[kind]
    w = labelled_windows(recs, context_steps=shipped.context_steps)
    walking = w.x[w.y == 0]
    predicted = np.asarray(shipped.model.predict(walking, verbose=0)).argmax(1)
    assert np.mean(predicted == 0) >= 0.9
    assert np.mean((predicted == 1) | (predicted == 2)) <= 0.05


def test_the_placement_estimate_runs_without_keras_or_scikit_learn():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from harstream.models.placement_estimate import PlacementEstimator; "
        "PlacementEstimator.uniform().waist_likeness(np.zeros((1, 128, 9), np.float32)); "
        "print(sorted(m for m in ('tensorflow', 'keras', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_shipped_placement_free_model_converts_to_litert_and_agrees_with_keras(shipped):
    """Every op of the gait features must exist in LiteRT (it has no ACOS, for one)."""
    from harstream.models.runtime import load_runtime

    x = np.stack([_windows(simulate_limb(_waist_walk(), _limb("thigh")))[-12:]] * 4, axis=1)
    # the size every batch can be split into: the ops are the same at every static batch, each size a conversion
    selected = load_runtime(shipped, "tflite", check=x, sizes=(1,))
    candidate = selected.report["candidates"]["tflite"]
    assert selected.report["chosen"] == "tflite" and candidate["agrees"] and candidate["argmax_mismatches"] == 0


def test_the_worker_serves_the_placement_free_model_with_its_waist_likeness_for_the_stairs_gate():
    import json

    from harstream.commands.worker import waist_likeness_of
    from harstream.models.artifact import ANY_MODEL, metadata_path

    meta = json.loads(metadata_path(ANY_MODEL).read_text())
    score = waist_likeness_of(meta, str(ANY_MODEL))
    waist = _windows(_waist_walk())[-6:]
    thigh = _windows(simulate_limb(_waist_walk(), _limb("thigh")))[-6:]
    assert score is not None
    assert (score(waist) > 0.5).all() and (score(thigh) < 0.5).all()
    assert waist_likeness_of({**meta, "placement": "waist"}, "x") is None
    assert waist_likeness_of({k: v for k, v in meta.items() if k != "placement_estimate"}, "x") is None


@pytest.mark.parametrize("kind", ["waist", "thigh", "wrist"])
def test_the_worker_core_publishes_where_a_simulated_walk_is_worn_with_the_shipped_estimate(kind):
    """End to end through StreamCore (raw samples in, predictions out) on a
    *simulated* limb: the estimate learned simulated limbs, so this checks the
    wiring, not real pockets or watches."""
    import json

    from harstream.commands.worker import placement_probabilities_of
    from harstream.models.artifact import ANY_MODEL, metadata_path
    from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
    from harstream.stream.core.model_routing import ModelRouter, ServedModel
    from harstream.stream.core.protocol import SampleBatch, encode_samples
    from harstream.stream.core.worker import StreamCore

    estimate = placement_probabilities_of(json.loads(metadata_path(ANY_MODEL).read_text()), str(ANY_MODEL))
    anywhere = ServedModel("any", "any", "any@1", PLACEMENT_FREE, placement_probabilities=estimate)
    core = StreamCore(ACTIVITIES, "w", router=ModelRouter(ServedModel("waist", "waist", "w", ACTIVITIES), anywhere))
    walk = _waist_walk(40, still=0)
    samples = walk if kind == "waist" else simulate_limb(walk, _limb(kind))
    shown = []
    for s in range(0, len(samples) - 50, 50):
        batch = SampleBatch("phone:x", s, 1.7e9 + s / RATE, samples[s : s + 50].astype(np.float32))
        core.ingest(encode_samples(batch), now=s / RATE)
        while core.waiting:
            _, taken = core.take_batch()
            walking = np.tile([0.9, 0.04, 0.03, 0.03], (len(taken), 1))  # the model's part is not under test
            shown += [p.placement for p in core.finish_batch(taken, walking, now=s / RATE)]
    assert shown[0] is None and shown[-10:] == [kind] * 10


@settings(max_examples=25, deadline=None)
@given(noise=st.floats(0.0, 0.05), seed=st.integers(0, 100))
def test_a_still_device_turns_about_no_axis_in_particular_however_quiet_its_gyroscope(noise, seed):
    """The dominant-rotation share of a still window sits near 1/3 and stays in
    [1/3, 1]: a quieter gyroscope than HAPT's must not look like a swing."""
    x = np.zeros((1, WINDOW, 9), np.float32)
    x[..., 6] = 1.0
    x[0, :, 3:6] = noise * np.random.default_rng(seed).normal(size=(WINDOW, 3))
    planarity, energy = placement_robust_features(x)[0, feature_math.FREE_FEATURES + 7 : feature_math.FREE_FEATURES + 9]
    assert 1 / 3 - 1e-4 <= planarity <= 1.0
    if noise <= 0.005:
        assert planarity < 0.45 and energy < -8.5


@pytest.mark.parametrize(("limb_stairs", "taught"), [("walking", 40 + 30 + 30), ("omit", 40 + 20 + 20)])
def test_a_limbs_stairs_windows_are_taught_as_walking_or_left_out_as_the_recipe_says(limb_stairs, taught):
    from harstream.models.placement_free import fit_features

    rng = np.random.default_rng(0)
    f = PlacementRobustFeatures.size()
    waist = (rng.normal(size=(40, f)), np.tile(np.arange(4), 10), np.repeat(np.arange(4), 10))
    thigh = (rng.normal(size=(30, f)) + 3, np.r_[np.zeros(10), np.full(10, 3), np.full(10, 1)], np.tile([0, 1, 2], 10))
    recipe = Recipe(context=(), limb_stairs=limb_stairs)
    wrist = (thigh[0] - 6, thigh[1], thigh[2])
    _, history = fit_features(waist, {"thigh": thigh, "wrist": wrist}, recipe, seed=0, input_shape=(WINDOW, 9))
    assert history["train_windows"] == taught
    # the placement estimate learns where the device is from every moving window, stairs included
    assert history["placement_estimate"] is not None
