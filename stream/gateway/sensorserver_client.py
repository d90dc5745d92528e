"""The gateway as a client of the SensorServer Android app (``--connect ws://phone:8080``).

Here the phone is the WebSocket server and sends one JSON event per sensor
reading. :func:`follow_sensor_server` connects, gathers about 100 ms of
events per bus message, and reconnects with back-off
(:mod:`~harstream.stream.gateway.reconnect`) when the phone drops, for as
long as the gateway runs. The device is
published as ``phone:<device>`` like every gateway device.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import quote, urlsplit

import numpy as np
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harstream.stream.gateway.admission import RateLimit
from harstream.stream.gateway.phone_formats import (
    FormatError,
    Readings,
    check_device,
    load_message,
    parse_sensor_server,
)
from harstream.stream.gateway.port import GatewayPort
from harstream.stream.gateway.reconnect import Backoff, follow

log = logging.getLogger("harstream.gateway")

SENSOR_SERVER_TYPES = '["android.sensor.accelerometer","android.sensor.gyroscope"]'
GATHER_S = 0.1  # events gathered into one bus message
#: Events a phone may send a second (one message a reading: three sensors at 1 kHz, and
#: room); beyond it they are dropped unread and counted (``rate_limit``).
MAX_EVENTS_PER_S = 5000.0
#: Messages read before the gateway's other phones get the event loop again: recv()
#: returns at once while a phone's messages are queued, so a phone flooding events held
#: the loop and every other phone's answers took 1-2 s instead of 10 ms.
YIELD_EVERY = 8


def sensor_server_url(url: str) -> str:
    """The SensorServer endpoint for accelerometer + gyroscope under ``url``.

    >>> sensor_server_url("ws://192.168.1.42:8080")[:47]
    'ws://192.168.1.42:8080/sensors/connect?types=%5'
    """
    base = url.rstrip("/")
    if "/sensors/connect" not in base:
        base += "/sensors/connect?types=" + quote(SENSOR_SERVER_TYPES)
    return base


class _Connect(ws_connect):
    """websockets' connect, refusing a redirect: it followed up to 10 to any
    address, so a phone could send the gateway to another host."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


async def follow_sensor_server(gateway: GatewayPort, url: str, device: str | None = None) -> None:
    """Read a SensorServer phone into ``gateway``, reconnecting until the gateway closes."""
    local = check_device(device or f"sensorserver-{urlsplit(url).hostname or 'phone'}")
    owner = ("sensorserver", url)

    async def session(backoff: Backoff) -> None:
        try:
            opened = await _Connect(
                sensor_server_url(url),
                max_size=gateway.config.max_message,
                open_timeout=10,
                close_timeout=1,
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            where = exc.response.headers.get("Location", "")
            raise FormatError(
                "http",
                f"SensorServer answered {status} instead of opening the WebSocket"
                + (f" (to {where[:80]!r})" if where else "")
                + "; a redirect is not followed",
            ) from None
        async with opened as phone:
            bus_id = gateway.claim(local, owner, None)
            try:
                log.info("connected to SensorServer %s as device %s", url, bus_id)
                backoff.connected()
                await _read(gateway, phone, bus_id)
            except ConnectionClosed as exc:
                refused = refusal(exc)
                if refused is not None:
                    gateway.counters.reject(refused, f"SensorServer {url}: {exc}")
                raise
            finally:
                gateway.release(bus_id, owner)

    await follow(gateway, f"SensorServer {url}", session, dropped=(ConnectionClosed,))


def refusal(exc: ConnectionClosed) -> str | None:
    """The reason the gateway closed a phone's WebSocket for what the phone sent
    (its own close frame says), or None when the phone closed or went away.

    >>> from websockets.frames import Close
    >>> refusal(ConnectionClosed(None, Close(1009, "too many fragments"))), refusal(ConnectionClosed(None, None))
    ('ws_fragments', None)
    """
    sent = exc.sent
    if sent is None or exc.rcvd_then_sent:
        return None
    if sent.code == 1009:
        return "ws_fragments" if "fragments" in sent.reason else "too_large"
    return "ws_protocol" if sent.code in (1002, 1007) else None


async def _read(gateway: GatewayPort, phone, device: str) -> None:
    # One event per message: gather ~100 ms of events before resampling and
    # publishing, so bus messages are not one sample each.
    pending: list[Readings] = []
    deadline = time.monotonic() + GATHER_S
    silent_since = time.monotonic()
    events = RateLimit(MAX_EVENTS_PER_S, 2 * MAX_EVENTS_PER_S)
    read, over = 0, 0

    def flush() -> None:
        nonlocal over
        if over:
            gateway.counters.reject(
                "rate_limit", f"{device}: {over} events over {MAX_EVENTS_PER_S:g}/s, not read", over
            )
            over = 0
        if not pending:
            return
        try:
            gateway.publish(device, concat(pending), "sensorserver")
            gateway.counters.count("messages", len(pending))
        except FormatError as exc:
            gateway.counters.reject(exc.reason, exc.detail)
        pending.clear()

    # One recv() at a time, never cancelled while it may be half-way through a
    # message: a recv() cancelled while websockets closed the connection for
    # what the phone sent (too many fragments) and called again met the rest
    # of that message and failed with a bare AssertionError.
    receiving: asyncio.Future | None = None
    try:
        while True:
            if receiving is None:
                receiving = asyncio.ensure_future(phone.recv())
            done, _ = await asyncio.wait({receiving}, timeout=max(deadline - time.monotonic(), 0.001))
            if done:
                raw, receiving = receiving.result(), None  # ConnectionClosed when the phone is gone
                silent_since = time.monotonic()
                read += 1
                if not events.take():
                    over += 1
                else:
                    try:
                        pending.append(parse_sensor_server(load_message(raw)))
                    except FormatError as exc:
                        gateway.counters.reject(exc.reason, exc.detail)
            elif time.monotonic() - silent_since > gateway.config.idle_timeout:
                raise TimeoutError(f"no event for {gateway.config.idle_timeout:g} s")
            if read % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # the other phones' turn
            if time.monotonic() >= deadline:
                flush()
                deadline = time.monotonic() + GATHER_S
    finally:
        if receiving is not None:
            receiving.cancel()
        flush()


def concat(parts: list[Readings]) -> Readings:
    """Several messages' readings as one, each stream in arrival order."""
    out = Readings()
    for stream in ("acc", "gyro"):
        ts = [getattr(p, f"{stream}_t") for p in parts if len(getattr(p, f"{stream}_t"))]
        if ts:
            setattr(out, f"{stream}_t", np.concatenate(ts))
            setattr(out, stream, np.concatenate([getattr(p, stream) for p in parts if len(getattr(p, f"{stream}_t"))]))
    with_pressure = [p for p in parts if len(p.pressure_t)]
    if with_pressure:  # android.sensor.pressure events, where the URL asked for them
        out.pressure_t = np.concatenate([p.pressure_t for p in with_pressure])
        out.pressure = np.concatenate([p.pressure for p in with_pressure])
    for p in parts:
        for reason, n in p.pressure_refused.items():
            out.pressure_refused[reason] = out.pressure_refused.get(reason, 0) + n
    return out
