"""XSUB/XPUB forwarding so several workers share the well-known addresses.

Two proxies in one process, each a :func:`zmq.proxy_steerable` in a thread:

- ingest: XSUB bound at the ingest address (producers connect their PUB),
  XPUB bound at the ingest back end (workers connect their SUB; their shard
  subscriptions travel upstream, so producers only send what someone wants);
- output: XSUB bound at the output back end (workers connect their PUB),
  XPUB bound at the output address (tail, dashboard connect their SUB).

**Only workers publish output.** Whatever a publisher sends into the output
back end reaches every subscriber, who cannot tell a worker's prediction from
a forged one. So the output back end lets in only publishers that prove a
shared secret (ZeroMQ PLAIN, checked by a ZAP handler): a random token in a
file readable by its owner only (:func:`load_or_create_secret`; by default
beside an ``ipc://`` back end, or under ``$XDG_RUNTIME_DIR``/``~/.cache``,
:func:`default_output_secret`). Workers show it
(:func:`output_credentials`); a publisher without it, or with a wrong one,
fails its handshake, and the refusals are counted (``refused``) and logged.
Consumers need nothing: what reaches the output front end came from a
worker. With CURVE ``keys`` the back end is a CURVE server instead (every key
in ``clients/`` may publish).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from harstream.stream.bus.addresses import (
    DEFAULT_PROXY_INGEST_BACKEND,
    DEFAULT_PROXY_OUTPUT_BACKEND,
    ingest_address,
    output_address,
    parse_endpoint,
)

log = logging.getLogger(__name__)

HWM = 200_000
OUTPUT_DOMAIN = "harstream-output"  # the ZAP domain of the output back end
OUTPUT_USER = "worker"
SECRET_BYTES = 32
SUMMARY_EVERY_S = 10.0  # at most one log line about refused publishers this often


def default_output_secret(backend: str) -> Path:
    """Where the output secret of the back end ``backend`` lives unless told:
    ``$HARSTREAM_OUTPUT_SECRET``, else ``<socket file>.secret`` for ``ipc://``,
    else ``output-<host>-<port>.secret`` under ``$XDG_RUNTIME_DIR/harstream``
    (or ``~/.cache/harstream``).

    >>> default_output_secret("@ipc:///tmp/bus/out.back").as_posix()
    '/tmp/bus/out.back.secret'
    """
    if os.environ.get("HARSTREAM_OUTPUT_SECRET"):
        return Path(os.environ["HARSTREAM_OUTPUT_SECRET"])
    _, address = parse_endpoint(backend, "bind")
    if address.startswith("ipc://"):
        return Path(address[len("ipc://") :] + ".secret")
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or Path.home() / ".cache") / "harstream"
    return base / f"output-{re.sub(r'[^A-Za-z0-9.]+', '-', address.split('://', 1)[-1]).strip('-')}.secret"


def load_or_create_secret(path: str | Path) -> str:
    """The secret in ``path``; made (random, mode 0600) when the file does not
    exist yet, so a proxy and its workers may start in any order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(SECRET_BYTES) + "\n")
    text = ""
    for _ in range(50):  # another process may be writing it this very moment
        text = path.read_text(encoding="ascii", errors="replace").strip()
        if text:
            break
        time.sleep(0.01)
    if not re.fullmatch(r"[0-9a-f]{32,128}", text):
        raise ValueError(f"{path}: not an output secret (expected hex digits; delete it to make a new one)")
    return text


