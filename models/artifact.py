"""Model artifacts: a self-contained ``.keras`` file plus JSON metadata.

The ``.keras`` model takes preprocessed windows exactly as
:class:`~harstream.stream.core.pipeline.DevicePipeline` emits them (float32
``[n, 128, 9]``, UCI channel order) and returns class probabilities; any
normalisation or reshaping is a layer inside it. The metadata beside it
(``<name>.json``) records the classes, the preprocessing the model expects,
the data source and its hash, the split, epochs, test accuracy and library
versions. Loading always uses Keras safe mode and refuses a model whose
preprocessing differs from the pipeline's.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE, POSTURES, STILL
from harstream.stream.core.pipeline import preprocessing_params
from harstream.stream.files.small_file import FileRefused, read_small_file
from harstream.stream.files.zip_limits import ZipLimits, ZipRefused, check_member, open_zip

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
DEFAULT_MODEL = PRETRAINED_DIR / "default.keras"
#: The placement-free model (metadata ``"placement": "any"``).
ANY_MODEL = PRETRAINED_DIR / "any.keras"
#: The same recipe taught without the gyroscope (metadata ``"gyroscope": false``),
#: for any-mode devices that send none.
ANY_NO_GYRO_MODEL = PRETRAINED_DIR / "any_nogyro.keras"
#: Where a model may be worn, as its metadata's ``placement`` says: ``waist``
#: (HAPT's phone at the waist; also a model without the key), ``any``
#: (placement-free) or ``personal`` (calibrated on one device).
PLACEMENTS = ("waist", "any", "personal")


class ArtifactError(ValueError):
    """A model artifact is missing, unreadable or does not fit the pipeline."""


@dataclass
class ModelArtifact:
    """A loaded model with its metadata."""

    model: Any  # keras.Model
    metadata: dict
    path: Path

    @property
    def model_id(self) -> str:
        """Short, stable id: architecture name and the file's hash prefix."""
        return model_id_of(self.metadata)

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["classes"])

    @property
    def placement(self) -> str:
        """``waist``, ``any`` or ``personal`` (see :data:`PLACEMENTS`)."""
        return str(self.metadata.get("placement", "waist"))

    @property
    def context_steps(self) -> tuple[int, ...]:
        """How many windows back each extra input window lies (empty: the model
        takes one window); the worker stacks them with
        :class:`~harstream.stream.core.context.WindowContext`."""
        return context_steps_of(self.metadata)

    @property
    def stages(self) -> dict | None:
        """The feature and decision stages the model carries (metadata
        ``stages``; :mod:`harstream.models.staged`), None for a one-piece model."""
        return self.metadata.get("stages") or None


def model_id_of(metadata: dict) -> str:
    """``<architecture>@<sha256 prefix>`` of a model's metadata.

    >>> model_id_of({"architecture": "svm", "sha256": "0123456789abcdef"})
    'svm@01234567'
    """
    return f"{metadata.get('architecture', 'model')}@{metadata.get('sha256', '')[:8]}"


def metadata_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def library_versions() -> dict[str, str]:
    import keras
    import numpy
    import scipy
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


#: The largest model file, and the most its zip members may unpack to in all
#: (the shipped models are 3-10 MB); Keras reads a member whole into memory and
#: guards only members declaring over 4 GiB.
MAX_MODEL_BYTES = 1 << 30
#: The most a ``.keras`` file's ``config.json`` or ``metadata.json`` may unpack to
#: (the shipped ones are under 100 kB).
MAX_MODEL_CONFIG_BYTES = 16 << 20
#: What a ``.keras`` zip may declare: a Keras model holds a few files.
MODEL_ZIP_LIMITS = ZipLimits(members=10_000, directory_bytes=4 << 20, member_bytes=MAX_MODEL_BYTES)
_CONFIG_LIMITS = replace(MODEL_ZIP_LIMITS, member_bytes=MAX_MODEL_CONFIG_BYTES)


def check_model_zip(path: Path) -> None:
    """Refuse a ``.keras`` file larger than :data:`MAX_MODEL_BYTES`, or whose
    zip declares more than Keras should unpack (a zip bomb), naming the
    member, from the zip's directory alone (:data:`MODEL_ZIP_LIMITS`)."""
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ArtifactError(f"{path}: {size:,} bytes; a model file over {MAX_MODEL_BYTES:,} bytes is not read")
    try:
        with open_zip(path, MODEL_ZIP_LIMITS, str(path)) as archive:
            members = archive.infolist()
        total = 0
        for info in members:
            config = info.filename in ("config.json", "metadata.json")
            check_member(info, _CONFIG_LIMITS if config else MODEL_ZIP_LIMITS, f"{path}: member {info.filename}")
            total += info.file_size
            if total > MAX_MODEL_BYTES:
                raise ZipRefused(
                    f"{path}: members up to {info.filename[:100]!r} unpack to {total:,} bytes; "
                    f"over {MAX_MODEL_BYTES:,} is not read (a zip bomb?)"
                )
    except ZipRefused as exc:
        raise ArtifactError(str(exc)) from None


