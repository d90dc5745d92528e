"""Which topics someone on the output bus has asked for.

An XPUB socket hands its owner the subscription messages of its peers:
``b"\\x01" + prefix`` to subscribe, ``b"\\x00" + prefix`` to unsubscribe
(ZeroMQ passes the first subscription to a prefix and the last
unsubscription, also when a subscriber goes away). The worker reads them so
that output nobody can receive, such as the raw-signal feed of a device no
page is showing, is never computed.

>>> subs = Subscriptions()
>>> subs.wants(b"g/phone-1/")
False
>>> subs.feed(b"\\x01g/phone-1/")
True
>>> subs.wants(b"g/phone-1/"), subs.wants(b"g/phone-2/")
(True, False)
>>> subs.feed(b"\\x00g/phone-1/")
True
>>> subs.wants(b"g/phone-1/")
False
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Collection

from harstream.stream.core.protocol import SIGNAL_PREFIX, signal_topic

MAX_PREFIXES = 10_000  # more than this and every topic counts as wanted from then on (never lose output to a limit)
# The longest prefix worth keeping: longer than any topic the output bus carries
# (``p/`` + a 64-character device id + ``/``; a stats topic names a worker), so a
# longer one can match nothing and is counted (``too_long``), not kept. ZeroMQ keeps
# every subscription in a trie of one node per byte (about 80 bytes of memory per
# byte of prefix), so an XPUB socket takes no message longer than
# MAX_SUBSCRIPTION_BYTES (ZMQ_MAXMSGSIZE: the peer sending one is disconnected
# before it is held). That bound also applies to the CURVE handshake's commands
# (INITIATE is about 300 bytes), hence 1 KiB rather than a topic's length.
MAX_PREFIX_BYTES = 255
MAX_SUBSCRIPTION_BYTES = 1024  # and CURVE handshake commands (INITIATE: ~300 bytes), which count too
MAX_CHANGES = 256  # recent changes listed for consumers; one further back sees "anything may have changed"


class Subscriptions:
    """The set of subscribed prefixes; ``version`` changes whenever it does.

    A subscriber controls what it sends here, so the costs are bounded: at
    most ``MAX_PREFIXES`` prefixes are kept (past that, every topic counts as
    wanted, which is what a worker did before it read subscriptions), and
    :meth:`wants` looks up each prefix of the topic, so its cost follows the
    topic's length, not the number of subscriptions. A prefix longer than
    ``MAX_PREFIX_BYTES`` can match no topic: it is counted (``too_long``)
    and not kept.
    """

    __slots__ = ("_prefixes", "version", "ignored", "too_long", "overflowed", "_log", "_floor")

    def __init__(self) -> None:
        self._prefixes: Counter[bytes] = Counter()
        self.version = 0
        self.ignored = 0  # messages that were not subscription messages
        self.too_long = 0  # prefixes longer than MAX_PREFIX_BYTES, not kept
        self.overflowed = False
        self._log: deque[tuple[int, bytes]] = deque()  # (version it made, prefix), oldest first
        self._floor = 0  # a consumer at a version below this cannot be told what changed

    def __len__(self) -> int:
        """Prefixes kept."""
        return len(self._prefixes)

    def stats(self) -> dict:
        """For the stats topic: prefixes kept, whether the limit was passed,
        messages ignored, prefixes refused as too long."""
        return {
            "prefixes": len(self._prefixes),
            "overflowed": self.overflowed,
            "ignored": self.ignored,
            "too_long": self.too_long,
        }

    def changes_since(self, version: int) -> list[bytes] | None:
        """The prefixes subscribed or unsubscribed after ``version`` (each
        consumer keeps its own), or None when that is too far back to list
        (anything may have changed)."""
        if version < self._floor:
            return None
        return [prefix for made, prefix in self._log if made > version]

    def feed(self, message: bytes) -> bool:
        """Take one message read from the XPUB socket; True if it changed
        the set. Anything but a (un)subscription is counted and ignored."""
        if not message or message[0] not in (0, 1):
            self.ignored += 1
            return False
        if len(message) - 1 > MAX_PREFIX_BYTES:
            self.too_long += 1
            return False
        if self.overflowed:
            return False
        prefix = bytes(message[1:])
        if message[0] == 1:
            if prefix not in self._prefixes and len(self._prefixes) >= MAX_PREFIXES:
                self.overflowed = True
                self._prefixes.clear()
                self.version += 1
                self._log.clear()
                self._floor = self.version
                return True
            self._prefixes[prefix] += 1
            changed = self._prefixes[prefix] == 1
        elif self._prefixes[prefix] > 1:
            self._prefixes[prefix] -= 1
            changed = False
        else:
            changed = self._prefixes.pop(prefix, 0) > 0
        if changed:
            self.version += 1
            self._log.append((self.version, prefix))
            if len(self._log) > MAX_CHANGES:
                self._floor = self._log.popleft()[0]
        return changed

    def wants(self, topic: bytes) -> bool:
        """True if some subscriber's prefix matches ``topic``."""
        if self.overflowed:
            return True
        prefixes = self._prefixes
        return any(topic[:i] in prefixes for i in range(len(topic) + 1))


