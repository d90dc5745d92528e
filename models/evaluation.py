"""Evaluation: accuracy, macro F1, per-class P/R/F1, confusion matrices, and
the tutorial's repeated train+evaluate (mean ± std over repeats).

Metrics come from scikit-learn, plots from matplotlib (Agg backend, no
display needed). Reports are Markdown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harstream.stream.activities import ACTIVITIES

from .dataset import Windows

PREDICT_BATCH = 512


@dataclass
class Evaluation:
    """Scores of one model on one set of labelled windows."""

    accuracy: float
    macro_f1: float
    precision: np.ndarray  # per class
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    confusion: np.ndarray  # rows: true class, columns: predicted
    classes: tuple[str, ...] = ACTIVITIES

    @classmethod
    def of(cls, y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str] = ACTIVITIES) -> "Evaluation":
        """Score predicted class indices against true ones.

        >>> e = Evaluation.of(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]))
        >>> round(e.accuracy, 2), e.confusion[1].tolist()[:3]
        (0.75, [0, 1, 1])
        """
        from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

        labels = list(range(len(classes)))
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        return cls(
            accuracy=float(accuracy_score(y_true, y_pred)),
            macro_f1=float(np.mean(f)),
            precision=p,
            recall=r,
            f1=f,
            support=s,
            confusion=confusion_matrix(y_true, y_pred, labels=labels),
            classes=tuple(classes),
        )

    def confusion_text(self) -> str:
        """The confusion matrix as a Markdown table (rows true, columns predicted)."""
        short = [c.lower().replace("walking_", "walk_") for c in self.classes]
        head = "| true \\ predicted | " + " | ".join(short) + " |"
        rule = "|---|" + "---:|" * len(short)
        rows = [f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |" for name, row in zip(short, self.confusion)]
        return "\n".join([head, rule, *rows])

    def per_class_text(self) -> str:
        """Per-class precision, recall, F1 and support as a Markdown table."""
        lines = ["| class | precision | recall | F1 | windows |", "|---|---:|---:|---:|---:|"]
        for i, name in enumerate(self.classes):
            lines.append(
                f"| {name} | {self.precision[i]:.3f} | {self.recall[i]:.3f} | {self.f1[i]:.3f} | {int(self.support[i])} |"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        return f"accuracy {100 * self.accuracy:.2f} %, macro F1 {100 * self.macro_f1:.2f} %"


def predict_classes(model: Any, x: np.ndarray, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """Most probable class index of every window."""
    probs = model.predict(np.asarray(x, np.float32), batch_size=batch_size, verbose=0)
    return np.asarray(probs).argmax(axis=1)


def evaluate_model(model: Any, windows: Windows) -> Evaluation:
    """Score ``model`` (a Keras model over pipeline windows) on ``windows``."""
    if len(windows) == 0:
        raise ValueError("no windows to evaluate on")
    return Evaluation.of(windows.y, predict_classes(model, windows.x))


def plot_confusion_matrix(evaluation: Evaluation, path: str | Path, title: str = "") -> Path:
    """Write the confusion matrix (counts, row-normalised colour) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cm = evaluation.confusion
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.4), dpi=110)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=9)  # fmt: skip
    names = [c.lower() for c in evaluation.classes]
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {100 * evaluation.accuracy:.1f} %")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


@dataclass
class RepeatResult:
    """Accuracies of repeated train+evaluate runs of one architecture."""

    arch: str
    epochs: int
    accuracies: list[float] = field(default_factory=list)
    macro_f1s: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    best: Evaluation | None = None
    best_index: int = -1
    planned: int = 0

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Population std over repeats, as the tutorial's ``numpy.std``."""
        return float(np.std(self.accuracies))

    def summary(self) -> str:
        """E.g. ``lstm: 89.70 % ± 1.30 over 5 repeats (15 epochs, 75 s per run)``."""
        return (
            f"{self.arch}: {100 * self.mean:.2f} % ± {100 * self.std:.2f} over {len(self.accuracies)} "
            f"repeats ({self.epochs} epochs, {np.mean(self.train_seconds):.0f} s training per run)"
        )

    def add(self, evaluation: Evaluation, seconds: float, seed: int) -> None:
        """Record one finished run."""
        self.accuracies.append(evaluation.accuracy)
        self.macro_f1s.append(evaluation.macro_f1)
        self.train_seconds.append(seconds)
        self.seeds.append(seed)
        if self.best is None or evaluation.accuracy > self.best.accuracy:
            self.best, self.best_index = evaluation, len(self.accuracies) - 1


