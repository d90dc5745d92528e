"""The Redis broker of the durable log: starting ``redis-server`` for the
project, and the key names every bridge and worker agrees on.

``redis-server`` runs bound to loopback or to a Unix socket only, with its
data folder under the project (``runs/broker/`` by default) and persistence
stated, not inherited from a system config: by default none (the log is a
retention buffer of the last minute, rebuilt by the bridge after a restart);
``persist=True`` turns on the append-only file, fsynced every second.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

GROUP = "workers"
PREFIX = "hs:"


@dataclass(frozen=True)
class Keys:
    """Names of the keys of one deployment (``prefix`` lets tests share a server)."""

    prefix: str = PREFIX

    def partition(self, p: int) -> str:
        return f"{self.prefix}in:{p}"

    def lease(self, p: int) -> str:
        return f"{self.prefix}lease:{p}"

    def epoch(self, p: int) -> str:
        return f"{self.prefix}epoch:{p}"

    def progress(self, p: int) -> str:
        return f"{self.prefix}progress:{p}"

    def seen(self, p: int) -> str:
        """Devices of partition ``p`` scored by when their last window was committed (ms)."""
        return f"{self.prefix}seen:{p}"

    @property
    def members(self) -> str:
        return f"{self.prefix}members"

    @property
    def predictions(self) -> str:
        return f"{self.prefix}predictions"

    @property
    def latest(self) -> str:
        return f"{self.prefix}latest"

    @property
    def meta(self) -> str:
        return f"{self.prefix}meta"


class BrokerError(RuntimeError):
    """redis-server could not be started (missing binary, bad folder, no socket)."""


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def start_redis(
    folder: Path,
    port: int = 0,
    unix_socket: Path | None = None,
    persist: bool = False,
    maxmemory_mb: int = 0,
    timeout: float = 10.0,
) -> tuple[subprocess.Popen, str]:
    """Start ``redis-server`` with its data in ``folder``; returns (process, URL).

    ``unix_socket`` (a path) serves on that socket only (no TCP); otherwise
    ``port`` on 127.0.0.1. The caller stops the process.
    """
    binary = redis_server_binary()
    if binary is None:
        raise BrokerError("redis-server not found; install it with `make redis` (Debian: apt-get install redis-server)")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    args = [
        binary,
        "--dir",
        str(folder),
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "yes",
        "--save",
        "",
        "--logfile",
        str(folder / "redis.log"),
        "--daemonize",
        "no",
    ]
    args += ["--appendonly", "yes", "--appendfsync", "everysec"] if persist else ["--appendonly", "no"]
    if maxmemory_mb:
        # Streams are trimmed by time; a full server refuses writes (counted) rather than evicting leases.
        args += ["--maxmemory", f"{maxmemory_mb}mb", "--maxmemory-policy", "noeviction"]
    if unix_socket is not None:
        unix_socket = Path(unix_socket).resolve()
        if len(str(unix_socket)) > 100:
            raise BrokerError(f"unix socket path {unix_socket} is {len(str(unix_socket))} characters; at most 100")
        args += ["--port", "0", "--unixsocket", str(unix_socket), "--unixsocketperm", "700"]
        url = f"unix://{unix_socket}"
    else:
        if not 1 <= port <= 65535:
            raise BrokerError(f"port {port} outside 1..65535")
        args += ["--port", str(port)]
        url = f"redis://127.0.0.1:{port}/0"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    import redis

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            log_tail = (
                (folder / "redis.log").read_text(errors="replace")[-800:] if (folder / "redis.log").exists() else ""
            )
            raise BrokerError(f"redis-server exited with {proc.returncode}: {err or log_tail}")
        try:
            redis.Redis.from_url(url, socket_timeout=0.5).ping()
            return proc, url
        except redis.RedisError:
            time.sleep(0.05)
    proc.kill()
    raise BrokerError(f"redis-server did not answer on {url} within {timeout:.0f} s")


def broker_host(url: str) -> str | None:
    """The host a broker URL really connects to, as redis-py reads it (None
    for a Unix socket); a ``ValueError`` for a URL redis-py does not take.

    >>> broker_host("redis://127.0.0.1@10.1.2.3:6379/0")  # 127.0.0.1 is the user name
    '10.1.2.3'
    >>> broker_host("unix:///tmp/redis.sock"), broker_host("redis://"), broker_host("redis://[::1]:6379/0")
    (None, 'localhost', '::1')
    """
    from redis.connection import UnixDomainSocketConnection, parse_url

    try:
        parsed = parse_url(url)
    except ValueError as exc:
        raise ValueError(f"broker URL {url!r}: {exc}") from None
    if parsed.get("connection_class") is UnixDomainSocketConnection:
        return None
    return str(parsed.get("host") or "localhost")  # redis-py's default host


def is_local_broker(url: str) -> bool:
    """Whether ``url`` reaches a broker on this machine only: a Unix socket, or
    a host that is loopback (127.0.0.0/8, ::1, ``localhost``).

    >>> is_local_broker("redis://127.0.0.1:6379/0"), is_local_broker("redis://127.0.0.1@10.1.2.3:6379/0")
    (True, False)
    """
    host = broker_host(url)
    if host is None or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: not provably loopback
        return False


def connect(url: str, timeout: float = 1.0, allow_remote: bool = False):
    """A redis-py client with short timeouts (callers retry with back-off).

    The broker must be on this machine (a Unix socket or a loopback host, read
    from the URL as redis-py reads it) unless ``allow_remote``: the log carries
    every device's samples, and the project's broker listens on loopback only.
    """
    import redis

    if not allow_remote and not is_local_broker(url):
        raise ValueError(
            f"broker URL {url!r} connects to {broker_host(url)}, which is not this machine; expected "
            "unix://PATH or redis://127.0.0.1:PORT (--allow-remote-broker to use a broker elsewhere)"
        )
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=0)


class Backoff:
    """Exponential back-off for reconnecting: 0.05 s doubling to ``cap``.

    >>> b = Backoff(cap=0.2)
    >>> [b.next_delay() for _ in range(4)], b.failures
    ([0.05, 0.1, 0.2, 0.2], 4)
    >>> b.reset(); b.next_delay()
    0.05
    """

    def __init__(self, first: float = 0.05, cap: float = 2.0):
        self.first, self.cap = first, cap
        self.failures = 0
        self.retry_at = 0.0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * 2**self.failures)
        self.failures += 1
        return delay

    def failed(self, now: float) -> None:
        self.retry_at = now + self.next_delay()

    def ready(self, now: float) -> bool:
        return now >= self.retry_at

    def reset(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
