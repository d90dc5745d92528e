"""Display-only updates between windows: a second grid of windows 32 samples
after the model's, windowed from the same filtered samples whatever the
chunking; those whose signal moved are labelled with the model's windows as
context and shown as the decoder's peek, published as predictions marked
``between`` that leave the model's windows, the decoder and the history untouched."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import replayed_predictions, worker_thread

from harstream.stream.core.decoder import Decoder, DecoderParams, display_for, window_motion
from harstream.stream.core.pipeline import BETWEEN, STEP, cut_windows, preprocess_recording
from harstream.stream.core.protocol import (
    Prediction,
    ProtocolError,
    SampleBatch,
    decode_prediction,
    encode_prediction,
    encode_samples,
)
from harstream.stream.core.transition_direction import window_gravity
from harstream.stream.core.worker import StreamCore, WorkerConfig, format_stats

SIX = ["A", "B", "C", "D", "E", "F"]


def _signal(n: int = 1200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 6)).astype(np.float32)


def _run(core: StreamCore, data: np.ndarray, chunk: int, probs=None) -> list[tuple[Prediction, np.ndarray]]:
    """Feed ``data`` in ``chunk``-sample messages; every prediction with the model input it was made from."""
    out = []
    for i in range(0, len(data), chunk):
        core.ingest(encode_samples(SampleBatch("d1", seq=i, t0=i / 50, samples=data[i : i + chunk])), now=i / 50)
        while core.waiting:
            x, taken = core.take_batch()
            p = np.full((len(taken), 6), 1 / 6) if probs is None else np.stack([probs(w) for w in taken])
            out += list(zip(core.finish_batch(taken, p, now=i / 50), x))
    return out


def test_between_windows_are_the_filtered_stream_cut_32_samples_after_each_window():
    data = _signal()
    every = WorkerConfig(between_devices=None, between_motion=0.0, between_turn=0.0)  # random data: every one moved
    got = _run(StreamCore(SIX, "m", every), data, chunk=25)
    between = [(p, x) for p, x in got if p.between]
    assert [p.window for p, _ in between] == list(range(len(between)))
    expected = cut_windows(preprocess_recording(data), BETWEEN + STEP * np.arange(len(between)))
    assert np.array_equal(np.stack([x for _, x in between]), expected)
    # each one ends 32 samples (0.64 s) after the window it follows
    ends = {(p.window, p.between): p.t_end for p, _ in got}
    assert all(ends[(k, True)] - ends[(k, False)] == pytest.approx(BETWEEN / 50) for k in range(len(between)))
    # and comes out after it, before the next one, even when one message completes several
    in_one = [p.t_end for p, _ in _run(StreamCore(SIX, "m", every), data, chunk=400)]
    assert in_one == sorted(in_one)


def test_a_between_windows_context_is_the_windows_of_the_models_grid_before_it():
    data = _signal()
    every = WorkerConfig(between_devices=None, between_motion=0.0, between_turn=0.0, context_steps=(1, 2, 4))
    got = _run(StreamCore(SIX, "m", every), data, chunk=10)
    processed = preprocess_recording(data)
    for p, x in got:
        if not p.between:
            continue
        j = p.window  # context: windows j, j - 1, j - 3 of the model's grid (the first one before there are any)
        starts = [BETWEEN + STEP * j] + [STEP * max(j - s + 1, 0) for s in (1, 2, 4)]
        assert np.array_equal(x, cut_windows(processed, np.array(starts))), j


def test_a_between_window_without_a_gravity_direction_counts_as_turned_all_the_way():
    # an all-zero reading has no gravity direction (turn_degrees: nan); the worker takes it as 180 degrees
    zeros = np.zeros((1200, 6), np.float32)
    every = (1200 - BETWEEN - 128) // STEP + 1
    for turn, labelled in ((179.0, every), (180.0, 0)):
        core = StreamCore(SIX, "m", WorkerConfig(between_devices=None, between_motion=16.0, between_turn=turn))
        _run(core, zeros, chunk=10)
        assert (core.totals["between"], core.totals["between_quiet"]) == (labelled, every - labelled), turn


def test_between_windows_of_a_still_signal_are_not_labelled():
    still = np.tile(np.array([[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]], np.float32), (1200, 1))
    core = StreamCore(SIX, "m", WorkerConfig(between_devices=None))
    got = _run(core, still, chunk=10)
    assert got and not any(p.between for p, _ in got)
    assert core.totals["between_quiet"] == (1200 - BETWEEN - 128) // STEP + 1 and core.totals["between"] == 0


def test_a_peek_leaves_the_decoder_as_it_was():
    params = DecoderParams.uniform(SIX, stay=0.9)
    rng = np.random.default_rng(3)
    windows = [list(map(float, p)) for p in rng.dirichlet(np.ones(6) * 0.3, size=40)]
    plain, peeking = Decoder(params), Decoder(params)
    for p, q in zip(windows, windows[1:] + windows[:1]):
        peeking.peek(q, 0.1)
        assert peeking.update(p, 0.05) == plain.update(p, 0.05)


@pytest.mark.parametrize("chunk", [7, 10, 64, 333])
def test_between_predictions_do_not_depend_on_chunking(chunk):
    data = _signal()
    config = WorkerConfig(between_devices=None, context_steps=(1, 2, 4))
    reference = [
        (p.window, p.between, round(p.t_end, 6), float(x.sum()))
        for p, x in _run(StreamCore(SIX, "m", config), data, 50)
    ]
    got = [
        (p.window, p.between, round(p.t_end, 6), float(x.sum()))
        for p, x in _run(StreamCore(SIX, "m", config), data, chunk)
    ]
    assert got == reference


def test_a_between_prediction_leaves_the_model_windows_and_the_history_as_without_it():
    data = _signal(2000)
    params = DecoderParams.uniform(SIX, stay=0.9)
    config = dict(context_steps=(1, 2, 4), display=display_for(SIX, params.to_json()))
    rng = np.random.default_rng(1)
    table = rng.dirichlet(np.ones(6), size=64)  # the same probabilities for a window whichever grid is on

    def probs(w):
        return table[(w.window * 2 + w.between) % 64]

    on = StreamCore(SIX, "m", WorkerConfig(between_devices=None, **config))
    off = StreamCore(SIX, "m", WorkerConfig(between_devices=0, **config))
    with_between = [p for p, _ in _run(on, data, 10, probs)]
    without = [p for p, _ in _run(off, data, 10, probs)]
    assert any(p.between for p in with_between)
    assert [(p.window, p.smoothed, p.probs) for p in with_between if not p.between] == [
        (p.window, p.smoothed, p.probs) for p in without
    ]
    assert on.take_history() == off.take_history()
    assert on.totals["between"] == sum(p.between for p in with_between) and off.totals["between"] == 0


def test_a_device_not_in_waist_mode_gets_no_between_windows():
    from harstream.stream.core.model_routing import ModelRouter, ServedModel

    anywhere = ServedModel("any", "any", "m-any", ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "STILL"))
    router = ModelRouter(ServedModel("waist", "waist", "m", tuple(SIX)), anywhere)
    core = StreamCore(SIX, "m", WorkerConfig(between_devices=None), router=router)
    data = _signal(600)
    out = []
    for i in range(0, len(data), 50):
        batch = SampleBatch("d1", seq=i, t0=i / 50, samples=data[i : i + 50], meta={"placement": "any"})
        core.ingest(encode_samples(batch), now=i / 50)
        while core.waiting:
            _, taken = core.take_batch()
            out += core.finish_batch(taken, np.full((len(taken), 4), 0.25), now=i / 50)
    assert out and not any(p.between for p in out)


def _run_devices(
    core: StreamCore, data: np.ndarray, devices: list[tuple[str, float]], chunk: int = 10
) -> list[Prediction]:
    """Feed every ``(device, start time)`` the same ``data`` in ``chunk``-sample
    messages, the devices' messages interleaved by time; all predictions."""
    messages = sorted(
        (t0 + i / 50, k, SampleBatch(d, seq=i, t0=t0 + i / 50, samples=data[i : i + chunk]))
        for k, (d, t0) in enumerate(devices)
        for i in range(0, len(data), chunk)
    )
    out = []
    for now, _, batch in messages:
        core.ingest(encode_samples(batch), now=now)
        while core.waiting:
            _, taken = core.take_batch()
            out += core.finish_batch(taken, np.full((len(taken), 6), 1 / 6), now=now)
    return out


