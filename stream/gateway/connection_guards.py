"""uvicorn's connection protocols with the gateway's limits on raw connections.

uvicorn parses HTTP (h11) and WebSocket (the ``websockets`` library's
sans-I/O protocol) and hands requests to the Starlette app. What a hostile
client can do before or beside a request never reaches the app, so these
subclasses guard it and count every refusal by reason:

- **HTTP** (:class:`GuardedH11Protocol`): connections beyond
  ``max_connections`` get ``503`` (``busy``), and so do those of a source
  already holding ``max_connections_per_address`` (one address cannot take
  every place: a WebSocket holds its place until it closes; a source is an IPv4
  address or an IPv6 /64, :func:`~harstream.stream.gateway.admission.address_key`), a source opening more than
  ``max_connects_per_s`` gets ``429`` (``source_rate``), a request head not
  complete within ``open_timeout`` of the connection (or of its first byte
  after a response) gets ``408`` (``timeout``; uvicorn itself waits forever,
  even on a connection that never sends a byte), and what h11 cannot parse — a duplicated or signed
  Content-Length, ``1_0``, a bad request line — is answered ``400``
  (``http_malformed``) or ``431`` when the head is over ``max_head``
  (``head_too_large``); a chunked body in more than ``MAX_BODY_PIECES``
  pieces is answered ``400`` (``chunks``: h11 spends time in proportion to
  what is buffered behind each chunk, so 43,000 one-byte chunks in one read
  held the event loop for a second), and a kept-alive connection's requests
  beyond ``max_messages_per_s`` (bursts of 2 s worth) are answered ``429``
  (``rate_limit``, as a WebSocket's messages are; one connection asked as
  fast as the gateway could answer).
- **WebSocket** (:class:`GuardedWebSocketProtocol`): pings and pongs beyond
  ``max_pings_per_s`` close the connection (``ping_rate``), and so does a
  message in more than ``MAX_FRAGMENTS`` frames (``ws_fragments``: empty
  continuation frames never reach the size limit, and uvicorn would keep
  parsing and keeping them until the message ends); a frame over
  ``max_message`` (``too_large``) or breaking the protocol (``ws_protocol``) is
  counted when websockets closes the connection for it.
- **Both**: a client that reads nothing while we have data for it — its
  unsent bytes not shrinking for ``write_timeout``, or over
  ``max_write_buffer`` — is cut off (``slow_reader``), and so is a connection
  still flushing ``write_timeout`` after it was closed.

:func:`guarded_protocols` makes the two classes for one gateway.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio.sslproto import SSLProtocol
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from harstream.stream.gateway.admission import RateLimit, Refusal, SourceLimits, address_key
from harstream.stream.gateway.config import GatewayConfig
from harstream.stream.gateway.counters import Counters

WATCH_INTERVAL_S = 0.5
# Frames one WebSocket message may come in. Phone apps and browsers send a
# message as one frame; a client library fragmenting a 256 KiB message into
# 4 KiB pieces needs 64.
MAX_FRAGMENTS = 64
# Pieces (h11 Data events) of one chunked request body. Apps send a body with a
# Content-Length; a client streaming 256 KiB in chunks of 256 bytes needs 1,024.
MAX_BODY_PIECES = 1024
# The scope key telling a route its request was refused under it (and counted) by a guard.
REFUSED = "harstream.refused"


class GuardedConnection(h11.Connection):
    """h11's server connection with two limits on what one connection asks:

    - each request is charged to the connection's budget (``admit``); past it,
      ``rate_limit`` (429): a kept-alive connection asks no faster than a
      WebSocket may send messages;
    - a chunked body in more than ``MAX_BODY_PIECES`` pieces: ``chunks`` (400).

    Either raises the ``RemoteProtocolError`` uvicorn answers through
    ``send_400_response`` before any route runs; ``refusal`` says which.
    """

    def __init__(self, max_incomplete_event_size: int):
        super().__init__(h11.SERVER, max_incomplete_event_size)
        self.admit: Callable[[], Refusal | None] = lambda: None
        self.chunked = False
        self.pieces = 0
        self.refusal: Refusal | None = None

    def next_event(self) -> Any:
        event = super().next_event()
        if isinstance(event, h11.Request):
            self.chunked = any(name == b"transfer-encoding" for name, _ in event.headers)
            self.pieces = 0
            self._refuse(self.admit())
        elif isinstance(event, h11.Data) and self.chunked:
            self.pieces += 1
            if self.pieces > MAX_BODY_PIECES:
                self._refuse(Refusal(400, "chunks", f"chunked body in more than {MAX_BODY_PIECES} pieces"))
        return event

    def _refuse(self, refusal: Refusal | None) -> None:
        if refusal is not None:
            self.refusal = refusal
            raise h11.RemoteProtocolError(refusal.text)


class Guard:
    """What every guarded connection of one gateway shares: limits, counters, per-source buckets."""

    def __init__(self, config: GatewayConfig, counters: Counters, tls: ssl.SSLContext | None = None):
        self.config = config
        self.counters = counters
        self.tls = tls
        self.sources = SourceLimits(config.max_connects_per_s, 4 * config.max_connects_per_s)
        # Keyed by source: address_key of the client address (an IPv4 address, an IPv6 /64).
        self._source_of: dict[Any, str] = {}  # each open connection's transport -> its source
        self.held: Counter[str] = Counter()  # open connections per source
        self.handshaking: Counter[str] = Counter()  # TLS handshakes under way per source

    def admit(self, source: str, open_now: int) -> Refusal | None:
        """A new connection from ``source``, ``open_now`` open with it: refused, or None."""
        c = self.config
        if open_now > c.max_connections:
            return Refusal(503, "busy", "too many connections")
        if self.held[source] + self.handshaking[source] >= c.max_connections_per_address:
            return Refusal(503, "busy", f"{c.max_connections_per_address} connections from {source} are open already")
        if not self.sources.take(source):
            return Refusal(429, "source_rate", f"more than {c.max_connects_per_s:g} new connections/s from {source}")
        return None

    def hold(self, transport: Any, source: str) -> None:
        self._source_of[transport] = source
        self.held[source] += 1

    def release(self, transport: Any) -> None:
        """A connection closed (an HTTP one, or the WebSocket it was upgraded to)."""
        source = self._source_of.pop(transport, None)
        if source is not None:
            self.held[source] -= 1
            if self.held[source] <= 0:
                del self.held[source]


class WriteWatch:
    """Cuts off a transport whose unsent bytes stop shrinking, grow past a cap,
    or that is still flushing long after it was closed."""

    def __init__(self, transport: asyncio.Transport, guard: Guard, loop: asyncio.AbstractEventLoop):
        self.transport, self.guard, self.loop = transport, guard, loop
        self._stuck = 0.0
        self._closing = 0.0
        self._last = 0
        self._timer: asyncio.TimerHandle | None = loop.call_later(WATCH_INTERVAL_S, self._check)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        c = self.guard.config
        size = self.transport.get_write_buffer_size()
        self._stuck = self._stuck + WATCH_INTERVAL_S if size > 0 and size >= self._last else 0.0
        self._closing = self._closing + WATCH_INTERVAL_S if self.transport.is_closing() else 0.0
        self._last = size
        if size > c.max_write_buffer or self._stuck >= c.write_timeout or self._closing >= c.write_timeout:
            self.guard.counters.reject("slow_reader", f"{size} bytes unread")
            self.transport.abort()
            return
        self._timer = self.loop.call_later(WATCH_INTERVAL_S, self._check)


def _plain_response(refusal: Refusal) -> bytes:
    body = (refusal.text + "\n").encode()
    return (
        f"HTTP/1.1 {refusal.status} {HTTPStatus(refusal.status).phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with connection, source, head-time and parse-error limits."""

    guard: Guard

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.conn: GuardedConnection = GuardedConnection(self.guard.config.max_head)

    #: Set by :class:`TLSGate`, which counted and admitted the connection before its handshake.
    admitted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        g = self.guard
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._watch: WriteWatch | None = None
        source = address_key(self.client[0]) if self.client else "?"
        if not self.admitted:
            g.counters.count("tcp_connections")
            refusal = g.admit(source, len(self.connections))
            if refusal is not None:
                return self._refuse_with(refusal)
        g.hold(transport, source)
        self._requests = RateLimit(g.config.max_messages_per_s, 2 * g.config.max_messages_per_s)
        self.conn.admit = self._admit
        self._watch = WriteWatch(transport, g, self.loop)
        # The head's time runs from the connection itself: one that never
        # sends a byte would otherwise hold its place (and its address's) for ever.
        self._head_timer = self.loop.call_later(g.config.open_timeout, self._head_timeout)

    def _admit(self) -> Refusal | None:
        if self._requests.take():
            return None
        return Refusal(
            429, "rate_limit", f"more than {self.guard.config.max_messages_per_s:g} requests/s on one connection"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timers()
        self.guard.release(self.transport)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        cycle = self.cycle
        if self._head_timer is None and (cycle is None or cycle.response_complete):
            self._head_timer = self.loop.call_later(self.guard.config.open_timeout, self._head_timeout)
        super().data_received(data)
        if self.cycle is not cycle and self._head_timer is not None:  # a request head arrived
            self._head_timer.cancel()
            self._head_timer = None

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._stop_timers()  # the WebSocket protocol watches the transport from here on
        super().handle_websocket_upgrade(event)

    def send_400_response(self, msg: str) -> None:
        if self._refused:
            return
        pending = len(self.conn.trailing_data[0])
        if self.conn.refusal is not None:
            self._refuse_with(self.conn.refusal)
        elif pending >= self.guard.config.max_head:
            self._refuse_with(Refusal(431, "head_too_large", f"request head over {self.guard.config.max_head} bytes"))
        else:
            self._refuse_with(
                Refusal(400, "http_malformed", "malformed HTTP request (request line, header or Content-Length)")
            )

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self._refused and not self.transport.is_closing():
            self._refuse_with(
                Refusal(408, "timeout", f"request head not complete within {self.guard.config.open_timeout:g} s")
            )

    def _refuse_with(self, refusal: Refusal) -> None:
        self.guard.counters.reject(refusal.reason, refusal.text)
        self._refused = True
        if self.cycle is not None:  # a route still reading the body sees it end: counted here, not there
            self.cycle.scope[REFUSED] = refusal.reason  # type: ignore[literal-required]
        self.transport.write(_plain_response(refusal))
        self.transport.close()
        if self._watch is None:  # still cut off a client that never reads the answer
            self._watch = WriteWatch(self.transport, self.guard, self.loop)

    def _stop_timers(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._watch is not None:
            self._watch.stop()
            self._watch = None


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol with ping/pong, write and counted-close limits."""

    guard: Guard

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._control = RateLimit(self.guard.config.max_pings_per_s, 10.0)
        self._failed = False
        self._fragments = 0  # frames of the message being received
        self._watch: WriteWatch | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._watch = WriteWatch(transport, self.guard, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.stop()
        self.guard.release(self.transport)
        super().connection_lost(exc)

    def handle_ping(self) -> None:
        if self._control_frame_allowed():
            super().handle_ping()

    def handle_pong(self, event: Any) -> None:
        if self._control_frame_allowed():
            super().handle_pong(event)

    def handle_text(self, event: Any) -> None:
        if not self._failed:
            self._fragments = 1
            super().handle_text(event)

    def handle_bytes(self, event: Any) -> None:
        if not self._failed:
            self._fragments = 1
            super().handle_bytes(event)

    def handle_cont(self, event: Any) -> None:
        if self._failed:
            return
        self._fragments += 1
        if self._fragments > MAX_FRAGMENTS:
            self._fail("ws_fragments", f"message in more than {MAX_FRAGMENTS} frames")
            return
        super().handle_cont(event)

    def _control_frame_allowed(self) -> bool:
        if self._failed:
            return False
        if self._control.take():
            return True
        self._fail("ping_rate", f"more than {self.guard.config.max_pings_per_s:g} pings/pongs per s", "too many pings")
        return False

    def _fail(self, reason: str, detail: str, close_reason: str | None = None) -> None:
        """Close with 1008 now, counted as ``reason``; what the client still sends is dropped."""
        self.guard.counters.reject(reason, detail)
        self._failed = True
        self.frames = []
        self.conn.fail(1008, close_reason or detail)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()

    def handle_parser_exception(self) -> None:
        if not self._failed:
            self._failed = True
            sent = self.conn.close_sent
            code = sent.code if sent is not None else 1002
            reason = "too_large" if code == 1009 else "ws_protocol"
            self.guard.counters.reject(reason, f"WebSocket closed with {code}: {sent.reason if sent else ''}")
        super().handle_parser_exception()

    def data_received(self, data: bytes) -> None:
        if self._failed:
            return  # the connection is being closed; what it still sends is dropped
        super().data_received(data)


class TLSGate(asyncio.Protocol):
    """A raw TCP connection to a gateway serving TLS: admitted by the same
    limits as any (:meth:`Guard.admit`: places, the address's places, its rate),
    then its handshake, which must end within ``open_timeout``; then
    ``inner``, the guarded HTTP protocol, takes the encrypted connection.

    asyncio's own TLS server runs the handshake before any protocol sees the
    connection, for up to 60 s: connections that never sent a byte were held
    uncounted, past every limit, until the process had no file left.
    """

    def __init__(self, guard: Guard, inner: GuardedH11Protocol):
        self.guard, self.inner = guard, inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        g, inner = self.guard, self.inner
        assert g.tls is not None and isinstance(transport, asyncio.Transport)
        g.counters.count("tcp_connections")
        peer = transport.get_extra_info("peername")
        source = address_key(str(peer[0])) if peer else "?"
        refusal = g.admit(source, len(inner.connections) + sum(g.handshaking.values()) + 1)
        if refusal is not None:  # nothing can be said before the handshake: the connection is closed
            g.counters.reject(refusal.reason, refusal.text)
            transport.abort()
            return
        g.handshaking[source] += 1
        inner.admitted = True
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        # before the handshake's own timer starts (in connection_made): a handshake cut by
        # that timer then always took open_timeout or more, and is counted a timeout
        started = loop.time()
        tls = SSLProtocol(loop, inner, g.tls, done, server_side=True, ssl_handshake_timeout=g.config.open_timeout)
        transport.set_protocol(tls)
        tls.connection_made(transport)
        done.add_done_callback(lambda _: self._handshake_ended(done, source, loop.time() - started, transport))

    def _handshake_ended(self, done: asyncio.Future, source: str, took: float, transport: asyncio.Transport) -> None:
        g = self.guard
        g.handshaking[source] -= 1
        if g.handshaking[source] <= 0:
            del g.handshaking[source]
        failed = done.cancelled() or done.exception() is not None
        if failed:
            if took >= g.config.open_timeout:
                g.counters.reject(
                    "timeout", f"TLS handshake from {source} not complete within {g.config.open_timeout:g} s"
                )
            else:
                g.counters.reject("tls", f"TLS handshake from {source} failed")
            transport.abort()

    def data_received(self, data: bytes) -> None:  # the TLS protocol reads from here on
        pass


def guarded_protocols(
    config: GatewayConfig, counters: Counters, tls: ssl.SSLContext | None = None
) -> tuple[Callable[..., asyncio.Protocol], type]:
    """What uvicorn's ``http=`` and ``ws=`` take: the guarded HTTP protocol (behind
    a :class:`TLSGate` when serving ``tls``) and the guarded WebSocket protocol."""
    guard = Guard(config, counters, tls)
    http = type("GatewayHttpProtocol", (GuardedH11Protocol,), {"guard": guard})
    ws = type("GatewayWebSocketProtocol", (GuardedWebSocketProtocol,), {"guard": guard})
    if tls is None:
        return http, ws

    def gated(**kwargs: Any) -> asyncio.Protocol:
        return TLSGate(guard, http(**kwargs))

    return gated, ws
