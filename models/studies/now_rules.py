"""Display rules for the now label, scored per subject on all 21 training subjects (study).

The shipped now label (the decoder's hysteresis over its forward filter, with
the posture lock) was chosen on the 5 validation subjects, where it beat the
raw window label by 2.8 points; on the held-out test subjects it came out
below the raw label it decodes. Here every rule is scored **per subject** on
the 21 training subjects, each subject's windows labelled by a model of the
shipped recipe that did not see it (7 folds by subject, as
:func:`~harstream.models.studies.decoder_tuning.out_of_fold_probabilities`)
and each subject's decoder built from the label statistics (transitions,
out-of-fold emission) of the other folds' subjects only. The test subjects
are not read here.

Both things a user sees are scored: the model's windows only, and with the
display-only updates between windows (the worker's gate, 0.03 g / 10°; the
between window's context the model's own windows; shown as a
:meth:`~harstream.stream.core.decoder.Decoder.peek`), each against the raw
window label at the same rate.

The rule that picks, declared here before any setting was scored
(:data:`RULE`): among the settings whose pooled median delay is at most
1.0 s in both views, those at least as accurate per sample as the raw label
pooled in both views and not below raw for more than ``max_losing``
subjects in either view; of those, the one whose worst per-subject loss to
raw (over both views) is smallest, ties by pooled accuracy with the updates
between windows. The shipped setting is a candidate like the others.

    python -m harstream.models.studies.now_rules [--reports DIR]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from harstream.models import decoder_fit as fit
from harstream.models.live_scoring import (
    display_changes,
    display_code,
    display_delays,
    sample_accuracy,
    session_windows,
    true_changes,
    truth_labels,
)
from harstream.models.reports import add_reports_option, write_report
from harstream.models.studies import decoder_tuning as tuning
from harstream.models.studies.between_updates import degrees
from harstream.models.studies.now_published import timeline
from harstream.stream.core.activities import POSTURES
from harstream.stream.core.decoder import Decoder, DecoderParams, window_motion
from harstream.stream.core.pipeline import BETWEEN, STEP, WINDOW
from harstream.stream.core.transition_direction import window_gravity
from harstream.stream.data.recordings import Recording

REPORT_NAME = "now_rules.json"
CACHE_NAME = "decoder_oof_train_between.npz"  # beside decoder_tuning's caches (not committed)
FOLDS = 7
GRID_KEYS = ("main", "mixed", "m0", "g0", "m1", "g1")
#: The worker's gate for labelling a between window (``--between-motion``, ``--between-turn``).
GATE = (0.03, 10.0)
#: The selection rule, fixed before the first score was seen (module docstring). A subject
#: "loses" to raw when its per-sample accuracy is below raw's by more than ``loss_margin``;
#: the worst loss is compared in bins of ``worst_loss_bin`` (then pooled accuracy decides).
RULE = {
    "max_delay_s": 1.0,
    "max_losing_subjects": 5,
    "loss_margin": 0.001,
    "worst_loss_bin": 0.001,
}
VIEWS = ("windows", "between")
KEEP = ("sample_accuracy", "delay_median_s", "changes_per_true_change")


def fold_groups(subjects: Sequence[int], folds: int = FOLDS) -> list[list[int]]:
    """The subjects of each fold, as decoder_tuning's out-of-fold probabilities group them.

    >>> fold_groups([1, 3, 5, 6, 7], 2)
    [[1, 5, 7], [3, 6]]
    """
    ordered = sorted(set(subjects))
    return [ordered[k::folds] for k in range(folds)]


def session_grids(model: Callable[[np.ndarray], np.ndarray], context: tuple[int, ...], rec: Recording) -> dict:
    """One session's model windows' probabilities (``main``), its between
    windows' with the model's own windows as context (``mixed``, as the
    worker labels them), and both grids' motion and gravity."""
    main = session_windows(rec.samples, context_steps=())
    offset = session_windows(rec.samples, context_steps=(), between=True)
    j = np.arange(len(offset))
    mixed = np.stack([offset] + [main[np.clip(j - s + 1, 0, None)] for s in context], axis=1)
    return {
        "main": tuning.predict_in_batches(model, session_windows(rec.samples, context_steps=context)),
        "mixed": tuning.predict_in_batches(model, mixed) if len(mixed) else np.empty((0, 0)),
        "m0": window_motion(main),
        "g0": window_gravity(main),
        "m1": window_motion(offset),
        "g1": window_gravity(offset),
    }