def _with_between(predictions: list[Prediction]) -> set[str]:
    return {p.device for p in predictions if p.between}


MOVED = dict(between_motion=0.0, between_turn=0.0)  # random data: every between window moved


def test_a_device_past_the_budget_gets_no_between_updates():
    core = StreamCore(SIX, "m", WorkerConfig(between_devices=2, **MOVED))
    got = _run_devices(core, _signal(600), [("d1", 0.0), ("d2", 0.0), ("d3", 0.0)])
    assert {p.device for p in got} == {"d1", "d2", "d3"}
    assert _with_between(got) == {"d1", "d2"}
    assert core.stats(now=20.0).between == {
        "devices": 2,
        "limit": 2,
        "refused": 1,
        "waiting": 1,
        "taken_back": 0,
        "loop_busy": None,
    }


def test_a_place_freed_by_an_evicted_device_goes_to_the_next_new_device():
    core = StreamCore(SIX, "m", WorkerConfig(between_devices=1, idle_timeout=30.0, **MOVED))
    data = _signal(600)  # 12 s each
    first = _run_devices(core, data, [("d1", 0.0), ("d2", 20.0)])
    assert _with_between(first) == {"d1"}
    assert core.evict_idle(now=45.0) == ["d1"]  # heard last at 11.8 s; d2 at 31.8 s
    later = _run_devices(core, data, [("d3", 45.0)])
    assert _with_between(later) == {"d3"}
    assert core.stats(now=60.0).between == {
        "devices": 1,
        "limit": 1,
        "refused": 1,
        "waiting": 1,
        "taken_back": 0,
        "loop_busy": None,
    }


