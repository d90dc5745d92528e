"""What real phones and watches send that the simulated phones did not: a
phone that buffers while its screen is off and then flushes, and the other
habits of real devices and apps. Each case is a real client on a real
gateway where it can be, else the gateway's own sans-I/O feed with its
clock passed in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect

from harstream.stream.gateway.phone_feeds import DeviceFeed
from harstream.stream.gateway.phone_formats import FormatError, Readings

pytestmark = pytest.mark.timeout(60)

G = 9.80665


def _still(t: np.ndarray) -> Readings:
    """Readings at times ``t`` (s) of a device lying still: 1 g on z, no rotation."""
    acc = np.tile([0.0, 0.0, 1.0], (len(t), 1))
    return Readings(t, acc, t.copy(), np.zeros((len(t), 3)))


# ------------------------------------------------ a phone that buffers, then flushes


def test_a_200_hz_phone_that_buffered_30_s_with_its_screen_off_has_its_flush_kept():
    """A 200 Hz phone streams 10 s, goes quiet for 30 s (screen off: the app
    keeps reading into a buffer), then flushes the 30 s in the largest
    messages the protocol allows (5,000 rows a list). The device spent
    nothing while quiet; the flush is its own readings, on time, and must be
    kept whole: no readings refused, no hole, one segment."""
    now = 1_000_000.0
    feed = DeviceFeed("phone:pocket", now=now)
    out = 0
    for k in range(50):  # 10 s live, 200 ms messages
        t = now + k * 0.2 + np.arange(40) / 200
        out += sum(len(b) for b in feed.add(_still(t), now=now + (k + 1) * 0.2))
    flushed_at = now + 40.0
    buffered = now + 10.0 + np.arange(30 * 200) / 200
    for part in np.split(buffered, [5000]):  # 5,000 + 1,000 rows of each sensor
        out += sum(len(b) for b in feed.add(_still(part), now=flushed_at))
    assert feed.resampler.segments == 1
    assert out >= 40 * 50 - 10  # 40 s at 50 Hz, less the resampler's hold


def test_a_device_that_floods_still_gets_its_rate_and_no_more():
    """Readings not spent while quiet are kept for a flush, but a device that
    never pauses gets the limit's rate: 4,000 readings a second here."""
    now = 2_000_000.0
    feed = DeviceFeed("phone:flood", now=now, max_readings_per_s=4000.0)
    taken = refused = 0
    for k in range(100):  # 10 s of 2,000 readings every 100 ms: 20,000 a second asked
        t = now + k * 0.1 + np.arange(1000) * 1e-4
        try:
            feed.add(_still(t), now=now + k * 0.1)
            taken += 2000
        except FormatError as exc:
            assert exc.reason == "rate_limit"
            refused += 1
    assert refused > 0
    assert taken <= 8000 + 4000 * 10  # its first 2 s worth, then 4,000 a second


def test_a_phone_flushing_its_buffer_through_a_real_gateway_is_not_refused(running_gateway):
    """The same through a real gateway with a small readings limit (100 a
    second, so the test takes seconds): 1 s live at 50 Hz, 3 s quiet, then
    the 3 s buffered sent at once. Before, the bucket held 2 s worth at most
    and refused the flush as rate_limit."""

    async def main():
        async with running_gateway(max_readings_per_s=100.0) as (gw, tap):
            start = time.time()
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await ws.send(json.dumps({"type": "hello", "device": "flush"}))
                assert json.loads(await ws.recv())["type"] == "welcome"

                def rows(t0: float, n: int) -> list:
                    t = (t0 + np.arange(n) / 50) * 1000
                    return np.column_stack([t, np.zeros(n), np.zeros(n), np.ones(n)]).tolist()

                await ws.send(json.dumps({"type": "samples", "acc": rows(start, 50), "gyro": rows(start, 50)}))
                await asyncio.sleep(3.0)
                await ws.send(
                    json.dumps({"type": "samples", "acc": rows(start + 1, 150), "gyro": rows(start + 1, 150)})
                )
                await ws.send(json.dumps({"type": "hello", "device": "x"}))  # answered: all before it was handled
                reply = json.loads(await ws.recv())
                assert reply["reason"] == "order", reply  # not rate_limit
                got = await tap.collect("phone:flush", 190)
            assert "rate_limit" not in gw.rejects
            assert sum(len(b) for b in got) >= 190

    asyncio.run(main())


