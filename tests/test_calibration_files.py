"""Personal-model files in the worker's registry folder: nothing a file can
contain takes the worker down, every refusal names the file and the reason,
and a removed model is freed. Real files, the real registry and router."""

from __future__ import annotations

import gc
import json
import os
import weakref

import numpy as np
import pytest

from harstream.models.personal_serving import load_personal_model
from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
from harstream.stream.core.model_routing import ModelRouter, ServedModel
from harstream.stream.core.posture import N_MOTION, PersonalHead
from harstream.stream.personal.model_file import MAX_BYTES, head_to_json, read_personal_file, write_personal_file
from harstream.stream.personal.registry import PersonalRegistry

BASE = ServedModel("any", "any", "any-svm@12345678", PLACEMENT_FREE, (1, 2, 4))


def good_doc(device: str = "phone:a") -> dict:
    head = PersonalHead(
        device,
        "p",
        BASE.model_id,
        ("SITTING", "STANDING"),
        {"SITTING": [[0.0, 0.0, 1.0]], "STANDING": [[0.0, 1.0, 0.0]]},
        turns=("top_down",),
        motion_mean=[[-3.0] * N_MOTION, [-2.0] * N_MOTION],
        motion_scale=[0.5] * N_MOTION,
        margins=[[0.0, 2.0], [2.0, 0.0]],
        calibrated={"SITTING", "STANDING", "WALKING"},
    )
    return head_to_json(head)


class Folder:
    """A registry folder watched by a real registry feeding a real router."""

    def __init__(self, path):
        self.path = path
        self.router = ModelRouter(ServedModel("waist", "waist", "hapt@1", ACTIVITIES), BASE)
        self.registry = PersonalRegistry(path, lambda p: load_personal_model(p, BASE), interval=0.0)
        self.now = 0.0

    def settle(self) -> list:
        """Two looks (a file is loaded once it stayed unchanged for one) and
        every load that waits."""
        events = []
        for _ in range(2):
            self.now += 1.0
            events += self.registry.poll(self.now, self.router)
        while self.registry.stats()["waiting"]:
            self.now += 1.0
            events += self.registry.poll(self.now, self.router)
        return events


@pytest.fixture
def folder(tmp_path):
    return Folder(tmp_path)


def write(path, doc) -> None:
    path.write_text(json.dumps(doc))


def test_a_good_file_serves_its_device_over_the_shared_model(folder):
    write_personal_file(folder.path / "a.personal.json", good_doc())
    (event,) = folder.settle()
    assert (event.kind, event.device) == ("loaded", "phone:a")
    served = folder.router.route("phone:a")
    assert (
        served.mode == "personal"
        and served.key == BASE.key
        and served.head.calibrated
        == {
            "SITTING",
            "STANDING",
            "WALKING",
        }
    )


def edited(**changes) -> dict:
    doc = good_doc()
    for key, value in changes.items():
        doc[key] = value
    return doc


@pytest.mark.parametrize(
    "doc, words",
    [
        (edited(format="keras"), "format 'keras'"),
        (edited(prototypes={"SITTING": [[0.0, 0.0, 1.0]] * 5000, "STANDING": [[0, 1, 0]]}), "1..16 directions"),
        (
            edited(motion_mean=[[1e308] + [0.0] * (N_MOTION - 1), [0.0] * N_MOTION]),
            "motion_mean: values must be finite",
        ),
        (edited(margins=[[0.0, -1.0], [2.0, 0.0]]), "margins: values must be finite and within"),
        (edited(margins=[[0.0]]), "margins: shape (1, 1), expected (2, 2)"),
        (edited(motion_scale=[0.5] * 400), "motion_scale: shape (400,)"),
        (edited(postures=["SITTING", "DANCING"]), "'DANCING' is not one of"),
        (
            edited(prototypes={"SITTING": [[0.0, 0.0, 5.0]], "STANDING": [[0, 1, 0]]}),
            "values must be finite and within",
        ),
        (edited(device="x" * 500), "device:"),
        (edited(turns=["upside"]), "'upside' is not one of"),
        (edited(settings={"max_angle": float("nan"), "sharpness": 1, "motion_weight": 1}), "max_angle"),
        (edited(base_model=None), "base_model: missing"),
    ],
)
def test_a_file_whose_parameters_are_out_of_shape_or_range_is_refused_by_name(folder, doc, words):
    text = json.dumps(doc)
    assert len(text) <= MAX_BYTES  # within the size limit: the parameters' checks refuse it
    (folder.path / "bad.personal.json").write_text(text)
    (event,) = folder.settle()
    assert event.kind == "refused" and event.name == "bad.personal.json"
    assert words in folder.registry.stats()["refused"]["bad.personal.json"]
    assert folder.router.personal == {}


