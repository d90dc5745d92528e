"""One device's pipeline and window context: accepted raw samples in, model
inputs out, each with the times of its first and last sample and the
ground-truth label at its end.

The raw samples are filtered elsewhere (many devices at once, by
:func:`~harstream.stream.core.batch_push.push_many` on :attr:`DeviceWindows.pipeline`);
:meth:`DeviceWindows.describe` turns the windows that came out into what the
model and the prediction need.

>>> import numpy as np
>>> from harstream.stream.core.protocol import SampleBatch
>>> dw = DeviceWindows(seq=0)
>>> dw.anchor(SampleBatch("d", seq=0, t0=100.0, samples=np.zeros((192, 6), np.float32)))
>>> out = dw.describe(dw.pipeline.push(np.zeros((192, 6), np.float32)), None, first_window=0, seen_before=0)
>>> [(w.window, round(w.t_start, 2), round(w.t_end, 2)) for w in out]
[(0, 100.0, 102.54), (1, 101.28, 103.82)]

With ``between`` a device also has a second grid of windows offset by half a
step (:data:`~harstream.stream.core.pipeline.BETWEEN` samples, filtered once
for both grids by :func:`~harstream.stream.core.batch_push.push_both`):
display-only updates between two windows. Its window ``k`` ends 32 samples
after window ``k`` and carries that number with ``between=True``; its context
windows are the model's grid's (for context step ``s``, window ``k - s + 1``:
32, 96, 224 samples back for steps 1, 2, 4), so a between window needs nothing
computed for the between windows before it and the worker may label only some.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harstream.stream.core.activities import label_name
from harstream.stream.core.context import WindowContext
from harstream.stream.core.pipeline import BETWEEN, STEP, WINDOW, DevicePipeline
from harstream.stream.core.protocol import SampleBatch
from harstream.stream.core.rate import RATE_HZ


@dataclass
class WindowOut:
    """A completed window, ready for the model."""

    window: int  # windows since the pipeline started
    x: np.ndarray  # (128, 9); (1 + len(context_steps), 128, 9) for a context model; (…, F) features if staged
    t_start: float
    t_end: float
    truth: str | None
    between: bool = False  # a window of the offset grid (display only)
    index: int = 0  # its row among the new windows of its grid


class DeviceWindows:
    """The pipeline of one run of a device's stream (from sample ``seq`` on)."""

    __slots__ = (
        "pipeline",
        "context",
        "seq0",
        "labels",
        "label_base",
        "t0",
        "seq_t0",
        "rate",
        "between",
        "recent",
        "first_input",
        "last_cue",
    )

    def __init__(self, seq: int, context_steps: Sequence[int] = (), between: bool = False):
        self.pipeline = DevicePipeline()
        # the model's past windows must not straddle a gap either, so they start afresh too
        self.context = WindowContext(context_steps) if context_steps else None
        # the offset grid (display only): its windowing of the same filtered samples; its context
        # windows are the model's, so the model's grid's recent inputs (window number -> input) are kept
        self.between = DevicePipeline() if between else None
        self.recent: dict[int, np.ndarray] = {}
        self.first_input: np.ndarray | None = None
        self.last_cue: tuple[int, float, np.ndarray] | None = None  # the last window's number, motion, gravity
        self.seq0 = seq  # seq of pipeline sample 0
        self.labels = np.empty(0, np.int16)  # labels of pipeline samples label_base..
        self.label_base = 0
        self.t0, self.seq_t0, self.rate = 0.0, seq, RATE_HZ  # time anchor: sample seq_t0 is at t0

    def anchor(self, batch: SampleBatch) -> None:
        """Take the times of later windows from this batch."""
        self.t0, self.seq_t0, self.rate = batch.t0, batch.seq, batch.rate

    @property
    def next_window_end(self) -> int:
        """Pipeline sample count at which the next window completes."""
        return self.pipeline.emitted * STEP + WINDOW

    @property
    def next_end(self) -> int:
        """Pipeline sample count at which the next window of either grid completes."""
        if self.between is None:
            return self.next_window_end
        return min(self.next_window_end, BETWEEN + self.between.emitted * STEP + WINDOW)

    def completes_window(self, buffered: int) -> bool:
        """Whether ``buffered`` more samples complete a window (of either grid)."""
        return self.pipeline.samples_seen + buffered >= self.next_end

    def stop_between(self) -> None:
        """No offset grid any more (the device moved to a model served without one)."""
        self.between = None
        self.recent, self.first_input = {}, None

    def restart_context(self, context_steps: Sequence[int]) -> None:
        """A context of another model's inputs: start afresh (both grids)."""
        self.context = WindowContext(context_steps) if context_steps else None
        self.recent, self.first_input = {}, None

    def describe(
        self,
        windows: np.ndarray,
        labels: np.ndarray | None,
        first_window: int,
        seen_before: int,
        inputs: np.ndarray | None = None,
        between: Sequence[tuple[int, int, np.ndarray]] = (),
    ) -> list[WindowOut]:
        """The windows the pipeline emitted for samples ``seen_before..`` (with
        their ``labels``, if any), numbered from ``first_window``. ``inputs``
        are what the model takes of them when that is not the windows
        themselves (a staged model's feature vectors, stacked by the same
        context rule); fewer rows than windows: only the first ones are served.
        ``between`` are the offset grid's new windows the model is to label,
        ``(number, row among the grid's new windows, input)`` (a window's own
        input, as in ``inputs``: the context is added here, module docstring);
        both grids' windows come out in the order they end."""
        if labels is not None:
            if len(self.labels) == 0:
                self.label_base = seen_before
            self.labels = np.concatenate([self.labels, labels])
        inputs = windows if inputs is None else inputs
        own = inputs
        inputs = self.context.push(inputs) if self.context is not None else inputs
        out = [self._out(first_window + i, x, 0, i) for i, x in enumerate(inputs)]
        if self.between is not None and self.context is not None and len(own):
            if self.first_input is None:
                self.first_input = own[0]
            for i, x in enumerate(own):
                self.recent[first_window + i] = x
            # a between window of this call follows window first_window - 1 or later
            for j in [j for j in self.recent if j < first_window - max(self.context.steps)]:
                del self.recent[j]
        if between:
            out += [self._out(j, self._between_input(j, x), BETWEEN, i) for j, i, x in between]
            out.sort(key=lambda w: w.t_end)
        if len(self.labels):  # keep only the labels later windows can end on
            cut = max(0, self.next_end - 1 - self.label_base)
            self.labels = self.labels[cut:]
            self.label_base += cut
        return out

    def _between_input(self, j: int, x: np.ndarray) -> np.ndarray:
        """Between window ``j``'s model input: its own, with the model's grid's
        windows ``j - s + 1`` as context (the first window where there is none)."""
        if self.context is None:
            return x
        rows = [x]
        for step in self.context.steps:
            past = self.recent.get(j - step + 1)
            if past is None:  # before the first window (or forgotten): the rule of WindowContext
                past = self.first_input if self.first_input is not None else x
            rows.append(past)
        return np.stack(rows)

    def _out(self, j: int, x: np.ndarray, offset: int, index: int) -> WindowOut:
        end = offset + j * STEP + WINDOW - 1  # pipeline index of the window's last sample
        t_end = self.t0 + (self.seq0 + end - self.seq_t0) / self.rate
        truth = None
        if 0 <= end - self.label_base < len(self.labels):
            truth = label_name(int(self.labels[end - self.label_base]))
        return WindowOut(j, x, t_end - (WINDOW - 1) / self.rate, t_end, truth, offset > 0, index)
