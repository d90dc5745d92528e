"""The SVM served as a Keras model computes exactly what scikit-learn fitted."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import SVC

from harstream.models.dataset import Windows
from harstream.models.svm import RBFKernel, fit_svm, one_vs_one_weights, ovr_scores, window_features


def _blobs(n_per_class: int = 20, classes: int = 6, dim: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(classes, dim))
    x = np.concatenate([c + rng.normal(size=(n_per_class, dim)) for c in centres])
    return x, np.repeat(np.arange(classes), n_per_class)


def _kernel_rows(x: np.ndarray, support: np.ndarray, gamma: float) -> np.ndarray:
    layer = RBFKernel(len(support), gamma)
    layer.build((None, x.shape[1]))
    layer.set_weights([support.astype(np.float32)])
    return np.asarray(layer(x.astype(np.float32)))


def test_rbf_kernel_layer_matches_scikit_learns_rbf_kernel():
    from sklearn.metrics.pairwise import rbf_kernel

    x, _ = _blobs()
    np.testing.assert_allclose(_kernel_rows(x[:10], x[10:40], 0.2), rbf_kernel(x[:10], x[10:40], gamma=0.2), atol=1e-5)


def test_one_vs_one_weights_reproduce_the_fitted_decision_values():
    x, y = _blobs()
    svc = SVC(C=1.0, gamma=0.2, decision_function_shape="ovo").fit(x, y)
    w, b = one_vs_one_weights(svc)
    ours = _kernel_rows(x, svc.support_vectors_, 0.2) @ w + b
    np.testing.assert_allclose(ours, svc.decision_function(x), atol=1e-4)


def test_ovr_scores_are_scikit_learns_one_vs_rest_view_of_the_votes():
    x, y = _blobs(seed=1)
    ovo = SVC(C=0.5, gamma=0.2, decision_function_shape="ovo").fit(x, y)
    ovr = SVC(C=0.5, gamma=0.2, decision_function_shape="ovr").fit(x, y)
    np.testing.assert_allclose(ovr_scores(ovo.decision_function(x)), ovr.decision_function(x), atol=1e-6)


def _windows(per_class: int, seed: int) -> Windows:
    """Six synthetic activities told apart by the phone's tilt and how hard it shakes."""
    rng = np.random.default_rng(seed)
    xs, ys, subjects = [], [], []
    for c in range(6):
        for k in range(per_class):
            w = rng.normal(scale=0.02 + 0.1 * (c % 3), size=(128, 9))
            w[:, 6:9] += [1.0, 0.3 * c - 0.75, 0.0]
            xs.append(w)
            ys.append(c)
            subjects.append(1 + k % 4)
    return Windows(np.asarray(xs, np.float32), np.asarray(ys), np.asarray(subjects))


def _sklearn_votes(train: Windows, x: np.ndarray, C: float) -> np.ndarray:
    from sklearn.preprocessing import StandardScaler

    f_train, f_test = window_features(train.x), window_features(x)
    scaler = StandardScaler().fit(f_train)
    scaled = scaler.transform(f_train)
    svc = SVC(C=C, gamma=1.0 / (scaled.shape[1] * scaled.var())).fit(scaled, train.y)
    return svc.predict(scaler.transform(f_test))


def test_fitted_keras_model_predicts_the_svm_vote_and_probabilities(output_dir):
    from harstream.models.artifact import load_artifact, save_artifact

    train, test = _windows(12, seed=0), _windows(5, seed=1)
    model, history = fit_svm(train, seed=0, C=1.0)
    probs = np.asarray(model(test.x, training=False))
    assert probs.shape == (len(test), 6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert history["temperature"][0] > 0
    # the same SVM fitted by scikit-learn on the same standardised features votes the same
    assert probs.argmax(axis=1).tolist() == _sklearn_votes(train, test.x, C=1.0).tolist()
    # and it is an ordinary artifact: saved, reloaded in safe mode, same answers
    loaded = load_artifact(save_artifact(model, {"architecture": "svm"}, output_dir / "svm.keras"))
    np.testing.assert_allclose(np.asarray(loaded.model(test.x, training=False)), probs, atol=1e-5)


@pytest.mark.parametrize("name", ["RBFKernel", "VoteSoftmax"])
def test_svm_layers_hold_no_trainable_weights(name):
    import harstream.models.svm as svm

    layer = getattr(svm, name)(6, 1.0)
    assert layer.trainable is False


def test_a_feature_constant_in_training_does_not_blow_up_the_served_model():
    train = _windows(8, seed=3)
    train.x[..., 6] = 1.0  # total_acc_x exactly constant: several features have zero variance
    model, _ = fit_svm(train, seed=0, C=1.0)
    probe = _windows(2, seed=4).x
    probe[..., 6] = 1.01  # constant again, but not the training constant
    probs = np.asarray(model(probe, training=False))
    assert np.isfinite(probs).all()
    assert probs.argmax(axis=1).tolist() == _sklearn_votes(train, probe, C=1.0).tolist()
