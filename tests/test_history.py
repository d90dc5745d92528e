"""The final history: fixed-lag pieces of time, never rewritten; in the worker core
and on a real ZeroMQ bus read by `harstream tail --final --json`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
from conftest import worker_thread
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
from harstream.stream.core.decoder import DecoderParams
from harstream.stream.core.history import History, HistorySettings, Piece, duration_lattice, merge_pieces
from harstream.stream.core.protocol import SampleBatch, encode_samples
from harstream.stream.core.today import DayTotals, day_of
from harstream.stream.core.worker import StreamCore, WorkerConfig

PARAMS = DecoderParams.uniform(["A", "B"], stay=0.9)
HOP, LENGTH = 64 / 50, 127 / 50


def window(j: int, t0: float = 1000.0) -> tuple[float, float]:
    return t0 + j * HOP, t0 + j * HOP + LENGTH


def push_all(h: History, probs: list[list[float]], order: list[int] | None = None) -> list[Piece]:
    out: list[Piece] = []
    for j in order if order is not None else range(len(probs)):
        out += h.push(j, *window(j), probs[j])
    return out


def finals(pieces: list[Piece]) -> list[Piece]:
    return [p for p in pieces if p.final]


def assert_tiles(pieces: list[Piece]) -> None:
    """Final pieces in time order, each starting where the one before ended."""
    for a, b in zip(pieces, pieces[1:]):
        assert b.start == pytest.approx(a.end, abs=1e-6), (a, b)
        assert b.start < b.end


@pytest.mark.parametrize(
    "knobs", [{}, {"confirm": 2}, {"min_windows": 5, "carry": "hard"}, {"min_windows": 8, "confirm": 1}]
)
def test_a_long_bout_is_published_in_final_pieces_as_it_settles(knobs):
    h = History(PARAMS, HistorySettings(lag=2, **knobs))
    probs = [[0.9, 0.1]] * 20
    got = []
    for j in range(20):
        new = finals(h.push(j, *window(j), probs[j]))
        # window j - 2 becomes final when window j arrives: 2.56 s after it ended
        assert [p.end for p in new] == ([] if j < 2 else [pytest.approx(window(j - 2)[0] + 96 / 50)])
        got += new
    got += h.settle()
    assert_tiles(got)
    assert got[0].start == 1000.0 and got[-1].end == pytest.approx(window(19)[1] + 1 / 50)
    assert merge_pieces(got) == [Piece(1000.0, got[-1].end, "A", True)]


def test_provisional_pieces_cover_what_is_not_final_yet_and_a_settled_device_has_none():
    h = History(PARAMS, HistorySettings(lag=2))
    out = push_all(h, [[0.9, 0.1]] * 5)
    last = [p for p in out if not p.final]
    assert last[-1].end == pytest.approx(window(4)[1] + 1 / 50)
    assert all(not p.final for p in h.push(5, *window(5), [0.9, 0.1])[1:])
    settled = h.settle()
    assert settled and all(p.final for p in settled) and h.pending == 0


def test_a_change_is_found_with_look_ahead_and_one_odd_window_is_smoothed_away():
    h = History(DecoderParams.uniform(["A", "B"], stay=0.98), HistorySettings(lag=2, stay=0.0))
    probs = [[0.9, 0.1]] * 8 + [[0.3, 0.7]] + [[0.9, 0.1]] * 6 + [[0.1, 0.9]] * 8
    merged = merge_pieces(finals(push_all(h, probs)) + h.settle())
    assert [p.label for p in merged] == ["A", "B"]
    assert merged[1].start == pytest.approx(window(15)[0] + 32 / 50, abs=HOP)


STRONG = {"A": [0.98, 0.01, 0.01], "B": [0.01, 0.98, 0.01], "C": [0.01, 0.01, 0.98]}
PARAMS3 = DecoderParams.uniform(["A", "B", "C"], stay=0.9)


def history_of(settings: HistorySettings, labels: str) -> list[tuple[str, int]]:
    """The merged final history of windows whose strong evidence spells ``labels``: (label, windows)."""
    h = History(PARAMS3, settings)
    out = finals(push_all(h, [STRONG[c] for c in labels])) + h.settle()
    return [(p.label, round((p.end - p.start) / HOP)) for p in merge_pieces(out)]


def test_without_confirmation_a_two_window_bout_is_shown():
    """The control for the next test: the plain lattice shows the short bout."""
    settings = HistorySettings(lag=2, stay=0.0, power=1.0, confirm=0)
    assert [label for label, _ in history_of(settings, "AAAAAABBAAAAAA")] == ["A", "B", "A"]


def test_a_bout_shorter_than_the_look_ahead_is_merged_into_the_bout_before():
    settings = HistorySettings(lag=2, stay=0.0, power=1.0, confirm=2)
    assert [label for label, _ in history_of(settings, "AAAAAABBAAAAAA")] == ["A"]
    assert [label for label, _ in history_of(settings, "AAAAAABBCCCCCC")] == ["A", "C"]  # one change, not two


def test_a_change_the_look_ahead_confirms_is_made_final_where_it_happened():
    plain = history_of(HistorySettings(lag=2, stay=0.0, power=1.0, confirm=0), "AAAAAABBBCCCCC")
    confirmed = history_of(HistorySettings(lag=2, stay=0.0, power=1.0, confirm=2), "AAAAAABBBCCCCC")
    assert confirmed == plain and [label for label, _ in plain] == ["A", "B", "C"]


def test_a_confirmed_change_is_final_as_soon_as_without_confirmation():
    """Confirmation looks only at windows already there: window j is final when window j + lag arrives."""
    h = History(PARAMS3, HistorySettings(lag=2, confirm=2, min_windows=3))
    for j, c in enumerate("AAAABBBBBB"):
        new = finals(h.push(j, *window(j), STRONG[c]))
        assert [p.end for p in new] == ([] if j < 2 else [pytest.approx(window(j - 2)[0] + 96 / 50)])


def test_the_duration_lattice_keeps_a_bout_at_least_its_minimum():
    matrix, initial, base = duration_lattice(PARAMS3.matrix, PARAMS3.initial, [1, 3, 2])
    assert np.allclose(matrix.sum(axis=1), 1.0) and initial.sum() == pytest.approx(1.0)
    for state, minimum in ((1, 3), (2, 2)):
        entry = np.flatnonzero(base == state)[0]
        here = np.eye(len(base))[entry]
        for _ in range(minimum - 1):  # the steps after entering: still in the bout, surely
            here = here @ matrix
            assert here[base == state].sum() == pytest.approx(1.0)
        assert (here @ matrix)[base == state].sum() < 1.0  # then it may end


def test_a_lattice_is_forgotten_with_the_parameters_it_was_built_for():
    import gc

    from harstream.stream.core.history import _LATTICES

    params = DecoderParams.uniform(["A", "B", "C"], stay=0.8)
    History(params)
    held = len(_LATTICES)
    del params
    gc.collect()
    assert len(_LATTICES) == held - 1


@pytest.mark.parametrize("knobs", [{"confirm": 3}, {"min_windows": 0}, {"min_windows": 9}, {"confirm": -1}])
def test_impossible_duration_knobs_are_refused(knobs):
    with pytest.raises(ValueError, match="history"):
        HistorySettings(**knobs)


def test_duplicate_and_late_windows_are_refused_and_change_nothing():
    h = History(PARAMS, HistorySettings(lag=1))
    push_all(h, [[0.9, 0.1]] * 4)
    until = h.final_until
    for j in (3, 1, 0):
        assert h.push(j, *window(j), [0.1, 0.9]) == [] and h.refused.startswith(f"window {j} is not after")
    assert h.final_until == until


@pytest.mark.parametrize(
    "times, reason",
    [((5.0, 5.0), "not a window"), ((float("nan"), 5.0), "not a window"), ((0.0, 1e6), "not a window")],
)
def test_a_window_with_impossible_times_is_refused(times, reason):
    h = History(PARAMS)
    assert h.push(0, *times, [0.5, 0.5]) == [] and reason in h.refused


def test_malformed_probabilities_are_refused():
    h = History(PARAMS)
    assert h.push(0, *window(0), [0.5, float("nan")]) == [] and "NaN" in h.refused


def test_a_gap_in_the_windows_settles_the_run_before_it():
    h = History(PARAMS, HistorySettings(lag=2))
    before = finals(push_all(h, [[0.9, 0.1]] * 5))
    after = finals(h.push(9, *window(9), [0.1, 0.9]))  # windows 5..8 never came
    assert after and after[-1].end == pytest.approx(window(4)[1] + 1 / 50)  # the run's tail is final
    assert_tiles(before + after)


def test_a_window_after_a_settle_never_covers_what_is_final():
    h = History(PARAMS, HistorySettings(lag=2))
    out = finals(push_all(h, [[0.9, 0.1]] * 5)) + h.settle()
    out += finals(push_all(h, [[0.1, 0.9]] * 10, order=list(range(5, 10))))
    out += h.settle()
    assert_tiles(out)


@settings(max_examples=150, deadline=None)
@given(
    order=st.lists(st.integers(0, 30), min_size=1, max_size=80),
    shift=st.lists(st.floats(-3.0, 3.0), min_size=80, max_size=80),
    settle_at=st.sets(st.integers(0, 79), max_size=5),
    lag=st.integers(0, 2),
    min_windows=st.sampled_from([1, 3, 8]),
    confirm=st.integers(0, 2),
    carry=st.sampled_from(["soft", "hard"]),
)
def test_no_order_of_windows_makes_two_final_pieces_for_one_stretch(
    order, shift, settle_at, lag, min_windows, confirm, carry
):
    """Duplicates, windows out of order, times that jump back or forth,
    settles anywhere: final pieces still never overlap and run forward."""
    knobs = HistorySettings(lag=lag, min_windows=min_windows, confirm=confirm, carry=carry)
    h = History(DecoderParams.uniform(ACTIVITIES[:3], stay=0.8), knobs)
    rng = np.random.default_rng(len(order))
    out: list[Piece] = []
    for k, j in enumerate(order):
        t_start = 1000.0 + j * HOP + shift[k]
        out += finals(h.push(j, t_start, t_start + LENGTH, rng.dirichlet(np.ones(3)).round(6).tolist()))
        if k in settle_at:
            out += h.settle()
    out += h.settle()
    assert_one_piece_per_stretch(out)


def assert_one_piece_per_stretch(pieces: list[Piece]) -> None:
    """Final pieces never overlap (one piece for one stretch of time) and none is empty."""
    for a, b in zip(pieces, pieces[1:]):
        assert b.start >= a.end - 1e-9, (a, b)
    assert all(p.start < p.end for p in pieces)


def test_day_totals_count_final_minutes_and_split_at_midnight():
    days = DayTotals()
    midnight = 20_000 * 86_400.0
    days.add("d", midnight - 60.0, midnight + 120.0, "SITTING")  # one minute yesterday, two today
    days.add("d", midnight + 120.0, midnight + 180.0, "SIT_TO_STAND")  # a transition counts nothing
    days.add("d", midnight + 180.0, midnight + 240.0, "WALKING_UPSTAIRS")
    summary = days.summary("d", ACTIVITIES)
    assert summary["minutes"] == {"walking": 0.0, "stairs": 1.0, "sitting": 2.0, "standing": 0.0, "lying": 0.0}
    assert days.summary("d", PLACEMENT_FREE)["minutes"] == {"moving": 1.0, "still": 2.0}


@pytest.mark.parametrize("days_long", [0.5, 1.0, 2.0, 40_000.0])
def test_a_piece_spanning_days_counts_only_its_last_days_part(days_long):
    """However many midnights a piece spans (a device's clock may jump years), the day kept is the
    one it ends in, with that day's part of it; a piece ending at midnight is its day before's."""
    days = DayTotals()
    end = 100_000 * 86_400.0 + 3_600.0  # 01:00
    days.add("d", end - days_long * 86_400.0, end, "SITTING")
    part = min(days_long * 86_400.0, 3_600.0)
    assert days.seconds("d") == (day_of(end - 1.0), {"sitting": part})
    days.add("e", 0.0, 86_400.0 * 3, "SITTING")
    assert days.seconds("e") == (day_of(86_400.0 * 3 - 1.0), {"sitting": 86_400.0})


# ---------------------------------------------------------------- in the worker core


def samples(n: int, amplitude: float) -> np.ndarray:
    t = np.arange(n)[:, None] / 50.0
    return (np.sin(2 * np.pi * 1.5 * t + np.arange(6)) * amplitude).astype(np.float32)


def feed(
    core: StreamCore, device: str, first: int, n: int, now: float, t0: float = 1000.0, amplitude: float = 0.01
) -> None:
    """Samples of a device kept still (as a sitting person keeps it), or moved at ``amplitude`` g."""
    data = samples(first + n, amplitude)
    for seq in range(first, first + n, 10):
        core.ingest(encode_samples(SampleBatch(device, seq, t0 + seq / 50, data[seq : seq + 10])), now)


def run_model(core: StreamCore, now: float, klass: int = 3) -> None:
    """The model's answer for every window: class ``klass`` (SITTING unless told), 90 % sure."""
    while core.pending:
        x, taken = core.take_batch()
        core.finish_batch(taken, np.tile(np.eye(6)[klass] * 0.9 + 0.1 / 6, (len(x), 1)), now=now)


def final_pieces(core: StreamCore) -> list[dict]:
    return [p for h in core.take_history() for p in h.pieces if p["final"]]


def test_the_worker_publishes_final_pieces_and_the_days_minutes():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(max_batch=100))
    feed(core, "d", 0, 50 * 30, now=0.0)  # 30 s of samples
    run_model(core, now=0.1)
    updates = core.take_history()
    pieces = [p for h in updates for p in h.pieces if p["final"]]
    assert {p["label"] for p in pieces} == {"SITTING"}
    assert pieces[0]["start"] == 1000.0
    assert_tiles([Piece(**p) for p in pieces])
    assert updates[-1].today["minutes"]["sitting"] == pytest.approx((pieces[-1]["end"] - 1000.0) / 60, abs=0.01)


