"""The bridge: samples from the ZeroMQ ingest bus into the partitioned log.

Stateless: a message's partition comes from its topic's device id
(:func:`~harstream.stream.durable.partitions.partition_of`), its bytes go into the
partition's Redis stream unchanged, and the workers validate them as they
validate the bus. Messages are gathered per partition and written every
``flush_ms`` in one pipelined round trip, each stream trimmed to the last
``retention_s`` seconds (``XADD … MINID ~``). One log entry carries the
messages of one flush of its partition (:func:`pack_messages`: field ``m``,
each message as three little-endian uint32 lengths and its topic, JSON header
and float32 samples; never pickled), so a flush costs one ``XADD`` per
partition rather than one per message; a device holding more than
:attr:`BrokerMemory.SMALL` bytes in a flush gets entries of its own.
:func:`entry_messages` reads both this and the older one-message entry
(fields ``t`` topic, ``h`` header, ``s`` samples).

:class:`PartitionBuffer` is the sans-I/O core; :func:`serve_bridge` puts a
ZeroMQ socket and a Redis client at its edges. No message larger than the
largest valid one is taken (ZeroMQ disconnects a sender of a frame over
``MAX_FRAME_BYTES``; a header over 64 KiB or more than 5,000 samples is
refused as ``too_large``). If Redis is unreachable the bridge keeps at most
``max_buffered`` messages and ``max_bytes`` bytes (past either, the oldest
of the device holding the most bytes go first, counted as ``unwritten``)
and retries with back-off. A message the broker refuses while it answers
(over its ``maxmemory``: ``broker_full``; anything else: ``broker_refused``)
is dropped and counted, never retried at the front of every later batch;
when full, the bridge first trims what the workers have already read and
writes the refused ones once more. It never stops on a bad message or a
broker outage.

>>> buf = PartitionBuffer(partitions=4)
>>> buf.add([b"s/07/d1/", b"{}", b"\\0" * 24]), buf.add([b"junk"])
(True, False)
>>> [(p, device, len(rows)) for p, device, rows in buf.take()], dict(buf.rejected)
([(2, 'd1', 1)], {'frame_count': 1})
"""

from __future__ import annotations

import heapq
import logging
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence

from harstream.stream.core.protocol import (
    DEVICE_ID,
    MAX_FRAME_BYTES,
    MAX_HEADER_BYTES,
    MAX_SAMPLES_PER_MESSAGE,
    SAMPLES_PREFIX,
)
from harstream.stream.durable.partitions import partition_of

log = logging.getLogger(__name__)

MAX_SAMPLES_BYTES = MAX_SAMPLES_PER_MESSAGE * 24  # the largest valid samples frame: 5000 x 6 float32
MAX_MESSAGE_BYTES = 1024 + MAX_HEADER_BYTES + MAX_SAMPLES_BYTES  # the largest valid message, topic included
DEFAULT_MAX_BYTES = 128 * 2**20  # bytes buffered while the broker is away
MAX_DRAIN = 20_000  # messages taken from the socket per flush at most
MAX_ENTRY_BYTES = 256 * 1024  # messages packed into one log entry, in bytes (one larger message goes alone)
_LENGTHS = struct.Struct("<III")  # topic, header and samples lengths of each packed message
#: The most a log entry the bridge writes can hold: its packed messages, or one larger message
#: alone (three frames, each at most a receiving socket's largest). A reader refuses more.
MAX_LOGGED_ENTRY_BYTES = MAX_ENTRY_BYTES + 3 * MAX_FRAME_BYTES
#: Messages in one entry, at most: a valid message is over 64 bytes (topic, header, one sample).
MAX_MESSAGES_PER_ENTRY = MAX_ENTRY_BYTES // 64

Row = tuple[bytes, bytes, bytes]  # one samples message: topic, header, samples


def pack_messages(rows: Sequence[Row]) -> bytes:
    """The ``m`` field of a log entry carrying ``rows`` (samples messages, in order).

    >>> entry_messages({b"m": pack_messages([(b"s/1/a/", b"{}", b"xy"), (b"s/2/b/", b"{}", b"z")])})
    [(b's/1/a/', b'{}', b'xy'), (b's/2/b/', b'{}', b'z')]
    >>> entry_messages({b"t": b"s/1/a/", b"h": b"{}", b"s": b"xy"})  # an entry written before packing
    [(b's/1/a/', b'{}', b'xy')]
    """
    parts: list[bytes] = []
    for topic, header, samples in rows:
        parts += (_LENGTHS.pack(len(topic), len(header), len(samples)), topic, header, samples)
    return b"".join(parts)