def save_artifact(model: Any, metadata: dict, path: str | Path) -> Path:
    """Write ``path`` (``.keras``) and its ``.json`` metadata; returns ``path``.

    ``classes``, ``preprocessing`` and ``library_versions`` are filled in when
    absent; ``sha256`` is the hash of the written ``.keras`` file.
    """
    from .staged import stage_metadata

    path = Path(path)
    if path.suffix != ".keras":
        raise ArtifactError(f"{path}: a model artifact must end in .keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    meta = {
        "classes": list(ACTIVITIES),
        "preprocessing": preprocessing_params(),
        "library_versions": library_versions(),
        **metadata,
        # what the model takes, read from the model itself (never from copied metadata)
        "input": {"shape": [None, *(int(d) for d in model.input_shape[1:])], "dtype": "float32"},
        "stages": stage_metadata(model),
        "sha256": file_sha256(path),
    }
    if meta["stages"] is None:  # a one-piece model
        del meta["stages"]
    metadata_path(path).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def read_metadata(path: str | Path) -> dict:
    """The metadata of a model artifact, checked against the pipeline."""
    path = Path(path)
    meta_file = metadata_path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such model file")
    if not meta_file.is_file():
        raise ArtifactError(f"{meta_file}: metadata missing; a model needs its .json beside it")
    try:
        text = read_small_file(meta_file, MAX_METADATA_BYTES, follow_symlinks=True).data
    except FileRefused as exc:  # a FIFO or a device where the .json should be, or too large
        raise ArtifactError(f"{meta_file}: {exc.strerror}; no model's metadata is") from None
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:  # a number of 5,000 digits, arrays nested 100,000 deep
        raise ArtifactError(f"{meta_file}: not valid JSON ({str(exc)[:200]})") from None
    check_fields(meta, where=str(meta_file))
    check_compatible(meta, where=str(meta_file))
    return meta


#: The largest metadata file read (the shipped ones are under 40 kB).
MAX_METADATA_BYTES = 4 << 20
_OPTIONAL_OBJECTS = ("data", "decoder", "split", "windows", "stages", "recipe", "placement_estimate", "input")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_fields(meta: Any, where: str = "metadata") -> None:
    """Refuse metadata whose fields readers use are of the wrong type, naming
    the field: the metadata must be an object; ``architecture`` short
    printable text; ``sha256`` 64 hex digits; ``context_steps``, ``seed``,
    ``epochs``, ``split.test_subjects`` and ``windows.train`` whole numbers;
    the objects (``decoder``, ``stages``, …) objects."""
    if not isinstance(meta, dict):
        raise ArtifactError(f"{where}: a JSON {type(meta).__name__}, not an object of model metadata")

    def wrong(field: str, wanted: str) -> ArtifactError:
        shown = json.dumps(_field(meta, field))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return ArtifactError(f"{where}: {field} {shown} is not {wanted}")

    architecture = meta.get("architecture", "model")
    if not isinstance(architecture, str) or not architecture.isprintable() or not 0 < len(architecture) <= 100:
        raise wrong("architecture", "printable text of 1-100 characters")
    if "sha256" in meta and not (isinstance(meta["sha256"], str) and _SHA256.fullmatch(meta["sha256"])):
        raise wrong("sha256", "64 lowercase hex digits")
    for name in _OPTIONAL_OBJECTS:
        if meta.get(name) is not None and not isinstance(meta[name], dict):
            raise wrong(name, "an object")
    steps = meta.get("context_steps")
    if steps is not None and not (isinstance(steps, list) and len(steps) <= 64 and all(map(_whole, steps))):
        raise wrong("context_steps", "a list of whole numbers")
    for name in ("seed", "epochs"):
        if meta.get(name) is not None and not _whole(meta[name]):
            raise wrong(name, "a whole number")
    held_out = (meta.get("split") or {}).get("test_subjects")
    if held_out is not None and not (isinstance(held_out, list) and all(map(_whole, held_out))):
        raise wrong("split.test_subjects", "a list of whole numbers")
    if (meta.get("windows") or {}).get("train") is not None and not _whole(meta["windows"]["train"]):
        raise wrong("windows.train", "a whole number")