def test_the_worker_gives_the_history_each_windows_motion():
    """The model says sitting throughout; the device moves all along: the history shows it handled."""
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(max_batch=100))
    feed(core, "d", 0, 50 * 30, now=0.0, amplitude=0.3)
    run_model(core, now=0.1)
    assert {p["label"] for p in final_pieces(core)} == {"unknown"}


def test_the_worker_gives_the_history_each_windows_steps():
    """The model says walking throughout: a device shaken at random by hand is handled (nothing was
    shown before it: unknown), one that bounces at a walk's steady 1.5 Hz is walking."""
    config = WorkerConfig(max_batch=100, history=HistorySettings(handled_steps=0.2))
    core = StreamCore(ACTIVITIES, "m", config)
    feed(core, "walked", 0, 50 * 30, now=0.0, amplitude=0.3)
    shaken = np.random.default_rng(0).normal(0, 0.3, (50 * 30, 6)).astype(np.float32)
    for seq in range(0, len(shaken), 10):
        core.ingest(encode_samples(SampleBatch("shaken", seq, 1000.0 + seq / 50, shaken[seq : seq + 10])), 0.0)
    run_model(core, now=0.1, klass=0)
    updates = core.take_history()
    labels = {
        d: {p["label"] for h in updates if h.device == d for p in h.pieces if p["final"]} for d in ("walked", "shaken")
    }
    assert labels == {"walked": {"WALKING"}, "shaken": {"unknown"}}


