"""Serving a staged model (:mod:`harstream.models.staged`): one runtime per stage.

A worker computes each new window's features once (:meth:`StagedRuntime.features`,
for all devices' new windows in one call), keeps each device's context of
feature vectors, and asks for decisions on those stacks
(:meth:`StagedRuntime.predict` of ``(n, 1 + k, F)``). Each stage is served by
the fastest runtime that agrees with the whole Keras model on check windows:
LiteRT, XLA ``tf.function`` or, for the feature stage, numpy running the
feature layer's own formulas (:mod:`harstream.models.feature_math`).

When the numpy features and the decision stage's LiteRT conversion agree with
the whole Keras model, a *staged serving record* is left beside the cached
conversion (:func:`record_staged_serving`); a restarted worker builds the same
pair from it without TensorFlow or Keras
(:func:`harstream.models.fast_start.load_cached_runtime`). This module imports
neither at import time: only the functions that take a Keras model do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from harstream.stream.core.pipeline import WINDOW, WINDOW_CHANNELS

from .runtime import Agreement, Runtime, Selected, TfliteRuntime

# The sub-model names of :mod:`harstream.models.staged` (which imports Keras).
FEATURE_STAGE = "feature_stage"
DECISION_STAGE = "decision_stage"


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
    """A feature stage run by numpy (:func:`~harstream.models.feature_math.numpy_features`):
    the graph's formulas, float error apart, without a graph runtime's per-op
    costs; its sort alone is ~40× faster than LiteRT's. ``layer`` is the
    feature layer's registered Keras name, ``options`` its own config."""

    name = "numpy"

    def __init__(self, layer: str, options: dict | None = None):
        from .feature_math import NUMPY_LAYERS, numpy_features

        self.layer, self.options = layer, dict(options or {})
        self._features = numpy_features(layer, self.options)
        self.size = NUMPY_LAYERS[layer][1]

    @classmethod
    def of_stage(cls, feature_stage: Any) -> NumpyFeatures:
        """The numpy features of a Keras feature stage (its one feature layer)."""
        import keras

        from .staged import feature_layer

        layer = feature_layer(feature_stage)
        if layer is None:
            raise ValueError(f"feature stage {feature_stage.name!r} has no layer with numpy formulas")
        base = keras.layers.Layer(name="base").get_config()
        options = {k: v for k, v in layer.get_config().items() if k not in base}
        rt = cls(keras.saving.get_registered_name(type(layer)), options)
        if rt.size != int(feature_stage.output_shape[-1]):
            raise ValueError(
                f"feature stage {feature_stage.name!r}: {feature_stage.output_shape[-1]} features, "
                f"its numpy formulas give {rt.size}"
            )
        return rt

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._features(x)


def stage_sha256(model_sha256: str, stage: str) -> str:
    """The cache key of one stage of the model with hash ``model_sha256``."""
    import hashlib

    return hashlib.sha256(f"{model_sha256}:{stage}".encode()).hexdigest()


def stage_artifact(artifact, stage: str):
    """A :class:`~harstream.models.artifact.ModelArtifact` of one stage, so the
    runtimes build and cache it like any model (its own cache key)."""
    from .artifact import ModelArtifact
    from .staged import stages

    model = dict(zip((FEATURE_STAGE, DECISION_STAGE), stages(artifact.model)))[stage]
    sha = stage_sha256(artifact.metadata.get("sha256", ""), stage)
    return ModelArtifact(model=model, metadata={**artifact.metadata, "sha256": sha}, path=artifact.path)


