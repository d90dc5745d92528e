"""A kernel SVM on hand-crafted window features, served as a Keras model.

The UCI HAR authors classified their 561 features with an SVM and reached
about 96 %. On our causal windows the same idea — :class:`WindowFeatures`,
standardised, an RBF SVM with a small ``C`` — beats every network we trained
on the validation subjects (docs/evaluation.md). scikit-learn fits it; the
fitted numbers are then copied into an ordinary Keras model, so the shipped
artifact is one ``.keras`` file like every other model: safe-mode loading,
metadata checks, and the worker's runtimes (Keras, tf.function, LiteRT) all
apply unchanged, and no pickle is ever involved.

The Keras graph is exactly the SVM, then a calibration::

    window (128, 9) → WindowFeatures → Normalization (the scaler)
      → RBFKernel (k(x, sv) for every support vector)
      → Dense(15): the 15 one-vs-one decision values (libsvm's)
      → VoteSoftmax: softmax(T · (votes + bounded confidence))

With context windows the features are a *feature stage* of each window and
the rest a *decision stage* on the stack of feature vectors, two named
sub-models of the one model (:mod:`harstream.models.staged`).

``votes + bounded confidence`` is scikit-learn's own one-vs-rest view of the
one-vs-one decisions, so the most probable class is exactly the SVM's vote.
The temperature ``T`` is fitted (log loss) on *out-of-fold* decision values
(the SVM refitted without each fold's subjects), because decisions on the
SVM's own training windows are over-confident. A multinomial regression on
the 15 decisions was tried instead and lost a point of validation accuracy
against the SVM's own vote (93.4 vs 94.4 %), so the vote decides.
"""

from __future__ import annotations

import time
from itertools import combinations

import keras
import numpy as np
from keras import ops

from .dataset import Windows
from .features import WindowFeatures, window_features
from .registry import INPUT_SHAPE, N_CLASSES
from .staged import build_staged_model, decision_stage_of, feature_size

DEFAULT_C = 0.3
CALIBRATION_FOLDS = 5


@keras.saving.register_keras_serializable(package="harstream")
class RBFKernel(keras.layers.Layer):
    """``exp(-gamma * |x - s|²)`` for each of ``units`` stored vectors ``s``.

    The stored vectors (the SVM's support vectors) are a non-trainable weight,
    set with ``set_weights`` after building.
    """

    def __init__(self, units: int, gamma: float, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.units = int(units)
        self.gamma = float(gamma)

    def build(self, input_shape):
        self.support = self.add_weight(
            shape=(self.units, int(input_shape[-1])), initializer="zeros", trainable=False, name="support"
        )

    def call(self, x):
        sq = ops.sum(ops.square(x), axis=-1, keepdims=True) - 2.0 * ops.matmul(x, ops.transpose(self.support))
        sq = sq + ops.sum(ops.square(self.support), axis=-1)[None, :]
        return ops.exp(-self.gamma * ops.maximum(sq, 0.0))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "gamma": self.gamma}


