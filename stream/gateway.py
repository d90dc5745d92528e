"""The phone gateway: sensor apps in (WebSocket / HTTP), bus sample messages out.

One port (default ``127.0.0.1:8765``) serves, on the ``websockets`` library:

- ``/ws``     WebSocket: harstream JSON protocol or Sensor Logger JSON
- ``/data``   Sensor Logger HTTP POST (or the same JSON over a WebSocket)
- ``/phone``  a page that streams a phone browser's DeviceMotion over ``/ws``
- ``/stats``  counters and rejects by reason, as JSON

``websockets`` parses GET requests only (a request body is refused), so a
thin :class:`ServerConnection` subclass, passed through its documented
``create_connection`` hook, looks at the first bytes of each TCP connection:
``POST`` requests are answered here with a minimal HTTP/1.1 handler
(Content-Length bodies, ``Connection: close``); everything else goes to
websockets untouched. One port, one TLS setup, one token check.

With ``connect=[ws://phone:8080]`` the gateway is also a client of the
SensorServer Android app and reconnects with back-off when the phone drops.

Each device's readings go through :mod:`.phone_formats` (units, gravity,
signs) and :mod:`.resample` (50 Hz grid, segments) and are published with
:func:`.protocol.encode_samples` on a PUB socket connected to the ingest bus.
Predictions for a device coming back on the output bus are forwarded to the
WebSocket that device is connected on.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import secrets
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
import zmq
import zmq.asyncio
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import bus
from .phone_formats import (
    FormatError,
    Hello,
    MessageOrder,
    Readings,
    check_device,
    detect_format,
    load_message,
    parse_hello,
    parse_samples,
    parse_sensor_logger,
    parse_sensor_server,
)
from .protocol import MAX_SAMPLES_PER_MESSAGE, ProtocolError, SampleBatch, decode_prediction, encode_samples
from .resample import Resampler

log = logging.getLogger("harstream.gateway")

SENSOR_SERVER_TYPES = '["android.sensor.accelerometer","android.sensor.gyroscope"]'
MAX_FEEDS = 10_000  # device states kept; beyond this the idle half is forgotten
STATIC = {"/phone": ("phone.html", "text/html; charset=utf-8"), "/phone.js": ("phone.js", "text/javascript")}


@dataclass
class GatewayConfig:
    """Everything ``harstream gateway`` can be told; defaults are safe on loopback."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    ingest: str = field(default_factory=bus.ingest_address)
    output: str | None = field(default_factory=bus.output_address)  # None: no predictions back
    connect: list[str] = field(default_factory=list)  # SensorServer phones
    device: str | None = None  # device id for a single --connect phone
    max_message: int = 256 * 1024  # bytes per WebSocket message or POST body
    max_messages_per_s: float = 100.0  # per connection (burst = 2 s worth)
    max_readings_per_s: float = 4000.0  # per connection, acc + gyro readings
    max_connections: int = 512
    max_errors: int = 20  # per connection, then it is closed
    idle_timeout: float = 30.0  # close a connection that sends nothing this long
    open_timeout: float = 10.0  # WebSocket handshake or a whole POST must arrive within
    http_lease: float = 10.0  # an HTTP-posting device keeps its id this long after a post
    max_gap: float = 0.5  # seconds of silence that start a new segment
    stats_interval: float = 5.0  # seconds between log lines; 0 = never


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RateLimit:
    """Token bucket: ``rate`` per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self, n: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


class DeviceFeed:
    """One device's path to the bus: resampler, seq, clock offset. Lives as long as the gateway."""

    def __init__(self, device: str, max_gap: float):
        self.device = device
        self.resampler = Resampler(max_gap=max_gap)
        self.offset: float | None = None  # device clock → Unix time
        self._jumps = 0
        self.source = ""
        self.samples_out = 0
        self.last_seen = time.time()

    def add(self, readings: Readings, now: float) -> list[SampleBatch]:
        """Push readings, return the 50 Hz batches ready to publish."""
        self.last_seen = now
        r = self.resampler
        first = readings.acc_t[:1] if len(readings.acc_t) else readings.gyro_t[:1]
        for stream in ("acc", "gyro"):
            t = getattr(readings, f"{stream}_t")
            if len(t):
                r.push(stream, t, getattr(readings, stream))
        if len(first) and (self.offset is None or r.clock_jumps != self._jumps):
            # Epoch clocks (Sensor Logger, browsers) are used as they are;
            # others (SensorServer's since-boot) are pinned to the gateway's
            # clock at first sight and after a clock jump.
            self.offset = 0.0 if abs(first[0] - now) < 86400 else now - float(first[0])
            self._jumps = r.clock_jumps
        out = []
        for chunk in r.pull():
            for i in range(0, len(chunk.samples), MAX_SAMPLES_PER_MESSAGE):
                part = chunk.samples[i : i + MAX_SAMPLES_PER_MESSAGE]
                meta = {"source": self.source, "segment": r.segments}
                out.append(SampleBatch(self.device, chunk.seq + i, chunk.t0 + i / r.rate + (self.offset or 0.0), part, meta=meta))
                self.samples_out += len(part)
        return out

    def restart(self) -> None:
        """A new connection for this device: do not join its data to the old one."""
        self.resampler.restart()
        self.offset = None  # the phone may have rebooted: pin its clock afresh


