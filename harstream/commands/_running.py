"""How a long-running command stops, and how it reports a bus it cannot use.

:func:`stop_on_signals` gives the command's loop a ``threading.Event`` that
SIGTERM (``kill``, the demo stopping its parts) and the first Ctrl-C set: the
loop ends, closes its sockets and prints its totals. A second Ctrl-C raises
``KeyboardInterrupt``, which ``harstream`` turns into exit code 130 (the one
place that handles it), for a loop stuck somewhere it does not look. SIGTERM
never does: it may be delivered twice (``timeout`` sends it to the child and
to its process group), and the second must not cut the clean stop short.

:func:`bus_errors` turns a bus address refused or unusable into one line.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def stop_on_signals(hangup: bool = False) -> threading.Event:
    """An event SIGTERM or Ctrl-C sets, and with ``hangup`` SIGHUP (the
    terminal closed). Outside the main thread: an event nothing sets, since
    only the main thread may handle signals. SIGINT is set explicitly even
    where a shell started the command with it ignored (a background job)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return stop

    def handler(signum, frame) -> None:
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for sig in STOP_SIGNALS if hangup else STOP_SIGNALS[:2]:
        signal.signal(sig, handler)
    return stop


def ignore_signals() -> None:
    """From here on the stop signals are ignored: a clean-up (stopping child
    processes) that a second Ctrl-C must not cut short."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def interrupt_on_signals() -> None:
    """SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does: for a command whose
    loop is asyncio's, which stops its tasks cleanly on it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


@contextlib.contextmanager
def bus_errors(command: str) -> Iterator[None]:
    """A bus address refused (off loopback without keys, a key file missing)
    or unusable (in use, not on this machine) ends ``command`` with one line."""
    import zmq

    from harstream.stream.bus.auth import BusAuthError

    try:
        yield
    except BusAuthError as exc:
        raise SystemExit(f"{command}: {exc}") from None
    except zmq.ZMQError as exc:
        raise SystemExit(f"{command}: the bus: {exc}") from None