def test_a_quiet_device_gets_its_last_stretch_settled_and_an_evicted_one_too():
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(history_quiet=1.5, idle_timeout=30.0))
    feed(core, "d", 0, 50 * 10, now=0.0)
    run_model(core, now=0.1)
    before = final_pieces(core)
    core.evict_idle(now=1.0)
    assert final_pieces(core) == []  # not quiet long enough
    core.evict_idle(now=2.0)
    tail = final_pieces(core)
    assert tail and tail[-1]["end"] == pytest.approx(1000.0 + (64 * 5 + 128) / 50)  # the last window's end
    assert_tiles([Piece(**p) for p in before + tail])
    assert "d" in core.devices and core.devices["d"].history.pending == 0


def test_a_restart_settles_the_history_and_the_new_stream_never_rewrites_it():
    core = StreamCore(ACTIVITIES, "m")
    feed(core, "d", 0, 50 * 10, now=0.0)
    run_model(core, now=0.1)
    first = final_pieces(core)
    feed(core, "d", 0, 50 * 10, now=0.2, t0=1005.0)  # the device started over, its times overlap
    run_model(core, now=0.3)
    second = final_pieces(core) + final_pieces(core)
    out = first + second
    for a, b in zip(out, out[1:]):
        assert b["start"] >= a["end"] - 1e-9
    assert core.totals["restarts"] == 1 and not core.drops["history"]  # the new run's windows are taken
    assert out[-1]["end"] > 1000.0 + 500 / 50  # final pieces of the new stream, after the old one's


