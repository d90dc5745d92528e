"""Fine-tune a shipped model on the user's own labelled recordings.

Record CSVs in the format of ``docs/recordings.md`` (time, acc x,y,z in g,
gyro x,y,z in rad/s, a label column with the activity), then::

    python -m harstream.models.finetune --data my_recordings/ --out mine.keras
    harstream worker --model mine.keras        # serve it

The recordings go through the same streaming pipeline as everything else;
windows wholly inside one labelled activity are used. When there are two or
more recordings, the last one (by name) is held out and scored before and
after fine-tuning, so the user sees whether it helped. Some windows of the
embedded training subjects are mixed in (``replay``), so that the model does
not forget the activities the user did not record. The standardisation inside
the model and the BatchNorm statistics are left as they were (the base
model's training statistics).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import Windows, labelled_windows


@dataclass
class FinetuneResult:
    path: Path
    windows: int
    held_out: str | None
    accuracy_before: float | None
    accuracy_after: float | None


def _concat(a: Windows, b: Windows) -> Windows:
    return Windows(np.concatenate([a.x, b.x]), np.concatenate([a.y, b.y]), np.concatenate([a.subjects, b.subjects]))


def finetune(
    base: str | Path | None,
    data: str | Path,
    out: str | Path,
    epochs: int = 5,
    learning_rate: float = 1e-4,
    replay: int | None = None,
    seed: int = 0,
    verbose: int = 0,
) -> FinetuneResult:
    """Fine-tune the artifact ``base`` (None: the shipped default) on the
    recordings at ``data`` and save the result as the artifact ``out``.

    ``replay`` embedded training windows (default: as many as the user's
    windows) are mixed in; 0 trains on the user's windows only.
    """
    from harstream.stream.data.recordings import load_dataset

    from .artifact import check_artifact, context_steps_of, load_artifact, save_artifact

    # the base's file and the data are checked before TensorFlow is imported (seconds)
    steps = context_steps_of(check_artifact(base))  # a context model learns from windows with their past
    dataset = load_dataset(data)
    recordings = sorted(dataset.recordings, key=lambda r: r.name)
    held_out = recordings[-1] if len(recordings) >= 2 else None
    train_recs = recordings[:-1] if held_out else recordings
    own = labelled_windows(train_recs, context_steps=steps)
    if len(own) == 0:
        raise ValueError(
            f"{data}: no labelled windows; a recording needs at least 128 samples (2.56 s) "
            "of one activity (label 1-6) in a row"
        )
    test = labelled_windows([held_out], context_steps=steps) if held_out else None
    if test is not None and len(test) == 0:
        test = None
    artifact = load_artifact(base)

    replay_pool = None
    if (len(own) if replay is None else replay) > 0:
        replay_pool = embedded_training_windows(steps)
    model, before, after, fit_on = tune(
        artifact.model,
        own,
        test,
        epochs,
        learning_rate,
        replay_pool,
        replay,
        seed,
        verbose,
        svm_options=svm_options(artifact.metadata),
    )

    meta = {k: v for k, v in artifact.metadata.items() if k not in ("sha256", "library_versions")}
    meta.update(
        {
            "finetuned_from": {"model_id": artifact.model_id, "path": str(artifact.path)},
            "finetune": {
                "data": {"source": dataset.source, "sha256": dataset.sha256},
                "method": "svm refit" if is_svm(model) else "gradient descent",
                "own_windows": len(own),
                "replay_windows": len(fit_on) - len(own),
                "epochs": epochs,
                "learning_rate": learning_rate,
                "seed": seed,
                "held_out_recording": held_out.name if held_out else None,
                "held_out_accuracy_before": before,
                "held_out_accuracy_after": after,
            },
        }
    )
    # The base model's test figures do not describe the fine-tuned model.
    for key in ("test_accuracy", "test_accuracy_mean", "test_accuracy_std", "macro_f1_mean"):
        meta.pop(key, None)
    path = save_artifact(model, meta, out)
    return FinetuneResult(path, len(own), held_out.name if held_out else None, before, after)


def embedded_training_windows(context_steps: Sequence[int] = ()) -> Windows:
    """Windows of the embedded data's training subjects (never the test subjects)."""
    from harstream.stream.data.recordings import load_embedded

    from .dataset import split_by_subject

    train, _ = split_by_subject(labelled_windows(load_embedded().recordings, context_steps=context_steps))
    return train