def entry_messages(fields: dict) -> list[Row]:
    """The samples messages of one log entry (as XREADGROUP/XRANGE return its
    fields): several in field ``m``, or one in fields ``t``, ``h``, ``s``.
    ``ValueError`` naming what is wrong for an entry that is neither, or whose
    packed messages are cut short."""
    packed = fields.get(b"m")
    if packed is None:
        try:
            return [(fields[b"t"], fields[b"h"], fields[b"s"])]
        except KeyError as exc:
            raise ValueError(f"log entry lacks field {exc} (and has no packed messages)") from None
    # No bridge writes more, or empty messages: another client's entry of millions of empty
    # messages held a worker for seconds each (every one decoded, refused and counted).
    if len(packed) > MAX_LOGGED_ENTRY_BYTES:
        raise ValueError(f"log entry of {len(packed)} bytes, more than the {MAX_LOGGED_ENTRY_BYTES} one can hold")
    out: list[Row] = []
    view, at, size = memoryview(packed), 0, _LENGTHS.size
    while at < len(packed):
        if at + size > len(packed):
            raise ValueError(f"log entry's packed messages cut short at byte {at} of {len(packed)}")
        if len(out) >= MAX_MESSAGES_PER_ENTRY:
            raise ValueError(f"log entry of more than {MAX_MESSAGES_PER_ENTRY} messages")
        nt, nh, ns = _LENGTHS.unpack_from(packed, at)
        if not (nt and nh and ns):
            raise ValueError(f"log entry's message at byte {at} has an empty frame")
        at += size
        end = at + nt + nh + ns
        if end > len(packed):
            raise ValueError(f"log entry's message at byte {at} runs past its end ({end} > {len(packed)})")
        out.append((bytes(view[at : at + nt]), bytes(view[at + nt : at + nt + nh]), bytes(view[at + nt + nh : end])))
        at = end
    return out


def pack_entries(taken: list[tuple[int, str, list[Row]]]) -> list[tuple[int, list[Row]]]:
    """The log entries of a flush, as (partition, messages): per partition,
    the devices holding at most :attr:`BrokerMemory.SMALL` bytes together
    (up to :data:`MAX_ENTRY_BYTES` an entry), then each larger device in
    entries of its own, keeping ``taken``'s order (fewest bytes first), so a
    full broker refuses the large backlogs, not a device streaming at its pace.

    >>> rows = lambda n, size: [(b"t", b"h", b"s" * size)] * n
    >>> [(p, len(r)) for p, r in pack_entries([(0, "a", rows(2, 1)), (1, "b", rows(1, 1)), (0, "c", rows(1, 1))])]
    [(0, 3), (1, 1)]
    >>> [(p, len(r)) for p, r in pack_entries([(0, "a", rows(1, 1)), (0, "big", rows(3, 40_000))])]
    [(0, 1), (0, 3)]
    """
    small: dict[int, list[list[Row]]] = {}
    sizes: dict[int, int] = {}
    large: list[tuple[int, list[Row]]] = []
    for p, _device, rows in taken:
        held = sum(len(t) + len(h) + len(x) for t, h, x in rows)
        if held > BrokerMemory.SMALL:
            _chunk(large, p, rows)
            continue
        entries = small.setdefault(p, [[]])
        if entries[-1] and sizes[p] + held > MAX_ENTRY_BYTES:
            entries.append([])
            sizes[p] = 0
        entries[-1].extend(rows)
        sizes[p] = sizes.get(p, 0) + held
    return [(p, rows) for p, entries in small.items() for rows in entries] + large


def _chunk(out: list[tuple[int, list[Row]]], p: int, rows: list[Row]) -> None:
    """``rows`` of partition ``p`` as entries of at most :data:`MAX_ENTRY_BYTES` (one message at least)."""
    entry: list[Row] = []
    size = 0
    for row in rows:
        n = len(row[0]) + len(row[1]) + len(row[2])
        if entry and size + n > MAX_ENTRY_BYTES:
            out.append((p, entry))
            entry, size = [], 0
        entry.append(row)
        size += n
    if entry:
        out.append((p, entry))


