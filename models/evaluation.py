"""Evaluation of one model: accuracy, macro F1, per-class P/R/F1, confusion
matrices and their Markdown report (repeated train+evaluate is
:mod:`harstream.models.studies.repeats`).

Metrics come from scikit-learn, plots from matplotlib (Agg backend, no
display needed). Reports are Markdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harstream.stream.core.activities import ACTIVITIES

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
    def of(cls, y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str] = ACTIVITIES) -> Evaluation:
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
        rows = [
            f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |" for name, row in zip(short, self.confusion)
        ]
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
            ax.text(
                j,
                i,
                str(int(cm[i, j])),
                ha="center",
                va="center",
                color="white" if rates[i, j] > 0.5 else "black",
                fontsize=9,
            )
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
    lines += [
        "## Confusion matrix",
        "",
        "Rows: true activity; columns: predicted.",
        "",
        evaluation.confusion_text(),
        "",
    ]
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
