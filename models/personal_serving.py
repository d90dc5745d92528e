"""Loading a personal model for the worker to serve: no TensorFlow, no conversion.

The worker's registry (:mod:`harstream.stream.personal.registry`) hands each
new ``<name>.personal.json`` to :func:`load_personal_model`: the file is read
and checked (:func:`~harstream.stream.personal.model_file.read_personal_file`:
a regular file, at most 256 kB, JSON, every parameter's shape and range),
must be fitted over the placement-free model this worker serves, and then
serves its device in that model's batches. A file of the old format (a
whole Keras model, ``<name>.keras``) is refused by name with the command
that refits it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harstream.stream.core.model_routing import ServedModel, personal_over
from harstream.stream.personal.model_file import SUFFIX, PersonalModelError, read_personal_file

#: Why a ``.keras`` personal model is no longer served, and what to do.
KERAS_REFUSAL = (
    "a Keras personal model (the format before {suffix}) is not served any more: refit it with "
    "`harstream calibrate --data <its calibration folder> --device <id> --out {stem}{suffix}` "
    "(the /phone page's calibrations are kept under runs/calibration/)"
)


def load_personal_model(path: Path, base: ServedModel | None, display: Callable | None = None) -> ServedModel:
    """The personal model in ``path``, checked and ready to serve over
    ``base`` (the worker's placement-free model); :class:`PersonalModelError`
    saying what is wrong otherwise. ``display(classes, metadata)`` makes its
    display factory (None: the worker's moving average)."""
    path = Path(path)
    if path.name.endswith(".keras"):
        raise PersonalModelError(
            f"{path.name}: " + KERAS_REFUSAL.format(suffix=SUFFIX, stem=path.name[: -len(".keras")])
        )
    if base is None:
        raise PersonalModelError(f"{path.name}: this worker serves no placement-free model to calibrate over")
    head = read_personal_file(path)
    if head.base_model != base.model_id:
        raise PersonalModelError(
            f"{path.name}: fitted over {head.base_model[:60]!r}, but this worker serves {base.model_id!r}: "
            "refit it (harstream calibrate, or calibrate again on the /phone page)"
        )
    if head.feature_size and base.features is None:
        raise PersonalModelError(
            f"{path.name}: its postures need the shared model's features, and this worker serves "
            f"{base.model_id} whole (--whole-model): serve it staged"
        )
    maker = display(head.classes, {"decoder": head.decoder}) if display else None
    return personal_over(base, head, maker)
