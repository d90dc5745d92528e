"""Who may talk to the gateway: Host allow-list, Origin, token, header sanity, rates.

Pure decisions on a request's head (ASGI-style headers: lower-case byte
names and byte values); the routes and connection guards turn a
:class:`Refusal` into an HTTP answer and a counted reason.

- **Host** must name the gateway: a loopback name or address, the address it
  was bound to, or a name given with ``--allow-host``. A web page on another
  site that re-points its own name at this machine (DNS rebinding) sends its
  own name as Host and is refused, whatever its Origin says.
- **Origin**, when a browser sends one, must be this very host: apps send none.
- **Token**, when set, in ``?token=`` or ``Authorization: Bearer``.
- Headers that decide any of the above may appear once only.
- Every per-address limit counts a client by :func:`address_key`: an IPv4
  address, or the /64 of an IPv6 one (what one home or phone network is given).

>>> policy = HostPolicy("127.0.0.1", 8765, allow=["phone-gw.lan"])
>>> [policy.allows(h) for h in ("127.0.0.1:8765", "localhost", "[::1]:8765", "PHONE-GW.lan:8765", "evil.example:8765")]
[True, True, True, True, False]
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

#: Headers that must not appear twice: each decides who is asking or how the body is framed.
SINGLE_HEADERS = (
    b"host",
    b"origin",
    b"authorization",
    b"content-length",
    b"transfer-encoding",
    b"content-type",
    b"upgrade",
    b"sec-websocket-key",
    b"sec-websocket-version",
)
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
WILDCARDS = ("", "0.0.0.0", "::")


@dataclass
class Refusal:
    """Why a request is not served: HTTP ``status``, counted ``reason``, a one-line ``text``."""

    status: int
    reason: str
    text: str


def is_loopback(host: str) -> bool:
    """True for loopback names and addresses (the gateway's safe default).

    >>> is_loopback("localhost"), is_loopback("127.0.0.2"), is_loopback("::1"), is_loopback("192.168.1.2")
    (True, True, True, False)
    """
    if host.lower() in LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def address_key(address: str) -> str:
    """The key every per-address limit counts a client address under.

    An IPv4 address is its own key; an IPv6 address is counted by its /64,
    the network every home router and phone network hands one subscriber (a
    host holding one can take a fresh address per connection); an IPv4-mapped
    IPv6 address (``::ffff:a.b.c.d``, an IPv4 client of a dual-stack socket)
    is that IPv4 address. Anything else (``"?"``, a Unix socket) is kept as it is.

    >>> address_key("192.0.2.7"), address_key("::ffff:192.0.2.7")
    ('192.0.2.7', '192.0.2.7')
    >>> address_key("2001:db8:1:2:aaaa::1"), address_key("2001:DB8:1:2::bbbb"), address_key("2001:db8:1:3::1")
    ('2001:db8:1:2::/64', '2001:db8:1:2::/64', '2001:db8:1:3::/64')
    >>> address_key("fe80::1%eth0"), address_key("::1"), address_key("?")
    ('fe80::/64', '::/64', '?')
    """
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def split_host(value: str) -> str:
    """The host name of a Host header value, lower case, without port or brackets.

    >>> split_host("Example.COM:8765"), split_host("[::1]:80"), split_host("::1")
    ('example.com', '::1', '::1')
    """
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value  # a bare IPv6 address, or a name without port


class HostPolicy:
    """Which Host header values name this gateway."""

    def __init__(self, bind_host: str, port: int, allow: Iterable[str] = ()):
        self.port = port
        self.names = {split_host(h) for h in allow}
        if bind_host not in WILDCARDS:
            self.names.add(split_host(bind_host))

    def allows(self, host_header: str) -> bool:
        host = split_host(host_header)
        return bool(host) and (is_loopback(host) or host in self.names)


def header_values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in headers if k == name]


def check_head(
    headers: Sequence[tuple[bytes, bytes]], target_length: int, max_headers: int, max_target: int, max_head: int
) -> Refusal | None:
    """Sanity of a request head: size, header count, target length, no duplicated deciding header.

    (h11 bounds a head that arrives in pieces; one that arrives whole is measured here.)
    """
    size = target_length + sum(len(k) + len(v) + 4 for k, v in headers)
    if size > max_head:
        return Refusal(431, "head_too_large", f"request head of {size} bytes, at most {max_head}")
    if len(headers) > max_headers:
        return Refusal(431, "headers", f"{len(headers)} header lines, at most {max_headers}")
    if target_length > max_target:
        return Refusal(414, "uri_too_long", f"path and query of {target_length} bytes, at most {max_target}")
    seen: set[bytes] = set()
    for name, _ in headers:
        if name in SINGLE_HEADERS:
            if name in seen:
                return Refusal(400, "duplicate_header", f"header {name.decode()} given more than once")
            seen.add(name)
    return None


def check_host(headers: Sequence[tuple[bytes, bytes]], policy: HostPolicy) -> Refusal | None:
    hosts = header_values(headers, b"host")
    if not hosts:
        return Refusal(400, "host", "a Host header is required")
    if not policy.allows(hosts[0]):
        return Refusal(
            403,
            "host",
            f"Host {hosts[0][:80]!r} is not this gateway; start it with --allow-host NAME to serve that name",
        )
    return None


def check_origin(headers: Sequence[tuple[bytes, bytes]]) -> Refusal | None:
    """Refuse a web page from another origin; apps (no Origin header) pass.

    The Host was already checked against the allow-list, so an Origin equal to
    it is this gateway's own page.
    """
    origins = header_values(headers, b"origin")
    if not origins:
        return None
    origin, host = origins[0], (header_values(headers, b"host") or [""])[0]
    try:
        split = urlsplit(origin)
    except ValueError:  # "http://[::1" (an unclosed IPv6 bracket), "http://[zz]"
        return Refusal(403, "origin", f"malformed Origin {origin[:80]!r} refused")
    if origin == "null" or split.scheme not in ("http", "https") or split.netloc.lower() != host.lower():
        return Refusal(403, "origin", f"cross-origin request from {origin[:80]} refused")
    return None


def check_token(token: str | None, query: bytes, headers: Sequence[tuple[bytes, bytes]]) -> Refusal | None:
    if not token:
        return None
    given = parse_qs(query.decode("latin-1")).get("token", [""])[0]
    auth = (header_values(headers, b"authorization") or [""])[0]
    if not given and auth.startswith("Bearer "):
        given = auth[7:]
    if hmac.compare_digest(given.encode(), token.encode()):
        return None
    return Refusal(401, "auth", "missing or wrong token (?token=... or Authorization: Bearer ...)")


class RateLimit:
    """Token bucket: ``rate`` per second, bursts up to ``burst`` (it starts
    with ``start``, default ``burst``).

    >>> bucket = RateLimit(rate=1.0, burst=2.0)
    >>> [bucket.take() for _ in range(3)]
    [True, True, False]
    """

    def __init__(self, rate: float, burst: float, start: float | None = None, now: float | None = None):
        self.rate, self.burst = rate, burst
        self.tokens = burst if start is None else min(start, burst)
        self.stamp = time.monotonic() if now is None else now

    def take(self, n: float = 1.0, now: float | None = None) -> bool:
        """Spend ``n`` if there is that much; ``now`` is the bucket's own clock
        if it was made with one (else ``time.monotonic()``)."""
        now = time.monotonic() if now is None else now
        self.tokens = min(
            self.burst, self.tokens + max(now - self.stamp, 0.0) * self.rate
        )  # a clock set back earns nothing
        self.stamp = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


class SourceLimits:
    """One :class:`RateLimit` per key (a client address, a device), at most ``max_keys`` remembered.

    The least recently used key is forgotten first; a forgotten key starts
    again with a full bucket, so the table stays bounded however many keys come.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000):
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[str, RateLimit] = OrderedDict()

    def take(self, key: str, n: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = RateLimit(self.rate, self.burst)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(n)
