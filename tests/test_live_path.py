"""The live path over real ZeroMQ sockets on loopback: simulator -> worker
(-> proxy) -> subscribers, with the worker and simulator in threads. Where a
part cannot report the port it bound (the proxy, a worker process), the bus is
an ipc:// path instead."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import zmq
from conftest import wait_for

from harstream.simulator.replay import ReplayDevice, ReplaySchedule, devices_for, replay
from harstream.stream.bus.zmq_worker import serve
from harstream.stream.core.activities import ACTIVITIES, label_name
from harstream.stream.core.pipeline import DevicePipeline
from harstream.stream.core.protocol import (
    REASONS,
    Prediction,
    SampleBatch,
    decode_output,
    encode_samples,
)
from harstream.stream.core.worker import WorkerConfig

ANY_PORT = "tcp://127.0.0.1:*"  # ZeroMQ binds a free port; the worker reports which


class Worker:
    """serve() in a thread, stopped on exit; ``result`` holds its final stats,
    ``ingest``/``output`` the addresses it bound."""

    def __init__(self, runtime, ingest=ANY_PORT, output=ANY_PORT, worker_id="w", **config):
        self.stop, self.ready, self.result = threading.Event(), threading.Event(), {}
        cfg = WorkerConfig(**config)

        def bound(ingest: str, output: str) -> None:
            self.ingest, self.output = ingest, output

        def run():
            self.result.update(
                serve(
                    runtime,
                    ACTIVITIES,
                    "tiny",
                    ingest=ingest,
                    output=output,
                    config=cfg,
                    worker_id=worker_id,
                    stop=self.stop,
                    stats_every=0.2,
                    on_ready=self.ready.set,
                    on_bound=bound,
                    printer=None,
                )
            )

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "worker did not start"

    def close(self) -> dict:
        self.stop.set()
        self.thread.join(30)
        return self.result


class Collector:
    """A subscriber on the output bus, read in a thread."""

    def __init__(self, address: str, verb: str = "connect"):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"p/")
        self.sock.setsockopt(zmq.SUBSCRIBE, b"stats/")
        getattr(self.sock, verb)(address)
        self.predictions: list[Prediction] = []
        self.stats: dict[str, dict] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            if self.sock.poll(50):
                msg = decode_output(self.sock.recv_multipart())
                if isinstance(msg, Prediction):
                    if not msg.between:  # windows, not the updates between them
                        self.predictions.append(msg)
                else:
                    self.stats[msg["worker"]] = msg

    def wait(self, condition, timeout: float = 120.0) -> bool:
        return wait_for(lambda: condition(self), timeout)

    def close(self):
        self._stop.set()
        self.thread.join(5)
        self.sock.close(0)
        self.ctx.term()


def offline_labels(artifact, samples: np.ndarray) -> list[str]:
    """The offline pipeline + model on one recording as it goes over the wire (float32)."""
    windows = DevicePipeline().push(np.asarray(samples, np.float32))
    return [ACTIVITIES[i] for i in artifact.model.predict(windows, verbose=0).argmax(1)]


def test_a_replayed_held_out_subject_is_labelled_like_the_offline_pipeline(tiny_lstm, embedded):
    artifact, runtime = tiny_lstm
    recordings = embedded.of_subjects([2])
    worker = Worker(runtime)
    ingest, output = worker.ingest, worker.output
    tail = Collector(output)
    try:
        assert tail.wait(lambda c: c.stats), "no stats from the worker"
        stats = replay(
            ReplaySchedule(devices_for(recordings), chunk=10),
            publish=ingest,
            speed=0,
            wait_subscriptions=1,
            printer=None,
        )
        expected = {r.name: offline_labels(artifact, r.samples) for r in recordings}
        total = sum(map(len, expected.values()))
        tail.wait(lambda c: len(c.predictions) >= total)
    finally:
        final = worker.close()
        tail.close()
    assert stats.drops == 0 and not final["drops"]
    for rec in recordings:
        got = sorted((p for p in tail.predictions if p.device == rec.name), key=lambda p: p.window)
        assert [p.window for p in got] == list(range(len(expected[rec.name])))
        assert [p.label for p in got] == expected[rec.name]
        assert [p.truth for p in got] == [label_name(int(rec.labels[64 * j + 127])) for j in range(len(got))]
        assert all(p.model == "tiny" and p.latency_ms >= 0 for p in got)


def test_a_context_model_is_served_each_window_with_its_past_over_the_real_bus(tmp_path, embedded):
    import keras

    from harstream.models.artifact import load_artifact, save_artifact
    from harstream.models.runtime import TfliteRuntime
    from harstream.stream.core.context import WindowContext

    keras.utils.set_random_seed(6)
    inp = keras.Input((3, 128, 9))  # the window and the windows 1 and 2 steps back
    x = keras.layers.Dense(6, activation="softmax")(keras.layers.Flatten()(keras.layers.AveragePooling2D((1, 16))(inp)))
    artifact = load_artifact(
        save_artifact(keras.Model(inp, x), {"architecture": "tiny", "context_steps": [1, 2]}, tmp_path / "ctx.keras")
    )
    runtime = TfliteRuntime(artifact, (1, 16))
    rec = embedded.of_subjects([2])[0]
    worker = Worker(runtime, context_steps=artifact.context_steps)
    tail = Collector(worker.output)
    try:
        assert tail.wait(lambda c: c.stats), "no stats from the worker"
        replay(
            ReplaySchedule(devices_for([rec]), chunk=25),
            publish=worker.ingest,
            speed=0,
            wait_subscriptions=1,
            printer=None,
        )
        stacks = WindowContext((1, 2)).push(DevicePipeline().push(np.asarray(rec.samples, np.float32)))
        expected = [ACTIVITIES[i] for i in artifact.model.predict(stacks, verbose=0).argmax(1)]
        tail.wait(lambda c: len(c.predictions) >= len(expected))
    finally:
        final = worker.close()
        tail.close()
    assert not final["drops"]
    got = sorted((p for p in tail.predictions if p.device == rec.name), key=lambda p: p.window)
    assert [p.label for p in got] == expected
    # the past matters to this model: single windows repeated as their own past label differently
    alone = np.repeat(DevicePipeline().push(np.asarray(rec.samples, np.float32))[:, None], 3, axis=1)
    assert [ACTIVITIES[i] for i in artifact.model.predict(alone, verbose=0).argmax(1)] != expected


def test_a_restarted_worker_recovers_within_one_window(tiny_lstm):
    _, runtime = tiny_lstm
    rng = np.random.default_rng(0)
    device = ReplayDevice("phone-1", rng.normal(0, 0.3, (3000, 6)).astype(np.float32), None)
    stop_sim = threading.Event()
    first = Worker(runtime, worker_id="first")
    ingest, output = first.ingest, first.output  # the restarted worker binds these again
    tail = Collector(output)
    sim = threading.Thread(
        target=replay,
        daemon=True,
        kwargs=dict(
            schedule=ReplaySchedule([device], chunk=10, loop=True),
            publish=ingest,
            speed=5,
            stop=stop_sim,
            wait_subscriptions=1,
            printer=None,
        ),
    )
    sim.start()
    try:
        assert tail.wait(lambda c: sum(p.worker == "first" for p in c.predictions) >= 2)
        first.close()
        second = Worker(runtime, ingest, output, worker_id="second")
        assert tail.wait(lambda c: sum(p.worker == "second" for p in c.predictions) >= 3)
        final = second.close()
    finally:
        stop_sim.set()
        sim.join(10)
        tail.close()
    totals = final["totals"]
    # The new worker starts at whatever seq arrives first and emits a window as
    # soon as it has 128 samples, then every 64: nothing lost beyond one window.
    assert totals["windows"] == (totals["samples"] - 128) // 64 + 1
    windows = [p.window for p in tail.predictions if p.worker == "second"]
    assert windows == list(range(windows[0], windows[0] + len(windows)))
    assert not final["drops"]


def hostile_messages() -> dict[str, list[list[bytes]]]:
    good = encode_samples(SampleBatch("intruder", 0, 1.0, np.ones((4, 6), np.float32), labels=np.ones(4, np.int16)))
    nan = np.ones((4, 6), np.float32)
    nan[1, 2] = np.inf
    return {
        "frame_count": [good[:2], [good[0]], good + [b"x"]],
        "topic": [[b"s/00/other/", good[1], good[2]]],
        "header": [[good[0], b"\x00\xff", good[2]], [good[0], b"1" * 100_000, good[2]], [good[0], b"[]", good[2]]],
        "version": [[good[0], good[1].replace(b'"v":1', b'"v":99'), good[2]]],
        "device": [[b"s/00/../", good[1].replace(b'"intruder"', b'"../"'), good[2]]],
        "byte_length": [[good[0], good[1], good[2] * 2], [good[0], good[1], b""]],
        "non_finite": [[good[0], good[1], nan.tobytes()]],
        "labels": [[good[0], good[1].replace(b"[1,1,1,1]", b'["a",1,1,1]'), good[2]]],
        "range": [[good[0], good[1], np.full((4, 6), 1e35, np.float32).tobytes()]],
        "time": [[good[0], good[1].replace(b'"t0":1.0', b'"t0":1e306'), good[2]]],
        "session": [[good[0], good[1].replace(b'"v":1', b'"v":1,"session":"a\\n"'), good[2]]],
        "pressure": [[good[0], good[1].replace(b'"v":1', b'"v":1,"pressure":"1013"'), good[2]]],
    }


def test_malformed_and_hostile_frames_are_counted_while_a_good_device_is_served(tiny_lstm):
    artifact, runtime = tiny_lstm
    good = ReplayDevice("good", np.random.default_rng(1).normal(0, 0.3, (1000, 6)).astype(np.float32), None)
    worker = Worker(runtime)
    ingest, output = worker.ingest, worker.output
    tail = Collector(output)
    ctx = zmq.Context()
    attacker = ctx.socket(zmq.XPUB)
    attacker.connect(ingest)
    try:
        assert attacker.poll(10_000), "the worker's subscription never arrived"
        sent = hostile_messages()
        for _ in range(3):
            for frames_list in sent.values():
                for frames in frames_list:
                    attacker.send_multipart(frames)
        replay(ReplaySchedule([good], chunk=7), publish=ingest, speed=0, wait_subscriptions=1, printer=None)
        expected = offline_labels(artifact, good.samples)
        want = {reason: 3 * len(frames) for reason, frames in sent.items()}
        assert tail.wait(
            lambda c: (
                len(c.predictions) >= len(expected)
                and all(c.stats.get("w", {}).get("drops", {}).get(r, 0) >= n for r, n in want.items())
            )
        )
    finally:
        final = worker.close()
        attacker.close(0)
        ctx.term()
        tail.close()
    assert [p.label for p in sorted(tail.predictions, key=lambda p: p.window)] == expected
    assert final["drops"] == want and set(want) == set(REASONS)
    assert "intruder" not in {p.device for p in tail.predictions}


def test_two_sharded_workers_behind_the_proxy_split_devices_without_overlap(tiny_lstm, ipc_address):
    from harstream.stream.bus.proxy import run_proxies

    _, runtime = tiny_lstm
    # The proxy binds all four and cannot say which ports it got: ipc paths nobody else holds.
    front_in, back_in, back_out, front_out = map(ipc_address, ("front-in", "back-in", "back-out", "front-out"))
    stop_proxy, proxy_ready = threading.Event(), threading.Event()
    proxy = threading.Thread(
        target=run_proxies,
        daemon=True,
        kwargs=dict(
            ingest=front_in,
            ingest_backend=back_in,
            output=front_out,
            output_backend=back_out,
            stop=stop_proxy,
            on_ready=proxy_ready.set,
        ),
    )
    proxy.start()
    assert proxy_ready.wait(10)
    workers = [Worker(runtime, ">" + back_in, ">" + back_out, worker_id=f"w{k}", shard=(k, 2)) for k in range(2)]
    tail = Collector(front_out)
    rng = np.random.default_rng(2)
    devices = [
        ReplayDevice(f"dev-{i}", rng.normal(0, 0.3, (128 + 64 * 3, 6)).astype(np.float32), None) for i in range(12)
    ]
    try:
        assert tail.wait(lambda c: len(c.stats) == 2), "stats of both workers never arrived"
        replay(ReplaySchedule(devices, chunk=16), publish=front_in, speed=0, wait_subscriptions=64, printer=None)
        assert tail.wait(lambda c: len(c.predictions) >= 12 * 4)
        time.sleep(0.5)  # anything processed twice would arrive now
    finally:
        finals = [w.close() for w in workers]
        tail.close()
        stop_proxy.set()
        proxy.join(10)
    by_worker = {w: {p.device for p in tail.predictions if p.worker == w} for w in ("w0", "w1")}
    assert by_worker["w0"] and by_worker["w1"] and not by_worker["w0"] & by_worker["w1"]
    assert by_worker["w0"] | by_worker["w1"] == {d.device for d in devices}
    assert sorted((p.device, p.window) for p in tail.predictions) == sorted(
        (d.device, j) for d in devices for j in range(4)
    )
    assert all(not f["drops"] for f in finals)


def test_the_cli_commands_find_each_other_with_default_flags(ipc_address):
    """simulate, worker and tail started with no address flags (the defaults come
    from the environment here; ipc paths, since the worker process cannot tell
    the others a port it picked)."""
    env = {**os.environ, "HARSTREAM_INGEST": ipc_address("ingest"), "HARSTREAM_OUTPUT": ipc_address("output")}
    exe = [sys.executable, "-m", "harstream"]
    procs = []
    try:
        tail = subprocess.Popen(exe + ["tail", "--count", "5"], env=env, stdout=subprocess.PIPE, text=True)
        procs.append(tail)
        procs.append(
            subprocess.Popen(
                exe + ["worker", "--runtime", "none", "--stats-every", "1"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(
                exe + ["simulate", "--subjects", "2", "--speed", "0", "--loop", "--duration", "120"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        out, _ = tail.communicate(timeout=180)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(20)
    lines = [line for line in out.splitlines() if line.startswith("exp")]
    assert len(lines) == 5 and all("truth" in line for line in lines)
