"""The durable log on a real redis-server (Unix socket, started here): the
bridge moves bus messages into partition streams, workers own partitions by
lease, a killed worker's partitions are taken over from the log, and the
predictions are exactly one per (device, window)."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for
from test_live_path import Collector

from harstream.simulator.replay import ReplaySchedule, devices_for, replay
from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.pipeline import DevicePipeline
from harstream.stream.core.stairs import STAIRS
from harstream.stream.durable.bridge import serve_bridge
from harstream.stream.durable.broker import Keys, connect, start_redis
from harstream.stream.durable.leases import Fenced, Leases
from harstream.stream.durable.redis_worker import LogConfig, serve_redis

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (`make redis` installs Debian's package)",
)

PARTITIONS = 12


class Bridge:
    """serve_bridge in a thread; ``ingest`` is the address it bound."""

    def __init__(self, url: str, ingest: str = "tcp://127.0.0.1:*"):
        self.stop, ready = threading.Event(), threading.Event()

        def bound(address: str) -> None:
            self.ingest = address
            ready.set()

        self.thread = threading.Thread(
            target=serve_bridge,
            daemon=True,
            kwargs=dict(url=url, ingest=ingest, partitions=PARTITIONS, stop=self.stop, printer=None, on_ready=bound),
        )
        self.thread.start()
        assert ready.wait(20), "bridge did not start"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(20)


class LogWorker:
    """serve_redis in a thread, publishing to ``output`` (connected)."""

    def __init__(self, runtime, url: str, output: str, worker_id: str, context_steps=(), router=None, personal=None):
        from harstream.stream.core.worker import WorkerConfig

        self.stop, ready, self.result = threading.Event(), threading.Event(), {}

        def run():
            self.result.update(
                serve_redis(
                    runtime,
                    ACTIVITIES,
                    "tiny",
                    url,
                    output=">" + output,
                    worker_id=worker_id,
                    stop=self.stop,
                    config=WorkerConfig(context_steps=context_steps, signal_interval=0),
                    log_config=LogConfig(partitions=PARTITIONS),
                    stats_every=0.2,
                    on_ready=ready.set,
                    printer=None,
                    router=router,
                    personal=personal,
                )
            )

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(20), f"worker {worker_id} did not start"

    def close(self) -> dict:
        self.stop.set()
        self.thread.join(30)
        return self.result


def owners(url: str) -> Counter:
    """Partitions per lease holder."""
    holders = Leases(connect(url), Keys(), 600).holders(PARTITIONS)
    return Counter(h.split()[0] for h in holders if h)


def keys_seen(predictions) -> tuple[Counter, dict[str, list[int]]]:
    count = Counter((p.device, p.window) for p in predictions)
    by_device: dict[str, list[int]] = {}
    for device, window in count:
        by_device.setdefault(device, []).append(window)
    return count, {d: sorted(w) for d, w in by_device.items()}


def test_bridge_and_two_workers_label_a_replayed_subject_like_the_offline_pipeline(redis_url, tiny_lstm, ipc_address):
    artifact, runtime = tiny_lstm
    recordings = [
        r for r in __import__("harstream.stream.data.recordings", fromlist=["x"]).load_embedded().of_subjects([2])
    ]
    out = ipc_address("out")
    tail = Collector(out, verb="bind")
    bridge = Bridge(redis_url)
    workers = [LogWorker(runtime, redis_url, out, f"w{i}") for i in range(2)]
    try:
        assert wait_for(lambda: sorted(owners(redis_url).values()) == [6, 6]), owners(redis_url)
        replay(
            ReplaySchedule(devices_for(recordings), chunk=10),
            publish=bridge.ingest,
            speed=0,
            wait_subscriptions=1,
            printer=None,
        )
        windows = {r.name: DevicePipeline().push(np.asarray(r.samples, np.float32)) for r in recordings}
        expected = {
            name: [ACTIVITIES[i] for i in artifact.model.predict(w, verbose=0).argmax(1)] for name, w in windows.items()
        }
        total = sum(map(len, expected.values()))
        tail.wait(lambda c: len(c.predictions) >= total, timeout=60)
    finally:
        finals = [w.close() for w in workers]
        bridge.close()
        tail.close()
    assert {p.worker for p in tail.predictions} <= {"w0", "w1"}
    for name, labels in expected.items():
        got = sorted((p for p in tail.predictions if p.device == name), key=lambda p: p.window)
        assert [p.window for p in got] == list(range(len(labels)))
        assert [p.label for p in got] == labels
    assert all(not f["drops"] for f in finals), [f["drops"] for f in finals]
    # and the durable copies: one entry per window in the capped stream, the last one per device in the hash
    client = connect(redis_url)
    assert client.xlen(Keys().predictions) == total
    assert {k.decode() for k in client.hkeys(Keys().latest)} == set(expected)


def test_a_worker_killed_with_sigkill_is_taken_over_within_one_window_without_lost_or_duplicated_windows():
    from harstream.bench.failover import measure_failover

    result = measure_failover(devices=24, workers=2, before=4.0, after=4.0, speed=2.0, runtime="none", subjects=(2,))
    assert result["orphaned_devices"] > 0 and result["by_worker"].get("w1", 0) > 0
    assert result["lost_windows"] == 0 and result["stalled_devices"] == 0
    assert result["duplicate_windows"] == 0
    assert result["devices"] == 24
    assert result["takeover_s"] < 1.28, result


def test_a_joining_worker_takes_partitions_and_every_window_is_predicted_once(redis_url, ipc_address):
    from harstream.models.runtime import NullRuntime
    from harstream.stream.data.recordings import load_embedded

    out = ipc_address("out")
    tail = Collector(out, verb="bind")
    bridge = Bridge(redis_url)
    first = LogWorker(NullRuntime(6), redis_url, out, "w0")
    stop = threading.Event()
    devices = devices_for(load_embedded().of_subjects([2]), 12)
    sim = threading.Thread(
        target=replay,
        daemon=True,
        kwargs=dict(
            schedule=ReplaySchedule(devices, chunk=10, loop=True),
            publish=bridge.ingest,
            speed=4.0,
            stop=stop,
            printer=None,
        ),
    )
    second = None
    try:
        assert wait_for(lambda: owners(redis_url) == {"w0": PARTITIONS})
        sim.start()
        assert tail.wait(lambda c: len({p.device for p in c.predictions}) == len(devices), timeout=30)
        second = LogWorker(NullRuntime(6), redis_url, out, "w1")
        assert wait_for(lambda: owners(redis_url) == {"w0": 6, "w1": 6}), owners(redis_url)
        joined = len(tail.predictions)
        assert tail.wait(lambda c: sum(p.worker == "w1" for p in c.predictions[joined:]) >= 50, timeout=30)
    finally:
        stop.set()
        sim.join(10)
        time.sleep(1.0)
        second and second.close()
        first.close()
        bridge.close()
        tail.close()
    count, windows = keys_seen(tail.predictions)
    assert [k for k, c in count.items() if c > 1] == []
    assert {d: len(w) for d, w in windows.items()} == {d: max(w) - min(w) + 1 for d, w in windows.items()}
    assert len(windows) == len(devices)


def test_a_stale_owner_cannot_write_after_its_lease_moved_and_a_replayed_window_is_not_written_twice(redis_url):
    client = connect(redis_url)
    leases = Leases(client, Keys(), ttl_ms=100)
    old = leases.acquire(3, "old")
    row = ("d1", 7, {"device": "d1", "window": 7}, {"w": 7, "recent": []})
    assert leases.commit(old, [row], maxlen=100) == (1, 0)
    time.sleep(0.2)  # the old owner stalls past its lease
    new = leases.acquire(3, "new")
    assert new.epoch == old.epoch + 1
    with pytest.raises(Fenced):
        leases.commit(old, [("d1", 8, {}, {"w": 8, "recent": []})], maxlen=100)
    assert leases.commit(new, [row, ("d1", 8, {}, {"w": 8, "recent": []})], maxlen=100) == (1, 1)
    assert client.xlen(Keys().predictions) == 2


def test_a_progress_record_not_led_by_its_window_still_bounds_what_is_committed(redis_url):
    """The commit script reads ``{"w":N,...}`` without decoding the record; any other
    spelling of a record (keys in another order, stdlib spacing) is decoded as before."""
    client = connect(redis_url)
    keys = Keys("hs-spelling")
    leases = Leases(client, keys, ttl_ms=5000)
    lease = leases.acquire(0, "w")
    client.hset(keys.progress(0), "a", json.dumps({"m": "waist", "w": 9, "recent": []}))
    client.hset(keys.progress(0), "b", json.dumps({"w": 9, "recent": []}))  # '{"w": 9' with a space
    rows = [(d, w, {"device": d, "window": w}, {"w": w, "recent": []}) for d in "ab" for w in (9, 10)]
    assert leases.commit(lease, rows, maxlen=100) == (2, 2)
    assert sorted(json.loads(client.hget(keys.progress(0), d))["w"] for d in "ab") == [10, 10]


def test_bridge_and_worker_ride_out_a_broker_restart(ipc_address):
    from harstream.models.runtime import NullRuntime
    from harstream.stream.data.recordings import load_embedded

    folder = Path(tempfile.mkdtemp(prefix="hs-redis-"))
    proc, url = start_redis(folder, unix_socket=folder / "redis.sock")
    out = ipc_address("out")
    tail = Collector(out, verb="bind")
    bridge = Bridge(url)
    worker = LogWorker(NullRuntime(6), url, out, "w0")
    stop = threading.Event()
    sim = threading.Thread(
        target=replay,
        daemon=True,
        kwargs=dict(
            schedule=ReplaySchedule(devices_for(load_embedded().of_subjects([2]), 4), chunk=10, loop=True),
            publish=bridge.ingest,
            speed=4.0,
            stop=stop,
            printer=None,
        ),
    )
    try:
        sim.start()
        assert tail.wait(lambda c: len(c.predictions) >= 20, timeout=30)
        proc.kill()
        proc.wait()
        time.sleep(1.0)  # both keep running while the broker is away
        assert bridge.thread.is_alive() and worker.thread.is_alive()
        before = len(tail.predictions)
        proc, url = start_redis(folder, unix_socket=folder / "redis.sock")
        assert tail.wait(lambda c: len(c.predictions) >= before + 20, timeout=30), "no predictions after the restart"
    finally:
        stop.set()
        sim.join(10)
        final = worker.close()
        bridge.close()
        tail.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    assert final["broker"]["broker_errors"] > 0


# ------------------------------------------------------------------ modes on the log


class Producer:
    """Streams devices into the bridge's ingest bus once the bridge's subscription
    has arrived, and keeps what it sent (to compute the offline answer)."""

    def __init__(self, address: str):
        import zmq

        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.connect(address)
        assert self.pub.poll(20_000), "the bridge never subscribed"
        self.pub.recv()
        self.sent: dict[str, list[np.ndarray]] = {}
        self.rng = np.random.default_rng(3)
        self.t0 = time.time()

    def send(self, devices: dict[str, dict], chunks: int = 1) -> None:
        """``chunks`` messages of 64 samples for each device (``{device: meta}``)."""
        from harstream.stream.core.protocol import SampleBatch, encode_samples

        for _ in range(chunks):
            for device, meta in devices.items():
                seq = 64 * len(self.sent.setdefault(device, []))
                samples = self.rng.normal(0, 0.3, (64, 6)).astype(np.float32)
                self.pub.send_multipart(
                    encode_samples(SampleBatch(device, seq, self.t0 + seq / 50, samples, meta=meta))
                )
                self.sent[device].append(samples)

    def offline_labels(self, device: str, artifact, classes, start_window: int = 0) -> list[str]:
        """The labels of the device's windows by the offline pipeline started
        at window ``start_window`` (as a rebuild starts it), for windows from there on."""
        samples = np.concatenate(self.sent[device])[start_window * 64 :]
        windows = DevicePipeline().push(samples)
        return [classes[i] for i in artifact.model.predict(windows, verbose=0).argmax(1)]

    def close(self) -> None:
        self.pub.close(0)
        self.ctx.term()


@pytest.fixture(scope="module")
def two_modes(tiny_lstm, tmp_path_factory):
    """The tiny LSTM in waist mode and a tiny placement-free model (other classes) in any mode."""
    from test_routing_live import tiny_artifact

    from harstream.models.artifact import load_artifact
    from harstream.models.runtime import KerasRuntime
    from harstream.stream.core.activities import PLACEMENT_FREE
    from harstream.stream.core.model_routing import ServedModel

    waist_artifact, waist_runtime = tiny_lstm
    any_artifact = load_artifact(
        tiny_artifact(tmp_path_factory.mktemp("any"), "anywhere", PLACEMENT_FREE, placement="any")
    )
    waist = ServedModel("waist", "waist", waist_artifact.model_id, ACTIVITIES, runtime=waist_runtime)
    anywhere = ServedModel("any", "any", any_artifact.model_id, PLACEMENT_FREE, runtime=KerasRuntime(any_artifact))
    return (waist, waist_artifact), (anywhere, any_artifact)


# a replay-like device (waist), one declaring any placement, a gateway phone (any by its
# namespace) and a gateway phone declaring the waist
MODE_DEVICES = {"rec-1": {}, "watch-1": {"placement": "any"}, "phone:p1": {}, "phone:belt": {"placement": "waist"}}
EXPECTED_MODE = {"rec-1": "waist", "watch-1": "any", "phone:p1": "any", "phone:belt": "waist"}


def check_modes(predictions, producer, two_modes, rebuilt_from: int | None = None) -> None:
    """Every device's windows once each, numbered from 0, labelled by its
    mode's model as offline; from window ``rebuilt_from`` on (the first after a
    takeover) as offline from where the rebuild restarts the pipeline."""
    (waist, waist_artifact), (anywhere, any_artifact) = two_modes
    by_mode = {"waist": (waist, waist_artifact), "any": (anywhere, any_artifact)}
    for device, mode in EXPECTED_MODE.items():
        served, artifact = by_mode[mode]
        got = sorted((p for p in predictions if p.device == device), key=lambda p: p.window)
        assert {(p.mode, p.model, tuple(p.classes)) for p in got} == {(mode, served.model_id, served.classes)}, device
        assert [p.window for p in got] == list(range(len(got)))
        expected = producer.offline_labels(device, artifact, served.classes)
        if rebuilt_from is not None:
            restart = rebuilt_from - LogConfig().warmup_windows  # the model has no context windows
            expected[rebuilt_from:] = producer.offline_labels(device, artifact, served.classes, restart)[
                rebuilt_from - restart :
            ]
        if mode == "any":  # no barometer, no calibration, no gait score: stairs need evidence, so moving is WALKING
            expected = ["WALKING" if label in STAIRS else label for label in expected]
        assert [p.label for p in got] == expected[: len(got)], device


def test_one_durable_worker_serves_each_device_by_the_model_of_its_mode(redis_url, ipc_address, two_modes):
    from harstream.stream.core.model_routing import ModelRouter

    (waist, _), (anywhere, _) = two_modes
    out = ipc_address("out")
    tail = Collector(out, verb="bind")
    bridge = Bridge(redis_url)
    worker = LogWorker(None, redis_url, out, "w0", router=ModelRouter(waist, anywhere))
    producer = Producer(bridge.ingest)
    try:
        assert wait_for(lambda: owners(redis_url) == {"w0": PARTITIONS})
        producer.send(MODE_DEVICES, chunks=8)  # 512 samples: windows 0..6 of each device
        assert tail.wait(lambda c: len(c.predictions) >= 7 * len(MODE_DEVICES), timeout=60), len(tail.predictions)
    finally:
        final = worker.close()
        producer.close()
        bridge.close()
        tail.close()
    check_modes(tail.predictions, producer, two_modes)
    assert len(tail.predictions) == 7 * len(MODE_DEVICES)
    assert not final["drops"], final["drops"]
    assert {m["key"]: m["model"] for m in final["models"]} == {"waist": waist.model_id, "any": anywhere.model_id}


def test_a_worker_taking_partitions_over_serves_their_devices_in_the_same_modes_without_repeating_a_window(
    redis_url, ipc_address, two_modes
):
    from harstream.stream.core.model_routing import ModelRouter

    (waist, _), (anywhere, _) = two_modes
    out = ipc_address("out")
    tail = Collector(out, verb="bind")
    bridge = Bridge(redis_url)
    first = LogWorker(None, redis_url, out, "w0", router=ModelRouter(waist, anywhere))
    producer = Producer(bridge.ingest)
    second = None
    try:
        assert wait_for(lambda: owners(redis_url) == {"w0": PARTITIONS})
        producer.send(MODE_DEVICES, chunks=6)  # windows 0..4
        assert tail.wait(lambda c: len(c.predictions) >= 5 * len(MODE_DEVICES), timeout=60)
        first.close()  # gives every partition back; the next owner rebuilds each device from the log
        second = LogWorker(None, redis_url, out, "w1", router=ModelRouter(waist, anywhere))
        assert wait_for(lambda: owners(redis_url) == {"w1": PARTITIONS})
        producer.send(MODE_DEVICES, chunks=6)  # windows 5..10
        assert tail.wait(lambda c: len(c.predictions) >= 11 * len(MODE_DEVICES), timeout=60)
        time.sleep(0.5)  # a duplicate would come now
    finally:
        final = second.close() if second else {}
        first.close()
        producer.close()
        bridge.close()
        tail.close()
    check_modes(tail.predictions, producer, two_modes, rebuilt_from=5)
    assert len(tail.predictions) == 11 * len(MODE_DEVICES)
    assert {p.device for p in tail.predictions if p.worker == "w1"} == set(MODE_DEVICES)
    assert final["broker"]["takeovers"] == PARTITIONS and not final["drops"], final


def test_a_personal_model_dropped_into_the_watched_folder_takes_its_phone_over_on_a_durable_worker(
    redis_url, ipc_address, two_modes, tmp_path
):
    from test_routing_live import PERSONAL, personal_file

    from harstream.models.personal_serving import load_personal_model
    from harstream.stream.core.model_routing import ModelRouter
    from harstream.stream.personal.registry import PersonalRegistry, personal_model_path

    (waist, _), (anywhere, _) = two_modes
    registry = tmp_path / "personal"
    registry.mkdir()
    mine = personal_file(tmp_path, "phone:p1", anywhere.model_id)
    out = ipc_address("out")
    tail = Collector(out, verb="bind")
    bridge = Bridge(redis_url)
    worker = LogWorker(
        None,
        redis_url,
        out,
        "w0",
        router=ModelRouter(waist, anywhere),
        personal=PersonalRegistry(registry, lambda path: load_personal_model(path, anywhere), interval=0.1),
    )
    producer = Producer(bridge.ingest)
    devices = {"rec-1": {}, "phone:p1": {}}

    def stream_until(condition, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            producer.send(devices)
            if wait_for(lambda: condition(tail), timeout=0.05):
                return True
        return False

    def latest(device: str):
        return next((p for p in reversed(tail.predictions) if p.device == device), None)

    try:
        assert stream_until(lambda c: latest("phone:p1") is not None and latest("rec-1") is not None)
        assert latest("phone:p1").mode == "any"
        target = personal_model_path(registry, "phone:p1")
        shutil.copy(mine, target)
        assert stream_until(lambda c: latest("phone:p1").mode == "personal")
        assert stream_until(lambda c: c.stats.get("w0", {}).get("modes", {}).get("personal") == 1)
        stats = tail.stats["w0"]
    finally:
        worker.close()
        producer.close()
        bridge.close()
        tail.close()
    assert latest("phone:p1").classes == PERSONAL and latest("rec-1").mode == "waist"
    assert stats["personal"]["loaded"] == 1
    windows = [p.window for p in tail.predictions if p.device == "phone:p1"]
    assert windows == list(range(len(windows)))  # the stream went on: no window lost, none repeated


def test_a_phone_on_the_gateway_gets_its_any_mode_predictions_back_from_durable_workers_behind_the_proxy(
    redis_url, ipc_address, two_modes
):
    """The durable demo's wiring (`harstream demo --durable URL --gateway`): the
    proxy binds both buses, the bridge reads its ingest back end, the workers
    publish into its output back end, and the gateway uses the fronts."""
    import asyncio
    import json

    from websockets.asyncio.client import connect as ws_connect

    from harstream.stream.bus.proxy import run_proxies
    from harstream.stream.core.model_routing import ModelRouter
    from harstream.stream.gateway.server import Gateway, GatewayConfig

    (waist, _), (anywhere, _) = two_modes
    ingest, ingest_back, output, output_back = (ipc_address(n) for n in ("in", "in.back", "out", "out.back"))
    stop_proxy, proxy_ready = threading.Event(), threading.Event()
    proxy = threading.Thread(
        target=run_proxies,
        daemon=True,
        kwargs=dict(
            ingest=ingest,
            ingest_backend=ingest_back,
            output=output,
            output_backend=output_back,
            stop=stop_proxy,
            on_ready=proxy_ready.set,
        ),
    )
    proxy.start()
    assert proxy_ready.wait(20), "proxy did not start"
    bridge = Bridge(redis_url, ingest=">" + ingest_back)
    workers = [LogWorker(None, redis_url, output_back, f"w{i}", router=ModelRouter(waist, anywhere)) for i in range(2)]

    async def phone() -> list[dict]:
        gateway = Gateway(GatewayConfig(port=0, ingest=ingest, output=output, stats_interval=0))
        await gateway.start()
        got: list[dict] = []
        try:
            async with ws_connect(f"ws://127.0.0.1:{gateway.port}/ws") as ws:
                await ws.send(json.dumps({"type": "hello", "device": "pocket"}))
                assert json.loads(await ws.recv())["bus_device"] == "phone:pocket"
                rng = np.random.default_rng(1)
                t0 = time.time() * 1000
                async with asyncio.timeout(40):
                    for second in range(30):  # 1 s of readings every 0.4 s until three predictions came back
                        t = t0 + 1000 * second + 20 * np.arange(50)
                        acc = np.column_stack([t, rng.normal(0, 0.2, (50, 3)) + [0, 0, 1]]).tolist()
                        gyro = np.column_stack([t, rng.normal(0, 0.1, (50, 3))]).tolist()
                        await ws.send(json.dumps({"type": "samples", "acc": acc, "gyro": gyro}))
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.4):
                                while True:
                                    message = json.loads(await ws.recv())
                                    if message["type"] == "prediction":
                                        got.append(message)
                        if len(got) >= 3:
                            break
        finally:
            await gateway.close()
        return got

    try:
        assert wait_for(lambda: sorted(owners(redis_url).values()) == [6, 6]), owners(redis_url)
        got = asyncio.run(phone())
    finally:
        finals = [w.close() for w in workers]
        bridge.close()
        stop_proxy.set()
        proxy.join(10)
    assert len(got) >= 3, got
    assert {(p["bus_device"], p["mode"], p["model"]) for p in got} == {("phone:pocket", "any", anywhere.model_id)}
    assert all(p["classes"] == list(anywhere.classes) and p["label"] in anywhere.classes for p in got)
    assert sum(f["totals"].get("predictions", 0) for f in finals) >= 3


def test_a_taking_worker_claims_every_entry_a_dead_owner_read_and_never_acknowledged(redis_url):
    from harstream.models.runtime import NullRuntime
    from harstream.stream.durable.broker import GROUP
    from harstream.stream.durable.redis_worker import RedisWorker

    client = connect(redis_url)
    stream = Keys().partition(0)
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for i in range(2500):  # more than one page of pending entries
        client.xadd(stream, {"i": i})
    client.xreadgroup(GROUP, "dead-owner", {stream: ">"}, count=2500)  # read, never acknowledged
    worker = RedisWorker(NullRuntime(6), ACTIVITIES, "none", redis_url, worker_id="heir")
    try:
        claimed = worker._claim_pending(stream)
    finally:
        worker.close(leave=False)
    assert len(claimed) == 2500
    consumers = {c["name"].decode(): c["pending"] for c in client.xinfo_consumers(stream, GROUP)}
    assert consumers.get("dead-owner", 0) == 0 and consumers["heir"] == 2500


def _log_worker_in_process(redis_url: str):
    """A RedisWorker driven here (no thread), holding every partition."""
    from harstream.models.runtime import NullRuntime
    from harstream.stream.core.worker import WorkerConfig
    from harstream.stream.durable.redis_worker import RedisWorker

    worker = RedisWorker(
        NullRuntime(6),
        ACTIVITIES,
        "none",
        redis_url,
        WorkerConfig(signal_interval=0),
        LogConfig(partitions=PARTITIONS),
        worker_id="w",
    )
    worker.balance(time.monotonic())
    assert len(worker.owned) == PARTITIONS
    return worker


def _step_until(worker, got: list, windows: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while len(got) < windows and time.monotonic() < deadline:
        now = time.monotonic()
        worker.step(now, now + 0.05, got.extend)


def _messages(device: str, n: int) -> list[tuple[bytes, bytes, bytes]]:
    """``n`` consecutive messages of 64 samples."""
    from harstream.stream.core.protocol import SampleBatch, encode_samples

    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        batch = SampleBatch(device, 64 * k, 1000.0 + 64 * k / 50, rng.normal(0, 0.3, (64, 6)).astype(np.float32))
        t, h, s = encode_samples(batch)
        out.append((t, h, s))
    return out


def test_a_log_written_one_message_per_entry_by_an_older_bridge_is_still_read(redis_url):
    from harstream.stream.durable.partitions import partition_of

    client = connect(redis_url)
    worker = _log_worker_in_process(redis_url)
    got: list = []
    try:
        stream = Keys().partition(partition_of("older", PARTITIONS))
        for t, h, s in _messages("older", 4):  # 256 samples: three windows
            client.xadd(stream, {"t": t, "h": h, "s": s})
        _step_until(worker, got, 3)
    finally:
        worker.close(leave=False)
    assert [(p.device, p.window) for p in got] == [("older", 0), ("older", 1), ("older", 2)]


def test_a_log_entry_cut_short_or_in_another_devices_partition_is_counted_and_the_rest_is_read(redis_url):
    from harstream.stream.durable.bridge import pack_messages
    from harstream.stream.durable.partitions import partition_of

    client = connect(redis_url)
    worker = _log_worker_in_process(redis_url)
    got: list = []
    p = partition_of("good", PARTITIONS)
    try:
        messages = _messages("good", 4)
        client.xadd(Keys().partition(p), {"m": pack_messages(messages[:2])[:-5]})  # its last message cut short
        client.xadd(Keys().partition((p + 1) % PARTITIONS), {"m": pack_messages(messages[:2])})  # not its partition
        client.xadd(Keys().partition(p), {"m": pack_messages(messages)})
        _step_until(worker, got, 3)
        drops = worker.stats(time.monotonic()).drops
    finally:
        worker.close(leave=False)
    assert drops == {"frame_count": 1, "partition": 2}
    assert [(p.device, p.window) for p in got] == [("good", 0), ("good", 1), ("good", 2)]


def test_a_partition_given_away_takes_its_devices_out_of_the_workers_one_core(redis_url):
    from harstream.stream.durable.bridge import pack_messages
    from harstream.stream.durable.partitions import partition_of

    client = connect(redis_url)
    worker = _log_worker_in_process(redis_url)
    got: list = []
    names = [f"dev-{i}" for i in range(40)]
    try:
        for name in names:
            client.xadd(Keys().partition(partition_of(name, PARTITIONS)), {"m": pack_messages(_messages(name, 3))})
        _step_until(worker, got, 2 * len(names))
        gone = 0
        mine = [n for n in names if partition_of(n, PARTITIONS) == gone]
        assert mine and all(n in worker.core.devices for n in names)
        worker.release(gone, time.monotonic())
        left = set(worker.core.devices)
    finally:
        worker.close(leave=False)
    assert gone not in worker.owned
    assert left == set(names) - set(mine)  # the others' state stays in the core
