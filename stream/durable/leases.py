"""Partition leases and fenced writes, as Lua scripts run inside Redis.

A lease is one key per partition holding ``"<worker> <epoch>"`` with a
time-to-live; the epoch comes from a per-partition counter bumped on every
acquisition, so each ownership has a number no earlier owner had. Every
write an owner makes (predictions, progress, acknowledgements) goes through
a script that first checks the lease still holds its own value: a stale
owner (paused, partitioned away, or simply late) finds another value there
and its write is refused — it is *fenced*. Times are Redis server time, so
workers on different machines agree on expiry.

Membership (for balancing) is a sorted set of worker ids scored by when
their heartbeat expires.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import orjson

from harstream.stream.durable.broker import Keys

#: The longest lease time a worker may use (ms): a lease expiring later than
#: this was not set by a worker.
MAX_LEASE_MS = 60_000

#: Lua prepended to the scripts that write the deployment's keys: ``own(key,
#: kind)`` deletes ``key`` if another client left a key of another type under
#: its name (a string where a hash belongs: every write to it would raise, and
#: the script's error refuse every commit of the round trip) and says 1 if so.
#: A lease of another type is read with ``redis.pcall``: not ours, so fenced,
#: and the acquire script (no expiry) takes it.
OWN_KEY_LUA = """
local function own(key, kind)
  local t = redis.call('TYPE', key)['ok']
  if t ~= kind and t ~= 'none' then
    redis.call('DEL', key)
    return 1
  end
  return 0
end
"""

# KEYS: members; ARGV: worker, ttl_ms -> live member ids, sorted
_HEARTBEAT = (
    OWN_KEY_LUA
    + """
own(KEYS[1], 'zset')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[2] ~= '0' then redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)

# KEYS: lease, epoch; ARGV: worker, ttl_ms, longest ttl_ms -> epoch, or 0 if
# held. A lease key with no expiry, or one expiring later than any worker's
# lease time allows, is junk (every owner sets one within the limit, and renews
# it) and taken, else the partition would not be served again for as long as
# another client chose; an epoch counter that is not an integer restarts from
# the server's time in ms, past any count it held.
_ACQUIRE = """
local left = redis.call('PTTL', KEYS[1])
if left >= 0 and left <= tonumber(ARGV[3]) then return 0 end
local epoch = redis.pcall('INCR', KEYS[2])
if type(epoch) == 'table' then
  local t = redis.call('TIME')
  epoch = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[2], epoch)
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. epoch, 'PX', ARGV[2])
return epoch
"""

