"""Partitions of the durable log: which partition a device lives in, and how
many partitions each live worker should own.

Pure functions, no Redis. A device's partition is a stable hash of its id
(crc32, as for the ZeroMQ shards), so every bridge and worker agrees without
talking. Workers balance by quota: with ``n`` live workers sorted by id, the
worker of rank ``r`` owns ``P // n`` partitions, plus one if ``r < P % n``;
it keeps what it holds up to its quota (sticky, like Kafka's cooperative
assignor), gives back the surplus and takes free partitions, preferring its
own residue class so that start-up settles in one round.

>>> partition_of("phone-1", 12) == partition_of("phone-1", 12)
True
>>> [quota(r, 3, 12) for r in range(3)], [quota(r, 5, 12) for r in range(5)]
([4, 4, 4], [3, 3, 2, 2, 2])
>>> plan(owned={0, 1, 2, 3, 4, 5}, free={6, 7}, rank=0, members=2, partitions=8)
Plan(acquire=[], release=[5, 4])
>>> plan(owned=set(), free={1, 3, 5, 7}, rank=1, members=2, partitions=8)
Plan(acquire=[1, 3, 5, 7], release=[])
"""

from __future__ import annotations

from dataclasses import dataclass

from harstream.stream.core.protocol import shard_of

DEFAULT_PARTITIONS = 12  # divisible by 2, 3, 4 and 6 workers


def partition_of(device: str, partitions: int) -> int:
    """The partition of ``device`` among ``partitions`` (crc32; stable across processes)."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    return shard_of(device, partitions)


def quota(rank: int, members: int, partitions: int) -> int:
    """Partitions the worker of ``rank`` (0-based, among ``members``) should own."""
    if not 0 <= rank < members:
        raise ValueError(f"rank {rank} outside 0..{members - 1}")
    return partitions // members + (1 if rank < partitions % members else 0)


@dataclass
class Plan:
    """Partitions to take (free ones) and to give back (surplus), in order."""

    acquire: list[int]
    release: list[int]


def plan(owned: set[int], free: set[int], rank: int, members: int, partitions: int) -> Plan:
    """What a worker should do about its partitions this round.

    ``owned``: partitions it holds; ``free``: partitions nobody holds.
    It never takes a partition another worker holds: that one is freed by its
    owner giving it back or by its lease expiring.
    """
    want = quota(rank, members, partitions)
    if len(owned) > want:
        return Plan([], sorted(owned, reverse=True)[: len(owned) - want])
    # Own residue class first (where a fresh start would put it), then the rest.
    order = sorted(free, key=lambda p: (p % members != rank, p))
    return Plan(order[: want - len(owned)], [])