class WatchedDevices:
    """The devices whose signal topic (``g/<device>/``) someone subscribed
    to, kept up to date from :class:`Subscriptions` at a bounded cost: a
    change to one device's exact topic (the dashboard following a device)
    is applied at once; any other change to the signal topics (``g/``,
    ``g/phone``, too many changes) is applied by looking at every device,
    at most once per ``full_every`` seconds.

    >>> subs = Subscriptions()
    >>> watched = WatchedDevices(subs)
    >>> subs.feed(b"\\x01g/phone-1/")
    True
    >>> watched.update({"phone-1", "phone-2"}, now=0.0), sorted(watched.names)
    (set(), ['phone-1'])
    """

    def __init__(self, subscriptions: Subscriptions, full_every: float = 1.0):
        self.subscriptions = subscriptions
        self.full_every = full_every
        self.names: set[str] = set()
        self._version = subscriptions.version
        self._full_due = False
        self._last_full = -math.inf

    def add_if_wanted(self, name: str) -> None:
        """A new device: watched if its topic is subscribed to."""
        if self.subscriptions.wants(signal_topic(name)):
            self.names.add(name)

    def update(self, devices: Collection[str], now: float) -> set[str]:
        """Bring :attr:`names` up to date with the subscriptions and the
        devices known; returns the devices that stopped being watched."""
        before = set(self.names)
        subs = self.subscriptions
        if subs.version != self._version:
            changed = subs.changes_since(self._version)
            self._version = subs.version
            signal_changes = None if changed is None else [p for p in changed if _touches_signals(p)]
            if signal_changes is None or not all(map(_is_device_topic, signal_changes)):
                self._full_due = True
            else:
                for prefix in signal_changes:
                    name = prefix[len(SIGNAL_PREFIX) : -1].decode("utf-8", "replace")
                    if name in devices and subs.wants(prefix):
                        self.names.add(name)
                    else:
                        self.names.discard(name)
        if self._full_due and now >= self._last_full + self.full_every:
            self._full_due, self._last_full = False, now
            self.names = {name for name in devices if subs.wants(signal_topic(name))}
        # by looking up each watched name: intersecting with a keys view walks every device
        self.names = {name for name in self.names if name in devices}
        return before - self.names


def _touches_signals(prefix: bytes) -> bool:
    """Whether subscribing to ``prefix`` can change which signal topics are wanted."""
    return prefix.startswith(SIGNAL_PREFIX) or SIGNAL_PREFIX.startswith(prefix)


def _is_device_topic(prefix: bytes) -> bool:
    """``g/<one device id>/`` exactly (ids hold no ``/``)."""
    body = prefix[len(SIGNAL_PREFIX) :]
    return prefix.startswith(SIGNAL_PREFIX) and len(body) > 1 and body.endswith(b"/") and b"/" not in body[:-1]
