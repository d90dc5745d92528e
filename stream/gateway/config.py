"""What ``harstream gateway`` can be told, with defaults that are safe on loopback.

Every limit the gateway enforces is here, so docs/phones.md and ``/stats``
can name them. Sizes are bytes, times seconds, rates per second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harstream.stream.bus import addresses as bus
from harstream.stream.gateway.phone_feeds import SIGNAL_RATE
from harstream.stream.personal.registry import personal_dir as registry_folder


@dataclass
class GatewayConfig:
    """Everything ``harstream gateway`` can be told; defaults are safe on loopback."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # Host names (or addresses) a request may name in its Host header besides
    # the loopback names and ``host``: what phones type in their address bar.
    allow_host: list[str] = field(default_factory=list)
    ingest: str = field(default_factory=bus.ingest_address)
    output: str | None = field(default_factory=bus.output_address)  # None: no predictions back
    connect: list[str] = field(default_factory=list)  # SensorServer phones
    device: str | None = None  # device id for a single --connect phone
    keys: str | None = None  # CURVE key folder for the bus (stream.bus_auth); needed off loopback

    # Sizes.
    max_message: int = 256 * 1024  # per WebSocket message or POST body
    max_head: int = 16 * 1024  # request line + headers
    max_headers: int = 64  # header lines per request
    max_target: int = 4096  # path + query string
    max_write_buffer: int = 1024 * 1024  # unsent bytes to one client before it is cut off

    # Rates.
    max_messages_per_s: float = 100.0  # per connection, WebSocket messages or HTTP requests (burst = 2 s worth)
    max_readings_per_s: float = 4000.0  # per device, acc + gyro readings, over all its connections
    signal_rate: float = SIGNAL_RATE  # seconds of its own time a device's readings may cover per second (after 90 s)
    max_pings_per_s: float = 2.0  # WebSocket ping/pong frames from a client (burst 10)
    max_connects_per_s: float = 50.0  # new connections per source address (burst = 4 s worth)
    max_connections: int = 512
    max_connections_per_address: int = 128  # of those, open at once from one client address
    max_errors: int = 20  # refused messages per connection, then it is closed

    # Times.
    idle_timeout: float = 30.0  # close a WebSocket that sends no message this long
    open_timeout: float = 10.0  # a request head, or a whole POST body, must arrive within
    write_timeout: float = 10.0  # a client that reads nothing this long while we have data for it is cut off
    http_lease: float = 10.0  # an HTTP-posting device keeps its id this long after a post
    max_gap: float = 0.5  # seconds of silence that start a new segment
    max_span: float = 60.0  # one message's readings may span at most this long
    max_ahead: float = 30.0  # a message may start this far beyond what the wall clock allows
    stats_interval: float = 5.0  # seconds between log lines; 0 = never

    # Calibration (/phone "Teach harstream this phone"): labelled takes are
    # written under calibration_dir/<device folder>/, the personal model into
    # personal_dir, the registry the worker watches (same default and variable).
    calibration_dir: str = "runs/calibration"
    personal_dir: str = field(default_factory=lambda: str(registry_folder()))
    calibration_max_take: float = 120.0  # seconds kept of one activity's take
    calibration_max_bytes: int = 4 * 1024 * 1024  # one device's calibration files together
    calibration_max_sessions: int = 32  # devices calibrating at once, in the whole gateway
    calibration_per_address: int = 2  # of those, held by one client address
    calibration_idle: float = 120.0  # a session untouched this long gives its place up
