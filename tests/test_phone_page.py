"""The /phone page in headless Chromium: DeviceMotion in, samples on the bus,
predictions shown. Motion comes from DeviceMotionEvents dispatched by page
script, through the page's real devicemotion listener."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import numpy as np
import pytest

from harstream.stream.core.protocol import Prediction
from harstream.stream.gateway.server import Gateway, GatewayConfig

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (`make browser` installs Debian's chromium)"),
]

G = 9.80665
# A phone on a belt: gravity along y, a 0.5 Hz sway on x, steady rotation.
MOTION_SCRIPT = """
(seconds) => new Promise((done) => {
  const G = 9.80665, end = performance.now() + seconds * 1000;
  window.__stopMotion = false;
  const timer = setInterval(() => {
    const t = (performance.timeOrigin + performance.now()) / 1000;
    window.dispatchEvent(new DeviceMotionEvent("devicemotion", {
      accelerationIncludingGravity: {x: 0.5 * G * Math.sin(2 * Math.PI * 0.5 * t), y: G, z: 0},
      rotationRate: {alpha: 10, beta: 20, gamma: -30},
      interval: 16,
    }));
    if (performance.now() > end || window.__stopMotion) { clearInterval(timer); done(); }
  }, 16);
})
"""
# Setting window.__stopMotion ends a motion script early (once its test has what it waited for).
STOP_MOTION = "window.__stopMotion = true"


def test_phone_page_streams_device_motion_and_shows_predictions(running_gateway):
    from playwright.async_api import async_playwright

    async def main():
        async with running_gateway(output=True) as (gw, tap):
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = await browser.new_page()
                await page.goto(f"http://127.0.0.1:{gw.port}/phone")
                local = await page.text_content("#device")
                assert local.startswith("web-")
                await page.click("#start")
                await page.wait_for_function("document.getElementById('status').textContent === 'streaming'")
                device = await page.text_content("#bus-device")
                assert device == "phone:" + local  # phones live in their own namespace on the bus
                await page.evaluate(MOTION_SCRIPT, 3.5)
                batches = await tap.collect(device, 120)

                samples = np.concatenate([b.samples for b in batches])
                t = batches[0].t0 + np.arange(len(samples)) / 50
                for a, b in zip(batches, batches[1:]):
                    assert b.seq == a.seq + len(a)
                expected_acc = np.column_stack([0.5 * np.sin(2 * np.pi * 0.5 * t), np.ones_like(t), np.zeros_like(t)])
                np.testing.assert_allclose(samples[:, :3], expected_acc, atol=0.03)
                # rotationRate beta/gamma/alpha are rotation about x/y/z, in deg/s.
                np.testing.assert_allclose(samples[:, 3:], np.tile(np.radians([20, -30, 10]), (len(t), 1)), atol=1e-5)
                assert batches[0].meta["source"] == "harstream"

                # A prediction for this device on the output bus shows on the page.
                p = Prediction(
                    device,
                    0,
                    0.0,
                    2.56,
                    "WALKING_UPSTAIRS",
                    [0, 1, 0, 0, 0, 0],
                    "WALKING_UPSTAIRS",
                    [0, 1, 0, 0, 0, 0],
                    "m",
                    2.0,
                )
                async with asyncio.timeout(15):
                    while await page.text_content("#activity") != "walking upstairs":
                        await tap.publish(p)
                        await asyncio.sleep(0.1)
                # where the worker's gait estimate says the phone is worn shows on the mode line
                free = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "STILL"]
                worn = Prediction(
                    device,
                    1,
                    1.28,
                    3.84,
                    "WALKING",
                    [1, 0, 0, 0],
                    "WALKING",
                    [1, 0, 0, 0],
                    "m",
                    2.0,
                    mode="any",
                    classes=free,
                    placement="thigh",
                )
                async with asyncio.timeout(15):
                    while "worn: thigh (pocket)" not in await page.text_content("#mode"):
                        await tap.publish(worn)
                        await asyncio.sleep(0.1)
                assert (await page.text_content("#mode")).startswith("mode: any")
                assert await page.text_content("#error") == ""
                await browser.close()

    asyncio.run(main())


def test_phone_page_resumes_streaming_after_the_gateway_restarts():
    """The gateway goes away under a streaming page and comes back on the same
    port: the page reconnects by itself and its samples reach the bus again."""
    from conftest import BusTap
    from playwright.async_api import async_playwright

    async def gateway_on(tap, port):
        gw = Gateway(GatewayConfig(port=port, ingest=tap.endpoint, output=None, stats_interval=0))
        await gw.start()
        await tap.wait_connected(gw)
        return gw

    async def main():
        tap = BusTap()
        gw = await gateway_on(tap, 0)
        port = gw.port
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = await browser.new_page()
                await page.goto(f"http://127.0.0.1:{port}/phone")
                await page.click("#start")
                await page.wait_for_function("document.getElementById('status').textContent === 'streaming'")
                device = await page.text_content("#bus-device")
                motion = asyncio.ensure_future(page.evaluate(MOTION_SCRIPT, 12))
                await tap.collect(device, 50)
                await gw.close()
                await page.wait_for_function("document.getElementById('status').textContent.startsWith('disconnected')")
                tap.batches.clear()
                gw = await gateway_on(tap, port)
                await page.wait_for_function(
                    "document.getElementById('status').textContent === 'streaming'", timeout=10_000
                )
                resumed = await tap.collect(device, 50)
                assert sum(len(b) for b in resumed) >= 50
                assert await page.evaluate("window.harstream.reconnects") >= 1
                await page.evaluate(STOP_MOTION)
                await motion
                await browser.close()
        finally:
            await gw.close()
            tap.close()

    asyncio.run(main())


# Calibration: synthetic motion of one kind, stamped on a clock of its own
# (window.__motionT, first set `offset` seconds from now) that runs `speed`
# times faster than real time, so a 22 s take is dispatched in about a second
# (the page counts down by the readings' own times, as it would on a phone).
# The page's real devicemotion listener receives every event. Setting
# window.__stopMotion ends it early.
CALIBRATION_MOTION = """
([kind, seconds, speed, offset]) => new Promise((done) => {
  const G = 9.80665;
  if (window.__motionT === undefined) window.__motionT = performance.timeOrigin + performance.now() + offset * 1000;
  window.__stopMotion = false;
  const total = Math.round(seconds * 50), wallStart = performance.now();
  const gravity = {sit: [0, 0.3, 0.95], stand: [0, 1, 0.05], lie: [1, 0, 0.02]};
  let sent = 0, seed = 1;
  const noise = () => { seed = (seed * 16807) % 2147483647; return seed / 2147483647 - 0.5; };
  const timer = setInterval(() => {
    const due = Math.min(total, Math.floor((performance.now() - wallStart) * speed / 20));
    for (; sent < due; sent++) {
      const t = window.__motionT;
      window.__motionT += 20;
      const s = t / 1000;
      let acc, rot;
      if (kind === "walk") {  // 1.8 steps per second, the body swaying at half that
        acc = [0.25 * Math.sin(2 * Math.PI * 1.8 * s), 1 + 0.35 * Math.sin(2 * Math.PI * 1.8 * s + 0.5),
               0.15 * Math.sin(2 * Math.PI * 0.9 * s)];
        rot = [46 * Math.sin(2 * Math.PI * 0.9 * s), 29 * Math.sin(2 * Math.PI * 1.8 * s), 17 * Math.sin(2 * Math.PI * 0.9 * s + 1)];
      } else {  // a posture: the phone at rest, gravity along its own direction, sensor noise
        const g = gravity[kind], norm = Math.hypot(...g);
        acc = g.map((v) => v / norm + 0.006 * noise());
        rot = [noise(), noise(), noise()];
      }
      const event = new DeviceMotionEvent("devicemotion", {
        accelerationIncludingGravity: {x: acc[0] * G, y: acc[1] * G, z: acc[2] * G},
        rotationRate: {beta: rot[0], gamma: rot[1], alpha: rot[2]}, interval: 20,
      });
      Object.defineProperty(event, "timeStamp", {value: t - performance.timeOrigin});
      window.dispatchEvent(event);
    }
    if (sent >= total || window.__stopMotion) { clearInterval(timer); done(); }
  }, 16);
})
"""
CAL_PHASE = "window.harstream.calibration.phase"


async def take(page, kind: str, seconds: float = 24, speed: float = 20, offset: float = -100) -> str:
    """Start the current step, move like ``kind`` until the page stops the take; its check text."""
    await page.wait_for_function(f"{CAL_PHASE} === 'ready'")
    await page.click("#cal-go")
    await page.wait_for_function(f"{CAL_PHASE} === 'recording'")
    await page.evaluate(CALIBRATION_MOTION, [kind, seconds, speed, offset])
    await page.wait_for_function(f"{CAL_PHASE} === 'ready' && document.getElementById('cal-check').textContent !== ''")
    return await page.text_content("#cal-check")


def test_phone_page_calibration_writes_a_personal_model_into_the_registry(
    running_gateway, tmp_path, any_model_record, monkeypatch
):
    """Walk, sit and stand are learned; a 'lie down' take spent walking is
    questioned at once, kept anyway, and refused by the fit with the reason;
    the stairs are skipped. The takes land as documented CSVs, the model in
    the registry folder the worker watches, with the device's bus id."""
    from playwright.async_api import async_playwright

    from harstream.commands.gateway import PersonalFitter
    from harstream.stream.data.recordings import load_csv
    from harstream.stream.personal.calibration import device_folder_name

    registry, data = tmp_path / "personal", tmp_path / "calibration"
    monkeypatch.setenv("HARSTREAM_CACHE", str(any_model_record))  # the fit process finds the shared model's record

    async def main():
        # signal_rate: the takes' motion is played 20 times faster than real time (see take)
        async with running_gateway(
            output=True, calibration_dir=str(data), personal_dir=str(registry), signal_rate=30.0
        ) as (gw, tap):
            gw.calibrations.fit = PersonalFitter()
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = await browser.new_page()
                await page.goto(f"http://127.0.0.1:{gw.port}/phone?calib=22&ready=0")
                await page.click("#cal-begin")  # starts streaming too
                await page.wait_for_function("document.getElementById('status').textContent === 'streaming'")
                device = await page.text_content("#bus-device")
                assert (await page.text_content("#cal-instruction")).startswith("Walk")

                for kind in ("walk", "sit", "stand"):
                    check = await take(page, kind)
                    assert check.startswith("✓"), (kind, check)
                    await page.click("#cal-next")
                check = await take(page, "walk")  # asked to lie down, the phone keeps walking
                assert check.startswith("✗") and "moving" in check
                assert await page.is_visible("#cal-go")  # a retry is offered
                await page.click("#cal-next")  # kept anyway: the fit decides
                await page.click("#cal-skip")  # no stairs here
                await page.click("#cal-skip")
                await page.wait_for_function(f"{CAL_PHASE} === 'done'", timeout=60_000)

                result = await page.evaluate("window.harstream.calibration.result")
                assert result["calibrated"] == ["WALKING", "SITTING", "STANDING"]
                assert list(result["refused"]) == ["LAYING"] and "moving" in result["refused"]["LAYING"]
                shown = await page.text_content("#cal-result")
                assert "sitting learned" in shown and "lying down not used" in shown
                assert "Shows as STILL" in shown  # what was learned and what will show as STILL
                assert await page.text_content("#error") == ""
                await browser.close()
            return device, result

    device, result = asyncio.run(main())
    name = device_folder_name(device)
    model = registry / f"{name}.personal.json"
    assert result["model"] == model.name and model.is_file()
    meta = json.loads(model.read_text())
    assert meta["device"] == device and meta["placement"] == "personal"
    assert meta["calibrated"] == ["WALKING", "SITTING", "STANDING"]
    assert result["summary"] == meta["summary"] and result["summary"][0].startswith("Learned: walking, sitting")
    assert sorted(p.name for p in registry.iterdir()) == [model.name]  # nothing half-written left

    takes = load_csv(data / name)  # the documented CSV format, read by the documented loader
    seconds = {r.name: len(r.samples) / 50 for r in takes.recordings}
    assert set(seconds) == {"walking-1", "sitting-1", "standing-1", "laying-1"}
    assert all(20 <= s <= 23 for s in seconds.values()), seconds