def train_and_score(
    arch: str, train: Windows, test: Windows, epochs: int | None = None, seed: int = 0, verbose: int | str = 0
) -> tuple[Evaluation, float]:
    """One run: train ``arch`` with ``seed``, score on ``test``; (evaluation, training seconds)."""
    from .training import train_model

    started = time.perf_counter()
    model = train_model(arch, train, epochs=epochs, seed=seed, verbose=verbose)
    seconds = time.perf_counter() - started
    return evaluate_model(model, test), seconds


def repeat_evaluation(
    arch: str,
    train: Windows,
    test: Windows,
    repeats: int = 10,
    epochs: int | None = None,
    seed: int = 0,
    verbose: int | str = 0,
    on_repeat: Callable[[RepeatResult], None] | None = None,
) -> RepeatResult:
    """Train ``arch`` ``repeats`` times (seeds ``seed``, ``seed+1``…) and score
    each on ``test``, as the tutorial's ``run_experiment`` did.

    ``on_repeat(result)`` is called after each run with the result so far
    (progress, partial reports). The best run's :class:`Evaluation` is kept.
    """
    results = repeat_evaluations([arch], train, test, repeats, epochs, seed, verbose, on_repeat)
    return results[arch]


def repeat_evaluations(
    archs: Sequence[str],
    train: Windows,
    test: Windows,
    repeats: int = 10,
    epochs: int | None = None,
    seed: int = 0,
    verbose: int | str = 0,
    on_repeat: Callable[[RepeatResult], None] | None = None,
) -> dict[str, RepeatResult]:
    """:func:`repeat_evaluation` for several architectures, round-robin: run
    ``i`` of every architecture before run ``i+1`` of any, so a job stopped
    early has compared them on the same number of repeats and seeds.

    ``epochs`` overrides every architecture's default when given.
    """
    from .architectures import DEFAULT_EPOCHS

    results = {
        arch: RepeatResult(arch=arch, epochs=int(epochs or DEFAULT_EPOCHS[arch]), planned=repeats) for arch in archs
    }
    for i in range(repeats):
        for arch, result in results.items():
            evaluation, seconds = train_and_score(arch, train, test, result.epochs, seed + i, verbose)
            result.add(evaluation, seconds, seed + i)
            if on_repeat is not None:
                on_repeat(result)
    return results


def evaluation_report(
    title: str,
    evaluation: Evaluation,
    intro: Sequence[str] = (),
    png: str | Path | None = None,
    report_dir: str | Path | None = None,
) -> str:
    """A Markdown report of one evaluation: summary, confusion matrix, P/R/F1.

    ``png`` is linked relative to ``report_dir`` when both are given.
    """
    lines = [f"# {title}", "", *intro]
    if intro:
        lines.append("")
    lines += [f"**{evaluation.summary()}** on {int(evaluation.support.sum()):,} windows.", ""]
    lines += ["## Confusion matrix", "", "Rows: true activity; columns: predicted.", "", evaluation.confusion_text(), ""]
    if png is not None:
        target = Path(png)
        if report_dir is not None:
            try:
                target = target.resolve().relative_to(Path(report_dir).resolve())
            except ValueError:
                pass
        lines += [f"![confusion matrix]({target.as_posix()})", ""]
    lines += ["## Per class", "", evaluation.per_class_text(), ""]
    return "\n".join(lines)


def repeat_report(
    result: RepeatResult,
    intro: Sequence[str] = (),
    png: str | Path | None = None,
    report_dir: str | Path | None = None,
) -> str:
    """Markdown report of a repeated evaluation: mean ± std, every run, and the
    best run's confusion matrix and per-class scores."""
    runs = ["| run | seed | accuracy | macro F1 | training s |", "|---:|---:|---:|---:|---:|"]
    for i, (seed, acc, f1, sec) in enumerate(
        zip(result.seeds, result.accuracies, result.macro_f1s, result.train_seconds)
    ):
        runs.append(f"| {i + 1} | {seed} | {100 * acc:.2f} | {100 * f1:.2f} | {sec:.0f} |")
    done = len(result.accuracies)
    partial = [] if done >= result.planned else [f"*Partial: {done} of {result.planned} planned repeats finished.*", ""]
    head = [
        *intro,
        "",
        *partial,
        f"**{result.summary()}**",
        "",
        "Accuracy is on the held-out subjects; ± is the population standard deviation over repeats.",
        "",
        *runs,
        "",
        f"The best run (run {result.best_index + 1}) in detail:",
    ]
    assert result.best is not None
    return evaluation_report(f"{result.arch}: repeated evaluation", result.best, head, png, report_dir)