def test_a_loop_with_room_gives_every_new_run_a_place_past_the_budget():
    core = StreamCore(SIX, "m", WorkerConfig(between_devices=1, **MOVED))
    assert core.fit_between(busy=0.1) == []  # the edge measured a loop at 10 % of a core
    got = _run_devices(core, _signal(600), [("d1", 0.0), ("d2", 0.0), ("d3", 0.0)])
    assert _with_between(got) == {"d1", "d2", "d3"}


def test_a_busy_loop_takes_places_back_newest_first_down_to_the_budget():
    core = StreamCore(SIX, "m", WorkerConfig(between_devices=1, **MOVED))
    core.fit_between(busy=0.1)
    _run_devices(core, _signal(300), [("d1", 0.0), ("d2", 0.0), ("d3", 0.1)])
    assert core.fit_between(busy=0.95) == ["d3"]  # a quarter of the two above the budget, rounded up
    assert core.fit_between(busy=0.95) == ["d2"]
    assert core.fit_between(busy=0.95) == []  # d1 holds one of the budget's places
    later = _run_devices(core, _signal(600)[300:], [("d1", 6.0), ("d2", 6.0), ("d3", 6.1)])
    assert _with_between(later) == {"d1"}
    assert core.devices["d3"].windows.between is None  # it stopped cutting the offset grid
    assert core.stats(now=20.0).between["taken_back"] == 2


def test_between_the_marks_no_new_run_gets_a_place_and_none_is_taken():
    core = StreamCore(SIX, "m", WorkerConfig(between_devices=1, **MOVED))
    core.fit_between(busy=0.1)
    _run_devices(core, _signal(300), [("d1", 0.0), ("d2", 0.0)])
    assert core.fit_between(busy=0.6) == []
    got = _run_devices(core, _signal(600), [("d3", 7.0)])
    assert _with_between(got) == set()


def test_without_headroom_the_budget_is_exact():
    core = StreamCore(SIX, "m", WorkerConfig(between_devices=1, between_headroom=None, **MOVED))
    core.fit_between(busy=0.0)
    got = _run_devices(core, _signal(600), [("d1", 0.0), ("d2", 0.0)])
    assert _with_between(got) == {"d1"}


def test_a_device_moved_off_waist_mode_frees_its_place():
    from harstream.stream.core.model_routing import ModelRouter, ServedModel

    anywhere = ServedModel("any", "any", "m-any", ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "STILL"))
    core = StreamCore(
        SIX,
        "m",
        WorkerConfig(between_devices=1, placement_interval=0.0, **MOVED),
        router=ModelRouter(ServedModel("waist", "waist", "m", tuple(SIX)), anywhere),
    )
    core.ingest(encode_samples(SampleBatch("d1", seq=0, t0=0.0, samples=_signal(10))), now=0.0)
    assert set(core.between_places.holders) == {"d1"}
    moved = SampleBatch("d1", seq=10, t0=0.2, samples=_signal(10), meta={"placement": "any"})
    core.ingest(encode_samples(moved), now=0.2)
    assert core.devices["d1"].served.mode == "any" and not core.between_places.holders
    got = _run_devices(core, _signal(600), [("d2", 1.0)])
    assert _with_between(got) == {"d2"}


