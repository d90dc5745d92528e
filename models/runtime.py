"""Serving runtimes: run a model artifact on batches of windows, fast.

Keras ``model.predict`` pays milliseconds of fixed overhead per call (it
builds a data pipeline every time), which dominates when a worker labels a
few windows at a time. Three runtimes share one verb,
``predict(x (n, 128, 9) float32) -> probabilities (n, classes) float32``
(``(n, k, 128, 9)`` for a model with context windows):

- ``keras``: ``model.predict`` — the seed's way, the reference.
- ``tf-function``: one ``tf.function`` traced per fixed batch size; a batch is
  padded to the next size so nothing is retraced while serving.
- ``tflite``: the model exported to LiteRT/TFLite and run by the
  ``ai-edge-litert`` interpreter. Recurrent layers convert to builtin ops only
  with a static batch dimension (a dynamic one needs TensorList ops from the
  Flex delegate, which ``ai-edge-litert`` does not ship), so there is one
  interpreter per fixed batch size and a batch is split into those sizes.
  Converted files are cached by model hash.

A runtime chosen by ``load_runtime`` that agreed with Keras leaves a
*serving record* beside the cached LiteRT files (the model's hash, the hash
of each converted file, the agreement). :func:`load_cached_runtime` starts
from that record alone — no TensorFlow, no conversion, no check windows — so
a restarted worker serves within a second; it refuses a record whose model
or converted files changed.

``load_runtime(artifact, "auto")`` builds the candidates, keeps those that
agree with Keras (same argmax, probabilities within 1e-4) on check windows,
and serves with the fastest; the next agreeing one is its fallback.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from harstream.models.artifact import ModelArtifact

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "tflite", "tf-function", "keras")
# Fixed batch sizes: few, because each costs a trace or a conversion at start;
# powers of four, so a batch splits into few calls (tflite) or pads by less
# than 4x (tf-function).
BATCH_SIZES = (1, 4, 16, 64)
AGREEMENT_ATOL = 1e-4


class RuntimeMismatch(RuntimeError):
    """A runtime could not be built or does not agree with the Keras model."""


class Runtime(Protocol):
    name: str

    def predict(self, x: np.ndarray) -> np.ndarray: ...


def split_batch(n: int, sizes: Sequence[int] = BATCH_SIZES) -> list[int]:
    """Fixed sizes summing exactly to ``n``: the largest first, no padding.

    >>> split_batch(23)
    [16, 4, 1, 1, 1]
    >>> split_batch(130)
    [64, 64, 1, 1]
    """
    out, left = [], n
    for size in sorted(sizes, reverse=True):
        while left >= size:
            out.append(size)
            left -= size
    if left:
        raise ValueError(f"batch sizes {sorted(sizes)} cannot sum to {n}; include 1")
    return out


def padded_size(n: int, sizes: Sequence[int] = BATCH_SIZES) -> int:
    """The smallest fixed size that holds ``n`` (at most the largest).

    >>> padded_size(5), padded_size(64), padded_size(200)
    (16, 64, 64)
    """
    return next((s for s in sorted(sizes) if s >= n), max(sizes))


def _as_windows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim not in (3, 4):
        raise ValueError(f"windows must be (n, 128, 9), or (n, k, 128, 9) with context, got {x.shape}")
    return x


class KerasRuntime:
    """``model.predict``: the seed's reference (slow per call)."""

    name = "keras"

    def __init__(self, artifact: ModelArtifact):
        self.model = artifact.model

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = _as_windows(x)
        if len(x) == 0:
            return np.empty((0, self.model.output_shape[-1]), np.float32)
        return np.asarray(self.model.predict(x, verbose=0), dtype=np.float32)


