"""End to end: `harstream demo` on ipc buses and a free dashboard port, its
dashboard in headless Chromium.

Needs Debian's chromium (`make browser` installs it); driven by Playwright's
Python package with `executable_path`, never a downloaded browser.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SPEED = 10  # HAPT subjects change activity every ~15-60 s of recording: a few seconds here
STARTUP_S = 240.0  # TensorFlow import and model load on a busy 2-core machine
CHANGE_S = 120.0


def dashboard_port() -> int:
    """A loopback port that was free a moment ago, for Streamlit.

    Streamlit must be told its port up front and the demo cannot report back
    one it picked, so here alone a port is probed and released: another
    process can take it before Streamlit binds it (EADDRINUSE, logged as
    "Port N is not available"), and the caller then starts again on a new one.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_http(url: str, demo: subprocess.Popen, timeout: float) -> bool:
    """True once ``url`` answers 200, False if the demo exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if demo.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} not up within {timeout:.0f} s")


def page_problems(page) -> list[str]:
    """Exceptions and no-worker/no-data banners the page shows."""
    problems = [f"exception: {t}" for t in page.locator('[data-testid="stException"]').all_inner_texts()]
    for text in page.locator('[data-testid="stAlert"]').all_inner_texts():
        if "No worker" in text or "No data" in text:
            problems.append(f"banner: {text}")
    return problems


def activities(page) -> dict[str, str]:
    return page.eval_on_selector_all(
        "[data-device]", "els => Object.fromEntries(els.map(e => [e.dataset.device, e.dataset.activity]))"
    )


@pytest.mark.timeout(900)
def test_demo_dashboard_in_chromium_shows_live_activities_that_change(
    output_dir, ipc_address, shipped_records, monkeypatch
):
    from playwright.sync_api import sync_playwright

    from harstream.models.artifact import ANY_MODEL, ANY_NO_GYRO_MODEL, DEFAULT_MODEL

    # The demo's worker finds the shipped models' serving records, as on a machine that served them
    # before, and starts without TensorFlow; without them (a fresh machine, an empty user cache) it
    # converts all three first. What the page shows does not depend on which.
    monkeypatch.setenv("HARSTREAM_CACHE", str(shipped_records.of(DEFAULT_MODEL, ANY_MODEL, ANY_NO_GYRO_MODEL)))
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: run `make browser` (apt-get install chromium)"
    log_path = output_dir / "demo.log"
    log = open(log_path, "w")
    command = [
        sys.executable,
        "-m",
        "harstream",
        "demo",
        "--subjects",
        "2",
        "4",
        "--speed",
        str(SPEED),
        "--ingest",
        ipc_address("ingest"),
        "--output",
        ipc_address("output"),
    ]
    if os.environ.get("HARSTREAM_E2E_MODEL"):  # default: the shipped model, as `make demo` runs it
        command += ["--model", os.environ["HARSTREAM_E2E_MODEL"]]
    demo = None
    started: set[int] = set()
    try:
        for _ in range(3):  # a new port only if the probed one was taken meanwhile (see dashboard_port)
            http = dashboard_port()
            url = f"http://127.0.0.1:{http}"
            demo = subprocess.Popen(
                command + ["--port", str(http)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            up = wait_http(f"{url}/_stcore/health", demo, timeout=STARTUP_S)
            if up or f"Port {http} is not available" not in log_path.read_text():
                break
        assert demo.poll() is None, f"harstream demo exited with {demo.returncode}"
        started = descendants(demo.pid)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.goto(url)
                page.wait_for_selector("[data-device]", timeout=STARTUP_S * 1000)
                first = activities(page)
                assert first and all(first.values()), first
                lasted = page.eval_on_selector_all("[data-device]", "els => els.map(e => Number(e.dataset.lasted))")
                assert lasted and all(x >= 0 for x in lasted), lasted
                changed = None
                deadline = time.monotonic() + CHANGE_S
                while changed is None and time.monotonic() < deadline:
                    page.wait_for_timeout(1000)
                    assert demo.poll() is None, f"harstream demo exited with {demo.returncode}"
                    now = activities(page)
                    changed = next((d for d in first if d in now and now[d] != first[d]), None)
                assert changed, f"no device changed activity within {CHANGE_S:.0f} s: {first}"
                # The device view has drawn too (charts are canvases/SVG).
                page.wait_for_selector('[data-testid="stVegaLiteChart"]', timeout=30_000)
                # the activity mix above the cards plus the device view's charts
                page.wait_for_function(
                    "() => document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length >= 3", timeout=30_000
                )
                # each card carries the day's time from the worker's final history, and a reload
                # shows it again (the worker keeps it and sends it with the device's next revision)
                today = "els => els.map(e => e.textContent).filter(t => /^today: \\w+ \\d+ (s|min)/.test(t))"
                page.wait_for_function(f"() => ({today})([...document.querySelectorAll('.hs-today')]).length > 0")
                page.reload()
                page.wait_for_selector("[data-device]", timeout=60_000)
                page.wait_for_function(
                    f"() => ({today})([...document.querySelectorAll('.hs-today')]).length > 0", timeout=30_000
                )
                page.wait_for_timeout(3000)  # let the next refresh finish before the picture
                page.screenshot(path=str(output_dir / "dashboard.png"), full_page=True)
                assert page_problems(page) == []
                assert activities(page), "the overview emptied"
            finally:
                browser.close()
        started |= descendants(demo.pid)
        demo.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        assert demo.wait(timeout=60) == 0
        time.sleep(0.5)
        left = [pid for pid in started if alive(pid)]
        assert not left, f"processes left after the demo stopped: {left}"
    finally:
        if demo is not None and demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
        for pid in started:  # a failed test must not leave the stack running either
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        log.close()


def test_demo_stops_every_part_and_fails_when_one_part_dies(output_dir, ipc_address):
    """The dashboard's port is taken, so Streamlit exits: the demo must say
    so, stop the worker and simulator it started, and exit non-zero."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))  # held until the end: the port stays taken
    blocker.listen()
    http = blocker.getsockname()[1]
    started: set[int] = set()
    with open(output_dir / "demo.log", "w") as log:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harstream",
                "demo",
                "--subjects",
                "2",
                "--port",
                str(http),
                "--ingest",
                ipc_address("ingest"),
                "--output",
                ipc_address("output"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while demo.poll() is None and time.monotonic() < deadline:
                started |= descendants(demo.pid)
                time.sleep(0.2)
            assert demo.poll() is not None, "the demo kept running without its dashboard"
            assert demo.returncode == 1
        finally:
            blocker.close()
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
    text = (output_dir / "demo.log").read_text()
    assert "demo: dashboard exited" in text
    assert len(started) >= 3  # worker, dashboard, simulator were running
    time.sleep(0.5)
    assert not [pid for pid in started if alive(pid)], "the demo left processes behind"
