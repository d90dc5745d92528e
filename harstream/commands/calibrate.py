"""``harstream calibrate``: a personal model from one device's labelled CSVs.

Example::

    harstream calibrate --data my_phone/ --out my_phone.keras
    harstream worker --model my_phone.keras

``--data`` is a CSV file or a folder of CSV files of ONE device in the format
of docs/recordings.md, with a ``label`` column naming the activity (any
subset of walking, upstairs, downstairs, sitting, standing, lying). Each
activity with at least 20 s of data that agrees with it (a posture held
still, walking while moving) is calibrated; the others are refused with the
reason and fall back to the placement-free classes. Where a CSV has a
``pressure_hpa`` column, its labelled stairs must climb (descend) by its own
barometer, else they are refused. Exit code 2 for
unreadable input, 0 otherwise (refusals are printed, not fatal).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from harstream.commands._options import Number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="labelled CSV file or folder of one device")
    parser.add_argument("--out", required=True, metavar="PATH.keras", help="where to write the personal model")
    parser.add_argument(
        "--device", default=None, help="device name in the metadata (default: the --data folder's name)"
    )
    parser.add_argument(
        "--base", default=None, metavar="PATH.keras", help="placement-free base model (default: the shipped any.keras)"
    )
    parser.add_argument(
        "--max-angle",
        type=Number(float, 0, 90, low_open=True),
        default=None,
        metavar="DEG",
        help="a still device farther than this from every calibrated posture shows plain STILL (default 30)",
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
    from harstream.models.artifact import ANY_MODEL, ArtifactError, load_artifact
    from harstream.models.personal import PersonalSettings, fit_personal, save_personal
    from harstream.stream.data.recordings import RecordingError, load_csv

    out = Path(args.out)
    if out.suffix != ".keras":
        print(f"--out {out}: a model artifact must end in .keras", file=sys.stderr)
        return 2
    try:
        dataset = load_csv(args.data)
        base = load_artifact(args.base or ANY_MODEL)
    except (RecordingError, ArtifactError) as exc:
        print(exc, file=sys.stderr)
        return 2
    settings = PersonalSettings() if args.max_angle is None else PersonalSettings(max_angle=args.max_angle)
    try:
        fit = fit_personal(stairs_checked(dataset.recordings), base, settings)
    except ArtifactError as exc:
        print(exc, file=sys.stderr)
        return 2
    device = args.device or Path(args.data).resolve().stem
    for check in fit.checks:
        if check.accepted:
            print(f"calibrated {check.activity}: {check.seconds:.1f} s, {check.windows} windows")
        else:
            print(f"refused {check.reason}")
    if not fit.checks:
        print(f"{args.data}: no labelled activity (labels 1-6) in the recordings; the model is the placement-free one")
    command = "harstream calibrate " + shlex.join(sys.argv[2:]) if len(sys.argv) > 2 else None
    path = save_personal(fit, out, device, base, command=command)
    print(f"wrote {path} (classes {', '.join(fit.classes)}; fitted in {fit.seconds:.1f} s)")
    return 0
