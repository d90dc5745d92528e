"""Hostile input on the ingest bus, against a real worker on loopback ZeroMQ.

One worker (serve() in a thread, a tiny LiteRT model) runs for the module;
a good device streams beside it the whole time. Each case publishes one class
of hostile message from its own socket and asserts: the worker is alive, the
good device keeps getting predictions (its window numbers never reset), the
rejection is counted under its reason on the stats topic, and the test
process's memory grew by less than MEMORY_BOUND.
"""

from __future__ import annotations

import json
import mmap
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import zmq
from conftest import wait_for

from harstream.stream.bus.zmq_worker import serve
from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.protocol import Prediction, SampleBatch, decode_output, encode_samples, samples_topic
from harstream.stream.core.worker import WorkerConfig

MEMORY_BOUND = 64 * 2**20  # bytes of RSS growth allowed per case
GOOD = "good-phone"
GOOD_SESSION = "c0ffee"
MAX_DEVICES = 40


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """A tiny untrained model served by LiteRT, as the worker serves the real one."""
    import keras

    from harstream.models.artifact import load_artifact, save_artifact
    from harstream.models.runtime import TfliteRuntime

    os.environ["HARSTREAM_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    keras.utils.set_random_seed(3)
    inp = keras.Input((128, 9))
    out = keras.layers.Dense(6, activation="softmax")(keras.layers.GlobalAveragePooling1D()(inp))
    path = save_artifact(keras.Model(inp, out), {"architecture": "tiny"}, tmp_path_factory.mktemp("m") / "t.keras")
    return TfliteRuntime(load_artifact(path), (1, 4))


class Bus:
    """The worker, the good device and a subscriber, all in threads."""

    def __init__(self, runtime):
        self.stop = threading.Event()
        ready = threading.Event()
        self.ctx = zmq.Context()
        cfg = WorkerConfig(max_devices=MAX_DEVICES, stale_after=5.0, takeover_after=2.56)

        def bound(ingest: str, output: str) -> None:
            self.ingest, self.output = ingest, output

        self.worker = threading.Thread(
            target=serve,
            daemon=True,
            kwargs=dict(
                runtime=runtime,
                classes=ACTIVITIES,
                model_id="tiny",
                ingest="tcp://127.0.0.1:*",
                output="tcp://127.0.0.1:*",
                config=cfg,
                worker_id="w",
                stop=self.stop,
                stats_every=0.1,
                on_ready=ready.set,
                on_bound=bound,
                printer=None,
            ),
        )
        self.worker.start()
        assert ready.wait(30), "worker did not start"
        self.lock = threading.Lock()
        self.predictions: list[Prediction] = []
        self.stats: dict = {}
        self.good_seq = 0
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._read, self._stream_good)]
        for t in self.threads:
            t.start()

    def _read(self) -> None:
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"p/")
        sub.setsockopt(zmq.SUBSCRIBE, b"stats/")
        sub.connect(self.output)
        try:
            while not self.stop.is_set():
                if sub.poll(50):
                    msg = decode_output(sub.recv_multipart())
                    with self.lock:
                        if isinstance(msg, Prediction):
                            if not msg.between:  # windows, not the updates between them
                                self.predictions.append(msg)
                        else:
                            self.stats = msg
        finally:
            sub.close(0)

    def _stream_good(self) -> None:
        """10 samples every 40 ms (five times real time), times from the wall clock."""
        pub = self.ctx.socket(zmq.PUB)
        pub.connect(self.ingest)
        rng = np.random.default_rng(0)
        try:
            while not self.stop.wait(0.04):
                samples = rng.normal(0, 0.3, (10, 6)).astype(np.float32)
                batch = SampleBatch(GOOD, self.good_seq, time.time(), samples, session=GOOD_SESSION)
                pub.send_multipart(encode_samples(batch))
                self.good_seq += 10
        finally:
            pub.close(0)

    def good_windows(self) -> list[int]:
        with self.lock:
            return [p.window for p in self.predictions if p.device == GOOD]

    def counts(self) -> tuple[dict, dict]:
        with self.lock:
            return dict(self.stats.get("drops", {})), dict(self.stats.get("totals", {}))

    def wait(self, condition: Callable[[], bool], timeout: float = 30.0) -> bool:
        return wait_for(condition, timeout)

    def attacker(self) -> zmq.Socket:
        """A fresh publisher whose messages the worker is subscribed to."""
        sock = self.ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.ingest)
        assert sock.poll(10_000), "the worker's subscription never arrived"
        sock.recv()
        return sock

    def close(self) -> None:
        self.stop.set()
        for t in [self.worker, *self.threads]:
            t.join(10)
        self.ctx.term()


@pytest.fixture(scope="module")
def bus(runtime):
    b = Bus(runtime)
    assert b.wait(lambda: len(b.good_windows()) >= 3), "the good device was never served"
    yield b
    b.close()


# ------------------------------------------------------------------ the cases


