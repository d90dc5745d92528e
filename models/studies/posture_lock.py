"""The posture lock of the live display decoder: study and choice of its knobs.

A person changes posture (sitting, standing, lying) only by moving: a postural
transition tilts the waist and shakes it. The decoder
(:mod:`harstream.stream.core.decoder`) can therefore refuse to move the display
from a settled posture to another posture unless the body moved since the
posture was shown, and switch sooner after it moved. This study measures
that on the live figures (per-sample accuracy, median delay, display changes
per true change), as the worker would show them:

- the cue: :func:`~harstream.stream.core.decoder.window_motion` of each window
  (mean body-acceleration magnitude), from the window's own samples; the
  gravity angle between the current window and the window at the last
  display change was tried as a second cue and added nothing once motion is
  used (every real posture change moves the body more than the motion bound);
- knobs fitted on the 16 fit subjects (their out-of-fold probabilities,
  decoder transitions and emission from the same subjects), the final
  choice among the training-best settings on the 5 validation subjects
  (probabilities from a model trained on the fit subjects);
- the test subjects are not read here (``python -m harstream.models.live_accuracy``
  scores them once with the shipped model and decoder).

    python -m harstream.models.studies.posture_lock [--write]

``--write`` adds the chosen knobs to the shipped model's ``decoder`` entry.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from harstream.models import decoder_fit as fit
from harstream.models.live_scoring import replay_probabilities, score_replays, session_windows
from harstream.models.reports import add_reports_option, write_report
from harstream.models.studies import decoder_tuning as tuning
from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.decoder import Decoder, DecoderParams, window_motion
from harstream.stream.core.smoothing import Smoother
from harstream.stream.data.recordings import Recording

REPORT_NAME = "posture_lock_study.json"
#: The knobs of the shipped decoder without the lock (docs/reports/decoder_pareto.json's choice).
BASE_KNOBS = {"floor": 0.01, "pseudocount": 0.01, "sharpness": 2.0, "switch_at": 0.5, "transition_evidence": 1.0}
GRID = {"lock_motion": (0.1, 0.15, 0.2, 0.3, 0.5), "lock_settle": (0, 2, 3, 4, 6), "moved_switch_at": (0.5, 0.35)}
KEEP = ("sample_accuracy", "delay_median_s", "changes_per_true_change")

Sessions = Sequence[tuple[Recording, np.ndarray]]


def session_motion(rec: Recording) -> np.ndarray:
    """Each window's motion, the windows made as the worker makes them."""
    return window_motion(session_windows(rec.samples))


def score(params: DecoderParams, sessions: Sessions, motion: dict[str, np.ndarray]) -> dict:
    """Live figures of the raw label, the decoder without motion and with it."""
    replays = [
        replay_probabilities(
            rec,
            probs,
            {"raw": lambda: Smoother(ACTIVITIES, 1, 0.5), "decoder": lambda: Decoder(params)},
            motion=motion[rec.name],
        )
        for rec, probs in sessions
    ]
    out = score_replays(replays, events=False)
    return {kind: {k: round(float(out[kind][k]), 4) for k in KEEP} for kind in ("raw", "decoder")}


def grid_scores(base: DecoderParams, sessions: Sessions, motion: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for values in itertools.product(*GRID.values()):
        knobs = dict(zip(GRID, values))
        r = score(replace(base, **knobs), sessions, motion)["decoder"]
        rows.append({**knobs, **r})
        print(knobs, fmt(r), flush=True)
    return rows


def fmt(r: dict) -> str:
    return f"{100 * r['sample_accuracy']:.2f} % {r['delay_median_s']:.2f} s {r['changes_per_true_change']:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="fit the decoder's posture lock on training subjects, choose on validation"
    )
    parser.add_argument(
        "--write", action="store_true", help="add the chosen knobs to the shipped model's decoder entry"
    )
    parser.add_argument("--top", type=int, default=5, help="training-best settings taken to validation")
    add_reports_option(parser)
    args = parser.parse_args(argv)

    waist = tuning.waist_target()
    counts = fit.fit_transitions(tuning.training_sessions(waist, with_validation=False))
    train = tuning.oof_fit_subjects(waist, reports=args.reports)  # out-of-fold probabilities of the 16 fit subjects
    base = fit.build_params(counts, emission=fit.fit_emission(train), **BASE_KNOBS)
    train_motion = {r.name: session_motion(r) for r, _ in train}
    unlocked = score(base, train, train_motion)
    print("fit subjects: raw", fmt(unlocked["raw"]), "| decoder without lock", fmt(unlocked["decoder"]), flush=True)
    rows = grid_scores(base, train, train_motion)
    # training-best: most accurate among those no slower and no more changeable than the decoder without lock
    ok = [
        r
        for r in rows
        if r["delay_median_s"] <= unlocked["decoder"]["delay_median_s"]
        and r["changes_per_true_change"] <= unlocked["decoder"]["changes_per_true_change"] + 0.05
    ]
    top = sorted(ok or rows, key=lambda r: -r["sample_accuracy"])[: args.top]

    validation = tuning.validation_probabilities(waist, progress=False, reports=args.reports)
    val_motion = {r.name: session_motion(r) for r, _ in validation}
    val_base = score(base, validation, val_motion)
    print("validation: raw", fmt(val_base["raw"]), "| decoder without lock", fmt(val_base["decoder"]), flush=True)
    candidates = []
    for r in top:
        knobs = {k: r[k] for k in GRID}
        v = score(replace(base, **knobs), validation, val_motion)["decoder"]
        candidates.append({"knobs": knobs, "fit": {k: r[k] for k in KEEP}, "validation": v})
        print("validation", knobs, fmt(v), flush=True)
    chosen = max(candidates, key=lambda c: (c["validation"]["sample_accuracy"], -c["validation"]["delay_median_s"]))
    record = {
        "fit_subjects": {"raw": unlocked["raw"], "decoder_without_lock": unlocked["decoder"], "grid": rows},
        "validation": {"raw": val_base["raw"], "decoder_without_lock": val_base["decoder"], "candidates": candidates},
        "chosen": chosen,
        "rule": "grid on the fit subjects' out-of-fold probabilities; of the settings no slower and with no "
        f"more display changes (+0.05) than the decoder without the lock, the {args.top} most accurate go to "
        "validation; the most accurate there is chosen",
    }
    report = write_report(args.reports, REPORT_NAME, record)
    print("chosen", chosen["knobs"], "validation", fmt(chosen["validation"]), "; written", report)
    if args.write:
        from harstream.models.artifact import DEFAULT_MODEL, metadata_path

        path = metadata_path(DEFAULT_MODEL)
        meta = json.loads(path.read_text())
        meta["decoder"].update(chosen["knobs"])
        meta["decoder"]["chosen"]["posture_lock"] = {
            "knobs": chosen["knobs"],
            "validation": chosen["validation"],
            "study": "python -m harstream.models.studies.posture_lock",
        }
        path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
