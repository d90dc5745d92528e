"""Per-device modes on the live path: one worker on loopback ZeroMQ serving a
replay at the waist, a gateway phone anywhere, and a personal model dropped
into its registry folder while the phone streams — with tiny real Keras
artifacts for the shared models, so each test takes seconds."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
import zmq

from harstream.models.personal_serving import load_personal_model
from harstream.stream.bus.zmq_worker import serve
from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
from harstream.stream.core.model_routing import ModelRouter, ServedModel
from harstream.stream.core.posture import N_MOTION, PersonalHead
from harstream.stream.core.protocol import Prediction, SampleBatch, decode_output, encode_samples
from harstream.stream.core.worker import WorkerConfig
from harstream.stream.personal.model_file import head_to_json, write_personal_file
from harstream.stream.personal.registry import PersonalRegistry, personal_model_path

PERSONAL = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STILL"]
ANY_PORT = "tcp://127.0.0.1:*"


def tiny_artifact(folder, name: str, classes, **metadata):
    """A small untrained Keras model with the window input contract, saved as an artifact."""
    import keras

    from harstream.models.artifact import save_artifact

    keras.utils.set_random_seed(len(classes))
    inp = keras.Input((128, 9))
    out = keras.layers.Dense(len(classes), activation="softmax")(keras.layers.GlobalAveragePooling1D()(inp))
    return save_artifact(
        keras.Model(inp, out), {"architecture": name, "classes": list(classes), **metadata}, folder / f"{name}.keras"
    )


def served(path, mode: str) -> ServedModel:
    from harstream.models.artifact import load_artifact
    from harstream.models.runtime import KerasRuntime

    artifact = load_artifact(path)
    return ServedModel(
        mode, mode, artifact.model_id, tuple(artifact.classes), artifact.context_steps, runtime=KerasRuntime(artifact)
    )


def personal_file(folder, device: str, base_id: str):
    """A personal model of ``device`` over the model ``base_id``: a head that
    knows sitting (gravity along z) — a few hundred bytes of JSON."""
    head = PersonalHead(
        device,
        "p",
        base_id,
        ("SITTING",),
        {"SITTING": [[0.0, 0.0, 1.0]]},
        motion_mean=[[-3.0] * N_MOTION],
        motion_scale=[1.0] * N_MOTION,
        margins=[[0.0]],
        calibrated={"SITTING", "WALKING"},
    )
    return write_personal_file(folder / "mine.personal.json", head_to_json(head))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The waist and any models, and a personal one for ``phone:p1`` kept aside."""
    folder = tmp_path_factory.mktemp("models")
    waist = tiny_artifact(folder, "waist", ACTIVITIES)
    anywhere = served(tiny_artifact(folder, "anywhere", PLACEMENT_FREE, placement="any"), "any")
    return served(waist, "waist"), anywhere, personal_file(folder, "phone:p1", anywhere.model_id)


class Worker:
    """serve() with a router and a watched registry folder, in a thread."""

    def __init__(self, models, registry):
        waist, anywhere, _ = models
        self.stop, self.ready = threading.Event(), threading.Event()
        personal = PersonalRegistry(registry, lambda path: load_personal_model(path, anywhere), interval=0.1)

        def bound(ingest, output):
            self.ingest, self.output = ingest, output

        self.thread = threading.Thread(
            target=serve,
            daemon=True,
            args=(None, ACTIVITIES, waist.model_id),
            kwargs=dict(
                ingest=ANY_PORT,
                output=ANY_PORT,
                config=WorkerConfig(max_wait=0.01),
                worker_id="w",
                stop=self.stop,
                stats_every=0.2,
                on_ready=self.ready.set,
                on_bound=bound,
                printer=None,
                router=ModelRouter(waist, anywhere),
                personal=personal,
            ),
        )
        self.thread.start()
        assert self.ready.wait(30), "worker did not start"

    def close(self):
        self.stop.set()
        self.thread.join(30)


