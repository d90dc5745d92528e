"""Stairs only on evidence: the worker core's published labels for devices in any/personal mode."""

from __future__ import annotations

import numpy as np
import pytest

from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
from harstream.stream.core.barometer import pressure_hpa
from harstream.stream.core.model_routing import ModelRouter, ServedModel, personal_model
from harstream.stream.core.protocol import SampleBatch, encode_samples
from harstream.stream.core.worker import StreamCore

T0 = 1_700_000_000.0
DOWNSTAIRS_PROBS = [0.1, 0.05, 0.8, 0.05]  # what a thigh's flat walk looks like to the waist-taught model


def _core(**any_kw) -> StreamCore:
    waist = ServedModel("waist", "waist", "waist@1", ACTIVITIES)
    anywhere = ServedModel("any", "any", "any@1", PLACEMENT_FREE, **any_kw)
    return StreamCore(ACTIVITIES, "waist@1", router=ModelRouter(waist, anywhere))


def _walk(start: int, n: int) -> np.ndarray:
    """Samples ``start`` .. ``start + n`` of a walk, the phone upright in a
    pocket (50 Hz; acceleration in g with gravity along y, rotation rate in
    rad/s): a 0.3 g bounce at 1.8 steps a second, a sway at the stride."""
    t = (start + np.arange(n)) / 50.0
    step = 2 * np.pi * 1.8 * t
    acc = [0.1 * np.sin(step / 2), 1 + 0.3 * np.sin(step) + 0.1 * np.sin(2 * step + 0.5), 0.15 * np.sin(step + 1)]
    gyro = [0.4 * np.sin(step / 2), 0.2 * np.sin(step), 0.6 * np.sin(step / 2 + 1)]
    return np.column_stack(acc + gyro).astype(np.float32)


def _run(core: StreamCore, device: str, seconds: int, probs, climb_m_s: float | None = None, meta=None) -> list:
    """Stream ``seconds`` of a walk (with a barometer climbing ``climb_m_s``
    if given) in 1-s messages; every window labelled ``probs``."""
    out = []
    for s in range(seconds):
        pressure = None
        if climb_m_s is not None:
            t = s + np.arange(0, 1, 0.1)
            pressure = np.column_stack([T0 + t, pressure_hpa(climb_m_s * t, 1005.0)])
        batch = SampleBatch(device, s * 50, T0 + s, _walk(s * 50, 50), meta=meta or {}, pressure=pressure)
        core.ingest(encode_samples(batch), now=float(s))
        while core.waiting:
            x, taken = core.take_batch()
            n = len(taken[0].served.classes)
            p = np.tile(np.asarray(list(probs) + [0.0] * (n - len(probs))), (len(taken), 1))
            out.extend(core.finish_batch(taken, p, now=float(s)))
    return out


def test_a_phone_without_a_barometer_is_shown_walking_where_the_model_says_stairs():
    core = _core()
    got = _run(core, "phone:page-1", 30, DOWNSTAIRS_PROBS)
    assert got and {p.label for p in got} == {"WALKING"} and {p.smoothed for p in got} == {"WALKING"}
    assert all(p.smoothed_probs[2] == 0.0 for p in got)  # the bars agree with the label
    assert core.totals["stairs_withheld"] > 0


def test_measured_climbing_keeps_stairs_and_names_the_direction_the_barometer_measured():
    core = _core()
    got = _run(core, "phone:pocket", 40, DOWNSTAIRS_PROBS, climb_m_s=0.25)
    late = [p.smoothed for p in got if p.t_end > T0 + 12]  # the barometer needs its span
    assert late and set(late) == {"WALKING_UPSTAIRS"}
    down = _run(_core(), "phone:pocket", 40, [0.8, 0.1, 0.05, 0.05], climb_m_s=-0.25)
    assert {p.smoothed for p in down if p.t_end > T0 + 12} == {"WALKING_DOWNSTAIRS"}


def test_level_walking_measured_by_the_barometer_is_walking():
    got = _run(_core(), "phone:pocket", 40, DOWNSTAIRS_PROBS, climb_m_s=0.0)
    assert {p.smoothed for p in got} == {"WALKING"}


def test_stairs_the_device_calibrated_are_kept_without_a_barometer():
    core = _core()
    classes = (*PLACEMENT_FREE[:3], "SITTING", "STILL")
    core.router.set_personal(
        personal_model("phone:cal", "p@1", classes, calibrated=frozenset({"WALKING", "WALKING_DOWNSTAIRS"}))
    )
    got = _run(core, "phone:cal", 30, [0.1, 0.05, 0.8, 0.0, 0.05])
    assert got and {p.smoothed for p in got} == {"WALKING_DOWNSTAIRS"}
    assert {p.mode for p in got} == {"personal"}


def test_a_calibrated_walk_overrides_the_models_stairs_even_on_a_waist_like_gait():
    core = _core(waist_likeness=lambda windows: np.ones(len(windows)))
    classes = (*PLACEMENT_FREE[:3], "SITTING", "STILL")
    core.router.set_personal(personal_model("phone:walk", "p@1", classes, calibrated=frozenset({"WALKING"})))
    got = _run(core, "phone:walk", 30, [0.1, 0.05, 0.8, 0.0, 0.05])
    assert {p.smoothed for p in got} == {"WALKING"}


