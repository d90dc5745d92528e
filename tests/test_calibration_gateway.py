"""Calibration through a real gateway over real WebSockets: what it refuses,
and that a fit never holds up anyone else's stream."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect

from harstream.commands.gateway import PersonalFitter
from harstream.models.artifact import DEFAULT_MODEL


@pytest.fixture
def fits_from_record(any_model_record, monkeypatch):
    """The gateway's fit process (spawned during the test, with its
    environment) finds the shared model's staged serving record, as beside a
    worker serving mode any, and fits without TensorFlow."""
    monkeypatch.setenv("HARSTREAM_CACHE", str(any_model_record))


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


def test_bad_calibration_requests_are_answered_and_counted(running_gateway, tmp_path, fits_from_record):
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


class HeldFitter(PersonalFitter):
    """The real fit, held until the file ``release`` exists (the fit runs in
    a spawned child process: a file is what both sides can see)."""

    def __init__(self, release: Path):
        super().__init__()
        self.release = release

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "release": str(self.release)}

    def __setstate__(self, state: dict) -> None:
        PersonalFitter.__init__(self, state["base_path"])
        self.release = Path(state["release"])

    def __call__(self, folder: Path, device: str, out: Path) -> dict:
        deadline = time.monotonic() + 60
        while not self.release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().__call__(folder, device, out)


def test_other_phones_stream_on_while_a_calibration_is_fitted(running_gateway, tmp_path, fits_from_record):
    release = tmp_path / "release"

    async def main():
        async with running_gateway(calibration_dir=str(tmp_path / "c"), personal_dir=str(tmp_path / "p")) as (gw, tap):
            gw.calibrations.fit = HeldFitter(release)
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
                release.touch()

                done = json.loads(await asyncio.wait_for(ws.recv(), 60))
                assert done["event"] == "done" and done["calibrated"] == ["WALKING"], done
            assert (tmp_path / "p" / done["model"]).is_file()

    asyncio.run(main())


def test_a_phone_waiting_for_its_fit_is_not_closed_as_idle(running_gateway, tmp_path, fits_from_record):
    """A phone that sends nothing while its calibration is fitted (a script
    awaiting the result) still gets the result after the idle timeout."""
    release = tmp_path / "release"

    async def main():
        async with running_gateway(
            calibration_dir=str(tmp_path / "c"), personal_dir=str(tmp_path / "p"), idle_timeout=1.0
        ) as (gw, _):
            gw.calibrations.fit = HeldFitter(release)
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await hello(ws, "waits-1")
                assert (await record_walk(ws, 22, time.time() - 60))["ok"]
                assert (await ask(ws, action="finish"))["event"] == "fitting"
                await asyncio.sleep(2.5)  # silent for two and a half idle timeouts
                release.touch()
                done = json.loads(await asyncio.wait_for(ws.recv(), 60))
                assert done["event"] == "done", done
            assert "idle" not in gw.stats()["rejects"]

    asyncio.run(main())


async def hello_with(url: str, device: str, key: str | None = None, local: str = "127.0.0.1"):
    """A connection from client address ``local`` that said hello; (socket, welcome)."""
    ws = await connect(url, local_addr=(local, 0))
    await ws.send(json.dumps({"type": "hello", "device": device, **({"key": key} if key else {})}))
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


def test_a_calibration_belongs_to_the_key_that_made_it(running_gateway, tmp_path, fits_from_record):
    """The owner calibrates and leaves; a stranger taking the free id cannot
    start, finish or delete its calibration (counted as not_owner), and the
    owner, back with its key, can."""

    async def main():
        data, models = tmp_path / "c", tmp_path / "p"
        async with running_gateway(calibration_dir=str(data), personal_dir=str(models)) as (gw, _):
            gw.calibrations.fit = PersonalFitter()
            url = f"ws://127.0.0.1:{gw.port}/ws"
            ws, welcome = await hello_with(url, "victim")
            assert (await record_walk(ws, 22, time.time() - 120))["ok"]
            assert (await ask(ws, action="finish"))["event"] == "fitting"
            done = json.loads(await asyncio.wait_for(ws.recv(), 60))
            assert done["event"] == "done", done
            model = models / done["model"]
            before = (model.stat().st_mtime_ns, sorted(p.name for p in Path(done["data"]).iterdir()))
            # it starts another take and loses its connection before finishing
            assert (await ask(ws, action="start", activity="sit"))["event"] == "started"
            await ws.close()

            thief, _ = await hello_with(url, "victim")  # the id is free: anyone may stream under it
            for action in ("finish", "stop", "start", "delete"):
                answer = await ask(thief, action=action, activity="lie")
                assert answer["reason"] == "not_owner", (action, answer)
            await thief.close()
            assert gw.stats()["rejects"]["not_owner"] == 4
            assert (model.stat().st_mtime_ns, sorted(p.name for p in Path(done["data"]).iterdir())) == before

            owner, again = await hello_with(url, "victim", key=welcome["key"])
            assert again["key"] == welcome["key"]
            assert (await ask(owner, action="cancel"))["event"] == "cancelled"  # its own unfinished session
            deleted = await ask(owner, action="delete")
            assert deleted["event"] == "deleted" and model.name in deleted["removed"], deleted
            assert not model.exists() and not Path(done["data"]).exists()
            await owner.close()

    asyncio.run(main())


def test_a_model_made_outside_the_page_cannot_be_replaced_from_a_phone(running_gateway, tmp_path):
    from harstream.stream.personal.calibration import device_folder_name

    async def main():
        models = tmp_path / "p"
        models.mkdir()
        made = models / f"{device_folder_name('phone:cli-made')}.keras"
        made.write_bytes(b"a model harstream calibrate wrote")
        async with running_gateway(calibration_dir=str(tmp_path / "c"), personal_dir=str(models)) as (gw, _):
            gw.calibrations.fit = PersonalFitter()
            ws, _ = await hello_with(f"ws://127.0.0.1:{gw.port}/ws", "cli-made")
            for action in ("start", "delete"):
                assert (await ask(ws, action=action, activity="walk"))["reason"] == "not_owner"
            await ws.close()
        assert made.read_bytes() == b"a model harstream calibrate wrote"

    asyncio.run(main())


def test_idle_calibrations_from_one_address_cannot_lock_other_phones_out(running_gateway, tmp_path, fits_from_record):
    """32 connections from one address each open a calibration and go quiet:
    the address holds two (the rest are refused as calibration_limit), a phone
    from another address calibrates, and an idle session gives its place up."""

    async def main():
        async with running_gateway(
            calibration_dir=str(tmp_path / "c"), personal_dir=str(tmp_path / "p"), calibration_idle=2.0
        ) as (gw, _):
            gw.calibrations.fit = PersonalFitter()
            url = f"ws://127.0.0.1:{gw.port}/ws"
            squatters = [(await hello_with(url, f"squat-{i}"))[0] for i in range(32)]
            answers = [await ask(ws, action="start", activity="sit") for ws in squatters]
            assert [a["event"] for a in answers].count("started") == 2
            assert {a.get("reason") for a in answers if a["event"] != "started"} == {"calibration_limit"}
            assert gw.stats()["rejects"]["calibration_limit"] == 30

            other, _ = await hello_with(url, "honest", local="127.0.0.2")
            assert (await ask(other, action="start", activity="walk"))["event"] == "started"
            await asyncio.sleep(2.5)  # the squatters' sessions go idle; a squatter's next one may take a place
            assert (await ask(squatters[5], action="start", activity="sit"))["event"] == "started"
            assert gw.stats()["calibration"]["calibrating"] == 1  # every idle one was forgotten (honest's too)
            for ws in [*squatters, other]:
                await ws.close()

    asyncio.run(main())


_FIT_IN_A_FRESH_PROCESS = """
import json, sys
from pathlib import Path
from harstream.commands.gateway import PersonalFitter
fitter = PersonalFitter()
fitter.prepare()
result = fitter(Path(sys.argv[1]), "phone:same", Path(sys.argv[2]))
print(json.dumps({"result": result, "loaded": sorted(m for m in ("tensorflow", "keras") if m in sys.modules)}))
"""


def _personal_file(path: Path) -> dict:
    """A written personal model without what differs from fit to fit (when, how long)."""
    meta = json.loads(path.read_text())
    for key in ("calibrated_at", "fit_seconds"):
        assert meta.pop(key, None) is not None, key
    return meta


def test_the_fit_over_the_shared_models_record_needs_no_tensorflow_and_is_the_fit_over_keras(
    any_model_record, embedded, tmp_path, monkeypatch
):
    """Subject 2 walks, sits and stands for 25 s each, calibrated on the page:
    the gateway's fit, in a fresh process that finds the shared model's staged
    record (as beside a worker serving mode any), never imports TensorFlow
    and writes the very personal model the fit over the Keras model writes."""
    import subprocess
    import sys

    from harstream.stream.personal.calibration import CalibrationSession

    rec = min((r for r in embedded.recordings if r.subject == 2), key=lambda r: r.name)
    session = CalibrationSession("phone:same")
    for take, (word, label) in enumerate((("walk", 1), ("sit", 4), ("stand", 5))):
        session.start(word)
        session.add(100.0 * take, rec.samples[np.asarray(rec.labels) == label][: 25 * 50])
        assert session.stop().ok, word
    folder = tmp_path / "takes"
    folder.mkdir()
    for name, text in session.files().items():
        (folder / name).write_text(text, encoding="utf-8")

    monkeypatch.setenv("HARSTREAM_CACHE", str(any_model_record))
    out = subprocess.run(
        [sys.executable, "-c", _FIT_IN_A_FRESH_PROCESS, str(folder), str(tmp_path / "record.personal.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["loaded"] == [], got
    assert got["result"]["calibrated"] == ["WALKING", "SITTING", "STANDING"], got

    monkeypatch.setenv("HARSTREAM_CACHE", str(tmp_path / "empty-cache"))  # no record: Keras loads it
    keras_fitter = PersonalFitter()
    keras_fitter(folder, "phone:same", tmp_path / "keras.personal.json")
    assert type(keras_fitter._base.artifact.model).__name__ != "NoneType"
    assert _personal_file(tmp_path / "record.personal.json") == _personal_file(tmp_path / "keras.personal.json")


def test_a_forwarded_for_header_does_not_make_one_address_many(running_gateway, tmp_path):
    """uvicorn took X-Forwarded-For from any client on 127.0.0.1 as its address:
    a local client naming a new one on each connection opened a calibration on
    every one, past the two an address may hold. The gateway is no proxy's
    back end: the address is the connection's own."""

    async def main():
        async with running_gateway(calibration_dir=str(tmp_path / "c"), personal_dir=str(tmp_path / "p")) as (gw, _):
            gw.calibrations.fit = PersonalFitter()
            url = f"ws://127.0.0.1:{gw.port}/ws"
            answers, sockets = [], []
            for i in range(4):
                ws = await connect(url, additional_headers={"X-Forwarded-For": f"10.9.0.{i}"})
                sockets.append(ws)
                assert (await hello(ws, f"forwarded-{i}"))["type"] == "welcome"
                answers.append(await ask(ws, action="start", activity="sit"))
            assert [a["event"] for a in answers].count("started") == 2, answers
            assert {a.get("reason") for a in answers[2:]} == {"calibration_limit"}
            for ws in sockets:
                await ws.close()

    asyncio.run(main())