class Bus:
    """A producer streaming devices into the worker, and a subscriber to its output."""

    def __init__(self, worker):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.connect(worker.ingest)
        self.sub = self.ctx.socket(zmq.SUB)
        for prefix in (b"p/", b"stats/"):
            self.sub.setsockopt(zmq.SUBSCRIBE, prefix)
        self.sub.connect(worker.output)
        self.seq: dict[str, int] = {}
        self.predictions: list[Prediction] = []
        self.stats: dict = {}
        self.rng = np.random.default_rng(0)

    def stream(self, devices, until, timeout: float = 60.0, meta=None) -> bool:
        """Send 64 samples per device every 20 ms and read the output until
        ``until(self)`` holds (False after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for device in devices:
                seq = self.seq.get(device, 0)
                samples = self.rng.normal(0, 0.3, (64, 6)).astype(np.float32)
                self.pub.send_multipart(
                    encode_samples(
                        SampleBatch(device, seq, time.time() - 1.28, samples, meta=(meta or {}).get(device, {}))
                    )
                )
                self.seq[device] = seq + 64
            while self.sub.poll(20):
                message = decode_output(self.sub.recv_multipart())
                if isinstance(message, Prediction):
                    if not message.between:  # windows, not the updates between them
                        self.predictions.append(message)
                else:
                    self.stats = message
            if until(self):
                return True
        return False

    def latest(self, device: str) -> Prediction | None:
        return next((p for p in reversed(self.predictions) if p.device == device), None)

    def close(self):
        self.pub.close(0)
        self.sub.close(0)
        self.ctx.term()


@pytest.fixture
def live(models, tmp_path):
    registry = tmp_path / "personal"
    registry.mkdir()
    worker = Worker(models, registry)
    bus = Bus(worker)
    yield bus, registry
    bus.close()
    worker.close()


def both_seen(bus, *devices):
    return all(bus.latest(d) is not None for d in devices)


def test_one_worker_serves_a_replay_at_the_waist_and_a_gateway_phone_anywhere(live, models):
    bus, _ = live
    assert bus.stream(["replay-1", "phone:p1"], lambda b: both_seen(b, "replay-1", "phone:p1"))
    replay, phone = bus.latest("replay-1"), bus.latest("phone:p1")
    assert (replay.mode, replay.classes, len(replay.probs)) == ("waist", list(ACTIVITIES), 6)
    assert (phone.mode, phone.classes, len(phone.probs)) == ("any", list(PLACEMENT_FREE), 4)
    assert phone.model == models[1].model_id and phone.label in PLACEMENT_FREE


def test_a_phone_declaring_the_waist_is_served_by_the_waist_model(live):
    bus, _ = live
    meta = {"phone:belt": {"placement": "waist"}}
    assert bus.stream(["phone:belt"], lambda b: both_seen(b, "phone:belt"), meta=meta)
    assert bus.latest("phone:belt").mode == "waist"


def test_a_personal_model_dropped_in_while_streaming_takes_over_its_device(live, models):
    bus, registry = live
    assert bus.stream(["replay-1", "phone:p1"], lambda b: both_seen(b, "replay-1", "phone:p1"))
    assert bus.latest("phone:p1").mode == "any"
    target = personal_model_path(registry, "phone:p1")
    shutil.copy(models[2], target)
    assert bus.stream(["replay-1", "phone:p1"], lambda b: b.latest("phone:p1").mode == "personal", timeout=60)
    mine = bus.latest("phone:p1")
    assert mine.classes == PERSONAL and len(mine.probs) == 5
    assert bus.latest("replay-1").mode == "waist"  # the other device is not touched
    assert bus.stream(["phone:p1"], lambda b: b.stats.get("modes", {}).get("personal") == 1)
    assert bus.stats["personal"]["loaded"] == 1 and bus.stats["personal"]["refusals"] == 0
    # the windows go on: no restart of the device's stream
    windows = [p.window for p in bus.predictions if p.device == "phone:p1"]
    assert windows == sorted(windows) and windows[-1] == len(windows) - 1
    target.unlink()
    assert bus.stream(["phone:p1"], lambda b: b.latest("phone:p1").mode == "any", timeout=30)
    assert bus.stream(["phone:p1"], lambda b: b.stats.get("personal", {}).get("loaded") == 0)


def refusals(bus) -> dict:
    return bus.stats.get("personal", {}).get("refused", {})


def test_a_broken_personal_model_is_refused_by_name_and_the_device_keeps_its_mode(live, models):
    bus, registry = live
    assert bus.stream(["phone:p1"], lambda b: both_seen(b, "phone:p1"))
    target = personal_model_path(registry, "phone:p1")
    target.write_bytes(b"not a personal model")
    assert bus.stream(["phone:p1"], lambda b: b.stats.get("drops", {}).get("model_refused") == 1, timeout=30)
    assert list(refusals(bus)) == [target.name] and "not a JSON personal model" in refusals(bus)[target.name]
    assert bus.stream(["phone:p1"], lambda b: len([p for p in b.predictions if p.device == "phone:p1"]) >= 4)
    assert bus.latest("phone:p1").mode == "any"


def test_a_symlink_to_an_endless_device_file_is_refused_by_name_and_the_worker_serves_on(live):
    bus, registry = live
    assert bus.stream(["phone:p1"], lambda b: both_seen(b, "phone:p1"))
    (registry / "endless.personal.json").symlink_to("/dev/zero")
    (registry / "endless.keras").symlink_to("/dev/urandom")
    assert bus.stream(["phone:p1"], lambda b: len(refusals(b)) == 2, timeout=30)
    assert "not a regular file" in refusals(bus)["endless.personal.json"]
    assert "not served any more" in refusals(bus)["endless.keras"]  # never opened: named by its suffix
    assert bus.stats["drops"]["model_refused"] == 2
    before = len(bus.predictions)
    assert bus.stream(["phone:p1"], lambda b: len(b.predictions) >= before + 4)


def test_a_personal_model_of_the_old_keras_format_is_refused_with_the_command_that_refits_it(live, models):
    bus, registry = live
    tiny_artifact(registry, "old", PERSONAL, placement="personal", device="phone:p1")
    assert bus.stream(["phone:p1"], lambda b: "old.keras" in refusals(b), timeout=30)
    assert "harstream calibrate --data" in refusals(bus)["old.keras"]
    assert bus.latest("phone:p1").mode == "any"


def test_a_personal_model_fitted_over_another_shared_model_is_refused_until_refitted(live, models, tmp_path):
    bus, registry = live
    other = personal_file(tmp_path, "phone:p1", "any-svm@00000000")
    shutil.copy(other, registry / "p1.personal.json")
    assert bus.stream(["phone:p1"], lambda b: "p1.personal.json" in refusals(b), timeout=30)
    assert "refit" in refusals(bus)["p1.personal.json"] and "any-svm@00000000" in refusals(bus)["p1.personal.json"]
    assert bus.latest("phone:p1").mode == "any"
