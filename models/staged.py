"""Two-stage models: each window's features once, then a decision on a context of them.

A context model looks at a window and the windows ``context_steps`` before it
(:mod:`harstream.stream.context`). When its first layer computes features of
each window on its own (:class:`~harstream.models.features.WindowFeatures`,
:class:`~harstream.models.invariant.PlacementFreeFeatures`), a whole-model call
computes every window's features 1 + k times, once for each decision it is
part of. A *staged* model keeps the two parts as named sub-models inside the
one ``.keras`` file::

    window stack (n, 1+k, 128, 9) → MergeWindows → feature_stage → SplitWindows → decision_stage → probs
                                    (n(1+k), 128, 9)  (n(1+k), F)   (n, 1+k, F)

so ``model(x_stack)`` works as before (evaluation, training, every runtime),
while a server pulls the stages out (:func:`stages`), computes each window's
features once per device and keeps a context of *feature vectors* (the same
rule as for windows: :class:`~harstream.stream.context.WindowContext` works on
any per-window array). The numbers are the same as the flat model's: the
feature layer always ran on the merged ``(n(1+k), 128, 9)`` batch.

The artifact's metadata says ``"stages": {"features": "feature_stage",
"decision": "decision_stage", "feature_size": F}`` (written by
:func:`~harstream.models.artifact.save_artifact`, read from the model).

>>> import numpy as np
>>> from harstream.models.features import WindowFeatures
>>> decision = decision_stage_of([keras.layers.Dense(2, name="head")], windows=3, feature_size=WindowFeatures.size())
>>> model = build_staged_model(WindowFeatures(name="window_features"), decision, windows=3)
>>> feature_stage, decision_stage = stages(model)
>>> x = np.random.default_rng(0).normal(size=(2, 3, 128, 9)).astype("float32")
>>> f = np.asarray(feature_stage(x.reshape(-1, 128, 9))).reshape(2, 3, -1)
>>> bool(np.array_equal(np.asarray(decision_stage(f)), np.asarray(model(x))))
True
"""

from __future__ import annotations

import argparse
from typing import Sequence

import numpy as np

import keras
from keras import ops

from harstream.stream.pipeline import WINDOW, WINDOW_CHANNELS

FEATURE_STAGE = "feature_stage"
DECISION_STAGE = "decision_stage"


@keras.saving.register_keras_serializable(package="harstream")
class MergeWindows(keras.layers.Layer):
    """``(n, k, 128, 9)`` window stacks → ``(n·k, 128, 9)`` windows, stack by stack."""

    def call(self, x):
        return ops.reshape(x, (-1, WINDOW, WINDOW_CHANNELS))

    def compute_output_shape(self, input_shape):
        return (None, WINDOW, WINDOW_CHANNELS)