class PartitionBuffer:
    """Messages waiting to be written, per device in arrival order.

    Bounded in count and in bytes: past either bound the oldest message of
    the device holding the most bytes goes (counted as ``unwritten``), so a
    flooding device sheds its own data before a device streaming at 50 Hz
    loses any. :meth:`take` hands the devices holding the fewest bytes out
    first, so where a write fails part-way (a full broker) it is the
    largest backlogs that are refused.
    """

    def __init__(self, partitions: int, max_buffered: int = 500_000, max_bytes: int = DEFAULT_MAX_BYTES):
        self.partitions = partitions
        self.max_buffered = max_buffered
        self.max_bytes = max_bytes
        self._queues: dict[str, deque[tuple[bytes, bytes, bytes]]] = {}
        self._bytes: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []  # (-bytes, device), refreshed lazily
        self.buffered = 0
        self.buffered_bytes = 0
        self.rejected: Counter[str] = Counter()
        self.unwritten = 0  # dropped because the broker stayed away (or a device flooded) too long

    def add(self, frames: Sequence[bytes]) -> bool:
        """Queue one bus message; False (counted by reason) if it is not a samples message."""
        if len(frames) != 3:
            self.rejected["frame_count"] += 1
            return False
        if len(frames[1]) > MAX_HEADER_BYTES or len(frames[2]) > MAX_SAMPLES_BYTES:
            self.rejected["too_large"] += 1  # no valid message is this large: never written
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
        self._append(device, [(topic, bytes(frames[1]), bytes(frames[2]))], front=False)
        return True

    def _append(self, device: str, rows: list[tuple[bytes, bytes, bytes]], front: bool) -> None:
        q = self._queues.get(device)
        if q is None:
            q = self._queues[device] = deque()
        size = sum(len(t) + len(h) + len(x) for t, h, x in rows)
        if front:
            q.extendleft(reversed(rows))
        else:
            q.extend(rows)
        self._bytes[device] = self._bytes.get(device, 0) + size
        self.buffered += len(rows)
        self.buffered_bytes += size
        if self.buffered > self.max_buffered or self.buffered_bytes > self.max_bytes:
            heapq.heappush(self._heap, (-self._bytes[device], device))
            self._shed()

    def _shed(self) -> None:
        """Drop oldest messages of the devices holding the most bytes until within bounds."""
        while self.buffered > self.max_buffered or self.buffered_bytes > self.max_bytes:
            if not self._heap:  # rebuild: bytes changed since the heap was made
                self._heap = [(-b, d) for d, b in self._bytes.items()]
                heapq.heapify(self._heap)
            neg, device = heapq.heappop(self._heap)
            held = self._bytes.get(device, 0)
            if held != -neg or held == 0:
                if held:
                    heapq.heappush(self._heap, (-held, device))
                continue
            topic, header, samples = self._queues[device].popleft()
            size = len(topic) + len(header) + len(samples)
            self.buffered -= 1
            self.buffered_bytes -= size
            self.unwritten += 1
            if self._queues[device]:
                self._bytes[device] = held - size
                heapq.heappush(self._heap, (size - held, device))
            else:
                del self._queues[device], self._bytes[device]

    def take(self) -> list[tuple[int, str, list[tuple[bytes, bytes, bytes]]]]:
        """Everything queued as (partition, device, messages), the devices
        holding the fewest bytes first; the buffer is empty afterwards."""
        out = [
            (partition_of(device, self.partitions), device, list(self._queues[device]))
            for device in sorted(self._bytes, key=self._bytes.__getitem__)
        ]
        self._queues.clear()
        self._bytes.clear()
        self._heap.clear()
        self.buffered = self.buffered_bytes = 0
        return out

    def put_back(self, taken: list[tuple[int, str, list[tuple[bytes, bytes, bytes]]]]) -> None:
        """Return a batch whose write failed (the broker is away), ahead of
        what came meanwhile; the bounds apply as to new messages."""
        for _, device, rows in taken:
            self._append(device, rows, front=True)


