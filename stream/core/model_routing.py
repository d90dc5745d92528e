"""Which model serves which device: the worker's routing table (no I/O).

Each device is served in one *mode* (docs/protocol.md, "Modes"):

- ``personal`` — a model calibrated on this very device is loaded;
- ``any`` — the placement-free model: the default for phones from the
  gateway (device ids in its ``phone:`` namespace) and for any device whose
  samples declare ``meta: {"placement": "any"}``;
- ``waist`` — the HAPT model: replays, and phones that declare
  ``meta: {"placement": "waist"}``; also every device when no placement-free
  model is served.

:class:`ModelRouter` holds the served models and answers
:meth:`ModelRouter.route`; it never loads a file or calls a model (the worker's
edge does, :mod:`~harstream.stream.personal.registry`). Its ``version`` moves
on every change, so the worker core re-routes a device on its next message
with one integer comparison.

>>> waist = ServedModel("waist", "waist", "cnn@1234", ("WALKING", "SITTING"))
>>> anywhere = ServedModel("any", "any", "svm@abcd", ("WALKING", "STILL"))
>>> router = ModelRouter(waist, anywhere)
>>> router.route("replay-3").mode, router.route("phone:pixel").mode
('waist', 'any')
>>> router.route("phone:pixel", placement="waist").mode
'waist'
>>> router.set_personal(personal_model("phone:pixel", "personal@77", ("WALKING", "SITTING", "STILL")))
>>> router.route("phone:pixel").mode, router.version
('personal', 1)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harstream.stream.core.activities import PLACEMENT_FREE
from harstream.stream.core.posture import PersonalHead
from harstream.stream.core.protocol import PHONE_NAMESPACE

#: The modes a device can be served in.
MODES = ("waist", "any", "personal")
#: What a producer may declare in its samples header ``meta.placement``.
DECLARABLE = ("waist", "any")


@dataclass(frozen=True, eq=False)
class ServedModel:
    """One model the worker serves, as the core needs to know it.

    ``key`` names its batch queue (``waist``, ``any`` or ``personal:<device>``);
    ``display`` makes a fresh display core for a device (``update(probs) ->
    (label, probs)``, ``reset()``), None for the core's moving average;
    ``runtime`` (``predict(x) -> probs``) is carried for the edge and never
    called by the core.
    """

    key: str
    mode: str
    model_id: str
    classes: tuple[str, ...]
    context_steps: tuple[int, ...] = ()
    display: Callable[[], Any] | None = None
    runtime: Any = None
    source: str = ""  # the file it came from, for logs and stats
    # a staged model's feature stage, (n, 128, 9) -> (n, F): the core computes each window's
    # features once and stacks feature vectors; ``runtime`` then takes (n, 1 + k, F)
    features: Callable[[Any], Any] | None = None
    # the activities the device's own calibration taught its personal model (class names):
    # stairs calibrated there need no other evidence (stream/core/stairs.py)
    calibrated: frozenset[str] = frozenset()
    # how like the waist gait stairs were learned on each window is, (n, 128, 9) -> (n,) in 0..1,
    # where the model can tell; None: it says nothing
    waist_likeness: Callable[[Any], Any] | None = None
    # where each window's device seems worn, (n, 128, 9) -> (n, 3) probabilities of
    # stream.core.placement.PLACEMENTS; when given, the core takes the waist-likeness from it
    # (one call for both) and tracks each device's placement for the page; None: no estimate
    placement_probabilities: Callable[[Any], Any] | None = None
    # a calibrated device's own parameters (stream.core.posture.PersonalHead), applied after
    # the shared model whose batch (``key``) its windows join; its runtime gives ``head.base`` classes
    head: PersonalHead | None = None
    device: str = ""  # the one device a personal model serves

    @property
    def output_classes(self) -> tuple[str, ...]:
        """The classes of what ``runtime`` returns: the shared model's for a personal head."""
        return self.base_classes if self.head is not None else self.classes

    @property
    def base_classes(self) -> tuple[str, ...]:
        return PLACEMENT_FREE if self.head is not None else self.classes

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"model {self.model_id}: mode {self.mode!r} is not one of {', '.join(MODES)}")
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "context_steps", tuple(int(s) for s in self.context_steps))
        object.__setattr__(self, "calibrated", frozenset(self.calibrated))


def personal_model(device: str, model_id: str, classes: Sequence[str], **kw: Any) -> ServedModel:
    """A :class:`ServedModel` in ``personal`` mode for ``device`` with a runtime of its own."""
    return ServedModel(f"personal:{device}", "personal", model_id, tuple(classes), device=device, **kw)


def personal_over(base: ServedModel, head: PersonalHead, display: Callable[[], Any] | None = None) -> ServedModel:
    """``head``'s device served in ``personal`` mode over the shared ``base``
    model: its windows join ``base``'s batches (same key, input, runtime), and
    ``head`` turns the shared probabilities into the device's own classes."""
    return ServedModel(
        base.key,
        "personal",
        head.model_id,
        head.classes,
        base.context_steps,
        display,
        base.runtime,
        head.model_id,
        features=base.features,
        calibrated=head.calibrated,  # what the stairs gate asks: stairs it calibrated need no other evidence
        waist_likeness=base.waist_likeness,
        placement_probabilities=base.placement_probabilities,
        head=head,
        device=head.device,
    )


