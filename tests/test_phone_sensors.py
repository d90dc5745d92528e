"""What the gateway makes of a phone's sensors. A phone without a gyroscope
(a budget phone, a browser whose rotationRate is null) is served from its
accelerometer alone: its gyro reads 0 and its batches say so; a gyroscope
that shows up later is used again. A phone whose accelerometer leaves
gravity out is told so, and counted."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
from test_pressure_end_to_end import G, _RoutedWorker, _walk, gateway_for
from websockets.asyncio.client import connect

from harstream.stream.gateway.phone_feeds import NO_GYRO_AFTER_S, DeviceFeed
from harstream.stream.gateway.phone_formats import Readings

NONE = np.empty(0)


def _acc_only(t: np.ndarray) -> Readings:
    return Readings(t, _walk(t)[:, :3], NONE, np.empty((0, 3)))


def _both(t: np.ndarray) -> Readings:
    walk = _walk(t)
    return Readings(t, walk[:, :3], t, walk[:, 3:])


def _feed(batches_of, seconds: float, start: float = 1000.0) -> tuple[DeviceFeed, list]:
    """A feed given ``seconds`` of 100 Hz readings in 200 ms messages."""
    feed, out = DeviceFeed("phone:p", now=start), []
    for k in range(int(seconds / 0.2)):
        t = start + k * 0.2 + np.arange(20) / 100
        out += feed.add(batches_of(t), now=float(t[-1]))
    return feed, out


def test_a_phone_without_a_gyroscope_is_served_from_its_accelerometer_from_its_first_reading():
    feed, out = _feed(_acc_only, 6.0)
    assert not feed.has_gyro
    samples = np.concatenate([b.samples for b in out])
    assert out[0].seq == 0 and out[0].t0 == 1000.0  # nothing of the wait was lost
    assert len(samples) >= 6.0 * 50 - 10
    assert np.all(samples[:, 3:] == 0.0)
    assert np.allclose(samples[:, :3], _walk(1000.0 + np.arange(len(samples)) / 50)[:, :3] / 1.0, atol=0.02)
    assert all(b.meta["gyro"] is False for b in out)


def test_nothing_is_published_until_the_wait_for_a_gyroscope_is_over():
    _, out = _feed(_acc_only, NO_GYRO_AFTER_S - 0.4)
    assert out == []


def test_a_gyroscope_that_arrives_late_is_waited_for():
    def late_gyro(t):
        return _both(t) if t[0] >= 1001.0 else _acc_only(t)

    feed, out = _feed(late_gyro, 6.0)
    assert feed.has_gyro
    assert out and all("gyro" not in b.meta for b in out)
    assert np.abs(np.concatenate([b.samples for b in out])[:, 3:]).max() > 0.1


def test_a_gyroscope_that_appears_after_the_switch_is_used_again_in_a_new_segment():
    def gyro_later(t):
        return _both(t) if t[0] >= 1006.0 else _acc_only(t)

    feed, out = _feed(gyro_later, 10.0)
    assert feed.has_gyro and feed.resampler.segments == 2
    without = [b for b in out if b.meta.get("gyro") is False]
    with_gyro = [b for b in out if "gyro" not in b.meta]
    assert without and with_gyro
    assert with_gyro[0].seq > without[-1].seq + len(without[-1])  # a jump: the worker restarts its windows
    assert np.abs(with_gyro[-1].samples[:, 3:]).max() > 0.1


def test_a_browser_phone_without_rotation_rate_gets_labels_back_through_the_real_gateway():
    worker = _RoutedWorker()
    try:

        async def main():
            got: list[dict] = []
            async with gateway_for(worker) as gw:
                start = time.time() - 12
                async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                    hello = {"type": "hello", "device": "no-gyro", "units": {"acc": "m/s2", "gyro": "deg/s"}}
                    await ws.send(json.dumps(hello))
                    assert json.loads(await ws.recv())["type"] == "welcome"
                    for k in range(60):  # 12 s in 200 ms messages, no "gyro" list at all
                        t = start + k * 0.2 + np.arange(10) / 50
                        acc = np.column_stack([t * 1000, _walk(t - start)[:, :3] * G]).tolist()
                        await ws.send(json.dumps({"type": "samples", "acc": acc}))
                    try:
                        async with asyncio.timeout(15):
                            while len(got) < 3:
                                msg = json.loads(await ws.recv())
                                if msg.get("type") == "prediction":
                                    got.append(msg)
                    except TimeoutError:
                        pass
                stats = gw.stats()
            return got, stats

        got, stats = asyncio.run(main())
    finally:
        worker.close()
    assert len(got) >= 3 and {p["mode"] for p in got} == {"any"}
    assert stats["devices"]["phone:no-gyro"]["gyro"] is False


def test_an_accelerometer_without_gravity_is_warned_about_every_five_seconds_and_its_readings_kept():
    def linear(t):
        walk = _walk(t)
        walk[:, 1] -= 1.0  # gravity (along y in this walk) left out, as Android's linear acceleration does
        return Readings(t, walk[:, :3], t, walk[:, 3:])

    feed, out = _feed(linear, 11.0)
    assert feed.warnings == 2 and feed.warning is not None
    reason, detail = feed.warning
    assert reason == "no_gravity" and "including gravity" in detail and "phone:p" in detail
    assert sum(len(b) for b in out) > 10 * 50  # nothing of it was dropped


def test_an_accelerometer_in_m_s2_declared_as_g_is_warned_about_its_units():
    def metres(t):
        walk = _walk(t)
        return Readings(t, walk[:, :3] * G, t, walk[:, 3:])

    feed, _ = _feed(metres, 6.0)
    assert feed.warnings == 1 and feed.warning is not None
    assert feed.warning[0] == "acc_units" and '"m/s2"' in feed.warning[1]


def test_a_walking_or_resting_phone_with_gravity_is_never_warned():
    feed, _ = _feed(_both, 11.0)
    assert feed.warnings == 0 and feed.warning is None


def test_a_browser_sending_acceleration_without_gravity_is_told_over_the_websocket():
    worker = _RoutedWorker()
    try:

        async def main():
            async with gateway_for(worker) as gw:
                start = time.time() - 8
                warnings = []
                async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                    hello = {"type": "hello", "device": "linear", "units": {"acc": "m/s2", "gyro": "deg/s"}}
                    await ws.send(json.dumps(hello))
                    assert json.loads(await ws.recv())["type"] == "welcome"
                    for k in range(40):  # 8 s of event.acceleration: the walk without its 1 g
                        t = start + k * 0.2 + np.arange(10) / 50
                        walk = _walk(t - start)
                        walk[:, 1] -= 1.0
                        acc = np.column_stack([t * 1000, walk[:, :3] * G]).tolist()
                        gyro = np.column_stack([t * 1000, np.rad2deg(walk[:, 3:])]).tolist()
                        await ws.send(json.dumps({"type": "samples", "acc": acc, "gyro": gyro}))
                    try:
                        async with asyncio.timeout(10):
                            while not warnings:
                                msg = json.loads(await ws.recv())
                                if msg.get("type") == "warning":
                                    warnings.append(msg)
                    except TimeoutError:
                        pass
                return warnings, gw.stats()

        warnings, stats = asyncio.run(main())
    finally:
        worker.close()
    assert [w["reason"] for w in warnings] == ["no_gravity"]
    assert stats["rejects"]["no_gravity"] == 1
