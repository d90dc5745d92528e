"""The dashboard's one ZeroMQ subscriber, drained without blocking.

ZeroMQ sockets are not thread-safe, so each browser session owns one
:class:`Subscriber` (kept in ``st.session_state``) and drains it from the
script thread on every refresh tick; no background thread touches it.
"""

from __future__ import annotations

import time

import zmq

from harstream.stream.bus.addresses import output_address
from harstream.stream.bus.sockets import OUTPUT_MESSAGE_BYTES, BusSockets
from harstream.stream.core.protocol import HISTORY_PREFIX, PREDICTION_PREFIX, STATS_PREFIX, signal_topic

# Messages queued beyond this are dropped by ZeroMQ, not by the page: a tab
# that falls behind loses old messages instead of growing without bound.
RCVHWM = 50_000


class Subscriber:
    """A SUB socket on the worker's output bus.

    Subscribes to every prediction, history and stats message, and to the signal
    feed of one device at a time (:meth:`follow_signal`): the page plots one
    device's signal, and with hundreds of devices the feed would be most of
    the traffic.
    """

    def __init__(self, endpoint: str | None = None, keys: str | None = None):
        """``keys``: a CURVE key folder (:mod:`~harstream.stream.bus.auth`);
        without one an endpoint off loopback is refused (``BusAuthError``)."""
        self.endpoint = endpoint or output_address()
        self._sockets = BusSockets(keys)
        self._socket: zmq.Socket[bytes] = self._sockets.open(
            zmq.SUB,
            self.endpoint,
            "connect",
            max_message=OUTPUT_MESSAGE_BYTES,
            rcvhwm=RCVHWM,
            subscribe=[PREDICTION_PREFIX, HISTORY_PREFIX, STATS_PREFIX],
        )
        self.signal_device: str | None = None
        self.address = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def follow_signal(self, device: str | None) -> None:
        """Receive the signal feed of ``device`` only (None: of no device)."""
        if device == self.signal_device:
            return
        if self.signal_device is not None:
            self._socket.setsockopt(zmq.UNSUBSCRIBE, signal_topic(self.signal_device))
        if device is not None:
            self._socket.setsockopt(zmq.SUBSCRIBE, signal_topic(device))
        self.signal_device = device

    def drain(self, max_messages: int = 5_000, budget_s: float = 0.25) -> list[list[bytes]]:
        """Every message waiting now, up to ``max_messages`` or ``budget_s``
        seconds of receiving, whichever comes first; never blocks. A backlog
        (a burst, a slow tick) is worked off over the following ticks."""
        messages: list[list[bytes]] = []
        deadline = time.monotonic() + budget_s
        while len(messages) < max_messages:
            try:
                messages.append(self._socket.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            if len(messages) % 256 == 0 and time.monotonic() > deadline:
                break
        return messages

    def close(self) -> None:
        self._sockets.close(0)

    @property
    def closed(self) -> bool:
        return self._socket.closed

    def __del__(self) -> None:  # a session that ends closes its socket
        try:
            self._socket.close(linger=0)
        except Exception:
            pass
