"""``harstream train``: train a model on pipeline windows and save the artifact.

Example: ``harstream train --model cnn_lstm`` (embedded data, the tutorial's
epochs, saved under ``runs/``). The shipped model is only replaced when
``--out models/pretrained/default.keras`` says so.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shlex
import sys
from pathlib import Path

from harstream.commands._options import EPOCHS, SEED, Number

SEED_MODELS = ("lstm", "cnn_lstm", "conv_lstm")


def model_names() -> list[str]:
    """Registered architectures (imports the registry, which is light: no TF)."""
    from harstream.models.registry import ARCHITECTURES
    from harstream.models.training import ESTIMATORS

    return sorted(ARCHITECTURES) + list(ESTIMATORS)


def _epochs_help() -> str:
    from harstream.models.registry import DEFAULT_EPOCHS

    return ", ".join(f"{name} {n}" for name, n in sorted(DEFAULT_EPOCHS.items()))


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--data and --subjects, shared with ``harstream evaluate``."""
    parser.add_argument(
        "--data",
        default=None,
        metavar="SRC",
        help="recording source: 'embedded' (default), a HAPT RawData folder, a CSV file or folder, "
        "or a UCI HAR Dataset folder",
    )
    parser.add_argument(
        "--subjects",
        default=None,
        metavar="LIST",
        help="use only these subjects, e.g. '1,2,3,4' (quick runs); the split stays UCI's",
    )
    parser.add_argument(
        "--test-subjects",
        default=None,
        metavar="LIST",
        help="held-out subjects (default: UCI's 2,4,9,10,12,13,18,20,24)",
    )


def parse_subjects(text: str | None) -> list[int] | None:
    """'1,2, 5-7' -> [1, 2, 5, 6, 7]; None stays None."""
    if text is None:
        return None
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"subjects {text!r}: {part!r} is not a number or a range a-b") from None
    return out


