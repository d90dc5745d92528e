"""Forged output behind ``harstream proxy``: a real proxy, a real worker behind
it, a real gateway and a phone over a real WebSocket, all on loopback (ipc)
ZeroMQ. Publishers connecting to the proxy's output back end without the
output secret, or with a wrong one, try to tell the phone it is LAYING; the
phone hears only its worker, and the proxy counts the refusals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter

import numpy as np
import pytest
import zmq
from websockets.asyncio.client import connect

from harstream.stream.bus.proxy import load_or_create_secret, run_proxies
from harstream.stream.bus.zmq_worker import serve
from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.protocol import Prediction, encode_prediction
from harstream.stream.core.worker import WorkerConfig
from harstream.stream.gateway.server import Gateway, GatewayConfig

pytestmark = pytest.mark.timeout(120)

FORGED_MODEL = "forged@00000000"


def forged(device: str) -> list[bytes]:
    one_hot = [0.0] * 5 + [1.0]
    return encode_prediction(
        Prediction(device, 0, 0.0, 2.56, "LAYING", one_hot, "LAYING", one_hot, FORGED_MODEL, 1.0, mode="personal")
    )


def test_only_workers_with_the_output_secret_reach_the_phones_behind_the_proxy(tiny_lstm, ipc_address, tmp_path):
    artifact, runtime = tiny_lstm
    front_in, back_in, back_out, front_out = map(ipc_address, ("in", "in.back", "out.back", "out"))
    secret = tmp_path / "output.secret"
    refused: Counter[str] = Counter()
    stop = threading.Event()
    proxy_ready, worker_ready = threading.Event(), threading.Event()
    threads = [
        threading.Thread(
            target=run_proxies,
            daemon=True,
            kwargs=dict(
                ingest=front_in,
                ingest_backend=back_in,
                output=front_out,
                output_backend=back_out,
                stop=stop,
                on_ready=proxy_ready.set,
                output_secret=secret,
                refused=refused,
            ),
        ),
        threading.Thread(
            target=serve,
            daemon=True,
            args=(runtime, ACTIVITIES, artifact.model_id),
            kwargs=dict(
                ingest=">" + back_in,
                output=">" + back_out,
                config=WorkerConfig(max_wait=0.01),
                worker_id="w",
                stop=stop,
                on_ready=worker_ready.set,
                printer=None,
                output_secret=str(secret),
            ),
        ),
    ]
    ctx = zmq.Context()
    forgers = []
    try:
        threads[0].start()
        assert proxy_ready.wait(20), "proxy did not start"
        threads[1].start()
        assert worker_ready.wait(30), "worker did not start"
        assert secret.stat().st_mode & 0o077 == 0  # readable by its owner only
        for password in (None, "0" * 64):  # no secret at all; a guessed one
            pub = ctx.socket(zmq.PUB)
            pub.setsockopt(zmq.LINGER, 0)
            if password is not None:
                pub.plain_username, pub.plain_password = b"worker", password.encode()
            pub.connect(back_out)
            forgers.append(pub)

        async def phone() -> list[dict]:
            gateway = Gateway(GatewayConfig(port=0, ingest=front_in, output=front_out, stats_interval=0))
            await gateway.start()
            got: list[dict] = []
            try:
                async with connect(f"ws://127.0.0.1:{gateway.port}/ws") as ws:
                    await ws.send(json.dumps({"type": "hello", "device": "victim"}))
                    assert json.loads(await ws.recv())["bus_device"] == "phone:victim"
                    rng = np.random.default_rng(1)
                    t0 = time.time() * 1000
                    async with asyncio.timeout(60):
                        for second in range(60):  # 1 s of readings every 0.3 s until five predictions came back
                            t = t0 + 1000 * second + 20 * np.arange(50)
                            acc = np.column_stack([t, rng.normal(0, 0.2, (50, 3)) + [0, 0, 1]]).tolist()
                            gyro = np.column_stack([t, rng.normal(0, 0.1, (50, 3))]).tolist()
                            await ws.send(json.dumps({"type": "samples", "acc": acc, "gyro": gyro}))
                            for pub in forgers:
                                pub.send_multipart(forged("phone:victim"))
                            with contextlib.suppress(TimeoutError):
                                async with asyncio.timeout(0.3):
                                    while True:
                                        message = json.loads(await ws.recv())
                                        if message["type"] == "prediction":
                                            got.append(message)
                            if sum(p["model"] == artifact.model_id for p in got) >= 5:
                                break
            finally:
                await gateway.close()
            return got

        got = asyncio.run(phone())
    finally:
        stop.set()
        for pub in forgers:
            pub.close(0)
        for t in threads:
            t.join(10)
        ctx.term()
    assert sum(p["model"] == artifact.model_id for p in got) >= 5, got[:3]
    assert FORGED_MODEL not in {p["model"] for p in got}
    assert refused["output_bad_secret"] > 0, refused  # the guessed secret: refused by the ZAP handler
    # no secret at all: libzmq reports the mechanism mismatch as a protocol error or without detail, by timing
    assert refused["output_no_secret"] + refused["output_handshake"] > 0, refused


def test_the_output_secret_is_made_once_and_then_read(tmp_path):
    path = tmp_path / "deep" / "output.secret"
    first = load_or_create_secret(path)
    assert load_or_create_secret(path) == first and len(first) == 64
    path.write_text("not a secret\n")
    with pytest.raises(ValueError, match="not an output secret"):
        load_or_create_secret(path)