@pytest.mark.parametrize(
    "content, words",
    [
        (b"[" * 200_000 + b"]" * 200_000, "over 262,144 bytes"),  # past the size limit: never read
        (b"[" * 100_000 + b"]" * 100_000, "not a JSON personal model"),  # nested deeper than the parser goes
        (b"1" * 100_000, "not a JSON personal model"),  # a number of 100,000 digits
        (b'{"format": "harstream-personal/1", "device": "\xff"}', "not a JSON personal model"),
        (b"\x00" * 1000, "not a JSON personal model"),
    ],
)
def test_no_file_content_takes_the_loader_down(folder, content, words):
    (folder.path / "hostile.personal.json").write_bytes(content)
    (event,) = folder.settle()
    assert event.kind == "refused" and words in event.reason


def test_a_huge_sparse_file_is_refused_unread_by_its_size(folder):
    with open(folder.path / "bomb.personal.json", "wb") as f:
        f.truncate(8 * 1024**3)  # 8 GiB of nothing, within a second
    (event,) = folder.settle()
    assert event.kind == "refused" and f"bomb.personal.json: over {MAX_BYTES:,} bytes; refused unread" in event.reason


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom"])
def test_a_symlink_to_a_device_file_is_refused_by_name_not_ignored(folder, target):
    (folder.path / "endless.personal.json").symlink_to(target)
    (event,) = folder.settle()
    assert (event.kind, event.name) == ("refused", "endless.personal.json")
    assert "not a regular file" in event.reason
    assert folder.registry.stats()["refusals"] == 1


def test_a_symlink_to_a_good_file_is_refused_too(folder, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "a.personal.json"
    write_personal_file(elsewhere, good_doc())
    (folder.path / "a.personal.json").symlink_to(elsewhere)
    (event,) = folder.settle()
    assert event.kind == "refused" and "a symlink" in event.reason


def test_a_fifo_is_refused_without_waiting_for_a_writer(folder):
    os.mkfifo(folder.path / "pipe.personal.json")
    (event,) = folder.settle()
    assert event.kind == "refused" and "not a regular file" in event.reason


def test_a_folder_named_like_a_model_is_refused_by_name(folder):
    (folder.path / "odd.personal.json").mkdir()
    (event,) = folder.settle()
    assert event.kind == "refused" and event.name == "odd.personal.json"


def test_a_second_file_for_a_served_device_is_refused_and_the_first_keeps_serving(folder):
    write_personal_file(folder.path / "a.personal.json", good_doc())
    folder.settle()
    write_personal_file(folder.path / "b.personal.json", good_doc())
    (event,) = folder.settle()
    assert event.kind == "refused" and "already served by a.personal.json" in event.reason
    assert folder.router.route("phone:a").mode == "personal"


def test_a_removed_model_is_freed_and_its_device_goes_back_to_any_mode(folder):
    path = write_personal_file(folder.path / "a.personal.json", good_doc())
    folder.settle()
    gone = weakref.ref(folder.router.personal["phone:a"].head)
    path.unlink()
    (event,) = folder.settle()
    assert event.kind == "removed" and folder.router.route("phone:a").mode == "any"
    gc.collect()
    assert gone() is None


def test_rewriting_a_model_many_times_keeps_one_in_memory(folder):
    path = folder.path / "a.personal.json"
    heads = []
    for i in range(50):
        doc = good_doc()
        doc["motion_mean"][0][0] = -3.0 + i / 100  # a new calibration each time
        write_personal_file(path, doc)
        os.utime(path, ns=(i * 10**9, i * 10**9))
        folder.settle()
        heads.append(weakref.ref(folder.router.personal["phone:a"].head))
    gc.collect()
    assert sum(h() is not None for h in heads) == 1
    assert folder.registry.stats()["loads"] == 50


def test_a_file_reads_back_as_the_parameters_written(tmp_path):
    doc = good_doc()
    head = read_personal_file(write_personal_file(tmp_path / "a.personal.json", doc))
    assert head.postures == ("SITTING", "STANDING") and head.turns == ("none", "top_down")
    np.testing.assert_allclose(head.margins, [[0.0, 2.0], [2.0, 0.0]])
    assert head.model_id.startswith("personal@") and len(head.model_id) == len("personal@") + 8


def test_a_device_that_calibrated_only_walking_reads_back_and_shows_still_for_postures(tmp_path):
    from harstream.stream.core.posture import apply_heads

    head = PersonalHead("phone:w", "p", BASE.model_id, (), {}, calibrated={"WALKING"})
    back = read_personal_file(write_personal_file(tmp_path / "w.personal.json", head_to_json(head)))
    assert back.classes == ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "STILL")
    assert back.calibrated == {"WALKING"}
    cues = np.zeros((1, 3 + N_MOTION), np.float32)
    cues[0, 2] = 1.0
    assert back.pick(apply_heads(np.array([[0.1, 0.0, 0.0, 0.9]]), cues, [back]))[0].tolist() == [0.1, 0.0, 0.0, 0.9]


