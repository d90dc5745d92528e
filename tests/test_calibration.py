"""The calibration core (stream/personal/calibration.py): takes, checks, safe folder names, caps."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from harstream.stream.data.recordings import load_csv
from harstream.stream.personal.calibration import (
    CalibrationError,
    CalibrationLimits,
    CalibrationSession,
    check_take,
    device_folder_name,
    motion_share,
    parse_activity,
)

RATE = 50


def still(seconds: float, gravity=(0.0, 1.0, 0.0), seed: int = 0) -> np.ndarray:
    n = int(seconds * RATE)
    noise = np.random.default_rng(seed).normal(0, 0.003, (n, 6))
    return np.tile([*gravity, 0.0, 0.0, 0.0], (n, 1)) + noise


def walking(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    s = np.sin(2 * np.pi * 1.8 * t)
    return np.column_stack([0.25 * s, 1 + 0.35 * s, 0.1 * s, 0.8 * s, 0.5 * s, 0.3 * s])


def record(session: CalibrationSession, activity: str, samples: np.ndarray, t0: float = 1000.0, chunk: int = 25):
    session.start(activity)
    for i in range(0, len(samples), chunk):
        session.add(t0 + i / RATE, samples[i : i + chunk])
    return session.stop()


HOSTILE_IDS = [
    "../../etc/passwd",
    "..",
    ".",
    "/",
    "phone:../../x",
    "phone:..\\..\\x",
    "phone:a/b",
    "C:\\Windows",
    "phone:Ünïcødé",
    "ｐｈｏｎｅ：ｆｕｌｌ",
    "phone:\u202eevil",
    "phone:\x00nul",
    "phone:💥",
    "\udcff",
    "phone:" + "a" * 500,
    "CON",
    "phone:.hidden",
    "-rf",
    "",
]


@pytest.mark.parametrize("device", HOSTILE_IDS)
def test_a_device_folder_name_is_a_plain_slug_that_stays_inside_the_calibration_folder(device, tmp_path):
    name = device_folder_name(device)
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", name), name
    assert len(name) <= 53
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_ids_that_slug_alike_still_get_folders_of_their_own():
    ids = ["phone:a_b", "phone:a:b", "phone:a.b", "phone:A-B", "phone:ä-b", "phone:a-b"]
    names = {device_folder_name(d) for d in ids}
    assert len(names) == len(ids)
    assert all(n.startswith("phone-a-b-") for n in names)


def test_a_folder_name_is_the_same_every_time_for_one_device():
    assert device_folder_name("phone:web-1a2b") == device_folder_name("phone:web-1a2b")


def test_unknown_activities_are_refused_by_name():
    assert parse_activity(" Sit ") == "SITTING"
    for bad in ("jogging", None, 3, "sit" * 20, ["sit"]):
        with pytest.raises(CalibrationError) as exc:
            parse_activity(bad)
        assert exc.value.reason == "calibration" and "expected one of walk" in exc.value.detail


def test_the_moving_share_tells_a_walking_phone_from_a_resting_one():
    assert motion_share(walking(10)) == 1.0
    assert motion_share(still(10)) == 0.0
    assert motion_share(still(1)[:100]) == 0.0  # shorter than a window


@pytest.mark.parametrize(
    "activity, seconds, moving, words",
    [
        ("SITTING", 12.0, 0.0, "only 12.0 s recorded"),
        ("LAYING", 30.0, 0.8, "moving in 80% of the take"),
        ("WALKING", 30.0, 0.2, "still in 80% of the take"),
        ("WALKING_UPSTAIRS", 19.9, 1.0, "at least 20 s"),
    ],
)
def test_a_take_that_cannot_teach_its_activity_is_questioned_with_which_and_why(activity, seconds, moving, words):
    check = check_take(activity, seconds, moving)
    assert not check.ok
    assert check.reason.startswith(activity + ":") and words in check.reason


def test_a_bad_take_is_questioned_and_the_other_takes_are_kept(tmp_path):
    session = CalibrationSession("phone:p")
    assert record(session, "walk", walking(25)).ok
    sitting = record(session, "sit", walking(25))  # never still while "sitting"
    assert not sitting.ok and "moving in 100%" in sitting.reason
    assert record(session, "stand", still(25)).ok
    lying = record(session, "lie", still(12, (1, 0, 0)))
    assert not lying.ok and "only 12.0 s" in lying.reason
    assert sorted(session.files()) == ["laying-1.csv", "sitting-1.csv", "standing-1.csv", "walking-1.csv"]


def test_takes_become_csv_files_the_documented_loader_reads_back_with_their_labels(tmp_path):
    session = CalibrationSession("phone:p")
    walk = walking(21)
    record(session, "walk", walk)
    record(session, "stand", still(22))
    for name, text in session.files().items():
        (tmp_path / name).write_text(text)
    recordings = {r.name: r for r in load_csv(tmp_path).recordings}
    assert set(recordings) == {"walking-1", "standing-1"}
    np.testing.assert_allclose(recordings["walking-1"].samples, walk, atol=1e-5)
    assert set(recordings["walking-1"].labels) == {1} and set(recordings["standing-1"].labels) == {5}


def test_a_pause_in_the_stream_splits_a_take_into_continuous_files():
    session = CalibrationSession("phone:p")
    session.start("walk")
    session.add(1000.0, walking(12))
    session.add(1000.0 + 12 + 3.0, walking(12))  # 3 s without samples
    session.add(1000.0 + 27 + 1.0, walking(1)[:50])  # a scrap shorter than a window is dropped
    check = session.stop()
    assert check.seconds == 24.0
    assert sorted(session.files()) == ["walking-1.csv", "walking-2.csv"]


def test_samples_between_takes_are_not_kept():
    session = CalibrationSession("phone:p")
    session.add(0.0, walking(30))
    record(session, "sit", still(21))
    session.add(0.0, walking(30))
    assert session.takes["SITTING"].samples == 21 * RATE
    assert list(session.takes) == ["SITTING"]


def test_a_retry_replaces_the_take_and_a_discard_drops_it():
    session = CalibrationSession("phone:p")
    record(session, "sit", walking(25))
    assert record(session, "sit", still(25)).ok
    assert motion_share(session.takes["SITTING"].all_samples()) == 0.0
    session.discard("sit")
    with pytest.raises(CalibrationError, match="nothing recorded"):
        session.files()


def test_a_take_is_capped_in_seconds_and_says_so():
    session = CalibrationSession("phone:p", CalibrationLimits(max_take_seconds=30))
    check = record(session, "walk", walking(45))
    assert check.seconds == 30.0 and check.truncated


def test_all_of_a_devices_files_together_are_capped_in_bytes():
    session = CalibrationSession("phone:p", CalibrationLimits(max_bytes=50_000))
    record(session, "walk", walking(25))
    with pytest.raises(CalibrationError) as exc:
        session.files()
    assert exc.value.reason == "too_large" and "at most 50000" in exc.value.detail


def test_stop_without_start_is_refused():
    with pytest.raises(CalibrationError, match="stop without a start"):
        CalibrationSession("phone:p").stop()


def test_device_folder_names_never_contain_path_parts():
    for device in HOSTILE_IDS:
        assert Path(device_folder_name(device)).name == device_folder_name(device)