def frames_of(
    device: str = "intruder",
    n: int = 4,
    session: str | None = "bad5e55",
    t0: float | None = None,
    seq: int = 0,
    samples: np.ndarray | None = None,
    labels: bool = True,
) -> list[bytes]:
    samples = np.full((n, 6), 0.5, np.float32) if samples is None else samples
    return encode_samples(
        SampleBatch(
            device,
            seq,
            time.time() if t0 is None else t0,
            samples,
            labels=np.ones(len(samples), np.int16) if labels else None,
            session=session or "",
        )
    )


def with_header(frames: list[bytes], **changes) -> list[bytes]:
    header = json.loads(frames[1])
    header.update(changes)
    return [frames[0], json.dumps(header).encode(), frames[2]]


def raw_header(frames: list[bytes], old: bytes, new: bytes) -> list[bytes]:
    assert old in frames[1]
    return [frames[0], frames[1].replace(old, new), frames[2]]


def with_value(channel: int, value: float) -> list[bytes]:
    samples = np.full((4, 6), 0.5, np.float32)
    samples[2, channel] = value
    return frames_of(samples=samples)


@dataclass
class Case:
    make: Callable[[Bus], list[list[bytes]]]  # the messages to publish
    reason: str | None  # drops[reason] grows by one per message...
    total: str | None = None  # ...or totals[total] grows (when nothing is dropped)


def good_id(bus: Bus, **kw) -> list[bytes]:
    return frames_of(GOOD, **kw)


