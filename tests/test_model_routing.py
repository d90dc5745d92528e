"""Per-device model routing without sockets: the router's rule, the worker
core serving several models (one batch per model, a display per model's
classes), and the registry folder's change detection."""

from __future__ import annotations

import numpy as np
import pytest

from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
from harstream.stream.core.model_routing import (
    ModelRouter,
    ServedModel,
    declared_placement,
    personal_model,
    personal_over,
)
from harstream.stream.core.posture import N_MOTION, PersonalHead
from harstream.stream.core.protocol import SampleBatch, encode_samples
from harstream.stream.core.worker import StreamCore, WorkerConfig
from harstream.stream.personal.registry import FolderWatch, personal_model_name, personal_model_path

PERSONAL = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STILL")


def router(any_model: bool = True) -> ModelRouter:
    waist = ServedModel("waist", "waist", "hapt@1", ACTIVITIES, (1, 2, 4))
    anywhere = ServedModel("any", "any", "free@2", PLACEMENT_FREE, (1, 2, 4)) if any_model else None
    return ModelRouter(waist, anywhere)


def send(core, device, seq, n=128, meta=None, now=0.0):
    samples = np.random.default_rng(seq).normal(0, 0.3, (n, 6)).astype(np.float32)
    core.ingest(encode_samples(SampleBatch(device, seq, 1000.0 + seq / 50, samples, meta=meta or {})), now)


def label_all(core) -> list:
    """Run every waiting batch through a model that is sure of its first class."""
    out = []
    while core.waiting:
        x, taken = core.take_batch()
        n = len(taken[0].served.output_classes)
        out += core.finish_batch(taken, np.tile(np.eye(n)[0] * 0.9 + 0.1 / n, (len(x), 1)), now=1.0)
    return out


# ------------------------------------------------------------------ the rule


def test_replays_are_served_at_the_waist_and_gateway_phones_anywhere():
    r = router()
    assert r.route("subject-9").mode == "waist"
    assert r.route("phone:pixel").mode == "any"


def test_a_phone_that_declares_the_waist_is_served_by_the_waist_model():
    assert router().route("phone:pixel", placement="waist").mode == "waist"


def test_without_a_placement_free_model_phones_are_served_at_the_waist():
    assert router(any_model=False).route("phone:pixel").mode == "waist"


def test_a_personal_model_wins_over_every_other_rule_and_its_removal_undoes_it():
    r = router()
    r.set_personal(personal_model("phone:pixel", "personal@3", PERSONAL))
    assert r.route("phone:pixel", placement="waist").mode == "personal"
    assert r.route("phone:other").mode == "any"
    assert r.drop_personal("phone:pixel") and r.route("phone:pixel").mode == "any"
    assert r.version == 2


def test_an_unknown_declared_placement_is_refused_with_its_value():
    with pytest.raises(ValueError, match="'ankle'"):
        declared_placement({"placement": "ankle"})


def test_the_router_refuses_a_model_in_the_wrong_slot():
    with pytest.raises(ValueError, match="waist mode"):
        ModelRouter(ServedModel("any", "any", "free@2", PLACEMENT_FREE))


# ---------------------------------------------------------- the worker core


def test_one_core_serves_each_device_with_its_own_models_classes():
    core = StreamCore(ACTIVITIES, "hapt@1", WorkerConfig(max_batch=100), router=router())
    send(core, "replay-1", 0)
    send(core, "phone:p1", 0)
    got = {p.device: p for p in label_all(core)}
    assert (got["replay-1"].mode, got["replay-1"].model, got["replay-1"].classes) == (
        "waist",
        "hapt@1",
        list(ACTIVITIES),
    )
    assert (got["phone:p1"].mode, got["phone:p1"].model, got["phone:p1"].classes) == (
        "any",
        "free@2",
        list(PLACEMENT_FREE),
    )
    assert len(got["phone:p1"].probs) == 4 and got["phone:p1"].label == "WALKING"


def test_a_batch_holds_windows_of_one_model_only_and_the_oldest_model_goes_first():
    core = StreamCore(ACTIVITIES, "hapt@1", WorkerConfig(max_batch=100), router=router())
    send(core, "phone:p1", 0, now=0.0)
    send(core, "replay-1", 0, now=0.5)
    send(core, "phone:p2", 0, now=1.0)
    first = core.take_batch()[1]
    second = core.take_batch()[1]
    assert [w.device for w in first] == ["phone:p1", "phone:p2"]
    assert [w.device for w in second] == ["replay-1"]


def test_a_batch_takes_context_stacks_shaped_for_its_model():
    waist = ServedModel("waist", "waist", "hapt@1", ACTIVITIES, ())
    anywhere = ServedModel("any", "any", "free@2", PLACEMENT_FREE, (1, 2, 4))
    core = StreamCore(ACTIVITIES, "hapt@1", router=ModelRouter(waist, anywhere))
    send(core, "replay-1", 0, now=0.0)
    send(core, "phone:p1", 0, now=0.1)
    assert core.take_batch()[0].shape == (1, 128, 9)
    assert core.take_batch()[0].shape == (1, 4, 128, 9)


