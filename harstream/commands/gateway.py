"""``harstream gateway``: phones in (WebSocket / HTTP), bus sample messages out."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

from harstream.commands._options import (
    COUNT,
    PORT_OR_ANY,
    RATE,
    SECONDS,
    SECONDS_OR_OFF,
    Number,
    add_keys,
    check_endpoints,
    endpoint_help,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Accept phone sensor streams (harstream JSON over WebSocket at /ws, Sensor Logger HTTP POST "
        "at /data, a phone browser at /phone, SensorServer or phyphox with --connect) and publish them as 50 Hz "
        "samples on the ingest bus. See docs/phones.md."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other needs --token)"
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name or address phones use to reach the gateway (repeatable); requests naming any "
        "other Host than these, loopback and --host are refused (DNS rebinding)",
    )
    parser.add_argument("--port", type=PORT_OR_ANY, default=8765, help="port (default 8765; 0 = any free port)")
    parser.add_argument(
        "--token", help="shared secret every connection and POST must present (?token=… or Authorization: Bearer …)"
    )
    parser.add_argument(
        "--tls-cert", help="PEM certificate: serve https:// and wss:// (phone browsers need it off loopback)"
    )
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument("--ingest", help=endpoint_help("ingest", "connect", "bus endpoint to publish samples to"))
    parser.add_argument("--output", help=endpoint_help("output", "connect", "bus endpoint to read predictions from"))
    parser.add_argument("--no-predictions", action="store_true", help="do not forward predictions to phones")
    parser.add_argument(
        "--connect",
        action="append",
        default=[],
        type=phone_address,
        metavar="URL",
        help="also read a phone that serves its sensors (repeatable): ws://PHONE:8080 a SensorServer app, "
        "http://PHONE:8080 a phyphox experiment with remote access on; tries again with back-off when it drops",
    )
    parser.add_argument(
        "--device", help="device id for a single --connect phone (default sensorserver-<host> or phyphox-<host>)"
    )
    parser.add_argument(
        "--max-message",
        type=Number(int, 1024, 64 << 20),
        default=256 * 1024,
        help="bytes per message or POST body (default 256 KiB)",
    )
    parser.add_argument(
        "--max-connections", type=Number(int, 1, 1_000_000), default=512, help="open connections (default 512)"
    )
    parser.add_argument(
        "--max-connections-per-address",
        type=Number(int, 1, 1_000_000),
        default=128,
        help="open connections from one client address (default 128; raise it for many phones behind one NAT)",
    )
    parser.add_argument(
        "--rate-limit", type=RATE, default=100.0, help="messages (or HTTP requests)/s per connection (default 100)"
    )
    parser.add_argument("--readings-limit", type=RATE, default=4000.0, help="readings/s per device (default 4000)")
    parser.add_argument(
        "--signal-rate",
        type=Number(float, 1.0, 1e6),
        default=1.05,  # phone_feeds.SIGNAL_RATE (the command imports no gateway module before it runs)
        help="seconds of its own time a device's readings may cover per second, after a 90 s allowance "
        "(default 1.05: a phone cannot send its signal faster than it happens; raise it to replay faster)",
    )
    parser.add_argument(
        "--connects-limit",
        type=RATE,
        default=50.0,
        help="new connections/s per client address (default 50, bursts of 4 s worth)",
    )
    parser.add_argument(
        "--idle-timeout", type=SECONDS, default=30.0, help="close connections silent this long (s; default 30)"
    )
    parser.add_argument(
        "--open-timeout",
        type=SECONDS,
        default=10.0,
        help="a request head, or a whole POST body, must arrive within this (s; default 10)",
    )
    parser.add_argument(
        "--max-errors", type=COUNT, default=20, help="refused messages before a WebSocket is closed (default 20)"
    )
    parser.add_argument(
        "--write-timeout",
        type=SECONDS,
        default=10.0,
        help="cut off a client that reads nothing this long while data waits for it (s; default 10)",
    )
    parser.add_argument(
        "--max-gap",
        type=Number(float, 0, 60, low_open=True),
        default=0.5,
        help="silence (s) that starts a new segment (default 0.5)",
    )
    parser.add_argument(
        "--stats-interval", type=SECONDS_OR_OFF, default=5.0, help="seconds between stats log lines (0: off; default 5)"
    )
    parser.add_argument(
        "--calibration-dir",
        default="runs/calibration",
        metavar="DIR",
        help="where the /phone page's calibration takes are written as CSV, one folder per device "
        "(default runs/calibration)",
    )
    parser.add_argument(
        "--personal-dir",
        default=None,
        metavar="DIR",
        help="where personal models are saved: the folder `harstream worker --personal-dir` watches "
        "(default $HARSTREAM_PERSONAL_DIR or runs/personal)",
    )
    parser.add_argument(
        "--base-model",
        default=None,
        metavar="PATH.keras",
        help="placement-free model personal models build on (default the shipped any.keras)",
    )
    parser.add_argument("--no-calibration", action="store_true", help="refuse calibration from the /phone page")
    parser.add_argument(
        "--calibrations-per-address",
        type=Number(int, 1, 10_000),
        default=2,
        metavar="N",
        help="calibration sessions one client address may hold at once (default 2; see docs/phones.md)",
    )
    parser.add_argument(
        "--calibration-idle",
        type=Number(float, 1, 86400),
        default=120.0,
        metavar="S",
        help="a calibration session untouched this long gives its place up (default 120 s)",
    )
    add_keys(parser)


def phone_address(text: str) -> str:
    """A ``--connect`` address: ws(s):// for SensorServer, http(s):// for phyphox.

    >>> phone_address("http://192.168.1.42:8080")
    'http://192.168.1.42:8080'
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        ok = parts.scheme in ("ws", "wss", "http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed port or IPv6 address
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r}: expected ws://PHONE:8080 (SensorServer) or http://PHONE:8080 (phyphox)"
        )
    return text


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from harstream.commands._running import interrupt_on_signals
    from harstream.stream.bus import addresses as bus
    from harstream.stream.gateway.server import GatewayConfig, run_gateway

    ingest, output = (
        args.ingest or bus.ingest_address(),
        None if args.no_predictions else (args.output or bus.output_address()),
    )
    check_endpoints("gateway", args.keys, ("--ingest", ingest, "connect"), ("--output", output, "connect"))
    config = GatewayConfig(
        host=args.host,
        port=args.port,
        token=args.token,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        allow_host=args.allow_host,
        max_connects_per_s=args.connects_limit,
        write_timeout=args.write_timeout,
        open_timeout=args.open_timeout,
        max_errors=args.max_errors,
        ingest=ingest,
        output=output,
        connect=args.connect,
        device=args.device,
        max_message=args.max_message,
        max_connections=args.max_connections,
        max_connections_per_address=args.max_connections_per_address,
        max_messages_per_s=args.rate_limit,
        max_readings_per_s=args.readings_limit,
        signal_rate=args.signal_rate,
        idle_timeout=args.idle_timeout,
        max_gap=args.max_gap,
        stats_interval=args.stats_interval,
        calibration_dir=args.calibration_dir,
        calibration_per_address=args.calibrations_per_address,
        calibration_idle=args.calibration_idle,
        keys=args.keys,
    )
    if args.personal_dir:
        config.personal_dir = args.personal_dir
    log = logging.getLogger("harstream.gateway")
    interrupt_on_signals()  # SIGTERM closes the gateway as Ctrl-C does
    try:
        fit = None if args.no_calibration else PersonalFitter(args.base_model)
        asyncio.run(run_gateway(config, fit=fit))
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:  # port in use, address not on this machine, unreadable certificate
        log.error("cannot serve on %s:%d: %s", args.host, args.port, exc)
        return 1
    return 0


