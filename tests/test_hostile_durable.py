"""Hostile input on the durable path, against a real redis-server (Unix
socket), the bridge and a durable worker, each case with a good device
streaming beside it: the good device keeps getting predictions (its window
numbers never reset), the refusal is counted under its reason, and what
the broker holds stays bounded."""

from __future__ import annotations

import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zmq
from conftest import wait_for

from harstream.models.runtime import NullRuntime
from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.protocol import Prediction, SampleBatch, decode_output, encode_samples
from harstream.stream.core.worker import WorkerConfig
from harstream.stream.durable.bridge import entry_messages, serve_bridge
from harstream.stream.durable.broker import Keys, connect, start_redis
from harstream.stream.durable.partitions import partition_of
from harstream.stream.durable.redis_worker import LogConfig, serve_redis

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (`make redis` installs Debian's package)",
)

PARTITIONS = 4
GOOD = "good-phone"
GOOD_SESSION = "c0ffee"


class Durable:
    """redis-server, the bridge, one durable worker, the good device and a
    subscriber, in threads of this process (the broker in its own)."""

    def __init__(
        self,
        folder: Path,
        maxmemory_mb: int = 0,
        retention_s: float = 60.0,
        log_config: LogConfig | None = None,
        before: Callable[[str], None] | None = None,
    ):
        self.proc, self.url = start_redis(folder, unix_socket=folder / "redis.sock", maxmemory_mb=maxmemory_mb)
        if before is not None:  # what the broker holds before the bridge and the worker start
            before(self.url)
        self.stop = threading.Event()
        self.ctx = zmq.Context()
        self.lock = threading.Lock()
        self.predictions: list[Prediction] = []
        self.stats: dict = {}
        self.bridge_stats: dict = {}
        self.good_seq = 0
        self.output = f"ipc://{folder}/out"
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"p/")
        self.sub.setsockopt(zmq.SUBSCRIBE, b"stats/")
        self.sub.bind(self.output)
        bridge_ready = threading.Event()

        def bound(address: str) -> None:
            self.ingest = address
            bridge_ready.set()

        def bridge_stats(counts: dict) -> None:
            with self.lock:
                self.bridge_stats = counts

        self.threads = [
            threading.Thread(
                target=serve_bridge,
                daemon=True,
                kwargs=dict(
                    url=self.url,
                    ingest=f"ipc://{folder}/in",
                    partitions=PARTITIONS,
                    retention_s=retention_s,
                    stop=self.stop,
                    stats_every=0.1,
                    printer=None,
                    on_ready=bound,
                    on_stats=bridge_stats,
                ),
            )
        ]
        self.threads[0].start()
        assert bridge_ready.wait(20), "bridge did not start"
        worker_ready = threading.Event()
        self.threads.append(
            threading.Thread(
                target=serve_redis,
                daemon=True,
                kwargs=dict(
                    runtime=NullRuntime(6),
                    classes=ACTIVITIES,
                    model_id="none",
                    url=self.url,
                    output=">" + self.output,
                    worker_id="w",
                    stop=self.stop,
                    config=WorkerConfig(signal_interval=0),
                    log_config=log_config or LogConfig(partitions=PARTITIONS),
                    stats_every=0.1,
                    on_ready=worker_ready.set,
                    printer=None,
                ),
            )
        )
        self.threads[1].start()
        assert worker_ready.wait(20), "worker did not start"
        for target in (self._read, self._stream_good):
            self.threads.append(threading.Thread(target=target, daemon=True))
            self.threads[-1].start()
        assert self.wait(lambda: len(self.good_windows()) >= 3), "the good device was never served"

    def _read(self) -> None:
        while not self.stop.is_set():
            if self.sub.poll(50):
                msg = decode_output(self.sub.recv_multipart())
                with self.lock:
                    if isinstance(msg, Prediction):
                        self.predictions.append(msg)
                    else:
                        self.stats = msg

    def _stream_good(self) -> None:
        """10 samples every 40 ms (five times real time)."""
        pub = self.ctx.socket(zmq.PUB)
        pub.connect(self.ingest)
        rng = np.random.default_rng(0)
        try:
            while not self.stop.wait(0.04):
                samples = rng.normal(0, 0.3, (10, 6)).astype(np.float32)
                pub.send_multipart(
                    encode_samples(SampleBatch(GOOD, self.good_seq, time.time(), samples, session=GOOD_SESSION))
                )
                self.good_seq += 10
        finally:
            pub.close(0)

    def good_windows(self) -> list[int]:
        with self.lock:
            return [p.window for p in self.predictions if p.device == GOOD]

    def drops(self) -> dict:
        with self.lock:
            return dict(self.stats.get("drops", {}))

    def rejected(self) -> dict:
        with self.lock:
            return dict(self.bridge_stats.get("rejected", {}))

    def wait(self, condition, timeout: float = 30.0) -> bool:
        return wait_for(condition, timeout)

    def publisher(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.ingest)
        time.sleep(0.3)  # the connection is up before the first message (PUB drops before)
        return sock

    def assert_good_device_goes_on(self, more: int = 5, timeout: float = 30.0, max_lost: int = 0) -> None:
        before = len(self.good_windows())
        assert self.wait(lambda: len(self.good_windows()) >= before + more, timeout), "the good device stopped"
        windows = self.good_windows()
        assert windows == sorted(set(windows)), "the good device was reset"
        lost = windows[-1] - windows[0] + 1 - len(windows)
        assert lost <= max_lost, f"the good device lost {lost} windows"

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        self.sub.close(0)
        self.ctx.term()
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def durable_factory():
    made: list[tuple[Durable, Path]] = []

    def make(**kw) -> Durable:
        folder = Path(tempfile.mkdtemp(prefix="hs-hd-"))
        d = Durable(folder, **kw)
        made.append((d, folder))
        return d

    yield make
    for d, folder in made:
        d.close()
        shutil.rmtree(folder, ignore_errors=True)


