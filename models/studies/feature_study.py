"""Where the sitting/standing errors come from: a feature-SVM study on the
validation subjects (the selection protocol: fit on training subjects, score
on the validation subjects; the test subjects are never loaded).

Three questions, each answered with the same RBF SVM (scikit-learn, with
each ``C`` of ``--C``) on the same hand-crafted features (:class:`~harstream.models.features.WindowFeatures`),
trained on the fit subjects and scored on :data:`VALIDATION_SUBJECTS`:

1. *features*: how far do the UCI-style features go on our causal windows?
2. *non-causal*: what does the causal preprocessing cost? The same windows
   cut from zero-phase (``filtfilt``) filtered recordings, as UCI HAR made them.
3. *context*: does the device's recent past help? Features of the window and
   of the windows 1, 2 and 4 steps (1.28 s each) before it, as a live worker
   could keep per device.

One validation split of 5 subjects resolves differences of about a point at
best, so each question is also cross-validated over all 21 training subjects
(``--folds``, grouped by subject; still never the test subjects).

Run (about 12 minutes on 2 cores; results in ``docs/reports/feature_study.json``)::

    python -m harstream.models.studies.feature_study
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from harstream.models.reports import REPORTS
from harstream.stream.core.pipeline import preprocess_recording

from ..dataset import VALIDATION_SUBJECTS, labelled_windows
from ..features import window_features

STUDY_FILE = REPORTS / "feature_study.json"
CONTEXT_STEPS = (1, 2, 4)


def zero_phase_preprocess(samples: np.ndarray) -> np.ndarray:
    """UCI's offline preprocessing: the same median and Butterworth filters as
    the pipeline, run forwards and backwards (no lag, but needs the future)."""
    from scipy.signal import medfilt, sosfiltfilt

    from harstream.stream.core.filters import GRAVITY_CUTOFF_HZ, MEDIAN_SIZE, NOISE_CUTOFF_HZ, butter_lowpass

    raw = np.asarray(samples, np.float64)
    smooth = np.stack([medfilt(raw[:, c], MEDIAN_SIZE) for c in range(raw.shape[1])], axis=1)
    smooth = sosfiltfilt(butter_lowpass(NOISE_CUTOFF_HZ), smooth, axis=0)
    acc, gyro = smooth[:, :3], smooth[:, 3:]
    gravity = sosfiltfilt(butter_lowpass(GRAVITY_CUTOFF_HZ), acc, axis=0)
    return np.concatenate([acc - gravity, gyro, acc], axis=1).astype(np.float32)


def svm_validation_accuracy(features: np.ndarray, y: np.ndarray, validation: np.ndarray, C: float) -> dict:
    """RBF SVM on standardised features (statistics of the fit subjects only)."""
    from sklearn.metrics import confusion_matrix
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    model = make_pipeline(StandardScaler(), SVC(C=C)).fit(features[~validation], y[~validation])
    pred = model.predict(features[validation])
    return {
        "validation_accuracy": float(np.mean(pred == y[validation])),
        "validation_confusion": confusion_matrix(y[validation], pred, labels=range(6)).tolist(),
    }


def svm_cross_validation(
    features: np.ndarray, y: np.ndarray, subjects: np.ndarray, C: float, folds: int, seed: int = 0
) -> list[float]:
    """Window accuracy of each fold of a ``GroupKFold`` over the (training)
    subjects: every subject is scored once, by an SVM that never saw them."""
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    scores = []
    for fit_idx, held_idx in GroupKFold(folds, shuffle=True, random_state=seed).split(features, y, subjects):
        model = make_pipeline(StandardScaler(), SVC(C=C)).fit(features[fit_idx], y[fit_idx])
        scores.append(float(np.mean(model.predict(features[held_idx]) == y[held_idx])))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="feature-SVM study on the validation subjects")
    parser.add_argument("--out", type=Path, default=STUDY_FILE)
    parser.add_argument(
        "--C", type=float, nargs="+", default=[0.3, 1.0, 10.0], help="SVM C values, each study with each"
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=5,
        help="also cross-validate over the 21 training subjects with this many folds (0: off)",
    )
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_embedded

    # The test subjects' recordings are dropped before anything is computed.
    recordings = [r for r in load_embedded().recordings if r.subject not in UCI_TEST_SUBJECTS]
    studies = {
        "features (causal pipeline)": (preprocess_recording, ()),
        "features (zero-phase filters)": (zero_phase_preprocess, ()),
        "features + context 1, 2, 4 steps back": (preprocess_recording, CONTEXT_STEPS),
    }
    results, cross = {}, {}
    for name, (preprocess, steps) in tqdm(studies.items(), desc="studies", unit="study"):
        start = time.perf_counter()
        windows = labelled_windows(recordings, context_steps=steps, preprocess=preprocess)
        y, subjects = windows.y, windows.subjects
        validation = np.isin(subjects, VALIDATION_SUBJECTS)
        features = window_features(windows.x)
        for C in args.C:
            result = svm_validation_accuracy(features, y, validation, C)
            result.update(
                windows=int(len(y)),
                validation_windows=int(validation.sum()),
                seconds=round(time.perf_counter() - start, 1),
            )
            results[f"{name}, C={C:g}"] = result
            tqdm.write(f"{name}, C={C:g}: validation {result['validation_accuracy']:.4f}")
            if args.folds > 1:
                scores = svm_cross_validation(features, y, subjects, C, args.folds)
                cross[f"{name}, C={C:g}"] = {
                    "folds": scores,
                    "mean": float(np.mean(scores)),
                    "std": float(np.std(scores)),
                }
                tqdm.write(f"{name}, C={C:g}: {args.folds}-fold {np.mean(scores):.4f} ± {np.std(scores):.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = {"validation_subjects": list(VALIDATION_SUBJECTS), "studies": results}
    if cross:
        out["cross_validation"] = {
            "folds": args.folds,
            "grouped_by": "subject",
            "training_subjects_only": True,
            "studies": cross,
        }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
