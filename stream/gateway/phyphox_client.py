"""The gateway as a client of the phyphox app (``--connect http://phone:8080``).

phyphox (RWTH Aachen; Android and iOS, widely used in teaching) serves its
running experiment over HTTP when "Allow remote access" is on: ``/config``
names the experiment's sensor inputs and buffers, ``/get?t=T&x=T|t`` returns
the values recorded after time ``T``. :func:`follow_phyphox` asks about ten
times a second for what is new, publishes it like any phone (``phone:<device>``),
and, when the phone stops answering, tries again with back-off
(:mod:`~harstream.stream.gateway.reconnect`) for as long as the gateway runs.

:class:`PhyphoxPoll` is the part without I/O: which buffers to ask for, from
which time on, and what an answer holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import socket
import threading
from urllib.parse import quote, urlsplit

from harstream.stream.gateway.phone_formats import (
    FormatError,
    Readings,
    check_device,
    load_message,
    parse_phyphox,
    phyphox_buffers,
)
from harstream.stream.gateway.port import GatewayPort
from harstream.stream.gateway.reconnect import Backoff, follow

log = logging.getLogger("harstream.gateway")

POLL_S = 0.1  # between two asks for new values
TIMEOUT_S = 5.0  # an ask not answered within this is a dropped phone
FROM_START = -1.0  # a threshold before every experiment time (phyphox counts from 0)


class PhyphoxPoll:
    """One phyphox phone's polling state.

    >>> poll = PhyphoxPoll({"acc": ("acc_time", "accX", "accY", "accZ")})
    >>> poll.query()                       # first: the newest value only, to learn the phone's time
    '/get?acc_time=&accX=&accY=&accZ='
    >>> r = poll.take({"buffer": {"acc_time": {"buffer": [12.5]}, "accX": {"buffer": [0]},
    ...     "accY": {"buffer": [9.8]}, "accZ": {"buffer": [0]}}, "status": {"session": "a1"}})
    >>> len(r), poll.query()               # nothing published yet; from now on, what is newer
    (0, '/get?acc_time=12.5&accX=12.5%7Cacc_time&accY=12.5%7Cacc_time&accZ=12.5%7Cacc_time')
    """

    def __init__(self, buffers: dict[str, tuple[str, ...]]):
        self.buffers = buffers
        self._after: dict[str, float | None] = {kind: None for kind in buffers}
        self.session: str | None = None

    def query(self) -> str:
        """The path of the next ``/get``: per stream its time buffer and values after the last time read."""
        parts = []
        for kind, (t, *values) in self.buffers.items():
            after = self._after[kind]
            since = "" if after is None else repr(after)
            parts.append(f"{quote(t)}={since}")
            parts += [f"{quote(v)}={quote(since + '|' + t) if since else ''}" for v in values]
        return "/get?" + "&".join(parts)

    def take(self, answer: dict) -> Readings:
        """The readings of one ``/get`` answer that are new (none from the first,
        which only tells where the phone's time is); a new session (the
        experiment cleared or restarted on the phone) is read from its start."""
        status = answer.get("status") if isinstance(answer, dict) else None
        session = status.get("session") if isinstance(status, dict) else None
        session = str(session)[:64] if session is not None else None
        restarted = self.session is not None and session != self.session
        first = all(v is None for v in self._after.values())
        self.session = session
        readings = parse_phyphox(answer, self.buffers)
        for kind, t in (("acc", readings.acc_t), ("gyro", readings.gyro_t), ("pressure", readings.pressure_t)):
            if kind in self._after and len(t):
                self._after[kind] = float(t.max())
        if restarted:
            self._after = {kind: FROM_START for kind in self.buffers}  # its times start again from 0
            return Readings()
        return Readings() if first else readings

    def skip_ahead(self) -> None:
        """Ask for the newest values only next time (an answer that was too large to take)."""
        self._after = {kind: None for kind in self.buffers}


def phyphox_base(url: str) -> str:
    """``http://host:port`` of a phyphox phone's address.

    >>> phyphox_base("http://192.168.1.42:8080/")
    'http://192.168.1.42:8080'
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r}: a phyphox address is http://PHONE:8080")
    return f"{parts.scheme}://{parts.netloc}"