def junk(device: str, seq: int, n: int = 5000, session: str = "bad5e55") -> list[bytes]:
    """A valid message of ``n`` samples (the largest a message may carry)."""
    samples = np.random.default_rng(seq).normal(0, 0.3, (n, 6)).astype(np.float32)
    return encode_samples(SampleBatch(device, seq, time.time(), samples, session=session))


def used_memory(url: str) -> int:
    return int(connect(url).info("memory")["used_memory"])


# ----------------------------------------------------------------- the cases


def test_a_message_larger_than_any_valid_one_never_reaches_the_log(durable_factory):
    d = durable_factory()
    mem0 = used_memory(d.url)
    pub = d.publisher()
    try:
        big = junk("intruder", 0, n=10)
        pub.send_multipart(
            [big[0], big[1], b"\0" * (200_000 // 24 * 24)]
        )  # under the socket's bound, over 5000 samples
        pub.send_multipart([big[0], big[1], b"\0" * (16 * 2**20)])  # 16 MiB: ZeroMQ disconnects the sender
        assert d.wait(lambda: d.rejected().get("too_large", 0) >= 1), d.rejected()
        d.assert_good_device_goes_on()
    finally:
        pub.close(0)
    assert used_memory(d.url) - mem0 < 4 * 2**20
    client = connect(d.url)
    for p in range(PARTITIONS):
        for _id, fields in client.xrange(Keys().partition(p)):
            assert all(len(samples) <= 5000 * 24 for _, _, samples in entry_messages(fields))


def test_a_full_broker_refuses_what_does_not_fit_and_the_good_device_goes_on(durable_factory):
    """Junk fills redis-server's maxmemory; the writes it refuses are counted and
    dropped (never retried at the front of every later batch), the bridge
    trims what the workers have read, and the good device's data gets in."""
    d = durable_factory(maxmemory_mb=24)
    pub = d.publisher()
    try:
        for i in range(400):  # 48 MB of valid samples from ten devices, as fast as the bus takes them
            pub.send_multipart(junk(f"junk-{i % 10}", (i // 10) * 5000))
        assert d.wait(lambda: d.rejected().get("broker_full", 0) >= 1, timeout=60), d.bridge_stats
        # While the broker is full its writes can be refused for a moment: a few windows may go
        # (counted as broker_full; up to 9 seen in a full run), never the device's numbering, and it
        # gets in as soon as there is room. The defect this catches loses every window after the fill.
        d.assert_good_device_goes_on(more=10, timeout=60, max_lost=16)
    finally:
        pub.close(0)
    with d.lock:
        assert d.bridge_stats["broker_up"] is True
        assert d.bridge_stats["buffered_bytes"] < 24 * 2**20


def test_a_producer_naming_a_live_device_with_a_seq_far_ahead_is_refused_and_the_device_goes_on(durable_factory):
    d = durable_factory()
    pub = d.publisher()
    try:
        for k in range(3):  # same session, and none; far ahead of anything time allows
            pub.send_multipart(junk(GOOD, d.good_seq + 10**10 + k * 10, n=10, session=GOOD_SESSION))
            pub.send_multipart(junk(GOOD, d.good_seq + 10**10 + k * 10, n=10, session=""))
        assert d.wait(lambda: d.drops().get("jump", 0) + d.drops().get("session", 0) >= 6), d.drops()
        assert d.drops().get("jump", 0) >= 3
        d.assert_good_device_goes_on()
    finally:
        pub.close(0)
    assert max(d.good_windows()) < 10**6


def test_devices_gone_quiet_are_forgotten_by_the_broker_and_a_live_one_is_kept(durable_factory):
    """Without a policy every id ever seen stays in hs:latest and the progress
    hashes for good; an id-rotating client grows them without bound."""
    d = durable_factory(log_config=LogConfig(partitions=PARTITIONS, forget_after_s=1.0))
    client = connect(d.url)
    keys = Keys()
    rotated = [f"rotated-{i}" for i in range(8)]

    def known() -> set[str]:
        names = {k.decode() for k in client.hkeys(keys.latest)}
        for p in range(PARTITIONS):
            names |= {k.decode() for k in client.hkeys(keys.progress(p))}
        return names

    pub = d.publisher()
    try:
        for name in rotated:  # two windows each, then never again
            pub.send_multipart(junk(name, 0, n=192))
        assert d.wait(lambda: set(rotated) <= known()), known()
        assert d.wait(lambda: not set(rotated) & known(), timeout=20), known()
    finally:
        pub.close(0)
    assert GOOD in known()
    assert d.wait(lambda: d.stats.get("broker", {}).get("forgotten_devices", 0) >= len(rotated)), d.stats["broker"]
    assert all(client.zcard(keys.seen(p)) <= 1 for p in range(PARTITIONS))


def test_junk_another_client_left_in_the_brokers_records_is_set_aside_and_the_device_goes_on(durable_factory):
    """Before the worker starts, another client has written junk into every
    record the worker reads or its scripts update for the good device: its
    partition's lease (no expiry) and epoch counter, its progress record, the
    time its history is final up to, its day's minutes. Each used to stop the
    worker: the takeover failed on every try, or a script error refused every
    commit of every partition (the worker retrying "broker errors" for good).
    Now each is counted as junk and started afresh, and no window is lost."""
    keys = Keys()
    p = partition_of(GOOD, PARTITIONS)

    def junk_records(url: str) -> None:
        client = connect(url)
        client.set(keys.lease(p), "squatter 1")  # no expiry: no worker's lease
        client.set(keys.epoch(p), "not a number")
        client.hset(keys.progress(p), mapping={GOOD: "junk{", "other-phone": '{"w": "x", "recent": 5}'})
        client.hset(f"{keys.prefix}hist_until", GOOD, "junk")
        client.hset(f"{keys.prefix}today:{GOOD}", mapping={"day": "9" * 30, "walking": "x"})
        client.close()

    d = durable_factory(before=junk_records)
    d.assert_good_device_goes_on()
    assert d.wait(lambda: d.stats.get("broker", {}).get("junk", {}).get("history", 0) >= 1), d.stats
    broker = d.stats["broker"]
    assert broker["junk"]["progress"] >= 2, broker  # two at the takeover, GOOD's again at its first commit
    assert broker["committed"] >= broker["published"] - 1, broker  # nothing committed and not published
    assert broker.get("broker_errors", 0) == 0, broker


def test_a_lease_another_client_set_to_expire_in_an_hour_does_not_hold_the_partition(durable_factory):
    """Another client has set the good device's partition lease with an
    expiry of an hour: no worker sets one past the longest lease time, so
    the worker takes it as junk at once instead of leaving the partition
    unserved for the hour."""
    keys = Keys()
    p = partition_of(GOOD, PARTITIONS)

    def squat(url: str) -> None:
        client = connect(url)
        client.set(keys.lease(p), "squatter 1", px=3_600_000)
        client.close()

    d = durable_factory(before=squat)
    d.assert_good_device_goes_on()


def test_keys_of_another_type_under_the_brokers_names_are_replaced_and_the_device_goes_on(durable_factory):
    """Before the worker starts, another client has put a key of the wrong
    type under each name the worker writes (a string where a hash, a stream
    or a sorted set belongs; a hash where the good device's lease belongs).
    Every script writing one raised WRONGTYPE and took the round trip's
    commits with it: the worker retried "broker errors" and published
    nothing. Now each such key is deleted and made afresh, counted as junk."""
    keys = Keys()
    p = partition_of(GOOD, PARTITIONS)

    def wrong_types(url: str) -> None:
        client = connect(url)
        for key in (
            keys.progress(p),
            keys.latest,
            keys.predictions,
            keys.seen(p),
            keys.members,
            f"{keys.prefix}hist_until",
            f"{keys.prefix}today:{GOOD}",
        ):
            client.set(key, "junk")
        client.rpush(f"{keys.prefix}hist:{GOOD}", "junk")
        client.hset(keys.lease(p), "junk", "1")
        client.close()

    d = durable_factory(before=wrong_types)
    d.assert_good_device_goes_on()
    assert d.wait(lambda: d.stats.get("broker", {}).get("junk", {}).get("history", 0) >= 3), d.stats
    broker = d.stats["broker"]
    assert broker["junk"]["progress"] >= 2, broker  # the shared keys, at the first commit at least
    assert broker.get("broker_errors", 0) == 0, broker
    client = connect(d.url)
    assert client.type(keys.predictions) == b"stream" and client.type(keys.latest) == b"hash"


def test_a_partition_log_replaced_or_deleted_by_another_client_is_made_readable_again(durable_factory):
    """The good device's partition log replaced by a string, then deleted
    (the bridge's next write makes it again, without the consumer group):
    either made every read of every partition fail (WRONGTYPE, NOGROUP), the
    worker retrying for good. Now the worker makes the log a stream with its
    group again (fenced by its lease), counts it as junk, and the device goes
    on; what the bridge could not write meanwhile is refused and counted."""
    d = durable_factory()
    client = connect(d.url)
    log = Keys().partition(partition_of(GOOD, PARTITIONS))
    client.delete(log)
    client.set(log, "junk")
    d.assert_good_device_goes_on(max_lost=40)
    client.delete(log)
    d.assert_good_device_goes_on(max_lost=40)
    assert d.stats["broker"]["junk"].get("log", 0) >= 2, d.stats["broker"]
    assert client.type(log) == b"stream"


def test_log_entries_of_millions_of_empty_messages_from_another_client_are_refused_whole(durable_factory):
    """Another client writes entries into the good device's partition log
    that no bridge writes: 4.8 MB of empty packed messages (400,000 each), an
    entry of 5,000 one-byte messages. Each message was decoded, refused and
    counted: three such entries held the worker about 25 s, every device
    waiting. Now an entry larger than a bridge writes, or holding an empty
    message or more messages than fit, is refused whole (frame_count)."""
    d = durable_factory()
    client = connect(d.url)
    log = Keys().partition(partition_of(GOOD, PARTITIONS))
    tiny = struct.pack("<III", 1, 1, 1) + b"sh0"
    for packed in (b"\0" * (12 * 400_000), b"\0" * (12 * 400_000), b"\0" * (12 * 80_000), tiny * 5_000):
        client.xadd(log, {"m": packed})
    started = time.monotonic()
    d.assert_good_device_goes_on(timeout=10)
    assert time.monotonic() - started < 5, "the worker was held"
    assert d.wait(lambda: d.drops().get("frame_count", 0) >= 4), d.drops()
    assert d.drops().get("header", 0) == 0, d.drops()  # refused whole, not message by message
