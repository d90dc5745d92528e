"""Evidence for postures from transitions, and a now label at the newest evidence: study.

Two questions about the live display decoder (:mod:`harstream.stream.core.decoder`):

- **direction**: a detector of a postural transition's direction
  (:mod:`harstream.stream.core.transition_direction`: a burst of motion between
  two still windows, the gravity before and after it through a logistic model)
  says which posture follows; its verdict weighs the decoder's posture states
  until the next transition. Fitted on the 16 fit subjects' labelled
  transitions (HAPT 7-12), every setting scored on the validation subjects;
- **knobs for the now label**: flicker is the history's job now, so the rule
  that picks the decoder's knobs is: the most accurate per sample on the
  validation subjects among the settings whose median delay meets the goal
  (≤ 1.0 s), posture lock on.

Honest protocol as for the decoder (:mod:`harstream.models.studies.decoder_tuning`):
transitions and emission from the fit subjects (out-of-fold probabilities),
validation probabilities from a model of the shipped recipe fitted on the
fit subjects; the test subjects are not read here. With ``--write`` the
chosen setting is refitted on all 21 training subjects and written into the
shipped model's ``decoder`` entry; then
``python -m harstream.models.studies.live_accuracy`` scores the test subjects once.

    python -m harstream.models.studies.transition_direction [--write] [--reports DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from harstream.models import decoder_fit as fit
from harstream.models.live_scoring import replay_probabilities, score_replays, session_windows
from harstream.models.reports import add_reports_option, write_report
from harstream.models.studies import decoder_tuning as tuning
from harstream.models.transition_direction import Event, event_accuracy, find_events, fit_direction
from harstream.stream.core.decoder import Decoder, DecoderParams, window_motion
from harstream.stream.core.smoothing import Smoother
from harstream.stream.core.transition_direction import DirectionParams, window_gravity
from harstream.stream.data.recordings import Recording

REPORT_NAME = "transition_direction_study.json"
#: The posture lock as shipped (posture_lock study).
LOCK = {"lock_motion": 0.15, "lock_settle": 3, "moved_switch_at": 0.35}
#: The detector's grid: the still threshold, the logistic model's C, and how the verdict is used.
DETECTOR_GRID = {
    "still_motion": (0.03, 0.05, 0.08, 0.12),
    "c": (1.0, 10.0),
    "weight": (0.5, 1.0, 2.0, 4.0),
    "min_confidence": (0.5, 0.7),
}
#: The decoder's knob grid for the now label (decoder_tuning's, switch_at from 0.3).
KNOB_GRID = {
    "pseudocount": (0.01, 0.1, 1.0),
    "sharpness": (1.0, 2.0, 3.0, 4.0),
    "floor": (0.01,),
    "transition_evidence": (0.1, 0.5, 1.0),
    "switch_at": (0.3, 0.4, 0.5, 0.6),
}
DELAY_GOAL = 1.0
KEEP = ("sample_accuracy", "delay_median_s", "changes_per_true_change")


def cues(recordings: list[Recording]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each session's per-window motion and gravity, windowed as the worker does."""
    out = {}
    for rec in recordings:
        x = session_windows(rec.samples)
        out[rec.name] = (window_motion(x), window_gravity(x))
    return out


def events_of(recordings: list[Recording], cue: dict, still_motion: float) -> list[Event]:
    events = []
    for rec in recordings:
        motion, gravity = cue[rec.name]
        labels = fit.window_label_sequence(rec.labels)[: len(motion)]
        events += find_events(motion, gravity, labels, still_motion)
    return events


def score(params: DecoderParams, sessions: list[tuple[Recording, np.ndarray]], cue: dict) -> dict:
    replays = [
        replay_probabilities(
            rec, probs, {"decoder": lambda: Decoder(params)}, cue[rec.name][0], params.classes, cue[rec.name][1]
        )
        for rec, probs in sessions
    ]
    r = score_replays(replays, events=False)["decoder"]
    return {k: round(float(r[k]), 4) for k in KEEP}


def raw_figures(sessions: list[tuple[Recording, np.ndarray]], classes: tuple[str, ...]) -> dict:
    replays = [
        replay_probabilities(r, p, {"raw": lambda: Smoother(classes, 1, 0.5)}, classes=classes) for r, p in sessions
    ]
    r = score_replays(replays, events=False)
    return {kind: {k: round(float(r[kind][k]), 4) for k in KEEP} for kind in ("raw", "argmax")}


def fmt(r: dict) -> str:
    return f"{100 * r['sample_accuracy']:.2f} % {r['delay_median_s']:.2f} s {r['changes_per_true_change']:.2f}"


def best_by_rule(rows: list[dict]) -> dict:
    """The most accurate row whose median delay meets the goal (else the most accurate)."""
    ok = [r for r in rows if r["validation"]["delay_median_s"] <= DELAY_GOAL] or rows
    return max(ok, key=lambda r: (r["validation"]["sample_accuracy"], -r["validation"]["delay_median_s"]))


