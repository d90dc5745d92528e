"""Where a device seems worn: the worker core publishes it with its
predictions in any/personal mode, the protocol refuses a placement it does
not know, and the dashboard card shows it."""

from __future__ import annotations

import numpy as np
import pytest

from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
from harstream.stream.core.model_routing import ModelRouter, ServedModel
from harstream.stream.core.protocol import (
    Prediction,
    ProtocolError,
    SampleBatch,
    decode_prediction,
    encode_prediction,
    encode_samples,
)
from harstream.stream.core.worker import StreamCore

T0 = 1_700_000_000.0
WALKING = [0.9, 0.04, 0.03, 0.03]
STILL = [0.02, 0.01, 0.01, 0.96]


def _core(placement_probabilities) -> StreamCore:
    waist = ServedModel("waist", "waist", "waist@1", ACTIVITIES, placement_probabilities=placement_probabilities)
    anywhere = ServedModel("any", "any", "any@1", PLACEMENT_FREE, placement_probabilities=placement_probabilities)
    return StreamCore(ACTIVITIES, "waist@1", router=ModelRouter(waist, anywhere))


def _samples(start: int, n: int, walking: bool) -> np.ndarray:
    """Samples ``start`` .. ``start + n`` of a phone upright in a pocket (50 Hz;
    acceleration in g with gravity along y, rotation rate in rad/s): walking
    (a 0.3 g bounce at 1.8 steps a second, a sway at the stride) or at rest."""
    t = (start + np.arange(n)) / 50.0
    step = 2 * np.pi * 1.8 * t
    acc = [0.1 * np.sin(step / 2), 1 + 0.3 * np.sin(step) + 0.1 * np.sin(2 * step + 0.5), 0.15 * np.sin(step + 1)]
    gyro = [0.4 * np.sin(step / 2), 0.2 * np.sin(step), 0.6 * np.sin(step / 2 + 1)]
    walk = np.column_stack(acc + gyro)
    rest = np.tile([0.0, 1.0, 0.0, 0.0, 0.0, 0.0], (n, 1))
    return (walk if walking else rest).astype(np.float32)


def _run(core: StreamCore, device: str, seconds: int, probs, meta=None) -> list[Prediction]:
    """``seconds`` of samples in 1-s messages, walking where the model (every
    window labelled ``probs``) says walking, else at rest."""
    walking = int(np.argmax(probs)) == 0
    out = []
    for s in range(seconds):
        batch = SampleBatch(device, s * 50, T0 + s, _samples(s * 50, 50, walking), meta=meta or {})
        core.ingest(encode_samples(batch), now=float(s))
        while core.waiting:
            _, taken = core.take_batch()
            n = len(taken[0].served.classes)
            p = np.tile(np.asarray(list(probs) + [0.0] * (n - len(probs))), (len(taken), 1))
            out.extend(core.finish_batch(taken, p, now=float(s)))
    return out


def _thigh(windows):
    return np.tile([0.1, 0.8, 0.1], (len(windows), 1))


def test_a_walking_device_is_published_as_worn_on_the_thigh_once_the_estimate_is_confident():
    got = _run(_core(_thigh), "phone:pocket", 30, WALKING)
    shown = [p.placement for p in got]
    assert shown[0] is None  # not sure after one window
    assert shown[-1] == "thigh" and set(shown) == {None, "thigh"}
    first = shown.index("thigh")
    assert first >= 4 and all(s == "thigh" for s in shown[first:])


def test_no_placement_is_published_while_the_device_is_still_or_the_estimate_is_unsure():
    assert {p.placement for p in _run(_core(_thigh), "phone:desk", 30, STILL)} == {None}
    unsure = _run(_core(lambda w: np.full((len(w), 3), 1 / 3)), "phone:pocket", 30, WALKING)
    assert unsure and {p.placement for p in unsure} == {None}


def test_a_device_at_the_declared_waist_gets_no_placement_estimate():
    got = _run(_core(_thigh), "phone:belt", 30, [0.9, 0.02, 0.02, 0.02, 0.02, 0.02], meta={"placement": "waist"})
    assert got and {p.mode for p in got} == {"waist"} and {p.placement for p in got} == {None}


def test_the_waist_likeness_comes_from_the_same_single_placement_call():
    calls = []

    def score(windows):
        calls.append(len(windows))
        return np.tile([0.7, 0.2, 0.1], (len(windows), 1))

    core = _core(score)
    for device in ("phone:a", "phone:b", "phone:c"):
        core.ingest(encode_samples(SampleBatch(device, 0, T0, np.zeros((128, 6), np.float32))), now=0.0)
    assert core.waiting == 3 and calls == [3]
    assert [w.waist_likeness for w in core.pending] == [0.7, 0.7, 0.7]


def test_a_placement_score_of_the_wrong_shape_is_counted_and_the_windows_are_still_served():
    core = _core(lambda w: np.ones(len(w)))  # one number a window, not three probabilities
    got = _run(core, "phone:w", 10, WALKING)
    assert got and {p.placement for p in got} == {None}
    assert core.drops["internal"] >= 1


def _prediction(**kw) -> Prediction:
    base = dict(
        device="phone:x",
        window=3,
        t_start=T0,
        t_end=T0 + 2.56,
        label="WALKING",
        probs=WALKING,
        smoothed="WALKING",
        smoothed_probs=WALKING,
        model="any@1",
        latency_ms=1.0,
        mode="any",
        classes=list(PLACEMENT_FREE),
    )
    return Prediction(**{**base, **kw})


def test_a_prediction_carries_its_placement_through_the_protocol_and_an_old_one_still_decodes():
    assert decode_prediction(encode_prediction(_prediction(placement="wrist"))).placement == "wrist"
    frames = encode_prediction(_prediction())
    old = frames[1].replace(b',"placement":null', b"")
    assert b"placement" not in old
    assert decode_prediction([frames[0], old]).placement is None


@pytest.mark.parametrize("bad", ["pocket", 3, ["thigh"]])
def test_a_prediction_with_a_placement_it_does_not_know_is_refused_naming_it(bad):
    frames = encode_prediction(_prediction(placement=bad))
    with pytest.raises(ProtocolError, match="placement .* is not one of waist, thigh, wrist"):
        decode_prediction(frames)