# ---------------------------------------------------------------- on a real bus


def final_pieces_through_tail(worker, schedule, count: int) -> tuple[list[dict], str]:
    """``schedule`` replayed into ``worker`` as fast as it takes it (bus times are the samples' own,
    as at 50 Hz wall clock), read by `harstream tail --final --json --count COUNT` once its
    subscription has reached the worker (ZeroMQ keeps nothing for late joiners: the worker's stats
    count two prefixes, this reader's stats/ and the tail's h/); its lines as JSON, and its stderr."""
    import zmq

    from harstream.simulator.replay import replay
    from harstream.stream.core.protocol import decode_output

    tail = None
    ctx = zmq.Context()
    stats = ctx.socket(zmq.SUB)
    stats.setsockopt(zmq.SUBSCRIBE, b"stats/")
    stats.connect(worker.output)
    try:
        tail = subprocess.Popen(
            [sys.executable, "-m", "harstream", "tail", "--final", "--json", "--count", str(count)]
            + ["--subscribe", worker.output],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert tail.stderr is not None and "listening" in tail.stderr.readline()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and stats.poll(1000):
            if (decode_output(stats.recv_multipart()).get("subscriptions") or {}).get("prefixes", 0) >= 2:
                break
        else:
            raise AssertionError("the tail's subscription never reached the worker")
        replay(schedule, publish=worker.ingest, speed=0, stream_clock=True, wait_subscriptions=1, printer=None)
        out, err = tail.communicate(timeout=60)
    finally:
        if tail is not None and tail.poll() is None:
            tail.kill()
        stats.close(0)
        ctx.term()
    return [json.loads(line) for line in out.splitlines()], err


def test_tail_final_json_prints_the_published_final_pieces_on_loopback(embedded, shipped_model):
    """A real worker with the shipped model on 127.0.0.1, a held-out session
    replayed into it, and `harstream tail --final --json` as the reader."""
    from harstream.simulator.replay import ReplaySchedule, devices_for
    from harstream.stream.core.decoder import display_for

    artifact, runtime = shipped_model
    rec = embedded.of_subjects([9])[0]
    rec = type(rec)(rec.name, rec.subject, rec.samples[:600], rec.labels[:600])  # 12 s, 8 windows
    config = WorkerConfig(
        context_steps=artifact.context_steps, display=display_for(artifact.classes, artifact.metadata["decoder"])
    )
    with worker_thread(runtime, artifact.classes, artifact.model_id, config=config, stats_every=0.2) as w:
        lines, err = final_pieces_through_tail(w, ReplaySchedule(devices_for([rec]), chunk=10), count=6)
    assert len(lines) == 6, err
    assert all(set(p) == {"device", "start", "end", "label"} and p["device"] == rec.name for p in lines)
    assert all(p["label"] in ACTIVITIES or "_TO_" in p["label"] for p in lines)
    for a, b in zip(lines, lines[1:]):
        assert b["start"] == pytest.approx(a["end"], abs=1e-6)


# ---------------------------------------------------------------- the device handled

POSE = DecoderParams.uniform(["WALKING", "SITTING", "STANDING", "LAYING"], stay=0.9)
READ = {
    "W": [0.94, 0.02, 0.02, 0.02],
    "S": [0.02, 0.94, 0.02, 0.02],
    "T": [0.02, 0.02, 0.94, 0.02],
    "L": [0.02, 0.02, 0.02, 0.94],
}
HANDLED = HistorySettings(lag=2, min_windows=3, confirm=2, handled_motion=0.2, handled_turn=0.0, handled_stay=0.6)
UPRIGHT, FLAT, TILTED = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.7, 0.0, 0.7]


