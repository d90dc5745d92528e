"""Options several commands share, and the types that range-check every number.

A bad value is a one-line usage error naming the option (argparse's exit
code 2), never a traceback from deep inside a command:

>>> PORT("80000")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: 80000 is outside 1..65535
>>> SECONDS("nan")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: nan is not a finite number
>>> Number(float, 0, 1, low_open=True)("0")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: 0 is outside (0, 1]
"""

from __future__ import annotations

import argparse
import math


class Number:
    """An argparse ``type``: an ``int`` or ``float`` within ``low..high``
    (``low_open``: above ``low``, not equal to it)."""

    def __init__(self, kind: type, low: float, high: float, low_open: bool = False):
        if kind not in (int, float):
            raise TypeError(f"kind must be int or float, not {kind!r}")
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open
        self.__name__ = f"{'integer' if kind is int else 'number'} in {self.range_text()}"  # argparse's error

    def range_text(self) -> str:
        low, high = _show(self.low), _show(self.high)
        return f"({low}, {high}]" if self.low_open else f"{low}..{high}"

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            kind = "an integer" if self.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if value < self.low or value > self.high or (self.low_open and value == self.low):
            raise argparse.ArgumentTypeError(f"{text} is outside {self.range_text()}")
        return value

    def __repr__(self) -> str:
        return f"Number({self.kind.__name__}, {self.range_text()})"


def _show(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


DAY = 86_400.0

PORT = Number(int, 1, 65535)
PORT_OR_ANY = Number(int, 0, 65535)  # 0: any free port, reported by the command
SECONDS = Number(float, 0, DAY, low_open=True)  # a timeout, an interval
SECONDS_OR_OFF = Number(float, 0, DAY)  # 0 turns the thing off
STATS_EVERY = Number(float, 0.1, 3600)
SPEED = Number(float, 0, 1000, low_open=True)  # times real time
RATE = Number(float, 0, 1e7, low_open=True)  # per second
COUNT = Number(int, 1, 10**12)  # a number of things, at least one
PARTITIONS = Number(int, 1, 1024)
SUBJECT = Number(int, 0, 10**6)  # 0: a CSV recording with no subject column or _userNN name
SEED = Number(int, 0, 2**32 - 1)
EPOCHS = Number(int, 1, 100_000)
HWM = Number(int, 1, 10**8)  # messages queued per peer before ZeroMQ drops


def worker_name(text: str) -> str:
    """A worker's id (``--id``): 1-200 printable characters, as every reader
    of the output bus takes them (a control character would make each of its
    predictions refused as malformed).

    >>> worker_name("w1 on host-2")
    'w1 on host-2'
    >>> worker_name("w\\x1b[2J")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: 'w\\x1b[2J' is not 1-200 printable characters
    """
    if not 1 <= len(text) <= 200 or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not 1-200 printable characters")
    return text


def add_keys(parser: argparse.ArgumentParser) -> None:
    """``--keys DIR``: the CURVE key folder of every part on the bus."""
    parser.add_argument(
        "--keys",
        default=None,
        metavar="DIR",
        help="CURVE key folder (`harstream keys DIR`) for the bus; required for a bus address off loopback",
    )


def endpoint_help(bus: str, verb: str, what: str = "") -> str:
    """The help text of a bus endpoint option: ``bus`` is ``ingest`` or
    ``output``, ``verb`` what this command does by default (``bind`` or ``connect``).

    >>> endpoint_help("ingest", "connect")
    'ingest endpoint (default $HARSTREAM_INGEST or tcp://127.0.0.1:5555, connected; prefix @ to bind)'
    """
    from harstream.stream.bus import addresses

    default = addresses.DEFAULT_INGEST if bus == "ingest" else addresses.DEFAULT_OUTPUT
    if verb not in ("bind", "connect"):
        raise ValueError(f"verb must be bind or connect, not {verb!r}")
    done, other = ("bound", "> to connect") if verb == "bind" else ("connected", "@ to bind")
    return f"{what or bus + ' endpoint'} (default $HARSTREAM_{bus.upper()} or {default}, {done}; prefix {other})"


def add_broker(parser: argparse.ArgumentParser, default: str | None, help_text: str) -> None:
    """``--redis URL`` and ``--allow-remote-broker``."""
    parser.add_argument("--redis", default=default, metavar="URL", help=help_text)
    parser.add_argument(
        "--allow-remote-broker",
        action="store_true",
        help="let --redis name a broker on another machine (default: only a Unix socket or a loopback "
        "address, read from the URL as redis-py reads it); protect that broker with a password and TLS",
    )


def check_broker(command: str, args: argparse.Namespace) -> None:
    """Refuse ``--redis`` off this machine unless ``--allow-remote-broker``
    (before anything slow starts)."""
    from harstream.stream.durable.broker import broker_host, is_local_broker

    try:
        if args.redis and not args.allow_remote_broker and not is_local_broker(args.redis):
            raise SystemExit(
                f"{command}: --redis {args.redis} connects to {broker_host(args.redis)}, which is not this "
                "machine; use unix://PATH or redis://127.0.0.1:PORT, or --allow-remote-broker"
            )
    except ValueError as exc:
        raise SystemExit(f"{command}: --redis: {exc}") from None


def check_endpoints(command: str, keys: str | None, *endpoints: tuple[str, str | None, str]) -> None:
    """Refuse, before anything slow starts, an endpoint off loopback without
    keys; each is ``(option, endpoint or None for its default, default verb)``."""
    from harstream.stream.bus.addresses import parse_endpoint
    from harstream.stream.bus.auth import BusAuthError, refuse_off_loopback

    for option, endpoint, verb in endpoints:
        if endpoint is None:
            continue
        try:
            refuse_off_loopback(parse_endpoint(endpoint, verb)[1], keys)
        except BusAuthError as exc:
            raise SystemExit(f"{command}: {option}: {exc}") from None
