"""Shared fixtures. Tests build their own small fixtures; shared here are the
expensive, read-only embedded dataset and the bus/port plumbing several
socket tests need."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.asyncio

from harstream.stream.bus.zmq_worker import serve
from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.protocol import Prediction, SampleBatch, decode_samples, encode_prediction, encode_samples
from harstream.stream.gateway.server import Gateway, GatewayConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Ask ``proc`` to stop (SIGTERM) and wait up to ``timeout`` s; kill it if it has not."""
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``condition`` every 50 ms; True once it holds, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="session")
def tiny_lstm(tmp_path_factory):
    """A small untrained LSTM artifact (deterministic outputs) and its LiteRT
    runtime, for tests of the live path that need a real model, not a good one.
    Built and converted once per session: read-only (the runtime serialises its
    calls), shared by every module that serves it."""
    import keras

    from harstream.models.artifact import load_artifact, save_artifact
    from harstream.models.runtime import TfliteRuntime

    os.environ["HARSTREAM_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    keras.utils.set_random_seed(5)
    inp = keras.Input((128, 9))
    x = keras.layers.Dense(6, activation="softmax")(keras.layers.LSTM(8)(inp))
    path = tmp_path_factory.mktemp("m") / "tiny.keras"
    artifact = load_artifact(save_artifact(keras.Model(inp, x), {"architecture": "tiny"}, path))
    return artifact, TfliteRuntime(artifact, (1, 16))


@pytest.fixture(scope="session")
def shipped_model(shipped_records):
    """The shipped default model and the runtime ``--runtime auto`` serves it
    with on a machine that served it before: numpy features and the decision
    stage's LiteRT conversion, from its staged serving record (checked against
    Keras when the record was made, :class:`ShippedRecords`); read-only, shared
    by the tests that serve it through a real worker. The runtime is none of
    their claims (each compares the worker with the same runtime offline)."""
    from harstream.models.artifact import DEFAULT_MODEL, load_artifact
    from harstream.models.fast_start import load_cached_runtime

    cached = load_cached_runtime(DEFAULT_MODEL, cache=shipped_records.of(DEFAULT_MODEL) / "tflite")
    assert cached is not None, "the shipped model's serving record did not load"
    return load_artifact(DEFAULT_MODEL), cached[0]


class ShippedRecords:
    """A cache folder (for ``HARSTREAM_CACHE``) holding shipped models' staged
    serving records, as a worker that served them leaves them on its machine:
    numpy features and the decision stage's LiteRT conversion (batch size 1
    alone: one conversion; a worker splits every batch into ones), checked
    against the whole Keras model first on the usual check windows. A worker started
    with ``--runtime auto`` there serves them without TensorFlow (fast start),
    and a calibration fit calls the shared model without it. Each model is
    recorded once per session, when a test first asks for it."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._made: set[Path] = set()
        self._checks: dict[tuple[int, ...], np.ndarray] = {}  # check windows by context steps

    def of(self, *models: Path) -> Path:
        """The folder, with a record for each of ``models``."""
        for model in models:
            if Path(model) not in self._made:
                self._record(Path(model))
                self._made.add(Path(model))
        return self.folder

    def _record(self, model: Path) -> None:
        from harstream.models.artifact import load_artifact
        from harstream.models.runtime import TfliteRuntime, check_agreement, check_windows
        from harstream.models.staged import stages
        from harstream.models.staged_runtime import (
            DECISION_STAGE,
            NumpyFeatures,
            StagedRuntime,
            record_staged_serving,
            stage_artifact,
        )

        artifact = load_artifact(model)
        steps = artifact.context_steps
        check = self._checks.get(steps)
        if check is None:
            check = self._checks[steps] = check_windows(context_steps=steps)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HARSTREAM_CACHE", str(self.folder))
            features = NumpyFeatures.of_stage(stages(artifact.model)[0])
            decision = TfliteRuntime(stage_artifact(artifact, DECISION_STAGE), (1,))
            reference = np.asarray(artifact.model(check, training=False))
            agreement = check_agreement(StagedRuntime(features, decision), reference, check)
            assert agreement.ok, (model, agreement)
            assert record_staged_serving(artifact, features, decision, agreement) is not None


@pytest.fixture(scope="session")
def shipped_records(tmp_path_factory) -> ShippedRecords:
    """Shipped models' staged serving records in one cache folder (:class:`ShippedRecords`)."""
    return ShippedRecords(tmp_path_factory.mktemp("shipped-records"))


@pytest.fixture
def any_model_record(shipped_records) -> Path:
    """A cache folder holding the shipped placement-free model's staged serving record."""
    from harstream.models.artifact import ANY_MODEL

    return shipped_records.of(ANY_MODEL)


@pytest.fixture(scope="session")
def embedded():
    """The embedded HAPT dataset (decoded once, cached on disk)."""
    from harstream.stream.data.recordings import load_embedded

    return load_embedded()


@pytest.fixture
def output_dir(request) -> Path:
    """A folder under test-output/ named for the test, kept after the run."""
    path = Path(__file__).resolve().parent.parent / "test-output" / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------ buses and ports
#
# No test picks a port by binding port 0, closing the socket and reusing the
# number: another process can take it in between. ZeroMQ and the gateway bind
# wildcard/port 0 and report what they got; a bus the test does not need on TCP
# is an ipc:// path in a fresh folder.


@pytest.fixture
def ipc_address(tmp_path_factory) -> Callable[[str], str]:
    """``ipc_address("ingest")`` -> an ``ipc://`` endpoint nobody else can hold."""
    folder = tmp_path_factory.mktemp("bus")

    def address(name: str) -> str:
        path = folder / name
        # A Unix socket path must fit in sun_path (108 bytes with its NUL).
        assert len(str(path)) < 100, f"ipc path {path} is {len(str(path))} characters; Unix sockets allow 107"
        return f"ipc://{path}"

    return address


class BusTap:
    """Stands in for the worker around a gateway: a SUB socket bound on the
    ingest bus and, if asked, a PUB socket bound on the output bus, both on
    ports ZeroMQ picks on loopback."""

    def __init__(self, output: bool = False):
        self.ctx = zmq.asyncio.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"s/")
        self.sub.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.pub = self.output = None
        if output:
            self.pub = self.ctx.socket(zmq.PUB)
            self.pub.setsockopt(zmq.LINGER, 0)
            self.pub.bind("tcp://127.0.0.1:*")
            self.output = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.batches: list[SampleBatch] = []

    async def wait_connected(self, gateway: Gateway) -> None:
        """Publish probes until one arrives: the PUB→SUB subscription is then live."""
        probe = encode_samples(SampleBatch("probe", 0, 0.0, np.zeros((1, 6))))
        for _ in range(200):
            gateway._pub.send_multipart(probe)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    while True:
                        frames = await self.sub.recv_multipart()
                        if decode_samples(frames).device == "probe":
                            return
        raise AssertionError("gateway never reached the bus")

    async def collect(self, device: str, n: int, timeout: float = 20) -> list[SampleBatch]:
        """Batches of ``device`` until ``n`` samples arrived."""
        got = [b for b in self.batches if b.device == device]
        async with asyncio.timeout(timeout):
            while sum(len(b) for b in got) < n:
                b = decode_samples(await self.sub.recv_multipart())
                self.batches.append(b)
                if b.device == device:
                    got.append(b)
        return got

    async def publish(self, prediction: Prediction) -> None:
        """One prediction on the output bus, as the worker would send it."""
        await self.pub.send_multipart(encode_prediction(prediction))

    def close(self) -> None:
        self.sub.close()
        if self.pub is not None:
            self.pub.close()
        self.ctx.term()


