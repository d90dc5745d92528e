"""Pressure through the gateway: a real WebSocket and real HTTP posts in, the
real ingest bus out (``running_gateway``'s tap stands in for the worker)."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from test_gateway import G, http_post, jittered, our_protocol_messages, sensor_logger_batches
from websockets.asyncio.client import connect

pytestmark = pytest.mark.timeout(120)


def _pressure_of(batches) -> np.ndarray:
    rows = [b.pressure for b in batches if b.pressure is not None]
    return np.concatenate(rows) if rows else np.empty((0, 2))


def test_pressure_in_our_samples_messages_reaches_the_bus_and_bad_readings_are_counted(running_gateway):
    async def main():
        async with running_gateway() as (gw, tap):
            start = time.time()
            t_acc, t_gyro = jittered(100, start, 4, 1), jittered(100, start, 4, 2)
            t_p = start + np.arange(0, 4, 0.1)  # a 10 Hz barometer
            hpa = 1003.0 - 0.03 * (t_p - start)
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await ws.send(
                    json.dumps({"type": "hello", "device": "baro-1", "units": {"acc": "m/s2", "gyro": "deg/s"}})
                )
                await ws.recv()
                for msg in our_protocol_messages(t_acc, t_gyro):
                    lo, hi = msg["acc"][0][0] / 1000, msg["acc"][-1][0] / 1000
                    sel = (t_p >= lo) & (t_p <= hi)
                    msg["pressure"] = np.column_stack([t_p[sel] * 1000, hpa[sel]]).tolist()
                    await ws.send(json.dumps(msg))
                # then one message with readings that cannot be right: the motion still goes through
                await ws.send(
                    json.dumps(
                        {
                            "type": "samples",
                            "acc": [[(start + 4.1) * 1000, 0, G, 0]],
                            "pressure": [[(start + 4.1) * 1000, 1500.0], [(start + 1) * 1000, 1003.0]],
                        }
                    )
                )
                batches = await tap.collect("phone:baro-1", 150)
                await asyncio.sleep(0.3)
            got = _pressure_of(batches)
            assert len(got) >= 25
            # same clock as the samples (Unix time here), same readings
            np.testing.assert_allclose(got[:, 1], np.interp(got[:, 0], t_p, hpa), atol=1e-6)
            assert got[0, 0] >= start - 0.01 and np.all(np.diff(got[:, 0]) > 0)
            assert gw.rejects["pressure_range"] == 1 and gw.rejects["pressure_order"] == 1

    asyncio.run(main())


def test_sensor_logger_barometer_entries_ride_on_the_bus(running_gateway):
    async def main():
        async with running_gateway() as (gw, tap):
            t = jittered(100, time.time(), 4, 3)
            for i, b in enumerate(sensor_logger_batches(t, "sl-baro", "s1")):
                when = b["payload"][0]["time"]
                b["payload"].append(
                    {"name": "barometer", "time": when, "values": {"pressure": 1001.0 + i / 100, "relativeAltitude": 0}}
                )
                status, _ = await http_post(gw.port, "/data", json.dumps(b).encode())
                assert status == 200
            got = _pressure_of(await tap.collect("phone:sl-baro", 150))
            assert len(got) >= 10 and np.all(np.diff(got[:, 1]) > 0)

    asyncio.run(main())
