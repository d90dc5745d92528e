"""Training windows, made by the live pipeline itself (no train/serve skew)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from harstream.stream.core.pipeline import STEP, WINDOW, cut_windows, preprocess_recording
from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, Recording


@dataclass(frozen=True)
class Windows:
    """Labelled windows: ``x`` (n, 128, 9) float32 — (n, 1 + k, 128, 9) with k
    context windows — ``y`` class 0-5, subject."""

    x: np.ndarray
    y: np.ndarray
    subjects: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, mask: np.ndarray) -> Windows:
        return Windows(self.x[mask], self.y[mask], self.subjects[mask])

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=6)


def segment_windows(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start sample and class (0-5) of every window lying wholly inside one
    activity segment (labels 1-6), windows aligned to each segment's start
    with a 64-sample step, as UCI HAR cut them.

    >>> starts, classes = segment_windows(np.array([-1] * 10 + [1] * 200 + [7] * 5))  # 200 samples: 2 windows
    >>> starts.tolist(), classes.tolist()
    ([10, 74], [0, 0])
    """
    labels = np.asarray(labels)
    change = np.flatnonzero(np.diff(labels)) + 1
    seg_starts = np.concatenate([[0], change])
    seg_ends = np.concatenate([change, [len(labels)]])
    starts: list[np.ndarray] = []
    classes: list[np.ndarray] = []
    for a, b in zip(seg_starts, seg_ends):
        if 1 <= labels[a] <= 6 and b - a >= WINDOW:
            s = np.arange(a, b - WINDOW + 1, STEP)
            starts.append(s)
            classes.append(np.full(len(s), int(labels[a]) - 1))
    if not starts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(starts).astype(np.int64), np.concatenate(classes).astype(np.int64)


def context_windows(processed: np.ndarray, starts: np.ndarray, steps: Sequence[int]) -> np.ndarray:
    """``(n, 1 + len(steps), 128, 9)``: the window at each start and the windows
    ``steps`` × 64 samples before it, as the worker's
    :class:`~harstream.stream.core.context.WindowContext` stacks them: where the
    recording has fewer whole steps before the window, the earliest window on
    the same 64-sample grid stands in.

    >>> p = np.arange(600, dtype=np.float32)[:, None] * np.ones((1, 9), np.float32)
    >>> context_windows(p, np.array([100, 300]), (1, 2))[:, :, 0, 0].tolist()
    [[100.0, 36.0, 36.0], [300.0, 236.0, 172.0]]
    """
    return processed[context_starts(starts, steps)[:, :, None] + np.arange(WINDOW)]


def context_starts(starts: np.ndarray, steps: Sequence[int]) -> np.ndarray:
    """``(n, 1 + len(steps))`` first samples of each window and its context
    windows (:func:`context_windows`' rule).

    >>> context_starts(np.array([100, 300]), (1, 2)).tolist()
    [[100, 36, 36], [300, 236, 172]]
    """
    starts = np.asarray(starts, np.int64)
    behind = starts // STEP  # whole steps between the grid's first window and this one
    return np.stack([starts] + [starts - STEP * np.minimum(step, behind) for step in steps], axis=1)


def labelled_windows(
    recordings: Iterable[Recording],
    progress: bool = False,
    context_steps: Sequence[int] = (),
    preprocess: Callable[[np.ndarray], np.ndarray] = preprocess_recording,
) -> Windows:
    """Run each recording through the live filters (or another ``preprocess``,
    for studies) and cut the windows that lie wholly inside one labelled
    activity; with ``context_steps`` each window comes with the windows before
    it (:func:`context_windows`)."""
    recordings = list(recordings)
    if progress:
        from tqdm import tqdm

        recordings = tqdm(recordings, desc="windowing sessions", unit="session")
    xs, ys, ss = [], [], []
    for rec in recordings:
        starts, classes = segment_windows(rec.labels)
        # float32 first: live samples cross the bus as float32, so training
        # sees exactly the numbers a replayed device would deliver.
        processed = preprocess(rec.samples.astype(np.float32))
        xs.append(
            context_windows(processed, starts, context_steps) if context_steps else cut_windows(processed, starts)
        )
        ys.append(classes)
        ss.append(np.full(len(classes), rec.subject, dtype=np.int64))
    if not xs:
        shape = (0, 1 + len(context_steps), WINDOW, 9) if context_steps else (0, WINDOW, 9)
        return Windows(np.empty(shape, np.float32), np.empty(0, np.int64), np.empty(0, np.int64))
    return Windows(np.concatenate(xs), np.concatenate(ys), np.concatenate(ss))


def split_by_subject(windows: Windows, test_subjects: Sequence[int] = UCI_TEST_SUBJECTS) -> tuple[Windows, Windows]:
    """(train, test) split by subject, UCI's test subjects by default."""
    test = np.isin(windows.subjects, list(test_subjects))
    return windows.take(~test), windows.take(test)


#: Five of the 21 UCI training subjects, spread over the range, fixed before
#: any run so that the choice cannot be tuned on results. Every choice
#: (architecture, epochs, the SVM's C, the display decoder) is scored on them;
#: the UCI test subjects are scored once per final run.
VALIDATION_SUBJECTS = (3, 8, 16, 22, 28)


def validation_split(train: Windows, subjects: Sequence[int] = VALIDATION_SUBJECTS) -> tuple[Windows, Windows]:
    """(fit, validation) windows, both from training subjects only."""
    return split_by_subject(train, test_subjects=subjects)