CASES: dict[str, Case] = {
    "two_frames": Case(lambda b: [frames_of()[:2]], "frame_count"),
    "four_frames": Case(lambda b: [frames_of() + [b"x"]], "frame_count"),
    "three_empty_frames": Case(lambda b: [[b"s/", b"", b""]], "header"),
    "topic_of_another_device": Case(lambda b: [[samples_topic("other"), *frames_of()[1:]]], "topic"),
    "header_not_utf8": Case(lambda b: [[frames_of()[0], b"\xff\xfe{", frames_of()[2]]], "header"),
    "header_a_json_array": Case(lambda b: [[frames_of()[0], b"[1,2]", frames_of()[2]]], "header"),
    "header_over_64_kib": Case(lambda b: [with_header(frames_of(), meta={"pad": "x" * 70_000})], "header"),
    "nesting_deeper_than_the_parser": Case(
        lambda b: [[frames_of()[0], b"[" * 50_000 + b"]" * 50_000, frames_of()[2]]], "header"
    ),
    "integer_of_5000_digits": Case(lambda b: [raw_header(frames_of(), b'"seq":0', b'"seq":' + b"7" * 5000)], "header"),
    "seq_true": Case(lambda b: [with_header(frames_of(), seq=True)], "header"),
    "seq_negative": Case(lambda b: [with_header(frames_of(), seq=-3)], "header"),
    "seq_beyond_2_to_53": Case(lambda b: [with_header(frames_of(), seq=2**64)], "header"),
    "rate_100_hz": Case(lambda b: [with_header(frames_of(), rate=100.0)], "header"),
    "units_m_s2": Case(lambda b: [with_header(frames_of(), units={"acc": "m/s^2", "gyro": "rad/s"})], "header"),
    "meta_a_string": Case(lambda b: [with_header(frames_of(), meta="x")], "header"),
    "version_2": Case(lambda b: [with_header(frames_of(), v=2)], "version"),
    "version_true": Case(lambda b: [with_header(frames_of(), v=True)], "version"),
    "device_id_ending_in_newline": Case(
        lambda b: [[b"s/00/x\n/", *with_header(frames_of(), device="x\n")[1:]]], "device"
    ),
    "device_id_of_65_characters": Case(lambda b: [with_header(frames_of(), device="d" * 65)], "device"),
    "n_zero": Case(lambda b: [with_header(frames_of(), n=0)], "byte_length"),
    "payload_one_byte_short": Case(lambda b: [frames_of()[:2] + [frames_of()[2][:-1]]], "byte_length"),
    "nan_sample": Case(lambda b: [with_value(1, np.nan)], "non_finite"),
    "acc_of_1e35_g": Case(lambda b: [with_value(0, 1e35)], "range"),
    "gyro_of_minus_150_rad_s": Case(lambda b: [with_value(5, -150.0)], "range"),
    "t0_of_1e306": Case(lambda b: [frames_of(t0=1e306)], "time"),
    "t0_nan": Case(lambda b: [raw_header(frames_of(t0=5.0), b'"t0":5.0', b'"t0":NaN')], "time"),
    "labels_as_booleans": Case(lambda b: [with_header(frames_of(), labels=[True] * 4)], "labels"),
    "labels_too_few": Case(lambda b: [with_header(frames_of(), labels=[1])], "labels"),
    "session_with_a_newline": Case(lambda b: [with_header(frames_of(), session="s\n")], "session"),
    "stale_samples_a_minute_old": Case(lambda b: [frames_of("late", t0=time.time() - 60)], "stale"),
    # identity: another publisher under the good device's id
    "foreign_session_on_a_live_device": Case(
        lambda b: [good_id(b, seq=b.good_seq + k * 4, session="f0e") for k in range(3)], "session"
    ),
    "no_session_seq_0_on_a_live_device": Case(lambda b: [good_id(b, seq=0, session=None)], "session"),
    "forged_far_ahead_seq_in_its_session": Case(lambda b: [good_id(b, seq=10**12, session=GOOD_SESSION)], "jump"),
    # bounded tables: a flood of one-sample ids is evicted, the good device stays
    "flood_of_new_device_ids": Case(
        lambda b: [frames_of(f"flood-{i}", n=1) for i in range(3 * MAX_DEVICES)], None, "evicted_unproven"
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_message_is_counted_and_harms_no_one(bus, name):
    case = CASES[name]
    drops0, totals0 = bus.counts()
    windows0 = bus.good_windows()
    mem0 = rss()
    sock = bus.attacker()
    try:
        messages = case.make(bus)
        for frames in messages:
            sock.send_multipart(frames)
        if case.reason is not None:
            want = drops0.get(case.reason, 0) + len(messages)
            assert bus.wait(lambda: bus.counts()[0].get(case.reason, 0) >= want), (
                f"{case.reason} not counted: {bus.counts()[0]}"
            )
        else:
            assert bus.wait(lambda: bus.counts()[1].get(case.total, 0) > totals0.get(case.total, 0))
        # the good device goes on being served, its pipeline never reset
        assert bus.wait(lambda: len(bus.good_windows()) >= len(windows0) + 3), "the good device stopped"
    finally:
        sock.close(0)
    assert bus.worker.is_alive()
    drops, totals = bus.counts()
    if case.reason is not None:
        assert drops[case.reason] == drops0.get(case.reason, 0) + len(messages)
    windows = bus.good_windows()
    assert windows == list(range(windows[0], windows[0] + len(windows))), "the good device was reset"
    assert (totals.get("gaps", 0), totals.get("restarts", 0)) == (totals0.get("gaps", 0), totals0.get("restarts", 0))
    assert "intruder" not in {p.device for p in bus.predictions}
    assert rss() - mem0 < MEMORY_BOUND


def test_a_frame_over_the_size_limit_is_refused_before_it_is_held(bus):
    """ZeroMQ disconnects a peer sending a frame over MAXMSGSIZE: the worker
    never holds the 64 MiB, so the frame is never decoded (nothing to count)
    and memory never peaks. The payload is untouched zero pages of an
    anonymous map kept out of huge pages (numpy asks for huge pages, and the
    kernel's khugepaged may then fill them in while the frame waits), so the
    sender's copy costs the process no resident memory."""
    drops0, _ = bus.counts()
    windows0 = len(bus.good_windows())
    mem0, peak = rss(), 0
    payload = mmap.mmap(-1, 64 * 2**20)
    payload.madvise(mmap.MADV_NOHUGEPAGE)
    sock = bus.attacker()
    try:
        sock.send_multipart([samples_topic("big"), b"{}", payload], copy=False)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            peak = max(peak, rss())
            time.sleep(0.002)
        assert bus.wait(lambda: len(bus.good_windows()) >= windows0 + 3)
    finally:
        sock.close(0)
    assert bus.worker.is_alive()
    assert bus.counts()[0] == drops0  # it never reached the decoder
    assert peak - mem0 < 32 * 2**20


def test_there_are_at_least_25_classes_of_hostile_message():
    assert len(CASES) >= 25


def test_a_subscriber_flooding_the_output_with_subscriptions_harms_no_one(bus):
    from harstream.stream.core.subscriptions import MAX_PREFIXES

    windows0 = len(bus.good_windows())
    mem0 = rss()
    sub = bus.ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(bus.output)
    try:
        for _ in range(200):  # a broad prefix toggled: each change would make the worker look at every device
            sub.setsockopt(zmq.SUBSCRIBE, b"g/")
            sub.setsockopt(zmq.UNSUBSCRIBE, b"g/")
        for i in range(MAX_PREFIXES + 100):
            sub.setsockopt(zmq.SUBSCRIBE, b"g/junk-%d/" % i)
            if i % 500 == 499:
                # ZeroMQ drops subscriptions past a pipe's high-water mark: a flood paces itself, and
                # lets its socket take in the worker's "read more" (EVENTS processes pending commands)
                time.sleep(0.2)
                sub.getsockopt(zmq.EVENTS)
        assert bus.wait(lambda: bus.stats.get("subscriptions", {}).get("overflowed") is True), bus.stats.get(
            "subscriptions"
        )
        assert bus.wait(lambda: len(bus.good_windows()) >= windows0 + 3), "the good device stopped"
    finally:
        sub.close(0)
    assert bus.worker.is_alive()
    windows = bus.good_windows()
    assert windows == list(range(windows[0], windows[0] + len(windows))), "the good device was reset"
    assert rss() - mem0 < MEMORY_BOUND