def out_of_fold_grids(target: tuning.Target, reports: Path, progress: bool = True) -> list[tuple[Recording, dict]]:
    """Every training session's grids from a model that did not see its subject (cached in ``reports``)."""
    recs = tuning.training_sessions(target, with_validation=True)
    path = reports / CACHE_NAME
    names = [r.name for r in recs]
    if path.is_file():
        with np.load(path) as z:
            if list(z["names"]) == names:
                return [(r, {k: z[f"{k}{i}"] for k in GRID_KEYS}) for i, r in enumerate(recs)]
    out: dict[str, dict] = {}
    for k, held in enumerate(fold_groups([r.subject for r in recs])):
        start = time.perf_counter()
        model = target.fit([r for r in recs if r.subject not in held])
        for rec in (r for r in recs if r.subject in held):
            out[rec.name] = session_grids(model, tuple(target.context), rec)
        if progress:
            print(f"fold {k + 1}/{FOLDS} (subjects {held}) {time.perf_counter() - start:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{k}{i}": np.asarray(out[r.name][k]) for i, r in enumerate(recs) for k in GRID_KEYS}
    np.savez_compressed(path, names=np.array(names), **arrays)  # type: ignore[arg-type]
    return [(r, out[r.name]) for r in recs]


@dataclass(frozen=True)
class Rule:
    """A display rule over the decoder's forward filter (its matrix, emission
    and sharpness untouched: only what is shown changes).

    - ``switch_at`` / ``lock``: the hysteresis and the posture lock's knobs
      (``lock_motion`` 0 turns the lock off);
    - ``veto``: show the raw window label (the argmax) unless the filtered
      posterior of its class is below ``veto`` (the decoder vetoes only
      clear blips) or the posture lock holds; a vetoed window falls back to
      the hysteresis (``fallback`` "decoder") or keeps what is shown ("hold");
    - ``group_at``: when the window's body motion confirms a change of
      group (above ``moving_motion`` while a still state is shown, below
      ``still_motion`` while a walk is shown), the most probable state of
      the confirmed group takes over once its posterior reaches ``group_at``.
    """

    name: str
    switch_at: float = 0.6
    lock_motion: float = 0.15
    lock_settle: int = 3
    moved_switch_at: float = 0.35
    veto: float | None = None
    fallback: str = "decoder"
    group_at: float | None = None
    moving_motion: float = 0.15
    still_motion: float = 0.03

    def display_knobs(self) -> dict:
        return {
            "switch_at": self.switch_at,
            "lock_motion": self.lock_motion,
            "lock_settle": self.lock_settle,
            "moved_switch_at": self.moved_switch_at,
        }


class RuleDecoder(Decoder):
    """The decoder with a :class:`Rule`'s display (the filter is the decoder's own)."""

    def __init__(self, params: DecoderParams, rule: Rule):
        self.rule = rule
        # a veto falling back to the hysteresis is the product's own rule (DecoderParams.follow_raw_at)
        follow = rule.veto if rule.fallback == "decoder" else None
        super().__init__(replace(params, **rule.display_knobs(), follow_raw_at=follow))
        n = len(params.classes)
        self._moving = np.array([i for i, c in enumerate(params.classes) if c not in POSTURES], dtype=np.int64)
        self._still = np.array([i for i, c in enumerate(params.classes) if c in POSTURES], dtype=np.int64)
        self._still_states = frozenset(self._still.tolist()) | frozenset(range(n, len(params.states)))

    def _choose(self, posterior: np.ndarray, probs: np.ndarray, motion: float | None) -> tuple[int, bool]:
        r = self.rule
        if r.group_at is not None and self._shown is not None and motion is not None and np.isfinite(motion):
            group = None
            if self._shown in self._still_states and motion > r.moving_motion:
                group = self._moving
            elif self._shown not in self._still_states and motion < r.still_motion:
                group = self._still
            if group is not None and len(group):
                pick = int(group[posterior[group].argmax()])
                if posterior[pick] >= r.group_at:
                    return pick, True
        if r.veto is not None and r.fallback == "hold":
            raw = int(np.argmax(probs))
            need, moved = self._switch_need(raw, motion)
            if self._shown is None or raw == self._shown or (posterior[raw] >= r.veto and np.isfinite(need)):
                return raw, moved
            return self._shown, moved
        return super()._choose(posterior, probs, motion)


