"""The gateway end to end: real WebSocket/HTTP clients on 127.0.0.1, the real
gateway, a real ZeroMQ subscriber on the ingest bus (``running_gateway`` and
its ``BusTap`` in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
import subprocess
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from harstream.stream.core.protocol import Prediction, SampleBatch
from harstream.stream.gateway.server import Gateway, GatewayConfig

G = 9.80665
pytestmark = pytest.mark.timeout(120)


def truth(t) -> np.ndarray:
    """Known motion: acc in g (gravity on y plus a wobble), gyro in rad/s."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    acc = np.hstack([0.2 * np.sin(2 * np.pi * 0.7 * t), 1 + 0.1 * np.cos(2 * np.pi * 0.5 * t), 0.05 * t * 0])
    gyro = np.hstack([0.5 * np.sin(2 * np.pi * 0.3 * t), 0.2 * np.cos(2 * np.pi * 0.9 * t), 0.1 + 0 * t])
    return np.hstack([acc, gyro])


def jittered(rate: float, start: float, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = start + np.cumsum(rng.uniform(0.7, 1.3, int(seconds * rate * 1.4)) / rate)
    return t[t < start + seconds]


def check_against_truth(batches: list[SampleBatch], time_of, atol=0.01) -> np.ndarray:
    """Batches are consecutive 50 Hz samples matching truth(time_of(bus time))."""
    assert all(b.rate == 50 for b in batches)
    for a, b in zip(batches, batches[1:]):
        assert b.seq == a.seq + len(a), "seq must run on without gaps"
        assert abs(b.t0 - (a.t0 + len(a) / 50)) < 1e-6
    samples = np.concatenate([b.samples for b in batches])
    t = batches[0].t0 + np.arange(len(samples)) / 50
    np.testing.assert_allclose(samples, truth(time_of(t)), atol=atol)
    return samples


def our_protocol_messages(t_acc, t_gyro, batch_s=0.2):
    """harstream `samples` messages in m/s² and deg/s with ms timestamps."""
    x = truth(t_acc)
    y = truth(t_gyro)
    edges = np.arange(t_acc[0], t_acc[-1] + batch_s, batch_s)
    for lo, hi in zip(edges, edges[1:]):
        a = (t_acc >= lo) & (t_acc < hi)
        g = (t_gyro >= lo) & (t_gyro < hi)
        yield {
            "type": "samples",
            "acc": np.column_stack([t_acc[a] * 1000, x[a, :3] * G]).tolist(),
            "gyro": np.column_stack([t_gyro[g] * 1000, np.degrees(y[g, 3:])]).tolist(),
        }


# ------------------------------------------------------------------ inputs


def test_our_websocket_protocol_reaches_the_bus_as_50hz_samples_in_g_and_rad_s(running_gateway):
    async def main():
        async with running_gateway() as (gw, tap):
            start = time.time()
            t_acc, t_gyro = jittered(100, start, 4, 1), jittered(200, start, 4, 2)
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await ws.send(
                    json.dumps({"type": "hello", "device": "ours-1", "units": {"acc": "m/s2", "gyro": "deg/s"}})
                )
                welcome = json.loads(await ws.recv())
                assert welcome["type"] == "welcome" and welcome["device"] == "ours-1" and welcome["key"]
                for msg in our_protocol_messages(t_acc, t_gyro):
                    await ws.send(json.dumps(msg))
                batches = await tap.collect("phone:ours-1", 150)
            check_against_truth(batches, lambda t: t)
            assert batches[0].meta["source"] == "harstream"

    asyncio.run(main())


def test_a_phone_streams_under_one_producer_session_that_survives_a_reconnect(running_gateway):
    """The worker refuses another publisher's samples under a device whose
    session is live, so the gateway must name one session per phone and keep
    it when the phone reconnects."""

    async def send_some(gw, hello, start):
        async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
            await ws.send(json.dumps(hello))
            welcome = json.loads(await ws.recv())
            for msg in our_protocol_messages(jittered(100, start, 2, 1), jittered(200, start, 2, 2)):
                await ws.send(json.dumps(msg))
            return welcome["key"]

    async def main():
        async with running_gateway() as (gw, tap):
            start = time.time()
            key = await send_some(gw, {"type": "hello", "device": "sess-1"}, start)
            first = await tap.collect("phone:sess-1", 60)
            await send_some(gw, {"type": "hello", "device": "sess-1", "key": key}, start + 2.5)
            both = await tap.collect("phone:sess-1", sum(len(b) for b in first) + 60)
        sessions = {b.session for b in both}
        assert len(sessions) == 1 and "" not in sessions

    asyncio.run(main())


def sensor_logger_batches(t, device, session, names=("totalacceleration", "gyroscope"), sign=1.0, batch_s=0.25):
    x = truth(t)
    edges = np.arange(t[0], t[-1] + batch_s, batch_s)
    for i, (lo, hi) in enumerate(zip(edges, edges[1:])):
        sel = np.flatnonzero((t >= lo) & (t < hi))
        payload = []
        for k in sel:
            ns = int(round(t[k] * 1e9))
            total = x[k, :3] * G
            gravity = np.array([0.0, G, 0.0])
            xyz = {
                "totalacceleration": sign * total,
                "accelerometer": sign * (total - gravity),
                "gravity": sign * gravity,
                "gyroscope": x[k, 3:],
            }
            for name in names:
                payload.append({"name": name, "time": ns, "values": dict(zip("xyz", map(float, xyz[name])))})
        # Sensor Logger also pushes sensors we do not use.
        payload.append({"name": "battery", "time": int(lo * 1e9), "values": {"batteryLevel": 0.8}})
        yield {"messageId": i, "sessionId": session, "deviceId": device, "payload": payload}


async def http_post(port: int, path: str, body: bytes, headers: dict | None = None) -> tuple[int, str]:
    """A real HTTP/1.1 POST over a socket (no client library hides what is sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
    response = await reader.read()
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode()


@pytest.mark.parametrize(
    "names, platform, sign",
    [
        (("totalacceleration", "gyroscope"), "android", 1.0),
        (("accelerometer", "gravity", "gyroscope"), "android", 1.0),
        (("accelerometer", "gravity", "gyroscope"), "ios", -1.0),
    ],
    ids=["android-total", "android-acc+gravity", "ios-flipped"],
)
def test_sensor_logger_http_posts_reach_the_bus_with_gravity_and_android_signs(names, platform, sign, running_gateway):
    async def main():
        async with running_gateway() as (gw, tap):
            t = jittered(100, time.time(), 4, 3)
            batches = list(sensor_logger_batches(t, "sl-phone", "s1", names, sign))
            # Out of order, as concurrent HTTP requests can arrive.
            batches[1], batches[2] = batches[2], batches[1]
            for b in batches:
                status, text = await http_post(gw.port, f"/data?platform={platform}", json.dumps(b).encode())
                assert (status, text) == (200, "ok\n")
            got = await tap.collect("phone:sl-phone", 150)
            check_against_truth(got, lambda t: t)

    asyncio.run(main())


def test_a_refused_sensor_logger_push_does_not_hold_back_the_pushes_after_it(running_gateway):
    async def main():
        async with running_gateway() as (gw, tap):
            t = jittered(100, time.time(), 3, 7)
            first, refused, after = list(sensor_logger_batches(t, "sl-hole", "s1"))[:3]
            refused["payload"][0]["values"]["x"] = "fast"  # a batch the gateway must refuse
            assert await http_post(gw.port, "/data", json.dumps(first).encode()) == (200, "ok\n")
            published = gw.stats()["devices"]["phone:sl-hole"]["samples_out"]
            status, _ = await http_post(gw.port, "/data", json.dumps(refused).encode())
            assert status == 400
            assert await http_post(gw.port, "/data", json.dumps(after).encode()) == (200, "ok\n")
            # Answered, and already on the bus: not parked until the order gives up on the hole.
            assert gw.stats()["devices"]["phone:sl-hole"]["samples_out"] > published + 20

    asyncio.run(main())


def test_sensor_logger_json_over_a_websocket_is_accepted_too(running_gateway):
    async def main():
        async with running_gateway() as (gw, tap):
            t = jittered(100, time.time(), 4, 4)
            async with connect(f"ws://127.0.0.1:{gw.port}/data") as ws:
                for b in sensor_logger_batches(t, "sl-ws", "s1"):
                    await ws.send(json.dumps(b))
                got = await tap.collect("phone:sl-ws", 150)
            check_against_truth(got, lambda t: t)

    asyncio.run(main())


def test_sensorserver_phone_is_read_as_a_client_and_reconnected_after_a_drop(running_gateway):
    """A stand-in SensorServer app: one JSON event per message, ns since boot."""
    boot_t_acc = jittered(200, 1000.0, 6, 5)
    boot_t_gyro = jittered(200, 1000.0, 6, 6)
    events = sorted(
        [(t, "android.sensor.accelerometer", truth([t])[0, :3] * G) for t in boot_t_acc]
        + [(t, "android.sensor.gyroscope", truth([t])[0, 3:]) for t in boot_t_gyro]
    )
    paths, sessions = [], []

    async def phone(ws):
        paths.append(ws.request.path)
        first = len(sessions) == 0
        sessions.append(1)
        # First connection: 2 s of events then the phone drops. Second: the rest.
        part = [e for e in events if (e[0] < 1002.0) == first]
        for t, kind, values in part:
            await ws.send(
                json.dumps({"type": kind, "values": list(map(float, values)), "timestamp": int(t * 1e9), "accuracy": 3})
            )
            await asyncio.sleep(0)
        if first:
            await ws.close()
        else:
            await ws.wait_closed()

    async def main():
        async with serve(phone, "127.0.0.1", 0) as phone_server:
            port = phone_server.sockets[0].getsockname()[1]
            async with running_gateway(connect=[f"ws://127.0.0.1:{port}"], device="ss-phone") as (gw, tap):
                got = await tap.collect("phone:ss-phone", 5 * 50)
        assert paths[0].startswith("/sensors/connect?types=")
        assert "android.sensor.accelerometer" in paths[0] and "android.sensor.gyroscope" in paths[0]
        assert len(sessions) >= 2, "did not reconnect"
        # Two segments: the reconnect shows as a seq jump. Bus times are the
        # gateway clock; the first sample of a segment is at the later first reading.
        segments = [[got[0]]]
        for a, b in zip(got, got[1:]):
            (segments[-1].append(b) if b.seq == a.seq + len(a) else segments.append([b]))
        assert len(segments) == 2
        assert segments[1][0].seq > segments[0][-1].seq + len(segments[0][-1])
        for seg, lo in zip(segments, (1000.0, 1002.0)):
            boot_start = max(boot_t_acc[boot_t_acc >= lo][0], boot_t_gyro[boot_t_gyro >= lo][0])
            check_against_truth(seg, lambda t, s=seg, b=boot_start: t - s[0].t0 + b)

    asyncio.run(main())


def test_predictions_for_a_device_are_forwarded_to_its_connection(running_gateway):
    async def main():
        async with running_gateway(output=True) as (gw, tap):
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws, connect(f"ws://127.0.0.1:{gw.port}/ws") as other:
                await ws.send(json.dumps({"type": "hello", "device": "pred-1"}))
                await other.send(json.dumps({"type": "hello", "device": "pred-2"}))
                await ws.recv(), await other.recv()
                p = Prediction(
                    "phone:pred-1", 0, 1.0, 3.56, "WALKING", [1, 0, 0, 0, 0, 0], "WALKING", [1, 0, 0, 0, 0, 0], "m", 3.0
                )
                async with asyncio.timeout(10):
                    while True:  # until the gateway's subscription is live
                        await tap.publish(p)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.1):
                                msg = json.loads(await ws.recv())
                                break
                assert msg["type"] == "prediction" and msg["label"] == "WALKING" and msg["device"] == "pred-1"
                assert msg["bus_device"] == "phone:pred-1"
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.3):
                        await other.recv()

    asyncio.run(main())


# ------------------------------------------------------------------ safety


def test_binding_beyond_loopback_requires_a_token():
    with pytest.raises(ValueError, match="token"):
        Gateway(GatewayConfig(host="0.0.0.0", port=0, output=None))


def test_token_is_checked_on_every_connection_and_post(running_gateway):
    async def main():
        async with running_gateway(token="s3cret") as (gw, tap):
            with pytest.raises(Exception, match="401"):
                async with connect(f"ws://127.0.0.1:{gw.port}/ws"):
                    pass
            with pytest.raises(Exception, match="401"):
                async with connect(f"ws://127.0.0.1:{gw.port}/ws?token=wrong"):
                    pass
            body = json.dumps(next(sensor_logger_batches(jittered(100, time.time(), 1, 1), "tok", "s"))).encode()
            assert (await http_post(gw.port, "/data", body))[0] == 401
            assert (await http_post(gw.port, "/data", body, {"Authorization": "Bearer s3cret"}))[0] == 200
            assert (await http_post(gw.port, "/data?token=s3cret", body))[0] == 200
            async with connect(f"ws://127.0.0.1:{gw.port}/ws?token=s3cret") as ws:
                await ws.send(json.dumps({"type": "hello", "device": "tok-ws"}))
                assert json.loads(await ws.recv())["type"] == "welcome"
            assert gw.rejects["auth"] == 3

    asyncio.run(main())


def test_a_device_id_cannot_be_taken_by_a_second_connection_without_its_key(running_gateway):
    async def main():
        async with running_gateway() as (gw, tap):
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as first:
                await first.send(json.dumps({"type": "hello", "device": "mine"}))
                key = json.loads(await first.recv())["key"]
                async with connect(f"ws://127.0.0.1:{gw.port}/ws") as thief:
                    await thief.send(json.dumps({"type": "hello", "device": "mine"}))
                    reply = json.loads(await thief.recv())
                    assert reply["type"] == "error" and reply["reason"] == "device_in_use"
                # Sensor Logger over HTTP cannot post as that device either.
                body = json.dumps(next(sensor_logger_batches(jittered(100, time.time(), 1, 1), "mine", "x"))).encode()
                assert (await http_post(gw.port, "/data", body))[0] == 409
                # The owner, reconnecting with its key, takes over.
                async with connect(f"ws://127.0.0.1:{gw.port}/ws") as again:
                    await again.send(json.dumps({"type": "hello", "device": "mine", "key": key}))
                    assert json.loads(await again.recv())["type"] == "welcome"
                    with pytest.raises(ConnectionClosed):
                        async with asyncio.timeout(5):
                            await first.recv()
            assert gw.rejects["device_in_use"] == 2

    asyncio.run(main())


def test_a_second_sensor_logger_session_under_a_posting_id_is_told_to_wait_not_to_show_a_key(running_gateway):
    async def main():
        async with running_gateway() as (gw, _):
            readings = jittered(100, time.time(), 1, 1)
            first = json.dumps(next(sensor_logger_batches(readings, "shared", "session-1"))).encode()
            second = json.dumps(next(sensor_logger_batches(readings, "shared", "session-2"))).encode()
            assert (await http_post(gw.port, "/data", first))[0] == 200
            status, body = await http_post(gw.port, "/data", second)
            assert status == 409 and "HTTP posts" in body and "use another id or wait" in body, body
            assert "key" not in body  # Sensor Logger has none to show
            assert gw.rejects["device_in_use"] == 1

    asyncio.run(main())


BAD_MESSAGES = [
    (b"\x00\xffnot json", "json"),
    (b"[1, 2, 3]", "json"),
    (b'{"hello": 1}', "fields"),
    (json.dumps({"type": "samples", "acc": [[0, 0, 0, 1]]}).encode(), "order"),  # before hello
    (json.dumps({"type": "hello", "device": "bad id with spaces"}).encode(), "device"),
    (json.dumps({"type": "hello", "device": "u", "units": {"acc": "furlongs"}}).encode(), "units"),
]
BAD_SAMPLES = [
    ({"type": "samples", "acc": "lots"}, "types"),
    ({"type": "samples", "acc": [[1, 2, 3]]}, "types"),
    ({"type": "samples", "acc": [[1, 2, 3, True]]}, "types"),
    ({"type": "samples", "acc": [[1e12, 0, 0, 60]]}, "values"),  # 60 g
    ({"type": "samples", "gyro": [[1e12, 0, 0, 1e9]]}, "values"),
    ('{"type": "samples", "acc": [[1e12, NaN, 0, 1]]}', "values"),
    ({"type": "samples", "acc": [[10**40, 0, 0, 1]]}, "values"),
    ({"type": "samples", "acc": [[10**400, 0, 0, 1]]}, "values"),
    ({"type": "samples"}, "fields"),
]


def test_malformed_messages_get_a_clear_error_and_a_counted_reason(running_gateway):
    async def main():
        async with running_gateway() as (gw, tap):
            for raw, reason in BAD_MESSAGES:
                async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                    await ws.send(raw.decode("latin-1") if raw[:1] != b"\x00" else raw)
                    reply = json.loads(await ws.recv())
                    assert reply["type"] == "error" and reply["reason"] == reason, (raw, reply)
                    assert reply["detail"]
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await ws.send(json.dumps({"type": "hello", "device": "bad-samples"}))
                await ws.recv()
                for msg, reason in BAD_SAMPLES:
                    await ws.send(msg if isinstance(msg, str) else json.dumps(msg))
                    reply = json.loads(await ws.recv())
                    assert reply["reason"] == reason, (msg, reply)
            for _, reason in BAD_MESSAGES + BAD_SAMPLES:
                assert gw.rejects[reason] >= 1
            status, text = await http_post(gw.port, "/data", b'{"deviceId": "x", "payload": 5}')
            assert status == 400 and text.startswith("types:")
            status, _ = await http_post(gw.port, "/nowhere", b"{}")
            assert status == 404
            stats = json.loads((await http_get(gw.port, "/stats"))[1])
            assert stats["rejects"]["types"] >= 4

    asyncio.run(main())


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def test_hostile_clients_leave_a_well_behaved_phone_served(running_gateway):
    """Oversized frames, garbage, an idle slowloris, a huge POST and 1,000
    rapid connects, all while one good phone streams next to them."""

    async def good_phone(port, t_acc, t_gyro, stop_after):
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send(json.dumps({"type": "hello", "device": "good", "units": {"acc": "m/s2", "gyro": "deg/s"}}))
            assert json.loads(await ws.recv())["type"] == "welcome"
            for msg in our_protocol_messages(t_acc, t_gyro, batch_s=0.1):
                await ws.send(json.dumps(msg))
                await asyncio.sleep(0.01)
            await stop_after.wait()  # (the gateway may close us for idling by now: fine)

    async def oversized(port):
        async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
            await ws.send("x" * 100_000)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1009

    async def garbage(port):
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            for _ in range(10):
                await ws.send(bytes(range(256)) * 4)
            with pytest.raises(ConnectionClosed):  # closed after max_errors
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()

    async def slowloris_http(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # and never finish the head
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 15) is not None  # the gateway hangs up
        writer.close()

    async def idle_websocket(port):
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 30)
            assert info.value.rcvd.code == 1008

    async def huge_post(port):
        status, _ = await http_post(port, "/data", b"{" + b" " * 300_000 + b"}")
        assert status == 413

    async def rapid_connects(port, n=1000):
        async def one():
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        for _ in range(0, n, 100):
            await asyncio.gather(*(one() for _ in range(100)))

    async def main():
        # The idle limit is well above the good phone's 10 ms sends, even on a busy machine.
        async with running_gateway(max_message=64 * 1024, idle_timeout=3.0, open_timeout=2.0, max_errors=5) as (
            gw,
            tap,
        ):
            start = time.time()
            t_acc, t_gyro = jittered(100, start, 6, 7), jittered(100, start, 6, 8)
            done = asyncio.Event()
            good = asyncio.create_task(good_phone(gw.port, t_acc, t_gyro, done))
            await asyncio.gather(
                oversized(gw.port),
                garbage(gw.port),
                slowloris_http(gw.port),
                idle_websocket(gw.port),
                huge_post(gw.port),
                rapid_connects(gw.port),
            )
            batches = await tap.collect("phone:good", int(5.5 * 50))
            done.set()
            await good
            check_against_truth(batches, lambda t: t)
            assert gw.rejects["too_large"] >= 2 and gw.rejects["json"] >= 5 and gw.rejects["idle"] >= 1
            assert gw.counts["tcp_connections"] >= 1000
            # Nothing left behind once the hostile clients are gone.
            async with asyncio.timeout(10):
                while gw.open_connections() > 0:
                    await asyncio.sleep(0.05)

    asyncio.run(main())


def test_connections_beyond_the_limit_are_refused_not_queued(running_gateway):
    async def main():
        async with running_gateway(max_connections=5) as (gw, tap):
            held = [await connect(f"ws://127.0.0.1:{gw.port}/ws") for _ in range(5)]
            with pytest.raises(Exception, match="503"):
                await connect(f"ws://127.0.0.1:{gw.port}/ws")
            assert gw.rejects["busy"] == 1
            await held[0].close()
            async with asyncio.timeout(5):
                while gw.open_connections() >= 5:
                    await asyncio.sleep(0.02)
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await ws.send(json.dumps({"type": "hello", "device": "after"}))
                assert json.loads(await ws.recv())["type"] == "welcome"
            for ws in held[1:]:
                await ws.close()

    asyncio.run(main())


def test_one_address_cannot_hold_every_connection(running_gateway):
    async def main():
        async with running_gateway(max_connections=10, max_connections_per_address=3) as (gw, tap):
            url = f"ws://127.0.0.1:{gw.port}/ws"
            held = [await connect(url) for _ in range(3)]
            with pytest.raises(Exception, match="503"):
                await connect(url)
            assert gw.rejects["busy"] == 1
            async with connect(url, local_addr=("127.0.0.2", 0)) as other:  # another address still gets in
                await other.send(json.dumps({"type": "hello", "device": "neighbour"}))
                assert json.loads(await other.recv())["type"] == "welcome"
            await held[0].close()
            async with asyncio.timeout(5):
                while True:  # the closed one's place comes back to its address
                    try:
                        again = await connect(url)
                        break
                    except Exception:
                        await asyncio.sleep(0.05)
            for ws in [again, *held[1:]]:
                await ws.close()

    asyncio.run(main())


def test_rate_limit_refuses_a_flood_on_that_connection_only(running_gateway):
    async def main():
        async with running_gateway(max_messages_per_s=10, max_errors=1000) as (gw, tap):
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await ws.send(json.dumps({"type": "hello", "device": "flood"}))
                await ws.recv()
                for _ in range(300):
                    await ws.send(json.dumps({"type": "samples", "acc": []}))
                replies = []
                with contextlib.suppress(TimeoutError):
                    while True:  # until the gateway has gone quiet for a second
                        async with asyncio.timeout(1):
                            replies.append(json.loads(await ws.recv()))
            # 10/s with bursts of 20 lets through at most 20 + 10/s of processing time.
            assert sum(r.get("reason") == "rate_limit" for r in replies) >= 150
            assert gw.rejects["rate_limit"] >= 150

    asyncio.run(main())


def test_cross_origin_pages_cannot_post_samples(running_gateway):
    async def main():
        async with running_gateway() as (gw, tap):
            body = json.dumps(next(sensor_logger_batches(jittered(100, time.time(), 1, 1), "web", "s"))).encode()
            status, text = await http_post(gw.port, "/data", body, {"Origin": "http://evil.example"})
            assert (status, text) == (403, "cross-origin request from http://evil.example refused\n")
            assert gw.rejects["origin"] == 1
            assert (await http_post(gw.port, "/data", body))[0] == 200  # apps send no Origin

    asyncio.run(main())


def test_cross_origin_pages_cannot_open_the_websocket(running_gateway):
    async def main():
        async with running_gateway() as (gw, tap):
            with pytest.raises(Exception, match="403"):
                async with connect(f"ws://127.0.0.1:{gw.port}/ws", origin="http://evil.example"):
                    pass
            async with connect(f"ws://127.0.0.1:{gw.port}/ws", origin=f"http://127.0.0.1:{gw.port}") as ws:
                await ws.send(json.dumps({"type": "hello", "device": "same-origin"}))
                assert json.loads(await ws.recv())["type"] == "welcome"

    asyncio.run(main())


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl CLI not installed (needed to make a test certificate)"
)
def test_tls_serves_wss_and_https_posts_with_a_self_signed_certificate(tmp_path, running_gateway):
    cert, key = tmp_path / "gateway.crt", tmp_path / "gateway.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    client_tls = ssl.create_default_context(cafile=str(cert))

    async def main():
        async with running_gateway(tls_cert=str(cert), tls_key=str(key), open_timeout=2.0) as (gw, tap):
            t = jittered(100, time.time(), 3, 9)
            async with connect(f"wss://127.0.0.1:{gw.port}/ws", ssl=client_tls) as ws:
                await ws.send(json.dumps({"type": "hello", "device": "tls-ws"}))
                assert json.loads(await ws.recv())["type"] == "welcome"
            for b in sensor_logger_batches(t, "tls-post", "s"):
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.port, ssl=client_tls)
                body = json.dumps(b).encode()
                writer.write(
                    f"POST /data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                assert (await reader.read()).startswith(b"HTTP/1.1 200")
                writer.close()
            check_against_truth(await tap.collect("phone:tls-post", 100), lambda t: t)
            # Plain HTTP on the TLS port goes nowhere: no valid handshake comes back (or the connection is cut).
            with pytest.raises((InvalidHandshake, OSError)):
                async with connect(f"ws://127.0.0.1:{gw.port}/ws", open_timeout=5):
                    pass

    asyncio.run(main())
