"""The final history kept on the durable log: idempotent by device and time.

Every final piece a worker publishes is kept in Redis through one fenced
script (the partition's lease must still be the worker's): per device, the
time up to which its history is final (``hist_until``), its pieces (a hash
keyed by start time) and its day's seconds per category (``today:<device>``).
A piece is clipped to start at the device's ``hist_until`` and skipped if
nothing is left, so a new owner that replays windows an earlier owner
already made final never stores (or publishes) a stretch twice, and the day's
minutes never count it twice. On takeover :func:`restore_today` gives the
new owner's core each device's day, so the minutes survive a worker restart.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence

from harstream.stream.core.protocol import HistoryUpdate
from harstream.stream.core.today import CATEGORY, DAY, day_of
from harstream.stream.durable.leases import OWN_KEY_LUA

log = logging.getLogger(__name__)

# KEYS: lease, hist_until, hist:<device>, today:<device>
# ARGV: lease value, device, then per piece: start, end, label, category ("" = none), day number
# Returns {kept pieces as a flat list [start, end, label, ...] (clipped), the day's hash flat,
# junk records met}, or -1 if not our lease. Junk (another client's: a final time that is no
# number, a day's seconds that are none) is counted and started afresh, never raised: a script
# error here would refuse the commits of every partition in the same round trip, for good.
_KEEP = (
    OWN_KEY_LUA
    + """
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local device = ARGV[2]
local junk = own(KEYS[2], 'hash') + own(KEYS[3], 'hash') + own(KEYS[4], 'hash')
local until_ = redis.call('HGET', KEYS[2], device)
until_ = until_ and tonumber(until_)
if not until_ or until_ ~= until_ then  -- absent, or junk (not a number, NaN)
  if redis.call('HEXISTS', KEYS[2], device) == 1 then junk = junk + 1 end
  until_ = -1
end
local kept = {}
for i = 3, #ARGV, 5 do
  local s, e = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local label, category, day = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if s < until_ then s = until_ end
  if e > s then
    -- times as text: cjson writes numbers with 14 digits, too few for epoch microseconds
    redis.call('HSET', KEYS[3], string.format('%.6f', s),
      cjson.encode({string.format('%.6f', s), string.format('%.6f', e), label}))
    if category ~= '' then
      if redis.call('HGET', KEYS[4], 'day') ~= day then
        redis.call('DEL', KEYS[4])
        redis.call('HSET', KEYS[4], 'day', day)
      end
      if type(redis.pcall('HINCRBYFLOAT', KEYS[4], category, e - s)) == 'table' then  -- junk seconds
        redis.call('HSET', KEYS[4], category, string.format('%.6f', e - s))
        junk = junk + 1
      end
    end
    until_ = e
    table.insert(kept, string.format('%.6f', s))
    table.insert(kept, string.format('%.6f', e))
    table.insert(kept, label)
  end
