"""Live (streaming) accuracy of the shipped model: what a user watching the display would see.

Every held-out session is replayed through the live path as fast as possible
(:mod:`harstream.models.live_scoring`: the worker's pipeline, the worker's
runtime :func:`harstream.models.runtime.load_runtime`, the display cores) and
scored per sample, with plots for docs/report.md.

    python -m harstream.models.studies.live_accuracy [--model PATH] [--runtime auto] [--reports DIR]

A placement-free model (metadata ``placement: any``) is scored on the
held-out sessions turned by the rotations its own test used
(:func:`~harstream.models.placement_free.sessions_as_shipped`), the truth
in its classes (sitting, standing and lying are STILL); its figures go to
``any_live.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from harstream.models.live_scoring import (
    RATE,
    TRANSITION,
    SessionReplay,
    replay_session,
    score_replays,
)
from harstream.models.reports import IMAGES, add_reports_option
from harstream.stream.core.activities import ACTIVITIES, UNKNOWN
from harstream.stream.data.recordings import UCI_TEST_SUBJECTS

#: The displays scored: the model's plain argmax, what the worker published
#: unsmoothed (``unknown`` threshold on one window), the old 3-window moving
#: average, and the HMM decoder (:mod:`harstream.stream.core.decoder`, the default).
DISPLAYS = ("argmax", "raw", "smoothed", "decoder")


def plot_session(replay: SessionReplay, path: Path) -> Path:
    """Truth vs raw vs smoothed display for one session."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(replay.labels)) / RATE
    truth = np.where((replay.labels >= 1) & (replay.labels <= 6), replay.labels - 1, np.nan)
    trans = np.where(replay.labels >= 7, -0.5, np.nan)
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.plot(t, truth, lw=6, alpha=0.35, color="k", label="true activity")
    ax.plot(t, trans, lw=6, alpha=0.35, color="tab:red", label="transition (7-12)")
    for offset, kind in zip((0.12, 0.0, -0.12), ("raw", "smoothed", "decoder")):
        if kind not in replay.shown:
            continue
        shown = replay.shown[kind]
        y = np.where(shown >= 0, shown, np.where(shown == TRANSITION, -0.5, -1.0))
        ax.plot(t, y + offset, lw=1, label=f"shown ({kind})")
    ax.set_yticks(range(-1, len(replay.classes)), ["unknown / none", *[a.lower() for a in replay.classes]])
    ax.set_xlabel("seconds")
    ax.set_title(f"{replay.name}: live display vs truth")
    ax.legend(loc="upper right", fontsize=7, ncol=4)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_delays(live: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    bins = np.arange(0, 12.5, 0.5).tolist()  # matplotlib's stubs take a sequence of floats
    for kind in ("argmax", "smoothed"):
        ax.hist(np.clip(live[kind]["delays_s"], 0, 12), bins=bins, alpha=0.55, label=kind)
    ax.set_xlabel("seconds from activity change until the display shows it (12 = 12 or more)")
    ax.set_ylabel("segments")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def live_report_lines(live: dict, reports_dir: Path, doc_dir: Path) -> list[str]:
    """The live-accuracy section of docs/report.md."""
    lines = [
        "## Live (streaming) accuracy",
        "",
        f"Model `{live.get('model_id', '?')}` served by runtime `{live.get('runtime', '?')}`. "
        "Displays: `argmax` = the model's top class for the latest window; `raw` = what the worker "
        "publishes unsmoothed (`unknown` when the top probability is below the threshold); "
        f"`smoothed` = the worker's smoothed label ({live.get('smoothing', '?')}). {live['sessions']} held-out sessions, "
        f"{live['samples']:,} samples, replayed in {live.get('seconds', float('nan')):.0f} s "
        f"(`{live.get('command', 'python -m harstream.models.studies.live_accuracy')}`).",
        "",
        "| display | per-sample accuracy % (activity samples) | delay median s | delay p90 s | segments never shown | transitions shown as unknown % |",
        "|---|---|---|---|---|---|",
    ]
    for kind in DISPLAYS:
        k = live[kind]
        trans = k["transition_samples"]
        total = sum(trans.values()) or 1
        lines.append(
            f"| {kind} | {100 * k['sample_accuracy']:.2f} | {k['delay_median_s']:.2f} | {k['delay_p90_s']:.2f} | "
            f"{k['segments_never_shown']} of {k['segments_followed'] + k['segments_never_shown']} | "
            f"{100 * trans[UNKNOWN] / total:.1f} |"
        )
    lines += ["", "What the display shows during postural transitions (HAPT labels 7-12), % of transition samples:", ""]
    lines += ["| display | " + " | ".join([UNKNOWN, *[a.lower() for a in ACTIVITIES]]) + " |", "|---|" + "---|" * 7]
    for kind in DISPLAYS:
        trans = live[kind]["transition_samples"]
        total = sum(trans.values()) or 1
        lines.append(
            f"| {kind} | " + " | ".join(f"{100 * trans[k] / total:.1f}" for k in [UNKNOWN, *ACTIVITIES]) + " |"
        )
    lines.append("")
    for png in sorted(reports_dir.glob("live_*.png")):
        lines += [f"![{png.stem}]({png.relative_to(doc_dir).as_posix()})", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="replay the held-out sessions through the live path and score the display"
    )
    parser.add_argument("--model", type=Path, help="model artifact (default: the shipped one)")
    parser.add_argument("--runtime", default="auto", help="serving runtime, as the worker's --runtime")
    parser.add_argument("--windows", type=int, default=None, help="smoothing windows (default: the worker's)")
    parser.add_argument("--threshold", type=float, default=None, help="unknown threshold (default: the worker's)")
    add_reports_option(parser)
    parser.add_argument(
        "--timeline",
        type=Path,
        default=IMAGES / "live_timeline.png",
        help="the live-label picture the docs show (default: %(default)s, from the current directory)",
    )
    args = parser.parse_args(argv)

    from harstream.models.artifact import load_artifact
    from harstream.models.runtime import load_runtime
    from harstream.stream.core import smoothing
    from harstream.stream.data.recordings import load_embedded

    artifact = load_artifact(args.model)
    runtime = load_runtime(artifact, args.runtime)
    windows = args.windows or smoothing.DEFAULT_WINDOWS
    threshold = smoothing.DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    classes = artifact.classes
    if artifact.placement == "any":  # the held-out sessions turned as the model's own test turned them
        from harstream.models.placement_free import sessions_as_shipped

        recs = sessions_as_shipped(load_embedded().recordings, int(artifact.metadata.get("seed", 0)))[1]
        prefix = "any_"
    else:
        recs = load_embedded().of_subjects(UCI_TEST_SUBJECTS)
        prefix = ""
    start = time.perf_counter()
    from harstream.stream.core.decoder import display_for

    smoothers = {
        "raw": lambda: smoothing.Smoother(classes, windows=1, threshold=threshold),
        "smoothed": lambda: smoothing.Smoother(classes, windows=windows, threshold=threshold),
        "decoder": display_for(classes, artifact.metadata.get("decoder"), threshold),
    }
    replays = [
        replay_session(r, runtime.predict, smoothers, context_steps=artifact.context_steps, classes=classes)
        for r in recs
    ]
    seconds = time.perf_counter() - start
    live = score_replays(replays)
    live.update(
        model_id=artifact.model_id,
        runtime=runtime.name,
        smoothing=f"mean of last {windows} windows, unknown below {threshold}",
        seconds=seconds,
        command="python -m harstream.models.studies.live_accuracy " + " ".join(sys.argv[1:] if argv is None else argv),
    )
    args.reports.mkdir(parents=True, exist_ok=True)
    (args.reports / f"{prefix}live.json").write_text(json.dumps(live, indent=1) + "\n")
    if prefix:  # the placement-free model: its own timeline beside the report's figures
        plot_session(replays[0], args.reports / f"{prefix}live_session.png")
    else:
        plot_session(replays[0], args.reports / "live_session.png")
        plot_delays(live, args.reports / "live_delays.png")
        plot_session(replays[0], args.timeline)
    for kind in DISPLAYS:
        k = live[kind]
        print(
            f"{kind}: per-sample accuracy {100 * k['sample_accuracy']:.2f} %, delay median {k['delay_median_s']:.2f} s "
            f"p90 {k['delay_p90_s']:.2f} s, changes {k['display_changes']} for {k['true_changes']} true "
            f"({k['changes_per_true_change']:.2f}), ward events {k['ward_events']}, frames {k['ward_frames']}, "
            f"transitions {k['transition_samples']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
