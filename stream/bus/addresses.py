"""Bus addresses and socket set-up shared by every process on the bus.

Two buses, both on loopback by default:

- **ingest** ``tcp://127.0.0.1:5555``: producers (simulator, gateway) publish
  samples; the worker binds a SUB socket there and producers *connect*, so
  any number of producers can join and start order does not matter.
- **output** ``tcp://127.0.0.1:5556``: the worker binds a PUB socket for
  predictions, signal feed and stats; subscribers (tail, dashboard) connect.

With several workers, ``harstream proxy`` binds both well-known addresses and
the workers connect to its back ends instead (see docs/protocol.md).

An endpoint may be prefixed as in CZMQ: ``@tcp://…`` binds, ``>tcp://…``
connects; without a prefix each role uses its default verb. The environment
variables ``HARSTREAM_INGEST`` and ``HARSTREAM_OUTPUT`` change the defaults.

>>> parse_endpoint("@tcp://127.0.0.1:7000", default="connect")
('bind', 'tcp://127.0.0.1:7000')
>>> parse_endpoint("tcp://127.0.0.1:7000", default="connect")
('connect', 'tcp://127.0.0.1:7000')
"""

from __future__ import annotations

import os

DEFAULT_INGEST = "tcp://127.0.0.1:5555"
DEFAULT_OUTPUT = "tcp://127.0.0.1:5556"
# Back ends of `harstream proxy` for sharded workers.
DEFAULT_PROXY_INGEST_BACKEND = "tcp://127.0.0.1:5557"
DEFAULT_PROXY_OUTPUT_BACKEND = "tcp://127.0.0.1:5558"


def ingest_address() -> str:
    return os.environ.get("HARSTREAM_INGEST", DEFAULT_INGEST)


def output_address() -> str:
    return os.environ.get("HARSTREAM_OUTPUT", DEFAULT_OUTPUT)


def parse_endpoint(endpoint: str, default: str) -> tuple[str, str]:
    """``(verb, address)`` of an endpoint; verb is ``bind`` or ``connect``."""
    if default not in ("bind", "connect"):
        raise ValueError(f"default verb must be bind or connect, not {default!r}")
    if endpoint.startswith("@"):
        return "bind", endpoint[1:]
    if endpoint.startswith(">"):
        return "connect", endpoint[1:]
    return default, endpoint


def attach(socket, endpoint: str, default: str) -> str:
    """Bind or connect ``socket`` as the endpoint says; returns the address."""
    verb, address = parse_endpoint(endpoint, default)
    getattr(socket, verb)(address)
    return address