# ------------------------------------------------ Sensor Logger as the app writes it


def _sensor_logger_batch(device: str, message_id: int, t0: float, seconds: float = 1.0) -> dict:
    """One Sensor Logger push as the app sends it: 100 Hz accelerometer (no
    gravity), gravity and gyroscope, ``accuracy`` beside ``values``, epoch ns
    integers, a barometer at about 1 Hz, and sensors we do not read."""
    payload = []
    for k in range(int(seconds * 100)):
        ns = int((t0 + k / 100) * 1e9)
        for name, xyz in (
            ("accelerometer", (0.01, 0.02, -0.1)),
            ("gravity", (0.3, 3.5, 9.1)),
            ("gyroscope", (0.02, -0.01, 0.0)),
        ):
            payload.append({"name": name, "values": dict(zip("zyx", xyz[::-1])), "accuracy": 3, "time": ns})
    payload.append({"name": "microphone", "time": int(t0 * 1e9), "values": {"dBFS": -47.9}})
    payload.append(
        {
            "name": "barometer",
            "values": {"relativeAltitude": 0.04, "pressure": 1010.4},
            "accuracy": 3,
            "time": int(t0 * 1e9),
        }
    )
    return {"messageId": message_id, "sessionId": "c5ae-60-4-95-1917", "deviceId": device, "payload": payload}


@pytest.mark.parametrize("pressure", [None, "missing"], ids=["null", "missing"])
def test_a_sensor_logger_barometer_reading_without_a_number_is_left_out_and_its_batch_kept(pressure, running_gateway):
    """Sensor Logger is a JavaScript app: JSON.stringify writes a NaN reading
    as null. A barometer entry whose pressure is null (or absent) is one bad
    barometer reading: left out and counted as pressure_non_finite, as a NaN
    in our own protocol is; the second of motion beside it is kept. Before,
    the whole batch was refused (400, types) and its motion lost."""
    from test_gateway import http_post

    async def main():
        async with running_gateway() as (gw, tap):
            start = time.time() - 2.0
            for i in range(2):
                batch = _sensor_logger_batch("sl-null", i, start + i)
                values = batch["payload"][-1]["values"]
                if pressure == "missing":
                    del values["pressure"]
                else:
                    values["pressure"] = pressure
                status, text = await http_post(gw.port, "/data", json.dumps(batch).encode())
                assert status == 200, text
            got = await tap.collect("phone:sl-null", 90)
            assert sum(len(b) for b in got) >= 90
            assert gw.rejects["pressure_non_finite"] == 2 and "types" not in gw.rejects

    asyncio.run(main())


# ------------------------------------------------ a device clock that steps forward


def _stream(feed: DeviceFeed, now: float, seconds: float, clock_step_at: float, step: float) -> tuple[int, int]:
    """``seconds`` of 200 ms messages of a 100 Hz phone whose clock steps
    ``step`` seconds forward at ``clock_step_at``; (samples out, refusals)."""
    out = refused = 0
    for k in range(int(seconds / 0.2)):
        t = now + k * 0.2 + (step if k * 0.2 >= clock_step_at else 0.0) + np.arange(20) / 100
        try:
            out += sum(len(b) for b in feed.add(_still(t), now=now + (k + 1) * 0.2))
        except FormatError as exc:
            assert exc.reason == "time"
            refused += 1
    return out, refused


def test_a_device_cannot_send_its_signal_faster_than_it_happens():
    """Within its reading budget, a device sends 10 Hz readings covering 20 s
    of its own time every 200 ms: 100 s of signal a second, which the
    resampler would turn into 5,000 samples a second for the worker. It is
    refused (time) once the flush allowance is spent, and over 20 s gets
    about that allowance plus the time that passed."""
    now = 2_500_000.0
    feed = DeviceFeed("phone:fast-forward", now=now)
    out, refused, t_dev = 0, 0, now
    for k in range(100):  # 20 s of the gateway's clock
        t = t_dev + np.arange(200) / 10  # each message goes on from the last one taken
        try:
            out += sum(len(b) for b in feed.add(_still(t), now=now + k * 0.2))
            t_dev = float(t[-1]) + 0.1
        except FormatError as exc:
            assert exc.reason == "time" and "faster than it happens" in exc.detail
            refused += 1
    assert refused > 80
    assert out <= 50 * (60 + 30 + 1.05 * 20 + 20)  # max_span + max_ahead, the time passed, one message more


