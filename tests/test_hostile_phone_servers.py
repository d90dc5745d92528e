"""Hostile or broken phones the gateway reads as a client (``--connect``): a
phyphox phone that drips its answer a byte at a time, sends the gateway
elsewhere, or answers what is no JSON. Each is a real HTTP server on
127.0.0.1 and the real gateway (in-process, or the ``harstream gateway``
command): every such phone is counted by reason and dropped, the gateway goes
on asking with back-off, and it stops at once when told to."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

pytestmark = pytest.mark.timeout(90)


class RawPhone:
    """A TCP server on 127.0.0.1 that answers every connection with ``answer(conn, request)``."""

    def __init__(self, answer: Callable[[socket.socket, bytes], None]):
        self.answer = answer
        self.requests: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = conn.recv(65536)
                self.requests.append(request)
                self.answer(conn, request)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self.server.close()


@contextlib.contextmanager
def raw_phone(answer: Callable[[socket.socket, bytes], None]) -> Iterator[RawPhone]:
    phone = RawPhone(answer)
    try:
        yield phone
    finally:
        phone.close()


def drip(conn: socket.socket, request: bytes) -> None:
    """Headers, then a declared 100,000-byte body at a byte a second: each read is in time."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(100_000):
        conn.sendall(b" ")
        time.sleep(1.0)


def reply(status: str, body: bytes = b"", headers: str = "") -> Callable[[socket.socket, bytes], None]:
    def answer(conn: socket.socket, request: bytes) -> None:
        conn.sendall(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{headers}\r\n".encode() + body
        )

    return answer


async def _until(check: Callable[[], bool], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.05)


def test_a_phyphox_phone_dripping_its_answer_is_dropped_counted_and_asked_again(running_gateway):
    # a byte a second keeps every read within the 5 s socket timeout: the gateway
    # waited for the whole declared body (28 hours), the phone never dropped
    async def main():
        with raw_phone(drip) as phone:
            async with running_gateway(connect=[phone.url], device="slow") as (gw, tap):
                await _until(lambda: gw.rejects["timeout"] >= 1 and len(phone.requests) >= 2, 15)
        assert phone.requests[0].startswith(b"GET /config ")

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 20  # and closing the gateway waited for no phone


def test_ctrl_c_stops_a_gateway_reading_a_dripping_phyphox_phone_at_once():
    with raw_phone(drip) as phone:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harstream", "gateway", "--port", "0", "--no-calibration", "--no-predictions"]
            + ["--ingest", "tcp://127.0.0.1:0", "--connect", phone.url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not phone.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            assert phone.requests, "the gateway never asked the phone"
            time.sleep(1.0)  # in the middle of the dripping answer
            stopped = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.wait(10)  # it took until the phone was done (here: never)
            assert time.monotonic() - stopped < 3.0
            assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_phyphox_phone_redirecting_elsewhere_is_not_followed_and_is_counted(running_gateway):
    async def main():
        with raw_phone(reply("200 OK", b'{"inputs": []}')) as elsewhere:
            moved = reply("302 Found", headers=f"Location: {elsewhere.url}/config\r\n")
            with raw_phone(moved) as phone:
                async with running_gateway(connect=[phone.url], device="moved") as (gw, tap):
                    await _until(lambda: gw.rejects["http"] >= 1, 10)
            assert phone.requests and not elsewhere.requests  # the phone could send the gateway anywhere

    asyncio.run(main())


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe not json", b'{"inputs": ' + b"9" * 5000 + b"}"],
    ids=["nested too deeply", "not UTF-8", "an integer of 5000 digits"],
)
def test_a_phyphox_answer_that_is_no_json_object_is_counted(running_gateway, body):
    async def main():
        with raw_phone(reply("200 OK", body, "Content-Type: text/html\r\n")) as phone:
            async with running_gateway(connect=[phone.url], device="junk") as (gw, tap):
                await _until(lambda: gw.rejects["json"] + gw.rejects["values"] >= 1, 10)

    asyncio.run(main())


def test_a_sensorserver_phone_redirecting_elsewhere_is_not_followed_and_is_counted(running_gateway):
    # websockets' connect followed up to 10 redirects to any address the phone named
    async def main():
        with raw_phone(reply("404 Not Found")) as elsewhere:
            where = f"ws://127.0.0.1:{elsewhere.port}/sensors/connect"
            with raw_phone(reply("302 Found", headers=f"Location: {where}\r\n")) as phone:
                async with running_gateway(connect=[f"ws://127.0.0.1:{phone.port}"], device="moved") as (gw, tap):
                    await _until(lambda: gw.rejects["http"] >= 1, 10)
            assert phone.requests[0].startswith(b"GET /sensors/connect?types=")
            assert not elsewhere.requests

    asyncio.run(main())