def ship(record: dict, model: Path | None = None, direction: DirectionParams | None = None) -> Path:
    """Write the chosen knobs (and detector) into a model's ``decoder`` entry.
    The transitions are counted again from all 21 training subjects' label
    sequences (the stickiness knob changes the matrix); the emission stays
    the shipped one (out-of-fold probabilities of the 21 training subjects,
    as :func:`~harstream.models.studies.decoder_tuning.fit_decoder` wrote
    it: it does not depend on the knobs); nothing else in the metadata changes."""
    from harstream.models.artifact import DEFAULT_MODEL, metadata_path

    meta_file = metadata_path(model or DEFAULT_MODEL)
    meta = json.loads(meta_file.read_text())
    entry = meta["decoder"]
    classes = tuple(entry["classes"])
    transitions, of = fit.label_states(classes)
    counts = fit.fit_transitions(tuning.training_sessions(tuning.waist_target(model), with_validation=True))
    knobs = record["chosen"]["knobs"]
    params = fit.build_params(
        fit.state_counts(counts, of, len(classes) + len(transitions)),
        classes,
        transitions=transitions,
        emission=np.asarray(entry["emission"], dtype=np.float64),
        **knobs["knobs"],
    )
    params = replace(params, **LOCK, direction=direction)
    chosen = {**entry.get("chosen", {})}
    chosen["now_label"] = {
        "knobs": knobs["knobs"],
        "validation": knobs["validation"],
        "validation_raw": record["raw"]["raw"],
        "direction": None if direction is None else record["chosen"]["direction"]["detector"],
        "direction_validation": record["chosen"]["direction"]["validation"],
        "rule": record["chosen"]["rule"],
        "study": f"python -m harstream.models.studies.transition_direction --write ({REPORT_NAME})",
    }
    meta["decoder"] = {**entry, **params.to_json(), "chosen": chosen}
    meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="transition direction and now-label knobs: study on validation")
    parser.add_argument("--write", action="store_true", help="refit the chosen setting and ship it")
    parser.add_argument("--model", type=Path, default=None, help="model artifact (default: the shipped one)")
    add_reports_option(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    waist = tuning.waist_target(args.model)
    fit_recs = tuning.training_sessions(waist, with_validation=False)
    validation = tuning.validation_probabilities(waist, progress=False, reports=args.reports)
    val_recs = [r for r, _ in validation]
    cue = cues(fit_recs + val_recs)
    stats = tuning.label_statistics(waist, with_validation=False, reports=args.reports)
    classes = waist.classes
    record: dict = {"raw": raw_figures(validation, classes), "knobs": [], "direction": []}
    print("raw / argmax on validation:", {k: fmt(v) for k, v in record["raw"].items()}, flush=True)

    # 1. the decoder's knobs for the now label, posture lock on
    for values in itertools.product(*KNOB_GRID.values()):
        knobs = dict(zip(KNOB_GRID, values))
        params = replace(fit.params_for(stats, classes, knobs), **LOCK)
        record["knobs"].append({"knobs": knobs, "validation": score(params, validation, cue)})
    chosen_knobs = best_by_rule(record["knobs"])
    print("knobs chosen:", chosen_knobs["knobs"], fmt(chosen_knobs["validation"]), flush=True)
    base = replace(fit.params_for(stats, classes, chosen_knobs["knobs"]), **LOCK)

    # 2. the transition direction over the chosen knobs
    events_by_still = {s: events_of(fit_recs, cue, s) for s in DETECTOR_GRID["still_motion"]}
    val_events = {s: events_of(val_recs, cue, s) for s in DETECTOR_GRID["still_motion"]}
    for still, c in itertools.product(DETECTOR_GRID["still_motion"], DETECTOR_GRID["c"]):
        detector = fit_direction(events_by_still[still], c, still_motion=still)
        accuracy = {
            "fit": event_accuracy(detector, events_by_still[still]),
            "validation": event_accuracy(detector, val_events[still]),
        }
        for weight, confidence in itertools.product(DETECTOR_GRID["weight"], DETECTOR_GRID["min_confidence"]):
            d = replace(detector, weight=weight, min_confidence=confidence)
            row = {
                "detector": {"still_motion": still, "c": c, "weight": weight, "min_confidence": confidence},
                "events": accuracy,
                "validation": score(replace(base, direction=d), validation, cue),
            }
            record["direction"].append(row)
            print(row["detector"], fmt(row["validation"]), flush=True)
    best_direction = best_by_rule(record["direction"])
    record["chosen"] = {
        "knobs": chosen_knobs,
        "direction": best_direction,
        "rule": f"most accurate per sample on validation with median delay <= {DELAY_GOAL} s; the direction is "
        "kept only if it beats the knobs alone",
    }
    use_direction = best_direction["validation"]["sample_accuracy"] > chosen_knobs["validation"]["sample_accuracy"]
    record["chosen"]["use_direction"] = use_direction
    print("direction chosen:", best_direction["detector"], fmt(best_direction["validation"]), "used:", use_direction)

    if args.write:
        direction = None
        if use_direction:
            all_recs = tuning.training_sessions(waist, with_validation=True)
            cue.update(cues([r for r in all_recs if r.name not in cue]))
            det = best_direction["detector"]
            direction = fit_direction(
                events_of(all_recs, cue, det["still_motion"]),
                det["c"],
                still_motion=det["still_motion"],
                weight=det["weight"],
                min_confidence=det["min_confidence"],
            )
        print("wrote", ship(record, args.model, direction))
    record["seconds"] = round(time.perf_counter() - start)
    report = write_report(args.reports, REPORT_NAME, record)
    print("written", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