def test_a_phone_clock_that_steps_forward_is_refused_for_seconds_not_for_ever():
    """A phone's clock set 10 minutes forward (a person setting the clock, a
    network time correction, a replay that skipped a pause) mid-stream. Its first
    messages on the new clock are refused (time) as before; once the new
    clock has run on consistently for a few seconds it is taken as the
    device's clock, a new segment, pinned to the gateway's clock. Before,
    every later message was refused: an HTTP (Sensor Logger) phone, which
    never reconnects, was refused for ever."""
    now = 3_000_000.0
    feed = DeviceFeed("phone:stepped", now=now)
    out, refused = _stream(feed, now, 120.0, clock_step_at=60.0, step=600.0)
    assert 0 < refused <= 30  # at most about 5 s refused
    assert out >= 110 * 50
    assert feed.resampler.segments == 2
    batches = feed.add(_still(now + 120.0 + 600.0 + np.arange(100) / 100), now=now + 121.0)
    assert abs(batches[-1].t0 - (now + 120.0)) < 2.0  # bus time follows the gateway's clock, not the stepped one


def test_far_future_readings_that_do_not_go_on_stay_refused():
    """One message a day ahead, then the phone's own clock again: the day-ahead
    message is refused and the phone streams on in its first segment."""
    now = 4_000_000.0
    feed = DeviceFeed("phone:spike", now=now)
    out = 0
    for k in range(100):
        ahead = 86400.0 if k in (50, 51, 52) else 0.0
        t = now + k * 0.2 + ahead + np.arange(20) / 100
        try:
            out += sum(len(b) for b in feed.add(_still(t), now=now + (k + 1) * 0.2))
        except FormatError as exc:
            assert exc.reason == "time" and k in (50, 51, 52)
    assert feed.resampler.segments == 1 + 1  # the 600 ms refused is a hole: one new segment after it


# ------------------------------------------------ a sensor left at a slow rate


async def _send_rows(ws, t: np.ndarray, extra: dict | None = None) -> None:
    rows = np.column_stack([t * 1000, np.zeros(len(t)), np.zeros(len(t)), np.full(len(t), G)]).tolist()
    await ws.send(
        json.dumps({"type": "samples", "acc": rows, "gyro": [[r[0], 0.0, 0.0, 0.0] for r in rows], **(extra or {})})
    )


def test_a_phone_left_at_5_hz_is_told_so_and_not_interpolated_to_50(running_gateway):
    """SensorServer's default sampling period, and Android's SENSOR_DELAY_NORMAL,
    are 200 ms: 5 readings a second, too few for a 50 Hz pipeline. The gateway
    says so (a low_rate warning, counted) after its first second and publishes
    less than a window of it, rather than draw straight lines between readings
    200 ms apart; a 25 Hz watch beside it
    is served and warned of nothing."""

    async def main():
        async with running_gateway() as (gw, tap):
            start = time.time() - 12.0
            async with (
                connect(f"ws://127.0.0.1:{gw.port}/ws") as slow,
                connect(f"ws://127.0.0.1:{gw.port}/ws") as watch,
            ):
                for ws, name in ((slow, "slow"), (watch, "watch")):
                    await ws.send(json.dumps({"type": "hello", "device": name, "units": {"acc": "m/s2"}}))
                    assert json.loads(await ws.recv())["type"] == "welcome"
                for k in range(12):  # 12 s, one message a second
                    await _send_rows(slow, start + k + np.arange(5) / 5)
                    await _send_rows(watch, start + k + np.arange(25) / 25)
                warning = json.loads(await asyncio.wait_for(slow.recv(), 10))
                assert warning["type"] == "warning" and warning["reason"] == "low_rate", warning
                assert "5" in warning["detail"] and "Hz" in warning["detail"]
                got = await tap.collect("phone:watch", 500)
                assert sum(len(b) for b in got) >= 500
                await asyncio.sleep(0.3)
            slow_out = gw.feeds["phone:slow"].samples_out
            assert slow_out < 128  # at most its first second, before it was judged: not one window
            assert gw.rejects["low_rate"] >= 1
            assert gw.feeds["phone:watch"].warnings == 0
            assert gw.stats()["devices"]["phone:slow"]["low_rate"] is True

    asyncio.run(main())


