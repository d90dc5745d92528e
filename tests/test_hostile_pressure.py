"""Barometer readings in numbers and shapes the path was not built for: a
recording whose barometer reads on every row, replayed in large messages by
the real `harstream simulate`; a phone whose pressure never comes, or comes by
the thousand. The real command and a real SUB socket, or the real gateway."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import numpy as np
import zmq
from test_gateway import jittered, our_protocol_messages
from websockets.asyncio.client import connect

from harstream.stream.core.protocol import decode_samples


def _csv_barometer_on_every_row(path, seconds: float) -> None:
    rows = ["time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label,pressure_hpa"]
    for k in range(int(seconds * 50)):
        rows.append(f"{k / 50:.2f},1.0,0.0,0.0,0.0,0.0,0.0,WALKING,{1008.4 - 0.001 * k:.4f}")
    path.write_text("\n".join(rows) + "\n")


def test_a_barometer_on_every_row_replayed_in_large_messages_reaches_the_bus_whole(tmp_path, ipc_address):
    # docs/recordings.md lets pressure_hpa fill every row: --chunk 2000 put 2,000 readings
    # in one message (a bus message holds 1,000) and simulate ended in a traceback
    source = tmp_path / "walk.csv"
    _csv_barometer_on_every_row(source, 120.0)
    address = ipc_address("ingest")
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    argv = ["simulate", "--source", str(source), "--subjects", "0", "--speed", "0", "--chunk", "2000"]
    argv += ["--no-tail-replay", "--publish", "@" + address, "--wait", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "harstream", *argv], stderr=subprocess.PIPE, text=True)
    try:
        sub.connect(address)
        batches = []
        while sub.poll(15_000):
            batches.append(decode_samples(sub.recv_multipart()))
            if batches[-1].seq + len(batches[-1].samples) >= 6000:
                break
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        sub.close()
    assert [b.seq for b in batches] == sorted(b.seq for b in batches)
    assert sum(len(b.samples) for b in batches) == 6000
    readings = np.concatenate([b.pressure for b in batches if b.pressure is not None])
    assert len(readings) == 6000 and all(len(b.pressure) <= 1000 for b in batches if b.pressure is not None)
    # each reading at its row's time on the samples' clock
    np.testing.assert_allclose(readings[:, 0] - batches[0].t0, np.arange(6000) / 50, atol=1e-3)
    np.testing.assert_allclose(readings[:, 1], 1008.4 - 0.001 * np.arange(6000), atol=1e-6)


def test_barometer_readings_in_a_message_of_their_own_ride_with_the_next_motion(running_gateway):
    # docs/websocket-protocol.md: pressure is optional beside acc and gyro, readings travel
    # with the device's next batch. A message of pressure alone (a client sending each
    # sensor as it fires) was refused whole as `fields` and its readings lost.
    async def main():
        async with running_gateway() as (gw, tap):
            start = time.time()
            t_acc, t_gyro = jittered(100, start, 4, 1), jittered(100, start, 4, 2)
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await ws.send(json.dumps({"type": "hello", "device": "baro-2", "units": {"acc": "m/s2"}}))
                await ws.recv()
                for k, msg in enumerate(our_protocol_messages(t_acc, t_gyro)):
                    await ws.send(json.dumps(msg))
                    at = msg["acc"][-1][0]
                    await ws.send(json.dumps({"type": "samples", "pressure": [[at + 1.0, 1003.0 - 0.01 * k]]}))
                batches = await tap.collect("phone:baro-2", 150)
                await asyncio.sleep(0.3)
            rows = [b.pressure for b in batches if b.pressure is not None]
            assert rows and len(np.concatenate(rows)) >= 10, dict(gw.rejects)
            assert gw.rejects["fields"] == 0, dict(gw.rejects)

    asyncio.run(main())