class TfFunctionRuntime:
    """A ``tf.function`` per fixed batch size, XLA-compiled (``jit_compile``:
    an order of magnitude faster than plain graph mode for LSTMs on CPU);
    batches are padded up to the next size."""

    name = "tf-function"

    def __init__(self, artifact: ModelArtifact, sizes: Sequence[int] = BATCH_SIZES, jit: bool = True):
        import tensorflow as tf

        model = artifact.model
        self.sizes = tuple(sorted(sizes))
        self.classes = int(model.output_shape[-1])
        shape = tuple(model.input_shape[1:])
        self._fns = {}
        for size in self.sizes:
            fn = tf.function(
                lambda a: model(a, training=False),
                input_signature=[tf.TensorSpec((size, *shape), tf.float32)],
                jit_compile=jit,
            )
            fn(np.zeros((size, *shape), np.float32))  # trace now, not while serving
            self._fns[size] = fn

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = _as_windows(x)
        out, top = [], self.sizes[-1]
        for start in range(0, len(x), top):
            part = x[start : start + top]
            size = padded_size(len(part), self.sizes)
            if size != len(part):
                part = np.concatenate([part, np.zeros((size - len(part), *part.shape[1:]), np.float32)])
            out.append(np.asarray(self._fns[size](part))[: min(top, len(x) - start)])
        return np.concatenate(out) if out else np.empty((0, self.classes), np.float32)


def tflite_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("HARSTREAM_CACHE", user_cache_dir("harstream"))) / "tflite"


def convert_to_tflite(artifact: ModelArtifact, batch: int, cache: Path | None = None) -> bytes:
    """The model as a TFLite flatbuffer with a static batch of ``batch``.

    Exported through a SavedModel with a fixed input signature; a static batch
    lets LSTM layers lower to builtin ops (no Flex delegate needed).
    """
    sha = artifact.metadata.get("sha256") or ""
    cache = tflite_cache_dir() if cache is None else cache
    cached = cache / f"{sha[:16]}-b{batch}.tflite" if sha else None
    if cached is not None and cached.is_file():
        return cached.read_bytes()
    import tempfile

    import tensorflow as tf

    shape = tuple(artifact.model.input_shape[1:])
    with tempfile.TemporaryDirectory() as tmp:
        artifact.model.export(
            tmp,
            format="tf_saved_model",
            input_signature=[tf.TensorSpec((batch, *shape), tf.float32)],
            verbose=False,
        )
        blob = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    if cached is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp_file = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp_file.write_bytes(blob)
        tmp_file.replace(cached)  # atomic: concurrent workers never read half a file
    return blob


class TfliteRuntime:
    """LiteRT interpreters, one per fixed batch size; a batch is split exactly.

    An interpreter is not thread-safe, so calls are serialised by a lock.
    """

    name = "tflite"

    def __init__(self, artifact: ModelArtifact, sizes: Sequence[int] = BATCH_SIZES, threads: int = 1):
        blobs = {size: convert_to_tflite(artifact, size) for size in sorted(sizes)}
        self._setup(blobs, int(artifact.model.output_shape[-1]), threads)

    @classmethod
    def from_blobs(cls, blobs: dict[int, bytes], classes: int, threads: int = 1) -> TfliteRuntime:
        """A runtime from converted flatbuffers (batch size -> bytes); no TensorFlow."""
        rt = cls.__new__(cls)
        rt._setup(blobs, classes, threads)
        return rt

    def _setup(self, blobs: dict[int, bytes], classes: int, threads: int) -> None:
        import hashlib
        import threading

        from ai_edge_litert.interpreter import Interpreter

        from harstream.logs import quiet_native_stderr

        self._lock = threading.Lock()
        self.sizes = tuple(sorted(blobs))
        self.classes = classes
        self.blob_sha256 = {size: hashlib.sha256(blob).hexdigest() for size, blob in blobs.items()}
        self._calls: dict[int, Callable[[np.ndarray], np.ndarray]] = {}
        for size in self.sizes:
            with quiet_native_stderr():  # LiteRT announces its XNNPACK delegate on stderr
                interp = Interpreter(model_content=blobs[size], num_threads=threads)
                interp.allocate_tensors()
            self._calls[size] = _interpreter_call(interp)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = _as_windows(x)
        out, start = [], 0
        with self._lock:
            for size in split_batch(len(x), self.sizes):
                out.append(self._calls[size](x[start : start + size]))
                start += size
        return np.concatenate(out) if out else np.empty((0, self.classes), np.float32)


