"""``harstream evaluate``: score a saved model, or repeat train+evaluate.

- ``harstream evaluate`` (or ``--artifact PATH.keras``): the shipped model
  (or the given artifact) on the held-out subjects' windows; prints a
  Markdown report (accuracy, macro F1, confusion matrix, per-class P/R/F1).
- ``harstream evaluate --model cnn_lstm --repeats 5``: train and evaluate
  five times as the tutorial did; mean ± std, and the best run's confusion
  matrix and per-class scores. With ``--report``, the report is rewritten
  after every repeat, so a cut-short run still leaves its finished repeats.
- ``harstream evaluate --model lstm cnn_lstm conv_lstm --repeats 5
  --report-dir docs/reports``: several architectures, round-robin, one
  report each, and a summary table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from harstream.commands._options import EPOCHS, SEED, Number

from .train import add_data_arguments, load_data, model_names, parse_subjects


def configure(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--artifact",
        type=Path,
        default=None,
        metavar="PATH.keras",
        help="evaluate this saved model (default, without --model: the shipped models/pretrained/default.keras)",
    )
    what.add_argument(
        "--model",
        nargs="+",
        choices=model_names(),
        default=None,
        metavar="NAME",
        help=f"train and evaluate these architectures ({', '.join(model_names())}); several run round-robin "
        "(repeat i of each before repeat i+1), so a job stopped early compares them on equal repeats",
    )
    parser.add_argument(
        "--repeats", type=Number(int, 1, 1000), default=5, help="train+evaluate runs with --model (default 5)"
    )
    parser.add_argument("--epochs", type=EPOCHS, default=None, help="with --model; default: the architecture's")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the first run; run i uses seed+i")
    add_data_arguments(parser)
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="PATH.md",
        help="also write the Markdown report here, and the confusion matrix PNG beside it (PATH.png)",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="with several --model: write DIR/<model>.md and DIR/<model>.png for each",
    )
    parser.add_argument("--progress", choices=("bar", "epoch", "none"), default="none", help="Keras progress per run")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="write docs/report.md: every model's recorded results in one table, confusion matrices, "
        "live accuracy (the final protocol; harstream.models.studies.compare)",
    )


def _command_line() -> str:
    return shlex.join(["harstream", *sys.argv[1:]])


def _display(path: Path) -> str:
    """``path`` relative to the working directory when inside it (reports get committed)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _write(report: str, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report)


def run_artifact(args: argparse.Namespace) -> int:
    """The model and the data are checked, and the data windowed, before
    TensorFlow is imported (seconds): a wrong ``--data`` or subject list is
    said at once, not after the model loaded."""
    from harstream.models.artifact import ArtifactError, check_artifact, context_steps_of, load_artifact
    from harstream.models.evaluation import evaluate_model, evaluation_report, plot_confusion_matrix
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, RecordingError

    try:
        meta = check_artifact(args.artifact)
    except ArtifactError as exc:
        print(f"harstream evaluate: {exc}", file=sys.stderr)
        return 2
    held_out = (
        parse_subjects(args.test_subjects) or meta.get("split", {}).get("test_subjects") or list(UCI_TEST_SUBJECTS)
    )
    if args.subjects:
        chosen = parse_subjects(args.subjects) or []
        if not set(chosen) & set(held_out):
            print(
                f"harstream evaluate: none of subjects {args.subjects} is held out from this model "
                f"(held out: {', '.join(map(str, held_out))}); evaluating on training subjects would flatter it",
                file=sys.stderr,
            )
            return 2
        held_out = [s for s in held_out if s in set(chosen)]
    args.test_subjects = ",".join(str(s) for s in held_out)
    args.subjects = args.test_subjects  # window only the held-out subjects: faster
    try:
        data = load_data(args, progress=False, context_steps=context_steps_of(meta))
    except (RecordingError, ValueError, argparse.ArgumentTypeError) as exc:
        print(f"harstream evaluate: {exc}", file=sys.stderr)
        return 2
    if len(data.test) == 0:
        print(
            f"harstream evaluate: {data.source} has no labelled windows of the held-out subjects "
            f"{', '.join(map(str, held_out))}; choose others with --test-subjects",
            file=sys.stderr,
        )
        return 2
    try:
        artifact = load_artifact(args.artifact)  # TensorFlow from here on
    except ArtifactError as exc:
        print(f"harstream evaluate: {exc}", file=sys.stderr)
        return 2
    evaluation = evaluate_model(artifact.model, data.test)
    trained_on = meta.get("data", {})
    same_source = trained_on.get("sha256") == data.sha256
    intro = [
        f"Model `{artifact.model_id}` ({_display(artifact.path)}), architecture {meta.get('architecture')}, "
        f"{_training(meta)}, seed {meta.get('seed')}, trained on {meta.get('windows', {}).get('train', 0):,} windows "
        f"of `{trained_on.get('source')}`.",
        "",
        f"Evaluated on {len(data.test):,} windows of held-out subjects "
        f"{', '.join(map(str, sorted(set(data.test.subjects.tolist()))))} "
        f"from `{data.source}`" + ("" if same_source else " (NOT the source it was trained on)") + ", "
        f"windowed by the {data.windowed_by}.",
        "",
        f"Command: `{_command_line()}`",
    ]
    png = args.report.with_suffix(".png") if args.report else None
    if png is not None:
        plot_confusion_matrix(evaluation, png, title=f"{artifact.model_id}: {100 * evaluation.accuracy:.1f} %")
    report = evaluation_report(
        f"{artifact.model_id} on the held-out subjects",
        evaluation,
        intro,
        png,
        args.report.parent if args.report else None,
    )
    _write(report, args.report)
    print(report)
    if args.report:
        print(f"wrote {args.report}" + (f" and {png}" if png else ""))
    return 0


