"""``harstream calibrate``: a personal model from one device's labelled CSVs.

Example::

    harstream calibrate --data my_phone/ --device phone:my-phone --out runs/personal/my_phone.personal.json
    harstream worker --personal-dir runs/personal

The personal model is a few kilobytes of JSON (``<name>.personal.json``:
the device's own parameters over the shared placement-free model). An
``--out`` of the old form, ``x.keras`` (or ``x.json``, or ``x``), writes
``x.personal.json`` beside it and says so.

``--device`` is the id the worker sees the device by (a phone through the
gateway: ``phone:<its id>``). Without it, a folder the /phone page wrote
(``runs/calibration/<device folder>/``) names its device in ``device.txt``,
so ``harstream calibrate --data runs/calibration/<device folder> --out
runs/personal/<device folder>.personal.json`` refits the page's takes for the
same phone; any other folder gives its own name, with a warning.

``--data`` is a CSV file or a folder of CSV files of ONE device in the format
of docs/recordings.md, with a ``label`` column naming the activity (any
subset of walking, upstairs, downstairs, sitting, standing, lying), or
Sensor Logger exports of it (zips or unpacked, one per activity named after
it, e.g. ``walking.zip``, or one whose annotations name each activity). Each
activity with at least 20 s of data that agrees with it (a posture held
still, walking while moving) is calibrated; the others are refused with the
reason and fall back to the placement-free classes. Where a CSV has a
``pressure_hpa`` column, its labelled stairs must climb (descend) by its own
barometer, else they are refused. Exit code 2 for
unreadable input, 0 otherwise (refusals are printed, not fatal).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from harstream.commands._options import Number
from harstream.stream.files.small_file import read_small_file
from harstream.stream.personal.calibration import DEVICE_FILE


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="labelled CSV file or folder of one device, or its Sensor Logger exports (docs/recordings.md)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="PATH.personal.json",
        help="where to write the personal model (x.keras or x.json become x.personal.json)",
    )
    parser.add_argument(
        "--device",
        default=None,
        metavar="ID",
        help="the device's id on the bus, which the worker serves the model to (a phone through the gateway: "
        "phone:<its id>; default: the device.txt the /phone page writes beside its CSVs, else the --data "
        "folder's name, with a warning)",
    )
    parser.add_argument(
        "--base", default=None, metavar="PATH.keras", help="placement-free base model (default: the shipped any.keras)"
    )
    parser.add_argument(
        "--no-half-turns",
        action="store_true",
        help="never keep a posture's name when the device comes back turned round "
        "(by default kept wherever the calibrated postures stay apart under the turn)",
    )
    parser.add_argument(
        "--max-angle",
        type=Number(float, 0, 90, low_open=True),
        default=None,
        metavar="DEG",
        help="a still device farther than this from every calibrated posture shows plain STILL (default 30)",
    )


def calibration_device(data: str | Path, given: str | None) -> tuple[str, str | None]:
    """The device a calibration of ``data`` is for, and a warning when it was
    guessed: ``given`` (``--device``); else the ``device.txt`` the gateway
    writes beside a device's calibration CSVs (its bus id, so a refit by hand
    serves the same phone); else the folder's (or the file's) name, which no
    phone on the gateway has (those are ``phone:<id>``).

    >>> calibration_device("runs/calibration/x", "phone:pixel-7")
    ('phone:pixel-7', None)
    """
    if given is not None:
        return given, None
    path = Path(data)
    folder = path if path.is_dir() else path.parent
    with contextlib.suppress(OSError):  # none, or no small regular file: the folder's name
        note = read_small_file(folder / DEVICE_FILE, 256, follow_symlinks=True).data
        return note.decode("utf-8", errors="replace").strip(), None
    name = path.resolve().stem
    return name, (
        f"calibrate: no --device and no {DEVICE_FILE} in {folder}: the model is for device {name!r}, "
        "the --data folder's name; give --device with the id the worker sees (a phone through the gateway: "
        "phone:<its id>)"
    )


def stairs_checked(recordings: list) -> list:
    """The recordings with stairs their own barometer (a ``pressure_hpa``
    column) does not show climbing or descending refused; says what it found."""
    from harstream.stream.personal.calibration import check_stairs_by_barometer

    out = []
    for rec in recordings:
        rec, said = check_stairs_by_barometer(rec)
        for line in said:
            print(f"{rec.name}: {line}")
        out.append(rec)
    return out


def run(args: argparse.Namespace) -> int:
    from harstream.models.artifact import ArtifactError
    from harstream.models.personal import PersonalSettings, fit_personal, load_shared_model, save_personal
    from harstream.stream.core.protocol import ProtocolError, check_device_id
    from harstream.stream.data.recordings import RecordingError, load_device_recordings
    from harstream.stream.personal.model_file import personal_file_name

    out = Path(args.out)
    device, guessed = calibration_device(args.data, args.device)
    try:
        check_device_id(device)
    except ProtocolError as exc:
        where = "--device" if args.device is not None else f"{Path(args.data)} ({DEVICE_FILE} or folder name)"
        print(f"{where} {device[:60]!r}: {exc.detail}", file=sys.stderr)
        return 2
    if guessed:
        print(guessed, file=sys.stderr)
    try:
        dataset = load_device_recordings(args.data)
        shared = load_shared_model(args.base)  # without TensorFlow where a worker left its serving record
    except (RecordingError, ArtifactError) as exc:
        print(exc, file=sys.stderr)
        return 2
    settings = PersonalSettings(half_turns=not args.no_half_turns)
    if args.max_angle is not None:  # range-checked by its option type
        settings = replace(settings, max_angle=args.max_angle)
    try:
        fit = fit_personal(
            stairs_checked(dataset.recordings), shared.artifact, settings, shared.probabilities, shared.features
        )
    except ArtifactError as exc:
        print(exc, file=sys.stderr)
        return 2
    for check in fit.checks:
        if check.accepted:
            print(f"calibrated {check.activity}: {check.seconds:.1f} s, {check.windows} windows")
        else:
            print(f"refused {check.reason}")
    if not fit.checks:
        print(f"{args.data}: no labelled activity (labels 1-6) in the recordings; the model is the placement-free one")
    command = "harstream calibrate " + shlex.join(sys.argv[2:]) if len(sys.argv) > 2 else None
    for line in fit.summary:
        print(line)
    path = save_personal(fit, out, device, shared.artifact, command=command)
    if path != out:
        print(f"--out {out}: a personal model is {personal_file_name(out).name} now (JSON parameters, not Keras)")
    print(f"wrote {path} for device {device} (classes {', '.join(fit.classes)}; fitted in {fit.seconds:.1f} s)")
    return 0