def _interpreter_call(interp) -> Callable[[np.ndarray], np.ndarray]:
    inp = interp.get_input_details()[0]["index"]
    outp = interp.get_output_details()[0]["index"]

    def call(x: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp, x)
        interp.invoke()
        return interp.get_tensor(outp).copy()

    return call


class NullRuntime:
    """No inference: uniform probabilities. Measures the transport alone."""

    name = "none"

    def __init__(self, classes: int = 6):
        self.classes = classes

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full((len(x), self.classes), 1.0 / self.classes, np.float32)


BUILDERS: dict[str, Callable[..., Runtime]] = {
    "tf-function": TfFunctionRuntime,
    "tflite": TfliteRuntime,
}


@dataclass
class Agreement:
    """How a runtime's outputs compare with the Keras model's."""

    windows: int
    argmax_mismatches: int
    max_abs_diff: float

    @property
    def ok(self) -> bool:
        return self.argmax_mismatches == 0 and self.max_abs_diff <= AGREEMENT_ATOL


def check_agreement(runtime: Runtime, reference: np.ndarray, x: np.ndarray) -> Agreement:
    """Compare ``runtime`` on ``x`` with the reference probabilities."""
    got = runtime.predict(x)
    return Agreement(
        windows=len(x),
        argmax_mismatches=int((got.argmax(1) != reference.argmax(1)).sum()),
        max_abs_diff=float(np.abs(got - reference).max()) if len(x) else 0.0,
    )


def time_runtime(runtime: Runtime, x: np.ndarray, repeats: int = 5) -> float:
    """Median seconds per ``predict(x)`` call."""
    runtime.predict(x)  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runtime.predict(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def window_cost(runtime: Runtime, x: np.ndarray, top: int) -> float:
    """What the runtime choice minimises: seconds per window of a full batch of
    ``top`` windows of ``x`` (what matters under load) plus a share of one
    window's latency (what matters when idle)."""
    return (time_runtime(runtime, x[:1]) + time_runtime(runtime, x[:top])) / top


def candidate_entry(agreement: Agreement, cost: float) -> dict:
    """A candidate runtime's entry in a runtime choice's report."""
    return {
        "agrees": agreement.ok,
        "argmax_mismatches": agreement.argmax_mismatches,
        "max_abs_diff": agreement.max_abs_diff,
        "cost_ms": round(cost * 1000, 3),
    }


@dataclass
class Selected:
    """The serving runtime, its fallback and why they were chosen."""

    runtime: Runtime
    fallback: Runtime | None
    report: dict = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.runtime.predict(x)
        except Exception as exc:  # a broken runtime must not stop the worker
            if self.fallback is None:
                raise
            log.error("runtime %s failed (%s); switching to %s", self.runtime.name, exc, self.fallback.name)
            self.runtime, self.fallback = self.fallback, None
            return self.runtime.predict(x)

    @property
    def name(self) -> str:
        return self.runtime.name


def check_windows(count: int = 256, seed: int = 0, context_steps: Sequence[int] = ()) -> np.ndarray:
    """Windows to check agreement on: a fixed sample of the held-out test
    windows of the embedded data (all of them with ``count=0``), with their
    context windows for a context model."""
    from harstream.models.dataset import labelled_windows
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_dataset

    x = labelled_windows(load_dataset().of_subjects(UCI_TEST_SUBJECTS), context_steps=context_steps).x
    if count and count < len(x):
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), count, replace=False))]
    return x


