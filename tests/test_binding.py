"""Security in one place: every socket a command binds or connects goes
through one helper (``stream.bus.sockets.BusSockets``), so every command
refuses a bus address off loopback without keys, and with keys the durable
path (bridge, worker on the log) lets in the listed clients only."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from conftest import wait_for

from harstream.stream.bus.auth import BusAuthError, generate_keys
from harstream.stream.bus.sockets import BusSockets
from harstream.stream.core.protocol import MAX_FRAME_BYTES, Prediction, SampleBatch, decode_output, encode_samples

ROOT = Path(__file__).resolve().parent.parent
REFUSED = "reachable from other machines; the bus there needs CURVE keys"
# Binding on every interface and connecting to another machine: neither is loopback.
ANY_INTERFACE = "@tcp://0.0.0.0:5999"
ELSEWHERE = "tcp://10.1.2.3:5999"

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (`make redis` installs Debian's package)",
)

COMMANDS = {
    "worker": ["worker", "--runtime", "none", "--single-model", "--ingest", ANY_INTERFACE],
    "worker publishing": ["worker", "--runtime", "none", "--single-model", "--publish", ANY_INTERFACE],
    "worker --redis": ["worker", "--runtime", "none", "--single-model", "--redis", "unix:///nonexistent/redis.sock"]
    + ["--publish", ANY_INTERFACE],
    "bridge": ["bridge", "--redis", "unix:///nonexistent/redis.sock", "--ingest", ANY_INTERFACE],
    "proxy": ["proxy", "--ingest", ANY_INTERFACE],
    "proxy back end": ["proxy", "--output-backend", ANY_INTERFACE],
    "simulate": ["simulate", "--publish", ELSEWHERE, "--duration", "1"],
    "tail": ["tail", "--subscribe", ELSEWHERE],
    "gateway": ["gateway", "--port", "0", "--ingest", ELSEWHERE],
    "gateway output": ["gateway", "--port", "0", "--output", ELSEWHERE],
    "dashboard": ["dashboard", "--subscribe", ELSEWHERE],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_refuses_an_address_off_loopback_without_keys(name):
    done = subprocess.run(
        [sys.executable, "-m", "harstream", *COMMANDS[name]], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 1, (done.returncode, done.stdout[-500:], done.stderr[-1500:])
    assert REFUSED in done.stderr, done.stderr[-1500:]
    assert "Traceback" not in done.stderr, done.stderr[-1500:]


# The edges themselves refuse too (the commands' early check only saves time):
# each is called as a library user would, with the default verb of its role.


def _worker(address: str) -> None:
    from harstream.models.runtime import NullRuntime
    from harstream.stream.bus.zmq_worker import serve
    from harstream.stream.core.activities import ACTIVITIES

    serve(NullRuntime(), ACTIVITIES, "none", ingest=address, output="ipc:///tmp/hs-unused-out", printer=None)


def _durable_worker(address: str) -> None:
    from harstream.models.runtime import NullRuntime
    from harstream.stream.core.activities import ACTIVITIES
    from harstream.stream.durable.redis_worker import serve_redis

    serve_redis(NullRuntime(), ACTIVITIES, "none", "unix:///nonexistent/redis.sock", output=address, printer=None)


def _bridge(address: str) -> None:
    from harstream.stream.durable.bridge import serve_bridge

    serve_bridge("unix:///nonexistent/redis.sock", ingest=address, printer=None)


def _proxy(address: str) -> None:
    from harstream.stream.bus.proxy import run_proxies

    run_proxies(ingest=address, ingest_backend="ipc:///tmp/hs-unused-back")


def _simulator(address: str) -> None:
    from harstream.simulator.replay import ReplaySchedule, replay

    replay(ReplaySchedule([]), publish=address, printer=None)


def _dashboard(address: str) -> None:
    from harstream.dashboard.feed import Subscriber

    Subscriber(address)


def _gateway(address: str) -> None:
    from harstream.stream.gateway.server import Gateway, GatewayConfig

    Gateway(GatewayConfig(port=0, ingest=address, output=None, stats_interval=0))


EDGES = {
    "worker": (_worker, ANY_INTERFACE),
    "durable worker": (_durable_worker, ANY_INTERFACE),
    "bridge": (_bridge, ANY_INTERFACE),
    "proxy": (_proxy, ANY_INTERFACE),
    "simulator": (_simulator, ELSEWHERE),
    "dashboard": (_dashboard, ELSEWHERE),
    "gateway": (_gateway, ELSEWHERE),
}


@pytest.mark.parametrize("name", EDGES)
def test_every_edge_refuses_an_address_off_loopback_without_keys(name):
    edge, address = EDGES[name]
    with pytest.raises(BusAuthError, match="needs CURVE keys"):
        edge(address)


def test_no_socket_is_made_outside_the_binding_helper():
    """A ZeroMQ socket made anywhere else would miss the keys, the size limit or the refusal."""
    allowed = {
        "stream/bus/sockets.py",  # the helper
        "stream/bus/proxy.py",  # the proxy's steering pair: inproc, inside the process
    }
    made = re.compile(r"\.socket\(\s*zmq\.")
    found = []
    for folder in ("stream", "simulator", "dashboard", "harstream/commands", "models"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = str(path.relative_to(ROOT))
            if rel not in allowed and made.search(path.read_text()):
                found.append(rel)
    assert not found, f"ZeroMQ sockets made outside stream/bus/sockets.py: {found}"


def test_a_socket_without_a_largest_message_size_cannot_be_opened():
    with pytest.raises(TypeError):
        BusSockets().open(zmq.SUB, "ipc:///tmp/hs-x", "connect")  # type: ignore[call-arg]


# ------------------------------------------------------------- the durable path, keyed


@pytest.fixture
def key_folders(tmp_path):
    """The deployment's keys, and a stranger's: its own client pair (not in
    ``clients/``) with the deployment's public server key, which is public."""
    keys, stranger = tmp_path / "keys", tmp_path / "stranger"
    generate_keys(keys)
    generate_keys(stranger)
    (stranger / "bus.key").write_bytes((keys / "bus.key").read_bytes())
    return keys, stranger


