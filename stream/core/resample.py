"""Irregular, multi-rate accelerometer + gyroscope streams onto one 50 Hz grid.

Phones deliver each sensor at its own uneven rate (10-1,000 Hz), in batches,
sometimes out of order. :class:`Resampler` holds one device's two streams and
linearly interpolates both onto a common grid ``t0 + k / rate`` by timestamp.
It never interpolates across silence: when either stream has a hole longer
than ``max_gap`` seconds, or its clock jumps backwards, the current segment
ends and a new one starts at the first time both streams have data again.
Each :class:`Chunk` carries ``seq`` (index of its first sample in the device's
stream, as on the bus); a new segment skips ``seq`` ahead by the length of the
gap (at least 1), so a receiver sees it as a gap and resets.

A device without a gyroscope sends only its accelerometer; :meth:`Resampler.use_streams`
``(("acc",))`` then builds the grid from the accelerometer alone and reads the
gyroscope as zero (the caller decides when, and says so downstream).

The arithmetic is in three pure functions, :func:`last_grid_index`,
:func:`grid_points` and :func:`interpolate`, which
:func:`resample_linear` also uses for a whole signal at once (CSV
recordings, ``recordings.resample_to_50hz``): a file and a live phone with the
same timestamps get the same samples.

Pure: no clocks, no I/O; times are whatever seconds the caller passes.

>>> r = Resampler(rate=50.0, hold=0.0)
>>> t = np.arange(0, 1.0, 0.01)                      # 100 Hz, 1 s
>>> r.push("acc", t, np.ones((100, 3)))
>>> r.push("gyro", t, np.zeros((100, 3)))
>>> [(c.seq, round(c.t0, 2), c.samples.shape) for c in r.pull()]
[(0, 0.0, (50, 6))]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harstream.stream.core.rate import RATE_HZ

STREAMS = ("acc", "gyro")
#: A hole longer than this (seconds) is not bridged by interpolation.
MAX_GAP_S = 0.5
#: Grid points built in one pass of :meth:`Resampler.pull` (bounds its memory).
MAX_GRID = 10_000


def last_grid_index(start: float, end: float, rate: float) -> int:
    """Index ``k`` of the last grid point ``start + k / rate`` at or before ``end``.

    A point within 1e-9 of a step past ``end`` still counts, so that rounding
    in ``end`` does not drop the sample that lands on it.

    >>> last_grid_index(0.0, 0.06, 50.0), last_grid_index(1.0, 1.059, 50.0)
    (3, 2)
    """
    return int(np.floor((end - start) * rate + 1e-9))


def grid_points(start: float, first: int, last: int, rate: float) -> np.ndarray:
    """Times ``start + k / rate`` for ``k = first … last``."""
    return start + np.arange(first, last + 1) * (1.0 / rate)


def interpolate(grid: np.ndarray, t: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each column of ``values`` (n, c), read at increasing times ``t`` (n,),
    linearly interpolated at ``grid``: ``(len(grid), c)`` float64."""
    out = np.empty((len(grid), values.shape[1]))
    if len(grid) and len(t) > 2:
        # only the readings around the grid: np.interp copies a column it is given
        # whole, and a buffer may hold far more than the grid spans (the same numbers)
        lo = max(int(np.searchsorted(t, grid[0], side="right")) - 1, 0)
        hi = int(np.searchsorted(t, grid[-1], side="left")) + 1
        t, values = t[lo:hi], values[lo:hi]
    for c in range(values.shape[1]):
        out[:, c] = np.interp(grid, t, values[:, c])
    return out


def resample_linear(t: np.ndarray, values: np.ndarray, rate: float = RATE_HZ) -> tuple[np.ndarray, np.ndarray]:
    """A whole signal onto the grid ``t[0] + k / rate`` up to ``t[-1]``:
    ``(grid, samples)``. ``t`` must increase; holes are the caller's to refuse.

    The same arithmetic as :class:`Resampler` fed these readings in any batches.

    >>> grid, x = resample_linear(np.array([0.0, 0.03, 0.05]), np.array([[0.0], [3.0], [5.0]]))
    >>> grid.tolist(), x.ravel().round(9).tolist()
    ([0.0, 0.02, 0.04], [0.0, 2.0, 4.0])
    """
    grid = grid_points(float(t[0]), 0, last_grid_index(float(t[0]), float(t[-1]), rate), rate)
    return grid, interpolate(grid, t, values)


@dataclass
class Chunk:
    """Consecutive grid samples: ``samples`` (n, 6) acc xyz + gyro xyz."""

    seq: int
    t0: float
    samples: np.ndarray
    new_segment: bool