def test_devices_past_the_budget_cut_no_between_windows():
    """Above the budget a device costs what it did without between updates:
    its offset grid is never cut (nor filtered a second time)."""
    data = _signal(1200)
    alone = StreamCore(SIX, "m", WorkerConfig(between_devices=1))
    _run_devices(alone, data, [("d1", 0.0)])
    crowd = StreamCore(SIX, "m", WorkerConfig(between_devices=1))
    _run_devices(crowd, data, [(f"d{k}", 0.0) for k in range(1, 6)])
    cut = alone.totals["between"] + alone.totals["between_quiet"]
    assert cut > 0
    assert crowd.totals["between"] + crowd.totals["between_quiet"] == cut
    assert [name for name, d in crowd.devices.items() if d.windows.between is not None] == ["d1"]
    assert crowd.totals["windows"] == 5 * alone.totals["windows"]


def test_the_stats_line_shows_the_between_places():
    core = StreamCore(SIX, "m", WorkerConfig(between_devices=1))
    _run_devices(core, _signal(300), [("d1", 0.0), ("d2", 0.0)])
    assert "between=1/1 refused=1" in format_stats(core.stats(now=10.0))
    assert "between=" not in format_stats(StreamCore(SIX, "m", WorkerConfig(between_devices=0)).stats(now=1.0))


def test_between_round_trips_and_a_message_without_it_is_a_window():
    p = Prediction("d", 3, 1.0, 3.54, "A", [1.0], "A", [1.0], "m", 1.0, between=True)
    assert decode_prediction(encode_prediction(p)).between is True
    old = encode_prediction(Prediction("d", 3, 1.0, 3.54, "A", [1.0], "A", [1.0], "m", 1.0))
    body = old[1].replace(b',"between":false', b"")
    assert b"between" not in body
    assert decode_prediction([old[0], body]).between is False


def test_a_between_that_is_not_true_or_false_is_refused_as_a_bad_header():
    frames = encode_prediction(Prediction("d", 3, 1.0, 3.54, "A", [1.0], "A", [1.0], "m", 1.0, between=True))
    with pytest.raises(ProtocolError) as err:
        decode_prediction([frames[0], frames[1].replace(b'"between":true', b'"between":"yes"')])
    assert err.value.reason == "header" and "between" in err.value.detail


def test_a_published_session_between_labels_equal_the_offline_offset_grid_on_loopback(embedded, shipped_model):
    """A real worker on 127.0.0.1 with the shipped model, its decoder and
    the default config (between updates for the first devices); one held-out session replayed; the model's windows'
    labels and the between updates' labels equal the offline decoding of each grid."""
    from harstream.models.live_scoring import session_windows
    from harstream.stream.core.context import WindowContext

    artifact, runtime = shipped_model
    params = DecoderParams.from_json(artifact.metadata["decoder"])
    rec = embedded.of_subjects([9])[0]
    rec = type(rec)(rec.name, rec.subject, rec.samples[:6000], rec.labels[:6000])  # 2 minutes, ~90 windows
    samples = rec.samples.astype(np.float32)
    main = session_windows(samples, 10)
    offset = session_windows(samples, 10, between=True)
    stacks = WindowContext(artifact.context_steps).push(main)
    m0, g0, m1, g1 = window_motion(main), window_gravity(main), window_motion(offset), window_gravity(offset)
    # offline: the decoder over the model's windows; after window j, a peek at between window j when it moved
    decoder, offline = Decoder(params), {False: [], True: {}}
    config = WorkerConfig()
    for j, p in enumerate(runtime.predict(stacks)):
        offline[False].append(decoder.update([round(float(v), 6) for v in p], float(m0[j]), list(g0[j]))[0])
        if j >= len(offset):
            continue
        cos = float(g0[j] @ g1[j]) / float(np.linalg.norm(g0[j]) * np.linalg.norm(g1[j]))
        turn = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        if abs(m1[j] - m0[j]) > config.between_motion or turn > config.between_turn:
            rows = [offset[j]] + [main[max(j - s + 1, 0)] for s in artifact.context_steps]
            q = runtime.predict(np.stack(rows)[None])[0]
            offline[True][j] = decoder.peek([round(float(v), 6) for v in q], float(m1[j]))[0]
    assert offline[True], "the session has no between window that moved"

    config = WorkerConfig(
        context_steps=artifact.context_steps,
        display=display_for(artifact.classes, artifact.metadata["decoder"]),
    )  # the default: between updates for the first 256 waist devices
    with worker_thread(runtime, artifact.classes, artifact.model_id, config=config, stats_every=0.2) as w:
        got = replayed_predictions(w, rec, len(offline[False]) + len(offline[True]))
    windows = sorted((p for p in got if not p.between), key=lambda p: p.window)
    assert [p.smoothed for p in windows] == offline[False]
    assert {p.window: p.smoothed for p in got if p.between} == offline[True]


