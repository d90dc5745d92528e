"""Where a calibration take is cut, through a real gateway over a real WebSocket:
a take holds the readings whose times fall between its start and its stop,
whatever the gateway was still holding back (its resampler) when they came."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect

SITTING = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # g, rad/s: still, screen up


def write_empty_model(folder: Path, device: str, out: Path) -> dict:
    """A fit that learns nothing (the takes' files are what is looked at);
    module-level and light, so the gateway's fit process loads it at once."""
    out.write_text("{}", encoding="utf-8")
    return {"calibrated": [], "refused": {}, "classes": [], "fit_seconds": 0.0}


def walking(t: np.ndarray) -> np.ndarray:
    s = np.sin(2 * np.pi * 1.8 * t)
    return np.column_stack([0.25 * s, 1 + 0.35 * s, 0.1 * s, 0.8 * s, 0.5 * s, 0.3 * s])


def samples(t: np.ndarray, x: np.ndarray) -> str:
    """One harstream ``samples`` message: readings at ``t`` (Unix s), g and rad/s."""
    stamps = t[:, None] * 1000
    return json.dumps(
        {
            "type": "samples",
            "acc": np.hstack([stamps, x[:, :3]]).tolist(),
            "gyro": np.hstack([stamps, x[:, 3:]]).tolist(),
        }
    )


async def ask(ws, **msg) -> dict:
    await ws.send(json.dumps({"type": "calibrate", **msg}))
    while True:
        answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if answer["type"] in ("calibration", "error"):
            return answer


def test_a_take_holds_the_readings_between_its_start_and_stop(running_gateway, tmp_path):
    """The phone walks, says start (sit) after its last walking reading, sits
    for 4 s, says stop after its last sitting reading and walks on. The
    gateway was holding the newest walking readings back when start came, and
    the newest sitting ones when stop came: the written take is every sitting
    reading, no walking one."""
    t0 = time.time() - 30  # readings on the phone's Unix clock, sent faster than they happened
    walk = t0 + np.arange(100) / 50  # 2 s
    sit = walk[-1] + (1 + np.arange(200)) / 50  # 4 s, on the same 50 Hz grid
    after = sit[-1] + (1 + np.arange(25)) / 50

    async def main():
        async with running_gateway(calibration_dir=str(tmp_path / "c"), personal_dir=str(tmp_path / "p")) as (gw, _):
            gw.calibrations.fit = write_empty_model
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await ws.send(json.dumps({"type": "hello", "device": "takes-1"}))
                assert json.loads(await ws.recv())["type"] == "welcome"
                for part in np.array_split(walk, 10):  # 200 ms messages, as the page sends
                    await ws.send(samples(part, walking(part)))
                assert (await ask(ws, action="start", activity="sit"))["event"] == "started"
                for part in np.array_split(sit, 20):
                    await ws.send(samples(part, np.tile(SITTING, (len(part), 1))))
                take = await ask(ws, action="stop")
                assert take["event"] == "take", take
                await ws.send(samples(after, walking(after)))  # the held sitting readings come out
                await ask(ws, action="ping")  # an answer after the samples: they were handled
                assert (await ask(ws, action="finish"))["event"] == "fitting"
                done = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert done["event"] == "done", done
            return done

    done = asyncio.run(main())
    assert done["files"] == ["sitting-1.csv"], done
    rows = np.loadtxt(Path(done["data"]) / "sitting-1.csv", delimiter=",", skiprows=1, usecols=range(1, 7))
    walked = np.flatnonzero(np.abs(rows - SITTING).max(axis=1) > 1e-4)
    assert not len(walked), f"rows {walked.tolist()} of the sitting take are walking: {rows[walked[:3]].tolist()}"
    assert len(rows) == len(sit)
