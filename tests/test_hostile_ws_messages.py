"""Phone messages with odd JSON types, against the real gateway on 127.0.0.1
(``running_gateway``: uvicorn, a real WebSocket or HTTP client, a real ZeroMQ
SUB on the ingest bus). Each is answered with an error naming the field and
counted under its reason; none is an ``internal`` error that closes the
connection (1011), and a good phone beside it keeps its device."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect

from harstream.stream.core.protocol import decode_samples
from harstream.stream.gateway.phone_formats import FormatError, parse_sensor_server

pytestmark = pytest.mark.timeout(60)
G = 9.80665


async def _hello(port: int, hello: dict) -> tuple[object, dict]:
    ws = await connect(f"ws://127.0.0.1:{port}/ws")
    await ws.send(json.dumps(hello))
    return ws, json.loads(await ws.recv())


def _motion(t0_s: float, n: int = 50, rate: float = 100.0) -> dict:
    t = (t0_s + np.arange(n) / rate) * 1000.0
    return {
        "type": "samples",
        "acc": np.column_stack([t, np.zeros(n), np.full(n, G), np.zeros(n)]).tolist(),
        "gyro": np.column_stack([t, np.zeros((n, 3))]).tolist(),
    }


ODD_HELLOS = [("frame", []), ("frame", {"ios": 1}), ("frame", 1), ("units", {"acc": ["g"]}), ("units", {"gyro": {}})]
ODD_KEYS = ["\ud800", "caf\u00e9", "a\nb", "k" * 129]


def test_a_hello_naming_its_units_or_frame_by_a_list_or_object_is_refused_as_units_and_the_connection_kept(
    running_gateway,
):
    async def main():
        async with running_gateway() as (gw, tap):
            for field, value in ODD_HELLOS:
                ws, reply = await _hello(gw.port, {"type": "hello", "device": "odd", field: value})
                assert reply["type"] == "error" and reply["reason"] == "units", (field, value, reply)
                assert field in reply["detail"], reply
                # the connection is still there and can say hello properly
                await ws.send(json.dumps({"type": "hello", "device": "odd"}))
                assert json.loads(await ws.recv())["type"] == "welcome"
                await ws.close()
            assert gw.rejects["units"] == len(ODD_HELLOS) and gw.rejects.get("internal", 0) == 0

    asyncio.run(main())


def test_a_hello_key_that_is_not_printable_ascii_is_refused_and_the_holder_keeps_its_device(running_gateway):
    async def main():
        async with running_gateway() as (gw, tap):
            owner, welcome = await _hello(gw.port, {"type": "hello", "device": "held"})
            assert welcome["type"] == "welcome"
            for key in ODD_KEYS:
                # a lone surrogate cannot even be encoded to compare it: it was an internal error (1011)
                thief, reply = await _hello(gw.port, {"type": "hello", "device": "held", "key": key})
                assert reply["type"] == "error" and reply["reason"] == "types" and "key" in reply["detail"], reply
                # nor is a free device claimed under such a key (its owner could never show it back)
                free, reply = await _hello(gw.port, {"type": "hello", "device": "free", "key": key})
                assert reply["reason"] == "types", reply
                for ws in (thief, free):
                    await ws.close()
            await owner.send(json.dumps(_motion(time.time())))
            await tap.collect("phone:held", 20, timeout=10)
            await owner.close()
            assert gw.rejects["types"] == 2 * len(ODD_KEYS) and gw.rejects.get("internal", 0) == 0

    asyncio.run(main())


def test_the_key_a_welcome_gives_is_taken_back_by_the_hello_check(running_gateway):
    async def main():
        async with running_gateway() as (gw, tap):
            first, welcome = await _hello(gw.port, {"type": "hello", "device": "back"})
            second, again = await _hello(gw.port, {"type": "hello", "device": "back", "key": welcome["key"]})
            assert again["type"] == "welcome" and again["key"] == welcome["key"], again
            for ws in (first, second):
                await ws.close()

    asyncio.run(main())


async def _post(port: int, body: bytes) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /data HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    writer.write(head.encode() + body)
    response = await reader.read()
    writer.close()
    head_b, _, text = response.partition(b"\r\n\r\n")
    return int(head_b.split()[1]), text.decode()


def test_a_sensor_logger_entry_whose_name_is_not_text_is_skipped_and_its_batch_kept(running_gateway):
    async def main():
        async with running_gateway() as (gw, tap):
            start = time.time()
            payload = [{"name": ["accelerometer"], "time": int(start * 1e9), "values": {"x": 0, "y": 0, "z": 0}}]
            payload.append({"name": {"x": 1}, "time": int(start * 1e9), "values": {}})
            for k in range(100):
                ns = int((start + k * 0.01) * 1e9)
                payload.append({"name": "totalacceleration", "time": ns, "values": {"x": 0, "y": G, "z": 0}})
                payload.append({"name": "gyroscope", "time": ns, "values": {"x": 0, "y": 0, "z": 0}})
            body = {"messageId": 0, "sessionId": "s", "deviceId": "odd-names", "payload": payload}
            status, text = await _post(gw.port, json.dumps(body).encode())
            assert status == 200, text  # was 500 "internal error": the batch and its second of motion lost
            await tap.collect("phone:odd-names", 40, timeout=10)
            assert gw.rejects.get("internal", 0) == 0

    asyncio.run(main())


@pytest.mark.parametrize("sensor", [["android.sensor.accelerometer"], {"a": 1}, 7, None])
def test_a_sensorserver_event_whose_type_is_not_text_is_refused_by_name(sensor):
    # read by the gateway's SensorServer client: a TypeError there dropped the phone's connection
    with pytest.raises(FormatError) as refused:
        parse_sensor_server({"type": sensor, "values": [0, 0, 9.8], "timestamp": 10**9})
    assert refused.value.reason == "fields" and "sensor type" in refused.value.detail


def test_barometer_readings_on_another_clock_than_the_motion_are_left_out_and_the_motion_published(
    running_gateway,
):
    """A phone whose clock runs 300 s fast (its motion is pinned to the gateway's
    clock) and whose barometer counts seconds since boot: those readings land
    before 1970 on the bus clock. Before, they rode with the next batch, which
    every worker refused whole (``pressure``): the phone's motion was lost."""

    async def main():
        async with running_gateway() as (gw, tap):
            ws, welcome = await _hello(gw.port, {"type": "hello", "device": "two-clocks", "units": {"acc": "m/s2"}})
            assert welcome["type"] == "welcome"
            fast = time.time() + 300.0
            await ws.send(json.dumps(_motion(fast)))
            await ws.send(
                json.dumps({"type": "samples", "acc": [], "pressure": [[40_000.0, 1001.0], [40_040.0, 1001.1]]})
            )
            for k in range(1, 4):
                await ws.send(json.dumps(_motion(fast + 0.5 * k)))
            got = []
            async with asyncio.timeout(10):
                while sum(len(b) for b in got) < 75:
                    frames = await tap.sub.recv_multipart()
                    batch = decode_samples(frames)  # raised ProtocolError('pressure') before
                    if batch.device == "phone:two-clocks":
                        got.append(batch)
                        assert batch.pressure is None or (batch.pressure[:, 0] >= 0).all()
            await ws.close()
            assert gw.rejects["pressure_time"] == 2, dict(gw.rejects)

    asyncio.run(main())