def _stop(procs: list, sub, ctx) -> None:
    """End the command processes a test started and its subscriber."""
    for p in procs:
        p.terminate()
        p.wait(20)
    sub.close(0)
    ctx.term()


@pytest.mark.parametrize(
    "flag", ["--between", "--no-between", "--between-devices=0", "--between-devices=256", "--stats-every=60"]
)
def test_the_worker_command_publishes_between_updates_unless_turned_off(ipc_address, flag):
    """A real `harstream worker` process and a real `harstream simulate`: by
    default (--stats-every alone), with --between or a place for the device,
    some predictions come marked between; never with --no-between or
    --between-devices=0."""
    import os
    import subprocess
    import sys

    import zmq

    from harstream.stream.core.protocol import decode_output

    name = flag.strip("-").replace("=", "")
    env = {**os.environ, "HARSTREAM_INGEST": ipc_address(f"in{name}"), "HARSTREAM_OUTPUT": ipc_address(f"out{name}")}
    exe = [sys.executable, "-m", "harstream"]
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"p/")
    sub.connect(env["HARSTREAM_OUTPUT"])
    procs = [
        subprocess.Popen(
            exe + ["worker", "--runtime", "none", "--single-model", flag, "--stats-every", "60"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            exe + ["simulate", "--subjects", "2", "--speed", "0", "--loop", "--duration", "120"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    got: list[Prediction] = []
    try:
        while len(got) < 400 and sub.poll(60_000):
            msg = decode_output(sub.recv_multipart())
            if isinstance(msg, Prediction):
                got.append(msg)
    finally:
        _stop(procs, sub, ctx)
    windows = [p for p in got if not p.between]
    assert len(windows) >= 100
    if flag not in ("--no-between", "--between-devices=0"):
        assert any(p.between for p in got)
    else:
        assert not any(p.between for p in got)


def test_an_idle_worker_gives_every_device_a_place_past_its_budget(ipc_address):
    """A real `harstream worker --between-devices 1` with room on its loop:
    three replayed devices all get between updates (the exact budget without
    headroom: test_without_headroom_the_budget_is_exact)."""
    import json
    import os
    import subprocess
    import sys
    import time

    import zmq

    from harstream.stream.core.protocol import decode_output

    env = {**os.environ, "HARSTREAM_INGEST": ipc_address("in"), "HARSTREAM_OUTPUT": ipc_address("out")}
    exe = [sys.executable, "-m", "harstream"]
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    for topic in (b"p/", b"stats/"):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(env["HARSTREAM_OUTPUT"])
    worker = ["worker", "--runtime", "none", "--single-model", "--between-devices", "1", "--stats-every", "0.5"]
    procs = [subprocess.Popen(exe + worker, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    between: set[str] = set()
    devices: set[str] = set()
    try:
        measured = False  # the worker has measured its loop once: places follow its load from then on
        deadline = time.monotonic() + 60
        while not measured and time.monotonic() < deadline and sub.poll(10_000):
            frames = sub.recv_multipart()
            measured = frames[0].startswith(b"stats/") and json.loads(frames[1])["between"]["loop_busy"] is not None
        assert measured
        simulate = ["simulate", "--subjects", "2", "--devices", "3", "--speed", "4", "--duration", "60"]
        procs.append(subprocess.Popen(exe + simulate, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(between) < 3 and sub.poll(10_000):
            msg = decode_output(sub.recv_multipart())
            if isinstance(msg, Prediction):
                devices.add(msg.device)
                if msg.between:
                    between.add(msg.device)
    finally:
        _stop(procs, sub, ctx)
    assert len(devices) == 3 and between == devices