def served_device(model: ServedModel) -> str:
    """The device a personal model serves."""
    return model.device or model.key.removeprefix("personal:")


def declared_placement(meta: Mapping[str, Any]) -> str | None:
    """The placement a samples header's ``meta`` declares, None if it declares
    none; :class:`ValueError` naming the value if it is not one we serve.

    >>> declared_placement({}), declared_placement({"placement": "waist"})
    (None, 'waist')
    >>> declared_placement({"placement": "ankle"})
    Traceback (most recent call last):
    ...
    ValueError: meta placement 'ankle' is not one of waist, any
    """
    value = meta.get("placement")
    if value is None:
        return None
    if value not in DECLARABLE:
        raise ValueError(f"meta placement {str(value)[:40]!r} is not one of {', '.join(DECLARABLE)}")
    return value


class ModelRouter:
    """The served models and the rule that picks one per device."""

    def __init__(
        self, waist: ServedModel, any_model: ServedModel | None = None, any_without_gyro: ServedModel | None = None
    ):
        if waist.mode != "waist":
            raise ValueError(f"the default model must be served in waist mode, not {waist.mode!r}")
        for model in (any_model, any_without_gyro):
            if model is not None and model.mode != "any":
                raise ValueError(f"a placement-free model must be served in any mode, not {model.mode!r}")
        if any_without_gyro is not None and (any_model is None or any_without_gyro.key == any_model.key):
            raise ValueError("a placement-free model without the gyroscope needs the one with it, under its own key")
        self.waist = waist
        self.any = any_model
        #: the placement-free model taught without the gyroscope, for any-mode devices that send none
        self.any_without_gyro = any_without_gyro
        self.personal: dict[str, ServedModel] = {}  # device -> its model
        self.version = 0

    def route(self, device: str, placement: str | None = None, gyro: bool = True) -> ServedModel:
        """The model for ``device`` whose samples declared ``placement``
        (``waist``, ``any`` or None): its personal model, else the declared
        placement's model, else ``any`` for a gateway phone, else ``waist``.
        In ``any`` mode a device without a gyroscope (``gyro`` False: its
        samples say ``meta.gyro: false``) gets the placement-free model
        taught without one, where it is served.

        >>> w, a = ServedModel("waist", "waist", "w", ("WALKING",)), ServedModel("any", "any", "a", ("STILL",))
        >>> bare = ServedModel("any:no-gyro", "any", "a0", ("STILL",))
        >>> ModelRouter(w, a, bare).route("phone:cheap", gyro=False).key
        'any:no-gyro'
        """
        personal = self.personal.get(device)
        if personal is not None:
            return personal
        if placement == "waist":
            return self.waist
        if self.any is not None and (placement == "any" or device.startswith(PHONE_NAMESPACE)):
            return self.any if gyro or self.any_without_gyro is None else self.any_without_gyro
        return self.waist

    def set_personal(self, model: ServedModel) -> None:
        """Serve ``model`` (mode ``personal``, key ``personal:<device>``) to its device."""
        if model.mode != "personal" or not served_device(model):
            raise ValueError(f"model {model.model_id}: not a personal model (mode {model.mode!r}, key {model.key!r})")
        self.personal[served_device(model)] = model
        self.version += 1

    def drop_personal(self, device: str) -> bool:
        """Stop serving ``device`` its personal model; whether it had one."""
        if self.personal.pop(device, None) is None:
            return False
        self.version += 1
        return True

    @property
    def models(self) -> list[ServedModel]:
        """Every model served: waist, any and any without the gyroscope (if
        served), then personal ones by device."""
        shared = [m for m in (self.waist, self.any, self.any_without_gyro) if m is not None]
        return shared + [self.personal[d] for d in sorted(self.personal)]

    def describe(self, modes: Counter[str] | None = None) -> list[dict]:
        """The served models for stats: key, mode, model id, classes, and how
        many devices each serves (``modes``: devices per :func:`stats_key`).
        Personal models over a shared model are one line (thousands of them
        would swamp every stats message)."""
        modes = modes or Counter()
        out = [
            {
                "key": m.key,
                "mode": m.mode,
                "model": m.model_id,
                "classes": list(m.classes),
                "devices": modes.get(m.key, 0),
            }
            for m in self.models
            if m.head is None
        ]
        heads = sum(1 for m in self.personal.values() if m.head is not None)
        if heads:
            out.append(
                {
                    "key": PERSONAL_HEADS,
                    "mode": "personal",
                    "model": f"{heads} personal model{'s' if heads != 1 else ''} over {self.any.model_id if self.any else '?'}",
                    "classes": [],
                    "devices": modes.get(PERSONAL_HEADS, 0),
                }
            )
        return out


#: The stats line of every personal model that rides on a shared model's batch.
PERSONAL_HEADS = "personal"


def stats_key(model: ServedModel) -> str:
    """The stats line a device served by ``model`` counts under."""
    return PERSONAL_HEADS if model.head is not None else model.key