def is_svm(model) -> bool:
    """Whether ``model`` is a kernel SVM (:mod:`harstream.models.svm`): it has
    nothing to train by gradient descent, so it is refitted instead."""
    from .staged import DECISION_STAGE

    # a context SVM keeps its kernel in its decision stage (models/staged.py)
    return any(layer.name == "rbf_kernel" or (layer.name == DECISION_STAGE and is_svm(layer)) for layer in model.layers)


def svm_options(metadata: dict) -> dict:
    """The base SVM's own settings (``C``) from its recipe, so a refit keeps them.

    >>> svm_options({"recipe": {"options": {"C": 1.0, "context": [1, 2, 4]}}})
    {'C': 1.0}
    """
    options = (metadata.get("recipe") or {}).get("options") or {}
    return {k: v for k, v in options.items() if k == "C"}


def tune(
    model,
    own: Windows,
    test: Windows | None,
    epochs: int,
    learning_rate: float,
    replay_pool: Windows | None,
    replay: int | None,
    seed: int,
    verbose: int = 0,
    svm_options: dict | None = None,
):
    """Fine-tune ``model`` on ``own`` plus ``replay`` windows drawn from
    ``replay_pool``; returns ``(model, accuracy on test before, after, windows fitted on)``.

    A network is trained further in place. A kernel SVM is refitted on the
    replay and own windows together with the base's ``svm_options`` (its
    ``C``), the own windows weighted so that both parts weigh the same (as
    the network's equal mix does); ``replay`` of None then means the whole
    pool (epochs and learning rate do not apply).
    """
    import keras

    svm = is_svm(model)
    rng = np.random.default_rng(seed)
    fit_on = own
    replay = (len(replay_pool) if svm and replay_pool is not None else len(own)) if replay is None else replay
    if replay > 0 and replay_pool is not None and len(replay_pool):
        pick = rng.choice(len(replay_pool), size=min(replay, len(replay_pool)), replace=False)
        fit_on = _concat(own, replay_pool.take(np.sort(pick)))

    def accuracy(model) -> float | None:
        if test is None:
            return None
        return float(np.mean(np.argmax(np.asarray(model(test.x, training=False)), axis=1) == test.y))

    before = accuracy(model)
    if svm:
        from .svm import fit_svm

        weights = np.ones(len(fit_on))
        if len(fit_on) > len(own):
            weights[: len(own)] = (len(fit_on) - len(own)) / len(own)
        model, _ = fit_svm(fit_on, seed, sample_weight=weights, verbose=verbose, **(svm_options or {}))
        return model, before, accuracy(model), fit_on
    # A few hundred own windows are too few to re-estimate BatchNorm's moving
    # statistics; frozen BatchNorm layers keep the base model's (and run in
    # inference mode), the usual practice for small-data fine-tuning.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(fit_on.x, fit_on.y, epochs=epochs, batch_size=64, shuffle=True, verbose=verbose)
    return model, before, accuracy(model), fit_on


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="CSV recording or folder of them (docs/recordings.md)")
    parser.add_argument("--base", default=None, help="model to start from (default: the shipped one)")
    parser.add_argument("--out", required=True, type=Path, help="where to write the fine-tuned .keras")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument(
        "--replay",
        type=int,
        default=None,
        help="embedded training windows mixed in (default: as many as yours; 0: none)",
    )
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    result = finetune(
        args.base,
        args.data,
        args.out,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        replay=args.replay,
        seed=args.seed,
        verbose=2,
    )
    print(f"fine-tuned on {result.windows} windows of your recordings -> {result.path}")
    if result.held_out and result.accuracy_before is not None and result.accuracy_after is not None:
        print(
            f"held-out recording {result.held_out}: accuracy {100 * result.accuracy_before:.1f} % before, "
            f"{100 * result.accuracy_after:.1f} % after"
        )
    else:
        print("one recording only: nothing held out to score; record a second session to check the gain")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fine-tune a model on your own labelled CSV recordings")
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
