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
from pathlib import Path

from harstream.stream.bus.addresses import parse_endpoint


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


def secure(socket, endpoint: str, default_verb: str, keys: str | Path | None) -> bool:
    """Make ``socket`` a CURVE server (if it binds) or client (if it connects)
    with the keys in ``keys``; without keys, refuse an address off loopback.
    True if it made a server: its context then needs :func:`start_authenticator`
    (once), or any CURVE client would be let in."""
    verb, address = parse_endpoint(endpoint, default_verb)
    if keys is None:
        if not is_loopback(address):
            raise BusAuthError(
                f"{address} is reachable from other machines; the bus there needs CURVE keys "
                "(make them with `harstream keys DIR`, then pass --keys DIR to every part)"
            )
        return False
    import zmq.auth

    folder = Path(keys)
    if verb == "bind":
        public, secret = _pair(folder, "bus")
        socket.curve_secretkey, socket.curve_publickey = secret, public
        socket.curve_server = True
    else:
        public, secret = _pair(folder, "client")
        socket.curve_secretkey, socket.curve_publickey = secret, public
        server_public, _ = zmq.auth.load_certificate(_need(folder / "bus.key"))
        socket.curve_serverkey = server_public
    return verb == "bind"


def start_authenticator(context, keys: str | Path):
    """A ZAP handler in a thread letting in the clients listed in ``keys/clients``
    (stop it with ``.stop()``)."""
    from zmq.auth.thread import ThreadAuthenticator

    clients = _need(Path(keys) / "clients")
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(clients))
    return auth


def _pair(folder: Path, name: str) -> tuple[bytes, bytes]:
    import zmq.auth

    public, secret = zmq.auth.load_certificate(_need(folder / f"{name}.key_secret"))
    if secret is None:
        raise BusAuthError(f"{folder / f'{name}.key_secret'}: no secret key in it")
    return public, secret


def _need(path: Path) -> Path:
    if not path.exists():
        raise BusAuthError(f"{path}: missing (make a key folder with `harstream keys DIR`)")
    return path