def shown(settings: HistorySettings, reads: str, motion: list | None = None, gravity: list | None = None) -> list[str]:
    """The merged final history's labels of windows read as ``reads``, each with its motion and gravity."""
    h = History(POSE, settings)
    out: list[Piece] = []
    for j, c in enumerate(reads):
        m = None if motion is None else motion[j]
        g = None if gravity is None else gravity[j]
        out += finals(h.push(j, *window(j), READ[c], m, g))
    return [p.label for p in merge_pieces(out + h.settle())]


STILL, MOVING = 0.01, 0.6
#: standing, the device picked up and put down flat (read as lying while it moves), standing again
PUT_DOWN = "T" * 10 + "L" * 4 + "T" * 10
PUT_DOWN_MOTION = [STILL] * 10 + [MOVING] * 4 + [STILL] * 10


def test_without_the_handled_state_a_device_moved_flat_shows_as_lying():
    """The control for the next test."""
    plain = HistorySettings(lag=2, min_windows=3, confirm=2, handled_motion=0.0, handled_turn=0.0)
    assert shown(plain, PUT_DOWN, PUT_DOWN_MOTION) == ["STANDING", "LAYING", "STANDING"]


def test_a_still_posture_read_while_the_device_moves_is_held_in_the_bout_before():
    assert shown(HANDLED, PUT_DOWN, PUT_DOWN_MOTION) == ["STANDING"]


def test_a_still_posture_read_while_still_is_shown():
    assert shown(HANDLED, PUT_DOWN, [STILL] * len(PUT_DOWN)) == ["STANDING", "LAYING", "STANDING"]


def test_without_a_motion_the_handled_state_takes_nothing():
    assert shown(HANDLED, PUT_DOWN) == ["STANDING", "LAYING", "STANDING"]
    assert shown(HANDLED, PUT_DOWN, [float("nan")] * len(PUT_DOWN)) == ["STANDING", "LAYING", "STANDING"]


def test_a_device_handled_before_anything_was_shown_is_unknown_then_the_first_activity():
    reads, motion = "L" * 4 + "T" * 10, [MOVING] * 4 + [STILL] * 10
    assert shown(HANDLED, reads, motion) == ["unknown", "STANDING"]


def test_walking_is_walking_however_much_it_moves():
    assert shown(HANDLED, "T" * 8 + "W" * 12, [STILL] * 8 + [MOVING] * 12) == ["STANDING", "WALKING"]