class Producer:
    """A producer on the bridge's ingest: an XPUB (it sees the bridge's
    subscription only once the CURVE handshake let it in)."""

    def __init__(self, address: str, keys: Path | None):
        self.sockets = BusSockets(keys)
        self.sock = self.sockets.open(zmq.XPUB, ">" + address, "connect", max_message=64 * 1024)

    def subscribed(self, timeout: float) -> bool:
        return bool(self.sock.poll(int(timeout * 1000)))

    def send(self, device: str, windows: int = 4, seq0: int = 0) -> None:
        n = 128 + 64 * (windows - 1)
        rng = np.random.default_rng(7)
        t0 = time.time() - n / 50
        for start in range(0, n, 32):
            samples = rng.normal(0, 0.1, (32, 6)).astype(np.float32)
            self.sock.send_multipart(
                encode_samples(SampleBatch(device, seq0 + start, t0 + start / 50, samples, session="s" + device))
            )

    def close(self) -> None:
        self.sockets.close(0)


class Listener:
    """A SUB on the worker's output, read in a thread."""

    def __init__(self, address: str, keys: Path | None):
        self.sockets = BusSockets(keys, zmq.Context())
        self.sock = self.sockets.open(zmq.SUB, ">" + address, "connect", max_message=1 << 20, subscribe=[b"p/"])
        self.predictions: list[Prediction] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(50):
                msg = decode_output(self.sock.recv_multipart())
                if isinstance(msg, Prediction) and not msg.between:  # windows, not the updates between them
                    self.predictions.append(msg)

    def devices(self) -> set[str]:
        return {p.device for p in self.predictions}

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sockets.close(0)
        self.sockets.context.term()