def test_a_model_whose_postures_need_the_shared_models_features_is_refused_where_it_is_served_whole(folder):
    doc = good_doc()
    doc.update(
        feature_mean=[0.0] * 5, feature_scale=[1.0] * 5, feature_coef=[[1.0, -1.0]] * 5, feature_intercept=[0, 0]
    )
    write_personal_file(folder.path / "a.personal.json", doc)
    (event,) = folder.settle()  # BASE has no feature stage (a model served whole)
    assert event.kind == "refused" and "need the shared model's features" in event.reason


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(feature_mean=[0.0] * 5000, feature_scale=[1.0] * 5000, feature_coef=[[1, 1]] * 5000), "1..2048 features"),
        (dict(feature_mean=[0.0] * 5, feature_scale=[0.0] * 5, feature_coef=[[1, 1]] * 5), "feature_scale"),
        (dict(feature_mean=[0.0] * 5, feature_scale=[1.0] * 5, feature_coef=[[1, 1, 1]] * 5), "feature_coef: shape"),
    ],
)
def test_a_feature_discriminant_out_of_shape_or_range_is_refused_by_name(folder, changes, words):
    doc = good_doc()
    doc.update(feature_intercept=[0.0, 0.0], **changes)
    (folder.path / "d.personal.json").write_text(json.dumps(doc))
    (event,) = folder.settle()
    assert event.kind == "refused" and words in event.reason


def test_a_model_fitted_on_another_feature_width_is_refused_by_name_and_counted(tmp_path):
    staged = ServedModel(
        "any", "any", BASE.model_id, PLACEMENT_FREE, (1, 2, 4), features=lambda x: np.zeros((len(x), 7), np.float32)
    )
    folder = Folder(tmp_path)
    folder.registry = PersonalRegistry(tmp_path, lambda p: load_personal_model(p, staged), interval=0.0)
    for name, width in (("wide.personal.json", 5), ("fits.personal.json", 7)):
        doc = good_doc("phone:" + name[0])
        doc.update(
            feature_mean=[0.0] * width,
            feature_scale=[1.0] * width,
            feature_coef=[[1.0, -1.0]] * width,
            feature_intercept=[0.0, 0.0],
        )
        write_personal_file(tmp_path / name, doc)
    events = {e.name: e for e in folder.settle()}
    assert events["fits.personal.json"].kind == "loaded"
    refused = events["wide.personal.json"]
    assert refused.kind == "refused" and "take 5 features of the shared model, but" in refused.reason
    assert "gives 7 a window" in refused.reason
    assert folder.registry.stats()["refusals_by_reason"] == {"feature_width": 1}
    assert folder.router.route("phone:w").mode != "personal"  # never served: not STILL in silence


