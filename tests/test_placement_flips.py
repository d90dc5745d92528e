"""A producer flipping its declared placement on every message, against a real
worker (serve() in a thread, two tiny Keras models: waist and any) on loopback
ZeroMQ: the device's mode changes at most once per ``placement_interval``, the
refused flips are counted on the stats topic, and the log stays short."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import zmq
from conftest import wait_for, worker_thread
from test_routing_live import served, tiny_artifact

from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
from harstream.stream.core.model_routing import ModelRouter
from harstream.stream.core.protocol import Prediction, SampleBatch, decode_output, encode_samples
from harstream.stream.core.worker import WorkerConfig

pytestmark = pytest.mark.timeout(120)

FLIPPER = "flipper"
MESSAGES = 400


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    waist = served(tiny_artifact(folder, "waist", ACTIVITIES), "waist")
    anywhere = served(tiny_artifact(folder, "anywhere", PLACEMENT_FREE, placement="any"), "any")
    return ModelRouter(waist, anywhere)


def test_a_device_flipping_its_placement_on_every_message_changes_mode_once_per_interval(router, caplog):
    caplog.set_level(logging.INFO, logger="harstream")
    with worker_thread(
        None,
        ACTIVITIES,
        router.waist.model_id,
        config=WorkerConfig(max_wait=0.01, placement_interval=10.0),
        stats_every=0.2,
        router=router,
    ) as w:
        ctx = zmq.Context()
        stats: list[dict] = []
        predictions: list[Prediction] = []
        try:
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.setsockopt(zmq.LINGER, 0)
            sub.connect(w.output)
            pub = ctx.socket(zmq.XPUB)
            pub.setsockopt(zmq.LINGER, 0)
            pub.connect(w.ingest)
            assert pub.poll(10_000), "the worker's subscription never arrived"
            pub.recv()
            rng = np.random.default_rng(4)
            t0 = time.time()
            for k in range(MESSAGES):  # 16 samples each: 128 s of samples, every message flipping waist <-> any
                batch = SampleBatch(
                    FLIPPER,
                    16 * k,
                    t0 + 16 * k / 50,
                    rng.normal(0, 0.3, (16, 6)).astype(np.float32),
                    session="f11p",
                    meta={"placement": ("any", "waist")[k % 2]},
                )
                pub.send_multipart(encode_samples(batch))
                time.sleep(0.002)

            def drain() -> bool:
                while sub.poll(20):
                    msg = decode_output(sub.recv_multipart())
                    if isinstance(msg, Prediction) and not msg.between:  # windows, not the updates between them
                        predictions.append(msg)
                    elif isinstance(msg, dict) and "totals" in msg:
                        stats.append(msg)
                return bool(stats) and stats[-1].get("totals", {}).get("samples", 0) >= 16 * MESSAGES

            assert wait_for(drain, 30), stats[-1:] or "no stats"
            pub.close(0)
            sub.close(0)
        finally:
            ctx.destroy(linger=0)
    totals = stats[-1]["totals"]
    # the first flip is taken at once, the next ones wait out the 10 s interval (the test lasts ~3 s)
    assert totals.get("mode_switches", 0) <= 1, totals
    assert totals.get("placement_refused", 0) >= MESSAGES // 2 - 2, totals  # every other message flips back
    lines = [r for r in caplog.records if FLIPPER in r.getMessage()]
    assert len(lines) <= 3, [r.getMessage() for r in lines[:5]]
    # its samples were kept: the device was served throughout, window after window
    windows = sorted(p.window for p in predictions if p.device == FLIPPER)
    assert len(windows) >= 40 and windows == list(range(len(windows)))