def load_staged_runtime(
    artifact, kind: str = "auto", check: np.ndarray | None = None, sizes: Sequence[int] | None = None
) -> StagedRuntime:
    """Runtimes for the two stages of a staged ``artifact``: for each stage the
    fastest of ``kind`` (``auto``: LiteRT, XLA ``tf.function`` and, for a
    feature layer that has one, its numpy path) whose
    probabilities, with the other stage in Keras, agree with the whole Keras
    model on ``check`` stacks (same argmax, within 1e-4); the whole path is
    checked once more. Each stage keeps the next agreeing runtime (or Keras) as
    its fallback. ``sizes``: the compiled runtimes' fixed batch sizes (as
    :func:`~harstream.models.runtime.load_runtime` takes them; its
    ``BATCH_SIZES`` when None)."""
    from .runtime import (
        BATCH_SIZES,
        BUILDERS,
        RUNTIMES,
        KerasRuntime,
        RuntimeMismatch,
        Selected,
        candidate_entry,
        check_agreement,
        check_windows,
        window_cost,
    )
    from .staged import feature_layer

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
    agreeing: dict[str, dict[str, Runtime]] = {}
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
                rt = (
                    NumpyFeatures.of_stage(part.model)
                    if rt_name == "numpy"
                    else BUILDERS[rt_name](part, BATCH_SIZES if sizes is None else sizes)
                )
            except Exception as exc:  # conversion can fail for exotic layers
                candidates[rt_name] = {"error": str(exc)[:300]}
                continue
            if name == FEATURE_STAGE:
                whole = StagedRuntime(rt, keras_rt[DECISION_STAGE])
            else:
                whole = StagedRuntime(keras_rt[FEATURE_STAGE], rt)
            agreement = check_agreement(whole, reference, check)
            cost = window_cost(rt, sample, min(64, len(sample)))
            candidates[rt_name] = candidate_entry(agreement, cost)
            if agreement.ok:
                good.append((cost, rt))
                agreeing.setdefault(name, {})[rt_name] = rt
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
    numpy_rt = agreeing.get(FEATURE_STAGE, {}).get("numpy")
    lite = agreeing.get(DECISION_STAGE, {}).get("tflite")
    if isinstance(numpy_rt, NumpyFeatures) and isinstance(lite, TfliteRuntime):
        pair = StagedRuntime(numpy_rt, lite)
        together = final if staged.name == pair.name else check_agreement(pair, reference, check)
        if together.ok:
            record_staged_serving(artifact, numpy_rt, lite, together)
    return staged


def record_staged_serving(artifact, features: NumpyFeatures, decision: TfliteRuntime, agreement: Agreement, cache=None):
    """Write the staged serving record: numpy features (the layer's registered
    name and options) and the decision stage's LiteRT files (their hashes),
    which together agreed with the whole Keras model."""
    from .runtime import write_serving_record

    sha = artifact.metadata.get("sha256")
    if not sha:
        return None
    record = {
        "model_sha256": sha,
        "runtime": "staged",
        "context_steps": list(artifact.context_steps),
        "features": {"layer": features.layer, "options": features.options, "size": features.size},
        "decision": {
            "sha256": stage_sha256(sha, DECISION_STAGE),
            "blobs": {str(size): digest for size, digest in decision.blob_sha256.items()},
        },
        "agreement": {
            "windows": agreement.windows,
            "argmax_mismatches": agreement.argmax_mismatches,
            "max_abs_diff": agreement.max_abs_diff,
        },
    }
    return write_serving_record(record, staged=True, cache=cache)


def staged_from_record(record: dict, meta: dict, cache, threads: int = 1) -> StagedRuntime | None:
    """The numpy features + LiteRT decision of a staged serving record (None if
    the record does not fit ``meta`` or its files changed); no TensorFlow, no Keras."""
    from .runtime import read_blobs

    sha = meta["sha256"]
    spec, decision = record["features"], record["decision"]
    if record.get("runtime") != "staged" or decision["sha256"] != stage_sha256(sha, DECISION_STAGE):
        return None
    features = NumpyFeatures(str(spec["layer"]), dict(spec.get("options") or {}))
    if features.size != int((meta.get("stages") or {}).get("feature_size", -1)):
        return None
    blobs = read_blobs(decision["blobs"], decision["sha256"], cache)
    if blobs is None:
        return None
    lite = TfliteRuntime.from_blobs(blobs, len(meta["classes"]), threads)
    report = {"fast_start": True, "agreement": record.get("agreement")}
    return StagedRuntime(features, lite, report)