class RawLabel:
    """The raw window label (the argmax the worker publishes as ``label``) as a display core."""

    def __init__(self, classes: Sequence[str]):
        self.classes = list(classes)

    def update(self, probs, motion=None, gravity=None) -> tuple[str, list[float]]:
        return self.classes[int(np.argmax(probs))], list(probs)

    def peek(self, probs, motion=None) -> tuple[str, list[float]]:
        return self.classes[int(np.argmax(probs))], list(probs)


@dataclass
class Session:
    """One session's inputs, ready for any display: rounded probabilities,
    cues, which between windows the worker's gate labels, the truth."""

    rec: Recording
    fold: int
    main: list[list[float]]
    mixed: list[list[float]]
    m0: np.ndarray
    g0: list[list[float]]
    m1: np.ndarray
    gated: np.ndarray
    truth: np.ndarray


def prepare(grids: list[tuple[Recording, dict]], classes: Sequence[str]) -> list[Session]:
    folds = fold_groups([r.subject for r, _ in grids])
    fold_of = {s: k for k, group in enumerate(folds) for s in group}
    out = []
    for rec, g in grids:
        k = min(len(g["mixed"]), len(g["main"]))
        gated = (np.abs(g["m1"][:k] - g["m0"][:k]) > GATE[0]) | (degrees(g["g1"][:k], g["g0"][:k]) > GATE[1])
        out.append(
            Session(
                rec,
                fold_of[rec.subject],
                [[round(float(v), 6) for v in p] for p in g["main"]],
                [[round(float(v), 6) for v in p] for p in g["mixed"]],
                g["m0"],
                [[float(v) for v in x] for x in g["g0"]],
                g["m1"],
                gated,
                truth_labels(rec.labels, classes),
            )
        )
    return out


def fold_params(sessions: list[Session], grids: list[tuple[Recording, dict]], classes, knobs: dict) -> list:
    """Per fold, the decoder built from the other folds' subjects only
    (transitions from their labels, emission from their out-of-fold probabilities)."""
    out = []
    for k in range(FOLDS):
        others = [(rec, g["main"]) for (rec, g), s in zip(grids, sessions) if s.fold != k]
        stats = fit.LabelStatistics(
            fit.fit_transitions([r for r, _ in others]),
            tuple(classes),
            fit.label_probability_sums(others, len(classes)),
        )
        out.append(fit.params_for(stats, classes, knobs))
    return out


def shown_lines(s: Session, core, classes) -> dict[str, np.ndarray]:
    """Per-sample display of one session in both views (one pass: the peeks leave the state)."""
    n = len(s.rec.samples)
    ends, codes, b_ends, b_codes = [], [], [], []
    for j, p in enumerate(s.main):
        ends.append(STEP * j + WINDOW - 1)
        codes.append(display_code(core.update(p, float(s.m0[j]), s.g0[j])[0], classes))
        if j < len(s.gated) and s.gated[j]:
            b_ends.append(BETWEEN + STEP * j + WINDOW - 1)
            b_codes.append(display_code(core.peek(s.mixed[j], float(s.m1[j]))[0], classes))
    e, c = np.array(ends), np.array(codes)
    return {
        "windows": timeline(n, e, c),
        "between": timeline(n, np.concatenate([e, b_ends]).astype(int), np.concatenate([c, b_codes]).astype(int)),
    }


def score_rule(sessions: list[Session], make: Callable[[int], Any], classes) -> dict:
    """Pooled and per-subject figures of one display in both views."""
    lines = [shown_lines(s, make(s.fold), classes) for s in sessions]
    out: dict = {}
    for v in VIEWS:
        per: dict[int, list[int]] = {}
        delays: list[float] = []
        changes = truths = 0
        for s, shown in zip(sessions, lines):
            c, t = sample_accuracy(s.truth, shown[v])
            acc = per.setdefault(s.rec.subject, [0, 0])
            acc[0] += c
            acc[1] += t
            delays += display_delays(s.truth, shown[v])[0]
            changes += display_changes(shown[v])
            truths += true_changes(s.truth)
        correct, total = (sum(a[i] for a in per.values()) for i in (0, 1))
        out[v] = {
            "sample_accuracy": round(correct / total, 5),
            "delay_median_s": round(float(np.median(delays)), 3),
            "changes_per_true_change": round(changes / truths, 3),
            "per_subject": {str(k): round(c / t, 5) for k, (c, t) in sorted(per.items())},
        }
    return out