def _sensor_logger_batch(device: str, message_id: int, start: float, seconds: float = 1.0) -> bytes:
    payload = []
    for k in range(int(seconds * 100)):
        ns = int((start + k * 0.01) * 1e9)
        payload.append({"name": "totalacceleration", "time": ns, "values": {"x": 0, "y": G, "z": 0}})
        payload.append({"name": "gyroscope", "time": ns, "values": {"x": 0, "y": 0, "z": 0}})
    return json.dumps({"messageId": message_id, "sessionId": "rec", "deviceId": device, "payload": payload}).encode()


def test_a_sensor_logger_batch_waiting_for_a_missing_one_is_published_when_the_phone_stops(running_gateway):
    """Pushes 0 and 2 arrive, push 1 never does (lost, or refused), and the
    recording stops. Push 2 waited for push 1 until a later push came, which
    never did: its second of motion was never published."""

    async def main():
        async with running_gateway() as (gw, tap):
            start = time.time() - 3.0
            for message_id, offset in ((0, 0.0), (2, 2.0)):
                status, text = await _post(gw.port, _sensor_logger_batch("stops", message_id, start + offset))
                assert status == 200, text
            got = await tap.collect("phone:stops", 90, timeout=10)  # push 2 given up waiting after 3 s
            assert got[-1].t0 + len(got[-1]) / 50 > start + 2.5

    asyncio.run(main())


def test_a_sensor_logger_session_id_longer_than_any_app_writes_is_refused_naming_it(running_gateway):
    """A sessionId keys its session's claim and message order, kept for up to
    10,000 sessions: 400 pushes with 240 KB ids held 94 MB of the gateway
    (10,000 of them, 2.3 GB). Now it is refused before anything is kept."""

    async def main():
        async with running_gateway() as (gw, tap):
            body = json.loads(_sensor_logger_batch("long-session", 0, time.time()))
            body["sessionId"] = "s" * 10_000
            status, text = await _post(gw.port, json.dumps(body).encode())
            assert status == 400 and text.startswith("types:") and "sessionId" in text, text
            assert len(gw.claims) == 0
            body["sessionId"] = "2f1c9a4e-5d6b-4c8a-9e7f-0a1b2c3d4e5f"  # a UUID, as the app sends
            status, text = await _post(gw.port, json.dumps(body).encode())
            assert status == 200, text

    asyncio.run(main())


