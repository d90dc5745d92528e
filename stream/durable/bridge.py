"""The bridge: samples from the ZeroMQ ingest bus into the partitioned log.

Stateless: a message's partition comes from its topic's device id
(:func:`~harstream.stream.durable.partitions.partition_of`), its bytes go into the
partition's Redis stream unchanged (fields ``t`` topic, ``h`` JSON header,
``s`` float32 samples; never pickled), and the workers validate them as they
validate the bus. Messages are gathered per partition and written every
``flush_ms`` in one pipelined round trip, each stream trimmed to the last
``retention_s`` seconds (``XADD … MINID ~``).

:class:`PartitionBuffer` is the sans-I/O core; :func:`serve_bridge` puts a
ZeroMQ socket and a Redis client at its edges. If Redis is unreachable the
bridge keeps at most ``max_buffered`` messages (the oldest go first, counted
as ``unwritten``) and retries with back-off; it never stops on a bad message
or a broker outage.

>>> buf = PartitionBuffer(partitions=4)
>>> buf.add([b"s/07/d1/", b"{}", b"\\0" * 24]), buf.add([b"junk"])
(True, False)
>>> {p: len(v) for p, v in buf.take().items()}, dict(buf.rejected)
({2: 1}, {'frame_count': 1})
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence

from harstream.stream.core.protocol import DEVICE_ID, SAMPLES_PREFIX
from harstream.stream.durable.partitions import partition_of

log = logging.getLogger(__name__)


class PartitionBuffer:
    """Messages waiting to be written, per partition, in arrival order."""

    def __init__(self, partitions: int, max_buffered: int = 500_000):
        self.partitions = partitions
        self.max_buffered = max_buffered
        self._queues: dict[int, deque] = {}
        self.buffered = 0
        self.rejected: Counter[str] = Counter()
        self.unwritten = 0  # dropped because the broker stayed away too long

    def add(self, frames: Sequence[bytes]) -> bool:
        """Queue one bus message; False (counted by reason) if it is not a samples message."""
        if len(frames) != 3:
            self.rejected["frame_count"] += 1
            return False
        topic = bytes(frames[0])
        parts = topic.split(b"/")
        if not topic.startswith(SAMPLES_PREFIX) or len(parts) != 4 or parts[3] != b"":
            self.rejected["topic"] += 1
            return False
        try:
            device = parts[2].decode("ascii")
        except UnicodeDecodeError:
            device = ""
        if not DEVICE_ID.match(device):
            self.rejected["device"] += 1
            return False
        p = partition_of(device, self.partitions)
        self._queues.setdefault(p, deque()).append((topic, bytes(frames[1]), bytes(frames[2])))
        self.buffered += 1
        while self.buffered > self.max_buffered:  # broker away: keep the newest
            fullest = max(self._queues.values(), key=len)
            fullest.popleft()
            self.buffered -= 1
            self.unwritten += 1
        return True

    def take(self) -> dict[int, list[tuple[bytes, bytes, bytes]]]:
        """Everything queued, by partition; the buffer is empty afterwards."""
        out = {p: list(q) for p, q in self._queues.items() if q}
        self._queues.clear()
        self.buffered = 0
        return out

    def put_back(self, taken: dict[int, list]) -> None:
        """Return a batch whose write failed, ahead of what came meanwhile."""
        for p, rows in taken.items():
            q = self._queues.setdefault(p, deque())
            q.extendleft(reversed(rows))
            self.buffered += len(rows)
        while self.buffered > self.max_buffered:
            fullest = max(self._queues.values(), key=len)
            fullest.popleft()
            self.buffered -= 1
            self.unwritten += 1


def check_partitions(client, keys, partitions: int) -> int:
    """Record the partition count in the broker, or refuse a different one
    (devices would be split differently by different processes)."""
    client.hsetnx(keys.meta, "partitions", partitions)
    stored = int(client.hget(keys.meta, "partitions"))
    if stored != partitions:
        raise ValueError(
            f"the broker's log has {stored} partitions; this process was started with {partitions} "
            f"(use --partitions {stored}, or a fresh broker)"
        )
    return stored


def serve_bridge(
    url: str,
    ingest: str | None = None,
    partitions: int = 12,
    flush_ms: float = 20.0,
    retention_s: float = 60.0,
    prefix: str | None = None,
    stop=None,
    stats_every: float = 5.0,
    printer: Callable[[str], None] | None = print,
    on_ready: Callable[[str], None] | None = None,
    rcvhwm: int = 200_000,
    keys: str | None = None,
    allow_remote_broker: bool = False,
) -> dict:
    """Run the bridge until ``stop`` is set; returns its counters.

    ``ingest`` is an endpoint as in :mod:`~harstream.stream.bus.addresses` (bound by
    default, like a worker's, so producers connect to it unchanged); ``keys``: a
    CURVE key folder, needed for an address off loopback. ``allow_remote_broker``:
    see :func:`~harstream.stream.durable.broker.connect`.
    ``on_ready(address)`` gets the ingest address actually bound.
    """
    import threading

    import redis
    import zmq

    from harstream.stream.bus.addresses import ingest_address
    from harstream.stream.bus.sockets import SAMPLE_MESSAGE_BYTES, BusSockets
    from harstream.stream.durable.broker import Backoff, Keys, connect

    names = Keys(prefix) if prefix else Keys()
    stop = stop or threading.Event()
    client = connect(url, allow_remote=allow_remote_broker)
    sockets = BusSockets(keys)
    buf = PartitionBuffer(partitions)
    counts: Counter[str] = Counter()
    backoff = Backoff()
    broker_up = False
    try:
        # A peer sending a larger frame is disconnected by ZeroMQ before it is held.
        sub = sockets.open(
            zmq.SUB,
            ingest or ingest_address(),
            "bind",
            max_message=SAMPLE_MESSAGE_BYTES,
            rcvhwm=rcvhwm,
            subscribe=[SAMPLES_PREFIX],
        )
        address = sub.getsockopt_string(zmq.LAST_ENDPOINT)
        while not stop.is_set():  # the partition count must agree before anything is written
            try:
                check_partitions(client, names, partitions)
                broker_up = True
                break
            except redis.RedisError as exc:
                log.warning("bridge: broker %s unreachable (%s); retrying", url, exc)
                stop.wait(backoff.next_delay())
        backoff.reset()
        if printer:
            printer(
                f"bridge: {address} -> {url}, {partitions} partitions, flush {flush_ms:g} ms, "
                f"retention {retention_s:g} s"
            )
        if on_ready:
            on_ready(address)
        next_flush = time.monotonic() + flush_ms / 1000
        next_print = time.monotonic() + stats_every
        while not stop.is_set():
            now = time.monotonic()
            if sub.poll(int(max(0.0, next_flush - now) * 1000)):  # pyzmq truncates a float the same way
                for _ in range(20_000):
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    counts["received"] += 1
                    buf.add(frames)
            now = time.monotonic()
            if now < next_flush:
                continue
            next_flush = now + flush_ms / 1000
            if buf.buffered and backoff.ready(now):
                taken = buf.take()
                minid = f"{max(0, int(time.time() * 1000 - retention_s * 1000))}-0"
                try:
                    pipe = client.pipeline(transaction=False)
                    for p, rows in taken.items():
                        stream = names.partition(p)
                        for topic, header, samples in rows:
                            pipe.xadd(stream, {"t": topic, "h": header, "s": samples}, minid=minid, approximate=True)
                    pipe.execute()
                    counts["written"] += sum(map(len, taken.values()))
                    counts["flushes"] += 1
                    if not broker_up:
                        log.warning("bridge: broker %s back", url)
                    broker_up = True
                    backoff.reset()
                except redis.RedisError as exc:
                    # A failed pipeline may have written part of the batch; writing it again would
                    # duplicate entries, which the workers drop by seq (counted there), so retry all.
                    buf.put_back(taken)
                    counts["write_errors"] += 1
                    if broker_up:
                        log.warning("bridge: broker %s unreachable (%s); buffering and retrying", url, exc)
                    broker_up = False
                    backoff.failed(now)
            if printer and now >= next_print:
                next_print = now + stats_every
                printer(_line(counts, buf, broker_up))
        return {**counts, "unwritten": buf.unwritten, "rejected": dict(buf.rejected), "buffered": buf.buffered}
    finally:
        sockets.close(0)
        client.close()


def _line(counts: Counter, buf: PartitionBuffer, up: bool) -> str:
    rejected = ",".join(f"{k}={v}" for k, v in sorted(buf.rejected.items())) or "none"
    return (
        f"bridge: broker={'up' if up else 'DOWN'} received={counts['received']} written={counts['written']} "
        f"buffered={buf.buffered} unwritten={buf.unwritten} write_errors={counts['write_errors']} "
        f"rejected={rejected}"
    )