def against_raw(row: dict, raw: dict) -> dict:
    """Per view: subjects won, lost (beyond the margin) and the worst loss to raw."""
    out = {}
    for v in VIEWS:
        diffs = [row[v]["per_subject"][k] - a for k, a in raw[v]["per_subject"].items()]
        out[v] = {
            "pooled_gain": round(row[v]["sample_accuracy"] - raw[v]["sample_accuracy"], 5),
            "wins": sum(d > RULE["loss_margin"] for d in diffs),
            "losses": sum(d < -RULE["loss_margin"] for d in diffs),
            "worst_loss": round(max(0.0, -min(diffs)), 5),
        }
    return out


def eligible(row: dict) -> bool:
    return all(
        row[v]["delay_median_s"] <= RULE["max_delay_s"]
        and row["vs_raw"][v]["pooled_gain"] >= 0.0
        and row["vs_raw"][v]["losses"] <= RULE["max_losing_subjects"]
        for v in VIEWS
    )


def choose(rows: dict[str, dict]) -> str | None:
    """:data:`RULE`: the eligible setting with the smallest worst per-subject loss to raw (binned), then the
    most accurate pooled with the updates between windows."""
    ok = [name for name, row in rows.items() if name != "raw" and eligible(row)]
    if not ok:
        return None

    def key(name: str) -> tuple[float, float]:
        worst = max(rows[name]["vs_raw"][v]["worst_loss"] for v in VIEWS)
        return (round(worst / RULE["worst_loss_bin"]), -rows[name]["between"]["sample_accuracy"])

    return min(ok, key=key)


def candidates() -> list[Rule]:
    rules = [Rule("shipped"), Rule("decoder_no_lock", lock_motion=0.0)]
    rules += [Rule(f"decoder_switch_{a:g}", switch_at=a) for a in (0.4, 0.5)]
    rules += [Rule("raw_lock", veto=0.0)]
    for veto, fallback in itertools.product((0.02, 0.05, 0.1, 0.2, 0.3, 0.4), ("decoder", "hold")):
        rules.append(Rule(f"veto_{veto:g}_{fallback}", veto=veto, fallback=fallback))
    for at, still, moving in itertools.product((0.0, 0.1, 0.2, 0.3), (0.02, 0.04), (0.1, 0.15)):
        rules.append(
            Rule(f"group_{at:g}_still{still:g}_moving{moving:g}", group_at=at, still_motion=still, moving_motion=moving)
        )
    for veto, at in itertools.product((0.05, 0.1, 0.2), (0.1, 0.2)):
        rules.append(Rule(f"veto_{veto:g}_group_{at:g}", veto=veto, group_at=at))
    return rules


def after_choice() -> list[Rule]:
    """Rows scored after the first pass to explain it, never candidates: the
    same vetoes without the posture lock (the losses every locked rule shares)."""
    return [Rule(f"veto_{v:g}_no_lock", veto=v, lock_motion=0.0) for v in (0.05, 0.2)]


