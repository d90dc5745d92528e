"""The now label as a worker published it, with and without the display-only updates between windows.

Reads a record written by ``python -m harstream.models.studies.history_accuracy
collect`` (every prediction a worker published for the held-out sessions,
replayed by ``harstream simulate`` at 50 Hz) and scores, per sample over the
samples labelled 1-6, what a subscriber showing the newest message saw:

- ``raw_windows`` / ``now_windows``: the ``label`` (the model's class) and the
  ``smoothed`` now label of the model's windows only (one every 64 samples),
  as a subscriber that ignores ``between`` messages sees them;
- ``raw_between`` / ``now_between``: the same with the display-only updates
  between windows (``between`` set) taken as well: a label every 32 samples.

Each message's label is on screen from its last sample (``t_end``) until the
next message's; sample ``i`` of a session is at bus time ``wall0 + i / 50``
(the simulator stamps every device that way). Delay, changes per true change
and Ward's metrics as in :mod:`harstream.models.live_scoring`.

    python -m harstream.models.studies.now_published run.jsonl [--reports DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from harstream.models.live_scoring import (
    NOTHING,
    RATE,
    SessionReplay,
    display_code,
    score_replays,
    truth_labels,
)
from harstream.models.reports import add_reports_option, write_report
from harstream.stream.core.activities import ACTIVITIES

REPORT_NAME = "now_published.json"
KINDS = ("raw_windows", "now_windows", "raw_between", "now_between")
KEEP = (
    "sample_accuracy",
    "delay_median_s",
    "delay_p90_s",
    "changes_per_true_change",
    "display_changes",
    "true_changes",
)


def timeline(n: int, ends: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per-sample shown code: each message's code from its last sample until the next message's.

    >>> timeline(6, np.array([1, 3]), np.array([4, 5])).tolist()
    [-1, 4, 4, 5, 5, 5]
    """
    order = np.argsort(ends, kind="stable")
    ends, codes = np.asarray(ends)[order], np.asarray(codes)[order]
    shown = np.full(n, NOTHING, dtype=np.int64)
    for k, (e, c) in enumerate(zip(ends, codes)):
        if e >= n:
            break
        stop = ends[k + 1] if k + 1 < len(ends) else n
        shown[max(e, 0) : stop] = c
    return shown


def score(path: Path) -> dict:
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_embedded

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    recs = {r.name: r for r in load_embedded().recordings if r.subject in set(UCI_TEST_SUBJECTS)}
    preds = [r for r in rows if r["kind"] == "prediction" and r["device"] in recs]
    wall0 = min(r["t_start"] for r in preds if not r.get("between"))
    by_device: dict[str, list[dict]] = {name: [] for name in recs}
    for r in preds:
        by_device[r["device"]].append(r)
    replays = []
    for name, rec in recs.items():
        n = len(rec.samples)
        shown = {}
        mine = by_device[name]
        for between in (False, True):
            use = [r for r in mine if between or not r.get("between")]
            ends = np.array([round((r["t_end"] - wall0) * RATE) for r in use], dtype=np.int64)
            for kind, field in (("raw", "label"), ("now", "smoothed")):
                codes = np.array([display_code(r[field]) for r in use], dtype=np.int64)
                shown[f"{kind}_{'between' if between else 'windows'}"] = timeline(n, ends, codes)
        replays.append(SessionReplay(name, truth_labels(rec.labels), shown, ACTIVITIES))
    out = score_replays(replays, events=True)
    record = {kind: {k: out[kind][k] for k in KEEP} for kind in KINDS}
    for kind in KINDS:
        record[kind]["ward_events"] = out[kind]["ward_events"]
        record[kind]["ward_frames"] = out[kind]["ward_frames"]
    record["messages"] = {
        "windows": sum(not r.get("between") for r in preds),
        "between": sum(bool(r.get("between")) for r in preds),
    }
    record["sessions"], record["samples"] = out["sessions"], out["samples"]
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="score the published now label, with and without between updates")
    parser.add_argument("record", type=Path, help="a history_accuracy collect record (JSON lines)")
    add_reports_option(parser)
    args = parser.parse_args(argv)
    record = score(args.record)
    for kind in KINDS:
        r = record[kind]
        print(
            f"{kind}: {100 * r['sample_accuracy']:.2f} % per sample, delay median {r['delay_median_s']:.2f} s "
            f"p90 {r['delay_p90_s']:.2f} s, changes {r['display_changes']} / {r['true_changes']} = "
            f"{r['changes_per_true_change']:.2f}"
        )
    print("messages", record["messages"])
    report = write_report(args.reports, REPORT_NAME, record)
    print("written", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