@pytest.mark.parametrize(
    "answer",
    [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 200 + b"\r\n{}"],
    ids=["no status line", "200 header lines"],
)
def test_a_phyphox_answer_that_is_no_http_is_counted(running_gateway, answer):
    # it was logged as a dropped phone and counted nowhere
    def send(conn: socket.socket, request: bytes) -> None:
        conn.sendall(answer)

    async def main():
        with raw_phone(send) as phone:
            async with running_gateway(connect=[phone.url], device="junk") as (gw, tap):
                await _until(lambda: gw.rejects["http"] >= 1, 10)

    asyncio.run(main())


FLOOD = """
import asyncio, json, sys
from websockets.asyncio.server import serve

async def flood(ws):
    t = 10**9
    try:
        while True:
            for _ in range(100):
                t += 1000
                await ws.send(json.dumps({"type": "android.sensor.accelerometer", "values": [0.1, 9.8, 0.2], "timestamp": t}))
            await asyncio.sleep(0)
    except Exception:
        pass

async def main():
    async with serve(flood, "127.0.0.1", 0, compression=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_sensorserver_phone_flooding_events_leaves_the_other_phones_served_and_the_gateway_stoppable():
    # recv() returned at once while the phone's messages were queued: the read loop held the
    # event loop, other phones' hellos took 1-2 s instead of ~10 ms, and closing waited
    # websockets' 10 s close handshake behind the flood
    from websockets.sync.client import connect as sync_connect

    flood = subprocess.Popen([sys.executable, "-c", FLOOD], stdout=subprocess.PIPE, text=True)
    gateway = None
    try:
        assert flood.stdout is not None
        phone = int(flood.stdout.readline())
        port = _free_port()
        gateway = subprocess.Popen(
            [sys.executable, "-m", "harstream", "gateway", "--port", str(port), "--no-calibration"]
            + ["--no-predictions", "--ingest", "tcp://127.0.0.1:0", "--connect", f"ws://127.0.0.1:{phone}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the gateway did not come up"
                time.sleep(0.1)
        time.sleep(2.0)  # the flood under way
        took = []
        for k in range(8):
            started = time.monotonic()
            with sync_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=30) as ws:
                ws.send(f'{{"type": "hello", "device": "other-{k}"}}')
                assert '"welcome"' in str(ws.recv(timeout=30))
            took.append(time.monotonic() - started)
        assert sorted(took)[len(took) // 2] < 0.5, took
        stopped = time.monotonic()
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
        assert time.monotonic() - stopped < 5.0
    finally:
        for proc in (gateway, flood):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def websocket_phone(then: bytes) -> Callable[[socket.socket, bytes], None]:
    """A SensorServer stand-in: opens the WebSocket, sends ``then`` (raw frames), holds the line."""

    def answer(conn: socket.socket, request: bytes) -> None:
        import base64
        import hashlib

        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
        conn.sendall(b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + then)
        time.sleep(2)  # the line held: what closes it is the gateway's refusal

    return answer


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (b"\x01\x01{" + b"\x00\x00" * 20_000, "ws_fragments"),  # a message that never ends, in empty fragments
        (b"\x81\x7f" + (300_000).to_bytes(8, "big") + b" " * 300_000, "too_large"),  # over --max-message
        (b"\x81\x04\xff\xfe\xfd\xfc", "ws_protocol"),  # not UTF-8 in a text frame
    ],
)
def test_a_sensorserver_phone_breaking_the_websocket_is_counted_by_reason(running_gateway, frames, reason):
    """The gateway closed such a phone and logged it, but counted nothing; the
    fragments even surfaced as a bare AssertionError from inside websockets
    (a recv() cancelled while the connection closed, called again)."""

    async def main():
        with raw_phone(websocket_phone(frames)) as phone:
            url = phone.url.replace("http://", "ws://")
            async with running_gateway(connect=[url]) as (gw, _):
                await _until(lambda: gw.rejects[reason] >= 1, 10)
                assert gw.rejects["internal"] == 0

    asyncio.run(main())
