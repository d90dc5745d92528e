"""Every ZeroMQ socket a process binds or connects, made one way.

:class:`BusSockets` holds a process's context and CURVE key folder; its
:meth:`~BusSockets.open` makes one socket with everything the bus needs in one
call, in the order ZeroMQ needs it:

1. an address off loopback without keys is refused before any socket exists
   (:class:`~harstream.stream.bus.auth.BusAuthError`);
2. the largest message the socket takes (``ZMQ_MAXMSGSIZE``: a peer sending
   more is disconnected by ZeroMQ before the message is held), required of
   every caller, and the high-water marks;
3. with keys: a CURVE server (binding) or client (connecting), and for a
   server the ZAP handler letting in only the clients in ``keys/clients``,
   started before the socket binds so that no handshake escapes it;
4. bind or connect as the endpoint says (``@`` binds, ``>`` connects), a
   bind retried while a predecessor still holds the address if asked.

A new command gets all of it by opening its sockets here.

Largest messages: a socket receiving samples takes
:data:`~harstream.stream.core.protocol.MAX_FRAME_BYTES`, one receiving output
(predictions, stats, signal) :data:`OUTPUT_MESSAGE_BYTES`, and an XPUB, which
only ever receives subscriptions, :data:`SUBSCRIPTION_BYTES`.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import zmq

from harstream.stream.bus.addresses import parse_endpoint
from harstream.stream.bus.auth import refuse_off_loopback, secure, start_authenticator
from harstream.stream.core.protocol import MAX_FRAME_BYTES
from harstream.stream.core.subscriptions import MAX_SUBSCRIPTION_BYTES

log = logging.getLogger(__name__)

# An output message (a prediction, a stats record, a decimated signal) is a few kB.
OUTPUT_MESSAGE_BYTES = 1024 * 1024
# What an XPUB receives: subscription messages (a topic prefix each), bounded
# in length (stream/core/subscriptions.py says why: ZeroMQ's trie holds ~80 bytes
# per prefix byte).
SUBSCRIPTION_BYTES = MAX_SUBSCRIPTION_BYTES
SAMPLE_MESSAGE_BYTES = MAX_FRAME_BYTES


class BusSockets:
    """The sockets of one process (or one part of it) on the bus.

    ``keys``: a CURVE key folder (``harstream keys DIR``) or None (loopback
    only). ``context``: the ZeroMQ context (the process's shared instance by
    default; an asyncio context works too). :meth:`close` closes every socket
    opened here and stops the ZAP handler.
    """

    def __init__(self, keys: str | Path | None = None, context: zmq.Context | None = None):
        self.keys = keys
        self.context = context if context is not None else zmq.Context.instance()
        self._auth = None
        self._sockets: list[zmq.Socket] = []

    def open(
        self,
        kind: int,
        endpoint: str,
        default_verb: str,
        *,
        max_message: int,
        sndhwm: int | None = None,
        rcvhwm: int | None = None,
        linger: int = 0,
        subscribe: Sequence[bytes] = (),
        options: Mapping[int, int | bytes] | None = None,
        retry_bind_s: float = 0.0,
    ) -> zmq.Socket:
        """A socket of ``kind`` (``zmq.SUB``, ``zmq.XPUB``...) attached to
        ``endpoint`` (as in :mod:`~harstream.stream.bus.addresses`; ``default_verb``
        is ``bind`` or ``connect``), taking messages of at most ``max_message``
        bytes. ``options``: further socket options, set before it attaches.
        ``retry_bind_s``: keep retrying a bind this long while the address is
        in use (a restarted process's predecessor may not have released it)."""
        verb, address = parse_endpoint(endpoint, default_verb)
        refuse_off_loopback(address, self.keys)
        if not 0 < max_message <= 1 << 31:
            raise ValueError(f"largest message {max_message} bytes: expected 1..2 GiB")
        sock = self.context.socket(kind)
        try:
            sock.setsockopt(zmq.LINGER, linger)
            sock.setsockopt(zmq.MAXMSGSIZE, max_message)
            if sndhwm is not None:
                sock.setsockopt(zmq.SNDHWM, sndhwm)
            if rcvhwm is not None:
                sock.setsockopt(zmq.RCVHWM, rcvhwm)
            for option, value in (options or {}).items():
                sock.setsockopt(option, value)
            for prefix in subscribe:
                sock.setsockopt(zmq.SUBSCRIBE, prefix)
            if secure(sock, endpoint, default_verb, self.keys) and self._auth is None:
                assert self.keys is not None
                self._auth = start_authenticator(self.context, self.keys)
            _attach(sock, verb, address, retry_bind_s)
        except BaseException:
            sock.close(0)
            if self._auth is not None and not self._sockets:  # started for this socket alone
                self._auth.stop()
                self._auth = None
            raise
        self._sockets.append(sock)
        return sock

    def close(self, linger: int | None = None) -> None:
        """Close every socket opened here (each with its own linger unless
        ``linger`` is given) and stop the ZAP handler."""
        for sock in self._sockets:
            if not sock.closed:
                sock.close(linger)
        self._sockets.clear()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def _attach(sock: zmq.Socket, verb: str, address: str, retry_s: float) -> None:
    deadline = time.monotonic() + retry_s
    while True:
        try:
            getattr(sock, verb)(address)
            return
        except zmq.ZMQError as exc:
            if verb != "bind" or exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                raise
            log.warning("%s is in use; retrying", address)
            time.sleep(0.2)
