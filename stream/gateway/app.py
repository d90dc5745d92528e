"""The gateway's routes: a Starlette app behind an admission check.

- ``/ws``     WebSocket: harstream JSON protocol or Sensor Logger JSON
- ``/data``   Sensor Logger HTTP POST (or the same JSON over a WebSocket)
- ``/phone``  a page that streams a phone browser's DeviceMotion over ``/ws``
- ``/stats``  counters and refusals by reason, as JSON

Every request first passes :class:`Admission` (Host allow-list, header
sanity, token, Origin: see :mod:`.gateway_admission`); every refusal, here or
in a route, is answered with a one-line reason and counted in ``/stats``.

**Adding routes** (e.g. a per-device calibration upload): pass Starlette
routes as ``extra_routes`` to :func:`build_app` (``Gateway(config,
extra_routes=...)``). They sit behind the same admission check (Host, Origin,
token). A route acting for one device takes the phone's own id and its
``key`` (from the ``welcome``) and checks ownership with
``gateway.claims.key_matches(bus_device(id), key)``; per-device files go
under a folder named by the validated id (:func:`.phone_formats.check_device`),
never by raw input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from harstream.stream.gateway.admission import (
    HostPolicy,
    RateLimit,
    Refusal,
    address_key,
    check_head,
    check_host,
    check_origin,
    check_token,
)
from harstream.stream.gateway.connection_guards import REFUSED
from harstream.stream.gateway.device_claims import local_device
from harstream.stream.gateway.phone_formats import (
    FormatError,
    Hello,
    MessageOrder,
    Readings,
    detect_format,
    load_message,
    parse_hello,
    parse_samples,
    parse_sensor_logger,
)
from harstream.stream.gateway.port import GatewayPort

log = logging.getLogger("harstream.gateway")

STATIC = {
    "/phone": ("phone.html", "text/html; charset=utf-8"),
    "/phone.js": ("phone.js", "text/javascript"),
    "/calibrate.js": ("calibrate.js", "text/javascript"),
}
PUBLIC = ("/", *STATIC)  # served without a token: the page reads the token from its own URL
OUTBOX = 64  # messages queued to one phone; past this, predictions for it are dropped (counted)
MAX_SESSIONS = 10_000  # Sensor Logger HTTP sessions whose message order is tracked
RELEASE_S = 0.5  # how often batches waiting for a missing one are looked at, while any waits
DRAIN_FACTOR = 16  # an oversized body up to this many times the limit is read before refusing it
CLOSE = {"Connection": "close"}  # after a refused body: do not read the rest as another request
HTTP_STATUS = {"device_in_use": 409, "too_large": 413, "rate_limit": 429, "busy": 503}
# An Android phone at its top rates pushes 120-210 KiB a second in Sensor Logger's JSON (docs/phones.md).
TOO_LARGE_ADVICE = (
    "in Sensor Logger set a shorter batch period (1 s), a sampling rate of 100 Hz, or fewer sensors "
    "(accelerometer, gravity or total acceleration, gyroscope, barometer are all harstream reads); "
    "or run the gateway with a larger --max-message"
)


class Admission:
    """ASGI middleware: Host, header sanity, token and Origin, before any route runs."""

    def __init__(self, app: ASGIApp, gateway: GatewayPort, policy: HostPolicy):
        self.app, self.gateway, self.policy = app, gateway, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        c = self.gateway.config
        headers = scope["headers"]
        refusal = check_head(
            headers, len(scope["raw_path"]) + len(scope["query_string"]), c.max_headers, c.max_target, c.max_head
        ) or check_host(headers, self.policy)
        if refusal is None and scope["path"] not in PUBLIC:
            refusal = check_token(c.token, scope["query_string"], headers) or check_origin(headers)
        if refusal is None:
            return await self.app(scope, receive, send)
        self.gateway.counters.reject(refusal.reason, refusal.text)
        await refuse(scope, send, refusal)


async def refuse(scope: Scope, send: Send, refusal: Refusal) -> None:
    """Answer ``refusal`` as plain text, on HTTP or as a WebSocket handshake denial."""
    body = (refusal.text + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
    ]
    kind = "http" if scope["type"] == "http" else "websocket.http"
    await send({"type": f"{kind}.response.start", "status": refusal.status, "headers": headers})
    await send({"type": f"{kind}.response.body", "body": body})


def build_app(gateway: GatewayPort, policy: HostPolicy, extra_routes: Sequence[BaseRoute] = ()) -> ASGIApp:
    """The gateway's ASGI app: routes (plus ``extra_routes``) behind :class:`Admission`."""
    routes = Routes(gateway)
    table: list[BaseRoute] = [
        Route("/", routes.index, methods=["GET", "HEAD"]),
        *(Route(path, routes.static, methods=["GET", "HEAD"]) for path in STATIC),
        Route("/stats", routes.stats, methods=["GET", "HEAD"]),
        Route("/data", routes.post_data, methods=["POST"]),
        WebSocketRoute("/ws", routes.websocket),
        WebSocketRoute("/data", routes.websocket),
        *extra_routes,
        WebSocketRoute("/{rest:path}", routes.websocket_not_found),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        reason = {404: "not_found", 405: "method"}.get(exc.status_code, "http")
        gateway.counters.reject(reason, f"{request.method} {request.url.path[:80]}")
        text = "not found: try /phone, /ws, /data or /stats" if exc.status_code == 404 else exc.detail
        return PlainTextResponse(f"{text}\n", status_code=exc.status_code, headers={**(exc.headers or {}), **CLOSE})

    app = Starlette(routes=table, exception_handlers={404: http_error, 405: http_error})
    return Admission(app, gateway, policy)


class PhoneConnection:
    """One phone's WebSocket, seen from the gateway: a bounded outbox and a close.

    Replies to the phone's own messages are sent with :meth:`reply`, which
    waits while the phone reads (so a phone that floods us is slowed down).
    Predictions go through :meth:`offer`, which never waits: a phone that does
    not read fills its outbox and loses further predictions (counted); the
    connection guard cuts it off if it stays stuck.
    """

    def __init__(self, ws: WebSocket):
        self.ws = ws
        self._outbox: asyncio.Queue[str] = asyncio.Queue(OUTBOX)
        self._pump = asyncio.create_task(self._send_all())
        self.closing = False

    async def reply(self, message: dict) -> None:
        """Send a reply now, waiting while the phone reads (a phone that never
        reads is cut off by the connection guard, which ends this wait)."""
        try:
            await self.ws.send_text(json.dumps(message))
        except Exception:  # gone: the receive loop sees the disconnect next
            self.closing = True

    def offer(self, text: str) -> bool:
        try:
            self._outbox.put_nowait(text)
            return True
        except asyncio.QueueFull:
            return False

    async def _send_all(self) -> None:
        try:
            while True:
                await self.ws.send_text(await self._outbox.get())
        except Exception:  # the connection went away; the receive loop sees it too
            return

    def close(self, code: int, reason: str) -> None:
        """Close from elsewhere (a takeover): the receive loop ends on the disconnect."""
        if not self.closing:
            self.closing = True
            asyncio.ensure_future(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self.ws.close(code, reason[:120])
        except Exception:
            pass

    async def stop(self) -> None:
        self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)


class Routes:
    """The handlers; all state lives in the :class:`~.gateway.Gateway`."""

    def __init__(self, gateway: GatewayPort):
        self.gateway = gateway
        self._static = {
            path: resources.files(__package__).joinpath("static", name).read_bytes()
            for path, (name, _) in STATIC.items()
        }
        self._orders: dict[Any, MessageOrder] = {}  # Sensor Logger HTTP sessions
        self._sweeper: asyncio.Task | None = None  # releases batches that waited out a missing one

    # ---------------------------------------------------------------- HTTP

    async def index(self, request: Request) -> Response:
        return PlainTextResponse(
            "harstream gateway: WebSocket /ws, Sensor Logger POST /data, phone page /phone, /stats\n"
        )

    async def static(self, request: Request) -> Response:
        path = request.url.path
        return Response(self._static[path], media_type=STATIC[path][1], headers={"Cache-Control": "no-store"})

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.gateway.stats(), headers={"Cache-Control": "no-store"})

    async def post_data(self, request: Request) -> Response:
        """One Sensor Logger batch. Never raises: every failure is an answer and a count."""
        gw, c = self.gateway, self.gateway.config
        gw.counters.count("http_posts")
        msg: Any = None
        try:
            body = await self._read_body(request)
            msg = load_message(body)
            platform = parse_qs(request.url.query).get("platform", ["android"])[0]
            readings = parse_sensor_logger(msg, platform)
            assert readings.device is not None
            # The lease belongs to the recording session: another session
            # (or a forged deviceId) cannot post while it is live.
            owner = ("http", readings.device, readings.session)
            device = gw.claim(readings.device, owner, None, lease=c.http_lease)
            order = self._orders.get(owner)
            if order is None:
                order = self._orders[owner] = MessageOrder()
                if len(self._orders) > MAX_SESSIONS:  # sessions come and go; forget the oldest
                    self._orders.pop(next(iter(self._orders)))
            self._pass_on(device, readings.session, order.add(msg.get("messageId"), readings, time.monotonic()))
            if order.pending and self._sweeper is None:
                self._sweeper = asyncio.create_task(self._release_overdue())
        except FormatError as exc:
            gw.counters.reject(exc.reason, exc.detail)
            self._refused_batch(msg)
            advice = f"; {TOO_LARGE_ADVICE}" if exc.reason == "too_large" else ""
            return PlainTextResponse(
                f"{exc.reason}: {exc.detail}{advice}\n",
                status_code=HTTP_STATUS.get(exc.reason, 400),
                headers=CLOSE if exc.reason == "too_large" else None,
            )
        except TimeoutError:
            gw.counters.reject("timeout", "POST body")
            return PlainTextResponse(f"body not complete within {c.open_timeout:g} s\n", status_code=408, headers=CLOSE)
        except ClientDisconnect:
            if REFUSED not in request.scope:  # else the connection guard refused it, and counted why
                gw.counters.reject("timeout", "client left before sending its body")
            return PlainTextResponse("incomplete body\n", status_code=400)
        except MemoryError:
            gw.counters.reject("memory", "POST /data")
            return PlainTextResponse("message too large to hold\n", status_code=413, headers=CLOSE)
        except Exception:  # never let one request take the gateway down
            log.exception("POST /data failed")
            gw.counters.reject("internal", "POST /data")
            return PlainTextResponse("internal error\n", status_code=500)
        gw.counters.count("messages")
        return PlainTextResponse("ok\n")

    def _pass_on(self, device: str, session: str | None, batches: list[Readings]) -> None:
        for ready in batches:
            self.gateway.publish(device, ready, "sensorlogger")
            self._publish_watch(ready, ("http", session))

    def _pass_on_later(self, owner: tuple[str, str, str | None], batches: list[Readings]) -> None:
        """Batches a session's order let go outside the request that brought
        them (a later refusal, the sweep): each published under the session's
        claim, taken again; what cannot be (the id went to another sender, the
        feed refuses the readings) is counted, never raised."""
        gw = self.gateway
        for ready in batches:
            try:
                device = gw.claim(owner[1], owner, None, lease=gw.config.http_lease)
                self._pass_on(device, owner[2], [ready])
            except FormatError as exc:
                gw.counters.reject(exc.reason, exc.detail)

    def _refused_batch(self, msg: Any) -> None:
        """A refused push leaves a hole in its session's ``messageId`` sequence
        that nothing will fill: the batches waiting behind it go on now instead
        of after the order's longest wait."""
        if not isinstance(msg, dict):
            return
        local, session = msg.get("deviceId"), msg.get("sessionId")
        if not isinstance(local, str) or not (session is None or isinstance(session, str | int)):
            return
        owner = ("http", local, None if session is None else str(session))
        order = self._orders.get(owner)
        if order is None:
            return
        self._pass_on_later(owner, order.refused(msg.get("messageId"), time.monotonic()))

    async def _release_overdue(self) -> None:
        """Publish the batches that waited out a missing one (:meth:`MessageOrder.due`)
        while any wait: a phone whose recording stops, or whose missing batch was
        refused, sends nothing more to let them go. Ends when none waits."""
        gw = self.gateway
        try:
            while any(order.pending for order in self._orders.values()):
                await asyncio.sleep(RELEASE_S)
                now = time.monotonic()
                for owner, order in list(self._orders.items()):
                    if order.pending:
                        self._pass_on_later(owner, order.due(now))
        except Exception:  # never let it end the gateway; a later batch starts a new one
            log.exception("releasing Sensor Logger batches that waited failed")
            gw.counters.reject("internal", "releasing waiting batches")
        finally:
            self._sweeper = None

    def _publish_watch(self, readings: Readings, owner: Any) -> None:
        """A paired watch's readings (Sensor Logger's ``wristmotion``) as a device
        of its own, ``phone:<deviceId>.watch``, held by the phone's sender like
        an HTTP session (the watch sends nothing itself)."""
        watch = readings.watch
        gw = self.gateway
        if watch is None or not len(watch):
            return
        if watch.device is None:
            gw.counters.reject(
                "device",
                f"deviceId {readings.device!r}: too long to name its paired watch (+ '.watch'); watch left out",
            )
            return
        device = gw.claim(watch.device, (*owner, "watch"), None, lease=gw.config.http_lease)
        gw.publish(device, watch, "sensorlogger")

    async def _read_body(self, request: Request) -> bytes:
        """The body, at most ``max_message`` bytes, complete within ``open_timeout``.

        An oversized body is still read (and dropped) up to DRAIN_FACTOR times
        the limit before the 413 goes out: closing on unread bytes makes the
        kernel send a reset that can destroy the answer before it is read.
        """
        limit = self.gateway.config.max_message
        declared = request.headers.get("content-length")  # h11 has checked it is digits
        if declared is not None and (len(declared) > 15 or int(declared) > DRAIN_FACTOR * limit):
            raise FormatError("too_large", f"body of {declared[:20]} bytes, at most {limit}")
        body = bytearray()
        size = 0
        async with asyncio.timeout(self.gateway.config.open_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size <= limit:
                    body += chunk
                elif size > DRAIN_FACTOR * limit:
                    break
        if size > limit:
            raise FormatError(
                "too_large", f"body of {size}{'+' if size > DRAIN_FACTOR * limit else ''} bytes, at most {limit}"
            )
        return bytes(body)

    # ----------------------------------------------------------- WebSocket

    async def websocket_not_found(self, ws: WebSocket) -> None:
        self.gateway.counters.reject("not_found", f"WebSocket {ws.url.path[:80]}")
        await refuse(ws.scope, ws.send, Refusal(404, "not_found", "no WebSocket here: use /ws or /data"))

    async def websocket(self, ws: WebSocket) -> None:
        gw, c = self.gateway, self.gateway.config
        gw.counters.count("ws_connections")
        await ws.accept()
        conn = PhoneConnection(ws)
        session = _Session(ws.query_params.get("platform", "android"), address_key(ws.client.host) if ws.client else "")
        messages = RateLimit(c.max_messages_per_s, 2 * c.max_messages_per_s)
        errors = 0
        try:
            while not conn.closing:
                try:
                    async with asyncio.timeout(c.idle_timeout):
                        message = await ws.receive()
                except TimeoutError:
                    if session.device is not None and gw.calibrations.fitting(session.device):
                        continue  # a phone waiting for its fit's result is not idle
                    gw.counters.reject("idle", f"{c.idle_timeout:g} s without a message")
                    conn.close(1008, "idle")
                    break
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                if raw is None:
                    raw = message.get("bytes") or b""
                try:
                    if not messages.take():
                        raise FormatError("rate_limit", f"more than {c.max_messages_per_s:g} messages/s")
                    await self._handle(raw, session, conn)
                except FormatError as exc:
                    gw.counters.reject(exc.reason, exc.detail)
                    errors += 1
                    await conn.reply({"type": "error", "reason": exc.reason, "detail": exc.detail})
                    if errors >= c.max_errors or exc.reason == "device_in_use":
                        conn.close(1008, exc.reason)
                except MemoryError:
                    gw.counters.reject("memory", "WebSocket message")
                    conn.close(1009, "message too large to hold")
        except Exception:  # a bug must not leave the claim held or kill the server
            log.exception("WebSocket session failed")
            gw.counters.reject("internal", "WebSocket session")
            conn.close(1011, "internal error")
        finally:
            if session.device is not None:
                gw.release(session.device, conn)
            await conn.stop()

    async def _handle(self, raw: str | bytes, session: _Session, conn: PhoneConnection) -> None:
        """One message of a phone's WebSocket (raises :class:`FormatError`)."""
        gw = self.gateway
        msg = load_message(raw)
        if msg.get("type") == "calibrate":  # guided calibration (stream/gateway/calibration.py)
            if session.hello is None or session.device is None:
                raise FormatError("order", "send a hello before calibrating")
            claim = gw.claims.get(session.device)
            if claim is None or claim.owner is not conn:  # taken over: this connection is closing
                raise FormatError("device_in_use", "this connection no longer holds its device")
            await gw.calibrations.handle(session.device, msg, conn.reply, claim.key, session.address)
            return
        fmt = detect_format(msg)
        if session.kind is None:
            session.kind = fmt
        elif fmt != session.kind:
            raise FormatError("order", f"this connection speaks {session.kind}, got a {fmt} message")
        readings: Readings
        if fmt == "harstream":
            if msg["type"] == "hello":
                if session.hello is not None:
                    raise FormatError("order", "second hello on one connection")
                hello = parse_hello(msg)
                session.device = gw.claim(hello.device, conn, hello.key, conn=conn)
                session.hello = hello
                claim = gw.claims.get(session.device)
                assert claim is not None
                await conn.reply(
                    {
                        "type": "welcome",
                        "device": hello.device,
                        "bus_device": session.device,
                        "key": claim.key,
                        "rate": 50,
                    }
                )
                return
            if session.hello is None:
                raise FormatError("order", "send a hello before samples")
            readings = parse_samples(msg, session.hello)
        elif fmt == "sensorlogger":
            readings = parse_sensor_logger(msg, session.platform)
            assert readings.device is not None
            if session.device is None:
                session.device = gw.claim(readings.device, conn, None, conn=conn)
            elif readings.device != local_device(session.device):
                raise FormatError(
                    "device", f"deviceId {readings.device!r} on a connection of {local_device(session.device)!r}"
                )
        else:
            raise FormatError("fields", "SensorServer events are read by `harstream gateway --connect`, not sent here")
        assert session.device is not None
        gw.publish(session.device, readings, session.kind)
        self._publish_watch(readings, ("ws", id(conn)))
        gw.counters.count("messages")
        feed = gw.feeds[session.device]
        if feed.warning is not None:  # the readings were kept; the phone is told what is wrong with them
            reason, detail = feed.warning
            feed.warning = None
            await conn.reply({"type": "warning", "reason": reason, "detail": detail})


class _Session:
    """What one WebSocket has said so far."""

    def __init__(self, platform: str, address: str = ""):
        self.platform = platform
        self.address = address  # the client's address_key (IPv4 address, IPv6 /64), for per-address limits
        self.kind: str | None = None
        self.hello: Hello | None = None
        self.device: str | None = None  # bus id, once claimed