# ------------------------------------------------ reading times in the wrong unit


@pytest.mark.parametrize(
    "scale, says",
    [(1e-3, "seconds"), (1e3, "microseconds"), (1e6, "nanoseconds")],
    ids=["s", "us", "ns"],
)
def test_reading_times_sent_in_another_unit_than_milliseconds_are_refused_saying_which(scale, says, running_gateway):
    """``t_ms`` is milliseconds. Unix seconds (Python's time.time()), micro-
    or nanoseconds (Android's SensorEvent.timestamp is ns) are refused with a
    reason that names the unit they look like. Before, seconds were taken as
    milliseconds: 100 Hz readings read as 100 kHz, a minute of walking squeezed
    into 60 ms, published without a word."""

    async def main():
        async with running_gateway() as (gw, _tap):
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await ws.send(json.dumps({"type": "hello", "device": f"units-{says}"}))
                assert json.loads(await ws.recv())["type"] == "welcome"
                t = (time.time() + np.arange(20) / 100) * 1000 * scale
                rows = np.column_stack([t, np.zeros(20), np.zeros(20), np.ones(20)]).tolist()
                await ws.send(json.dumps({"type": "samples", "acc": rows, "gyro": rows}))
                reply = json.loads(await ws.recv())
            assert reply["type"] == "error" and reply["reason"] in ("time", "values"), reply
            assert says in reply["detail"], reply
            assert gw.feeds[f"phone:units-{says}"].samples_out == 0

    asyncio.run(main())


def test_a_sensor_logger_push_over_the_size_limit_says_what_to_change_in_the_app(running_gateway):
    """An Android phone at its top rates (gyroscope 840 Hz, accelerometer,
    gravity and total acceleration at 207 Hz: a Samsung A52 in Sensor
    Logger's published sampling table) pushes about 200 KiB a second; a 2 s
    batch period is over the 256 KiB a push may hold. The 413 says what to
    change rather than only the size."""
    from test_gateway import http_post

    async def main():
        async with running_gateway() as (gw, _tap):
            t0, payload = time.time() - 3, []
            for name, rate in (
                ("accelerometer", 207),
                ("gravity", 207),
                ("totalacceleration", 207),
                ("gyroscope", 840),
            ):
                for k in range(2 * rate):
                    xyz = {"z": 9.123456789012345, "y": -0.123456789012345, "x": 0.0123456789012345}
                    payload.append({"name": name, "values": xyz, "accuracy": 3, "time": int((t0 + k / rate) * 1e9)})
            body = json.dumps({"messageId": 0, "sessionId": "s", "deviceId": "a52", "payload": payload}).encode()
            assert len(body) > 256 * 1024
            status, text = await http_post(gw.port, "/data", body)
            assert status == 413 and "batch period" in text, text
            assert gw.rejects["too_large"] == 1

    asyncio.run(main())


# ------------------------------------------------ a watch paired with a Sensor Logger phone


def _wrist_motion(t0: float, seconds: float, standardised: bool) -> list[dict]:
    """Sensor Logger's ``wristmotion`` entries (its watch app) of a watch lying
    face up, 100 Hz: CoreMotion's gravity and user acceleration in g with
    gravity along -z by default; with "Standardise Units & Frames" m/s² in
    Android's frame (+z)."""
    unit, sign = (G, 1.0) if standardised else (1.0, -1.0)
    out = []
    for k in range(int(seconds * 100)):
        values = {
            "rotationRateX": 0.1, "rotationRateY": 0.0, "rotationRateZ": 0.0,
            "gravityX": 0.0, "gravityY": 0.0, "gravityZ": sign * unit,
            "accelerationX": 0.02 * unit * sign, "accelerationY": 0.0, "accelerationZ": 0.0,
            "quaternionW": 1.0, "quaternionX": 0.0, "quaternionY": 0.0, "quaternionZ": 0.0,
            "pitch": 0.0, "roll": 0.0, "yaw": 0.0,
        }  # fmt: skip
        out.append({"name": "wristmotion", "time": int((t0 + k / 100) * 1e9), "values": values})
    return out