class Resampler:
    """One device's acc and gyro streams → 50 Hz chunks, segment by segment.

    ``push`` adds readings of one stream (any order within and across
    batches); ``pull`` returns the grid samples that both streams now cover.
    ``hold`` seconds of the newest data are kept back so that a slightly late
    batch can still be merged in order. ``max_skew``: if one stream runs that
    far ahead of the other (the other went silent), the segment ends rather
    than buffering without bound.
    """

    def __init__(
        self,
        rate: float = RATE_HZ,
        max_gap: float = MAX_GAP_S,
        hold: float = 0.1,
        max_skew: float = 5.0,
    ):
        if not (rate > 0 and max_gap > 1.0 / rate and hold >= 0 and max_skew > max_gap):
            raise ValueError("need rate > 0, max_gap > 1/rate, hold >= 0, max_skew > max_gap")
        self.rate = float(rate)
        self.max_gap = float(max_gap)
        self.hold = float(hold)
        self.max_skew = float(max_skew)
        self._t = {s: np.empty(0) for s in STREAMS}
        self._v = {s: np.empty((0, 3)) for s in STREAMS}
        self._start: float | None = None  # grid origin of the current segment
        self._count = 0  # grid samples emitted in the current segment
        self._last_t: float | None = None  # time of the last emitted sample
        self.seq = 0  # seq of the next sample
        self.segments = 0
        self.late = 0  # readings dropped: older than what was already emitted
        self.clock_jumps = 0
        self._pending_new_segment = False
        self.streams: tuple[str, ...] = STREAMS  # the streams the grid is built from; the others read 0

    def use_streams(self, streams: tuple[str, ...]) -> None:
        """Build the grid from ``streams`` only (``("acc",)``: a device with no
        gyroscope; its gyro channels read 0). A change starts a new segment.

        >>> r = Resampler(hold=0.0)
        >>> r.push("acc", np.arange(0, 1.0, 0.01), np.ones((100, 3)))
        >>> r.pull()                                  # no gyroscope readings: nothing yet
        []
        >>> r.use_streams(("acc",))
        >>> [(c.seq, c.samples.shape, c.samples[0].tolist()) for c in r.pull()]
        [(0, (50, 6), [1.0, 1.0, 1.0, 0.0, 0.0, 0.0])]
        """
        if not streams or any(s not in STREAMS for s in streams) or "acc" not in streams:
            raise ValueError(f"streams {streams!r}: the accelerometer and any of {STREAMS}")
        streams = tuple(s for s in STREAMS if s in streams)
        if streams != self.streams:
            self._end_segment(clear=False, before=self._last_t)
            self.streams = streams

    # ------------------------------------------------------------------ input

    def push(self, stream: str, t: np.ndarray, values: np.ndarray) -> None:
        """Add readings of ``stream`` ("acc" or "gyro"): times (n,) s, values (n, 3)."""
        if stream not in STREAMS:
            raise ValueError(f"stream {stream!r}: expected one of {STREAMS}")
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(t), 3):
            raise ValueError(f"{stream}: values shape {values.shape}, expected ({len(t)}, 3)")
        if not (np.isfinite(t).all() and np.isfinite(values).all()):
            raise ValueError(f"{stream}: NaN or inf in times or values")
        if len(t) == 0:
            return
        if len(t) > 1 and not (t[1:] >= t[:-1]).all():
            order = np.argsort(t, kind="stable")
            t, values = t[order], values[order]
        old_t = self._t[stream]
        if len(old_t) and t[0] < old_t[-1] - self.max_gap and t[-1] < old_t[-1] - self.max_gap:
            # The whole batch is far behind this stream's clock: the clock
            # jumped back (or the phone restarted). Old data is on another
            # time base, so drop both streams and start over.
            self.clock_jumps += 1
            self._end_segment(clear=True)
        elif self._last_t is not None:
            # Grid points up to _last_t are out; older readings would change
            # them, so they are counted and dropped.
            keep = t > self._last_t
            self.late += int((~keep).sum())
            t, values = t[keep], values[keep]
        if not len(t):
            return
        merged_t = np.concatenate([self._t[stream], t])
        merged_v = np.concatenate([self._v[stream], values])
        if len(self._t[stream]) and t[0] <= self._t[stream][-1]:  # out of order: merge by time
            order = np.argsort(merged_t, kind="stable")
            merged_t, merged_v = merged_t[order], merged_v[order]
        # Duplicated timestamps: keep the last reading.
        if len(merged_t) > 1:
            unique = np.append(merged_t[1:] != merged_t[:-1], True)
            merged_t, merged_v = merged_t[unique], merged_v[unique]
        self._t[stream], self._v[stream] = merged_t, merged_v

    # ----------------------------------------------------------------- output

    def pull(self) -> list[Chunk]:
        """Grid samples the streams in use cover now, as chunks (one per segment piece)."""
        chunks: list[Chunk] = []
        needed = self.streams
        for _ in range(1000):  # each pass emits a chunk or ends a segment
            if not all(len(self._t[s]) for s in needed):
                # One stream silent: keep only what a restart could use.
                for s in STREAMS:
                    t = self._t[s]
                    if len(t) and t[-1] - t[0] > self.max_skew:
                        keep = t >= t[-1] - self.max_gap
                        self._t[s], self._v[s] = t[keep], self._v[s][keep]
                break
            ends = [self._t[s][-1] for s in needed]
            if max(ends) - min(ends) > self.max_skew:
                self._end_segment(clear=False, before=max(ends) - self.max_gap)
                continue
            if self._start is None and not self._open_segment():
                break
            origin = self._start
            assert origin is not None  # set by _open_segment when it returns True
            horizon = min(ends) - self.hold
            first = self._count
            # Never build grid points past the first hole of either stream
            # (a hole is not interpolated, and two readings a year apart
            # must not cost a year of grid), nor more than MAX_GRID at once.
            g0 = origin + first / self.rate
            cap = g0 + (MAX_GRID - 1) / self.rate
            horizon = min(horizon, self._first_hole_end(g0, cap), cap)
            last = last_grid_index(origin, horizon, self.rate)
            if last < first:
                break
            grid = grid_points(origin, first, last, self.rate)
            # Where does each grid point fall, and is the bracketing pair of
            # readings close enough together to interpolate between?
            n_ok = len(grid)
            gap_after: dict[str, float] = {}
            for s in needed:
                t = self._t[s]
                right = np.searchsorted(t, grid, side="left").clip(1, len(t) - 1)
                span = t[right] - t[right - 1]
                bad = np.flatnonzero(span > self.max_gap)
                if len(bad) and bad[0] < n_ok:
                    n_ok = int(bad[0])
                    gap_after = {s: float(t[right[bad[0]]])}
            if n_ok:
                g = grid[:n_ok]
                out = np.concatenate(
                    [interpolate(g, self._t[s], self._v[s]) if s in needed else np.zeros((n_ok, 3)) for s in STREAMS],
                    axis=1,
                )
                chunks.append(Chunk(self.seq, float(g[0]), out, self._pending_new_segment))
                self._pending_new_segment = False
                self.seq += n_ok
                self._count += n_ok
                self._last_t = float(g[-1])
                self._trim(float(g[-1]))
            if gap_after:
                (resume,) = gap_after.values()
                self._end_segment(clear=False, before=resume)
                continue
            if n_ok == 0:
                break
        return chunks

    def restart(self) -> None:
        """Forget buffered readings; the next data starts a new segment (seq jumps)."""
        self._end_segment(clear=True)

    # -------------------------------------------------------------- internals

    def _first_hole_end(self, after: float, until: float = np.inf) -> float:
        """The end of the earliest hole (> max_gap between readings) of either
        stream that reaches past ``after``, if it ends by ``until``; inf if there
        is none. Only the readings up to ``until`` are looked at: the whole buffer
        was, at every pass (quadratic in an export of thousands of stretches)."""
        end = np.inf
        for s in self.streams:
            t = self._t[s]
            if np.isfinite(until):
                first = max(int(np.searchsorted(t, after, side="left")) - 1, 0)
                t = t[first : int(np.searchsorted(t, until, side="right")) + 1]
            if len(t) > 1:
                holes = np.flatnonzero((np.diff(t) > self.max_gap) & (t[1:] >= after))
                if len(holes):
                    end = min(end, float(t[holes[0] + 1]))
        return end

    def _open_segment(self) -> bool:
        start = max(self._t[s][0] for s in self.streams)
        if self._last_t is not None:
            # A segment after a gap: make seq jump by the silence, at least 1.
            jump = max(1, int(round((start - self._last_t) * self.rate)) - 1)
            self.seq += jump
            self._pending_new_segment = True
        self._start, self._count = float(start), 0
        self.segments += 1
        return True

    def _end_segment(self, clear: bool, before: float | None = None) -> None:
        """Stop the current grid; drop readings older than ``before`` (all if clear)."""
        if self._start is not None and self._last_t is None:
            self._last_t = self._start
        self._start, self._count = None, 0
        if self._last_t is not None:
            self._pending_new_segment = True
        for s in STREAMS:
            if clear:
                self._t[s], self._v[s] = np.empty(0), np.empty((0, 3))
            elif before is not None:
                # times are kept sorted: a slice (a view), not a mask that copies the whole
                # buffer: an export of thousands of stretches held the rest of the recording
                # here and copied it at every stretch's end (quadratic)
                i = int(np.searchsorted(self._t[s], before, side="left"))
                self._t[s], self._v[s] = self._t[s][i:], self._v[s][i:]
        if clear and self._last_t is not None:
            # New time base: seq still jumps by one so the receiver resets.
            self.seq += 1
            self._last_t = None
            self._pending_new_segment = True

    def _trim(self, t_emitted: float) -> None:
        """Drop readings no longer needed to interpolate after ``t_emitted``."""
        for s in self.streams:
            t = self._t[s]
            i = max(int(np.searchsorted(t, t_emitted, side="right")) - 1, 0)
            self._t[s], self._v[s] = t[i:], self._v[s][i:]
