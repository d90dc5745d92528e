"""Stairs on evidence end to end: phones on a real WebSocket to the real
gateway, the real ingest bus to a real worker (serve() in a thread), its
predictions back over the output bus to each phone's connection. The
placement-free model is a stand-in that calls every window
WALKING_DOWNSTAIRS, as the waist-taught model does for a thigh's flat walk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
import time

import numpy as np
import pytest
from conftest import wait_for
from test_durable_log import PARTITIONS, Bridge, LogWorker, owners
from test_live_path import Collector
from websockets.asyncio.client import connect

from harstream.stream.bus.zmq_worker import serve
from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
from harstream.stream.core.barometer import pressure_hpa
from harstream.stream.core.model_routing import ModelRouter, ServedModel
from harstream.stream.gateway.server import Gateway, GatewayConfig

pytestmark = pytest.mark.timeout(120)
G = 9.80665


class Always:
    """A runtime that gives every window the same probabilities."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, np.float32)

    def predict(self, x):
        return np.tile(self.probs, (len(x), 1))


def _walk(t: np.ndarray) -> np.ndarray:
    """A walk at times ``t`` (s), the phone upright in a pocket: acceleration
    in g with gravity along y, rotation rate in rad/s; a 0.3 g bounce at 1.8
    steps a second, a sway at the stride."""
    step = 2 * np.pi * 1.8 * t
    acc = [0.1 * np.sin(step / 2), 1 + 0.3 * np.sin(step) + 0.1 * np.sin(2 * step + 0.5), 0.15 * np.sin(step + 1)]
    gyro = [0.4 * np.sin(step / 2), 0.2 * np.sin(step), 0.6 * np.sin(step / 2 + 1)]
    return np.column_stack(acc + gyro)


def _router() -> ModelRouter:
    waist = ServedModel("waist", "waist", "waist@t", ACTIVITIES, runtime=Always([0, 0, 1, 0, 0, 0]))
    anywhere = ServedModel("any", "any", "any@t", PLACEMENT_FREE, runtime=Always([0.1, 0.05, 0.8, 0.05]))
    return ModelRouter(waist, anywhere)


class _RoutedWorker:
    """serve() with the stand-in router in a thread, on ports it picks."""

    def __init__(self):
        self.stop, self.ready, self.result = threading.Event(), threading.Event(), {}

        def bound(ingest: str, output: str) -> None:
            self.ingest, self.output = ingest, output

        def run():
            self.result.update(
                serve(
                    None,
                    ACTIVITIES,
                    "waist@t",
                    ingest="tcp://127.0.0.1:*",
                    output="tcp://127.0.0.1:*",
                    stop=self.stop,
                    stats_every=0.2,
                    on_ready=self.ready.set,
                    on_bound=bound,
                    printer=None,
                    router=_router(),
                )
            )

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "worker did not start"

    def close(self) -> dict:
        self.stop.set()
        self.thread.join(30)
        return self.result


@contextlib.asynccontextmanager
async def gateway_for(worker: _RoutedWorker):
    """A real gateway on a free port publishing to ``worker`` and forwarding its predictions."""
    gw = Gateway(GatewayConfig(port=0, ingest=worker.ingest, output=worker.output, stats_interval=0))
    await gw.start()
    try:
        await asyncio.sleep(0.5)  # the worker's subscription reaches the gateway's socket
        yield gw
    finally:
        await gw.close()


async def _phone(port: int, device: str, seconds: int, climb_m_s: float | None) -> list[dict]:
    """A phone sending ``seconds`` of a 50 Hz walk (1-s messages, as fast as
    taken) and, if ``climb_m_s`` is given, a 10 Hz barometer climbing that
    fast; the predictions it was sent back."""
    start = time.time() - seconds  # readings of the last ``seconds``: the worker judges none stale
    got: list[dict] = []
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send(json.dumps({"type": "hello", "device": device, "units": {"acc": "m/s2", "gyro": "rad/s"}}))
        assert json.loads(await ws.recv())["type"] == "welcome"
        for s in range(seconds):
            t = start + s + np.arange(50) / 50
            walk = _walk(t - start)
            msg = {
                "type": "samples",
                "acc": np.column_stack([t * 1000, walk[:, :3] * G]).tolist(),
                "gyro": np.column_stack([t * 1000, walk[:, 3:]]).tolist(),
            }
            if climb_m_s is not None:
                tp = start + s + np.arange(0, 1, 0.1)
                msg["pressure"] = np.column_stack([tp * 1000, pressure_hpa(climb_m_s * (tp - start), 1002.0)]).tolist()
            await ws.send(json.dumps(msg))
        try:
            async with asyncio.timeout(15):
                while not got or got[-1]["t_end"] < start + seconds - 2:
                    msg = json.loads(await ws.recv())
                    if msg.get("type") == "prediction":
                        got.append(msg)
        except TimeoutError:
            pass
    return got


def test_a_phone_without_a_barometer_gets_walking_and_a_climbing_one_gets_stairs_over_the_real_bus():
    worker = _RoutedWorker()
    try:

        async def main():
            async with gateway_for(worker) as gw:
                return await asyncio.gather(_phone(gw.port, "page-1", 30, None), _phone(gw.port, "pocket-1", 30, 0.25))

        page, pocket = asyncio.run(main())
    finally:
        stats = worker.close()
    assert page and pocket
    assert {p["mode"] for p in page + pocket} == {"any"}
    # the browser page has no barometer: never a stairs claim
    assert {p["smoothed"] for p in page} == {"WALKING"} and {p["label"] for p in page} == {"WALKING"}
    # the pocket phone's barometer measured a climb: stairs, upward, once its span is filled
    late = [p["smoothed"] for p in pocket if p["t_end"] > pocket[0]["t_end"] + 10]
    assert late and set(late) == {"WALKING_UPSTAIRS"}
    assert stats["totals"]["pressure_readings"] >= 250


