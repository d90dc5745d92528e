"""The phone gateway: sensor apps in (WebSocket / HTTP), bus sample messages out.

One port (default ``127.0.0.1:8765``) on uvicorn, routes in Starlette
(:mod:`.gateway_app`): ``/ws`` (harstream or Sensor Logger JSON over a
WebSocket), ``/data`` (Sensor Logger HTTP POST), ``/phone`` (a page that
streams a phone browser's motion), ``/stats``. WebSocket is the
``websockets`` library's protocol core, through uvicorn's
``websockets-sansio`` implementation. TLS, the token, the Host allow-list and
every limit apply to the whole port.

The parts, one job each:

- :mod:`.gateway_config`    every setting and limit
- :mod:`.gateway_admission` Host / Origin / token / header decisions, rate buckets
- :mod:`.connection_guards` limits on raw connections (uvicorn protocol subclasses)
- :mod:`.gateway_app`       the routes and the phone WebSocket session
- :mod:`.device_claims`     which connection sends for which ``phone:<id>``
- :mod:`.phone_feeds`       per-device time checks, resampling, bus batches
- :mod:`.sensorserver_client` the gateway as a client of SensorServer phones
- this module               wires them to the bus and runs the server

Each device's readings go through :mod:`.phone_formats` (units, gravity,
signs) and :mod:`.phone_feeds` and are published with
:func:`.protocol.encode_samples` on a socket connected to the ingest bus,
always under ``phone:<id>`` (:mod:`.device_claims`). Predictions for a
device coming back on the output bus are forwarded to the WebSocket that
device is connected on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any

import uvicorn
import zmq
import zmq.asyncio
from starlette.routing import BaseRoute

from harstream.stream.bus.sockets import OUTPUT_MESSAGE_BYTES, SUBSCRIPTION_BYTES, BusSockets
from harstream.stream.core.protocol import ProtocolError, decode_prediction, encode_samples
from harstream.stream.gateway.admission import HostPolicy, is_loopback
from harstream.stream.gateway.app import build_app
from harstream.stream.gateway.calibration import CalibrationPolicy, Calibrations, FitFunction
from harstream.stream.gateway.config import GatewayConfig
from harstream.stream.gateway.connection_guards import guarded_protocols
from harstream.stream.gateway.counters import Counters
from harstream.stream.gateway.device_claims import ClaimTable, bus_device, local_device
from harstream.stream.gateway.phone_feeds import FeedTable
from harstream.stream.gateway.phone_formats import Readings
from harstream.stream.gateway.phyphox_client import follow_phyphox
from harstream.stream.gateway.sensorserver_client import follow_sensor_server
from harstream.stream.personal.calibration import CalibrationLimits

__all__ = ["Gateway", "GatewayConfig", "run_gateway"]

log = logging.getLogger("harstream.gateway")


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: Ctrl-C cancels the
    gateway's task like any other harstream command."""

    def capture_signals(self):
        import contextlib

        return contextlib.nullcontext()