def _field(meta: dict, dotted: str) -> Any:
    value: Any = meta
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def check_compatible(meta: dict, where: str = "metadata") -> None:
    """Refuse metadata whose preprocessing or classes differ from the pipeline's."""
    expected = preprocessing_params()
    got = meta.get("preprocessing")
    if not isinstance(got, dict):
        raise ArtifactError(f"{where}: preprocessing is not an object; it names the pipeline the model was trained for")
    if got != expected:
        diffs = sorted(k for k in set(expected) | set(got or {}) if (got or {}).get(k) != expected.get(k))
        raise ArtifactError(
            f"{where}: model was trained for different preprocessing "
            f"(differs in {', '.join(diffs) or 'everything'}); retrain it with this version"
        )
    placement = meta.get("placement", "waist")
    if not isinstance(placement, str) or placement not in PLACEMENTS:
        raise ArtifactError(f"{where}: placement {json.dumps(placement)[:60]} is not one of {', '.join(PLACEMENTS)}")
    classes = meta.get("classes")
    if placement == "personal":
        calibrated = [c for c in POSTURES if c in (classes or [])]
        expected = [*PLACEMENT_FREE[:3], *calibrated, STILL]
    else:
        expected = list(PLACEMENT_FREE if placement == "any" else ACTIVITIES)
    if classes != expected:
        shown = json.dumps(classes)
        shown = (
            shown
            if len(shown) <= 300
            else f"{shown[:300]}... ({len(classes) if isinstance(classes, list) else 1:,} in all)"
        )
        raise ArtifactError(f"{where}: classes {shown} are not what a {placement} model has: {expected}")


def check_artifact(path: str | Path | None = None) -> dict:
    """The metadata of the artifact at ``path`` (the shipped default when
    None), after every check that needs no TensorFlow: its metadata, its zip
    (no bomb) and its hash. A command checks the model and its data this way
    before it pays for TensorFlow (:func:`load_artifact` checks again)."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    meta = read_metadata(path)
    check_model_zip(path)
    if meta.get("sha256") and file_sha256(path) != meta["sha256"]:
        raise ArtifactError(f"{path}: file hash does not match its metadata; the file was changed")
    return meta


def context_steps_of(metadata: dict) -> tuple[int, ...]:
    """The past windows (steps back) a model with this metadata takes with each window."""
    return tuple(int(s) for s in metadata.get("context_steps") or ())


def load_artifact(path: str | Path | None = None) -> ModelArtifact:
    """Load a model artifact (the shipped default when ``path`` is None).

    Always in Keras safe mode: a file that needs arbitrary code is refused.
    """
    path = Path(path) if path is not None else DEFAULT_MODEL
    # before TensorFlow is imported: bad metadata and a zip bomb are refused at once
    meta = check_artifact(path)

    import keras

    # register our layers (WindowFeatures, RBFKernel, PlacementFreeFeatures, PostureHead, …) for safe mode
    from . import features, invariant, posture_layers, staged, svm  # noqa: F401

    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # keras raises many types for a bad file
        raise ArtifactError(f"{path}: Keras could not load it in safe mode ({exc})") from exc
    artifact = ModelArtifact(model=model, metadata=meta, path=path)
    check_input(artifact)
    return artifact


def check_input(artifact: ModelArtifact) -> None:
    """Refuse a model whose input does not match what the worker will feed it:
    ``(128, 9)`` windows, or ``(1 + len(context_steps), 128, 9)`` stacks."""
    from harstream.stream.core.context import check_steps
    from harstream.stream.core.pipeline import WINDOW, WINDOW_CHANNELS

    try:
        steps = check_steps(artifact.context_steps)
    except ValueError as exc:
        raise ArtifactError(f"{metadata_path(artifact.path)}: {exc}") from exc
    expected = ((1 + len(steps),) if steps else ()) + (WINDOW, WINDOW_CHANNELS)
    got = tuple(artifact.model.input_shape[1:])
    if got != expected:
        raise ArtifactError(
            f"{artifact.path}: the model takes {got} per window but its metadata "
            f"(context_steps {list(steps)}) means the worker feeds {expected}"
        )
    from .staged import stage_metadata

    if artifact.stages is not None and artifact.stages != stage_metadata(artifact.model):
        raise ArtifactError(
            f"{artifact.path}: its metadata names stages {artifact.stages} but the model carries "
            f"{stage_metadata(artifact.model)}"
        )
    outputs = int(artifact.model.output_shape[-1])
    if outputs != len(artifact.classes):
        raise ArtifactError(
            f"{artifact.path}: the model gives {outputs} probabilities but its metadata names "
            f"{len(artifact.classes)} classes ({', '.join(artifact.classes)})"
        )
