"""The gateway's counters: what it did (``counts``) and what it refused, by reason.

One instance per gateway, shared by every part that refuses something (the
connection guards, the HTTP/WebSocket routes, the device feeds, the
SensorServer client), and shown at ``/stats``.

>>> c = Counters()
>>> c.reject("host", "Host evil.example")
>>> c.count("messages", 2)
>>> dict(c.rejects), dict(c.counts)
({'host': 1}, {'messages': 2})
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("harstream.gateway")

# Every reason the gateway may count a refusal under, beyond the message
# reasons of phone_formats.REASONS; docs/phones.md lists them all.
EDGE_REASONS = (
    "host",  # Host header missing or not an allowed name (DNS rebinding)
    "origin",  # a web page from another origin
    "duplicate_header",  # Host, Origin, Authorization, ... given twice
    "headers",  # too many header lines
    "head_too_large",  # request line + headers over the limit
    "uri_too_long",  # path + query over the limit
    "http_malformed",  # not parseable HTTP (bad Content-Length, bad line, ...)
    "chunks",  # a chunked body in more pieces than any client sends
    "not_found",  # no such path
    "method",  # method not allowed on that path
    "timeout",  # request head or body (or a TLS handshake) not complete in time
    "tls",  # a TLS handshake that failed (plain HTTP on the TLS port, no common cipher, ...)
    "source_rate",  # too many new connections from one address
    "ping_rate",  # WebSocket ping/pong flood
    "ws_fragments",  # a WebSocket message in more frames than any client sends
    "slow_reader",  # a client that does not read what it is sent
    "ws_protocol",  # a WebSocket frame that breaks the protocol (bad opcode, bad UTF-8, ...)
    "memory",  # a message that could not be held in memory
    "internal",  # a bug: the request failed unexpectedly (logged with a traceback)
    "time",  # readings far in the future, or spanning too long
)


class Counters:
    """``counts`` of work done and ``rejects`` by reason; both plain Counters."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.rejects: Counter[str] = Counter()

    def reject(self, reason: str, detail: str = "", n: int = 1) -> None:
        self.rejects[reason] += n
        log.debug("reject %s: %s", reason, detail)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] += n