@needs_redis
def test_a_keyed_bridge_and_durable_worker_serve_a_keyed_producer_and_refuse_a_stranger(
    redis_url, key_folders, ipc_address
):
    from harstream.models.runtime import NullRuntime
    from harstream.stream.core.activities import ACTIVITIES
    from harstream.stream.core.worker import WorkerConfig
    from harstream.stream.durable.bridge import entry_messages, serve_bridge
    from harstream.stream.durable.broker import Keys, connect
    from harstream.stream.durable.redis_worker import LogConfig, serve_redis

    keys, stranger = key_folders
    stop = threading.Event()
    bound = {"output": ipc_address("out")}
    results: dict[str, dict] = {}
    bridge_ready, worker_ready = threading.Event(), threading.Event()

    def run_bridge() -> None:
        def ready(address: str) -> None:
            bound["ingest"] = address
            bridge_ready.set()

        results["bridge"] = serve_bridge(
            redis_url, "tcp://127.0.0.1:*", partitions=4, stop=stop, printer=None, on_ready=ready, keys=str(keys)
        )

    def run_worker() -> None:
        results["worker"] = serve_redis(
            NullRuntime(),
            ACTIVITIES,
            "none",
            redis_url,
            output=bound["output"],
            config=WorkerConfig(signal_interval=0, stale_after=None),
            log_config=LogConfig(partitions=4),
            stop=stop,
            on_ready=worker_ready.set,
            printer=None,
            keys=str(keys),
        )

    threads = [threading.Thread(target=run_bridge, daemon=True), threading.Thread(target=run_worker, daemon=True)]
    for t in threads:
        t.start()
    producers: list[Producer] = []
    listeners: list[Listener] = []
    try:
        assert bridge_ready.wait(20) and worker_ready.wait(20), "bridge or worker did not start"
        friend, foe, plain = (Listener(bound["output"], k) for k in (keys, stranger, None))
        listeners += [friend, foe, plain]
        # A stranger's producer is never let in: the bridge's subscription never reaches it.
        foe_producer = Producer(bound["ingest"], stranger)
        plain_producer = Producer(bound["ingest"], None)
        producers += [foe_producer, plain_producer]
        assert not foe_producer.subscribed(2.0)
        assert not plain_producer.subscribed(0.5)
        foe_producer.send("stranger-1")
        plain_producer.send("plain-1")
        # A listed producer is; one frame past the largest message size is refused by ZeroMQ.
        huge = Producer(bound["ingest"], keys)
        producers.append(huge)
        assert huge.subscribed(10.0)
        huge.sock.send_multipart([b"s/0/huge/", b"{}", bytes(MAX_FRAME_BYTES + 1)])
        friend_producer = Producer(bound["ingest"], keys)
        producers.append(friend_producer)
        assert friend_producer.subscribed(10.0)
        friend_producer.send("keyed-1", windows=4)
        assert wait_for(lambda: len([p for p in friend.predictions if p.device == "keyed-1"]) >= 3, 30), (
            friend.predictions
        )
        time.sleep(0.5)  # anything else that got in would be through by now
    finally:
        for p in producers:
            p.close()
        for listener in listeners:
            listener.close()
        stop.set()
        for t in threads:
            t.join(30)
    assert friend.devices() == {"keyed-1"}
    assert not foe.predictions and not plain.predictions
    # Nothing of the stranger, the plain producer or the huge frame reached the log.
    client = connect(redis_url)
    topics = {
        topic.decode()
        for p in range(4)
        for _, fields in client.xrange(Keys().partition(p))  # type: ignore[union-attr]
        for topic, _, _ in entry_messages(fields)
    }
    assert topics and all("/keyed-1/" in t for t in topics), topics
    assert results["bridge"]["received"] == 10  # keyed-1's 320 samples in 32s, and nothing else


# ------------------------------------------------------------- the broker's address


@pytest.mark.parametrize(
    "url,local",
    [
        ("redis://127.0.0.1@10.1.2.3:6379/0", False),  # 127.0.0.1 is the user name; the host is 10.1.2.3
        ("redis://:secret@10.1.2.3:6379/0", False),
        ("redis://localhost.example.com:6379/0", False),
        ("rediss://10.1.2.3:6380/0", False),
        ("redis://127.0.0.1:6379/0", True),
        ("redis://10.1.2.3@127.0.0.2:6379/0", True),  # the user name does not matter either way
        ("redis://localhost:6379", True),
        ("redis://[::1]:6379/0", True),
        ("unix:///tmp/redis.sock", True),
    ],
)
def test_the_broker_must_be_on_this_machine_as_redis_py_reads_the_url(url, local):
    from harstream.stream.durable.broker import connect, is_local_broker

    assert is_local_broker(url) is local
    if local:
        connect(url).close()  # a client, not yet connected
    else:
        with pytest.raises(ValueError, match="not this machine"):
            connect(url)
        connect(url, allow_remote=True).close()  # explicitly allowed


@pytest.mark.parametrize("command", ["bridge", "worker"])
def test_bridge_and_worker_refuse_a_broker_url_whose_host_is_elsewhere(command):
    extra = ["--runtime", "none", "--single-model"] if command == "worker" else []
    done = subprocess.run(
        [sys.executable, "-m", "harstream", command, "--redis", "redis://127.0.0.1@10.1.2.3:6379/0", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 1, done.stderr[-1000:]
    assert "connects to 10.1.2.3, which is not this machine" in done.stderr
    assert "Traceback" not in done.stderr
