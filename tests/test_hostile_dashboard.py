"""The dashboard's own HTTP edge against a hostile web page: a real
`harstream dashboard` process (Streamlit) and a real WebSocket client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import stop_process
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dashboard(*options: str):
    port = free_port()
    cmd = [sys.executable, "-c", "import sys; from harstream.cli import main; sys.exit(main())", "dashboard"]
    cmd += ["--port", str(port), "--subscribe", f"tcp://127.0.0.1:{free_port()}", *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        break
            assert proc.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.1)
        yield port
    finally:
        stop_process(proc)


async def stream_opens(port: int, name: str) -> bool:
    """Whether the page's live WebSocket opens for a browser that reached
    127.0.0.1 under ``name`` (what a rebound DNS name looks like to the server)."""
    try:
        async with connect(
            f"ws://{name}:{port}/_stcore/stream",
            host="127.0.0.1",
            port=port,
            origin=f"http://{name}:{port}",
            subprotocols=["streamlit"],  # type: ignore[list-item]
        ):
            return True
    except InvalidStatus:
        return False


def test_a_page_on_a_rebound_name_cannot_read_the_dashboard():
    """A web page whose own name the attacker re-points at 127.0.0.1 (DNS
    rebinding) is same-origin with what it loads there: it could open the
    dashboard's stream and read every device's activity. Only the names the
    dashboard serves under (loopback, --host, --allow-host) open it, as the
    gateway's Host allow-list does."""
    with dashboard("--allow-host", "dash.lan") as port:
        opened = {
            name: asyncio.run(stream_opens(port, name))
            for name in ("rebound.example", "127.0.0.1", "localhost", "dash.lan")
        }
    assert opened == {"rebound.example": False, "127.0.0.1": True, "localhost": True, "dash.lan": True}


def test_the_dashboard_off_loopback_needs_a_token():
    """Every other part refuses an address off loopback without keys or a token;
    `harstream dashboard --host 0.0.0.0` served every device's activity to
    anyone on the network (Streamlit has no login of its own)."""
    cmd = [sys.executable, "-c", "import sys; from harstream.cli import main; sys.exit(main())", "dashboard"]
    try:
        done = subprocess.run(
            [*cmd, "--host", "0.0.0.0", "--port", str(free_port())], capture_output=True, text=True, timeout=10
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the dashboard served 0.0.0.0 without a token")
    assert done.returncode == 2 and "--token" in done.stderr, done.stderr


def test_a_dashboard_with_a_token_shows_nothing_to_a_page_without_it(monkeypatch):
    from streamlit.testing.v1 import AppTest
    from test_dashboard_app import APP

    monkeypatch.setenv("HARSTREAM_OUTPUT", f"tcp://127.0.0.1:{free_port()}")
    monkeypatch.setenv("HARSTREAM_DASHBOARD_TOKEN", "s3cret")
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["token"] = "guess"
    at.run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        "**Token needed**: open this page with `?token=` and the dashboard's --token."
    ]
    at.query_params["token"] = "s3cret"
    at.run()
    assert [e for e in at.error if "No worker" in e.value], [e.value for e in at.error]