async def calibrate_walk_sit_stand(page, offset: float) -> dict:
    """Walk, sit and stand on the page; lying and stairs skipped. The result shown."""
    for kind in ("walk", "sit", "stand"):
        check = await take(page, kind, offset=offset)
        assert check.startswith("✓"), (kind, check)
        await page.click("#cal-next")
    for _ in range(3):
        await page.click("#cal-skip")
    await page.wait_for_function(f"{CAL_PHASE} === 'done'", timeout=60_000)
    return await page.evaluate("window.harstream.calibration.result")


async def move_until(page, kind: str, condition: str, timeout_s: float) -> None:
    """Real-time synthetic motion until ``condition`` (page JS) holds."""
    motion = asyncio.ensure_future(page.evaluate(CALIBRATION_MOTION, [kind, timeout_s + 5, 1, 0]))
    try:
        await page.wait_for_function(condition, timeout=timeout_s * 1000)
    finally:
        await page.evaluate("window.__stopMotion = true")
        await motion


def test_a_phone_calibrated_on_the_page_is_served_by_its_personal_model_without_a_restart(
    ipc_address, tmp_path, shipped_records, monkeypatch
):
    """The whole path: a real worker (its own process) serves the page's phone
    in mode any; the page's calibration goes through the gateway into the
    registry folder the worker watches; the same worker, not restarted, then
    serves the phone with its personal model, and the predictions coming back
    to the page say so — and name the posture it was taught."""
    import subprocess
    import sys

    from playwright.async_api import async_playwright

    from harstream.commands.gateway import PersonalFitter
    from harstream.models.artifact import ANY_MODEL, ANY_NO_GYRO_MODEL, DEFAULT_MODEL

    ingest, output = ipc_address("ingest"), ipc_address("output")
    registry = tmp_path / "personal"
    # the shipped models' serving records, as a worker that served them before leaves them: this worker
    # starts without TensorFlow, and the gateway's fit process calls the shared model without it
    monkeypatch.setenv("HARSTREAM_CACHE", str(shipped_records.of(DEFAULT_MODEL, ANY_MODEL, ANY_NO_GYRO_MODEL)))
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harstream",
            "worker",
            "--ingest",
            ingest,
            "--publish",
            output,
            "--personal-dir",
            str(registry),
            "--personal-poll",
            "0.2",
            "--runtime",
            "auto",
            "--stats-every",
            "3600",  # no stats lines (0 is refused: 0.1..3600)
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def main():
        config = GatewayConfig(
            port=0,
            ingest=ingest,
            output=output,
            stats_interval=0,
            calibration_dir=str(tmp_path / "calibration"),
            personal_dir=str(registry),
            signal_rate=30.0,  # the takes' motion is played 20 times faster than real time (see take)
        )
        gw = Gateway(config, fit=PersonalFitter())
        await gw.start()
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = await browser.new_page()
                await page.goto(f"http://127.0.0.1:{gw.port}/phone?calib=22&ready=0")
                await page.click("#start")
                await page.wait_for_function("document.getElementById('status').textContent === 'streaming'")
                # Before calibration: the worker serves this phone placement-free.
                await move_until(page, "walk", "window.harstream.mode === 'any'", 90)
                assert "calibrate to see sitting/standing/lying" in await page.text_content("#mode")

                await page.click("#cal-begin")
                result = await calibrate_walk_sit_stand(page, offset=0)
                assert result["calibrated"] == ["WALKING", "SITTING", "STANDING"] and result["refused"] == {}
                assert (registry / result["model"]).is_file()

                # The worker picks the model up while the phone streams on.
                await move_until(page, "sit", "window.harstream.mode === 'personal'", 60)
                mode = await page.text_content("#mode")
                assert mode.startswith("mode: personal") and "sitting, standing" in mode
                await move_until(page, "sit", "document.getElementById('activity').textContent === 'sitting'", 30)
                assert worker.poll() is None  # never restarted
                await browser.close()
        finally:
            await gw.close()

    try:
        asyncio.run(main())
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _motion(acceleration: str, rotation: str) -> str:
    """A page script dispatching DeviceMotionEvents with these JS expressions (``t`` in s)."""
    return f"""
(seconds) => new Promise((done) => {{
  const G = 9.80665, end = performance.now() + seconds * 1000;
  window.__stopMotion = false;
  const timer = setInterval(() => {{
    const t = (performance.timeOrigin + performance.now()) / 1000;
    window.dispatchEvent(new DeviceMotionEvent("devicemotion", {{
      accelerationIncludingGravity: {acceleration}, rotationRate: {rotation}, interval: 16,
    }}));
    if (performance.now() > end || window.__stopMotion) {{ clearInterval(timer); done(); }}
  }}, 16);
}})
"""