def test_walking_read_while_the_device_turns_over_is_the_device_handled():
    turning = HistorySettings(lag=2, min_windows=3, confirm=2, handled_motion=0.2, handled_turn=30.0)
    reads = "T" * 10 + "W" * 4 + "T" * 10
    flips = [UPRIGHT] * 10 + [FLAT, UPRIGHT, FLAT, UPRIGHT] + [UPRIGHT] * 10
    steady = [UPRIGHT] * len(reads)
    motion = [STILL] * 10 + [MOVING] * 4 + [STILL] * 10
    assert shown(turning, reads, motion, steady) == ["STANDING", "WALKING", "STANDING"]  # the control
    assert shown(turning, reads, motion, flips) == ["STANDING"]


def test_the_handled_state_never_delays_finality():
    h = History(POSE, HANDLED)
    for j, c in enumerate(PUT_DOWN):
        new = finals(h.push(j, *window(j), READ[c], PUT_DOWN_MOTION[j], TILTED))
        assert [p.end for p in new] == ([] if j < 2 else [pytest.approx(window(j - 2)[0] + 96 / 50)])


STEPPING, NO_STEPS = 0.8, 0.0  # a walk's step regularity; a hand's


def shown_with_steps(settings: HistorySettings, reads: str, regularity: list[float | None]) -> list[str]:
    h = History(POSE, settings)
    out: list[Piece] = []
    for j, c in enumerate(reads):
        out += finals(h.push(j, *window(j), READ[c], STILL if c != "W" else MOVING, UPRIGHT, None, regularity[j]))
    return [p.label for p in merge_pieces(out + h.settle())]


def test_walking_read_without_steps_is_the_device_handled():
    by_steps = replace(HANDLED, handled_steps=0.2)
    reads = "T" * 10 + "W" * 4 + "T" * 10
    assert shown_with_steps(by_steps, reads, [STEPPING] * 24) == ["STANDING", "WALKING", "STANDING"]  # a walk
    assert shown_with_steps(by_steps, reads, [NO_STEPS] * 24) == ["STANDING"]  # a phone moved about by hand
    off = replace(HANDLED, handled_steps=0.0)
    assert shown_with_steps(off, reads, [NO_STEPS] * 24) == ["STANDING", "WALKING", "STANDING"]  # cue off
    assert shown_with_steps(by_steps, reads, [None] * 24) == ["STANDING", "WALKING", "STANDING"]  # not known


@pytest.mark.parametrize(
    "knobs",
    [
        {"handled_motion": -0.1},
        {"handled_motion": float("nan")},
        {"handled_stay": 1.0},
        {"handled_turn": 181.0},
        {"handled_steps": 1.5},
    ],
)
def test_impossible_handled_knobs_are_refused(knobs):
    with pytest.raises(ValueError, match="history handled"):
        HistorySettings(**knobs)


@settings(max_examples=150, deadline=None)
@given(
    order=st.lists(st.integers(0, 30), min_size=1, max_size=80),
    motion=st.lists(st.one_of(st.none(), st.floats(0.0, 2.0), st.just(float("nan"))), min_size=80, max_size=80),
    settle_at=st.sets(st.integers(0, 79), max_size=5),
    stay=st.sampled_from([0.0, 0.6, 0.9]),
)
def test_with_the_handled_state_no_order_of_windows_makes_two_final_pieces_for_one_stretch(
    order, motion, settle_at, stay
):
    h = History(POSE, HistorySettings(handled_motion=0.2, handled_turn=30.0, handled_stay=stay))
    rng = np.random.default_rng(len(order))
    out: list[Piece] = []
    for k, j in enumerate(order):
        gravity = rng.normal(size=3).tolist() if k % 3 else None
        out += finals(h.push(j, *window(j), rng.dirichlet(np.ones(4)).round(6).tolist(), motion[k], gravity))
        if k in settle_at:
            out += h.settle()
    out += h.settle()
    assert_one_piece_per_stretch(out)


@pytest.mark.parametrize("gravity", ["abc", [1.0, 2.0], [float("nan"), 0.0, 0.0], [0.0, 0.0, 0.0], [None, 1, 2]])
def test_a_malformed_gravity_counts_as_not_known_and_the_window_is_taken(gravity):
    h = History(POSE, HistorySettings(handled_motion=0.2, handled_turn=30.0))
    h.push(0, *window(0), READ["W"], STILL, UPRIGHT)
    assert h.push(1, *window(1), READ["W"], STILL, gravity) and h.refused is None


# ---------------------------------------------------------------- the device set down