@pytest.mark.parametrize("standardised", [False, True], ids=["default-g", "standardised-m/s2"])
def test_a_watch_paired_with_a_sensor_logger_phone_is_served_as_a_device_of_its_own(standardised, running_gateway):
    """Sensor Logger's watch app streams the watch's motion (``wristmotion``:
    gravity, user acceleration, rotation rate) in the phone's own pushes.
    The watch is published as ``phone:<deviceId>.watch``, its acceleration
    with gravity in g in Android's frame whichever units the app used, its
    rotation in rad/s; the phone beside it as before. Before, every
    ``wristmotion`` entry was skipped: a watch got no label at all."""
    from test_gateway import http_post

    async def main():
        async with running_gateway() as (gw, tap):
            start = time.time() - 3.0
            for i in range(3):
                batch = _sensor_logger_batch("sl-pair", i, start + i)
                batch["payload"] += _wrist_motion(start + i, 1.0, standardised)
                status, text = await http_post(gw.port, "/data", json.dumps(batch).encode())
                assert status == 200, text
            watch = await tap.collect("phone:sl-pair.watch", 120)
            phone = await tap.collect("phone:sl-pair", 120)
            samples = np.concatenate([b.samples for b in watch])
            np.testing.assert_allclose(samples[:, :3].mean(axis=0), [0.02, 0.0, 1.0], atol=1e-3)
            np.testing.assert_allclose(samples[:, 3:].mean(axis=0), [0.1, 0.0, 0.0], atol=1e-6)
            assert sum(len(b) for b in phone) >= 120
            assert gw.stats()["devices"]["phone:sl-pair.watch"]["source"] == "sensorlogger"

    asyncio.run(main())


# ------------------------------------------------ the simulated phone learns the habit


def test_a_simulated_phone_can_go_quiet_and_flush_what_it_read():
    """PhoneHabits(quiet_every_s, quiet_s): the simulated phone sends nothing
    for ``quiet_s`` at the end of every ``quiet_every_s`` (its screen off),
    then sends every message it held at once, in order; every reading is
    still sent once, so the bench can replay phones as real ones behave."""
    from harstream.simulator.phones import PhoneHabits, phone_messages

    samples = np.zeros((50 * 40, 6), np.float32)
    samples[:, 2] = 1.0
    plain = phone_messages(samples, None, PhoneHabits(rate_hz=100), t0_ms=0.0)
    quiet = phone_messages(samples, None, PhoneHabits(rate_hz=100, quiet_every_s=20.0, quiet_s=10.0), t0_ms=0.0)
    assert [m for _, m in quiet] == [m for _, m in plain]  # the same readings, in the same order
    sent = np.array([at for at, _ in quiet])
    assert np.all(np.diff(sent) >= 0)
    assert not np.any((sent > 10.0 + 1e-9) & (sent < 20.0 - 1e-9))  # nothing sent while quiet
    assert np.sum(np.isclose(sent, 20.0)) == 50  # the 10 s held (50 messages), flushed at its end
    with pytest.raises(ValueError):
        PhoneHabits(quiet_every_s=10.0, quiet_s=10.0)


# ------------------------------------------------ a flush reaches the worker's labels


def test_a_worker_judges_a_phone_s_flush_fresh_by_when_the_gateway_sent_it():
    """The worker drops samples older than --stale-after (5 s) on arrival: a
    backlog a restarted worker is handed must not burst out as old windows.
    A phone's own flush is not such a backlog: the gateway says when it sent
    each batch (meta.sent) and the worker judges age by that. A batch without
    it is judged by its samples' time, as before."""
    from harstream.stream.core.protocol import SampleBatch, encode_samples
    from harstream.stream.core.worker import StreamCore, WorkerConfig

    core = StreamCore(["A", "B", "C", "D", "E", "F"], "m", WorkerConfig(stale_after=5.0), wall_clock=lambda: 1000.0)
    old = np.zeros((10, 6))
    core.ingest(encode_samples(SampleBatch("flushed", 0, 980.0, old, meta={"sent": 999.9})), now=0.0)
    core.ingest(encode_samples(SampleBatch("backlog", 0, 980.0, old)), now=0.0)
    core.ingest(encode_samples(SampleBatch("held-by-a-queue", 0, 980.0, old, meta={"sent": 981.0})), now=0.0)
    assert set(core.devices) == {"flushed"}
    assert core.drops["stale"] == 2