class Gateway:
    """The running gateway. ``await start()``, then ``await close()``."""

    def __init__(self, config: GatewayConfig, extra_routes: Sequence[BaseRoute] = (), fit: FitFunction | None = None):
        if not is_loopback(config.host) and not config.token:
            raise ValueError(f"binding {config.host} (not loopback) requires a token (--token)")
        if bool(config.tls_cert) != bool(config.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        self.config = config
        self.counters = Counters()
        self.claims = ClaimTable()
        self.feeds = FeedTable(
            max_gap=config.max_gap,
            max_span=config.max_span,
            max_ahead=config.max_ahead,
            max_readings_per_s=config.max_readings_per_s,
            signal_rate=config.signal_rate,
        )
        self._subscribed: set[str] = set()  # devices whose predictions we receive
        # ``fit`` comes from the command (this package does not import the
        # models); without it calibration messages are refused.
        self.calibrations = Calibrations(
            config.calibration_dir,
            config.personal_dir,
            fit,
            self.counters,
            CalibrationLimits(config.calibration_max_take, config.calibration_max_bytes),
            CalibrationPolicy(config.calibration_max_sessions, config.calibration_per_address, config.calibration_idle),
            newest_reading=self.feeds.newest_reading,
        )
        self.started = time.time()
        self._extra_routes = extra_routes
        self._ctx = zmq.asyncio.Context()
        # With keys, over CURVE; an address off loopback without keys is refused (BusAuthError).
        self._bus = BusSockets(config.keys, self._ctx)
        self._sub = None
        try:
            # XPUB with XPUB_NODROP rather than PUB: a PUB past its high-water mark
            # drops silently, this fails the send with EAGAIN, which is counted.
            self._pub = self._bus.open(
                zmq.XPUB,
                config.ingest,
                "connect",
                max_message=SUBSCRIPTION_BYTES,
                linger=500,
                options={zmq.XPUB_NODROP: 1},
            )
            if config.output:
                self._sub = self._bus.open(zmq.SUB, config.output, "connect", max_message=OUTPUT_MESSAGE_BYTES)
        except Exception:
            self._close_bus()
            raise
        self._server: _Server | None = None
        self._socket: socket.socket | None = None
        self._tasks: list[asyncio.Task] = []
        self._closing = False

    # ----------------------------------------------------------- life cycle

    async def start(self) -> None:
        c = self.config
        tls = None
        if c.tls_cert:  # the handshake runs behind the connection guards (TLSGate), not before them
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(c.tls_cert, c.tls_key)  # an unreadable certificate: OSError / ssl.SSLError here
        family = socket.AF_INET6 if ":" in c.host else socket.AF_INET
        self._socket = socket.create_server((c.host, c.port), family=family, backlog=1024)
        self._socket.setblocking(False)
        policy = HostPolicy(c.host, self.port, c.allow_host)
        http, ws = guarded_protocols(c, self.counters, tls)
        # uvicorn's own log lines (start-up banner, one warning per malformed
        # request) are replaced by ours and by the counts in /stats.
        logging.getLogger("uvicorn.error").setLevel(logging.ERROR)
        server_config = uvicorn.Config(
            build_app(self, policy, self._extra_routes),
            http=http,
            ws=ws,
            lifespan="off",
            proxy_headers=False,  # no proxy in front: X-Forwarded-For from a local client would name any address
            log_config=None,
            access_log=False,
            ws_max_size=c.max_message,
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            ws_per_message_deflate=False,  # compression costs CPU per message and lets small frames inflate past limits
            h11_max_incomplete_event_size=c.max_head,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=2,
            server_header=False,
            date_header=False,
        )
        self._server = _Server(server_config)
        serving = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        self._tasks.append(serving)
        while not self._server.started:
            if serving.done():
                serving.result()  # raises what stopped it (an unreadable certificate, ...)
                raise OSError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        self._tasks.append(asyncio.create_task(self._forward_predictions()))
        if c.stats_interval:
            self._tasks.append(asyncio.create_task(self._log_stats()))
        for url in c.connect:
            device = c.device if c.device and len(c.connect) == 1 else None
            follow = follow_phyphox if url.startswith(("http://", "https://")) else follow_sensor_server
            self._tasks.append(asyncio.create_task(follow(self, url, device)))
        scheme = "https" if c.tls_cert else "http"
        log.info(
            "gateway on %s://%s:%d (ws at /ws, Sensor Logger POST /data, page /phone, /stats) -> %s",
            scheme,
            c.host,
            self.port,
            c.ingest,
        )

    @property
    def port(self) -> int:
        assert self._socket is not None
        return self._socket.getsockname()[1]

    @property
    def closing(self) -> bool:
        return self._closing

    async def serve_forever(self) -> None:
        await self._tasks[0]

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.should_exit = True
        serving, others = self._tasks[:1], self._tasks[1:]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        try:
            await self.calibrations.close()
        finally:  # whatever the fits did, the server stops and the bus is let go (a context left open hangs at exit)
            if serving:
                try:
                    async with asyncio.timeout(5):
                        await asyncio.gather(*serving, return_exceptions=True)
                except TimeoutError:
                    serving[0].cancel()
            if self._socket is not None:
                self._socket.close()
            self._close_bus()

    def _close_bus(self) -> None:
        self._bus.close()
        self._ctx.term()

    # ------------------------------------------------------------- counters

    @property
    def rejects(self):
        return self.counters.rejects

    @property
    def counts(self):
        return self.counters.counts

    def open_connections(self) -> int:
        return 0 if self._server is None else len(self._server.server_state.connections)

    def stats(self) -> dict:
        now = time.time()
        return {
            "uptime_s": round(now - self.started, 1),
            "connections": self.open_connections(),
            "devices_connected": len(self.claims),
            "devices_seen": len(self.feeds),
            "counts": dict(self.counts),
            "rejects": dict(self.rejects),
            "calibration": self.calibrations.stats(),
            "devices": {
                d: {
                    "source": f.source,
                    "samples_out": f.samples_out,
                    "segments": f.resampler.segments,
                    "gyro": f.has_gyro,
                    "late": f.resampler.late,
                    "low_rate": f.low_rate,
                    "rate_hz": {s: round(r, 1) for s, r in f.rate_hz.items()},
                    "idle_s": round(now - f.last_seen, 1),
                }
                for d, f in list(self.feeds.items())[:1000]
            },
        }

    async def _log_stats(self) -> None:
        last = dict(self.counts)
        while True:
            await asyncio.sleep(self.config.stats_interval)
            dt = self.config.stats_interval
            now = dict(self.counts)
            log.info(
                "%d connections, %d devices, in %.0f readings/s, out %.0f samples/s, rejects %s",
                self.open_connections(),
                len(self.claims),
                (now.get("readings_in", 0) - last.get("readings_in", 0)) / dt,
                (now.get("samples_out", 0) - last.get("samples_out", 0)) / dt,
                dict(self.rejects) or "none",
            )
            last = now

    # ------------------------------------------------------- devices, bus

    def claim(self, local: str, owner: Any, key: str | None, conn: Any = None, lease: float | None = None) -> str:
        """Give phone ``local`` (already validated) to ``owner``; returns its bus id.

        Raises :class:`~.phone_formats.FormatError` ``device_in_use`` / ``busy``.
        """
        device = bus_device(local)
        now = time.monotonic()
        held = self.claims.get(device)
        claim, displaced = self.claims.claim(device, owner, key, now, conn=conn, lease=lease)
        if displaced is not None and displaced.conn is not None:  # the rightful owner came back
            displaced.conn.close(4000, "taken over by a new connection")
        if held is not claim:
            self.feeds.start(device, time.time(), keep=set(self.claims.devices()))
        if conn is not None and self._sub is not None and device not in self._subscribed:
            self._sub.setsockopt(zmq.SUBSCRIBE, b"p/%s/" % device.encode())
            self._subscribed.add(device)
        return device

    def release(self, device: str, owner: Any) -> None:
        if self.claims.release(device, owner) and device in self._subscribed:
            assert self._sub is not None
            self._sub.setsockopt(zmq.UNSUBSCRIBE, b"p/%s/" % device.encode())
            self._subscribed.discard(device)

    def publish(self, device: str, readings: Readings, source: str) -> int:
        """Resample and publish one device's readings; returns samples sent.

        Raises :class:`~.phone_formats.FormatError` (``time``, ``rate_limit``)
        for readings the device's feed refuses.
        """
        self.claims.expire(time.monotonic())
        feed = self.feeds[device]
        feed.source = source
        late = feed.resampler.late
        refused = dict(feed.pressure_refused)
        self.counts["readings_in"] += len(readings)
        sent = 0
        warned = feed.warnings
        batches = feed.add(readings, time.time())
        if feed.warnings > warned and feed.warning is not None:  # the readings are kept; counted and logged here
            self.counters.reject(feed.warning[0], feed.warning[1])
        for reason, n in feed.pressure_refused.items():  # barometer readings left out; the motion went on
            if n > refused.get(reason, 0):
                self.counters.reject(
                    reason, f"device {device}: barometer readings left out", n - refused.get(reason, 0)
                )
        for batch in batches:
            try:
                self._pub.send_multipart(encode_samples(batch), flags=zmq.NOBLOCK)
            except zmq.Again:
                self.counts["bus_dropped"] += len(batch)
                continue
            sent += len(batch)
            self.calibrations.feed(batch, feed.clock)  # kept only where it falls in a calibration take
        if feed.resampler.late > late:
            self.rejects["late"] += feed.resampler.late - late
        self.counts["samples_out"] += sent
        return sent

    async def _forward_predictions(self) -> None:
        if self._sub is None:
            return
        while True:
            frames = await self._sub.recv_multipart()
            try:
                p = decode_prediction(frames)
                claim = self.claims.get(p.device)
                if claim is None or claim.conn is None:
                    continue
                body = json.dumps(
                    {
                        "type": "prediction",
                        "device": local_device(p.device),
                        "bus_device": p.device,
                        "label": p.label,
                        "smoothed": p.smoothed,
                        "probs": p.probs,
                        "t_end": p.t_end,
                        "latency_ms": p.latency_ms,
                        "model": p.model,
                        "mode": p.mode,
                        "classes": p.classes,
                        "placement": p.placement,
                    }
                )
            except (ProtocolError, TypeError, ValueError) as exc:  # a bad prediction must not stop the others
                self.counts["bad_predictions"] += 1
                log.debug("prediction not forwarded: %s", exc)
                continue
            if claim.conn.offer(body):
                self.counts["predictions_forwarded"] += 1
            else:  # a phone that does not read gets no more rather than an unbounded queue
                self.counts["predictions_dropped"] += 1


async def run_gateway(config: GatewayConfig, fit: FitFunction | None = None) -> None:
    """Run until cancelled (Ctrl-C); ``fit`` enables calibration (:mod:`.gateway_calibration`)."""
    gateway = Gateway(config, fit=fit)
    await gateway.start()
    try:
        await gateway.serve_forever()
    finally:
        await gateway.close()
