"""Calibration through a real gateway over real WebSockets: what it refuses,
and that a fit never holds up anyone else's stream."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
from websockets.asyncio.client import connect

from harstream.commands.gateway import PersonalFitter
from harstream.models.artifact import DEFAULT_MODEL


def walking(t: np.ndarray) -> np.ndarray:
    s = np.sin(2 * np.pi * 1.8 * t)
    return np.column_stack([0.25 * s, 1 + 0.35 * s, 0.1 * s, 0.8 * s, 0.5 * s, 0.3 * s])


def messages(start: float, seconds: float, batch_s: float = 0.5):
    """harstream ``samples`` messages (g, rad/s, ms) of walking from ``start`` (Unix s)."""
    t = start + np.arange(int(seconds * 50)) / 50
    x = walking(t)
    for lo in np.arange(start, start + seconds, batch_s):
        part = (t >= lo) & (t < lo + batch_s)
        stamps = t[part, None] * 1000
        yield {
            "type": "samples",
            "acc": np.hstack([stamps, x[part, :3]]).tolist(),
            "gyro": np.hstack([stamps, x[part, 3:]]).tolist(),
        }


async def hello(ws, device: str) -> dict:
    await ws.send(json.dumps({"type": "hello", "device": device}))
    return json.loads(await ws.recv())


async def ask(ws, **msg) -> dict:
    await ws.send(json.dumps({"type": "calibrate", **msg}))
    while True:
        answer = json.loads(await ws.recv())
        if answer["type"] in ("calibration", "error"):
            return answer


async def record_walk(ws, seconds: float, start: float) -> dict:
    """A walking take of ``seconds`` (sent fast, stamped on a clock in the past)."""
    assert (await ask(ws, action="start", activity="walk"))["event"] == "started"
    for msg in messages(start, seconds):
        await ws.send(json.dumps(msg))
    return await ask(ws, action="stop")


def test_calibrating_before_hello_is_refused(running_gateway):
    async def main():
        async with running_gateway() as (gw, _), connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
            answer = await ask(ws, action="start", activity="walk")
            assert answer["type"] == "error" and answer["reason"] == "order" and "hello" in answer["detail"]

    asyncio.run(main())


def test_bad_calibration_requests_are_answered_and_counted(running_gateway, tmp_path):
    async def main():
        async with running_gateway(calibration_dir=str(tmp_path / "c"), personal_dir=str(tmp_path / "p")) as (gw, _):
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await hello(ws, "bad-1")
                off = await ask(ws, action="start", activity="walk")  # no fit given to this gateway
                assert off["event"] == "error" and "calibration is off" in off["detail"]
                gw.calibrations.fit = PersonalFitter()
                unknown = await ask(ws, action="start", activity="jogging")
                assert unknown["event"] == "error" and "'jogging'" in unknown["detail"]
                assert (await ask(ws, action="dance"))["detail"].startswith("action 'dance'")
                stop = await ask(ws, action="stop")
                assert stop["event"] == "error" and "no calibration under way" in stop["detail"]
                await ask(ws, action="start", activity="sit")
                empty = await ask(ws, action="finish")  # a take with no samples in it
                assert empty["event"] == "error" and "nothing recorded" in empty["detail"]
            assert gw.stats()["rejects"]["calibration"] == 5
            assert not (tmp_path / "p").exists()

    asyncio.run(main())


def test_a_fit_that_fails_is_answered_and_the_gateway_keeps_serving(running_gateway, tmp_path):
    """A base model that is not placement-free makes the fit fail for real:
    the phone is told why, nothing reaches the registry, and the same phone
    can go on streaming."""

    async def main():
        async with running_gateway(calibration_dir=str(tmp_path / "c"), personal_dir=str(tmp_path / "p")) as (gw, tap):
            gw.calibrations.fit = PersonalFitter(DEFAULT_MODEL)
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await hello(ws, "fails-1")
                take = await record_walk(ws, 22, time.time() - 60)
                assert take["ok"], take
                assert (await ask(ws, action="finish"))["event"] == "fitting"
                answer = json.loads(await ws.recv())
                assert answer["event"] == "error" and answer["reason"] == "calibration_failed"
                assert "placement-free" in answer["detail"]
                for msg in messages(time.time(), 2):
                    await ws.send(json.dumps(msg))
                await tap.collect("phone:fails-1", 50)
            assert gw.stats()["rejects"]["calibration_failed"] == 1
            assert [p.name for p in (tmp_path / "p").iterdir()] == []  # no half-written model, no staging left

    asyncio.run(main())


def test_other_phones_stream_on_while_a_calibration_is_fitted(running_gateway, tmp_path):
    async def main():
        async with running_gateway(calibration_dir=str(tmp_path / "c"), personal_dir=str(tmp_path / "p")) as (gw, tap):
            gw.calibrations.fit = PersonalFitter()
            url = f"ws://127.0.0.1:{gw.port}/ws"
            async with connect(url) as ws, connect(url) as other:
                await hello(ws, "fits-1")
                await hello(other, "streams-1")
                assert (await record_walk(ws, 22, time.time() - 60))["ok"]
                busy = await ask(ws, action="start", activity="sit")  # fine: not fitting yet
                assert busy["event"] == "started"
                assert (await ask(ws, action="discard", activity="sit"))["event"] == "discarded"
                assert (await ask(ws, action="finish"))["event"] == "fitting"
                refused = await ask(ws, action="start", activity="sit")
                assert refused["reason"] == "busy"

                for msg in messages(time.time(), 3):  # meanwhile, another phone
                    await other.send(json.dumps(msg))
                await tap.collect("phone:streams-1", 100)
                assert gw.stats()["calibration"]["fits_queued"] == 1  # still fitting when they arrived

                done = json.loads(await asyncio.wait_for(ws.recv(), 60))
                assert done["event"] == "done" and done["calibrated"] == ["WALKING"], done
            assert (tmp_path / "p" / done["model"]).is_file()

    asyncio.run(main())