class BrokerMemory:
    """The broker's memory as last seen (``INFO memory``), and how much of a
    batch fits under its ``maxmemory`` with room left for the workers'
    commits (which a full broker would refuse too).

    >>> m = BrokerMemory(used=70, limit=100)
    >>> m.tight, m.fit([(0, "small", [(b"t", b"h", b"s")]), (1, "big", [(b"t", b"h", b"s" * 40)])])
    (False, ([(0, 'small', [(b't', b'h', b's')])], 1))
    """

    TIGHT = 0.75  # past this share of maxmemory the bridge trims what the workers have read
    FILL = 0.9  # the log is written up to this share; the rest is the workers' room...
    SMALL_FILL = 0.95  # ...but for devices streaming at a device's pace (a few messages per flush)
    SMALL = 64 * 1024  # bytes a device may hold in one flush to count as one

    def __init__(self, used: int = 0, limit: int = 0):
        self.used, self.limit, self.checked = used, limit, -1e9

    def refresh(self, client, now: float) -> None:
        info = client.info("memory")
        self.used, self.limit, self.checked = int(info["used_memory"]), int(info.get("maxmemory", 0)), now

    @property
    def tight(self) -> bool:
        return self.limit > 0 and self.used > self.TIGHT * self.limit

    def fit(self, taken: list) -> tuple[list, int]:
        """The part of ``taken`` (devices holding the fewest bytes first) that
        fits, and how many messages do not; counts what it lets through as used."""
        if self.limit <= 0:
            return taken, 0
        kept, over = [], 0
        for p, device, rows in taken:
            raw = sum(len(t) + len(h) + len(x) for t, h, x in rows)
            size = 2 * raw  # an entry costs about twice its bytes
            fill = self.SMALL_FILL if raw <= self.SMALL else self.FILL
            if self.used + size <= fill * self.limit:
                kept.append((p, device, rows))
                self.used += size
            else:
                over += len(rows)
        return kept, over


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
    max_buffered_bytes: int = DEFAULT_MAX_BYTES,
    on_stats: Callable[[dict], None] | None = None,
) -> dict:
    """Run the bridge until ``stop`` is set; returns its counters.

    ``ingest`` is an endpoint as in :mod:`~harstream.stream.bus.addresses` (bound by
    default, like a worker's, so producers connect to it unchanged); ``keys``: a
    CURVE key folder, needed for an address off loopback. ``allow_remote_broker``:
    see :func:`~harstream.stream.durable.broker.connect`.
    ``on_ready(address)`` gets the ingest address actually bound;
    ``on_stats(counters)`` the counters every ``stats_every`` seconds.
    """
    import threading

    import redis
    import zmq

    from harstream.stream.bus.addresses import ingest_address
    from harstream.stream.bus.sockets import SAMPLE_MESSAGE_BYTES, BusSockets
    from harstream.stream.bus.zmq_worker import receive_frames
    from harstream.stream.durable.broker import Backoff, Keys, connect

    names = Keys(prefix) if prefix else Keys()
    stop = stop or threading.Event()
    client = connect(url, allow_remote=allow_remote_broker)
    sockets = BusSockets(keys)
    buf = PartitionBuffer(partitions, max_bytes=max_buffered_bytes)
    memory = BrokerMemory()
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
        behind = False
        while not stop.is_set():
            # Messages wait in the socket until the flush (up to rcvhwm): one wake-up and one drain
            # per flush, not one per message; at once again while a backlog is being drained.
            wait = next_flush - time.monotonic()
            if wait > 0 and not behind and stop.wait(wait):
                break
            drained = 0
            while drained < MAX_DRAIN:
                try:
                    frames = receive_frames(sub.recv, zmq.NOBLOCK)  # recv_multipart at 60 % of its cost
                except zmq.Again:
                    break
                drained += 1
                buf.add(frames)
            counts["received"] += drained
            behind = drained >= MAX_DRAIN
            now = time.monotonic()
            next_flush = now + flush_ms / 1000
            if buf.buffered and backoff.ready(now):
                taken = buf.take()
                try:
                    if memory.tight or now >= memory.checked + 0.25:
                        memory.refresh(client, now)
                        if memory.tight:  # make room before the broker refuses anyone's writes
                            counts["trimmed"] += _make_room(client, names, partitions, retention_s)
                            memory.refresh(client, now)
                    # leave the workers room for their commits: past it, the largest backlogs are refused
                    taken, over = memory.fit(taken)
                    buf.rejected["broker_full"] += over
                    entries = pack_entries(taken)
                    refused = _write(client, names, entries, retention_s)
                    if any(reason == "broker_full" for _, _, reason in refused):
                        # Full: trim what the workers have read, then write the refused ones once more
                        # (the devices holding the least first); what is refused again is dropped.
                        counts["trimmed"] += _make_room(client, names, partitions, retention_s)
                        refused = _write(client, names, [(p, rows) for p, rows, _ in refused], retention_s)
                    counts["written"] += sum(len(rows) for _, rows in entries) - sum(len(r) for _, r, _ in refused)
                    counts["entries"] += len(entries) - len(refused)
                    counts["flushes"] += 1
                    # Refused by a broker that answered: dropped and counted (in messages), never retried at the front.
                    for _, rows, reason in refused:
                        buf.rejected[reason] += len(rows)
                    if not broker_up:
                        log.warning("bridge: broker %s back", url)
                    broker_up = True
                    backoff.reset()
                except redis.RedisError as exc:
                    # The broker is away. A failed pipeline may have written part of the batch; writing
                    # it again would duplicate entries, which the workers drop by seq (counted there),
                    # so retry all, within the buffer's bounds.
                    buf.put_back(taken)
                    counts["write_errors"] += 1
                    if broker_up:
                        log.warning("bridge: broker %s unreachable (%s); buffering and retrying", url, exc)
                    broker_up = False
                    backoff.failed(now)
            if now >= next_print:
                next_print = now + stats_every
                if printer:
                    printer(_line(counts, buf, broker_up))
                if on_stats:
                    on_stats(_stats(counts, buf, broker_up))
        return _stats(counts, buf, broker_up)
    finally:
        sockets.close(0)
        client.close()


