"""Which device `harstream calibrate` fits a model for when --device is not
given: a refit by hand of the CSVs the /phone page wrote (docs/phones.md)
must serve the same phone, so the id comes from the device.txt the gateway
writes beside them, not from the folder's slug, which no phone has."""

from __future__ import annotations

import numpy as np

from harstream.cli import main
from harstream.commands.calibrate import calibration_device
from harstream.stream.gateway.calibration import write_and_fit
from harstream.stream.personal.calibration import CalibrationSession


def _page_calibration(tmp_path, device: str):
    """The folder the gateway writes for ``device`` after one take, as the page's finish writes it."""
    session = CalibrationSession(device)
    session.start("stand")
    session.add(0.0, np.tile(np.array([1.0, 0, 0, 0, 0, 0], np.float32), (300, 1)))
    session.stop()
    guessed = {}

    def fit(folder, bus_device, out):  # what the page's fit is told, and what a refit by hand would find
        guessed["by_hand"] = calibration_device(folder, None)
        guessed["a_file"] = calibration_device(next(folder.glob("*.csv")), None)
        out.write_text("{}")
        return {}

    (tmp_path / "personal").mkdir()
    result = write_and_fit(fit, tmp_path / "data", tmp_path / "personal", device, session, "owner")
    return result, guessed


def test_a_refit_of_the_pages_csvs_is_for_the_phone_that_recorded_them(tmp_path):
    result, guessed = _page_calibration(tmp_path, "phone:web-1a2b")
    assert result["data"].endswith("phone-web-1a2b-66361f705539")  # the folder is a slug, not an id
    assert guessed["by_hand"] == ("phone:web-1a2b", None)
    assert guessed["a_file"] == ("phone:web-1a2b", None)


def test_a_given_device_wins_over_the_pages_record(tmp_path):
    (tmp_path / "device.txt").write_text("phone:web-1a2b\n")
    assert calibration_device(tmp_path, "phone:other") == ("phone:other", None)


def test_without_either_the_folder_name_is_used_and_the_user_is_told_to_give_device(tmp_path):
    folder = tmp_path / "my_phone"
    folder.mkdir()
    device, warning = calibration_device(folder, None)
    assert device == "my_phone"
    assert warning is not None and "--device" in warning and "phone:<its id>" in warning


def test_a_device_txt_that_is_no_device_id_is_a_usage_error_naming_it(tmp_path, capsys):
    folder = tmp_path / "cal"
    folder.mkdir()
    (folder / "device.txt").write_text("phone:../../etc\n")
    assert main(["calibrate", "--data", str(folder), "--out", str(tmp_path / "x.personal.json")]) == 2
    err = capsys.readouterr().err
    assert "device.txt" in err and "phone:../../etc" in err
    assert not (tmp_path / "x.personal.json").exists()