def test_a_new_personal_model_moves_a_streaming_device_on_its_next_message():
    r = router()
    core = StreamCore(ACTIVITIES, "hapt@1", router=r)
    send(core, "phone:p1", 0)
    assert label_all(core)[0].mode == "any"
    r.set_personal(personal_model("phone:p1", "personal@3", PERSONAL, context_steps=(1, 2, 4)))
    send(core, "phone:p1", 128)
    after = label_all(core)
    assert {p.mode for p in after} == {"personal"} and after[0].classes == list(PERSONAL)
    assert core.totals["mode_switches"] == 1


def test_a_switch_keeps_the_window_context_when_the_context_steps_agree():
    r = router()
    core = StreamCore(ACTIVITIES, "hapt@1", router=r)
    send(core, "phone:p1", 0, n=320)  # windows 0..3: the context holds history
    context = core.devices["phone:p1"].windows.context
    r.set_personal(personal_model("phone:p1", "personal@3", PERSONAL, context_steps=(1, 2, 4)))
    core.reroute_all()
    assert core.devices["phone:p1"].windows.context is context


def test_a_switch_to_other_context_steps_starts_the_context_afresh():
    r = router()
    core = StreamCore(ACTIVITIES, "hapt@1", router=r)
    send(core, "phone:p1", 0, n=320)
    r.set_personal(personal_model("phone:p1", "personal@3", PERSONAL, context_steps=(1,)))
    core.reroute_all()
    context = core.devices["phone:p1"].windows.context
    assert context.steps == (1,) and context.seen == 0
    send(core, "phone:p1", 320, n=64)
    x, taken = core.take_batch()
    assert x.shape[1:] == (2, 128, 9) and taken[-1].served.mode == "personal"


def test_a_window_made_before_a_switch_is_labelled_by_its_own_model():
    r = router()
    core = StreamCore(ACTIVITIES, "hapt@1", router=r)
    send(core, "phone:p1", 0)
    core.flush()  # the window waits for the any model
    r.set_personal(personal_model("phone:p1", "personal@3", PERSONAL, context_steps=(1, 2, 4)))
    core.reroute_all()
    (p,) = label_all(core)
    assert (p.mode, p.classes) == ("any", list(PLACEMENT_FREE))


def test_an_unknown_declared_placement_is_counted_and_the_samples_kept():
    core = StreamCore(ACTIVITIES, "hapt@1", router=router())
    send(core, "phone:p1", 0, meta={"placement": ["waist"]})
    (p,) = label_all(core)
    assert p.mode == "any" and core.totals["placement_ignored"] == 1 and not core.drops


def test_a_declared_placement_on_a_later_message_moves_the_device():
    core = StreamCore(ACTIVITIES, "hapt@1", router=router())
    send(core, "phone:p1", 0)
    send(core, "phone:p1", 128, meta={"placement": "waist"})
    assert core.devices["phone:p1"].served.mode == "waist"


def _with_bare() -> ModelRouter:
    r = router()
    return ModelRouter(r.waist, r.any, ServedModel("any:no-gyro", "any", "free0@3", PLACEMENT_FREE, (1, 2, 4)))


def test_a_phone_without_a_gyroscope_is_served_by_the_model_taught_without_one():
    core = StreamCore(ACTIVITIES, "hapt@1", router=_with_bare())
    send(core, "phone:cheap", 0, meta={"gyro": False})
    send(core, "phone:pixel", 0)
    got = {p.device: p.model for p in label_all(core)}
    assert got == {"phone:cheap": "free0@3", "phone:pixel": "free@2"}


def test_a_gyroscope_that_appears_moves_the_phone_back_to_the_model_with_one():
    core = StreamCore(ACTIVITIES, "hapt@1", router=_with_bare())
    send(core, "phone:cheap", 0, meta={"gyro": False})
    assert {p.model for p in label_all(core)} == {"free0@3"}
    send(core, "phone:cheap", 1000)  # the gateway's new segment, now with the gyroscope
    assert {p.model for p in label_all(core)} == {"free@2"}
    assert core.totals["mode_switches"] == 1


def test_without_a_model_taught_without_the_gyroscope_such_a_phone_gets_the_any_model():
    assert router().route("phone:cheap", gyro=False).key == "any"
    with pytest.raises(ValueError, match="its own key"):
        ModelRouter(router().waist, router().any, router().any)


def test_stats_count_devices_per_mode_and_list_the_models_served():
    core = StreamCore(ACTIVITIES, "hapt@1", router=router())
    for device in ("replay-1", "phone:a", "phone:b"):
        send(core, device, 0)
    stats = core.stats(now=1.0)
    assert stats.modes == {"waist": 1, "any": 2}
    assert [(m["mode"], m["devices"]) for m in stats.models] == [("waist", 1), ("any", 2)]


def test_a_core_without_a_router_serves_its_one_model_as_before():
    core = StreamCore(ACTIVITIES, "m")
    send(core, "phone:p1", 0)
    (p,) = label_all(core)
    assert (p.mode, p.model, p.classes) == ("waist", "m", list(ACTIVITIES))