def _write(client, keys, entries: list[tuple[int, list[Row]]], retention_s: float) -> list[tuple[int, list[Row], str]]:
    """Write ``entries`` (partition, messages of one log entry) in one
    pipelined round trip, each stream trimmed to ``retention_s``; returns the
    entries the broker refused as (partition, messages, reason): ``broker_full``
    (over its ``maxmemory``) or ``broker_refused`` (anything else it refused for
    that entry). Raises ``RedisError`` if the broker is away."""
    import redis

    minid = f"{max(0, int(time.time() * 1000 - retention_s * 1000))}-0"
    pipe = client.pipeline(transaction=False)
    for p, rows in entries:
        pipe.xadd(keys.partition(p), {"m": pack_messages(rows)}, minid=minid, approximate=True)
    refused = []
    for (p, rows), result in zip(entries, pipe.execute(raise_on_error=False)):
        if isinstance(result, redis.exceptions.OutOfMemoryError):
            refused.append((p, rows, "broker_full"))
        elif isinstance(result, Exception):
            refused.append((p, rows, "broker_refused"))
    return refused


def _make_room(client, keys, partitions: int, retention_s: float) -> int:
    """A full broker: trim every partition to the entries the workers have
    not read yet (and to ``retention_s``), giving up the tail a taking-over
    worker would replay before refusing new data; returns entries removed.
    (XTRIM and XINFO are allowed over ``maxmemory``.)"""
    import redis

    from harstream.stream.durable.broker import GROUP

    streams = [keys.partition(p) for p in range(partitions)]
    retention_id = f"{max(0, int(time.time() * 1000 - retention_s * 1000))}-0"
    try:
        pipe = client.pipeline(transaction=False)
        for stream in streams:
            pipe.xinfo_groups(stream)
        infos = pipe.execute(raise_on_error=False)
        pipe = client.pipeline(transaction=False)
        for stream, groups in zip(streams, infos):
            if isinstance(groups, Exception):  # no such stream yet
                continue
            delivered = [_text(g["last-delivered-id"]) for g in groups if _text(g["name"]) == GROUP]
            minid = max([retention_id, *delivered], key=_stream_id)
            pipe.xtrim(stream, minid=minid, approximate=False)
        return sum(n for n in pipe.execute(raise_on_error=False) if isinstance(n, int))
    except redis.RedisError:
        return 0


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stats(counts: Counter, buf: PartitionBuffer, up: bool) -> dict:
    """The bridge's counters; ``rejected`` counts messages, by reason."""
    return {
        **counts,
        "broker_up": up,
        "unwritten": buf.unwritten,
        "rejected": dict(buf.rejected),
        "buffered": buf.buffered,
        "buffered_bytes": buf.buffered_bytes,
    }


def _line(counts: Counter, buf: PartitionBuffer, up: bool) -> str:
    rejected = ",".join(f"{k}={v}" for k, v in sorted(buf.rejected.items())) or "none"
    return (
        f"bridge: broker={'up' if up else 'DOWN'} received={counts['received']} written={counts['written']} "
        f"buffered={buf.buffered} unwritten={buf.unwritten} write_errors={counts['write_errors']} "
        f"rejected={rejected}"
    )
