"""Loading a personal model for the worker to serve: no TensorFlow, no conversion.

The worker's registry (:mod:`harstream.stream.personal.registry`) hands each
new ``<name>.personal.json`` to :func:`load_personal_model`: the file is read
and checked (:func:`~harstream.stream.personal.model_file.read_personal_file`:
a regular file, at most 256 kB, JSON, every parameter's shape and range),
must be fitted over the placement-free model this worker serves (and, where
its postures take the shared model's features, over a feature stage of the
width it was fitted on: else its postures would silently show STILL), and
then serves its device in that model's batches. A file of the old format (a
whole Keras model, ``<name>.keras``) is refused by name with the command
that refits it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harstream.stream.core.model_routing import ServedModel, personal_over
from harstream.stream.personal.model_file import SUFFIX, PersonalModelError, read_personal_file

#: Why a ``.keras`` personal model is no longer served, and what to do.
KERAS_REFUSAL = (
    "a Keras personal model (the format before {suffix}) is not served any more: refit it with "
    "`harstream calibrate --data <its calibration folder> --device <id> --out {stem}{suffix}` "
    "(the /phone page's calibrations are kept under runs/calibration/)"
)


_WIDTHS: weakref.WeakKeyDictionary[ServedModel, int] = weakref.WeakKeyDictionary()


def feature_width(base: ServedModel) -> int:
    """How many features ``base``'s feature stage gives a window (measured
    once on a still window, then remembered); 0 without a feature stage."""
    if base.features is None:
        return 0
    if base not in _WIDTHS:
        still = np.zeros((1, 128, 9), np.float32)
        still[..., 6] = 1.0  # gravity along x, as a device at rest reads it
        _WIDTHS[base] = int(np.asarray(base.features(still)).reshape(1, -1).shape[1])
    return _WIDTHS[base]


def load_personal_model(path: Path, base: ServedModel | None, display: Callable | None = None) -> ServedModel:
    """The personal model in ``path``, checked and ready to serve over
    ``base`` (the worker's placement-free model); :class:`PersonalModelError`
    saying what is wrong otherwise. ``display(classes, metadata)`` makes its
    display factory (None: the worker's moving average)."""
    path = Path(path)
    if path.name.endswith(".keras"):
        raise PersonalModelError(
            f"{path.name}: " + KERAS_REFUSAL.format(suffix=SUFFIX, stem=path.name[: -len(".keras")]), "keras_format"
        )
    if base is None:
        raise PersonalModelError(
            f"{path.name}: this worker serves no placement-free model to calibrate over", "no_shared_model"
        )
    head = read_personal_file(path)
    if head.base_model != base.model_id:
        raise PersonalModelError(
            f"{path.name}: fitted over {head.base_model[:60]!r}, but this worker serves {base.model_id!r}: "
            "refit it (harstream calibrate, or calibrate again on the /phone page)",
            "other_base",
        )
    if head.feature_size and base.features is None:
        raise PersonalModelError(
            f"{path.name}: its postures need the shared model's features, and this worker serves "
            f"{base.model_id} whole (--whole-model): serve it staged",
            "needs_features",
        )
    if head.feature_size and head.feature_size != feature_width(base):
        raise PersonalModelError(
            f"{path.name}: its postures take {head.feature_size} features of the shared model, but "
            f"{base.model_id} gives {feature_width(base)} a window: refit it (harstream calibrate, "
            "or calibrate again on the /phone page)",
            "feature_width",
        )
    maker = display(head.classes, {"decoder": head.decoder}) if display else None
    return personal_over(base, head, maker)
