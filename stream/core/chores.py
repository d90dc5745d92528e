"""Chores on timers for a long-running loop, each one guarded.

A worker's loop does a few things besides reading and predicting: signal
feeds, the idle sweep, the personal-model folder, statistics. :class:`Chores`
runs each at its own period from the time it is given (no clock, no
threads), and a failure in one is counted and logged (the first with its
traceback), never raised: one bug in a chore must not end the worker.

>>> ran = []
>>> chores = Chores(on_failure=lambda name, exc: ran.append(f"{name} failed"))
>>> chores.every("tick", 0.1, lambda now: ran.append(now))
>>> chores.every("boom", 1.0, lambda now: 1 / 0)
>>> chores.run_due(0.0); chores.run_due(0.05); chores.run_due(0.1)
>>> ran, chores.failures
([0.0, 'boom failed', 0.1], Counter({'boom': 1}))
>>> chores.next_due
0.2
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CHORES_S = 0.1  # signal feeds, subscriptions, the personal-model folder
IDLE_SWEEP_S = 1.0  # idle devices: a sweep looks at every device, and the idle timeout is 30 s


@dataclass
class _Chore:
    name: str
    period: float
    step: Callable[[float], Any]
    due: float


class Chores:
    """Named steps each run every ``period`` seconds; ``on_failure(name,
    exc)`` is told of each failure (the worker counts it as ``internal``)."""

    def __init__(self, on_failure: Callable[[str, Exception], None] | None = None):
        self._chores: list[_Chore] = []
        self.on_failure = on_failure
        self.failures: Counter[str] = Counter()

    def every(self, name: str, period: float, step: Callable[[float], Any], first: float = -math.inf) -> None:
        """Run ``step(now)`` every ``period`` seconds, the first time at ``first`` or later."""
        if not period > 0:
            raise ValueError(f"chore {name}: period must be positive, got {period}")
        self._chores.append(_Chore(name, period, step, first))

    @property
    def next_due(self) -> float:
        """When the next chore is due (monotonic seconds; inf if none)."""
        return min((c.due for c in self._chores), default=math.inf)

    def run_due(self, now: float) -> None:
        """Run every chore that is due, in the order they were added."""
        for chore in self._chores:
            if now >= chore.due:
                chore.due = now + chore.period
                self.guarded(chore.name, chore.step, now)

    def guarded(self, name: str, step: Callable[..., Any], *args: Any) -> Any:
        """``step(*args)``, or None if it raised: counted, logged (the first of
        each name with its traceback), told to ``on_failure``."""
        try:
            return step(*args)
        except Exception as exc:
            if name not in self.failures:
                log.exception("%s failed (further failures are counted in stats)", name)
            self.failures[name] += 1
            if self.on_failure is not None:
                try:
                    self.on_failure(name, exc)
                except Exception:  # the counter must not take the loop down either
                    log.exception("counting the failure of %s failed", name)
            return None
