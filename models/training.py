"""Training: windows from a recording source -> a fitted model -> an artifact.

The whole API:

- :func:`load_training_data` turns a source (whatever
  :func:`~harstream.stream.data.recordings.load_dataset` accepts, or a UCI HAR
  folder) into train/test :class:`~harstream.models.dataset.Windows`, split
  by subject, with the source's name and hash for provenance.
- :func:`train_model` builds a registered architecture and fits it, seeded.
- :func:`train_and_save` does both, evaluates on the held-out subjects and
  writes the ``.keras`` artifact plus its metadata.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harstream.stream.data.recordings import UCI_TEST_SUBJECTS

from .dataset import Windows, labelled_windows, split_by_subject
from .registry import ARCHITECTURES, DEFAULT_EPOCHS, N_CLASSES, ChannelStats, build_model

if TYPE_CHECKING:
    import keras

    from .evaluation import Evaluation

BATCH_SIZE = 64
PIPELINE = "harstream causal pipeline"
UCI_WINDOWS = "UCI HAR Dataset windows (the dataset's own offline filters)"


@dataclass(frozen=True)
class TrainingData:
    """Train and test windows of one source, with provenance."""

    train: Windows
    test: Windows
    source: str
    sha256: str
    test_subjects: tuple[int, ...]
    windowed_by: str = PIPELINE

    def describe(self) -> str:
        """One line per split: window counts and class counts."""
        lines = [f"data: {self.source} (sha256 {self.sha256[:12]}), windows by {self.windowed_by}"]
        for name, w in (("train", self.train), ("test", self.test)):
            subjects = sorted(set(w.subjects.tolist()))
            lines.append(
                f"{name}: {len(w):,} windows from {len(subjects)} subjects; per class {w.class_counts().tolist()}"
            )
        return "\n".join(lines)


def load_training_data(
    source: str | Path | None = None,
    test_subjects: Sequence[int] = UCI_TEST_SUBJECTS,
    subjects: Iterable[int] | None = None,
    progress: bool = False,
    context_steps: Sequence[int] = (),
) -> TrainingData:
    """Windows of ``source`` split by subject (UCI's test subjects by default).

    Recordings are windowed by the live pipeline
    (:func:`~harstream.models.dataset.labelled_windows`); a UCI HAR Dataset
    folder is already windowed and is used as it is. ``subjects`` keeps only
    those subjects (for quick runs and tests); ``context_steps`` adds each
    window's past windows, as a context model takes them.
    """
    from harstream.stream.data import recordings

    test_subjects = tuple(int(s) for s in test_subjects)
    keep = None if subjects is None else {int(s) for s in subjects}
    if recordings.detect_layout(source) == "uci-har":
        if context_steps:
            raise ValueError(
                f"{source}: UCI HAR's cut windows have no past; a model with context windows needs recordings"
            )
        uci = recordings.load_uci_folder(source, progress=progress)
        windows = Windows(
            np.asarray(uci.x, np.float32), np.asarray(uci.y, np.int64), np.asarray(uci.subjects, np.int64)
        )
        name, sha = uci.source or str(source), uci.sha256
        windowed_by = UCI_WINDOWS
        has = sorted({int(s) for s in uci.subjects})
    else:
        dataset = recordings.load_dataset(source, progress=progress)
        recs = dataset.recordings if keep is None else dataset.of_subjects(keep)
        windows = labelled_windows(recs, progress=progress, context_steps=context_steps)
        name, sha, windowed_by = dataset.source, dataset.sha256, PIPELINE
        has = dataset.subjects()
    if keep is not None:
        windows = windows.take(np.isin(windows.subjects, sorted(keep)))
    if len(windows) == 0 and keep is None:
        raise ValueError(f"{source}: no labelled windows (a window is 2.56 s wholly inside one labelled activity 1-6)")
    if len(windows) == 0 and keep is not None:
        raise ValueError(
            f"{source or 'embedded'}: no labelled windows of subjects {sorted(keep)} (it has subjects {has}; "
            "an own CSV without a subject column is subject 0): choose them with --subjects / --test-subjects"
        )
    train, test = split_by_subject(windows, test_subjects)
    return TrainingData(train, test, name, sha, test_subjects, windowed_by)


def one_hot(y: np.ndarray) -> np.ndarray:
    """Class indices 0-5 -> float32 one-hot rows.

    >>> one_hot(np.array([0, 5])).argmax(axis=1).tolist()
    [0, 5]
    """
    return np.eye(N_CLASSES, dtype=np.float32)[np.asarray(y, dtype=np.int64)]


def train_model(
    arch: str,
    train: Windows,
    epochs: int | None = None,
    batch_size: int | None = BATCH_SIZE,
    seed: int = 0,
    validation: Windows | None = None,
    callbacks: Sequence[Any] = (),
    verbose: int | str = 1,
) -> keras.Model:
    """Build architecture ``arch`` and fit it on ``train``.

    Seeds Python, NumPy and TensorFlow with ``seed``; ``epochs`` defaults to
    the architecture's ``DEFAULT_EPOCHS``; ``batch_size=None`` is Keras's
    default; an uncompiled model is compiled
    with Adam and categorical cross-entropy (labels are fed one-hot).
    ``verbose`` is Keras' (1: progress bar, 2: one line per epoch, 0: quiet).
    """
    import keras

    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    if len(train) == 0:
        raise ValueError("no training windows")
    epochs = int(epochs or DEFAULT_EPOCHS[arch])
    keras.utils.set_random_seed(seed)
    model = build_model(arch, ChannelStats.of(train.x))
    if not getattr(model, "compiled", False):
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    val = None if validation is None or len(validation) == 0 else (validation.x, one_hot(validation.y))
    model.fit(
        train.x,
        one_hot(train.y),
        epochs=epochs,
        batch_size=batch_size,
        validation_data=val,
        callbacks=list(callbacks),
        verbose=verbose,
    )
    return model


def without_optimizer(model: keras.Model) -> keras.Model:
    """An uncompiled copy with the same weights: the artifact then holds no
    optimizer state (a third of the size; fine-tuning compiles afresh)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


@dataclass
class TrainResult:
    """What :func:`train_and_save` made."""

    model: Any
    path: Path
    metadata: dict
    evaluation: Evaluation | None
    seconds: float


#: Models fitted by scikit-learn rather than by gradient descent, trainable by
#: name like the registered architectures (``harstream train --model svm``).
ESTIMATORS = ("svm",)


def train_and_save(
    arch: str,
    data: TrainingData,
    out: str | Path,
    epochs: int | None = None,
    seed: int = 0,
    batch_size: int | None = BATCH_SIZE,
    verbose: int | str = 1,
    command: str | None = None,
    context_steps: Sequence[int] = (),
) -> TrainResult:
    """Train ``arch`` on ``data.train``, evaluate on ``data.test`` and write the
    artifact ``out`` (``.keras``) with its metadata (``.json``)."""
    from .artifact import save_artifact
    from .evaluation import evaluate_model

    started = time.perf_counter()
    if arch in ESTIMATORS:  # fitted in closed form by scikit-learn: no epochs, no batches
        from .svm import fit_svm

        epochs = batch_size = None
        model = fit_svm(data.train, seed, verbose=1 if verbose else 0)[0]
    else:
        epochs = int(epochs or DEFAULT_EPOCHS[arch])
        model = train_model(arch, data.train, epochs=epochs, batch_size=batch_size, seed=seed, verbose=verbose)
    seconds = time.perf_counter() - started
    evaluation = evaluate_model(model, data.test) if len(data.test) else None
    metadata: dict[str, Any] = {
        "architecture": arch,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "data": {"source": data.source, "sha256": data.sha256, "windowed_by": data.windowed_by},
        "split": {
            "test_subjects": sorted(set(data.test.subjects.tolist())) or list(data.test_subjects),
            "train_subjects": sorted(set(data.train.subjects.tolist())),
        },
        "windows": {"train": len(data.train), "test": len(data.test)},
        "test_accuracy": None if evaluation is None else round(evaluation.accuracy, 6),
        "test_macro_f1": None if evaluation is None else round(evaluation.macro_f1, 6),
        "training_seconds": round(seconds, 1),
        "trained_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if command:
        metadata["command"] = command
    if context_steps:  # data's windows come with their past (load_training_data(context_steps=...))
        metadata["context_steps"] = [int(s) for s in context_steps]
    path = save_artifact(without_optimizer(model), metadata, out)
    from .artifact import read_metadata

    return TrainResult(model, path, read_metadata(path), evaluation, seconds)
