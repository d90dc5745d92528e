"""XSUB/XPUB forwarding so several workers share the well-known addresses.

Two proxies in one process, each a :func:`zmq.proxy_steerable` in a thread:

- ingest: XSUB bound at the ingest address (producers connect their PUB),
  XPUB bound at the ingest back end (workers connect their SUB; their shard
  subscriptions travel upstream, so producers only send what someone wants);
- output: XSUB bound at the output back end (workers connect their PUB),
  XPUB bound at the output address (tail, dashboard connect their SUB).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from harstream.stream.bus.addresses import (
    DEFAULT_PROXY_INGEST_BACKEND,
    DEFAULT_PROXY_OUTPUT_BACKEND,
    attach,
    ingest_address,
    output_address,
)
from harstream.stream.core.protocol import MAX_FRAME_BYTES

log = logging.getLogger(__name__)

HWM = 200_000


def run_proxies(
    ingest: str | None = None,
    ingest_backend: str = DEFAULT_PROXY_INGEST_BACKEND,
    output: str | None = None,
    output_backend: str = DEFAULT_PROXY_OUTPUT_BACKEND,
    stop: threading.Event | None = None,
    context=None,
    on_ready: Callable[[], None] | None = None,
    printer: Callable[[str], None] | None = None,
    keys: str | None = None,
) -> None:
    """Forward both buses until ``stop`` is set. ``keys``: a CURVE key folder
    (:mod:`~harstream.stream.bus.auth`); without one, addresses off loopback are refused."""
    import zmq

    ctx = context or zmq.Context.instance()
    stop = stop or threading.Event()
    pairs = []
    controls = []
    threads = []
    auth = None
    try:
        from harstream.stream.bus.auth import secure, start_authenticator

        if keys is not None:
            auth = start_authenticator(ctx, keys)
        for name, front, back in (
            ("ingest", ingest or ingest_address(), ingest_backend),
            ("output", output_backend, output or output_address()),
        ):
            xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
            for sock in (xsub, xpub):
                sock.setsockopt(zmq.SNDHWM, HWM)
                sock.setsockopt(zmq.RCVHWM, HWM)
                sock.setsockopt(zmq.LINGER, 0)
            # A peer sending a larger frame is disconnected before it is held;
            # an XPUB only ever receives subscriptions.
            xsub.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
            xpub.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)
            secure(xsub, front, "bind", keys)
            secure(xpub, back, "bind", keys)
            a = attach(xsub, front, "bind")
            b = attach(xpub, back, "bind")
            pairs.append((xsub, xpub))
            ctl_addr = f"inproc://harstream-proxy-{name}-{id(xsub)}"
            ctl = ctx.socket(zmq.PAIR)
            ctl.bind(ctl_addr)
            peer = ctx.socket(zmq.PAIR)
            peer.connect(ctl_addr)
            controls.append(ctl)
            t = threading.Thread(target=_forward, args=(xsub, xpub, peer), name=f"proxy-{name}", daemon=True)
            threads.append(t)
            line = f"proxy {name}: publishers -> {a}  |  subscribers -> {b}"
            log.info(line)
            if printer:
                printer(line)
        for t in threads:
            t.start()
        if on_ready:
            on_ready()
        while not stop.wait(0.2):
            pass
    finally:
        for ctl in controls:
            try:
                ctl.send(b"TERMINATE")
            except zmq.ZMQError:
                pass
        for t in threads:
            t.join(2)
        for ctl in controls:
            ctl.close(0)
        for xsub, xpub in pairs:
            xsub.close(0)
            xpub.close(0)
        if auth is not None:
            auth.stop()


def _forward(xsub, xpub, control) -> None:
    import zmq

    try:
        zmq.proxy_steerable(xsub, xpub, None, control)
    except zmq.ZMQError as exc:
        log.debug("proxy stopped: %s", exc)
    finally:
        control.close(0)