def _collect_predictions(address: str, stop: threading.Event, into: list) -> tuple[threading.Thread, threading.Event]:
    """Collect the worker's predictions into ``into`` until ``stop``; the event
    is set once the worker's stats arrive (subscribed after ``p/`` on the same
    connection: the prediction subscription is live by then)."""
    import zmq

    from harstream.stream.core.protocol import Prediction, decode_output

    live = threading.Event()

    def run():
        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"p/")
        sock.setsockopt(zmq.SUBSCRIBE, b"stats/")
        sock.connect(address)
        while not stop.is_set():
            if sock.poll(50):
                msg = decode_output(sock.recv_multipart())
                if isinstance(msg, Prediction) and not msg.between:  # windows, not the updates between them
                    into.append(msg)
                elif isinstance(msg, dict):
                    live.set()
        sock.close(0)
        ctx.term()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, live


@pytest.mark.parametrize("pressure", [True, False], ids=["simulated-barometer", "no-barometer"])
def test_the_simulators_pressure_channel_reaches_the_worker_over_the_real_bus(pressure):
    """A replayed device in any mode, 20 s level then 30 s upstairs then 20 s
    level; the stand-in model calls every window WALKING_DOWNSTAIRS."""
    from harstream.simulator.barometer import SimulatedBarometer, simulate_pressure
    from harstream.simulator.replay import ReplayDevice, ReplaySchedule, replay

    labels = np.r_[np.full(1000, 1), np.full(1500, 2), np.full(1000, 1)].astype(np.int16)
    rows = simulate_pressure(labels, SimulatedBarometer(rate_hz=10, noise_hpa=0.02, doors_per_min=0), seed=3)
    samples = _walk(np.arange(len(labels)) / 50).astype(np.float32)  # walking throughout: level, stairs, level
    device = ReplayDevice("sim-baro", samples, labels, pressure=rows if pressure else None)
    worker = _RoutedWorker()
    got: list = []
    stop = threading.Event()
    reader, live = _collect_predictions(worker.output, stop, got)
    try:
        assert live.wait(30), "the worker's output never reached the reader"
        replay(
            ReplaySchedule([device], chunk=25),
            publish=worker.ingest,
            speed=0,
            meta={"placement": "any"},
            stream_clock=True,
            wait_subscriptions=1,
            printer=None,
            tail_replay=False,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(got) < 53:  # (3500 - 128) // 64 + 1 windows
            time.sleep(0.1)
    finally:
        stop.set()
        reader.join(5)
        stats = worker.close()
    assert len(got) == 53 and {p.mode for p in got} == {"any"}
    climbing = [p.smoothed for p in got if p.truth == "WALKING_UPSTAIRS" and p.window * 64 > 1000 + 600]
    level = [p.smoothed for p in got if p.truth == "WALKING" and p.window * 64 > 2500 + 600]
    if pressure:
        assert stats["totals"]["pressure_readings"] >= 600
        # the measured climb decides, wherever the replay's clock puts the estimator's ticks
        # (tests/test_barometer.py: a steady climb reads up for every phase of them)
        assert climbing and set(climbing) == {"WALKING_UPSTAIRS"}, climbing
    else:
        assert "pressure_readings" not in stats["totals"]
        assert set(climbing) == {"WALKING"}
    assert level and set(level) == {"WALKING"}


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed (`make redis`)")
def test_the_durable_log_carries_the_pressure_channel_to_its_workers(redis_url, ipc_address):
    """simulator -> bridge -> Redis Streams -> durable worker, with a simulated
    barometer climbing: the worker behind the log shows the stairs it measured."""

    from harstream.simulator.barometer import SimulatedBarometer, simulate_pressure
    from harstream.simulator.replay import ReplayDevice, ReplaySchedule, replay

    labels = np.r_[np.full(1000, 1), np.full(1500, 2), np.full(500, 1)].astype(np.int16)
    rows = simulate_pressure(labels, SimulatedBarometer(rate_hz=10, noise_hpa=0.02, doors_per_min=0), seed=4)
    device = ReplayDevice("log-baro", _walk(np.arange(len(labels)) / 50).astype(np.float32), labels, pressure=rows)
    url = redis_url
    out = ipc_address("out")
    tail = Collector(out, verb="bind")
    bridge = Bridge(url)
    worker = LogWorker(None, url, out, "w0", router=_router())
    try:
        assert wait_for(lambda: owners(url) == {"w0": PARTITIONS})
        replay(
            ReplaySchedule([device], chunk=25),
            publish=bridge.ingest,
            speed=0,
            meta={"placement": "any"},
            stream_clock=True,
            wait_subscriptions=1,
            printer=None,
            tail_replay=False,
        )
        assert tail.wait(lambda c: len(c.predictions) >= 40, timeout=60), len(tail.predictions)
    finally:
        final = worker.close()
        bridge.close()
        tail.close()
    climbing = [p.smoothed for p in tail.predictions if p.truth == "WALKING_UPSTAIRS" and p.window * 64 > 1000 + 600]
    assert climbing and set(climbing) == {"WALKING_UPSTAIRS"}
    assert final["totals"]["pressure_readings"] >= 250
