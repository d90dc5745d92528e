"""The dashboard's one ZeroMQ subscriber, drained without blocking.

ZeroMQ sockets are not thread-safe, so each browser session owns one
:class:`Subscriber` (kept in ``st.session_state``) and drains it from the
script thread on every refresh tick; no background thread touches it.
"""

from __future__ import annotations

import time

import zmq

from harstream.stream.bus import attach, output_address

# Messages queued beyond this are dropped by ZeroMQ, not by the page: a tab
# that falls behind loses old messages instead of growing without bound.
RCVHWM = 50_000


class Subscriber:
    """A SUB socket on the worker's output bus (predictions, signal, stats)."""

    def __init__(self, endpoint: str | None = None, topics: tuple[bytes, ...] = (b"p/", b"g/", b"stats/")):
        self.endpoint = endpoint or output_address()
        self._socket = zmq.Context.instance().socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, RCVHWM)
        self._socket.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            self._socket.setsockopt(zmq.SUBSCRIBE, topic)
        self.address = attach(self._socket, self.endpoint, "connect")

    def drain(self, max_messages: int = 20_000, budget_s: float = 0.25) -> list[list[bytes]]:
        """Every message waiting now, up to ``max_messages`` or ``budget_s``
        seconds of receiving, whichever comes first; never blocks."""
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
        self._socket.close(linger=0)

    @property
    def closed(self) -> bool:
        return self._socket.closed

    def __del__(self) -> None:  # a session that ends closes its socket
        try:
            self._socket.close(linger=0)
        except Exception:
            pass