# KEYS: lease; ARGV: value, ttl_ms -> 1 renewed, 0 lost
_RENEW = """
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: leases; ARGV: ttl_ms, then each lease's value -> per lease 1 renewed, 0 lost
_RENEW_MANY = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.pcall('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS: lease; ARGV: value -> 1 released, 0 was not ours
_RELEASE = """
if redis.pcall('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lease, progress, predictions, latest, seen
# ARGV: value, maxlen, then (device, window, prediction JSON, progress JSON) per prediction
# -> {written, skipped, junk} or -1 when fenced. A window at or below the device's
# committed one is skipped: a replay overwrites nothing and duplicates nothing.
# Each written device is scored in ``seen`` by the server's time, for _FORGET.
# A progress record without a readable window (written by another client) is
# junk: counted, and taken as no window committed, so the new one replaces it
# (raising here would refuse every commit of the partition, for good).
_COMMIT = (
    OWN_KEY_LUA
    + """
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local written, skipped, junk = 0, 0, 0
junk = own(KEYS[2], 'hash') + own(KEYS[3], 'stream') + own(KEYS[4], 'hash') + own(KEYS[5], 'zset')
for i = 3, #ARGV, 4 do
  local device, window = ARGV[i], tonumber(ARGV[i + 1])
  local cur = redis.call('HGET', KEYS[2], device)
  local done = -1
  if cur then  -- a record starts with its window ({"w":N,...}): read without decoding it all
    local w = string.match(cur, '^{"w":(%-?%d+)[,}]')
    if not w then
      local ok, record = pcall(cjson.decode, cur)
      if ok and type(record) == 'table' then w = record['w'] end
    end
    done = tonumber(w)
    if done == nil then done, junk = -1, junk + 1 end
  end
  if window > done then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'device', device, 'window', ARGV[i + 1], 'p', ARGV[i + 2])
    redis.call('HSET', KEYS[4], device, ARGV[i + 2])
    redis.call('HSET', KEYS[2], device, ARGV[i + 3])
    redis.call('ZADD', KEYS[5], now, device)
    written = written + 1
  else
    skipped = skipped + 1
  end
end
return {written, skipped, junk}
"""
)

# KEYS: lease, progress, latest, seen; ARGV: value, age_ms, limit
# -> devices forgotten, or -1 when fenced: up to ``limit`` devices of the
# partition whose last window was committed more than ``age_ms`` ago lose
# their progress record and their latest prediction.
_FORGET = (
    OWN_KEY_LUA
    + """
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then return -1 end
own(KEYS[2], 'hash')
own(KEYS[3], 'hash')
own(KEYS[4], 'zset')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, tonumber(ARGV[3]))
for _, device in ipairs(old) do
  redis.call('HDEL', KEYS[2], device)
  redis.call('HDEL', KEYS[3], device)
  redis.call('ZREM', KEYS[4], device)
end
return #old
"""
)

# KEYS: lease, stream; ARGV: value, group -> 1 if the stream was junk (another type: deleted), 0,
# or -1 when fenced. The partition's log made readable again: a key of another type under its
# name, or the log deleted and written afresh without the consumer group (both made every read
# of every partition fail), becomes a stream with the group, read from its first entry.
_REPAIR_LOG = (
    OWN_KEY_LUA
    + """
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local junk = own(KEYS[2], 'stream')
redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[2], '0', 'MKSTREAM')
return junk
"""
)

# KEYS: lease, stream; ARGV: value, group, ids... -> acked count or -1 when fenced
_ACK = """
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local n = 0
for i = 3, #ARGV do n = n + redis.call('XACK', KEYS[2], ARGV[2], ARGV[i]) end
return n
"""


def run_scripts(client, calls: list[tuple]) -> list:
    """Run ``(script, keys, args)`` calls of registered scripts in one
    pipelined round trip, by their SHA: without the ``SCRIPT EXISTS`` round
    trip redis-py's pipeline makes first on every execute. A script the
    server lacks (it restarted) is loaded and its calls run once more; any
    other error is raised, as ``execute()`` would.

    Returns each call's reply, in order."""
    import redis

    def execute(todo: list[int]) -> list:
        pipe = client.pipeline(transaction=False)
        for i in todo:
            script, keys, args = calls[i]
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return pipe.execute(raise_on_error=False)

    if not calls:
        return []
    results = execute(list(range(len(calls))))
    missing = [i for i, r in enumerate(results) if isinstance(r, redis.exceptions.NoScriptError)]
    if missing:
        for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
            client.script_load(script.script)
        for i, result in zip(missing, execute(missing)):
            results[i] = result
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


class Fenced(Exception):
    """This worker's lease on the partition is gone; its write was refused."""


@dataclass(frozen=True)
class Lease:
    partition: int
    worker: str
    epoch: int

    @property
    def value(self) -> str:
        return f"{self.worker} {self.epoch}"


class Leases:
    """The scripts, registered once per client; every method is one round trip."""

    def __init__(self, client, keys: Keys, ttl_ms: int):
        if not 0 < ttl_ms <= MAX_LEASE_MS:
            raise ValueError(f"lease time {ttl_ms!r} ms must be within 1..{MAX_LEASE_MS}")
        self.client, self.keys, self.ttl_ms = client, keys, int(ttl_ms)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._renew_many = client.register_script(_RENEW_MANY)
        self._release = client.register_script(_RELEASE)
        self._commit = client.register_script(_COMMIT)
        self._ack = client.register_script(_ACK)
        self._forget = client.register_script(_FORGET)
        self._repair_log = client.register_script(_REPAIR_LOG)

    def heartbeat(self, worker: str, leave: bool = False) -> list[str]:
        """Refresh ``worker``'s membership; the live members, sorted."""
        if leave:
            self.client.zrem(self.keys.members, worker)
        members = self._heartbeat(keys=[self.keys.members], args=[worker, 0 if leave else self.ttl_ms])
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    def holders(self, partitions: int) -> list[str | None]:
        """The lease value of each partition (None where free)."""
        values = self.client.mget([self.keys.lease(p) for p in range(partitions)])
        return [v.decode() if v is not None else None for v in values]

    def heartbeat_and_holders(self, worker: str, partitions: int) -> tuple[list[str], list[str | None]]:
        """:meth:`heartbeat` and :meth:`holders` in one round trip."""
        import redis

        pipe = self.client.pipeline(transaction=False)
        pipe.evalsha(self._heartbeat.sha, 1, self.keys.members, worker, self.ttl_ms)
        pipe.mget([self.keys.lease(p) for p in range(partitions)])
        members, values = pipe.execute(raise_on_error=False)
        if isinstance(members, redis.exceptions.NoScriptError):  # the server restarted: load it
            members = self._heartbeat(keys=[self.keys.members], args=[worker, self.ttl_ms])
        for reply in (members, values):
            if isinstance(reply, Exception):
                raise reply
        return (
            sorted(m.decode() if isinstance(m, bytes) else m for m in members),
            [v.decode() if v is not None else None for v in values],
        )

    def acquire(self, partition: int, worker: str) -> Lease | None:
        epoch = int(
            self._acquire(
                keys=[self.keys.lease(partition), self.keys.epoch(partition)],
                args=[worker, self.ttl_ms, MAX_LEASE_MS],
            )
        )
        return Lease(partition, worker, epoch) if epoch else None

    def renew(self, lease: Lease) -> bool:
        return bool(self._renew(keys=[self.keys.lease(lease.partition)], args=[lease.value, self.ttl_ms]))

    def renew_many(self, leases: list[Lease]) -> list[bool]:
        """:meth:`renew` for several partitions in one round trip: per lease, renewed or lost."""
        if not leases:
            return []
        keys = [self.keys.lease(lease.partition) for lease in leases]
        (replies,) = run_scripts(
            self.client, [(self._renew_many, keys, [self.ttl_ms, *(lease.value for lease in leases)])]
        )
        return [bool(result) for result in replies]

    def repair_logs(self, leases: list[Lease], group: str) -> int:
        """Make each lease's partition log a stream with ``group`` again
        (fenced, in one round trip); how many were of another type (junk)."""
        calls = [
            (
                self._repair_log,
                [self.keys.lease(lease.partition), self.keys.partition(lease.partition)],
                [lease.value, group],
            )
            for lease in leases
        ]
        return sum(max(0, int(r)) for r in run_scripts(self.client, calls))

    def release(self, lease: Lease) -> bool:
        return bool(self._release(keys=[self.keys.lease(lease.partition)], args=[lease.value]))

    def commit(self, lease: Lease, rows: list[tuple[str, int, dict, dict]], maxlen: int) -> tuple[int, int]:
        """Write predictions ``(device, window, prediction, progress)`` if the lease holds.

        Returns (written, skipped as already committed); :class:`Fenced` if not ours.
        """
        out = self._commit(keys=self._commit_keys(lease), args=self._commit_args(lease, rows, maxlen))
        if out == -1:
            raise Fenced(f"partition {lease.partition}: lease epoch {lease.epoch} no longer held by {lease.worker}")
        return int(out[0]), int(out[1])

    def forget(self, lease: Lease, older_than_ms: int, limit: int = 1000) -> int:
        """Remove the progress record and latest prediction of up to ``limit``
        devices of the partition whose last window was committed more than
        ``older_than_ms`` ago (server time); how many. :class:`Fenced` if not ours."""
        p = lease.partition
        out = self._forget(
            keys=[self.keys.lease(p), self.keys.progress(p), self.keys.latest, self.keys.seen(p)],
            args=[lease.value, int(older_than_ms), int(limit)],
        )
        if out == -1:
            raise Fenced(f"partition {p}: lease epoch {lease.epoch} no longer held by {lease.worker}")
        return int(out)

    def forget_many(self, leases: list[Lease], older_than_ms: int, limit: int = 1000) -> list[int | Fenced]:
        """:meth:`forget` for several partitions in one round trip: per lease,
        devices forgotten or the :class:`Fenced` it met (not raised)."""
        calls = [
            (
                self._forget,
                [self.keys.lease(lease.partition), self.keys.progress(lease.partition), self.keys.latest]
                + [self.keys.seen(lease.partition)],
                [lease.value, int(older_than_ms), int(limit)],
            )
            for lease in leases
        ]
        return [
            _fenced(lease) if result == -1 else int(result)
            for lease, result in zip(leases, run_scripts(self.client, calls))
        ]

    def ack_many(self, group: str, acks: list[tuple[Lease, list]]) -> list[int | Fenced]:
        """:meth:`ack` for several partitions in one round trip: per partition
        with entries to acknowledge, entries acknowledged or the
        :class:`Fenced` it met (not raised)."""
        acks = [(lease, ids) for lease, ids in acks if ids]
        return self.ack_results(acks, run_scripts(self.client, self.ack_calls(group, acks)))

    def ack_calls(self, group: str, acks: list[tuple[Lease, list]]) -> list:
        """The script calls of :meth:`ack_many` (``acks`` each with ids), to run with others (:func:`run_scripts`)."""
        return [
            (
                self._ack,
                [self.keys.lease(lease.partition), self.keys.partition(lease.partition)],
                [lease.value, group, *ids],
            )
            for lease, ids in acks
        ]

    @staticmethod
    def ack_results(acks: list[tuple[Lease, list]], replies: list) -> list[int | Fenced]:
        """What :meth:`ack_many` returns, from the replies of its calls."""
        return [_fenced(lease) if reply == -1 else int(reply) for (lease, _), reply in zip(acks, replies)]

    def commit_many(
        self, commits: list[tuple[Lease, list[tuple[str, int, dict, dict]]]], maxlen: int
    ) -> list[tuple[int, int, int] | Fenced]:
        """:meth:`commit` for several partitions in one round trip: per
        partition, (written, skipped, junk) or the :class:`Fenced` it met (not raised)."""
        return self.commit_results(commits, run_scripts(self.client, self.commit_calls(commits, maxlen)))

    def commit_calls(self, commits: list[tuple[Lease, list[tuple[str, int, dict, dict]]]], maxlen: int) -> list:
        """The script calls of :meth:`commit_many`, to run with others (:func:`run_scripts`)."""
        return [
            (self._commit, self._commit_keys(lease), self._commit_args(lease, rows, maxlen)) for lease, rows in commits
        ]

    @staticmethod
    def commit_results(commits: list[tuple[Lease, list]], replies: list) -> list[tuple[int, int, int] | Fenced]:
        """What :meth:`commit_many` returns, from the replies of its calls:
        per partition (written, skipped, junk progress records replaced)."""
        return [
            _fenced(lease) if reply == -1 else (int(reply[0]), int(reply[1]), int(reply[2]))
            for (lease, _), reply in zip(commits, replies)
        ]

    def _commit_keys(self, lease: Lease) -> list[str]:
        p = lease.partition
        return [self.keys.lease(p), self.keys.progress(p), self.keys.predictions, self.keys.latest, self.keys.seen(p)]

    @staticmethod
    def _commit_args(lease: Lease, rows: list[tuple[str, int, dict, dict]], maxlen: int) -> list:
        args: list = [lease.value, maxlen]
        for device, window, body, progress in rows:
            args += [device, window, _dumps(body), _dumps(progress)]
        return args

    def ack(self, lease: Lease, group: str, ids: list) -> int:
        if not ids:
            return 0
        out = self._ack(
            keys=[self.keys.lease(lease.partition), self.keys.partition(lease.partition)],
            args=[lease.value, group, *ids],
        )
        if out == -1:
            raise Fenced(f"partition {lease.partition}: lease epoch {lease.epoch} no longer held by {lease.worker}")
        return int(out)


def _fenced(lease: Lease) -> Fenced:
    return Fenced(f"partition {lease.partition}: lease epoch {lease.epoch} no longer held by {lease.worker}")


def _dumps(obj: dict) -> bytes:
    """Compact JSON of a prediction or progress record: orjson (a tenth of the
    stdlib's cost; a non-finite float becomes ``null``, as on the output bus),
    the stdlib for what orjson refuses (a huge int, deep nesting)."""
    try:
        return orjson.dumps(obj)
    except (orjson.JSONEncodeError, RecursionError):
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
