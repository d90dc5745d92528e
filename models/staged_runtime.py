"""Serving a staged model (:mod:`harstream.models.staged`): one runtime per stage.

A worker computes each new window's features once (:meth:`StagedRuntime.features`,
for all devices' new windows in one call), keeps each device's context of
feature vectors, and asks for decisions on those stacks
(:meth:`StagedRuntime.predict` of ``(n, 1 + k, F)``). Each stage is served by
the fastest runtime that agrees with the whole Keras model on check windows:
LiteRT, XLA ``tf.function`` or, for the feature stage, numpy running the
feature layer's own formulas (``numpy_call``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harstream.stream.pipeline import WINDOW, WINDOW_CHANNELS

from .runtime import Runtime, Selected
from .staged import DECISION_STAGE, FEATURE_STAGE, feature_layer, stages


class StagedRuntime:
    """Serves a staged model with one runtime per stage.

    ``features(windows (n, 128, 9)) -> (n, F)`` and ``decide(stacks (n, 1 + k, F))
    -> probabilities`` are what a server uses; ``predict`` takes either feature
    stacks or whole window stacks, as a one-piece runtime does (each stack's
    windows' features computed there, so only for checks and benchmarks).
    """

    def __init__(self, features: Runtime | Selected, decision: Runtime | Selected, report: dict | None = None):
        self.feature_runtime = features
        self.decision_runtime = decision
        self.report = report or {}
        self.name = f"staged({features.name}+{decision.name})"

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
            raise ValueError(
                f"a staged model takes stacks of windows (n, 1 + k, 128, 9) or of features (n, 1 + k, F), got {x.shape}"
            )
        n, k = x.shape[:2]
        return self.decide(self.features(x.reshape(n * k, WINDOW, WINDOW_CHANNELS)).reshape(n, k, -1))


class NumpyFeatures:
    """A feature stage run by numpy (the layer's ``numpy_call``): the graph's
    formulas, float error apart, without a graph runtime's per-op costs;
    its sort alone is ~40× faster than LiteRT's."""

    name = "numpy"

    def __init__(self, feature_stage: Any):  # a keras.Model
        layer = feature_layer(feature_stage)
        if layer is None:
            raise ValueError(f"feature stage {feature_stage.name!r} has no layer with a numpy_call")
        self.layer = layer
        self.size = int(feature_stage.output_shape[-1])

    def predict(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.empty((0, self.size), np.float32)
        return np.asarray(self.layer.numpy_call(x), np.float32)


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
        BUILDERS,
        RUNTIMES,
        KerasRuntime,
        RuntimeMismatch,
        Selected,
        check_agreement,
        check_windows,
        time_runtime,
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
        good: list[tuple[float, Runtime]] = []
        candidates: dict = {}
        names = ["tflite", "tf-function"] if kind == "auto" else [] if kind == "keras" else [kind]
        if name == FEATURE_STAGE and kind == "auto" and feature_layer(part.model) is not None:
            names.insert(0, "numpy")
        for rt_name in names:
            rt: Runtime
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