def test_a_walking_anchor_survives_the_file_and_a_file_without_one_still_loads(tmp_path):
    plain = read_personal_file(write_personal_file(tmp_path / "old.personal.json", good_doc()))
    assert len(plain.walk_down) == 0  # a file written before the anchor: served without it
    doc = good_doc()
    doc.update(walk_down=[1.0, 0.0, 0.0], walk_angle=[[85.0, 12.0], [5.0, 12.0]])
    doc["settings"]["angle_weight"] = 2.0
    back = read_personal_file(write_personal_file(tmp_path / "new.personal.json", doc))
    assert list(back.walk_down) == [1.0, 0.0, 0.0] and back.walk_angle == [[85.0, 12.0], [5.0, 12.0]]
    assert back.angle_weight == 2.0
    assert head_to_json(back)["walk_angle"] == [[85.0, 12.0], [5.0, 12.0]]


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(walk_down=[3.0, 0.0, 0.0], walk_angle=[[85.0, 12.0], [5.0, 12.0]]), "walk_down: values must be"),
        (dict(walk_down=[0.5, 0.0, 0.0], walk_angle=[[85.0, 12.0], [5.0, 12.0]]), "walk_down: must be a unit vector"),
        (dict(walk_down=[1.0, 0.0, 0.0], walk_angle=[[85.0, 12.0]]), "walk_angle: shape (1, 2), expected (2, 2)"),
        (dict(walk_down=[1.0, 0.0, 0.0], walk_angle=[[85.0, 0.0], [5.0, 12.0]]), "each spread must be at least"),
    ],
)
def test_a_walking_anchor_out_of_shape_or_range_is_refused_by_name(folder, changes, words):
    doc = good_doc()
    doc.update(**changes)
    doc["settings"]["angle_weight"] = 1.0
    (folder.path / "w.personal.json").write_text(json.dumps(doc))
    (event,) = folder.settle()
    assert event.kind == "refused" and words in event.reason


def test_abstaining_on_an_overlapping_angle_survives_the_file_and_older_files_keep_naming(tmp_path):
    doc = good_doc()
    doc.update(walk_down=[1.0, 0.0, 0.0], walk_angle=[[85.0, 12.0], [5.0, 12.0]])
    doc["settings"]["angle_weight"] = 1.0
    old = read_personal_file(write_personal_file(tmp_path / "old.personal.json", doc))
    assert old.angle_abstain is False  # written before the setting: serves as it always did
    doc["settings"]["angle_abstain"] = True
    new = read_personal_file(write_personal_file(tmp_path / "new.personal.json", doc))
    assert new.angle_abstain is True and head_to_json(new)["settings"]["angle_abstain"] is True


def test_an_angle_abstain_setting_that_is_not_true_or_false_is_refused_by_name(folder):
    doc = good_doc()
    doc.update(walk_down=[1.0, 0.0, 0.0], walk_angle=[[85.0, 12.0], [5.0, 12.0]])
    doc["settings"].update(angle_weight=1.0, angle_abstain="yes")
    (folder.path / "w.personal.json").write_text(json.dumps(doc))
    (event,) = folder.settle()
    assert event.kind == "refused" and "settings: angle_abstain: expected true or false" in event.reason


def test_the_sides_rule_survives_the_file_and_older_files_keep_naming_as_they_did(tmp_path):
    from harstream.stream.core.posture import apply_heads

    doc = good_doc()  # sitting 90° from the walk (along y), standing 0°
    doc.update(walk_down=[0.0, 1.0, 0.0], walk_angle=[[90.0, 12.0], [0.0, 12.0]])
    doc["settings"]["angle_weight"] = 1.0
    old = read_personal_file(write_personal_file(tmp_path / "old.personal.json", doc))
    doc["settings"]["sides"] = [40.0, 10.0, 60.0]
    new = read_personal_file(write_personal_file(tmp_path / "new.personal.json", doc))
    assert len(old.sides) == 0 and list(new.sides) == [40.0, 10.0, 60.0]
    assert head_to_json(new)["settings"]["sides"] == [40.0, 10.0, 60.0] and "sides" not in head_to_json(old)["settings"]
    # a thigh crossed over the other: 120° from the walk and rolled 40°, far from sitting's prototype and angle
    a, r = np.deg2rad(120.0), np.deg2rad(40.0)
    cues = np.array([[np.sin(a) * np.sin(r), np.cos(a), np.sin(a) * np.cos(r)] + [-3.0] * N_MOTION])

    def named(head) -> str:
        return head.classes[int(head.pick(apply_heads(np.array([[0.0, 0.0, 0.0, 1.0]]), cues, [head]))[0].argmax())]

    assert named(old) == "STILL"  # written before the rule: serves as it always did
    assert named(new) == "SITTING"