def test_a_phone_whose_gyroscope_stops_mid_stream_goes_on_from_its_accelerometer_and_is_told(running_gateway):
    """A gyroscope that stops sending (the OS throttles it, a browser's
    rotationRate turns null) while the accelerometer goes on: no grid point had
    both streams any more, and every later reading was lost without a word
    until the phone reconnected. Now it is served from its accelerometer alone
    after 3 s (meta.gyro false), and told so."""

    async def main():
        async with running_gateway() as (gw, tap):
            ws, welcome = await _hello(gw.port, {"type": "hello", "device": "gyro-stops", "units": {"acc": "m/s2"}})
            assert welcome["type"] == "welcome"
            start = time.time() - 8.0
            warnings = []
            for k in range(16):  # 8 s of 0.5 s messages; the gyroscope stops after 1 s
                msg = _motion(start + 0.5 * k)
                if k >= 2:
                    del msg["gyro"]
                await ws.send(json.dumps(msg))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.02):
                        warnings.append(json.loads(await ws.recv()))
            got = await tap.collect("phone:gyro-stops", 250, timeout=10)
            assert sum(len(b) for b in got if b.meta.get("gyro") is False) >= 150
            assert [w["reason"] for w in warnings] == ["gyro_stopped"], warnings
            assert gw.rejects["gyro_stopped"] == 1
            await ws.close()

    asyncio.run(main())


async def _raw(port: int, head: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode("latin-1"))
    response = await reader.read()
    writer.close()
    return response


@pytest.mark.parametrize("origin", ["http://[::1", "http://[zz]:80"])
def test_a_malformed_origin_header_is_refused_403_and_counted_not_answered_500(origin, running_gateway):
    """urlsplit raises on an unclosed or bogus IPv6 bracket: the admission
    check let it out, uvicorn answered 500 and logged a traceback for every
    such request (uncounted), on POST /data, /stats and the WebSocket alike."""

    async def main():
        async with running_gateway() as (gw, tap):
            p = gw.port
            heads = [
                f"GET /stats HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n",
                f"POST /data HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nOrigin: {origin}\r\nContent-Length: 2\r\n"
                "Connection: close\r\n\r\n{}",
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            ]
            for head in heads:
                response = await _raw(p, head)
                assert response.startswith(b"HTTP/1.1 403"), response[:200]
                assert b"malformed Origin" in response
            assert gw.rejects["origin"] == len(heads)

    asyncio.run(main())


def test_a_phone_whose_id_is_too_long_to_name_its_watch_keeps_its_own_readings(running_gateway):
    """A 55-character deviceId plus '.watch' is past the 58 a phone id may
    have: every push with the watch's entries was refused whole (400 device),
    the phone's own motion with it. Now only the watch is left out, counted."""

    async def main():
        async with running_gateway() as (gw, tap):
            device = "p" * 55
            body = json.loads(_sensor_logger_batch(device, 0, time.time()))
            body["payload"] += [
                {
                    "name": "wristmotion",
                    "time": entry["time"],
                    "values": {
                        **{f"{k}{a}": 0.0 for k in ("acceleration", "rotationRate") for a in "XYZ"},
                        "gravityX": 0.0,
                        "gravityY": -1.0,
                        "gravityZ": 0.0,
                    },
                }
                for entry in body["payload"][::2]
            ]
            status, text = await _post(gw.port, json.dumps(body).encode())
            assert status == 200, text
            await tap.collect(f"phone:{device}", 40, timeout=10)
            assert gw.rejects["device"] == 1

    asyncio.run(main())


def test_a_platform_of_kilobytes_is_refused_without_echoing_it_back(running_gateway):
    """Every other refusal quotes at most a few dozen characters of what it
    refuses; ?platform= was quoted whole (3,000 characters back, and logged)."""

    async def main():
        async with running_gateway() as (gw, _):
            async with connect(f"ws://127.0.0.1:{gw.port}/ws?platform={'x' * 3000}") as ws:
                batch = {"deviceId": "far", "sessionId": "s", "messageId": 0, "payload": []}
                await ws.send(json.dumps(batch))
                reply = json.loads(await ws.recv())
            assert reply["reason"] == "units" and "expected android or ios" in reply["detail"]
            assert len(reply["detail"]) < 120, reply["detail"]

    asyncio.run(main())
