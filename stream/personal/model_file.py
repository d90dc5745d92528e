"""The personal-model file: one device's few parameters as plain JSON, checked before use.

``<name>.personal.json`` (:data:`SUFFIX`) holds a
:class:`~harstream.stream.core.posture.PersonalHead` — prototypes,
micro-motion means, margins, the half-turns it allows, the activities it
calibrated, the base model it was fitted over — plus what the calibration
said (``summary``, ``calibration``) and the display decoder's parameters:
a few kilobytes. Reading it needs no TensorFlow and runs no code: the file
is read by :func:`~harstream.stream.files.small_file.read_small_file` (no
symlink followed, a regular file of at most :data:`MAX_BYTES`, checked before
a byte is read), parsed as JSON, and every number is checked for its shape
and range before a head is built. Anything else is a :class:`PersonalModelError` naming the
file and what was wrong.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> (folder / "x.personal.json").write_text('{"format": "harstream-personal/1", "device": "phone:a"}')
55
>>> try:
...     read_personal_file(folder / "x.personal.json")
... except PersonalModelError as exc:
...     print(exc)
x.personal.json: base_model: missing
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harstream.stream.core.activities import ACTIVITIES, POSTURES
from harstream.stream.core.posture import INSEPARABLE, MAX_PROTOTYPES, N_MOTION, TURN_NAMES, PersonalHead
from harstream.stream.core.protocol import ProtocolError, check_device_id
from harstream.stream.files.small_file import FileRefused, read_small_file

FORMAT = "harstream-personal/1"
SUFFIX = ".personal.json"
#: A personal model is a few kilobytes; a larger file is refused unread.
MAX_BYTES = 256 * 1024
#: The shared model's features a discriminant may take, at most.
MAX_FEATURES = 2048


class PersonalModelError(ValueError):
    """A personal-model file that cannot be served, and why; ``kind`` names
    the reason for the counts (``bad_file``: unreadable or out of shape or
    range; ``keras_format``, ``other_base``, ``needs_features``,
    ``feature_width``: the loader's reasons)."""

    def __init__(self, message: str, kind: str = "bad_file"):
        super().__init__(message)
        self.kind = kind


def read_personal_file(path: str | Path) -> PersonalHead:
    """The checked :class:`PersonalHead` in ``path``; :class:`PersonalModelError` otherwise."""
    path = Path(path)
    try:
        raw = read_small_file(path, MAX_BYTES).data
    except FileRefused as exc:  # a symlink, a FIFO, a device, a folder; too large
        raise PersonalModelError(f"{path.name}: {exc.strerror}; refused unread") from None
    except OSError as exc:  # gone, unreadable
        raise PersonalModelError(f"{path.name}: cannot be read ({exc.strerror}); refused unread") from None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deep, a 5000-digit number
        raise PersonalModelError(
            f"{path.name}: not a JSON personal model ({type(exc).__name__}: {exc})"[:300]
        ) from None
    return head_from_json(doc, path.name, hashlib.sha256(raw).hexdigest())


def _floats(doc: dict, key: str, shape: tuple[int, ...], low: float, high: float, where: str) -> np.ndarray:
    if key not in doc:
        raise PersonalModelError(f"{where}: {key}: missing")
    try:
        value = np.asarray(doc[key], dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise PersonalModelError(f"{where}: {key}: not an array of numbers") from None
    if value.size == 0 and np.prod(shape) == 0:  # no posture calibrated: [] stands for (0, n)
        value = value.reshape(shape)
    if value.shape != shape:
        raise PersonalModelError(f"{where}: {key}: shape {value.shape}, expected {shape}")
    if not np.isfinite(value).all() or (value.size and (value.min() < low or value.max() > high)):
        raise PersonalModelError(f"{where}: {key}: values must be finite and within {low:g}..{high:g}")
    return value


def _flag(doc: dict, key: str, where: str) -> bool:
    """``doc[key]`` as a bool (False when absent)."""
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise PersonalModelError(f"{where}: {key}: expected true or false")
    return value


def _names(doc: dict, key: str, allowed: Sequence[str], where: str) -> list[str]:
    value = doc.get(key)
    if not isinstance(value, list) or len(value) > len(allowed) or len(set(map(str, value))) != len(value):
        raise PersonalModelError(f"{where}: {key}: expected a list of distinct names from {', '.join(allowed)}")
    bad = [v for v in value if v not in allowed]
    if bad:
        raise PersonalModelError(f"{where}: {key}: {str(bad[0])[:40]!r} is not one of {', '.join(allowed)}")
    return [str(v) for v in value]


def head_from_json(doc: Any, where: str = "personal model", digest: str = "") -> PersonalHead:
    """A :class:`PersonalHead` from a parsed file, every field checked."""
    if not isinstance(doc, dict):
        raise PersonalModelError(f"{where}: expected a JSON object")
    if doc.get("format") != FORMAT:
        raise PersonalModelError(f"{where}: format {str(doc.get('format'))[:40]!r}, expected {FORMAT!r}")
    try:
        device = check_device_id(doc.get("device"))
    except ProtocolError as exc:
        raise PersonalModelError(f"{where}: device: {exc.detail}") from None
    base = doc.get("base_model")
    if base is None:
        raise PersonalModelError(f"{where}: base_model: missing")
    if not isinstance(base, dict) or not isinstance(base.get("model_id"), str) or len(base["model_id"]) > 200:
        raise PersonalModelError(f"{where}: base_model: expected {{'model_id': ...}}")
    postures = _names(doc, "postures", POSTURES, where)
    postures = [p for p in POSTURES if p in postures]
    protos = doc.get("prototypes")
    if not isinstance(protos, dict) or sorted(protos) != sorted(postures):
        raise PersonalModelError(f"{where}: prototypes: expected one entry per posture ({', '.join(postures)})")
    prototypes = {}
    for posture in postures:
        rows = protos[posture]
        n = len(rows) if isinstance(rows, list) else 0
        if not 1 <= n <= MAX_PROTOTYPES:
            raise PersonalModelError(f"{where}: prototypes.{posture}: 1..{MAX_PROTOTYPES} directions expected")
        p = _floats(protos, posture, (n, 3), -1.01, 1.01, f"{where}: prototypes")
        norms = np.linalg.norm(p, axis=1)
        if np.any(np.abs(norms - 1.0) > 0.05):
            raise PersonalModelError(f"{where}: prototypes.{posture}: directions must be unit vectors")
        prototypes[posture] = (p / norms[:, None]).tolist()
    k = len(postures)
    turns = _names(doc, "turns", TURN_NAMES, where)
    settings = doc.get("settings")
    if not isinstance(settings, dict):
        raise PersonalModelError(f"{where}: settings: expected an object")
    max_angle = float(_floats(settings, "max_angle", (), 0.1, 90.0, f"{where}: settings"))
    sharpness = float(_floats(settings, "sharpness", (), 0.0, 10_000.0, f"{where}: settings"))
    weight = float(_floats(settings, "motion_weight", (), 0.0, 100.0, f"{where}: settings"))
    mean = _floats(doc, "motion_mean", (k, N_MOTION), -20.0, 20.0, where)
    scale = _floats(doc, "motion_scale", (N_MOTION,), 1e-3, 100.0, where)
    margins = _floats(doc, "margins", (k, k), 0.0, INSEPARABLE, where)
    calibrated = _names(doc, "calibrated", ACTIVITIES, where)
    discriminant: dict = {}
    if doc.get("feature_coef"):  # the shared model's features: a few hundred at most
        n = len(doc.get("feature_mean") or ())
        if not 1 <= n <= MAX_FEATURES or k < 2:
            raise PersonalModelError(
                f"{where}: feature_mean: 1..{MAX_FEATURES} features and 2 postures or more expected"
            )
        discriminant = {
            "feature_mean": _floats(doc, "feature_mean", (n,), -1e6, 1e6, where).tolist(),
            "feature_scale": _floats(doc, "feature_scale", (n,), 1e-9, 1e6, where).tolist(),
            "feature_coef": _floats(doc, "feature_coef", (n, k), -1e9, 1e9, where).tolist(),
            "feature_intercept": _floats(doc, "feature_intercept", (k,), -1e9, 1e9, where).tolist(),
        }
    anchor: dict = {}
    if doc.get("walk_down") is not None:  # optional (files before it have none): the calibrated walk's direction
        down = _floats(doc, "walk_down", (3,), -1.01, 1.01, where)
        if abs(float(np.linalg.norm(down)) - 1.0) > 0.05:
            raise PersonalModelError(f"{where}: walk_down: must be a unit vector")
        anchor = {
            "walk_down": (down / np.linalg.norm(down)).tolist(),
            "walk_angle": _floats(doc, "walk_angle", (k, 2), 0.0, 180.0, where).tolist(),
            "angle_weight": float(_floats(settings, "angle_weight", (), 0.0, 100.0, f"{where}: settings")),
            # optional (files before it have none, and keep naming as they did)
            "angle_abstain": _flag(settings, "angle_abstain", f"{where}: settings"),
            "angle_trusted": _flag(settings, "angle_trusted", f"{where}: settings"),
        }
        if settings.get("sides") is not None:  # optional (files before it have none, and keep naming as they did)
            sides = _floats(settings, "sides", (3,), 0.0, 180.0, f"{where}: settings")
            anchor["sides"] = sides.tolist()
        if k and min(row[1] for row in anchor["walk_angle"]) < 0.1:
            raise PersonalModelError(f"{where}: walk_angle: each spread must be at least 0.1 degrees")
    # optional (files before it have none, and keep matching every allowed turn alike)
    turn_cost = (
        float(_floats(settings, "turn_cost", (), 0.0, 2.0, f"{where}: settings")) if "turn_cost" in settings else 0.0
    )
    decoder = doc.get("decoder")
    if decoder is not None and not isinstance(decoder, dict):
        raise PersonalModelError(f"{where}: decoder: expected an object")
    summary = doc.get("summary", [])
    if not isinstance(summary, list) or len(summary) > 20 or not all(isinstance(s, str) for s in summary):
        raise PersonalModelError(f"{where}: summary: expected a list of at most 20 lines")
    return PersonalHead(
        device,
        f"personal@{digest[:8]}" if digest else "personal",
        base["model_id"],
        tuple(postures),
        prototypes,
        turns=turns,
        max_angle=max_angle,
        sharpness=sharpness,
        motion_mean=mean.tolist(),
        motion_scale=scale.tolist(),
        motion_weight=weight,
        margins=margins.tolist(),
        calibrated=frozenset(calibrated),
        turn_cost=turn_cost,
        decoder=decoder,
        summary=tuple(s[:300] for s in summary),
        **discriminant,
        **anchor,
    )


def head_to_json(head: PersonalHead, **extra: Any) -> dict:
    """The file's content for ``head`` (``extra``: what the calibration said,
    kept for people; the loader reads only the parameters)."""
    doc = {
        "format": FORMAT,
        "device": head.device,
        "base_model": {"model_id": head.base_model},
        "postures": list(head.postures),
        "calibrated": [a for a in ACTIVITIES if a in head.calibrated],
        "classes": list(head.classes),
        "prototypes": {p: np.round(np.asarray(v, float), 6).tolist() for p, v in head.prototypes.items()},
        "turns": list(head.turns),
        "settings": {"max_angle": head.max_angle, "sharpness": head.sharpness, "motion_weight": head.motion_weight},
        "motion_mean": np.round(np.asarray(head.motion_mean, float).reshape(-1, N_MOTION), 6).tolist(),
        "motion_scale": np.round(
            np.asarray(head.motion_scale if len(head.motion_scale) else [1.0] * N_MOTION), 6
        ).tolist(),
        "margins": np.round(
            np.asarray(head.margins, float).reshape(len(head.postures), len(head.postures)), 6
        ).tolist(),
        "summary": list(head.summary),
    }
    if head.turn_cost:
        doc["settings"]["turn_cost"] = head.turn_cost
    if head.feature_size:
        doc["feature_mean"] = np.round(np.asarray(head.feature_mean, float), 6).tolist()
        doc["feature_scale"] = np.round(np.asarray(head.feature_scale, float), 6).tolist()
        doc["feature_coef"] = np.round(np.asarray(head.feature_coef, float), 6).tolist()
        doc["feature_intercept"] = np.round(np.asarray(head.feature_intercept, float), 6).tolist()
    if len(head.walk_down) == 3:
        doc["walk_down"] = np.round(np.asarray(head.walk_down, float), 6).tolist()
        doc["walk_angle"] = np.round(np.asarray(head.walk_angle, float).reshape(-1, 2), 3).tolist()
        doc["settings"]["angle_weight"] = head.angle_weight
        doc["settings"]["angle_abstain"] = head.angle_abstain
        doc["settings"]["angle_trusted"] = head.angle_trusted
        if len(head.sides) == 3:
            doc["settings"]["sides"] = [round(float(v), 3) for v in head.sides]
    if head.decoder is not None:
        doc["decoder"] = head.decoder
    doc.update(extra)
    return doc


def write_personal_file(path: str | Path, doc: dict) -> Path:
    """Write ``doc`` to ``path`` by a rename (a watcher never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=1, sort_keys=False) + "\n"
    if len(text.encode()) > MAX_BYTES:
        raise PersonalModelError(f"{path.name}: {len(text)} bytes, more than the {MAX_BYTES} a personal model may have")
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


def personal_file_name(path: str | Path) -> Path:
    """``path`` with the personal-model suffix: ``x.keras`` (the old format's
    name), ``x.json`` or ``x`` become ``x.personal.json``.

    >>> personal_file_name("runs/personal/p.keras").name, personal_file_name("p.personal.json").name
    ('p.personal.json', 'p.personal.json')
    """
    path = Path(path)
    if path.name.endswith(SUFFIX):
        return path
    stem = path.name[: -len(path.suffix)] if path.suffix in (".keras", ".json") else path.name
    return path.with_name(stem + SUFFIX)
