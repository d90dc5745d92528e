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
    ingest_address,
    output_address,
)

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

    from harstream.stream.bus.sockets import SAMPLE_MESSAGE_BYTES, SUBSCRIPTION_BYTES, BusSockets

    ctx = context or zmq.Context.instance()
    stop = stop or threading.Event()
    sockets = BusSockets(keys, ctx)
    controls = []
    threads = []
    try:
        for name, front, back in (
            ("ingest", ingest or ingest_address(), ingest_backend),
            ("output", output_backend, output or output_address()),
        ):
            # A peer sending a larger frame is disconnected before it is held;
            # an XPUB only ever receives subscriptions.
            xsub = sockets.open(zmq.XSUB, front, "bind", max_message=SAMPLE_MESSAGE_BYTES, sndhwm=HWM, rcvhwm=HWM)
            xpub = sockets.open(zmq.XPUB, back, "bind", max_message=SUBSCRIPTION_BYTES, sndhwm=HWM, rcvhwm=HWM)
            a, b = xsub.getsockopt_string(zmq.LAST_ENDPOINT), xpub.getsockopt_string(zmq.LAST_ENDPOINT)
            # The steering pair never leaves the process (inproc): no keys, no size to guard.
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
            if t.ident is not None:  # started (a refused address stops the set-up before)
                t.join(2)
        for ctl in controls:
            ctl.close(0)
        sockets.close(0)


def _forward(xsub, xpub, control) -> None:
    import zmq

    try:
        zmq.proxy_steerable(xsub, xpub, None, control)
    except zmq.ZMQError as exc:
        log.debug("proxy stopped: %s", exc)
    finally:
        control.close(0)
