"""Where the context windows help: right after an activity change, or everywhere?

HAPT's subjects followed a script of short activities (a posture lasts about
15 s), so a model that looks 5 s back often sees the change that led into the
current activity — the sit-down before sitting. Someone sitting for an hour
gives no such hint. This study splits the held-out test windows by whether
the samples the context model looked at (its oldest context window's first
sample to the window's last) hold an activity change, and scores a model
with and one without context on each part. It runs after the final runs and
chooses nothing.

Run (results in ``docs/reports/context_study.json``)::

    python -m harstream.models.studies.context_study --with CONTEXT.keras --without PLAIN.keras
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from harstream.models.reports import REPORTS
from harstream.stream.core.pipeline import WINDOW

from ..dataset import context_starts, context_windows, segment_windows

STUDY_FILE = REPORTS / "context_study.json"


def change_in_view(labels: np.ndarray, starts: np.ndarray, steps) -> np.ndarray:
    """Per window: does any sample from its oldest context window's start to
    its own end carry another label (another activity, a transition, or none)?

    >>> labels = np.array([5] * 300 + [4] * 300)
    >>> change_in_view(labels, np.array([300, 500]), (1, 2)).tolist()    # 300 looks back to 172; 500 to 372
    [True, False]
    """
    oldest = context_starts(starts, steps).min(axis=1)
    return np.array([np.any(labels[a : s + WINDOW] != labels[s]) for a, s in zip(oldest, starts)], dtype=bool)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="context vs no context, by whether an activity change is in view")
    parser.add_argument("--with", dest="with_context", type=Path, required=True, help="a model with context_steps")
    parser.add_argument("--without", type=Path, required=True, help="a model of single windows")
    parser.add_argument("--out", type=Path, default=STUDY_FILE)
    args = parser.parse_args(argv)

    from harstream.stream.core.pipeline import preprocess_recording
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_embedded

    from ..artifact import load_artifact
    from .compare import predict

    ctx_model, plain_model = load_artifact(args.with_context), load_artifact(args.without)
    steps = ctx_model.context_steps
    if not steps or plain_model.context_steps:
        raise SystemExit("context_study: --with needs a model with context_steps, --without one without")
    ys, in_view, with_pred, without_pred = [], [], [], []
    for rec in load_embedded().of_subjects(UCI_TEST_SUBJECTS):
        starts, classes = segment_windows(rec.labels)
        if not len(starts):
            continue
        x = context_windows(preprocess_recording(rec.samples.astype(np.float32)), starts, steps)
        ys.append(classes)
        in_view.append(change_in_view(np.asarray(rec.labels), starts, steps))
        with_pred.append(predict(ctx_model.model, x).argmax(axis=1))
        without_pred.append(predict(plain_model.model, np.ascontiguousarray(x[:, 0])).argmax(axis=1))
    y, view = np.concatenate(ys), np.concatenate(in_view)
    right = {"with": np.concatenate(with_pred) == y, "without": np.concatenate(without_pred) == y}
    parts = {"change in view": view, "no change in view": ~view, "all": np.ones_like(view)}
    result: dict[str, Any] = {
        "with": ctx_model.model_id,
        "without": plain_model.model_id,
        "context_steps": list(steps),
        "parts": {
            name: {"windows": int(mask.sum()), **{k: float(v[mask].mean()) for k, v in right.items()}}
            for name, mask in parts.items()
        },
        "command": "python -m harstream.models.studies.context_study "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name, r in result["parts"].items():
        print(
            f"{name}: {r['windows']} windows, with context {100 * r['with']:.2f} %, without {100 * r['without']:.2f} %"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
