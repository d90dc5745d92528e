"""Faults around a running worker, over real ZeroMQ on loopback: a
subscriber that never reads, and a worker killed with SIGKILL and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import zmq
from conftest import wait_for, worker_thread

from harstream.models.runtime import NullRuntime
from harstream.simulator.replay import ReplayDevice, ReplaySchedule, replay
from harstream.stream.bus.zmq_worker import serve
from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.protocol import Prediction, decode_output
from harstream.stream.core.worker import WorkerConfig


class Reader:
    """A subscriber on the output bus that reads everything, in a thread."""

    def __init__(self, ctx: zmq.Context, address: str):
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"p/")
        self.sock.setsockopt(zmq.SUBSCRIBE, b"stats/")
        self.sock.connect(address)
        self.predictions: list[Prediction] = []
        self.stats: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(50):
                msg = decode_output(self.sock.recv_multipart())
                if isinstance(msg, Prediction):
                    if not msg.between:  # windows, not the display-only updates between them
                        self.predictions.append(msg)
                else:
                    self.stats.append(msg)

    def wait(self, condition, timeout: float = 60.0) -> bool:
        return wait_for(lambda: condition(self), timeout)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)


def devices(count: int, seed: int = 0) -> list[ReplayDevice]:
    rng = np.random.default_rng(seed)
    return [ReplayDevice(f"dev-{i}", rng.normal(0, 0.3, (1000, 6)).astype(np.float32), None) for i in range(count)]


def start_replay(devs, ingest: str, speed: float, stop: threading.Event) -> threading.Thread:
    sim = threading.Thread(
        target=replay,
        daemon=True,
        kwargs=dict(
            schedule=ReplaySchedule(devs, chunk=10, loop=True),
            publish=ingest,
            speed=speed,
            stop=stop,
            wait_subscriptions=1,
            printer=None,
        ),
    )
    sim.start()
    return sim


def test_a_stuck_subscriber_loses_its_own_output_while_others_and_stats_flow(ipc_address):
    ingest, output = ipc_address("in"), ipc_address("out")
    with worker_thread(
        NullRuntime(6),
        ingest=ingest,
        output=output,
        config=WorkerConfig(signal_interval=0.1),
        stats_every=0.1,
        sndhwm=20,
    ) as w:
        ctx = zmq.Context()
        stuck = ctx.socket(zmq.SUB)  # subscribes to everything and never reads
        stuck.setsockopt(zmq.RCVHWM, 10)
        stuck.setsockopt(zmq.RCVBUF, 4096)
        stuck.setsockopt(zmq.SUBSCRIBE, b"")
        stuck.connect(output)
        reader = Reader(ctx, output)
        stop_sim = threading.Event()
        sim = start_replay(devices(20), ingest, speed=5, stop=stop_sim)
        try:
            assert reader.wait(lambda r: r.stats and r.stats[-1]["drops"].get("output_hwm", 0) > 0), (
                "the stuck subscriber never filled up"
            )
            seen, stats_seen = len(reader.predictions), len(reader.stats)
            lost = reader.stats[-1]["drops"]["output_hwm"]
            # the other subscriber goes on getting predictions and stats, which
            # show the stuck one's losses growing
            assert reader.wait(lambda r: len(r.predictions) >= seen + 40 and len(r.stats) >= stats_seen + 5, timeout=20)
            assert reader.stats[-1]["drops"]["output_hwm"] > lost
        finally:
            stop_sim.set()
            sim.join(10)
            reader.close()
            stuck.close(0)
            ctx.term()
    assert not w.thread.is_alive()


def lost_windows(before: list[Prediction], after: list[Prediction]) -> int:
    """Windows of one device's 64-sample grid missing between the last window
    one worker labelled and the first its successor did."""
    last, first = max(p.t_end for p in before), min(p.t_end for p in after)
    return int(round((first - last) * 50) // 64) - 1


def test_a_worker_killed_and_restarted_builds_its_first_windows_from_the_replayed_tail(ipc_address):
    """The producer keeps each device's last window of messages and sends them
    again when the restarted worker's subscription arrives (tail replay), so
    started, and at most one window per device goes unlabelled when the
    restart takes less than the tail's 2.56 s (a window more for every 1.28 s
    the restart took beyond that: those samples are older than the tail)."""
    env = {**os.environ, "HARSTREAM_INGEST": ipc_address("in"), "HARSTREAM_OUTPUT": ipc_address("out")}
    cmd = [sys.executable, "-m", "harstream", "worker", "--runtime", "none", "--stats-every", "60"]

    def start_worker() -> subprocess.Popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_bound(proc: subprocess.Popen) -> None:
        """Until the worker logs its bound addresses (its subscription follows at once); then drain its log."""
        assert proc.stderr is not None
        for line in proc.stderr:
            if "ingest" in line:
                break
        threading.Thread(target=proc.stderr.read, daemon=True).start()

    ctx = zmq.Context()
    reader = Reader(ctx, env["HARSTREAM_OUTPUT"])
    devs = devices(4, seed=1)
    stop_sim = threading.Event()
    first = start_worker()
    second = None
    sim = start_replay(devs, env["HARSTREAM_INGEST"], speed=1, stop=stop_sim)
    names = [d.device for d in devs]
    try:
        assert reader.wait(lambda r: all(sum(p.device == n for p in r.predictions) >= 2 for n in names), 90)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed = time.time()
        before = list(reader.predictions)
        second = start_worker()
        wait_bound(second)
        started = time.time()  # sample times are wall-clock times at speed 1
        assert reader.wait(
            lambda r: all(sum(p.device == n for p in r.predictions[len(before) :]) >= 2 for n in names), 90
        )
        after = reader.predictions[len(before) :]
    finally:
        stop_sim.set()
        sim.join(10)
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(20)
        reader.close()
        ctx.term()
    beyond_tail = max(0.0, started - killed - 128 / 50)  # seconds of samples the tail no longer held
    for name in names:
        mine_before = [p for p in before if p.device == name]
        mine_after = [p for p in after if p.device == name]
        assert lost_windows(mine_before, mine_after) <= 1 + int(np.ceil(beyond_tail / (64 / 50))), name
        # its first window holds samples published before the new worker was listening: the replayed
        # tail (without it the first window starts after the worker subscribed, so after `started`)
        assert min(p.t_start for p in mine_after) < started, name
        # no burst of old windows: the successor's come in order, one per 64 samples
        ends = sorted(p.t_end for p in mine_after)
        assert np.allclose(np.diff(ends), 64 / 50, atol=1e-3)


# ------------------------------------------------------------------ authentication


def test_off_loopback_the_worker_refuses_to_start_without_keys():
    import pytest

    from harstream.stream.bus.auth import BusAuthError

    with pytest.raises(BusAuthError, match="0.0.0.0.*harstream keys"):
        serve(NullRuntime(6), ACTIVITIES, "none", ingest="tcp://0.0.0.0:*", output="tcp://127.0.0.1:*", printer=None)


def test_with_curve_keys_only_a_keyed_producer_reaches_the_worker(tmp_path):
    from harstream.stream.bus.auth import generate_keys

    keys = tmp_path / "keys"
    generate_keys(keys)
    stranger = tmp_path / "stranger"  # a well-formed key folder the worker does not trust
    generate_keys(stranger)
    (stranger / "bus.key").write_bytes((keys / "bus.key").read_bytes())
    with worker_thread(NullRuntime(6), stats_every=0.1, keys=str(keys)) as w:
        from harstream.stream.bus.auth import secure

        ctx = zmq.Context()
        out = ctx.socket(zmq.SUB)
        out.setsockopt(zmq.SUBSCRIBE, b"p/")
        secure(out, w.output, "connect", keys)
        out.connect(w.output)
        stop_sims = threading.Event()
        sims = []
        for name, folder in (("keyed", keys), ("stranger", stranger), ("open", None)):
            dev = ReplayDevice(name, np.random.default_rng(0).normal(0, 0.3, (400, 6)).astype(np.float32), None)
            sim = threading.Thread(
                target=replay,
                daemon=True,
                kwargs=dict(
                    schedule=ReplaySchedule([dev], chunk=10, loop=True),
                    publish=w.ingest,
                    speed=4,
                    stop=stop_sims,
                    printer=None,
                    keys=None if folder is None else str(folder),
                ),
            )
            sim.start()
            sims.append(sim)
        seen: set[str] = set()
        try:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                if out.poll(100):
                    seen.add(decode_output(out.recv_multipart()).device)
        finally:
            stop_sims.set()
            for sim in sims:
                sim.join(10)
            out.close(0)
            ctx.term()
        assert seen == {"keyed"}