@dataclass
class Claim:
    """Who currently sends for a device id."""

    owner: Any
    key: str
    ws: Any = None  # the WebSocket to forward predictions to
    expires: float | None = None  # HTTP leases expire; connections hold until closed


class Gateway:
    """The running gateway. ``await start()``, then ``await close()``."""

    def __init__(self, config: GatewayConfig):
        if not is_loopback(config.host) and not config.token:
            raise ValueError(f"binding {config.host} (not loopback) requires a token (--token)")
        if bool(config.tls_cert) != bool(config.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        self.config = config
        self.rejects: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.feeds: dict[str, DeviceFeed] = {}
        self.claims: dict[str, Claim] = {}
        self._orders: dict[Any, MessageOrder] = {}  # Sensor Logger HTTP sessions
        self._subscribed: set[str] = set()  # devices whose predictions we receive
        self.open_connections: set[ServerConnection] = set()
        self.started = time.time()
        self._ctx = zmq.asyncio.Context()
        # XPUB with XPUB_NODROP rather than PUB: a PUB past its high-water mark
        # drops silently, this fails the send with EAGAIN, which is counted.
        # Its unread subscription messages stay few: only distinct prefixes
        # are passed up (XPUB_VERBOSE off).
        self._pub = self._ctx.socket(zmq.XPUB)
        self._pub.setsockopt(zmq.XPUB_NODROP, 1)
        self._pub.setsockopt(zmq.LINGER, 500)
        bus.attach(self._pub, config.ingest, "connect")
        self._sub = None
        if config.output:
            self._sub = self._ctx.socket(zmq.SUB)
            self._sub.setsockopt(zmq.LINGER, 0)
            bus.attach(self._sub, config.output, "connect")
        self._server: Server | None = None
        self._tasks: list[asyncio.Task] = []
        self._closing = False
        self._static = {path: resources.files(__package__).joinpath("static", name).read_bytes() for path, (name, _) in STATIC.items()}

    # ----------------------------------------------------------- life cycle

    async def start(self) -> None:
        c = self.config
        tls = None
        if c.tls_cert:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(c.tls_cert, c.tls_key)
        connection_class = type("GatewayConnection", (_HttpAwareConnection,), {"gateway": self})
        self._server = await serve(
            self._serve_websocket,
            c.host,
            c.port,
            process_request=self._process_request,
            create_connection=connection_class,
            max_size=c.max_message,
            max_queue=4,
            open_timeout=c.open_timeout,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            ssl=tls,
            server_header=None,
            compression=None,  # deflate costs CPU per message and lets small frames inflate past limits
        )
        self._tasks.append(asyncio.create_task(self._forward_predictions()))
        if c.stats_interval:
            self._tasks.append(asyncio.create_task(self._log_stats()))
        for url in c.connect:
            self._tasks.append(asyncio.create_task(self._follow_sensor_server(url)))
        scheme = "https" if tls else "http"
        log.info("gateway on %s://%s:%d (ws at /ws, Sensor Logger POST /data, page /phone, /stats) -> %s",
                 scheme, c.host, self.port, c.ingest)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._pub.close()
        if self._sub is not None:
            self._sub.close()
        self._ctx.term()

    # ------------------------------------------------------------- counters

    def reject(self, reason: str, detail: str = "") -> None:
        self.rejects[reason] += 1
        log.debug("reject %s: %s", reason, detail)

    def stats(self) -> dict:
        now = time.time()
        return {
            "uptime_s": round(now - self.started, 1),
            "connections": len(self.open_connections),
            "devices_connected": len(self.claims),
            "devices_seen": len(self.feeds),
            "counts": dict(self.counts),
            "rejects": dict(self.rejects),
            "devices": {
                d: {"source": f.source, "samples_out": f.samples_out, "segments": f.resampler.segments,
                    "late": f.resampler.late, "idle_s": round(now - f.last_seen, 1)}
                for d, f in list(self.feeds.items())[:1000]
            },
        }

    async def _log_stats(self) -> None:
        last = Counter(self.counts)
        while True:
            await asyncio.sleep(self.config.stats_interval)
            dt = self.config.stats_interval
            now = Counter(self.counts)
            log.info("%d connections, %d devices, in %.0f readings/s, out %.0f samples/s, rejects %s",
                     len(self.open_connections), len(self.claims),
                     (now["readings_in"] - last["readings_in"]) / dt,
                     (now["samples_out"] - last["samples_out"]) / dt,
                     dict(self.rejects) or "none")
            last = now

    # ------------------------------------------------------- devices, bus

    def claim(self, device: str, owner: Any, key: str | None, ws: Any = None, lease: float | None = None) -> Claim:
        """Give ``device`` to ``owner``, or :class:`FormatError` ``device_in_use``."""
        now = time.monotonic()
        held = self.claims.get(device)
        if held is not None and held.owner == owner:
            if lease is not None:
                held.expires = now + lease
            return held
        if held is not None and not (held.expires is not None and held.expires < now):
            if key is None or not hmac.compare_digest(key.encode(), held.key.encode()):
                raise FormatError("device_in_use", f"device {device!r} is connected elsewhere; reconnect with its key to take over")
            if held.ws is not None:  # the rightful owner came back on a new connection
                asyncio.ensure_future(held.ws.close(4000, "taken over by a new connection"))
        claim = Claim(owner, key or secrets.token_urlsafe(16), ws, None if lease is None else now + lease)
        self.claims[device] = claim
        feed = self.feeds.get(device)
        if feed is None:
            self.feeds[device] = DeviceFeed(device, self.config.max_gap)
        else:
            feed.restart()
        if ws is not None and self._sub is not None and device not in self._subscribed:
            self._sub.setsockopt(zmq.SUBSCRIBE, b"p/%s/" % device.encode())
            self._subscribed.add(device)
        if len(self.feeds) > MAX_FEEDS:
            self._forget_idle_feeds()
        return claim

    def _forget_idle_feeds(self) -> None:
        """Bound memory when many device ids come and go (oldest unclaimed first)."""
        idle = sorted((f.last_seen, d) for d, f in self.feeds.items() if d not in self.claims)
        for _, device in idle[: len(self.feeds) - MAX_FEEDS // 2]:
            del self.feeds[device]

    def release(self, device: str, owner: Any) -> None:
        held = self.claims.get(device)
        if held is not None and held.owner == owner:
            del self.claims[device]
            if device in self._subscribed:
                self._sub.setsockopt(zmq.UNSUBSCRIBE, b"p/%s/" % device.encode())
                self._subscribed.discard(device)

    def publish(self, device: str, readings: Readings, source: str) -> int:
        """Resample and publish one device's readings; returns samples sent."""
        feed = self.feeds[device]
        feed.source = source
        late = feed.resampler.late
        self.counts["readings_in"] += len(readings)
        sent = 0
        for batch in feed.add(readings, time.time()):
            try:
                self._pub.send_multipart(encode_samples(batch), flags=zmq.NOBLOCK)
            except zmq.Again:
                self.counts["bus_dropped"] += len(batch)
                continue
            sent += len(batch)
        if feed.resampler.late > late:
            self.rejects["late"] += feed.resampler.late - late
        self.counts["samples_out"] += sent
        return sent

    def _expire_leases(self) -> None:
        now = time.monotonic()
        for device, claim in list(self.claims.items()):
            if claim.expires is not None and claim.expires < now:
                del self.claims[device]

    async def _forward_predictions(self) -> None:
        if self._sub is None:
            return
        while True:
            frames = await self._sub.recv_multipart()
            try:
                p = decode_prediction(frames)
                claim = self.claims.get(p.device)
                ws = claim.ws if claim else None
                # A client that does not read gets no more predictions rather than an unbounded buffer.
                if ws is None or ws.transport is None or ws.transport.get_write_buffer_size() > 64 * 1024:
                    continue
                body = json.dumps({"type": "prediction", "device": p.device, "label": p.label, "smoothed": p.smoothed,
                                   "probs": p.probs, "t_end": p.t_end, "latency_ms": p.latency_ms, "model": p.model})
            except (ProtocolError, TypeError, ValueError) as exc:  # a bad prediction must not stop the others
                self.counts["bad_predictions"] += 1
                log.debug("prediction not forwarded: %s", exc)
                continue
            asyncio.ensure_future(_send_quietly(ws, body))
            self.counts["predictions_forwarded"] += 1

    # ---------------------------------------------------------------- HTTP

    def token_ok(self, path: str, headers: Any) -> bool:
        if not self.config.token:
            return True
        given = parse_qs(urlsplit(path).query).get("token", [""])[0]
        auth = headers.get("Authorization", "") or ""
        if auth.startswith("Bearer "):
            given = given or auth[7:]
        return hmac.compare_digest(given.encode(), self.config.token.encode())

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path in STATIC:
            return _response(HTTPStatus.OK, self._static[path], STATIC[path][1])
        if path == "/":
            return _response(HTTPStatus.OK, b"harstream gateway: WebSocket /ws, Sensor Logger POST /data, phone page /phone, /stats\n")
        if path not in ("/ws", "/data", "/stats"):
            self.reject("http", f"GET {path}")
            return _response(HTTPStatus.NOT_FOUND, b"not found: try /phone, /ws, /data or /stats\n")
        if not self.token_ok(request.path, request.headers):
            self.reject("auth", f"GET {path}")
            return _response(HTTPStatus.UNAUTHORIZED, b"missing or wrong token (?token=... or Authorization: Bearer ...)\n")
        if path == "/stats":
            return _response(HTTPStatus.OK, json.dumps(self.stats(), indent=1).encode(), "application/json")
        origin = _foreign_origin(request.headers)
        if origin is not None:
            self.reject("auth", f"cross-origin WebSocket from {origin[:80]}")
            return _response(HTTPStatus.FORBIDDEN, b"cross-origin WebSocket refused\n")
        return None  # WebSocket handshake proceeds

    def handle_post(self, target: str, headers: dict[str, str], body: bytes, peer: Any) -> tuple[int, str]:
        """One Sensor Logger HTTP POST → (status, short text). Never raises."""
        self.counts["http_posts"] += 1
        split = urlsplit(target)
        if split.path != "/data":
            self.reject("http", f"POST {split.path}")
            return 404, "POST goes to /data\n"
        if not self.token_ok(target, headers):
            self.reject("auth", "POST /data")
            return 401, "missing or wrong token (?token=... or Authorization: Bearer ...)\n"
        origin = _foreign_origin(headers)
        if origin is not None:
            self.reject("auth", f"cross-origin POST from {origin[:80]}")
            return 403, "cross-origin POST refused\n"
        query = parse_qs(split.query)
        try:
            msg = load_message(body)
            readings = parse_sensor_logger(msg, query.get("platform", ["android"])[0])
            assert readings.device is not None
            self._expire_leases()
            # The lease belongs to the recording session: another session
            # (or a forged deviceId) cannot post while it is live.
            owner = ("http", readings.device, readings.session)
            self.claim(readings.device, owner, None, lease=self.config.http_lease)
            order = self._orders.get(owner)
            if order is None:
                order = self._orders[owner] = MessageOrder()
                if len(self._orders) > 10_000:  # sessions come and go; forget the oldest
                    self._orders.pop(next(iter(self._orders)))
            for ready in order.add(msg.get("messageId"), readings, time.monotonic()):
                self.publish(readings.device, ready, "sensorlogger")
        except FormatError as exc:
            self.reject(exc.reason, exc.detail)
            status = 409 if exc.reason == "device_in_use" else 413 if exc.reason == "too_large" else 400
            return status, f"{exc.reason}: {exc.detail}\n"
        except Exception:  # never let one request take the gateway down
            log.exception("POST /data failed")
            self.reject("http", "internal error")
            return 500, "internal error\n"
        self.counts["messages"] += 1
        return 200, "ok\n"

    # ----------------------------------------------------------- WebSocket

    async def _serve_websocket(self, ws: ServerConnection) -> None:
        self.counts["ws_connections"] += 1
        c = self.config
        query = parse_qs(urlsplit(ws.request.path).query)
        platform = query.get("platform", ["android"])[0]
        messages = RateLimit(c.max_messages_per_s, 2 * c.max_messages_per_s)
        readings_limit = RateLimit(c.max_readings_per_s, 2 * c.max_readings_per_s)
        device: str | None = None
        hello: Hello | None = None
        kind: str | None = None
        errors = 0
        try:
            while True:
                try:
                    async with asyncio.timeout(c.idle_timeout):
                        raw = await ws.recv()
                except TimeoutError:
                    self.reject("idle", f"{c.idle_timeout:g} s without a message")
                    await ws.close(1008, "idle")
                    return
                try:
                    if not messages.take():
                        raise FormatError("rate_limit", f"more than {c.max_messages_per_s:g} messages/s")
                    msg = load_message(raw)
                    fmt = detect_format(msg)
                    if kind is None:
                        kind = fmt
                    elif fmt != kind and not (kind == "harstream" and fmt == "harstream"):
                        raise FormatError("order", f"this connection speaks {kind}, got a {fmt} message")
                    if fmt == "harstream":
                        if msg["type"] == "hello":
                            if hello is not None:
                                raise FormatError("order", "second hello on one connection")
                            new = parse_hello(msg)
                            claim = self.claim(new.device, ws, new.key, ws=ws)
                            hello, device = new, new.device
                            await ws.send(json.dumps({"type": "welcome", "device": device, "key": claim.key, "rate": 50}))
                            continue
                        if hello is None:
                            raise FormatError("order", "send a hello before samples")
                        readings = parse_samples(msg, hello)
                    elif fmt == "sensorlogger":
                        readings = parse_sensor_logger(msg, platform)
                        if device is None:
                            self.claim(readings.device, ws, None, ws=ws)
                            device = readings.device
                        elif readings.device != device:
                            raise FormatError("device", f"deviceId {readings.device!r} on a connection of {device!r}")
                    else:
                        raise FormatError("fields", "SensorServer events are read by `harstream gateway --connect`, not sent here")
                    if not readings_limit.take(len(readings)):
                        raise FormatError("rate_limit", f"more than {c.max_readings_per_s:g} readings/s")
                    self.publish(device, readings, kind)
                    self.counts["messages"] += 1
                except FormatError as exc:
                    self.reject(exc.reason, exc.detail)
                    errors += 1
                    await ws.send(json.dumps({"type": "error", "reason": exc.reason, "detail": exc.detail}))
                    if errors >= c.max_errors or exc.reason == "device_in_use":
                        await ws.close(1008, f"{exc.reason}"[:120])
                        return
        except ConnectionClosed as exc:
            if exc.rcvd is None and exc.sent is not None and exc.sent.code == 1009:
                self.reject("too_large", f"message over {c.max_message} bytes")
        finally:
            if device is not None:
                self.release(device, ws)

    # -------------------------------------------------------- SensorServer

    async def _follow_sensor_server(self, url: str) -> None:
        """Read a SensorServer phone, reconnecting with back-off (1 s doubling to 30 s)."""
        base = url.rstrip("/")
        if "/sensors/connect" not in base:
            base += "/sensors/connect?types=" + quote(SENSOR_SERVER_TYPES)
        host = urlsplit(url).hostname or "phone"
        device = check_device(self.config.device if self.config.device and len(self.config.connect) == 1 else f"sensorserver-{host}")
        owner = ("sensorserver", url)
        delay = 1.0
        while not self._closing:
            try:
                async with ws_connect(base, max_size=self.config.max_message, open_timeout=10, compression=None) as phone:
                    log.info("connected to SensorServer %s as device %s", url, device)
                    self.claim(device, owner, None)
                    delay = 1.0
                    await self._read_sensor_server(phone, device)
            except (OSError, ConnectionClosed, TimeoutError) as exc:
                log.warning("SensorServer %s: %s; retrying in %.0f s", url, exc, delay)
            except FormatError as exc:
                self.reject(exc.reason, exc.detail)
                log.warning("SensorServer %s: %s; retrying in %.0f s", url, exc, delay)
            except Exception as exc:  # an unexpected reply must not end the reconnect loop
                log.warning("SensorServer %s: %r; retrying in %.0f s", url, exc, delay)
            finally:
                self.release(device, owner)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _read_sensor_server(self, phone, device: str) -> None:
        # One event per message: gather ~100 ms of events before resampling
        # and publishing, so bus messages are not one sample each.
        pending: list[Readings] = []
        deadline = time.monotonic() + 0.1
        silent_since = time.monotonic()
        try:
            while True:
                try:
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                        raw = await phone.recv()
                    silent_since = time.monotonic()
                    try:
                        pending.append(parse_sensor_server(load_message(raw)))
                    except FormatError as exc:
                        self.reject(exc.reason, exc.detail)
                except TimeoutError:
                    if time.monotonic() - silent_since > self.config.idle_timeout:
                        raise
                if time.monotonic() >= deadline:
                    if pending:
                        self.publish(device, _concat(pending), "sensorserver")
                        self.counts["messages"] += len(pending)
                        pending = []
                    deadline = time.monotonic() + 0.1
        finally:
            if pending:
                self.publish(device, _concat(pending), "sensorserver")


# ------------------------------------------------------------------ plumbing


class _HttpAwareConnection(ServerConnection):
    """websockets' connection, plus POST requests answered by the gateway.

    The first bytes decide: a request line starting with ``POST`` is read
    here (head, then a Content-Length body up to the message limit) and
    answered with ``Connection: close``; anything else is handed to websockets.
    The handshake task websockets starts for every connection still bounds
    the whole exchange by ``open_timeout``.
    """

    gateway: Gateway
    MAX_HEAD = 16 * 1024

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._mode: str | None = None
        self._buffer = bytearray()
        self._head: tuple[str, dict[str, str], int] | None = None
        gw = self.gateway
        gw.counts["tcp_connections"] += 1
        if len(gw.open_connections) >= gw.config.max_connections:
            gw.reject("busy", "too many connections")
            self._mode = "done"
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            transport.close()
            return
        gw.open_connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gateway.open_connections.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._mode == "ws":
            return super().data_received(data)
        if self._mode == "done":
            return
        self._buffer += data
        if self._mode is None:
            if len(self._buffer) < 5:
                return
            if not self._buffer.startswith(b"POST "):
                self._mode = "ws"
                data, self._buffer = bytes(self._buffer), bytearray()
                return super().data_received(data)
            self._mode = "post"
        self._read_post()

    def eof_received(self) -> bool | None:
        if self._mode == "ws":
            return super().eof_received()
        return None  # closes the transport

    def _read_post(self) -> None:
        gw = self.gateway
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.MAX_HEAD:
                    return self._answer(431, "request head too large\n", "http")
                return
            try:
                lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = Headers()
                for line in lines[1:]:
                    name, value = line.split(":", 1)
                    headers[name.strip()] = value.strip()
            except ValueError:
                return self._answer(400, "malformed HTTP request\n", "http")
            if "Transfer-Encoding" in headers:
                return self._answer(411, "send the body with a Content-Length\n", "http")
            try:
                length = int(headers.get("Content-Length", "0"))
            except ValueError:
                return self._answer(400, "bad Content-Length\n", "http")
            if length < 0 or length > gw.config.max_message:
                return self._answer(413, f"body over {gw.config.max_message} bytes\n", "too_large")
            del self._buffer[: end + 4]
            self._head = (target, headers, length)
            if headers.get("Expect", "").lower() == "100-continue":
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        target, headers, length = self._head
        if len(self._buffer) < length:
            return
        status, text = gw.handle_post(target, headers, bytes(self._buffer[:length]), self.transport.get_extra_info("peername"))
        self._answer(status, text, None)

    def _answer(self, status: int, text: str, reason: str | None) -> None:
        if reason is not None:
            self.gateway.reject(reason, text.strip())
        self._mode = "done"
        body = text.encode()
        phrase = HTTPStatus(status).phrase
        self.transport.write(
            f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )
        # Closing with unread body bytes would make the kernel send a reset
        # that can destroy the answer before the client reads it: half-close
        # and discard the rest; the client closes, or open_timeout aborts.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()


def _foreign_origin(headers: Any) -> str | None:
    """The Origin of a request made by a web page from another site, else None.

    Apps (Sensor Logger, our clients) send no Origin; a page the user happens
    to visit in a browser does, and must not stream into (or read) our devices.
    """
    origin = headers.get("Origin")
    web = origin is not None and (origin == "null" or urlsplit(origin).scheme in ("http", "https"))
    if web and urlsplit(origin).netloc != headers.get("Host"):
        return origin
    return None


def _response(status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8") -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("Connection", "close")])
    return Response(status.value, status.phrase, headers, body)


async def _send_quietly(ws, text: str) -> None:
    try:
        await ws.send(text)
    except ConnectionClosed:
        pass


def _concat(parts: list[Readings]) -> Readings:
    out = Readings()
    for stream in ("acc", "gyro"):
        ts = [getattr(p, f"{stream}_t") for p in parts if len(getattr(p, f"{stream}_t"))]
        if ts:
            setattr(out, f"{stream}_t", np.concatenate(ts))
            setattr(out, stream, np.concatenate([getattr(p, stream) for p in parts if len(getattr(p, f"{stream}_t"))]))
    return out


async def run_gateway(config: GatewayConfig) -> None:
    """Run until cancelled (Ctrl-C)."""
    gateway = Gateway(config)
    await gateway.start()
    try:
        await gateway.serve_forever()
    finally:
        await gateway.close()