def run_repeats(args: argparse.Namespace) -> int:
    from harstream.models.evaluation import plot_confusion_matrix
    from harstream.models.registry import DEFAULT_EPOCHS
    from harstream.models.studies.repeats import RepeatResult, repeat_evaluations, repeat_report
    from harstream.stream.data.recordings import RecordingError

    if args.repeats < 1:
        print(f"harstream evaluate: --repeats must be >= 1, got {args.repeats}", file=sys.stderr)
        return 2
    if len(args.model) > 1 and args.report:
        print("harstream evaluate: with several --model use --report-dir, not --report", file=sys.stderr)
        return 2
    try:
        data = load_data(args, progress=False)
    except (RecordingError, ValueError, argparse.ArgumentTypeError) as exc:
        print(f"harstream evaluate: {exc}", file=sys.stderr)
        return 2
    if len(data.train) == 0 or len(data.test) == 0:
        print("harstream evaluate: need both training and held-out windows", file=sys.stderr)
        return 2
    print(data.describe(), flush=True)
    reports: dict[str, Path | None] = {}
    for name in args.model:
        if args.report_dir:
            reports[name] = args.report_dir / f"{name}.md"
        else:
            reports[name] = args.report
    pngs = {
        name: report.with_suffix(".png") if report else Path("runs") / f"{name}-confusion.png"
        for name, report in reports.items()
    }

    def intro(name: str) -> list[str]:
        epochs = args.epochs or DEFAULT_EPOCHS[name]
        return [
            f"Architecture `{name}`, {epochs} epochs, batch 64, seeds {args.seed}…{args.seed + args.repeats - 1}.",
            "",
            f"Data: `{data.source}` (sha256 `{data.sha256[:12]}`), windowed by the {data.windowed_by}; "
            f"{len(data.train):,} training windows, {len(data.test):,} held-out windows of subjects "
            f"{', '.join(map(str, sorted(set(data.test.subjects.tolist()))))}.",
            "",
            f"Command: `{_command_line()}`",
        ]

    def save(result: RepeatResult) -> str:
        report, png = reports[result.arch], pngs[result.arch]
        plot_confusion_matrix(result.best, png, title=_png_title(result))
        text = repeat_report(result, intro(result.arch), png, report.parent if report else None)
        _write(text, report)
        return text

    def on_repeat(result: RepeatResult) -> None:
        print(
            f"{result.arch} run {len(result.accuracies)}/{args.repeats}: accuracy {100 * result.accuracies[-1]:.2f} % "
            f"(training {result.train_seconds[-1]:.0f} s)",
            flush=True,
        )
        if reports[result.arch]:  # rewrite after every run: a cut-short job keeps its finished repeats
            save(result)

    results = repeat_evaluations(
        args.model,
        data.train,
        data.test,
        repeats=args.repeats,
        epochs=args.epochs,
        seed=args.seed,
        verbose={"bar": 1, "epoch": 2, "none": 0}[args.progress],
        on_repeat=on_repeat,
    )
    for result in results.values():
        print(save(result))
    print("| model | accuracy (mean ± std) | repeats | epochs | training s per run |")
    print("|---|---:|---:|---:|---:|")
    for name, result in results.items():
        print(
            f"| {name} | {100 * result.mean:.1f} % ± {100 * result.std:.1f} | {len(result.accuracies)} | "
            f"{result.epochs} | {sum(result.train_seconds) / len(result.train_seconds):.0f} |"
        )
    written = [str(p) for p in pngs.values()] + [str(r) for r in reports.values() if r]
    print("wrote " + ", ".join(written))
    return 0


def _png_title(result) -> str:
    return f"{result.arch}, best of {len(result.accuracies)}: {100 * result.best.accuracy:.1f} %"


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides the report
    if args.epochs is not None and args.epochs < 1:
        print(f"harstream evaluate: --epochs must be >= 1, got {args.epochs}", file=sys.stderr)
        return 2
    if args.compare:
        from harstream.models.studies.compare import main as compare_main

        return compare_main(["report"])
    try:
        return run_repeats(args) if args.model else run_artifact(args)
    except argparse.ArgumentTypeError as exc:
        print(f"harstream evaluate: {exc}", file=sys.stderr)
        return 2


def _training(meta: dict) -> str:
    """How a model was trained, for the report's first line: epochs for a
    network, none for a model fitted in closed form (an SVM records 1).

    >>> _training({"architecture": "lstm", "epochs": 15})
    '15 epochs'
    >>> _training({"architecture": "svm-C1-context1-2-4", "epochs": 1, "recipe": {"architecture": "svm"}})
    'fitted in closed form'
    """
    if (meta.get("recipe") or {}).get("architecture") == "svm" or str(meta.get("architecture", "")).startswith("svm"):
        return "fitted in closed form"
    return f"{meta.get('epochs')} epochs"
