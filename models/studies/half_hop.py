"""A display-only update between windows: what a label every 32 samples would buy (study).

The model's windows stay 128 samples with 50 % overlap (a window every 64
samples, 1.28 s). Between two of them the display could be updated from a
second grid of windows, offset by 32 samples: the same model on windows
ending halfway between the regular ones, each with its own context windows
(64, 128 and 256 samples back in its own grid). The second grid is the
session replayed through a fresh pipeline from sample 32 (its filters start
32 samples later: they settle within the first second, which is not scored
differently). Each grid has its own decoder (its transition matrix is per
64-sample step); the display shows whichever grid's window completed last.

Scored on the validation subjects with the model of the shipped recipe fitted
on the 16 fit subjects (as the decoder's knobs are chosen); the cost is one
more model call per device every 64 samples: twice the inference.

    python -m harstream.models.studies.half_hop [--reports DIR]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from harstream.models import decoder_fit as fit
from harstream.models.live_scoring import (
    NOTHING,
    SessionReplay,
    display_code,
    score_replays,
    session_windows,
    truth_labels,
)
from harstream.models.reports import add_reports_option, write_report
from harstream.models.studies import decoder_tuning as tuning
from harstream.stream.core.decoder import Decoder, DecoderParams, window_motion
from harstream.stream.core.pipeline import STEP, WINDOW
from harstream.stream.core.smoothing import Smoother
from harstream.stream.core.transition_direction import window_gravity

REPORT_NAME = "half_hop_study.json"
OFFSET = STEP // 2
KEEP = ("sample_accuracy", "delay_median_s", "delay_p90_s", "changes_per_true_change")


def grid_labels(
    probs: np.ndarray, motion: np.ndarray, gravity: np.ndarray, core: Callable[[], Decoder | Smoother], classes
) -> list[int]:
    """Each window's shown code through one display core, in stream order."""
    c = core()
    return [
        display_code(c.update([round(float(v), 6) for v in p], float(m), [float(x) for x in g])[0], classes)
        for p, m, g in zip(probs, motion, gravity)
    ]


def timeline(n: int, ends: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per-sample shown code: each window's code from its last sample until the next window's."""
    order = np.argsort(ends, kind="stable")
    ends, codes = ends[order], codes[order]
    shown = np.full(n, NOTHING, dtype=np.int64)
    for k, (e, c) in enumerate(zip(ends, codes)):
        stop = ends[k + 1] if k + 1 < len(ends) else n
        shown[e:stop] = c
    return shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a display update every 32 samples from a second window grid")
    parser.add_argument(
        "--test",
        action="store_true",
        help="score the held-out test subjects with the shipped model and decoder (once, after the choice)",
    )
    add_reports_option(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    from harstream.models.artifact import load_artifact
    from harstream.models.dataset import VALIDATION_SUBJECTS

    waist = tuning.waist_target()
    classes = waist.classes
    shipped, knobs, lock = tuning.shipped_decoder()
    if args.test:
        from harstream.models.runtime import load_runtime
        from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_embedded

        artifact = load_artifact()
        model: Callable[[np.ndarray], np.ndarray] = load_runtime(artifact, "auto").predict
        params = DecoderParams.from_json(shipped)
        sessions = load_embedded().of_subjects(UCI_TEST_SUBJECTS)
        scored_on = f"test subjects {', '.join(map(str, UCI_TEST_SUBJECTS))}, the shipped model and decoder"
    else:
        stats = tuning.label_statistics(waist, with_validation=False, reports=args.reports)
        model = waist.fit(tuning.training_sessions(waist, with_validation=False))
        params = replace(fit.params_for(stats, classes, knobs), **lock)
        sessions = [r for r in waist.sessions() if r.subject in set(VALIDATION_SUBJECTS)]
        scored_on = (
            "validation subjects "
            + ", ".join(map(str, VALIDATION_SUBJECTS))
            + (", the shipped recipe fitted on the 16 fit subjects")
        )
    print(f"model ready ({time.perf_counter() - start:.0f} s)", flush=True)
    displays: dict[str, Callable[[], Decoder | Smoother]] = {
        "raw": lambda: Smoother(classes, 1, 0.5),
        "decoder": lambda: Decoder(params),
    }
    replays = []
    for rec in sessions:
        shown: dict[str, np.ndarray] = {}
        n = len(rec.samples)
        grids = []
        for offset in (0, OFFSET):
            x = session_windows(rec.samples[offset:], context_steps=waist.context)
            own = x[:, 0] if waist.context else x
            probs = tuning.predict_in_batches(model, x)
            ends = offset + STEP * np.arange(len(x)) + WINDOW - 1
            grids.append((ends, probs, window_motion(own), window_gravity(own)))
        for kind, core in displays.items():
            one = grids[0]
            shown[f"{kind}_64"] = timeline(n, one[0], np.array(grid_labels(*one[1:], core, classes)))
            ends = np.concatenate([g[0] for g in grids])
            codes = np.concatenate([grid_labels(*g[1:], core, classes) for g in grids])
            shown[f"{kind}_32"] = timeline(n, ends, codes)
        replays.append(SessionReplay(rec.name, truth_labels(rec.labels, classes), shown, tuple(classes)))
    scored = score_replays(replays, events=False)
    record: dict = {
        kind: {k: round(float(scored[kind][k]), 4) for k in KEEP}
        for kind in ("raw_64", "raw_32", "decoder_64", "decoder_32")
    }
    record["scored_on"] = scored_on
    record["decoder"] = {**knobs, **lock}
    record["seconds"] = round(time.perf_counter() - start)
    for kind in ("raw_64", "raw_32", "decoder_64", "decoder_32"):
        r = record[kind]
        print(
            f"{kind}: {100 * r['sample_accuracy']:.2f} % delay {r['delay_median_s']:.2f} s "
            f"p90 {r['delay_p90_s']:.2f} changes/true {r['changes_per_true_change']:.2f}"
        )
    report = write_report(
        args.reports, REPORT_NAME.replace(".json", "_test.json") if args.test else REPORT_NAME, record
    )
    print("written", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