class _Ask:
    """One GET of a phyphox phone, over within :data:`TIMEOUT_S` however the phone
    answers: the connection is cut at the deadline, or at once when the gateway
    stops waiting (:meth:`cut`). A socket timeout alone bounds each read, so a
    phone dripping a byte a second held a thread (and the gateway's exit) for as
    long as it liked. Only a 200 answer is read: a redirect is not followed (a
    phone cannot send the gateway to another address)."""

    def __init__(self, url: str, limit: int):
        self.url, self.limit = url, limit
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._cut = False
        self.timed_out = False

    def cut(self, timed_out: bool = False) -> None:
        with self._lock:
            if self._cut:
                return
            self._cut, self.timed_out = True, timed_out
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def run(self) -> dict:
        parts = urlsplit(self.url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = kind(parts.netloc, timeout=TIMEOUT_S)
        timer = threading.Timer(TIMEOUT_S, self.cut, kwargs={"timed_out": True})
        timer.daemon = True
        try:
            connection.connect()
            with self._lock:
                self._sock = connection.sock
                if self._cut:
                    raise TimeoutError("phyphox ask abandoned")
            timer.start()
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            connection.request("GET", path, headers={"Connection": "close"})
            reply = connection.getresponse()
            if reply.status != 200:
                where = reply.getheader("Location", "")
                raise FormatError(
                    "http",
                    f"phyphox {parts.path}: answered {reply.status} {reply.reason[:40]!r}"
                    + (f" to {where[:80]!r}" if where else "")
                    + "; a phyphox phone answers 200 (a redirect is not followed)",
                )
            body = reply.read(self.limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            if self._cut:
                raise TimeoutError(
                    f"phyphox answer not complete within {TIMEOUT_S:g} s" if self.timed_out else "phyphox ask abandoned"
                ) from None
            if isinstance(exc, (OSError, http.client.IncompleteRead)):
                raise OSError(f"phyphox answer cut short ({exc})") from None  # a phone that went away
            raise FormatError("http", f"phyphox {parts.path}: the answer is not HTTP ({type(exc).__name__})") from None
        finally:
            timer.cancel()
            connection.close()
        if self._cut:  # the body ended because the connection was cut
            raise TimeoutError(f"phyphox answer not complete within {TIMEOUT_S:g} s")
        if len(body) > self.limit:
            raise FormatError("too_large", f"phyphox answer over {self.limit} bytes")
        return load_message(bytes(body))


async def _fetch(gateway: GatewayPort, url: str, limit: int) -> dict:
    """One JSON object the phone answers, at most ``limit`` bytes (phyphox's server
    wants one request per connection: no keep-alive); a phone too slow to answer
    within :data:`TIMEOUT_S` is counted (``timeout``) and dropped."""
    ask = _Ask(url, limit)
    try:
        return await asyncio.to_thread(ask.run)
    except asyncio.CancelledError:
        ask.cut()  # the gateway is closing: the thread ends now, not when the phone is done
        raise
    except TimeoutError as exc:
        if ask.timed_out:
            gateway.counters.reject("timeout", f"{url}: {exc}")
        raise


async def follow_phyphox(gateway: GatewayPort, url: str, device: str | None = None) -> None:
    """Read a phyphox phone into ``gateway``, asking again after a drop until the gateway closes."""
    base = phyphox_base(url)
    local = check_device(device or f"phyphox-{urlsplit(url).hostname or 'phone'}")
    owner = ("phyphox", base)
    limit = gateway.config.max_message

    async def session(backoff: Backoff) -> None:
        poll = PhyphoxPoll(phyphox_buffers(await _fetch(gateway, base + "/config", limit)))
        bus_id = gateway.claim(local, owner, None)
        try:
            log.info("reading phyphox %s (%s) as device %s", base, ", ".join(poll.buffers), bus_id)
            backoff.connected()
            await _poll(gateway, poll, base, bus_id, limit)
        finally:
            gateway.release(bus_id, owner)

    await follow(gateway, f"phyphox {base}", session)


async def _poll(gateway: GatewayPort, poll: PhyphoxPoll, base: str, device: str, limit: int) -> None:
    while not gateway.closing:
        try:
            readings = poll.take(await _fetch(gateway, base + poll.query(), limit))
        except FormatError as exc:
            if exc.reason != "too_large":
                raise
            gateway.counters.reject(exc.reason, f"phyphox {base}: {exc.detail}; reading from its newest values on")
            poll.skip_ahead()
            readings = Readings()
        if len(readings):
            try:
                gateway.publish(device, readings, "phyphox")
                gateway.counters.count("messages", 1)
            except FormatError as exc:
                gateway.counters.reject(exc.reason, exc.detail)
        await asyncio.sleep(POLL_S)
