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

from collections import Counter

MAX_PREFIXES = 10_000  # beyond this, every topic counts as wanted (never lose output to a table limit)


class Subscriptions:
    """The set of subscribed prefixes; ``version`` changes whenever it does."""

    __slots__ = ("_prefixes", "version", "ignored")

    def __init__(self) -> None:
        self._prefixes: Counter[bytes] = Counter()
        self.version = 0
        self.ignored = 0  # messages that were not subscription messages

    def feed(self, message: bytes) -> bool:
        """Take one message read from the XPUB socket; True if it changed
        the set. Anything but a (un)subscription is counted and ignored."""
        if not message or message[0] not in (0, 1):
            self.ignored += 1
            return False
        prefix = bytes(message[1:])
        if message[0] == 1:
            self._prefixes[prefix] += 1
            changed = self._prefixes[prefix] == 1
        elif self._prefixes[prefix] > 1:
            self._prefixes[prefix] -= 1
            changed = False
        else:
            changed = self._prefixes.pop(prefix, 0) > 0
        if changed:
            self.version += 1
        return changed

    def wants(self, topic: bytes) -> bool:
        """True if some subscriber's prefix matches ``topic``."""
        if len(self._prefixes) > MAX_PREFIXES:
            return True
        return any(topic.startswith(prefix) for prefix in self._prefixes)
