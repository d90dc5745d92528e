"""Fast start: serve a model from the record of a runtime checked earlier.

When a LiteRT conversion of a model agreed with Keras on a previous start,
:mod:`.runtime` (a whole model) or :mod:`.staged_runtime` (numpy features
plus the decision stage) left a serving record beside the cached files.
:func:`load_cached_runtime` rebuilds the runtime from that record, checking
the hashes of the model file and of every converted file, without importing
TensorFlow or Keras: a restarted worker serves within a second.
"""

from __future__ import annotations

import json
from pathlib import Path

from harstream.models.artifact import DEFAULT_MODEL, ArtifactError, check_model_zip, file_sha256, read_metadata
from harstream.models.runtime import Runtime, TfliteRuntime, read_blobs, serving_record_path, tflite_cache_dir
from harstream.models.staged_runtime import staged_from_record


def load_cached_runtime(
    model: str | Path | None = None, cache: Path | None = None, threads: int = 1, whole_model: bool = False
) -> tuple[Runtime, dict] | None:
    """``(runtime, metadata)`` from the model's serving record, or ``None``
    when there is none (or it no longer matches: then the caller takes the
    full path, which writes a new one). Never imports TensorFlow or Keras.

    A staged model (metadata ``stages``) is served stage by stage from its
    staged record — numpy features and the decision stage's LiteRT files, a
    :class:`~harstream.models.staged_runtime.StagedRuntime` — unless
    ``whole_model``: then from the whole model's record, like a flat model.

    Raises :class:`~harstream.models.artifact.ArtifactError` if the model file
    itself does not match its metadata.
    """
    path = Path(model) if model is not None else DEFAULT_MODEL
    meta = read_metadata(path)
    sha = meta.get("sha256")
    if not sha:
        return None
    check_model_zip(path)
    if file_sha256(path) != sha:
        raise ArtifactError(f"{path}: file hash does not match its metadata; the file was changed")
    cache = tflite_cache_dir() if cache is None else cache
    staged = bool(meta.get("stages")) and not whole_model
    try:
        record = json.loads(serving_record_path(sha, cache, staged).read_text())
        steps = [int(s) for s in meta.get("context_steps") or ()]
        if record.get("model_sha256") != sha or record.get("context_steps") != steps:
            return None
        if staged:
            runtime = staged_from_record(record, meta, cache, threads)
            return None if runtime is None else (runtime, meta)
        if record.get("runtime") != "tflite":
            return None
        blobs = read_blobs(record["blobs"], sha, cache)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if blobs is None:
        return None
    return TfliteRuntime.from_blobs(blobs, len(meta["classes"]), threads), meta
