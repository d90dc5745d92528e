"""Activity names: the six UCI HAR classes and HAPT's postural transitions."""

from __future__ import annotations

from collections.abc import Sequence

# Model classes 0..5 are HAPT/UCI labels 1..6.
ACTIVITIES = (
    "WALKING",
    "WALKING_UPSTAIRS",
    "WALKING_DOWNSTAIRS",
    "SITTING",
    "STANDING",
    "LAYING",
)
TRANSITIONS = (
    "STAND_TO_SIT",
    "SIT_TO_STAND",
    "SIT_TO_LIE",
    "LIE_TO_SIT",
    "STAND_TO_LIE",
    "LIE_TO_STAND",
)
#: Still, in a posture the device cannot name without knowing where it sits.
STILL = "STILL"
#: What a device can know from any placement: the three ways of walking,
#: and still (sitting, standing and lying merged).
PLACEMENT_FREE = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", STILL)
#: The postures a calibration can teach a device, in ACTIVITIES order.
POSTURES = ("SITTING", "STANDING", "LAYING")
UNKNOWN = "unknown"
#: The final history's label for a device set down, not worn (a phone lying on a table): no
#: activity of its owner, counted apart from lying (stream/core/history.py).
SET_DOWN = "SET_DOWN"
UNLABELLED = -1


def label_name(label: int) -> str:
    """Name of a HAPT label (1-12), ``unknown`` for -1 or anything else.

    >>> label_name(1), label_name(8), label_name(-1)
    ('WALKING', 'SIT_TO_STAND', 'unknown')
    """
    if 1 <= label <= 6:
        return ACTIVITIES[label - 1]
    if 7 <= label <= 12:
        return TRANSITIONS[label - 7]
    return UNKNOWN


def class_of_label(label: int) -> int | None:
    """Model class index (0-5) of a HAPT label, or ``None`` if not an activity."""
    return label - 1 if 1 <= label <= 6 else None


def class_for(activity: str, classes: Sequence[str]) -> str | None:
    """The class of a model with ``classes`` an activity (one of
    :data:`ACTIVITIES`) falls in: itself, else STILL for a posture the model
    cannot name (a placement-free model, an uncalibrated posture), else None.

    >>> class_for("SITTING", PLACEMENT_FREE), class_for("WALKING", PLACEMENT_FREE)
    ('STILL', 'WALKING')
    >>> class_for("LAYING", ("WALKING", "SITTING", "STILL")), class_for("LAYING", ("WALKING",))
    ('STILL', None)
    """
    if activity in classes:
        return activity
    if activity in POSTURES and STILL in classes:
        return STILL
    return None