def output_credentials(path: str | Path | None) -> dict[int, int | bytes]:
    """Socket options making a worker's output socket (connecting to a proxy's
    back end) show the secret in ``path``; none without a path."""
    import zmq

    if path is None:
        return {}
    return {zmq.PLAIN_USERNAME: OUTPUT_USER.encode(), zmq.PLAIN_PASSWORD: load_or_create_secret(path).encode()}


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
    output_secret: str | Path | None = None,
    refused: Counter[str] | None = None,
) -> None:
    """Forward both buses until ``stop`` is set. ``keys``: a CURVE key folder
    (:mod:`~harstream.stream.bus.auth`); without one, addresses off loopback are refused.
    ``output_secret``: a file (made if missing) whose secret every publisher on
    the output back end must show (ignored with ``keys``, which authenticate
    instead); ``refused`` counts the publishers turned away, by reason."""
    import zmq

    from harstream.stream.bus.sockets import SAMPLE_MESSAGE_BYTES, SUBSCRIPTION_BYTES, BusSockets

    ctx = context or zmq.Context.instance()
    stop = stop or threading.Event()
    sockets = BusSockets(keys, ctx)
    refused = refused if refused is not None else Counter()
    controls = []
    threads = []
    monitors = []
    done = threading.Event()  # ends the monitors however this returns
    gate = None
    try:
        gated: dict[int, int | bytes] = {}
        if keys is None and output_secret is not None:
            from zmq.auth.thread import ThreadAuthenticator

            # Started before the back end binds, so that no handshake escapes it.
            gate = ThreadAuthenticator(ctx)
            gate.start()
            gate.configure_plain(OUTPUT_DOMAIN, {OUTPUT_USER: load_or_create_secret(output_secret)})
            gated = {zmq.PLAIN_SERVER: 1, zmq.ZAP_DOMAIN: OUTPUT_DOMAIN.encode()}
        for name, front, back in (
            ("ingest", ingest or ingest_address(), ingest_backend),
            ("output", output_backend, output or output_address()),
        ):
            # A peer sending a larger frame is disconnected before it is held;
            # an XPUB only ever receives subscriptions.
            options = gated if name == "output" else {}
            xsub = sockets.open(
                zmq.XSUB, front, "bind", max_message=SAMPLE_MESSAGE_BYTES, sndhwm=HWM, rcvhwm=HWM, options=options
            )
            if options:
                monitors.append(
                    threading.Thread(
                        target=_count_refusals,
                        args=(xsub.get_monitor_socket(sum(REFUSAL_REASONS)), refused, done),
                        name="proxy-output-monitor",
                        daemon=True,
                    )
                )
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
            if options:
                line += f"  (publishers show the output secret in {output_secret})"
            log.info(line)
            if printer:
                printer(line)
        for t in threads + monitors:
            t.start()
        if on_ready:
            on_ready()
        while not stop.wait(0.2):
            pass
    finally:
        done.set()
        for t in monitors:
            if t.ident is not None:
                t.join(2)
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
        if gate is not None:
            gate.stop()


def _forward(xsub, xpub, control) -> None:
    import zmq

    try:
        zmq.proxy_steerable(xsub, xpub, None, control)
    except zmq.ZMQError as exc:
        log.debug("proxy stopped: %s", exc)
    finally:
        control.close(0)


# ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL, _PROTOCOL (another mechanism: no secret shown), _AUTH (a wrong one)
REFUSAL_REASONS = {0x0800: "output_handshake", 0x2000: "output_no_secret", 0x4000: "output_bad_secret"}


def _count_refusals(monitor, refused: Counter[str], done: threading.Event) -> None:
    """Count (and log, at most every SUMMARY_EVERY_S) publishers the output back
    end turned away: no secret (another mechanism) or a wrong one."""
    from zmq.utils.monitor import recv_monitor_message

    logged_at, logged = 0.0, 0
    try:
        while not done.is_set():
            if monitor.poll(200):
                event = recv_monitor_message(monitor)
                refused[REFUSAL_REASONS.get(event["event"], "output_handshake")] += 1
            total = sum(refused.values())
            if total > logged and time.monotonic() - logged_at >= SUMMARY_EVERY_S:
                log.warning(
                    "proxy output: %d publishers refused so far (%s): only workers with the output secret may publish",
                    total,
                    ", ".join(f"{k}={v}" for k, v in sorted(refused.items())),
                )
                logged_at, logged = time.monotonic(), total
    finally:
        monitor.close(0)