@keras.saving.register_keras_serializable(package="harstream")
class SplitWindows(keras.layers.Layer):
    """``(n·k, F)`` per-window features → ``(n, k, F)``, undoing :class:`MergeWindows`."""

    def __init__(self, windows: int, **kwargs):
        super().__init__(**kwargs)
        self.windows = int(windows)

    def call(self, f):
        return ops.reshape(f, (-1, self.windows, f.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (None, self.windows, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "windows": self.windows}


def feature_size(layer: keras.layers.Layer) -> int:
    """Features per window of a per-window feature layer."""
    return int(layer.compute_output_shape((None, WINDOW, WINDOW_CHANNELS))[-1])


def decision_stage_of(layers: Sequence[keras.layers.Layer], windows: int, feature_size: int) -> keras.Model:
    """The decision stage: ``(n, windows, F)`` feature stacks, flattened (the
    k vectors side by side, as the flat model's feature layer gave them), then
    ``layers`` in sequence."""
    inputs = keras.Input(shape=(windows, feature_size), dtype="float32", name="feature_stack")
    y = keras.layers.Reshape((windows * feature_size,), name="side_by_side")(inputs)
    for layer in layers:
        y = layer(y)
    return keras.Model(inputs, y, name=DECISION_STAGE)


def build_staged_model(features: keras.layers.Layer, decision: keras.Model, windows: int, name: str = "svm") -> keras.Model:
    """The whole model over ``(n, windows, 128, 9)`` stacks, built from a
    per-window feature layer and a decision stage (:func:`decision_stage_of`)."""
    window = keras.Input(shape=(WINDOW, WINDOW_CHANNELS), dtype="float32", name="one_window")
    feature_stage = keras.Model(window, features(window), name=FEATURE_STAGE)
    inputs = keras.Input(shape=(windows, WINDOW, WINDOW_CHANNELS), dtype="float32", name="window")
    f = SplitWindows(windows, name="split_windows")(feature_stage(MergeWindows(name="merge_windows")(inputs)))
    return keras.Model(inputs, decision(f), name=name)


def is_staged(model: keras.Model) -> bool:
    """Whether ``model`` carries a feature stage and a decision stage."""
    names = {layer.name for layer in model.layers}
    return FEATURE_STAGE in names and DECISION_STAGE in names


def stages(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """``(feature_stage, decision_stage)`` of a staged model: ``(n, 128, 9) → (n, F)``
    and ``(n, 1 + k, F) → probabilities``."""
    if not is_staged(model):
        raise ValueError(f"model {model.name!r} has no {FEATURE_STAGE!r} and {DECISION_STAGE!r} sub-models")
    return model.get_layer(FEATURE_STAGE), model.get_layer(DECISION_STAGE)


def stage_metadata(model: keras.Model) -> dict | None:
    """What an artifact's metadata says about its stages (None: not staged)."""
    if not is_staged(model):
        return None
    feature_stage, decision_stage = stages(model)
    return {
        "features": FEATURE_STAGE,
        "decision": DECISION_STAGE,
        "feature_size": int(feature_stage.output_shape[-1]),
        "windows": int(decision_stage.input_shape[1]),
    }


def restage(model: keras.Model) -> keras.Model:
    """The staged equivalent of a flat context model ``input → per-window
    feature layer → a chain of layers`` (as :func:`harstream.models.svm.build_svm_model`
    built them before stages existed), with the same layer objects, so the
    same weights and numbers."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or not layers:
        raise ValueError(f"model {model.name!r} takes {shape}: not a context model ((k, 128, 9) stacks)")
    features, chain = layers[0], layers[1:]
    for before, after in zip(layers, layers[1:]):  # a chain: each layer eats the previous one's output
        if after.input is not before.output:
            raise ValueError(f"model {model.name!r}: layer {after.name!r} does not follow {before.name!r}; not a chain")
    windows = shape[0]
    decision = decision_stage_of(chain, windows, feature_size(features))
    return build_staged_model(features, decision, windows, name=model.name)


class StagedRuntime:
    """Serves a staged model with one runtime per stage.

    ``features(windows (n, 128, 9)) -> (n, F)`` and ``decide(stacks (n, 1 + k, F))
    -> probabilities`` are what a server uses; ``predict`` takes either feature
    stacks or whole window stacks, as a one-piece runtime does (each stack's
    windows' features computed there, so only for checks and benchmarks).
    """

    def __init__(self, features, decision, report: dict | None = None):
        self.feature_runtime = features
        self.decision_runtime = decision
        self.report = report or {}

    @property
    def name(self) -> str:
        return f"staged({self.feature_runtime.name}+{self.decision_runtime.name})"

    @property
    def fallback(self):
        """Each stage keeps its own fallback (:class:`~harstream.models.runtime.Selected`)."""
        return None

    def features(self, windows: np.ndarray) -> np.ndarray:
        return self.feature_runtime.predict(np.ascontiguousarray(windows, dtype=np.float32))

    def decide(self, stacks: np.ndarray) -> np.ndarray:
        return self.decision_runtime.predict(np.ascontiguousarray(stacks, dtype=np.float32))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of stacks of windows ``(n, 1 + k, 128, 9)``, or of
        stacks of their feature vectors ``(n, 1 + k, F)`` (what a worker that
        computed the features already hands over)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 3:
            return self.decide(x)
        if x.ndim != 4:
            raise ValueError(f"a staged model takes stacks of windows (n, 1 + k, 128, 9) or of features (n, 1 + k, F), got {x.shape}")
        n, k = x.shape[:2]
        return self.decide(self.features(x.reshape(n * k, WINDOW, WINDOW_CHANNELS)).reshape(n, k, -1))


class NumpyFeatures:
    """A feature stage run by numpy (the layer's ``numpy_call``): the graph's
    formulas, float error apart, without a graph runtime's per-op costs;
    its sort alone is ~40× faster than LiteRT's."""

    name = "numpy"

    def __init__(self, feature_stage: keras.Model):
        self.layer = feature_layer(feature_stage)
        if self.layer is None:
            raise ValueError(f"feature stage {feature_stage.name!r} has no layer with a numpy_call")
        self.size = int(feature_stage.output_shape[-1])

    def predict(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.empty((0, self.size), np.float32)
        return np.asarray(self.layer.numpy_call(x), np.float32)


def feature_layer(feature_stage: keras.Model) -> keras.layers.Layer | None:
    """The feature stage's one feature layer if numpy can run it, else None."""
    layers = [layer for layer in feature_stage.layers if not isinstance(layer, keras.layers.InputLayer)]
    return layers[0] if len(layers) == 1 and hasattr(layers[0], "numpy_call") else None


def stage_artifact(artifact, stage: str):
    """A :class:`~harstream.models.artifact.ModelArtifact` of one stage, so the
    runtimes build and cache it like any model (its own cache key)."""
    import hashlib

    from .artifact import ModelArtifact

    model = dict(zip((FEATURE_STAGE, DECISION_STAGE), stages(artifact.model)))[stage]
    sha = hashlib.sha256(f"{artifact.metadata.get('sha256', '')}:{stage}".encode()).hexdigest()
    return ModelArtifact(model=model, metadata={**artifact.metadata, "sha256": sha}, path=artifact.path)


def load_staged_runtime(artifact, kind: str = "auto", check: np.ndarray | None = None) -> StagedRuntime:
    """Runtimes for the two stages of a staged ``artifact``: for each stage the
    fastest of ``kind`` (``auto``: LiteRT, XLA ``tf.function`` and, for a
    feature layer that has one, its numpy path) whose
    probabilities, with the other stage in Keras, agree with the whole Keras
    model on ``check`` stacks (same argmax, within 1e-4); the whole path is
    checked once more. Each stage keeps the next agreeing runtime (or Keras) as
    its fallback."""
    from .runtime import (
        BUILDERS, RUNTIMES, KerasRuntime, RuntimeMismatch, Selected, check_agreement, check_windows, time_runtime,
    )  # fmt: skip

    if kind not in RUNTIMES:
        raise ValueError(f"runtime {kind!r}: choose one of {', '.join(RUNTIMES)}")
    if check is None:
        check = check_windows(context_steps=artifact.context_steps)
    n, k = check.shape[:2]
    windows = check.reshape(n * k, WINDOW, WINDOW_CHANNELS)
    parts = {name: stage_artifact(artifact, name) for name in (FEATURE_STAGE, DECISION_STAGE)}
    keras_rt = {name: KerasRuntime(part) for name, part in parts.items()}
    reference = np.asarray(artifact.model(check, training=False))
    keras_features = keras_rt[FEATURE_STAGE].predict(windows).reshape(n, k, -1)
    report: dict = {"check_windows": n, "stages": {}}
    chosen = {}
    for name, part in parts.items():
        sample = windows if name == FEATURE_STAGE else keras_features
        good: list[tuple[float, object]] = []
        candidates: dict = {}
        names = ["tflite", "tf-function"] if kind == "auto" else [] if kind == "keras" else [kind]
        if name == FEATURE_STAGE and kind == "auto" and feature_layer(part.model) is not None:
            names.insert(0, "numpy")
        for rt_name in names:
            try:
                rt = NumpyFeatures(part.model) if rt_name == "numpy" else BUILDERS[rt_name](part)
            except Exception as exc:  # conversion can fail for exotic layers
                candidates[rt_name] = {"error": str(exc)[:300]}
                continue
            if name == FEATURE_STAGE:
                whole = StagedRuntime(rt, keras_rt[DECISION_STAGE])
            else:
                whole = StagedRuntime(keras_rt[FEATURE_STAGE], rt)
            agreement = check_agreement(whole, reference, check)
            top = min(64, len(sample))
            cost = (time_runtime(rt, sample[:1]) + time_runtime(rt, sample[:top])) / top
            candidates[rt_name] = {"agrees": agreement.ok, "argmax_mismatches": agreement.argmax_mismatches,
                                   "max_abs_diff": agreement.max_abs_diff, "cost_ms": round(cost * 1000, 3)}  # fmt: skip
            if agreement.ok:
                good.append((cost, rt))
        if not good and kind not in ("auto", "keras"):
            raise RuntimeMismatch(f"runtime {kind} does not agree with the Keras model on stage {name}: {candidates}")
        good.sort(key=lambda item: item[0])
        ranked = [rt for _, rt in good] + [keras_rt[name]]
        chosen[name] = Selected(ranked[0], ranked[1] if len(ranked) > 1 else None, {"candidates": candidates})
        report["stages"][name] = {"chosen": ranked[0].name, "candidates": candidates}
    staged = StagedRuntime(chosen[FEATURE_STAGE], chosen[DECISION_STAGE], report)
    final = check_agreement(staged, reference, check)
    report["agreement"] = {"argmax_mismatches": final.argmax_mismatches, "max_abs_diff": final.max_abs_diff}
    if not final.ok:
        raise RuntimeMismatch(f"the staged runtimes together disagree with the Keras model: {report}")
    report["chosen"] = staged.name
    return staged


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harstream.models.staged restage MODEL.keras…``: rewrite flat
    context-model artifacts in the staged layout, checked on every held-out
    test window (same argmax, probabilities listed), metadata kept."""
    from .artifact import load_artifact, save_artifact
    from .runtime import check_windows

    parser = argparse.ArgumentParser(prog="python -m harstream.models.staged")
    parser.add_argument("command", choices=["restage"])
    parser.add_argument("models", nargs="+")
    args = parser.parse_args(argv)
    for path in args.models:
        artifact = load_artifact(path)
        if is_staged(artifact.model):
            print(f"{path}: already staged")
            continue
        staged = restage(artifact.model)
        x = check_windows(0, context_steps=artifact.context_steps)
        before = np.concatenate([np.asarray(artifact.model(x[i : i + 512], training=False)) for i in range(0, len(x), 512)])
        after = np.concatenate([np.asarray(staged(x[i : i + 512], training=False)) for i in range(0, len(x), 512)])
        mismatches = int((before.argmax(1) != after.argmax(1)).sum())
        diff = float(np.abs(before - after).max())
        if mismatches:
            raise SystemExit(f"{path}: the staged model changes {mismatches} of {len(x)} test labels; not written")
        meta = {k: v for k, v in artifact.metadata.items() if k not in ("sha256", "input", "stages")}
        meta["restaged"] = {"from_sha256": artifact.metadata.get("sha256"), "test_windows": len(x),
                            "argmax_mismatches": mismatches, "max_abs_diff": diff,
                            "command": f"python -m harstream.models.staged restage {path}"}  # fmt: skip
        save_artifact(staged, meta, artifact.path)
        print(f"{path}: staged; {len(x)} test windows, argmax mismatches {mismatches}, max abs diff {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
