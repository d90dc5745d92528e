"""The line `harstream worker` prints every `--stats-every` seconds (5 by
default) gives the rates, batches and latencies of those seconds. It gave the last
stats message's (one second), so 19 replayed devices that start together, whose
windows all complete in the same second of every 1.28 s, read `windows/s=19.0`
on one line and `windows/s=0.0` on the next while they streamed steadily. A
real worker (`serve` in a thread) on loopback ZeroMQ."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import zmq
from conftest import wait_for, worker_thread

from harstream.models.runtime import NullRuntime
from harstream.stream.core.protocol import SampleBatch, encode_samples

pytestmark = pytest.mark.timeout(60)


def _burst(device: str) -> list[bytes]:
    """640 samples in one message, 12.8 s of them just past: 9 windows at once."""
    return encode_samples(SampleBatch(device, 0, time.time() - 12.8, np.zeros((640, 6), np.float32), session="s"))


def test_the_printed_line_gives_the_rates_of_its_whole_period():
    lines: list[str] = []
    with worker_thread(NullRuntime(6), stats_every=0.1, print_every=1.0, printer=lines.append) as worker:
        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        try:
            pub.connect(worker.ingest)
            time.sleep(0.3)  # the worker's subscription reaches this publisher
            pub.send_multipart(_burst("warm-up"))  # the first windows' one-off costs, before the measured period
            assert wait_for(lambda: len(lines) >= 1, timeout=20)
            pub.send_multipart(_burst("d1"))  # at the start of the next period: its windows within milliseconds
            assert wait_for(lambda: len(lines) >= 2, timeout=20)
        finally:
            pub.close(0)
            ctx.term()
    windows = float(re.search(r"windows/s=([\d.]+)", lines[1]).group(1))
    # 9 windows in the ~1 s period (the last 0.1 s of it alone: none)
    assert 4 <= windows <= 12, lines
    # and the batches that labelled them, and their latency: not "batch=0.0 latency None" beside them
    assert float(re.search(r"batch=([\d.]+)", lines[1]).group(1)) >= 1, lines
    assert "latency p50=None" not in lines[1], lines