@pytest.mark.parametrize(
    "sides, words",
    [
        ([40.0, 5.0], "settings: sides: shape (2,), expected (3,)"),
        ([40.0, -5.0, 45.0], "settings: sides: values must be"),
    ],
)
def test_a_sides_rule_out_of_shape_or_range_is_refused_by_name(folder, sides, words):
    doc = good_doc()
    doc.update(walk_down=[0.0, 1.0, 0.0], walk_angle=[[90.0, 12.0], [0.0, 12.0]])
    doc["settings"].update(angle_weight=1.0, sides=sides)
    (folder.path / "w.personal.json").write_text(json.dumps(doc))
    (event,) = folder.settle()
    assert event.kind == "refused" and words in event.reason


def test_a_turn_cost_survives_the_file_and_older_files_match_every_allowed_turn_alike(tmp_path):
    from harstream.stream.core.posture import apply_heads

    # standing along y; sitting such that turned top down it lies 25° from standing (the fit allows that turn)
    a = np.deg2rad(25.0)
    doc = good_doc()
    doc["prototypes"] = {"SITTING": [[-np.sin(a), -np.cos(a), 0.0]], "STANDING": [[0.0, 1.0, 0.0]]}
    old = read_personal_file(write_personal_file(tmp_path / "old.personal.json", doc))
    doc["settings"]["turn_cost"] = 0.1
    new = read_personal_file(write_personal_file(tmp_path / "new.personal.json", doc))
    assert old.turn_cost == 0.0 and new.turn_cost == 0.1
    assert head_to_json(new)["settings"]["turn_cost"] == 0.1 and "turn_cost" not in head_to_json(old)["settings"]
    # standing, the phone slid 15° in the pocket: 10° from sitting seen through the half-turn
    b = np.deg2rad(15.0)
    cues = np.array([[np.sin(b), np.cos(b), 0.0] + [-3.0] * N_MOTION])

    def named(head) -> str:
        return head.classes[int(head.pick(apply_heads(np.array([[0.0, 0.0, 0.0, 1.0]]), cues, [head]))[0].argmax())]

    assert named(old) == "SITTING"  # written before the cost: as it always did, through the turn
    assert named(new) == "STANDING"  # the device as calibrated, unless a turn fits clearly better


def test_a_turn_cost_out_of_range_is_refused_by_name(folder):
    doc = good_doc()
    doc["settings"]["turn_cost"] = 5.0
    (folder.path / "w.personal.json").write_text(json.dumps(doc))
    (event,) = folder.settle()
    assert event.kind == "refused" and "settings: turn_cost: values must be finite and within 0..2" in event.reason


def test_a_model_written_into_the_folder_serves_within_a_few_polls_not_an_interval(tmp_path):
    """The folder's own change is seen at the next poll (0.1 s in the worker),
    the file loaded one settling look later, long before the next full look."""
    router = ModelRouter(ServedModel("waist", "waist", "hapt@1", ACTIVITIES), BASE)
    registry = PersonalRegistry(tmp_path, lambda p: load_personal_model(p, BASE), interval=60.0)
    assert registry.poll(0.0, router) == []  # the first look, an empty folder
    write_personal_file(tmp_path / "a.personal.json", good_doc())
    events = []
    now = 0.0
    while not events and now < 1.0:
        now = round(now + 0.1, 1)
        events += registry.poll(now, router)
    assert [(e.kind, e.device) for e in events] == [("loaded", "phone:a")]
    assert now <= 0.4  # noticed at 0.1 s, settled a look 0.2 s later; the next full look was due at 60 s
