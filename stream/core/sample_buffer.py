"""Raw samples of one device waiting until they complete a window.

The worker pushes a device's samples through its pipeline only when they
complete a window (the pipeline is chunk-invariant, so the windows are the
same), which lets it filter many devices in one vectorised call. Meanwhile
they wait here, with their ground-truth labels when the source sent any.

>>> import numpy as np
>>> buf = SampleBuffer()
>>> buf.append(np.zeros((3, 6), np.float32))
>>> buf.append(np.ones((2, 6), np.float32), np.full(2, 4, np.int16))
>>> len(buf)
5
>>> raw, labels = buf.take()
>>> raw.shape, labels.tolist(), len(buf)
((5, 6), [-1, -1, -1, 4, 4], 0)
"""

from __future__ import annotations

import numpy as np

UNLABELLED = -1


class SampleBuffer:
    """Chunks of ``(n, 6)`` samples and their optional ``(n,)`` labels, in order."""

    __slots__ = ("_chunks", "_labels", "_n", "_has_labels")

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._labels: list[np.ndarray | None] = []
        self._n = 0
        self._has_labels = False

    def __len__(self) -> int:
        return self._n

    def append(self, samples: np.ndarray, labels: np.ndarray | None = None) -> None:
        self._chunks.append(samples)
        self._labels.append(labels)
        self._n += len(samples)
        self._has_labels |= labels is not None

    def take(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Everything buffered as one array (labels ``-1`` where a chunk had
        none; ``None`` if no chunk had any), and empty the buffer."""
        chunks, labels = self._chunks, self._labels
        raw = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.empty((0, 6), np.float32)
        joined = None
        if self._has_labels:
            joined = np.concatenate(
                [lab if lab is not None else np.full(len(c), UNLABELLED, np.int16) for c, lab in zip(chunks, labels)]
            )
        self.clear()
        return raw, joined

    def clear(self) -> None:
        self._chunks, self._labels, self._n, self._has_labels = [], [], 0, False
