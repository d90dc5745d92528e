"""Which connection sends for which device id, and the namespace phones live in.

**Identity rule.** Every device that comes through the gateway is published
on the bus as ``phone:<id>``, where ``<id>`` is what the phone calls itself
(1-58 characters of ``A-Z a-z 0-9 _ . : @ + -``). The gateway never publishes
outside that namespace, so a phone cannot speak for a simulator's ``12:3`` or
any other source's device, and it subscribes to predictions of ``phone:``
devices only, so a phone cannot read anyone else's.

Inside the namespace, one id belongs to one sender at a time: a WebSocket
connection holds its id until it closes; a Sensor Logger session posting
over HTTP holds it for a short lease after each post. A newcomer is refused
(``device_in_use``) unless it shows the id's ``key`` (given to the holder in
its ``welcome``), which lets a phone take its own id back after a reconnect.

Pure bookkeeping, no I/O: the caller closes a displaced connection.

>>> table = ClaimTable()
>>> claim, displaced = table.claim(bus_device("pixel"), owner="conn-1", key=None, now=0.0)
>>> claim.owner, displaced
('conn-1', None)
>>> try:
...     table.claim(bus_device("pixel"), owner="conn-2", key="wrong", now=1.0)
... except FormatError as exc:
...     print(exc.reason)
device_in_use
>>> table.claim(bus_device("pixel"), owner="conn-2", key=claim.key, now=2.0)[1] is claim
True
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from harstream.stream.core.protocol import PHONE_NAMESPACE
from harstream.stream.gateway.phone_formats import FormatError

NAMESPACE = PHONE_NAMESPACE
MAX_CLAIMS = 20_000  # held ids (connections are capped lower; HTTP leases expire)


def bus_device(local: str) -> str:
    """The bus id of a phone's own id.

    >>> bus_device("web-1a2b")
    'phone:web-1a2b'
    """
    return NAMESPACE + local


def local_device(bus: str) -> str:
    """A phone's own id from its bus id (the inverse of :func:`bus_device`)."""
    return bus[len(NAMESPACE) :] if bus.startswith(NAMESPACE) else bus


@dataclass
class Claim:
    """Who currently sends for a device id."""

    owner: Any
    key: str
    conn: Any = None  # the connection predictions go to (anything with ``offer`` and ``close``)
    expires: float | None = None  # HTTP leases expire; connections hold until closed


def in_use(device: str, held: Claim, now: float, http: bool) -> str:
    """Why ``device`` cannot be taken, and what the refused sender can do. An
    HTTP sender (Sensor Logger) shows no key, and an HTTP lease has none to
    show, so only a WebSocket taking over a connection can use a key.

    >>> in_use("phone:a", Claim("post-1", "k", expires=12.0), now=4.0, http=True)
    "device 'phone:a' is in use by another sender's HTTP posts (free in 8 s unless they go on); use another id or wait"
    >>> in_use("phone:a", Claim("conn-1", "k"), now=4.0, http=True)
    "device 'phone:a' is connected elsewhere; use another id or wait until it disconnects"
    >>> in_use("phone:a", Claim("conn-1", "k"), now=4.0, http=False)
    "device 'phone:a' is connected elsewhere; reconnect with its key to take over"
    """
    if held.expires is not None:
        left = max(held.expires - now, 0.0)
        return (
            f"device {device!r} is in use by another sender's HTTP posts (free in {left:.0f} s unless they go on); "
            "use another id or wait"
        )
    if http:
        return f"device {device!r} is connected elsewhere; use another id or wait until it disconnects"
    return f"device {device!r} is connected elsewhere; reconnect with its key to take over"


class ClaimTable:
    """Device id (bus form) → :class:`Claim`."""

    def __init__(self, max_claims: int = MAX_CLAIMS):
        self.max_claims = max_claims
        self._claims: dict[str, Claim] = {}

    def __len__(self) -> int:
        return len(self._claims)

    def __contains__(self, device: object) -> bool:
        return device in self._claims

    def get(self, device: str) -> Claim | None:
        return self._claims.get(device)

    def claim(
        self, device: str, owner: Any, key: str | None, now: float, conn: Any = None, lease: float | None = None
    ) -> tuple[Claim, Claim | None]:
        """Give ``device`` to ``owner``: ``(claim, displaced)``; ``displaced`` is the
        previous holder's claim when its key was shown (close its connection).

        Raises :class:`FormatError` ``device_in_use`` (held by someone else,
        no matching key) or ``busy`` (the table is full).
        """
        if not device.startswith(NAMESPACE):
            raise ValueError(f"{device!r}: the gateway only claims ids in the {NAMESPACE!r} namespace")
        held = self._claims.get(device)
        if held is not None and held.owner == owner:
            if lease is not None:
                held.expires = now + lease
            return held, None
        displaced = None
        if held is not None and not (held.expires is not None and held.expires < now):
            if not self.key_matches(device, key):
                raise FormatError("device_in_use", in_use(device, held, now, http=lease is not None))
            displaced = held
        if held is None and len(self._claims) >= self.max_claims:
            self.expire(now)
            if len(self._claims) >= self.max_claims:
                raise FormatError("busy", f"{len(self._claims)} devices connected, no room for {device!r}")
        claim = Claim(owner, key or secrets.token_urlsafe(16), conn, None if lease is None else now + lease)
        self._claims[device] = claim
        return claim, displaced

    def key_matches(self, device: str, key: str | None) -> bool:
        """Does ``key`` prove ownership of ``device``'s current claim? (constant time)"""
        held = self._claims.get(device)
        return held is not None and key is not None and hmac.compare_digest(key.encode(), held.key.encode())

    def release(self, device: str, owner: Any) -> bool:
        """Drop ``owner``'s claim on ``device``; False if someone else holds it now."""
        held = self._claims.get(device)
        if held is not None and held.owner == owner:
            del self._claims[device]
            return True
        return False

    def expire(self, now: float) -> list[str]:
        """Drop the HTTP leases that ran out; returns their devices."""
        gone = [d for d, c in self._claims.items() if c.expires is not None and c.expires < now]
        for device in gone:
            del self._claims[device]
        return gone

    def devices(self) -> list[str]:
        return list(self._claims)
