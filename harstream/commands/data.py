"""``harstream data``: what is in a recording source, at a glance.

Prints sessions, subjects, samples, duration, samples per label and the UCI
subject split for recordings (embedded HAPT, a RawData folder, CSV, Sensor Logger
exports); windows
per split and class counts for a UCI HAR Dataset folder.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # keep `harstream data --help` free of numpy imports
    from harstream.stream.data.recordings import Dataset, UciWindows


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="PATH",
        default=None,
        help="HAPT RawData folder, CSV file or folder, Sensor Logger export (.zip or unpacked) or folder of them, "
        "or UCI HAR Dataset folder "
        "(default: the embedded HAPT recordings)",
    )
    parser.add_argument("--sessions", action="store_true", help="also list every session")


def run(args: argparse.Namespace) -> int:
    from harstream.stream.data.recordings import LAYOUTS, RecordingError, detect_layout

    try:
        layout = detect_layout(args.data)
        if layout == "uci-har":
            from harstream.stream.data.recordings import load_uci_folder

            print(describe_uci(load_uci_folder(args.data, progress=True)))
        else:
            from harstream.stream.data.recordings import load_dataset

            dataset = load_dataset(args.data, progress=True)
            print(describe_dataset(dataset, LAYOUTS[layout], sessions=args.sessions))
    except RecordingError as exc:
        print(f"harstream data: {exc}", file=sys.stderr)
        return 2
    return 0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def describe_dataset(dataset: Dataset, layout: str, sessions: bool = False) -> str:
    """The summary ``harstream data`` prints for continuous recordings."""
    import numpy as np

    from harstream.stream.core.activities import label_name
    from harstream.stream.data.recordings import RATE_HZ, UCI_TEST_SUBJECTS

    recs = dataset.recordings
    total = sum(len(r) for r in recs)
    lines = [
        f"source    {dataset.source}",
        f"layout    {layout}",
        f"sha256    {dataset.sha256}",
        f"sessions  {len(recs):,}",
        f"subjects  {len(dataset.subjects()):,}",
        f"samples   {total:,} ({_duration(total / RATE_HZ)} at {RATE_HZ:g} Hz)",
    ]
    barometers = [r.pressure for r in recs if r.pressure is not None and len(r.pressure)]
    if barometers:  # a CSV's pressure_hpa column, an export's Barometer.csv
        readings = sum(len(p) for p in barometers)
        lines.append(f"barometer {len(barometers):,} of {len(recs):,} sessions, {readings:,} readings")
    lines += [
        "",
        f"{'split (UCI test subjects)':<26}{'subjects':>9}{'sessions':>10}{'samples':>12}",
    ]
    for split, wanted in (("train", False), ("test", True)):
        part = [r for r in recs if (r.subject in UCI_TEST_SUBJECTS) == wanted]
        lines.append(f"{split:<26}{len({r.subject for r in part}):>9,}{len(part):>10,}{sum(len(r) for r in part):>12,}")
    counts: Counter[int] = Counter()
    for r in recs:
        values, n = np.unique(r.labels, return_counts=True)
        counts.update(dict(zip(values.tolist(), n.tolist())))
    lines += ["", f"{'label':<26}{'samples':>12}{'share':>9}"]
    for label in sorted(counts, key=lambda v: (v < 0, v)):
        name = f"{label:>3} {label_name(label)}"
        lines.append(f"{name:<26}{counts[label]:>12,}{counts[label] / max(total, 1):>9.1%}")
    if sessions:
        width = max([26, *(len(r.name) + 1 for r in dataset.recordings)])  # a long file name keeps its columns
        lines += ["", f"{'session':<{width}}{'subject':>9}{'samples':>12}{'duration':>10}{'labelled':>10}"]
        for r in recs:
            labelled = float((r.labels >= 1).mean()) if len(r) else 0.0
            lines.append(
                f"{r.name:<{width}}{r.subject:>9}{len(r):>12,}{_duration(len(r) / r.rate):>10}{labelled:>10.0%}"
            )
    return "\n".join(lines)


def describe_uci(windows: UciWindows) -> str:
    """The summary ``harstream data`` prints for a UCI HAR Dataset folder."""
    import numpy as np

    from harstream.stream.core.activities import ACTIVITIES
    from harstream.stream.data.recordings import UCI_SPLITS

    lines = [
        f"source    {windows.source}",
        "layout    UCI HAR Dataset folder (windows of 128 samples, 50 % overlap)",
        f"sha256    {windows.sha256}",
        f"windows   {len(windows):,}",
        f"subjects  {len(np.unique(windows.subjects)):,}",
        "",
        f"{'class':<26}" + "".join(f"{s:>9}" for s in UCI_SPLITS) + f"{'all':>9}",
    ]
    per_split = {s: np.bincount(windows.y[windows.split == s], minlength=6) for s in UCI_SPLITS}
    for c, name in enumerate(ACTIVITIES):
        cells = "".join(f"{per_split[s][c]:>9,}" for s in UCI_SPLITS)
        lines.append(f"{c} {name:<24}{cells}{sum(per_split[s][c] for s in UCI_SPLITS):>9,}")
    cells = "".join(f"{int(per_split[s].sum()):>9,}" for s in UCI_SPLITS)
    lines.append(f"{'windows':<26}{cells}{len(windows):>9,}")
    subj = "".join(f"{len(np.unique(windows.subjects[windows.split == s])):>9,}" for s in UCI_SPLITS)
    lines.append(f"{'subjects':<26}{subj}{len(np.unique(windows.subjects)):>9,}")
    return "\n".join(lines)