def load_data(args: argparse.Namespace, progress: bool = True, context_steps: tuple[int, ...] = ()):
    """TrainingData for the --data/--subjects/--test-subjects arguments
    (windows with their past windows for a model with ``context_steps``)."""
    from harstream.models.training import load_training_data
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS

    test = parse_subjects(args.test_subjects) or list(UCI_TEST_SUBJECTS)
    return load_training_data(
        args.data,
        test_subjects=test,
        subjects=parse_subjects(args.subjects),
        progress=progress,
        context_steps=context_steps,
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="cnn_lstm",
        choices=model_names(),
        help="architecture (default cnn_lstm; lstm, cnn_lstm, conv_lstm are the tutorial's; the shipped default is made by python -m harstream.models.studies.compare, see models/pretrained/README.md)",
    )
    add_data_arguments(parser)
    parser.add_argument("--epochs", type=EPOCHS, default=None, help=f"default: the architecture's ({_epochs_help()})")
    parser.add_argument("--batch-size", type=Number(int, 1, 65_536), default=64, help="windows per step (default 64)")
    parser.add_argument("--seed", type=SEED, default=0, help="initialisation, shuffling and augmentation (default 0)")
    parser.add_argument(
        "--context",
        default=None,
        metavar="STEPS",
        help="svm only: also feed each window's past windows this many steps back, e.g. 1,2,4 "
        "(the shipped default's; the worker keeps them per device)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PATH.keras",
        help="artifact path (default runs/<model>-<UTC time>.keras)",
    )
    parser.add_argument(
        "--progress",
        choices=("bar", "epoch", "none"),
        default="bar" if sys.stdout.isatty() else "epoch",
        help="Keras progress: a bar per epoch, one line per epoch, or none",
    )
    parser.add_argument(
        "--finetune",
        type=Path,
        default=None,
        metavar="BASE.keras",
        help="fine-tune this model on --data (your own CSV recordings) instead of training --model "
        "(harstream.models.finetune; see docs/evaluation.md)",
    )


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides the report
    from harstream.models.registry import DEFAULT_EPOCHS
    from harstream.models.training import ESTIMATORS, train_and_save
    from harstream.stream.core.activities import ACTIVITIES
    from harstream.stream.data.recordings import RecordingError

    if args.epochs is not None and args.epochs < 1:
        print(f"harstream train: --epochs must be >= 1, got {args.epochs}", file=sys.stderr)
        return 2
    if args.finetune is not None:
        from harstream.models.finetune import finetune

        if args.data is None or args.out is None:
            print("harstream train --finetune: give --data (your CSV recordings) and --out PATH.keras", file=sys.stderr)
            return 2
        try:  # the base model's file and the data are checked before TensorFlow is imported
            result = finetune(args.finetune, args.data, args.out, epochs=args.epochs or 5, seed=args.seed, verbose=2)
        except ValueError as exc:  # RecordingError, ArtifactError, no labelled windows: said, not a traceback
            print(f"harstream train --finetune: {exc}", file=sys.stderr)
            return 2
        print(f"fine-tuned on {result.windows} windows -> {result.path}")
        if result.held_out:
            print(
                f"held-out {result.held_out}: {100 * result.accuracy_before:.1f} % before, {100 * result.accuracy_after:.1f} % after"
            )
        return 0
    out = args.out
    if out is None:
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        out = Path("runs") / f"{args.model}-{stamp}.keras"
    if out.suffix != ".keras":
        print(f"harstream train: --out {out}: the artifact must end in .keras", file=sys.stderr)
        return 2
    try:
        context = tuple(parse_subjects(args.context) or ()) if args.context else ()
        if context and args.model != "svm":
            raise ValueError(f"--context is for --model svm only, not {args.model}")
        data = load_data(args, context_steps=context)
    except (RecordingError, ValueError, argparse.ArgumentTypeError) as exc:  # ArgumentTypeError: --subjects, --context
        print(f"harstream train: {exc}", file=sys.stderr)
        return 2
    print(data.describe(), flush=True)
    if len(data.train) == 0:
        print("harstream train: no training windows (all chosen subjects are test subjects)", file=sys.stderr)
        return 2
    if len(data.test) == 0:
        print(
            "no held-out windows: the model will not be scored (none of --data's subjects is a test subject; "
            "an own CSV without a subject column is subject 0, a training subject)",
            flush=True,
        )
    if args.model in ESTIMATORS:
        missing = sorted(set(range(len(ACTIVITIES))) - {int(y) for y in data.train.y})
        if missing:
            print(
                f"harstream train: no training windows of {', '.join(ACTIVITIES[k] for k in missing)}: "
                f"--model {args.model} needs all {len(ACTIVITIES)} activities; record them, or fine-tune the "
                "shipped model on yours (harstream train --finetune models/pretrained/default.keras --data ...)",
                file=sys.stderr,
            )
            return 2
        epochs = None
        print(
            f"fitting svm with scikit-learn (--epochs and --batch-size do not apply), seed {args.seed}"
            + (f", context {list(context)}" if context else ""),
            flush=True,
        )
    else:
        epochs = args.epochs or DEFAULT_EPOCHS[args.model]
        print(f"training {args.model}: {epochs} epochs, batch {args.batch_size}, seed {args.seed}", flush=True)
    result = train_and_save(
        args.model,
        data,
        out,
        epochs=epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        verbose={"bar": 1, "epoch": 2, "none": 0}[args.progress],
        command=shlex.join(["harstream", "train", *sys.argv[2:]]) if sys.argv[1:2] == ["train"] else None,
        context_steps=context,
    )
    print(f"trained in {result.seconds:.0f} s")
    if result.evaluation is not None:
        print(f"held-out subjects: {result.evaluation.summary()} on {len(data.test):,} windows")
    print(f"saved {result.path} (+ {result.path.with_suffix('.json').name})")
    return 0
