"""Recordings replayed as phones (simulator/phones.py): the messages a phone
sends, what the gateway makes of them, and a replay through a real gateway
and a real worker on loopback, each phone keeping the labels sent back."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from test_pressure_end_to_end import _RoutedWorker, _walk, gateway_for

from harstream.simulator.phones import STANDARD_GRAVITY, PhoneHabits, phone_messages, replay_phones
from harstream.stream.data.recordings import Recording

pytestmark = pytest.mark.timeout(120)


def _recording(seconds: float, name: str = "r") -> Recording:
    t = np.arange(int(seconds * 50)) / 50
    return Recording(name, 1, _walk(t).astype(np.float32), np.ones(len(t), np.int16), 50.0, "test")


def _rows(messages, key: str) -> np.ndarray:
    return np.array([row for _, m in messages for row in m.get(key, [])])


def test_a_phone_sends_every_reading_once_in_time_order_and_in_its_units():
    rec = _recording(10.0)
    messages = phone_messages(rec.samples, None, PhoneHabits(rate_hz=100, jitter=0.3, seed=4), t0_ms=1e12)
    acc, gyro = _rows(messages, "acc"), _rows(messages, "gyro")
    assert len(acc) == len(gyro) == 998  # 9.98 s at 100 Hz
    assert np.all(np.diff(acc[:, 0]) >= 0) and np.ptp(np.diff(acc[:, 0])) > 2  # uneven, never backwards (ms)
    assert acc[0, 0] == pytest.approx(1e12, abs=3)
    gravity = np.linalg.norm(acc[:, 1:], axis=1).mean() / STANDARD_GRAVITY
    assert gravity == pytest.approx(np.linalg.norm(rec.samples[:, :3], axis=1).mean(), rel=0.01)  # m/s², not g
    assert np.abs(gyro[:, 1:]).max() > 20  # deg/s, not rad/s


def test_each_message_carries_the_readings_and_pressure_of_its_own_200_ms():
    rec = _recording(4.0)
    pressure = np.column_stack([np.arange(0, 4, 0.1), np.full(40, 1001.0)])
    messages = phone_messages(rec.samples, pressure, PhoneHabits(rate_hz=50, jitter=0.0), t0_ms=0.0)
    assert [at for at, _ in messages][:3] == [0.2, 0.4, 0.6]
    for at, m in messages:
        times = np.array([r[0] for r in m["acc"] + m.get("pressure", [])]) / 1000
        assert np.all((times >= at - 0.2 - 1e-9) & (times < at + 1e-9))
    assert len(_rows(messages, "pressure")) == 40


def test_the_gateway_turns_a_replayed_phone_back_into_the_recording():
    """The gateway's own parsing and resampling (no sockets): a 100 Hz phone
    with uneven timestamps comes out on the 50 Hz grid as the recording it
    was read from, within what linear interpolation loses."""
    from harstream.stream.gateway.phone_feeds import DeviceFeed
    from harstream.stream.gateway.phone_formats import parse_hello, parse_samples

    rec = _recording(20.0)
    t0 = time.time()
    messages = phone_messages(rec.samples, None, PhoneHabits(rate_hz=100, jitter=0.3, seed=1), t0_ms=t0 * 1000)
    hello = parse_hello({"type": "hello", "device": "p", "units": {"acc": "m/s2", "gyro": "deg/s"}})
    feed = DeviceFeed("phone:p", now=t0)
    out = [b for at, m in messages for b in feed.add(parse_samples(m, hello), t0 + at)]
    got = np.concatenate([b.samples for b in out])
    start = int(round((out[0].t0 - t0) * 50))
    want = rec.samples[start : start + len(got)]
    assert len(got) > 950
    assert np.abs(got - want).max() < 0.05  # g and rad/s; the walk is smooth at 50 Hz


def test_phones_replayed_through_a_real_gateway_get_a_label_for_every_window():
    from harstream.bench.phones import score_runs

    recs = [_recording(8.0, "a"), _recording(8.0, "b")]  # 5 windows each
    worker = _RoutedWorker()
    try:

        async def main():
            async with gateway_for(worker) as gw:
                return await replay_phones(f"ws://127.0.0.1:{gw.port}/ws", recs, PhoneHabits(), start_in_s=0.5)

        runs = asyncio.run(main())
    finally:
        worker.close()
    assert [r.device for r in runs] == ["replay-0", "replay-1"]
    assert all(r.welcome and r.welcome["bus_device"] == f"phone:{r.device}" for r in runs)
    windows = {r.device: sorted({p["t_end"] for p in r.predictions}) for r in runs}
    assert {d: len(w) for d, w in windows.items()} == {"replay-0": 5, "replay-1": 5}
    scored = score_runs(runs)
    assert scored["windows_received"] == scored["windows_expected"] == 10
    # the stand-in model calls every window downstairs; the phone has no barometer: WALKING, which is right
    assert scored["at_window_end"]["accuracy"] == 1.0 and scored["errors"] == 0


def test_harstream_simulate_sends_sessions_as_phones_through_a_gateway_and_prints_their_labels():
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = _RoutedWorker()
    exe = [sys.executable, "-m", "harstream"]
    gateway = subprocess.Popen(
        exe + ["gateway", "--port", str(port), "--ingest", worker.ingest, "--output", worker.output],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        url = f"ws://127.0.0.1:{port}/ws"
        done = subprocess.run(
            exe + ["simulate", "--gateway", url, "--subjects", "2", "--duration", "6"],
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        gateway.terminate()
        gateway.wait(20)
        worker.close()
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [x for x in done.stdout.splitlines() if "labels back" in x]
    assert len(lines) == 2  # subject 2 has two sessions: two phones
    assert all("phone:replay-" in x and ": 3 labels back" in x for x in lines), lines  # 6 s: 3 windows each


def test_harstream_simulate_refuses_a_gateway_address_that_is_not_a_websocket():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "harstream", "simulate", "--gateway", "http://127.0.0.1:1/ws", "--subjects", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "expected a ws:// or wss:// address" in done.stderr


def test_a_calibration_s_bouts_are_written_as_csv_files_harstream_calibrate_reads_back(tmp_path):
    from harstream.bench.phones import write_bouts
    from harstream.stream.data.recordings import load_csv

    rec = _recording(6.0)
    labels = np.full(300, -1, np.int16)
    labels[0:100], labels[150:250] = 1, 4  # a walk, a pause, a sit
    write_bouts(Recording("r", 3, rec.samples, labels, 50.0, "test"), tmp_path)
    back = sorted(load_csv(tmp_path).recordings, key=lambda r: r.name)
    assert [(r.subject, len(r.samples), set(r.labels.tolist())) for r in back] == [(3, 100, {1}), (3, 100, {4})]
    np.testing.assert_allclose(back[1].samples, rec.samples[150:250], atol=1e-5)
