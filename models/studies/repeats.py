"""The tutorial's protocol: train and evaluate an architecture several times
(seeds ``seed``, ``seed+1``…) and report mean ± std over the repeats.

It sits on top of :mod:`~harstream.models.training` (fitting) and
:mod:`~harstream.models.evaluation` (scoring); neither imports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..dataset import Windows
from ..evaluation import Evaluation, evaluate_model, evaluation_report
from ..registry import DEFAULT_EPOCHS
from ..training import train_model


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