# ------------------------------------------- personal heads in the shared batch


def head_for(device: str, base: str = "free@2") -> PersonalHead:
    """A calibrated device whose sitting is the screen up, standing the top up."""
    return PersonalHead(
        device,
        "personal@9",
        base,
        ("SITTING", "STANDING"),
        {"SITTING": [[0.0, 0.0, 1.0]], "STANDING": [[0.0, 1.0, 0.0]]},
        turns=("top_down",),
        motion_mean=[[-3.0] * N_MOTION, [-3.0] * N_MOTION],
        motion_scale=[1.0] * N_MOTION,
        margins=[[0.0, 2.0], [2.0, 0.0]],
        calibrated={"WALKING", "SITTING", "STANDING"},
    )


def send_still(core, device, seq, down, n=128, now=0.0):
    """A still device whose gravity points along ``down`` (g, device frame)."""
    samples = np.zeros((n, 6), np.float32)
    samples[:, :3] = down
    core.ingest(encode_samples(SampleBatch(device, seq, 1000.0 + seq / 50, samples)), now)


def still_everywhere(core) -> list:
    """Run every batch through a shared model that says STILL, counting model calls."""
    out, calls = [], 0
    while core.waiting:
        x, taken = core.take_batch()
        calls += 1
        out += core.finish_batch(taken, np.tile([0.0, 0.0, 0.0, 1.0], (len(x), 1)), now=1.0)
    return out, calls


def test_calibrated_devices_ride_in_the_shared_models_batch_and_get_their_own_classes():
    r = router()
    r.set_personal(personal_over(r.any, head_for("phone:cal")))
    core = StreamCore(ACTIVITIES, "hapt@1", WorkerConfig(max_batch=100), router=r)
    send_still(core, "phone:cal", 0, [0.0, 1.0, 0.0])
    send_still(core, "phone:plain", 0, [0.0, 1.0, 0.0])
    got, calls = still_everywhere(core)
    assert calls == 1  # one call of the shared model for both devices
    by_device = {p.device: p for p in got}
    assert by_device["phone:plain"].classes == list(PLACEMENT_FREE) and by_device["phone:plain"].label == "STILL"
    mine = by_device["phone:cal"]
    assert (mine.mode, mine.label) == ("personal", "STANDING")
    assert mine.classes == ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "STILL"]
    assert mine.model == "personal@9" and abs(sum(mine.probs) - 1) < 1e-6


@pytest.mark.parametrize(
    "down, shown",
    [
        ([0.0, -1.0, 0.0], "STANDING"),  # top down: a turn the head allows
        ([0.0, 0.0, 1.0], "SITTING"),
        ([1.0, 0.0, 0.0], "STILL"),  # far from every calibrated posture
        ([0.0, 0.72, 0.69], "STILL"),  # halfway between them: not sure
    ],
)
def test_a_calibrated_device_is_shown_a_posture_only_where_its_parameters_are_sure(down, shown):
    r = router()
    r.set_personal(personal_over(r.any, head_for("phone:cal")))
    core = StreamCore(ACTIVITIES, "hapt@1", router=r)
    send_still(core, "phone:cal", 0, down)
    (p,), _ = still_everywhere(core)
    assert p.label == shown


def test_a_thousand_calibrated_devices_share_one_model_call_per_batch():
    r = router()
    for i in range(1000):
        r.set_personal(personal_over(r.any, head_for(f"phone:{i}")))
    core = StreamCore(ACTIVITIES, "hapt@1", WorkerConfig(max_batch=64), router=r)
    for i in range(128):
        send_still(core, f"phone:{i}", 0, [0.0, 0.0, 1.0])
    got, calls = still_everywhere(core)
    assert calls == 2 and {p.label for p in got} == {"SITTING"}
    stats = core.stats(2.0)
    assert [m for m in stats.models if m["mode"] == "personal"] == [
        {
            "key": "personal",
            "mode": "personal",
            "model": "1000 personal models over free@2",
            "classes": [],
            "devices": 128,
        }
    ]


# ------------------------------------------------------------ the registry


def test_a_model_file_is_loaded_once_it_stopped_changing():
    watch = FolderWatch()
    assert watch.update({"a": (1, 10)}) == ([], [])
    assert watch.update({"a": (2, 20)}) == ([], [])  # still being written
    assert watch.update({"a": (2, 20)}) == (["a"], [])


def test_a_changed_model_file_is_loaded_again_and_a_removed_one_reported():
    watch = FolderWatch()
    watch.update({"a": (1, 10)})
    watch.update({"a": (1, 10)})
    watch.update({"a": (3, 10)})
    assert watch.update({"a": (3, 10)}) == (["a"], [])
    assert watch.update({}) == ([], ["a"])


def test_personal_model_names_cannot_leave_the_registry_folder(tmp_path):
    assert personal_model_path(tmp_path, "..").parent == tmp_path
    assert "/" not in personal_model_name("phone:a") and personal_model_name("phone:a") != personal_model_name(
        "phone_a"
    )
