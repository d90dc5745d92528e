"""ZeroMQ CURVE on the bus: loopback stays open, anything else needs keys.

A key folder (``harstream keys DIR``) holds two key pairs and an allow-list:

- ``bus.key`` / ``bus.key_secret``: the pair of whoever *binds* (the worker,
  or the proxy): a CURVE server;
- ``client.key`` / ``client.key_secret``: the pair of whoever *connects*
  (simulator, tail, a worker behind the proxy): a CURVE client;
- ``clients/``: the public keys a server lets in (``client.key`` to start
  with; add one file per further client pair).

A server host needs ``bus.key_secret`` and ``clients/``; a client host needs
``client.key_secret`` and ``bus.key``. Secret files are written mode 0600.

>>> is_loopback("tcp://127.0.0.1:5555"), is_loopback("ipc:///tmp/bus"), is_loopback("tcp://10.0.0.5:5555")
(True, True, False)
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import re
import threading
from pathlib import Path

from harstream.stream.bus.addresses import parse_endpoint
from harstream.stream.files.small_file import FileRefused, read_small_file

log = logging.getLogger(__name__)


class BusAuthError(ValueError):
    """An address off loopback without keys, or a key folder missing a file."""


def is_loopback(address: str) -> bool:
    """Whether only this machine can reach ``address`` (ipc, inproc, tcp on 127/8, ::1, localhost)."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    if not address.startswith("tcp://"):
        return False
    host = address[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    host = host.split(";")[-1]  # "source;destination" form: the destination counts
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # an interface name or a host name: not provably loopback
        return False


def generate_keys(folder: str | Path) -> list[Path]:
    """Write the bus and client key pairs and the allow-list into ``folder``."""
    import os

    import zmq.auth

    folder = Path(folder)
    (folder / "clients").mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("bus", "client"):
        public, secret = zmq.auth.create_certificates(folder, name)
        os.chmod(secret, 0o600)
        written += [Path(public), Path(secret)]
    allowed = folder / "clients" / "client.key"
    allowed.write_bytes((folder / "client.key").read_bytes())
    return written + [allowed]


def refuse_off_loopback(address: str, keys: str | Path | None) -> None:
    """Raise :class:`BusAuthError` if ``address`` (without its ``@``/``>``
    prefix) is reachable from other machines and there are no keys."""
    if keys is None and not is_loopback(address):
        raise BusAuthError(
            f"{address} is reachable from other machines; the bus there needs CURVE keys "
            "(make them with `harstream keys DIR`, then pass --keys DIR to every part)"
        )


def secure(socket, endpoint: str, default_verb: str, keys: str | Path | None) -> bool:
    """Make ``socket`` a CURVE server (if it binds) or client (if it connects)
    with the keys in ``keys``; without keys, refuse an address off loopback.
    True if it made a server: its context then needs :func:`start_authenticator`
    (once), or any CURVE client would be let in. Sockets are opened through
    :class:`~harstream.stream.bus.sockets.BusSockets`, which does both."""
    verb, address = parse_endpoint(endpoint, default_verb)
    refuse_off_loopback(address, keys)
    if keys is None:
        return False
    folder = Path(keys)
    if verb == "bind":
        public, secret = _pair(folder, "bus")
        socket.curve_secretkey, socket.curve_publickey = secret, public
        socket.curve_server = True
    else:
        public, secret = _pair(folder, "client")
        socket.curve_secretkey, socket.curve_publickey = secret, public
        server_public, _ = read_key_file(_need(folder / "bus.key"))
        socket.curve_serverkey = server_public
    return verb == "bind"


class _SharedAuthenticator:
    """One ZAP handler per ZeroMQ context (ZeroMQ allows one: it binds
    ``inproc://zeromq.zap.01``), shared by every part of the process that binds
    with keys there and stopped when the last of them stops."""

    _lock = threading.Lock()
    _running: dict[int, tuple[object, Path, int]] = {}  # context address -> (authenticator, clients, users)

    def __init__(self, context, clients: Path):
        import zmq
        from zmq.auth.thread import ThreadAuthenticator

        # ThreadAuthenticator needs a blocking context; a shadow shares the sockets' one (asyncio too).
        self._key = context.underlying
        self._stopped = False
        with self._lock:
            running = self._running.get(self._key)
            if running is not None:
                auth, folder, users = running
                if folder != clients:
                    raise BusAuthError(
                        f"{clients}: this process already lets in the clients of {folder}; "
                        "one process serves one key folder"
                    )
                self._running[self._key] = (auth, folder, users + 1)
                return
            allowed = read_client_keys(clients)  # every file judged before the thread starts
            auth = ThreadAuthenticator(zmq.Context.shadow(context.underlying))
            auth.start()
            auth.certs["*"] = allowed  # what configure_curve would set, without reading the folder again
            self._running[self._key] = (auth, clients, 1)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        with self._lock:
            running = self._running.get(self._key)
            if running is None:
                return
            auth, folder, users = running
            if users > 1:
                self._running[self._key] = (auth, folder, users - 1)
                return
            del self._running[self._key]
        auth.stop()  # type: ignore[attr-defined]


def start_authenticator(context, keys: str | Path):
    """A ZAP handler in a thread letting in the clients listed in ``keys/clients``
    (stop it with ``.stop()``); parts of one process binding with the same keys
    on one context share it."""
    clients = _need(Path(keys) / "clients").resolve()
    return _SharedAuthenticator(context, clients)


#: The largest key file read (pyzmq writes about 360 bytes).
MAX_KEY_FILE_BYTES = 4096
#: The most client keys a folder may list.
MAX_CLIENT_KEYS = 10_000
_Z85_KEY = re.compile(rb'\s*(public|secret)-key\s*=\s*"([^"]*)"\s*')


def read_key_file(path: Path) -> tuple[bytes, bytes | None]:
    """``(public, secret)`` keys of a CURVE certificate file as pyzmq writes
    it (``secret`` None in a public file), each 40 Z85 characters; anything
    else, a file that is no regular file (a FIFO would block the reader), a
    symlink loop or one over :data:`MAX_KEY_FILE_BYTES` is refused naming it.
    A secret file others may read is taken, with a warning."""
    from zmq.utils import z85

    try:
        text, mode = read_small_file(path, MAX_KEY_FILE_BYTES, follow_symlinks=True)
    except FileRefused as exc:
        raise BusAuthError(f"{path}: {exc.strerror}; not a key file made by `harstream keys`") from None
    except OSError as exc:
        raise BusAuthError(f"{path}: cannot be read ({exc.strerror})") from None
    keys: dict[bytes, bytes] = {}
    for line in text.splitlines():
        match = _Z85_KEY.fullmatch(line)
        if match:
            keys[match.group(1)] = match.group(2)
    for kind, key in keys.items():
        try:
            ok = len(key) == 40 and len(z85.decode(key)) == 32
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise BusAuthError(f"{path}: its {kind.decode()}-key is not 40 Z85 characters (a CURVE key); remake it")
    if b"public" not in keys:
        raise BusAuthError(f"{path}: no public-key line; not a key file made by `harstream keys`")
    if b"secret" in keys and mode & 0o077:
        log.warning("%s: a secret key others on this machine may read (mode %o); chmod 600 it", path, mode & 0o777)
    return keys[b"public"], keys.get(b"secret")


def read_client_keys(folder: Path) -> dict[bytes, bool]:
    """The public keys a server lets in: every ``*.key`` file in ``folder``
    (as pyzmq reads them), each read by :func:`read_key_file`; one bad file
    is refused naming it, rather than pyzmq's silent answer (it logs the
    error and then lets no client in)."""
    try:
        files = sorted(itertools.islice((p for p in folder.iterdir() if p.name.endswith(".key")), MAX_CLIENT_KEYS + 1))
    except OSError as exc:
        raise BusAuthError(f"{folder}: cannot be listed ({exc.strerror})") from None
    if len(files) > MAX_CLIENT_KEYS:
        raise BusAuthError(f"{folder}: over {MAX_CLIENT_KEYS:,} .key files; a bus lets in fewer clients")
    return {read_key_file(path)[0]: True for path in files}


def _pair(folder: Path, name: str) -> tuple[bytes, bytes]:
    path = _need(folder / f"{name}.key_secret")
    public, secret = read_key_file(path)
    if secret is None:
        raise BusAuthError(f"{path}: no secret key in it")
    return public, secret


def _need(path: Path) -> Path:
    if not path.exists():
        raise BusAuthError(f"{path}: missing (make a key folder with `harstream keys DIR`)")
    return path