def ship(record: dict, model: Path | None = None) -> Path:
    """Write the chosen ``follow_raw_at`` into a model's ``decoder`` entry;
    nothing else changes (the filter's matrix, emission and sharpness, which
    the history is built from, stay as they are)."""
    import json

    from harstream.models.artifact import DEFAULT_MODEL, metadata_path

    rule = record["rows"][record["chosen"]]["rule"]
    if rule["fallback"] != "decoder" or rule["group_at"] is not None or rule["veto"] is None:
        raise SystemExit(f"{record['chosen']} is no follow_raw_at rule; nothing written")
    meta_file = metadata_path(model or DEFAULT_MODEL)
    meta = json.loads(meta_file.read_text())
    entry = meta["decoder"]
    # only the new key: the stored matrix and emission are kept digit for digit (a round trip through
    # DecoderParams would renormalise and round them); the entry is checked as the worker will read it
    entry = {**entry, "follow_raw_at": float(rule["veto"])}
    DecoderParams.from_json(entry)
    chosen = {**entry.get("chosen", {})}
    row = record["rows"][record["chosen"]]
    chosen["follow_raw"] = {
        "follow_raw_at": rule["veto"],
        "training_out_of_fold": {v: {k: row[v][k] for k in KEEP} | row["vs_raw"][v] for v in VIEWS},
        "raw": {v: {k: record["rows"]["raw"][v][k] for k in KEEP} for v in VIEWS},
        "rule": record["rule_text"],
        "study": f"python -m harstream.models.studies.now_rules --write ({REPORT_NAME})",
    }
    meta["decoder"] = {**entry, "chosen": chosen}
    meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta_file


def fmt(view: dict, vs: dict) -> str:
    return (
        f"{100 * view['sample_accuracy']:.2f} % {view['delay_median_s']:.2f} s {view['changes_per_true_change']:.2f} "
        f"(vs raw {100 * vs['pooled_gain']:+.2f}, won {vs['wins']} lost {vs['losses']}, worst {100 * vs['worst_loss']:.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="now-label display rules, per subject on the training subjects")
    parser.add_argument("--grids-only", action="store_true", help="compute the out-of-fold grids and stop")
    parser.add_argument("--write", action="store_true", help="write the chosen follow_raw_at into the shipped model")
    add_reports_option(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    target = tuning.waist_target()
    grids = out_of_fold_grids(target, args.reports)
    print(f"grids of {len(grids)} sessions ready ({time.perf_counter() - start:.0f} s)", flush=True)
    if args.grids_only:
        return 0
    classes = target.classes
    _, knobs, lock = tuning.shipped_decoder()
    sessions = prepare(grids, classes)
    params = fold_params(sessions, grids, classes, knobs)
    record: dict = {"rule": RULE, "gate": GATE, "knobs": knobs, "shipped_lock": lock, "rows": {}}
    raw = score_rule(sessions, lambda _: RawLabel(classes), classes)
    raw["vs_raw"] = against_raw(raw, raw)
    record["rows"]["raw"] = raw
    print("raw:", {v: fmt(raw[v], raw["vs_raw"][v]) for v in VIEWS}, flush=True)
    for rule in candidates():

        def make(k: int, rule: Rule = rule) -> RuleDecoder:
            return RuleDecoder(params[k], rule)

        row = score_rule(sessions, make, classes)
        row["vs_raw"] = against_raw(row, raw)
        row["rule"] = {k: v for k, v in rule.__dict__.items() if k != "name"}
        row["eligible"] = eligible(row)
        record["rows"][rule.name] = row
        print(rule.name, "|", " | ".join(fmt(row[v], row["vs_raw"][v]) for v in VIEWS), flush=True)
    record["chosen"] = choose(record["rows"])
    record["rule_text"] = (
        f"median delay <= {RULE['max_delay_s']} s, pooled accuracy >= the raw window label's and at most "
        f"{RULE['max_losing_subjects']} of 21 subjects below raw by more than {100 * RULE['loss_margin']:g} points, "
        "in both views (windows only; with the updates between windows); of those the smallest worst per-subject "
        f"loss to raw (in {100 * RULE['worst_loss_bin']:g}-point bins), then the most accurate with the updates"
    )
    record["after_choice"] = {}
    for rule in after_choice():

        def make_after(k: int, rule: Rule = rule) -> RuleDecoder:
            return RuleDecoder(params[k], rule)

        row = score_rule(sessions, make_after, classes)
        row["vs_raw"] = against_raw(row, raw)
        record["after_choice"][rule.name] = row
        print("(after the choice)", rule.name, "|", " | ".join(fmt(row[v], row["vs_raw"][v]) for v in VIEWS))
    record["scored_on"] = "the 21 training subjects, out of fold (7 folds by subject); test subjects not read"
    record["seconds"] = round(time.perf_counter() - start)
    print("chosen:", record["chosen"])
    print("written", write_report(args.reports, REPORT_NAME, record))
    if args.write and record["chosen"] is not None:
        print("wrote", ship(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