def test_measured_climbing_is_stairs_even_after_a_calibrated_walk():
    core = _core()
    classes = (*PLACEMENT_FREE[:3], "SITTING", "STILL")
    core.router.set_personal(personal_model("phone:walk", "p@1", classes, calibrated=frozenset({"WALKING"})))
    got = _run(core, "phone:walk", 40, [0.8, 0.1, 0.05, 0.0, 0.05], climb_m_s=0.3)
    assert {p.smoothed for p in got if p.t_end > T0 + 12} == {"WALKING_UPSTAIRS"}


@pytest.mark.parametrize("likeness, shown", [(0.9, "WALKING_DOWNSTAIRS"), (0.1, "WALKING")])
def test_a_gait_the_model_finds_waist_like_may_keep_its_stairs(likeness, shown):
    core = _core(waist_likeness=lambda windows: np.full(len(windows), likeness))
    got = _run(core, "phone:w", 30, DOWNSTAIRS_PROBS)
    assert {p.smoothed for p in got} == {shown}


def test_a_phone_declaring_the_waist_keeps_the_hapt_models_stairs():
    core = _core()
    got = _run(core, "phone:belt", 30, [0.1, 0.05, 0.8, 0.0, 0.0, 0.05], meta={"placement": "waist"})
    assert {p.mode for p in got} == {"waist"} and {p.label for p in got} == {"WALKING_DOWNSTAIRS"}


def test_refused_pressure_is_counted_by_reason_and_the_device_is_still_served():
    core = _core()
    bad = np.array([[T0 + 0.1, 1005.0], [T0 + 0.2, 1500.0], [T0 + 0.05, 1005.0]])
    core.ingest(encode_samples(SampleBatch("phone:x", 0, T0, np.zeros((50, 6), np.float32), pressure=bad)), 0.0)
    again = np.array([[T0 + 0.1, 1005.0], [T0 + 1.2, 1005.0]])  # the first is no later than what was taken
    core.ingest(encode_samples(SampleBatch("phone:x", 50, T0 + 1, np.zeros((50, 6), np.float32), pressure=again)), 1.0)
    assert core.drops["pressure_range"] == 1 and core.drops["pressure_order"] == 2
    assert core.totals["samples"] == 100


def test_the_gait_score_is_one_call_for_every_devices_windows_of_a_flush():
    calls = []

    def score(windows):
        calls.append(len(windows))
        return np.full(len(windows), 0.9)

    core = _core(waist_likeness=score)
    for device in ("phone:a", "phone:b", "phone:c"):
        core.ingest(encode_samples(SampleBatch(device, 0, T0, np.zeros((128, 6), np.float32))), now=0.0)
    assert core.waiting == 3
    assert calls == [3]
    assert [w.waist_likeness for w in core.pending] == [0.9, 0.9, 0.9]


def test_a_failing_gait_score_is_counted_and_the_windows_are_served_without_gait_evidence():
    def broken(windows):
        raise RuntimeError("boom")

    core = _core(waist_likeness=broken)
    got = _run(core, "phone:w", 10, DOWNSTAIRS_PROBS)
    assert got and {p.smoothed for p in got} == {"WALKING"}
    assert core.drops["internal"] >= 1


def _judged(likeness: list[float]) -> list[str]:
    """What a device without a barometer is shown for windows the model calls
    downstairs, each window's gait as waist-like as ``likeness`` says."""
    from harstream.stream.core.stairs import StairsEvidence

    ev = StairsEvidence()
    shown = []
    for i, like in enumerate(likeness):
        t = T0 + 1.28 * i
        ev.judge("WALKING_DOWNSTAIRS", DOWNSTAIRS_PROBS, PLACEMENT_FREE, t, waist_likeness=like)  # the raw label
        shown.append(ev.judge("WALKING_DOWNSTAIRS", DOWNSTAIRS_PROBS, PLACEMENT_FREE, t, waist_likeness=like)[0])
    return shown


def test_one_limb_like_window_of_a_waist_walk_keeps_its_stairs():
    assert _judged([0.95] * 10 + [0.2] + [0.95] * 3) == ["WALKING_DOWNSTAIRS"] * 14


def test_one_waist_like_window_of_a_limb_walk_claims_no_stairs():
    assert _judged([0.05] * 10 + [0.8] + [0.05] * 3) == ["WALKING"] * 14


def test_the_gait_evidence_is_the_windows_own_until_the_device_has_a_few_moving_windows():
    assert _judged([0.8, 0.2, 0.8]) == ["WALKING_DOWNSTAIRS", "WALKING", "WALKING_DOWNSTAIRS"]


def test_still_windows_do_not_count_as_gait_evidence():
    """A still limb reads waist-like (nothing swings): it must not vouch for the next walk's stairs."""
    from harstream.stream.core.stairs import StairsEvidence

    ev = StairsEvidence()
    for i in range(30):
        ev.judge("STILL", [0.0, 0.0, 0.0, 1.0], PLACEMENT_FREE, T0 + i, waist_likeness=0.99)
    shown = [
        ev.judge("WALKING_DOWNSTAIRS", DOWNSTAIRS_PROBS, PLACEMENT_FREE, T0 + 30 + i, waist_likeness=0.05)[0]
        for i in range(8)
    ]
    assert shown == ["WALKING"] * 8
