"""Loading a personal model for the worker to serve.

The worker's registry (:mod:`harstream.stream.personal.registry`) watches a
folder and hands each new file to :func:`load_personal_model` in a background
thread: the file is checked (size, placement, device id, Keras safe mode,
hash, input shape, class count) and gets its serving runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harstream.models.artifact import ArtifactError, load_artifact, metadata_path, read_metadata
from harstream.models.runtime import NullRuntime, load_runtime
from harstream.stream.core.model_routing import ServedModel, personal_model
from harstream.stream.core.protocol import ProtocolError, check_device_id

MAX_MODEL_BYTES = 64 * 1024 * 1024


def load_personal_model(path: Path, runtime: str = "auto", display: Callable | None = None) -> ServedModel:
    """A personal model file, checked and ready to serve; ``ArtifactError``
    (or ``ValueError``) saying what is wrong otherwise. ``display(classes,
    metadata)`` makes its display factory (None: the worker's moving average)."""
    for file in (path, metadata_path(path)):
        if file.is_file() and file.stat().st_size > MAX_MODEL_BYTES:
            raise ArtifactError(
                f"{file}: {file.stat().st_size} bytes, more than the {MAX_MODEL_BYTES} a model may have"
            )
    meta = read_metadata(path)  # preprocessing, placement and classes agree with the pipeline
    if meta.get("placement") != "personal":
        raise ArtifactError(
            f"{path}: placement {meta.get('placement', 'waist')!r}; the registry serves personal models only"
        )
    try:
        device = check_device_id(meta.get("device"))
    except ProtocolError as exc:
        raise ArtifactError(f"{metadata_path(path)}: device: {exc.detail}") from None
    artifact = load_artifact(path)  # safe mode; hash, input shape and class count checked
    served_by = NullRuntime(len(artifact.classes)) if runtime == "none" else load_runtime(artifact, runtime)
    return personal_model(
        device,
        artifact.model_id,
        artifact.classes,
        context_steps=artifact.context_steps,
        display=display(artifact.classes, artifact.metadata) if display else None,
        runtime=served_by,
        source=str(path),
    )