@contextlib.asynccontextmanager
async def _running_gateway(output: bool = False, **overrides) -> AsyncIterator[tuple[Gateway, BusTap]]:
    tap = BusTap(output=output)
    try:
        gateway = Gateway(GatewayConfig(port=0, ingest=tap.endpoint, output=tap.output, stats_interval=0, **overrides))
        await gateway.start()
        try:
            await tap.wait_connected(gateway)
            yield gateway, tap
        finally:
            await gateway.close()
    finally:
        tap.close()


@pytest.fixture
def running_gateway() -> Callable[..., contextlib.AbstractAsyncContextManager]:
    """``async with running_gateway(**config) as (gateway, tap)``: a gateway on a
    port it picked itself (``gateway.port``), publishing to ``tap``; with
    ``output=True`` it also subscribes to predictions ``tap.publish`` sends.
    Everything is closed on the way out, whatever the test did."""
    return _running_gateway


@dataclass
class ThreadWorker:
    """A `serve` running in a thread: the addresses it bound and its stop event."""

    ingest: str
    output: str
    stop: threading.Event
    thread: threading.Thread


@contextlib.contextmanager
def worker_thread(
    runtime=None,
    classes=ACTIVITIES,
    model_id: str = "none",
    *,
    ingest: str = "tcp://127.0.0.1:*",
    output: str = "tcp://127.0.0.1:*",
    ready_timeout: float = 60.0,
    **kwargs,
) -> Iterator[ThreadWorker]:
    """The real ZeroMQ worker loop in a thread, on ports it picked on loopback
    unless given ``ingest``/``output``; yields once it is ready and stops it
    on the way out, whatever the test did. Keyword arguments go to `serve`."""
    stop, ready, bound = threading.Event(), threading.Event(), {"ingest": ingest, "output": output}
    kwargs.setdefault("worker_id", "w")
    kwargs.setdefault("printer", None)
    thread = threading.Thread(
        target=serve,
        daemon=True,
        args=(runtime, classes, model_id),
        kwargs=dict(
            ingest=ingest,
            output=output,
            stop=stop,
            on_ready=ready.set,
            on_bound=lambda i, o: bound.update(ingest=i, output=o),
            **kwargs,
        ),
    )
    thread.start()
    try:
        assert ready.wait(ready_timeout), "worker did not start"
        yield ThreadWorker(bound["ingest"], bound["output"], stop, thread)
    finally:
        stop.set()
        thread.join(30)


def replayed_predictions(
    worker: ThreadWorker, rec, count: int, keep: Callable[[Prediction], bool] = lambda p: True
) -> list[Prediction]:
    """Replay the recording ``rec`` into ``worker`` (10-sample messages, as
    fast as it takes them) and collect the predictions ``keep`` accepts from
    its output bus until there are ``count`` (or none came for 30 s)."""
    from harstream.simulator.replay import ReplaySchedule, devices_for, replay
    from harstream.stream.core.protocol import decode_output

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    got: list[Prediction] = []
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"p/")
        sub.connect(worker.output)
        replay(
            ReplaySchedule(devices_for([rec]), chunk=10),
            publish=worker.ingest,
            speed=0,
            wait_subscriptions=1,
            printer=None,
        )
        while len(got) < count and sub.poll(30_000):
            msg = decode_output(sub.recv_multipart())
            if isinstance(msg, Prediction) and keep(msg):
                got.append(msg)
    finally:
        sub.close(0)
        ctx.term()
    return got


@pytest.fixture
def redis_url():
    """A fresh redis-server on a Unix socket in a short temporary folder (a
    socket path must stay under ~100 bytes); its URL."""
    from harstream.stream.durable.broker import start_redis

    folder = Path(tempfile.mkdtemp(prefix="hs-redis-"))
    proc, url = start_redis(folder, unix_socket=folder / "redis.sock")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