async def _streaming_page(pw, port: int):
    browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = await browser.new_page()
    await page.goto(f"http://127.0.0.1:{port}/phone")
    await page.click("#start")
    await page.wait_for_function("document.getElementById('status').textContent === 'streaming'")
    return browser, page


def test_a_phone_page_without_a_gyroscope_streams_its_accelerometer_alone(running_gateway):
    from playwright.async_api import async_playwright

    async def main():
        async with running_gateway() as (gw, tap):
            async with async_playwright() as pw:
                browser, page = await _streaming_page(pw, gw.port)
                device = await page.text_content("#bus-device")
                sway = "{x: 0.5 * G * Math.sin(2 * Math.PI * 0.5 * t), y: G, z: 0}"
                motion = asyncio.ensure_future(
                    page.evaluate(_motion(sway, "null"), 5.0)
                )  # rotationRate null: no gyroscope
                batches = await tap.collect(device, 60)
                await page.evaluate(STOP_MOTION)
                await motion
                await browser.close()
        samples = np.concatenate([b.samples for b in batches])
        assert all(b.meta.get("gyro") is False for b in batches)
        assert np.all(samples[:, 3:] == 0.0) and np.allclose(samples[:, 1], 1.0, atol=0.03)

    asyncio.run(main())


def test_a_phone_page_sending_acceleration_without_gravity_shows_the_gateway_s_warning(running_gateway):
    from playwright.async_api import async_playwright

    async def main():
        async with running_gateway() as (gw, _):
            async with async_playwright() as pw:
                browser, page = await _streaming_page(pw, gw.port)
                linear = "{x: 0.5 * G * Math.sin(2 * Math.PI * 0.5 * t), y: 0, z: 0}"  # gravity left out
                motion = asyncio.ensure_future(page.evaluate(_motion(linear, "{alpha: 10, beta: 20, gamma: -30}"), 6.5))
                await page.wait_for_function("document.getElementById('error').textContent.includes('no_gravity')")
                shown = await page.text_content("#error")
                await page.evaluate(STOP_MOTION)
                await motion
                await browser.close()
        assert "including gravity" in shown

    asyncio.run(main())
