"""The gateway and the dashboard on a bus with CURVE keys, and off loopback without them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time

import numpy as np
import pytest
from conftest import worker_thread
from websockets.asyncio.client import connect

from harstream.dashboard.feed import Subscriber
from harstream.models.runtime import NullRuntime
from harstream.stream.bus.auth import BusAuthError, generate_keys
from harstream.stream.core.worker import WorkerConfig
from harstream.stream.gateway.server import Gateway, GatewayConfig


@contextlib.contextmanager
def keyed_worker(keys):
    """A worker on loopback tcp with CURVE keys; yields its (ingest, output) addresses."""
    with worker_thread(NullRuntime(6), config=WorkerConfig(signal_interval=0), stats_every=0.1, keys=str(keys)) as w:
        yield w.ingest, w.output


def phone_seconds(seconds: float):
    """Our WebSocket protocol's `samples` messages: ``seconds`` of a still phone at 100 Hz, ending now."""
    t = time.time() - seconds + np.arange(int(seconds * 100)) / 100
    for part in np.array_split(t, int(seconds * 5)):
        acc = np.column_stack([part * 1000, np.zeros(len(part)), np.zeros(len(part)), np.full(len(part), 9.81)])
        gyro = np.column_stack([part * 1000, np.zeros((len(part), 3))])
        yield {"type": "samples", "acc": acc.tolist(), "gyro": gyro.tolist()}


@contextlib.contextmanager
def socket_port():
    """A free loopback TCP port (released on exit, for a process to bind next)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


async def first_prediction(gateway: Gateway, device: str, timeout: float) -> dict | None:
    async with connect(f"ws://127.0.0.1:{gateway.port}/ws") as ws:
        await ws.send(json.dumps({"type": "hello", "device": device, "units": {"acc": "m/s2", "gyro": "rad/s"}}))
        await ws.recv()  # welcome
        for msg in phone_seconds(4.0):
            await ws.send(json.dumps(msg))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    msg = json.loads(await ws.recv())
                    if msg.get("type") == "prediction":
                        return msg
    return None


def test_a_gateway_with_the_keys_gets_its_phones_predictions_from_a_keyed_worker(tmp_path):
    generate_keys(tmp_path / "keys")
    with keyed_worker(tmp_path / "keys") as (ingest, output):

        async def main():
            gateway = Gateway(
                GatewayConfig(
                    port=0, ingest=">" + ingest, output=">" + output, stats_interval=0, keys=str(tmp_path / "keys")
                )
            )
            await gateway.start()
            try:
                return await first_prediction(gateway, "keyed-1", timeout=20)
            finally:
                await gateway.close()

        msg = asyncio.run(main())
    assert msg is not None and msg["device"] == "keyed-1"


def test_a_gateway_without_the_keys_does_not_reach_a_keyed_worker(tmp_path):
    generate_keys(tmp_path / "keys")
    with keyed_worker(tmp_path / "keys") as (ingest, output):

        async def main():
            gateway = Gateway(GatewayConfig(port=0, ingest=">" + ingest, output=">" + output, stats_interval=0))
            await gateway.start()
            try:
                return await first_prediction(gateway, "open-1", timeout=4)
            finally:
                await gateway.close()

        assert asyncio.run(main()) is None


def test_a_gateway_refuses_a_bus_off_loopback_without_keys():
    with pytest.raises(BusAuthError, match="10.1.2.3.*harstream keys"):
        Gateway(GatewayConfig(port=0, ingest="tcp://10.1.2.3:5555", output=None))


def test_the_dashboard_subscriber_with_the_keys_hears_a_keyed_worker(tmp_path):
    generate_keys(tmp_path / "keys")
    with keyed_worker(tmp_path / "keys") as (_, output):
        subscriber = Subscriber(output, keys=str(tmp_path / "keys"))
        try:
            deadline, heard = time.monotonic() + 20, []
            while not heard and time.monotonic() < deadline:
                heard = subscriber.drain()
                time.sleep(0.05)
        finally:
            subscriber.close()
    assert heard and heard[0][0].startswith(b"stats/")


def test_the_dashboard_subscriber_refuses_a_bus_off_loopback_without_keys():
    with pytest.raises(BusAuthError, match="10.1.2.3"):
        Subscriber("tcp://10.1.2.3:5556")


def test_a_simulator_binding_with_keys_lets_in_listed_clients_only(tmp_path):
    import zmq

    from harstream.simulator.replay import ReplayDevice, ReplaySchedule, replay
    from harstream.stream.bus.auth import secure

    keys, stranger = tmp_path / "keys", tmp_path / "stranger"
    generate_keys(keys)
    generate_keys(stranger)  # a well-formed client pair the simulator's allow-list does not hold
    (stranger / "bus.key").write_bytes((keys / "bus.key").read_bytes())
    with socket_port() as port:
        address = f"tcp://127.0.0.1:{port}"
    ctx = zmq.Context()
    subs = {}
    for name, folder in (("listed", keys), ("stranger", stranger)):
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"s/")
        secure(sub, address, "connect", folder)
        sub.connect(address)
        subs[name] = sub
    stop = threading.Event()
    dev = ReplayDevice("dev", np.zeros((400, 6), np.float32), None)
    sim = threading.Thread(
        target=replay,
        daemon=True,
        kwargs=dict(
            schedule=ReplaySchedule([dev], chunk=10, loop=True),
            publish="@" + address,
            speed=4,
            stop=stop,
            printer=None,
            keys=str(keys),
        ),
    )
    sim.start()
    try:
        heard = {name: sub.poll(5000 if name == "listed" else 1000) > 0 for name, sub in subs.items()}
    finally:
        stop.set()
        sim.join(10)
        for sub in subs.values():
            sub.close(0)
        ctx.term()
    assert heard == {"listed": True, "stranger": False}
