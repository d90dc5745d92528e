"""Numbers JSON can carry and a float cannot, in a samples header, against a
real worker (``serve`` in a thread) on loopback ZeroMQ.

A 400-digit integer is valid JSON (Python reads up to 4,300 digits). Turned
into a float it raises ``OverflowError``, which the worker counted as
``internal`` (a bug met on one message, logged with its traceback) instead of
a reason naming the field; a producer's ``meta.sent`` of that size even
refused samples that were otherwise good.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
import zmq
from conftest import worker_thread

from harstream.stream.core.protocol import SampleBatch, decode_output, encode_samples
from harstream.stream.core.worker import WorkerConfig

pytestmark = pytest.mark.timeout(60)
HUGE = 10**400


@contextlib.contextmanager
def _bus(worker, topics: tuple[bytes, ...] = (b"stats/",)) -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    """A publisher into ``worker``'s ingest and a subscriber to its ``topics``, connected."""
    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    try:
        for topic in topics:
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        sub.connect(worker.output)
        pub.connect(worker.ingest)
        time.sleep(0.3)  # the worker's subscription reaches this publisher
        yield pub, sub
    finally:
        pub.close(0)
        sub.close(0)
        ctx.term()


def _frames(device: str, seq: int, **header_changes) -> list[bytes]:
    frames = encode_samples(SampleBatch(device, seq, time.time(), np.zeros((10, 6), np.float32), session="s1"))
    header = json.loads(frames[1])
    for name, value in header_changes.items():
        if name.startswith("meta."):
            header.setdefault("meta", {})[name[5:]] = value
        else:
            header[name] = value
    return [frames[0], json.dumps(header).encode(), frames[2]]


def test_a_rate_or_a_sent_time_of_400_digits_is_judged_by_its_field_not_an_internal_error():
    config = WorkerConfig(stale_after=5.0)
    with worker_thread(config=config, stats_every=0.1) as worker, _bus(worker) as (pub, sub):
        pub.send_multipart(_frames("huge-rate", 0, rate=HUGE))
        pub.send_multipart(_frames("huge-rate", 10, rate=-HUGE))
        # a sent time no clock has: the samples are judged by their own time, and are fresh
        pub.send_multipart(_frames("huge-sent", 0, **{"meta.sent": HUGE}))
        deadline = time.monotonic() + 10
        drops, totals = {}, {}
        while drops.get("header", 0) < 2 or totals.get("samples", 0) < 10:
            assert time.monotonic() < deadline, (drops, totals)
            if sub.poll(200):
                stats = decode_output(sub.recv_multipart())
                drops, totals = stats.get("drops", {}), stats.get("totals", {})
        assert "internal" not in drops, drops
        assert drops["header"] == 2 and totals["devices_seen"] == 1, (drops, totals)


def test_barometer_readings_spread_over_hours_in_one_small_message_do_not_stall_the_worker():
    """One 30 KB message, one sample and 1,000 pressure readings 2 s apart
    (33 minutes of barometer), made the worker fit about 4,000 vertical speeds
    at once: two seconds of its loop, for every device, per message. Now a
    message's readings are worked through only as far as its samples pay for
    (the rest waits, and what could never be looked up is not worked out)."""
    with worker_thread(stats_every=0.1) as worker, _bus(worker) as (pub, sub):
        rng = np.random.default_rng(0)
        started = time.monotonic()
        for k in range(5):
            t0 = 1000.0 + 3000.0 * k
            pressure = np.column_stack([t0 + np.arange(1000) * 2.0, 1000.0 + rng.normal(0, 0.01, 1000)])
            batch = SampleBatch(f"baro-{k}", 0, t0, np.zeros((1, 6), np.float32), session="s1", pressure=pressure)
            pub.send_multipart(encode_samples(batch))
        pub.send_multipart(_frames("good", 0))
        totals: dict = {}
        while totals.get("messages", 0) < 6:
            assert time.monotonic() - started < 20, totals
            if sub.poll(200):
                totals = decode_output(sub.recv_multipart()).get("totals", {})
        took = time.monotonic() - started
        assert totals["pressure_readings"] == 5000
        assert took < 2.0, f"the worker took {took:.1f} s over 5 small messages"  # about 10 s before


def test_barometer_readings_packed_microseconds_apart_do_not_pile_up_in_a_device():
    from harstream.stream.core.barometer import MAX_KEPT, AltitudeRate

    barometer, t = AltitudeRate(), 100.0
    for _ in range(20):  # 20 messages of 1,000 readings within 1 ms each: 20,000 readings held before
        barometer.push(t + np.arange(1000) * 1e-6, np.full(1000, 1000.0), max_estimates=4)
        t += 0.001
    assert len(barometer._t) == len(barometer._h) == MAX_KEPT


class Always:
    """A runtime that gives every window the same probabilities (the model is not what is tested)."""

    def predict(self, x):
        return np.full((len(x), 6), 1 / 6, np.float32)


def test_a_clock_that_jumps_back_near_zero_within_a_run_never_puts_history_before_zero():
    """A producer whose t0 jumps back to near 0 while its seq runs on: the
    window spanning the jump had its first samples before time 0, and the
    worker published history pieces starting at -0.4 s, which every reader of
    the history (dashboard, tail --final, the durable store's readers)
    refused as a malformed message. Now that window is refused by the history,
    counted (history), and every history message published decodes."""
    from harstream.stream.core.protocol import ProtocolError, decode_history

    with worker_thread(Always(), stats_every=0.1) as worker, _bus(worker, (b"h/", b"stats/")) as (pub, sub):
        rng = np.random.default_rng(1)
        seq, t0 = 0, 5.0e8
        for k in range(24):  # 64 samples a message; the clock jumps back to 0.3 s at message 8
            if k == 8:
                t0 = 0.3
            samples = rng.normal(0, 0.3, (64, 6)).astype(np.float32)
            pub.send_multipart(encode_samples(SampleBatch("jumpy", seq, t0, samples, session="s1")))
            seq, t0 = seq + 64, t0 + 64 / 50
        refused, histories, drops = [], 0, {}
        deadline = time.monotonic() + 15
        while histories < 12:
            assert time.monotonic() < deadline, (drops, histories, refused)
            if not sub.poll(200):
                continue
            frames = sub.recv_multipart()
            if frames[0].startswith(b"h/"):
                histories += 1
                try:
                    decode_history(frames)
                except ProtocolError as exc:
                    refused.append(exc.detail)
            else:
                drops = decode_output(frames).get("drops", {})
        assert refused == [], refused[:3]  # was: piece 0: start -0.4 and end 1.72 are not times in order
        while drops.get("history", 0) < 1:  # the window across the jump, refused and counted
            assert time.monotonic() < deadline, drops
            if sub.poll(200):
                frames = sub.recv_multipart()
                if frames[0].startswith(b"stats/"):
                    drops = decode_output(frames).get("drops", {})
