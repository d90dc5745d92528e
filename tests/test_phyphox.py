"""The gateway reads a phyphox phone (``--connect http://PHONE:8080``) by asking
its remote-access API what is new, as the app's own web page does. The phone
here is a stand-in HTTP server on 127.0.0.1 that answers ``/config`` and
``/get`` as phyphox's ``RemoteServer`` does (threshold ``T`` and ``T|time``,
values formatted to 8 significant digits, a session id)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest
from test_gateway import check_against_truth, jittered, truth

from harstream.cli import main
from harstream.stream.gateway.phone_formats import FormatError, phyphox_buffers
from harstream.stream.gateway.phyphox_client import PhyphoxPoll

G = 9.80665
pytestmark = pytest.mark.timeout(120)

SIMPLE_EXPERIMENT = {  # what phyphox's "simple experiment" with Accelerometer and Gyroscope declares
    "title": "harstream",
    "buffers": [
        {"name": n, "size": 0} for n in ("acc_time", "accX", "accY", "accZ", "gyr_time", "gyrX", "gyrY", "gyrZ")
    ],
    "inputs": [
        {"source": "accelerometer", "outputs": [{"x": "accX"}, {"y": "accY"}, {"z": "accZ"}, {"t": "acc_time"}]},
        {"source": "gyroscope", "outputs": [{"x": "gyrX"}, {"y": "gyrY"}, {"z": "gyrZ"}, {"t": "gyr_time"}]},
    ],
}


class StandInPhyphox:
    """A phone running a phyphox experiment since ``start``: its buffers hold the
    readings whose experiment time has passed."""

    def __init__(self, config: dict, seconds: float = 30.0):
        self.config = config
        self.start = time.monotonic()
        t_acc, t_gyro = jittered(100, 0.0, seconds, 11), jittered(100, 0.0, seconds, 12)
        self.buffers = {
            "acc_time": t_acc,
            "gyr_time": t_gyro,
            **{f"acc{a}": truth(t_acc)[:, k] * G for k, a in enumerate("XYZ")},
            **{f"gyr{a}": truth(t_gyro)[:, 3 + k] for k, a in enumerate("XYZ")},
        }
        self.served: dict[str, list[float]] = {"acc_time": [], "gyr_time": []}  # times sent after the first ask
        self.asks: list[str] = []
        self.backlog = 0.0  # seconds the next partial answer reaches back (a phone flushing what it held)

    def answer(self, path: str) -> dict:
        self.asks.append(path)
        parts = urlsplit(path)
        if parts.path == "/config":
            return self.config
        now = time.monotonic() - self.start
        out = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name not in self.buffers:
                continue  # phyphox skips a buffer the experiment does not have
            ref = value.split("|")[1] if "|" in value else name
            t = self.buffers[_time_of(name)]
            available = t <= now
            values, ref_values = self.buffers[name][available], self.buffers[ref][available]
            if value == "":
                chosen, mode = values[-1:], "single"
            else:
                threshold = float(value.split("|")[0]) - self.backlog
                chosen, mode = values[ref_values > threshold], "partial"
                if name in self.served:
                    self.served[name] += chosen.tolist()
            # phyphox's DecimalFormat("0.#######E0"): 8 significant digits
            out[name] = {"size": 0, "updateMode": mode, "buffer": [float(f"{v:.7e}") for v in chosen]}
        if any(o["updateMode"] == "partial" for o in out.values()):
            self.backlog = 0.0
        return {"buffer": out, "status": {"session": "5a3c", "measuring": True, "timedRun": False, "countDown": 0}}


def _time_of(name: str) -> str:
    return "acc_time" if name.startswith("acc") else "gyr_time"


@contextlib.contextmanager
def serving(phone: StandInPhyphox):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = json.dumps(phone.answer(self.path)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_phyphox_phone_is_polled_and_reaches_the_bus_as_50hz_samples_in_g_and_rad_s(running_gateway):
    phone = StandInPhyphox(SIMPLE_EXPERIMENT)

    async def main():
        with serving(phone) as url:
            async with running_gateway(connect=[url], device="phy-1") as (gw, tap):
                got = await tap.collect("phone:phy-1", 3 * 50)
        assert phone.asks[0] == "/config"
        first = max(min(phone.served["acc_time"]), min(phone.served["gyr_time"]))
        # bus times are the gateway's clock; the first sample is at the later sensor's first new reading
        check_against_truth(got, lambda t: t - got[0].t0 + first, atol=0.02)

    asyncio.run(main())


def test_a_phyphox_experiment_of_the_accelerometer_alone_is_served_without_a_gyroscope(running_gateway):
    acc_only = {"inputs": SIMPLE_EXPERIMENT["inputs"][:1]}  # phyphox's "Acceleration (with g)"
    phone = StandInPhyphox(acc_only)

    async def main():
        with serving(phone) as url:
            async with running_gateway(connect=[url], device="phy-3") as (gw, tap):
                got = await tap.collect("phone:phy-3", 2 * 50)
        assert not any("gyr" in ask for ask in phone.asks)
        samples = np.concatenate([b.samples for b in got])
        assert np.all(samples[:, 3:] == 0.0)  # served from the accelerometer alone: the gyroscope channels read 0
        assert abs(samples[:, 1].mean() - 1.0) < 0.1  # gravity on y, in g

    asyncio.run(main())


def test_a_phyphox_experiment_without_gravity_is_refused_saying_which_to_run(running_gateway):
    linear = {
        "inputs": [
            {
                "source": "linear_acceleration",
                "outputs": [{"x": "accX"}, {"y": "accY"}, {"z": "accZ"}, {"t": "acc_time"}],
            }
        ]
    }
    phone = StandInPhyphox(linear)

    async def main():
        with serving(phone) as url:
            async with running_gateway(connect=[url], device="phy-2") as (gw, tap):
                async with asyncio.timeout(10):
                    while not gw.rejects["fields"]:
                        await asyncio.sleep(0.05)
        assert all(path == "/config" for path in phone.asks)  # nothing read from an experiment we cannot use

    asyncio.run(main())
    with pytest.raises(FormatError, match='gravity removed; run phyphox\'s "Acceleration with g"'):
        phyphox_buffers(linear)


def test_a_phyphox_answer_larger_than_a_message_is_counted_and_reading_goes_on_from_the_newest(running_gateway):
    phone = StandInPhyphox(SIMPLE_EXPERIMENT)
    phone.start -= 20  # the phone has recorded 20 s before the gateway asks: it starts from the newest

    async def main():
        with serving(phone) as url:
            async with running_gateway(connect=[url], device="phy-4", max_message=4096) as (gw, tap):
                await tap.collect("phone:phy-4", 50)
                assert not gw.rejects["too_large"]
                phone.backlog = 10.0  # then one answer holds 10 s: too large for a message
                async with asyncio.timeout(10):
                    while not gw.rejects["too_large"]:
                        await asyncio.sleep(0.05)
                before = sum(len(b) for b in tap.batches if b.device == "phone:phy-4")
                got = await tap.collect("phone:phy-4", before + 50)  # and reading goes on
        assert phone.served["acc_time"][0] > 19.0  # nothing of the 20 s before it began reading
        assert sum(len(b) for b in got) >= before + 50

    asyncio.run(main())


def test_a_phyphox_session_that_restarts_is_read_again_from_its_start():
    poll = PhyphoxPoll({"acc": ("t", "x", "y", "z")})

    def answer(times, session):
        values = {"t": times, "x": [0.0] * len(times), "y": [G] * len(times), "z": [0.0] * len(times)}
        return {"buffer": {k: {"buffer": v} for k, v in values.items()}, "status": {"session": session}}

    assert len(poll.take(answer([30.0], "a"))) == 0  # the first answer only says where the phone's time is
    assert poll.take(answer([30.01, 30.02], "a")).acc_t.tolist() == [30.01, 30.02]
    assert "t=30.02" in poll.query()
    poll.take(answer([], "b"))  # cleared on the phone: a new session counts from 0
    assert "t=-1.0" in poll.query()
    assert poll.take(answer([0.01, 0.02], "b")).acc_t.tolist() == [0.01, 0.02]


@pytest.mark.parametrize("address", ["ftp://phone:21", "phone:8080", "http://:8080"])
def test_a_connect_address_that_is_no_phone_is_a_usage_error(address, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["gateway", "--connect", address])
    assert stopped.value.code == 2
    assert "expected ws://PHONE:8080 (SensorServer) or http://PHONE:8080 (phyphox)" in capsys.readouterr().err