class PersonalFitter:
    """The gateway's ``fit``: a personal model from a device's calibration CSVs,
    as ``harstream calibrate`` makes it (load_csv, fit_personal, save_personal).
    The base model is loaded on first use, in the gateway's fit process: from
    the staged serving record a worker on this machine left (no TensorFlow),
    else with Keras (:func:`~harstream.models.personal.load_shared_model`)."""

    def __init__(self, base: str | Path | None = None):
        self.base_path = base
        self._base: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        # The gateway runs fits in a child process: send the base model's path,
        # not the loaded model or the lock.
        return {"base_path": self.base_path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["base_path"])  # type: ignore[misc]

    def prepare(self) -> None:
        """Load the base model now (the gateway calls this in its fit process
        when a calibration starts, so the first fit does not wait for it),
        and the modules a fit imports."""
        from harstream.models.personal import import_fit_modules

        self._shared()
        import_fit_modules()

    def _shared(self) -> Any:
        from harstream.models.personal import load_shared_model

        with self._lock:
            if self._base is None:
                self._base = load_shared_model(self.base_path)
            return self._base

    def __call__(self, folder: Path, device: str, out: Path) -> dict:
        from harstream.models.personal import fit_personal, save_personal
        from harstream.stream.data.recordings import load_csv

        shared = self._shared()
        with self._lock:
            dataset = load_csv(folder)
            fit = fit_personal(
                dataset.recordings,
                shared.artifact,
                base_probabilities=shared.probabilities,
                base_features=shared.features,
            )
            save_personal(fit, out, device, shared.artifact, command=f"/phone calibration of {device}")
        return {
            "calibrated": fit.calibrated,
            "refused": fit.refused,
            "classes": fit.classes,
            "fit_seconds": round(fit.seconds, 2),
            "takes": {c.activity: {"seconds": c.seconds, "windows": c.windows} for c in fit.checks},
            "summary": fit.summary,  # what was learned, which half-turns keep the names, what shows as STILL
            "turns": [t for t in fit.head.turns if t != "none"],
        }