SET_DOWN_ON = HistorySettings(
    lag=2, min_windows=3, confirm=2, set_down_motion=0.0065, set_down_rotation=0.0045, set_down_windows=3
)
QUIET, STIRRING = (0.004, 0.003), (0.008, 0.009)  # (motion g, rotation rad/s): a phone's noise; a person lying


def shown_at(settings: HistorySettings, reads: str, cues: list[tuple[float, float] | None]) -> list[str]:
    """The merged final history's labels of windows read as ``reads``, each with its (motion, rotation)."""
    h = History(POSE, settings)
    out: list[Piece] = []
    for j, c in enumerate(reads):
        m, r = cues[j] if cues[j] is not None else (None, None)
        out += finals(h.push(j, *window(j), READ[c], m, FLAT, r))
    return [p.label for p in merge_pieces(out + h.settle())]


def test_a_device_lying_at_its_sensors_noise_is_set_down_and_a_person_lying_is_lying():
    assert shown_at(SET_DOWN_ON, "L" * 12, [QUIET] * 12) == ["SET_DOWN"]
    assert shown_at(SET_DOWN_ON, "L" * 12, [STIRRING] * 12) == ["LAYING"]


def test_a_person_lying_then_the_phone_put_on_the_table_is_lying_then_set_down():
    assert shown_at(SET_DOWN_ON, "L" * 20, [STIRRING] * 8 + [QUIET] * 12) == ["LAYING", "SET_DOWN"]


def test_fewer_quiet_windows_in_a_row_than_the_setting_are_no_set_down():
    cues = [STIRRING] * 8 + [QUIET] * 2 + [STIRRING] * 8
    assert shown_at(SET_DOWN_ON, "L" * 18, cues) == ["LAYING"]
    assert shown_at(replace(SET_DOWN_ON, set_down_windows=2), "L" * 18, cues) == ["LAYING", "SET_DOWN", "LAYING"]


def test_without_a_rotation_or_with_the_state_off_nothing_is_set_down():
    assert shown_at(SET_DOWN_ON, "L" * 12, [None] * 12) == ["LAYING"]  # no gyroscope
    assert shown_at(replace(SET_DOWN_ON, set_down_rotation=0.0), "L" * 12, [QUIET] * 12) == ["LAYING"]


def test_a_phone_picked_up_from_the_table_is_handled_not_worn_until_an_activity_is_read():
    handled = replace(SET_DOWN_ON, handled_motion=0.2, handled_turn=0.0, handled_stay=0.6)
    cues = [QUIET] * 10 + [(0.6, 1.0)] * 3 + [(0.01, 0.02)] * 10
    assert shown_at(handled, "L" * 13 + "T" * 10, cues) == ["SET_DOWN", "unknown", "STANDING"]


def test_the_set_down_state_never_delays_finality():
    """Window j is final when window j + 2 arrives, set down or not, from the run's first window on."""
    h = History(POSE, SET_DOWN_ON)
    cues = [STIRRING] * 6 + [QUIET] * 10
    for j, cue in enumerate(cues):
        new = finals(h.push(j, *window(j), READ["L"], cue[0], FLAT, cue[1]))
        assert [p.end for p in new] == ([] if j < 2 else [pytest.approx(window(j - 2)[0] + 96 / 50)])
        assert [p.label for p in new] == ([] if j < 2 else ["SET_DOWN" if j - 2 >= 6 else "LAYING"])


@pytest.mark.parametrize(
    "knobs", [{"set_down_motion": -0.1}, {"set_down_rotation": float("nan")}, {"set_down_windows": 0}]
)
def test_impossible_set_down_knobs_are_refused(knobs):
    with pytest.raises(ValueError, match="history set_down"):
        HistorySettings(**knobs)


@settings(max_examples=150, deadline=None)
@given(
    order=st.lists(st.integers(0, 30), min_size=1, max_size=80),
    quiet=st.lists(st.booleans(), min_size=31, max_size=31),
    settle_at=st.sets(st.integers(0, 79), max_size=5),
    need=st.integers(1, 4),
)
def test_with_the_set_down_state_no_order_of_windows_rewrites_a_final_piece(order, quiet, settle_at, need):
    h = History(POSE, replace(SET_DOWN_ON, set_down_windows=need))
    rng = np.random.default_rng(len(order))
    out: list[Piece] = []
    for k, j in enumerate(order):
        m, r = QUIET if quiet[j] else STIRRING
        out += finals(h.push(j, *window(j), rng.dirichlet(np.ones(4)).round(6).tolist(), m, FLAT, r))
        if k in settle_at:
            out += h.settle()
    out += h.settle()
    assert_one_piece_per_stretch(out)