def _labels_back(send, windows: int) -> list[dict]:
    """A real worker (the stand-in router, the shipped --stale-after of 5 s)
    and a real gateway; ``send(ws)`` streams as one phone, which then keeps the
    predictions sent back until ``windows`` windows are labelled (or 8 s)."""
    import threading

    from test_pressure_end_to_end import _router

    from harstream.stream.bus.zmq_worker import serve
    from harstream.stream.core.activities import ACTIVITIES
    from harstream.stream.core.worker import WorkerConfig
    from harstream.stream.gateway.server import Gateway, GatewayConfig

    stop, ready, bound = threading.Event(), threading.Event(), {}
    thread = threading.Thread(
        target=serve,
        args=(None, ACTIVITIES, "waist@t"),
        kwargs=dict(
            ingest="tcp://127.0.0.1:*",
            output="tcp://127.0.0.1:*",
            config=WorkerConfig(stale_after=5.0),
            stop=stop,
            on_ready=ready.set,
            on_bound=lambda i, o: bound.update(ingest=i, output=o),
            printer=None,
            router=_router(),
        ),
        daemon=True,
    )
    thread.start()
    assert ready.wait(30)

    async def main() -> list[dict]:
        gw = Gateway(GatewayConfig(port=0, ingest=bound["ingest"], output=bound["output"], stats_interval=0))
        await gw.start()
        try:
            await asyncio.sleep(0.5)  # the worker's subscription reaches the gateway
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await ws.send(json.dumps({"type": "hello", "device": "phone", "units": {"acc": "m/s2"}}))
                assert json.loads(await ws.recv())["type"] == "welcome"
                got: list[dict] = []

                async def listen() -> None:
                    async for raw in ws:
                        message = json.loads(raw)
                        if message["type"] == "prediction":
                            got.append(message)
                            if len({p["t_end"] for p in got}) >= windows:
                                return

                listener = asyncio.create_task(listen())
                await send(ws)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(listener, 8)
                return got
        finally:
            await gw.close()

    try:
        return asyncio.run(main())
    finally:
        stop.set()
        thread.join(30)


def _samples(t: np.ndarray) -> str:
    rows = np.column_stack([t * 1000, np.zeros(len(t)), np.full(len(t), G), np.zeros(len(t))]).tolist()
    return json.dumps({"type": "samples", "acc": rows, "gyro": [[r[0], 0, 0, 0] for r in rows]})


def test_a_phone_s_buffered_readings_get_their_labels_from_a_real_worker():
    """A phone that read 12 s into its buffer before it could send (screen
    off, no network) sends its held messages at once through a real gateway
    to a real worker at the shipped --stale-after of 5 s: every window of
    them gets its label back. Before, the worker dropped the batches older
    than 5 s as stale: the buffered minutes had no labels."""

    async def send(ws) -> None:
        t = time.time() - 14.0 + np.arange(600) / 50  # 12 s read, the newest 2 s ago
        for i in range(0, 600, 10):  # held as it was read: a message every 200 ms, sent at once
            await ws.send(_samples(t[i : i + 10]))

    got = _labels_back(send, 8)
    assert len({p["t_end"] for p in got}) == 8  # (600 - 128) // 64 + 1 windows, none dropped as stale


def test_a_phone_whose_clock_is_a_minute_slow_gets_its_labels():
    """A phone clock 60 s behind the gateway's (within the 2 minutes the
    gateway takes as the phone's own Unix time) streaming live. Before, the
    worker judged every batch a minute old and dropped it as stale: such a
    phone was never labelled at all."""

    async def send(ws) -> None:
        start = time.time()
        for k in range(22):  # 4.4 s live, a message every 200 ms
            t = start - 60.0 + k * 0.2 + np.arange(10) / 50
            await ws.send(_samples(t))
            await asyncio.sleep(max(0.0, start + (k + 1) * 0.2 - time.time()))

    got = _labels_back(send, 2)
    assert len({p["t_end"] for p in got}) == 2  # (220 - 128) // 64 + 1
