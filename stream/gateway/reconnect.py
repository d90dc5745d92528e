"""Following a phone that serves its sensors (SensorServer, phyphox): one
session after another, with back-off, for as long as the gateway runs.

A session connects, claims the device, reads until the phone drops and
releases it; :func:`follow` runs it again after 1 s, doubling up to 30 s, and
back to 1 s once a session got through to the phone (:meth:`Backoff.connected`).
Whatever a session raises is logged (a refused answer also counted) and never
ends the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from harstream.stream.gateway.phone_formats import FormatError
from harstream.stream.gateway.port import GatewayPort

log = logging.getLogger("harstream.gateway")

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0


class Backoff:
    """How long to wait before the next session.

    >>> b = Backoff()
    >>> b.failed(), b.failed(), b.failed()
    (1.0, 2.0, 4.0)
    >>> b.connected(); b.failed()
    1.0
    """

    def __init__(self) -> None:
        self._next = FIRST_DELAY_S

    def connected(self) -> None:
        self._next = FIRST_DELAY_S

    def failed(self) -> float:
        delay, self._next = self._next, min(self._next * 2, MAX_DELAY_S)
        return delay


async def follow(
    gateway: GatewayPort,
    what: str,
    session: Callable[[Backoff], Awaitable[None]],
    dropped: tuple[type[BaseException], ...] = (),
) -> None:
    """Run ``session`` until the gateway closes; ``what`` names the phone in the log,
    ``dropped`` are the errors of a phone that went away (logged without a traceback)."""
    backoff = Backoff()
    gone: tuple[type[BaseException], ...] = (OSError, TimeoutError, *dropped)
    while not gateway.closing:
        try:
            await session(backoff)
            problem = "closed"
        except gone as exc:
            problem = str(exc) or type(exc).__name__
        except FormatError as exc:
            gateway.counters.reject(exc.reason, f"{what}: {exc.detail}")
            problem = str(exc)
        except Exception as exc:  # an unexpected answer must not end the loop
            problem = repr(exc)
        delay = backoff.failed()
        log.warning("%s: %s; trying again in %.0f s", what, problem, delay)
        await asyncio.sleep(delay)
