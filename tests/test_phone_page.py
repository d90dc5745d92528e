"""The /phone page in headless Chromium: DeviceMotion in, samples on the bus,
predictions shown. Motion comes from DeviceMotionEvents dispatched by page
script, through the page's real devicemotion listener."""

from __future__ import annotations

import asyncio
import os
import shutil

import numpy as np
import pytest

from harstream.stream.gateway import Gateway, GatewayConfig
from harstream.stream.protocol import Prediction

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (`make browser` installs Debian's chromium)"),
]

G = 9.80665
# A phone on a belt: gravity along y, a 0.5 Hz sway on x, steady rotation.
MOTION_SCRIPT = """
(seconds) => new Promise((done) => {
  const G = 9.80665, end = performance.now() + seconds * 1000;
  const timer = setInterval(() => {
    const t = (performance.timeOrigin + performance.now()) / 1000;
    window.dispatchEvent(new DeviceMotionEvent("devicemotion", {
      accelerationIncludingGravity: {x: 0.5 * G * Math.sin(2 * Math.PI * 0.5 * t), y: G, z: 0},
      rotationRate: {alpha: 10, beta: 20, gamma: -30},
      interval: 16,
    }));
    if (performance.now() > end) { clearInterval(timer); done(); }
  }, 16);
})
"""


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
                p = Prediction(device, 0, 0.0, 2.56, "WALKING_UPSTAIRS", [0, 1, 0, 0, 0, 0], "WALKING_UPSTAIRS",
                               [0, 1, 0, 0, 0, 0], "m", 2.0)
                async with asyncio.timeout(15):
                    while await page.text_content("#activity") != "walking upstairs":
                        await tap.publish(p)
                        await asyncio.sleep(0.1)
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
                await page.wait_for_function("document.getElementById('status').textContent === 'streaming'",
                                             timeout=10_000)
                resumed = await tap.collect(device, 50)
                assert sum(len(b) for b in resumed) >= 50
                assert await page.evaluate("window.harstream.reconnects") >= 1
                await motion
                await browser.close()
        finally:
            await gw.close()
            tap.close()

    asyncio.run(main())