def load_runtime(
    artifact: ModelArtifact,
    kind: str = "auto",
    check: np.ndarray | None = None,
    sizes: Sequence[int] = BATCH_SIZES,
) -> Selected:
    """The runtime to serve ``artifact`` with.

    ``auto`` tries ``tflite`` and ``tf-function``, keeps those agreeing with
    Keras on ``check`` windows, serves with the fastest (per window of a full
    batch plus a share of the single-window latency), and keeps the next one (or Keras) as fallback. A named runtime is
    checked too and refused if it disagrees.
    """
    if kind not in RUNTIMES:
        raise ValueError(f"runtime {kind!r}: choose one of {', '.join(RUNTIMES)}")
    keras_rt = KerasRuntime(artifact)
    if kind == "keras":
        return Selected(keras_rt, None, {"chosen": "keras"})
    if check is None:
        check = check_windows(context_steps=artifact.context_steps)
    reference = keras_rt.predict(check)
    names = ["tflite", "tf-function"] if kind == "auto" else [kind]
    good: list[tuple[float, Runtime]] = []
    report: dict = {"check_windows": len(check), "candidates": {}}
    for name in names:
        try:
            rt = BUILDERS[name](artifact, sizes)
        except Exception as exc:  # conversion can fail for exotic layers
            log.warning("runtime %s unavailable: %s", name, exc)
            report["candidates"][name] = {"error": str(exc)[:300]}
            continue
        agreement = check_agreement(rt, reference, check)
        cost = window_cost(rt, check, max(sizes))
        report["candidates"][name] = candidate_entry(agreement, cost)
        if agreement.ok:
            good.append((cost, rt))
            if isinstance(rt, TfliteRuntime):
                record_serving(artifact, rt, report["candidates"][name])
        else:
            log.warning("runtime %s disagrees with Keras: %s", name, agreement)
    if not good:
        if kind != "auto":
            raise RuntimeMismatch(f"runtime {kind} does not agree with the Keras model: {report}")
        log.warning("no compiled runtime agrees with Keras; serving with model.predict")
        return Selected(keras_rt, None, {**report, "chosen": "keras"})
    good.sort(key=lambda item: item[0])
    runtimes = [rt for _, rt in good] + [keras_rt]
    report["chosen"] = runtimes[0].name
    return Selected(runtimes[0], runtimes[1], report)


# ------------------------------------------------------------ fast start


def serving_record_path(model_sha256: str, cache: Path | None = None, staged: bool = False) -> Path:
    """Where the serving record of a model is: one for the whole model's LiteRT
    conversion, one (``staged``) for a staged model served stage by stage."""
    kind = "staged-serving" if staged else "serving"
    return (tflite_cache_dir() if cache is None else cache) / f"{model_sha256[:16]}-{kind}.json"


def write_serving_record(record: dict, staged: bool = False, cache: Path | None = None) -> Path:
    """Write ``record`` (with its ``model_sha256``) atomically, stamped with the time."""
    import json

    path = serving_record_path(record["model_sha256"], cache, staged)
    record = {**record, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)  # atomic: a starting worker never reads half a record
    return path


def record_serving(
    artifact: ModelArtifact, runtime: TfliteRuntime, agreement: dict, cache: Path | None = None
) -> Path | None:
    """Write the serving record of a LiteRT runtime that agreed with Keras."""
    sha = artifact.metadata.get("sha256")
    if not sha:
        return None
    record = {
        "model_sha256": sha,
        "runtime": runtime.name,
        "context_steps": list(artifact.context_steps),
        "blobs": {str(size): digest for size, digest in runtime.blob_sha256.items()},
        "agreement": agreement,
    }
    return write_serving_record(record, cache=cache)


def read_blobs(digests: dict, key_sha256: str, cache: Path | None = None) -> dict[int, bytes] | None:
    """The cached LiteRT files ``{batch size: bytes}`` of the model (or stage)
    cached under ``key_sha256``, each checked against its recorded hash; None
    if one is missing or changed, or there is none for a batch of one."""
    import hashlib

    cache = tflite_cache_dir() if cache is None else cache
    blobs = {}
    for size, digest in digests.items():
        try:
            blob = (cache / f"{key_sha256[:16]}-b{int(size)}.tflite").read_bytes()
        except OSError:
            return None
        if hashlib.sha256(blob).hexdigest() != digest:
            log.warning("cached LiteRT file for batch %s changed; converting again", size)
            return None
        blobs[int(size)] = blob
    return blobs if 1 in blobs else None