def _pair_matrices(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(first, second)`` one-hot ``(pairs, classes)`` of each pair's classes."""
    pairs = list(combinations(range(n_classes), 2))
    first = np.zeros((len(pairs), n_classes), np.float32)
    second = np.zeros((len(pairs), n_classes), np.float32)
    for p, (i, j) in enumerate(pairs):
        first[p, i] = second[p, j] = 1.0
    return first, second


def _scores(decisions, first, second):
    """votes + confidence/(3(|confidence|+1)) per class, in Keras ops (so the
    served layer and the numpy calibration share one formula)."""
    dtype = str(first.dtype)  # float32 in the served layer, float64 for calibration
    wins = ops.cast(ops.greater_equal(decisions, 0.0), dtype)
    votes = ops.matmul(wins, first) + ops.matmul(1.0 - wins, second)
    confidence = ops.matmul(ops.cast(decisions, dtype), first - second)
    return votes + confidence / (3.0 * (ops.abs(confidence) + 1.0))


def ovr_scores(decisions: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """One-vs-one decisions → votes + confidence/(3(|confidence|+1)) per class,
    the scores of scikit-learn's ``SVC.decision_function`` (shape ``"ovr"``).

    >>> ovr_scores(np.array([[1.0, 2.0, -0.5]]), n_classes=3).round(3).tolist()   # 0>1, 0>2, 2>1
    [[2.25, -0.2, 0.8]]
    """
    first, second = _pair_matrices(n_classes)
    return ops.convert_to_numpy(_scores(decisions, first.astype(np.float64), second.astype(np.float64)))


@keras.saving.register_keras_serializable(package="harstream")
class VoteSoftmax(keras.layers.Layer):
    """One-vs-one decisions → ``softmax(temperature · ovr_scores)`` (see :func:`ovr_scores`)."""

    def __init__(self, n_classes: int, temperature: float, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.n_classes = int(n_classes)
        self.temperature = float(temperature)
        self._first, self._second = _pair_matrices(self.n_classes)

    def call(self, decisions):
        return ops.softmax(self.temperature * _scores(decisions, self._first, self._second), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_classes)

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes, "temperature": self.temperature}


def fit_temperature(decisions: np.ndarray, y: np.ndarray, n_classes: int = N_CLASSES) -> float:
    """The temperature minimising the log loss of ``softmax(T · ovr_scores)``."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    scores = ovr_scores(decisions, n_classes)

    def loss(t: float) -> float:
        return float(-np.mean(log_softmax(t * scores, axis=1)[np.arange(len(y)), y]))

    return float(minimize_scalar(loss, bounds=(0.01, 50.0), method="bounded").x)


def one_vs_one_weights(svc) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` with ``kernel_row @ W + b`` = the fitted ``SVC``'s one-vs-one
    decision values (``decision_function_shape="ovo"``), pairs (0,1), (0,2), … .

    libsvm keeps, for support vectors of class ``i``, one coefficient per
    other class: row ``j-1`` of ``dual_coef_`` faces class ``j > i``, row
    ``j`` faces class ``j < i``.
    """
    n_classes = len(svc.classes_)
    bounds = np.concatenate([[0], np.cumsum(svc.n_support_)])
    pairs = list(combinations(range(n_classes), 2))
    w = np.zeros((int(bounds[-1]), len(pairs)))
    for p, (i, j) in enumerate(pairs):
        w[bounds[i] : bounds[i + 1], p] = svc.dual_coef_[j - 1, bounds[i] : bounds[i + 1]]
        w[bounds[j] : bounds[j + 1], p] = svc.dual_coef_[i, bounds[j] : bounds[j + 1]]
    return w.astype(np.float32), np.asarray(svc.intercept_, np.float32)


def scale_gamma(scaled: np.ndarray) -> float:
    """scikit-learn's ``gamma="scale"``, ``1 / (n_features * X.var())``, as a number we can store."""
    return float(1.0 / (scaled.shape[1] * scaled.var()))


def out_of_fold_decisions(
    features: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    C: float,
    gamma: float,
    seed: int,
    n_classes: int = N_CLASSES,
) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-one decision values of windows from an SVM that did not see
    their subject (``GroupKFold`` over subjects, folds shuffled by ``seed``).

    Returns ``(decisions, covered)``: a fold whose remaining subjects lack an
    activity cannot give all 15 decisions, so its windows are left out
    (``covered`` False).
    """
    from sklearn.model_selection import GroupKFold
    from sklearn.svm import SVC

    decisions = np.zeros((len(y), n_classes * (n_classes - 1) // 2))
    covered = np.zeros(len(y), bool)
    folds = min(CALIBRATION_FOLDS, len(np.unique(groups)))
    if folds < 2:
        return decisions, covered
    for fit_idx, held_idx in GroupKFold(folds, shuffle=True, random_state=seed).split(features, y, groups):
        if len(np.unique(y[fit_idx])) < n_classes:
            continue
        svc = SVC(C=C, gamma=gamma, decision_function_shape="ovo").fit(features[fit_idx], y[fit_idx])
        decisions[held_idx] = svc.decision_function(features[held_idx])
        covered[held_idx] = True
    return decisions, covered


def build_svm_model(
    scaler,
    svc,
    temperature: float,
    input_shape: tuple[int, ...] = INPUT_SHAPE,
    features: keras.layers.Layer | None = None,
    name: str = "svm",
) -> keras.Model:
    """The Keras model computing the calibrated ``svc`` ∘ ``scaler`` ∘ features
    of an input of ``input_shape`` (a window, or a window and its context);
    ``features`` is the feature layer (:class:`WindowFeatures` by default).

    A context model is *staged* (:mod:`harstream.models.staged`): a feature
    stage per window and a decision stage on the stack of feature vectors,
    inside the one model, so a server can compute each window's features once."""
    layer = features if features is not None else WindowFeatures(name="window_features")
    # scale_² rather than var_: the scaler leaves a constant feature unscaled
    # (scale 1) where Normalization would divide by ~0.
    norm = keras.layers.Normalization(
        mean=scaler.mean_.astype("float32"), variance=(scaler.scale_**2).astype("float32"), name="feature_scaler"
    )
    kernel = RBFKernel(len(svc.support_vectors_), svc.gamma, name="rbf_kernel")
    ovo = keras.layers.Dense(svc.intercept_.shape[0], name="one_vs_one", trainable=False)
    vote = VoteSoftmax(len(svc.classes_), temperature, name="probabilities")
    if len(input_shape) == 3:  # (1 + k, 128, 9): a window and its context
        windows = int(input_shape[0])
        decision = decision_stage_of([norm, kernel, ovo, vote], windows, feature_size(layer))
        model = build_staged_model(layer, decision, windows, name=name)
    else:
        inputs = keras.Input(shape=tuple(input_shape), dtype="float32", name="window")
        model = keras.Model(inputs, vote(ovo(kernel(norm(layer(inputs))))), name=name)
    kernel.set_weights([svc.support_vectors_.astype("float32")])
    ovo.set_weights(list(one_vs_one_weights(svc)))
    return model


def fit_svm(
    train: Windows,
    seed: int = 0,
    validation: Windows | None = None,
    C: float = DEFAULT_C,
    sample_weight: np.ndarray | None = None,
    verbose: int = 0,
) -> tuple[keras.Model, dict]:
    """Fit features → scaler → RBF SVM → calibration on ``train``; returns the
    Keras model and a history dict (``val_accuracy`` when ``validation`` is given).
    Windows with context (``x`` of shape (n, k, 128, 9)) give a model of that
    input, the features of the k windows side by side.

    The SVM itself is deterministic; ``seed`` shuffles the calibration folds.
    ``sample_weight`` scales each window's ``C`` (fine-tuning weighs the
    user's own windows up).
    """
    missing = sorted(set(range(N_CLASSES)) - set(np.unique(train.y).tolist()))
    if missing:
        raise ValueError(
            f"svm: no training windows of activities {missing}; the SVM needs all {N_CLASSES} "
            "(when fine-tuning, keep some embedded windows with --replay)"
        )
    model, history = fit_feature_svm(
        window_features(train.x),
        train.y,
        train.subjects,
        train.x.shape[1:],
        C=C,
        seed=seed,
        sample_weight=sample_weight,
        verbose=verbose,
    )
    if validation is not None:
        probs = np.asarray(model.predict(validation.x, batch_size=512, verbose=0))
        history["val_accuracy"] = [float(np.mean(probs.argmax(axis=1) == validation.y))]
    return model, history


def fit_feature_svm(
    features: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    input_shape: tuple[int, ...],
    C: float = DEFAULT_C,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    layer: keras.layers.Layer | None = None,
    n_classes: int = N_CLASSES,
    name: str = "svm",
    verbose: int = 0,
) -> tuple[keras.Model, dict]:
    """Scaler → RBF SVM → calibration on precomputed ``features`` of windows
    labelled ``y`` (0..n_classes-1) from subjects ``groups``; the Keras model
    computes the same ``layer`` (:class:`WindowFeatures` by default) on
    inputs of ``input_shape`` first."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    start = time.perf_counter()
    scaler = StandardScaler().fit(features)
    scaled = scaler.transform(features)
    gamma = scale_gamma(scaled)
    svc = SVC(C=C, gamma=gamma, decision_function_shape="ovo").fit(scaled, y, sample_weight=sample_weight)
    if verbose:
        print(
            f"{name}: {len(svc.support_vectors_)} support vectors of {len(y)} windows "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    decisions, covered = out_of_fold_decisions(scaled, y, groups, C, gamma, seed, n_classes)
    # Without out-of-fold decisions (too few subjects) the scores are used as they are.
    temperature = fit_temperature(decisions[covered], y[covered], n_classes) if covered.any() else 1.0
    model = build_svm_model(scaler, svc, temperature, tuple(input_shape), layer, name)
    history: dict = {"support_vectors": [float(len(svc.support_vectors_))], "temperature": [temperature]}
    return model, history