end
redis.call('HSET', KEYS[2], device, string.format('%.6f', until_))
return {kept, redis.call('HGETALL', KEYS[4]), junk}
"""
)


class HistoryStore:
    """Final pieces kept per device in Redis, fenced by a partition's lease."""

    def __init__(self, client, prefix: str):
        self.client = client
        self.prefix = prefix
        self._keep = client.register_script(_KEEP)
        self.junk = 0  # junk records met in the broker (another client's) and started afresh

    def until_key(self) -> str:
        return f"{self.prefix}hist_until"

    def pieces_key(self, device: str) -> str:
        return f"{self.prefix}hist:{device}"

    def today_key(self, device: str) -> str:
        return f"{self.prefix}today:{device}"

    def keep(
        self, lease_key: str, lease_value: str, update: HistoryUpdate, core=None, classes: Sequence[str] = ()
    ) -> HistoryUpdate | None:
        """Keep ``update``'s final pieces; returns the update to publish (its
        final pieces as kept, clipped; its provisional ones as they were; the
        day as kept, also given to ``core``'s day totals), or None if the
        lease is no longer ours (publish nothing)."""
        return self.keep_many([(lease_key, lease_value, update, classes)], core)[0]

    def keep_many(self, items: Sequence[tuple[str, str, HistoryUpdate, Sequence[str]]], core=None) -> list:
        """:meth:`keep` for ``(lease key, lease value, update, classes)`` items,
        in one round trip (each fenced by its own lease); per item the update
        to publish, or None where the lease is no longer ours."""
        from harstream.stream.durable.leases import run_scripts

        calls, at = self.keep_calls(items)
        return self.kept(items, at, run_scripts(self.client, calls), core)

    def keep_calls(self, items: Sequence[tuple[str, str, HistoryUpdate, Sequence[str]]]) -> tuple[list, list[int]]:
        """The script calls of :meth:`keep_many` (to run with others), and the
        item each is for (an update with nothing final needs none)."""
        calls, at = [], []
        for i, (lease_key, lease_value, update, _) in enumerate(items):
            args: list = [lease_value, update.device]
            for p in split_at_midnight(update.final_pieces()):
                category = CATEGORY.get(p["label"], "")
                args += [repr(p["start"]), repr(p["end"]), p["label"], category, str(int(p["start"] // DAY))]
            if len(args) > 2:
                keys = [lease_key, self.until_key(), self.pieces_key(update.device), self.today_key(update.device)]
                calls.append((self._keep, keys, args))
                at.append(i)
        return calls, at

    def kept(self, items: Sequence[tuple], at: list[int], replies: list, core=None) -> list[HistoryUpdate | None]:
        """What :meth:`keep_many` returns, from the replies of its calls."""
        out: list[HistoryUpdate | None] = [update for _, _, update, _ in items]  # nothing final: as it is
        for i, reply in zip(at, replies):
            out[i] = None if reply == -1 else self._kept(items[i][2], reply, core, items[i][3])
        return out

    def _kept(self, update: HistoryUpdate, reply, core, classes: Sequence[str]) -> HistoryUpdate:
        flat, day_flat, junk = reply
        if junk and not self.junk:
            log.warning(
                "history of %s: a record in the broker is junk (written by another client?); started afresh "
                "and counted in stats as broker.junk.history",
                update.device,
            )
        self.junk += int(junk)
        kept = [
            {"start": float(flat[i]), "end": float(flat[i + 1]), "label": _text(flat[i + 2]), "final": True}
            for i in range(0, len(flat), 3)
        ]
        provisional = [p for p in update.pieces if not p["final"]]
        today = update.today
        held = _day(dict(zip(map(_text, day_flat[::2]), map(_text, day_flat[1::2]))))
        if core is not None and held is not None:
            core.today.restore(update.device, *held)
            today = core.today.summary(update.device, classes)
        return HistoryUpdate(update.device, kept + provisional, update.mode, today, update.worker)

    def today(self, device: str) -> tuple[str, dict[str, float]] | None:
        """The device's day as kept: its date and seconds per category."""
        return _day({_text(k): _text(v) for k, v in self.client.hgetall(self.today_key(device)).items()})

    def pieces(self, device: str) -> list[dict]:
        """Every final piece kept for the device, in time order."""
        rows = sorted(
            (float(s), float(e), label) for s, e, label in map(json.loads, self.client.hvals(self.pieces_key(device)))
        )
        return [{"start": s, "end": e, "label": label} for s, e, label in rows]


def hash_or_junk(client, key: str) -> dict:
    """``HGETALL key``; a key of another type (another client's junk) reads
    as ``{"": ""}``, which no reader takes (the scripts replace the key at
    their next write)."""
    import redis

    try:
        return client.hgetall(key)
    except redis.ResponseError as exc:
        if "WRONGTYPE" not in str(exc):
            raise
        return {"": ""}


def split_at_midnight(pieces: Sequence[dict]) -> list[dict]:
    """Pieces that cross midnight (UTC) cut in two, so each day counts its own part.

    >>> split_at_midnight([{"start": 86_390.0, "end": 86_410.0, "label": "A", "final": True}])
    [{'start': 86390.0, 'end': 86400.0, 'label': 'A', 'final': True}, {'start': 86400.0, 'end': 86410.0, 'label': 'A', 'final': True}]
    """
    out = []
    for p in pieces:
        start = p["start"]
        while start < p["end"]:
            end = min(p["end"], (math.floor(start / DAY) + 1) * DAY)
            out.append({**p, "start": start, "end": end})
            start = end
    return out


def restore_today(store: HistoryStore, core, devices: Sequence[str]) -> int:
    """Give ``core`` (a StreamCore) each device's day as kept; how many had
    one. A kept day that is junk (not one a worker writes) is left out and
    counted in ``store.junk``; the next final piece starts it afresh."""
    n = 0
    for device in devices:
        raw = {_text(k): _text(v) for k, v in hash_or_junk(store.client, store.today_key(device)).items()}
        held = _day(raw)
        if held is not None:
            core.today.restore(device, *held)
            n += 1
        elif raw:
            store.junk += 1
    return n


#: The day numbers a kept day may have (days since 1970; bus times stay below 1e10 s).
MAX_DAY = int(1e10 // DAY)


def _day(raw: dict[str, str]) -> tuple[str, dict[str, float]] | None:
    """A kept day hash (``day`` number and seconds per category) as (date,
    seconds); None where there is none, or it is junk (a day that is no day
    number of a bus time, seconds that are no numbers: another client's).

    >>> _day({"day": "1", "walking": "60.5"}), _day({"day": "9" * 30}), _day({"day": "1", "walking": "x"})
    (('1970-01-02', {'walking': 60.5}), None, None)
    """
    day = raw.pop("day", None)
    if day is None or not (day.isascii() and day.isdigit()) or int(day) > MAX_DAY:
        return None
    try:
        seconds = {k: float(v) for k, v in raw.items()}
    except ValueError:
        return None
    return day_of(int(day) * DAY), {k: v for k, v in seconds.items() if math.isfinite(v)}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