def lying_samples(n: int, breathing: bool, seed: int = 0, gyro: bool = True) -> np.ndarray:
    """A device lying flat with a phone's sensor noise (0.002 g, 0.002 rad/s per axis); with
    ``breathing``, worn by a person lying: the pelvis rocking 0.5 degrees at 0.25 Hz, a heartbeat."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 50.0
    acc, turn = np.zeros((n, 3)), np.zeros((n, 3))
    acc[:, 2] = 1.0
    if breathing:
        tilt = np.radians(0.5) * np.sin(2 * np.pi * 0.25 * t)
        turn[:, 0] = np.radians(0.5) * 2 * np.pi * 0.25 * np.cos(2 * np.pi * 0.25 * t)
        acc[:, 1], acc[:, 2] = np.sin(tilt), np.cos(tilt) + 0.004 * np.sin(2 * np.pi * 1.2 * t)
    acc += rng.normal(0, 0.002, (n, 3))
    turn = turn + rng.normal(0, 0.002, (n, 3)) if gyro else np.zeros((n, 3))
    return np.hstack([acc, turn]).astype(np.float32)


#: The worker's own history settings with the set-down state on (it is off by default).
WORKER_SET_DOWN_ON = replace(HistorySettings(), set_down_rotation=0.0045)


def test_the_set_down_state_is_off_by_default():
    """A person keeping still reads below a 2011 phone's noise floor on today's quieter gyroscopes:
    until each device's own floor is learnt, nothing is shown set down unless asked for."""
    assert HistorySettings().set_down_rotation == 0.0
    assert shown_at(HistorySettings(lag=2, min_windows=3, confirm=2), "L" * 12, [QUIET] * 12) == ["LAYING"]


def test_the_worker_shows_a_phone_on_a_table_set_down_and_a_person_lying_as_lying():
    """The model says lying for both; the worker's history tells them apart by the signal, and the
    day counts the phone's time apart from lying. A device without a gyroscope is never set down."""
    core = StreamCore(ACTIVITIES, "m", WorkerConfig(max_batch=100, history=WORKER_SET_DOWN_ON))
    streams = {"table": lying_samples(50 * 30, False), "sleeper": lying_samples(50 * 30, True)}
    streams["no-gyro"] = lying_samples(50 * 30, False, gyro=False)
    for device, data in streams.items():
        meta = {"gyro": False} if device == "no-gyro" else {}
        for seq in range(0, len(data), 10):
            core.ingest(encode_samples(SampleBatch(device, seq, 1000.0 + seq / 50, data[seq : seq + 10], meta=meta)), 0)
    run_model(core, now=0.1, klass=5)
    updates = core.take_history()
    labels = {d: {p["label"] for h in updates if h.device == d for p in h.pieces if p["final"]} for d in streams}
    assert labels == {"table": {"SET_DOWN"}, "sleeper": {"LAYING"}, "no-gyro": {"LAYING"}}
    today = {h.device: h.today["minutes"] for h in updates if h.today}
    assert today["table"]["lying"] == 0.0 and today["table"]["set_down"] > 0.4
    assert today["sleeper"]["lying"] > 0.4 and "set_down" not in today["sleeper"]


class SaysLying:
    """A runtime that reads every window as lying, 90 % sure (the model is not what is tested)."""

    def predict(self, x):
        return np.tile(np.eye(6, dtype=np.float32)[5] * 0.9 + 0.1 / 6, (len(x), 1))


def test_tail_final_json_shows_a_phone_on_a_table_set_down_on_a_real_bus():
    """A real worker on 127.0.0.1 (its model always says lying), a phone at its sensors' noise and a
    person lying replayed into it, and `harstream tail --final --json` as the reader: every line is
    one JSON piece, the phone's pieces are SET_DOWN and the person's LAYING."""
    from harstream.simulator.replay import ReplayDevice, ReplaySchedule

    devices = [ReplayDevice("table", lying_samples(50 * 12, False), None)]
    devices.append(ReplayDevice("sleeper", lying_samples(50 * 12, True), None))
    with worker_thread(SaysLying(), stats_every=0.2, config=WorkerConfig(history=WORKER_SET_DOWN_ON)) as w:
        # 12 s, 8 windows each: 8 final pieces per device once each is settled (quiet for 1 s)
        lines, err = final_pieces_through_tail(w, ReplaySchedule(devices, chunk=10), count=16)
    assert len(lines) == 16, err
    assert all(set(p) == {"device", "start", "end", "label"} for p in lines)
    labels = {d: {p["label"] for p in lines if p["device"] == d} for d in ("table", "sleeper")}
    assert labels == {"table": {"SET_DOWN"}, "sleeper": {"LAYING"}}
