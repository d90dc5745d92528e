"""The dashboard's state layer: pure, fed the frames of output-bus messages."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from harstream.dashboard import charts as charts_module
from harstream.dashboard import state as state_module
from harstream.dashboard.charts import (
    confusion_chart,
    mix_chart,
    overview_html,
    probability_chart,
    signal_chart,
    timeline_chart,
)
from harstream.dashboard.state import PREDICTED, TRANSITION, LiveState
from harstream.stream.core.activities import ACTIVITIES, UNKNOWN
from harstream.stream.core.protocol import (
    Prediction,
    Signal,
    encode_prediction,
    encode_signal,
    encode_stats,
)


def prediction(device: str, window: int, smoothed: str, truth: str | None = None, t_end: float | None = None):
    probs = [0.02] * 6
    if smoothed in ACTIVITIES:
        probs[ACTIVITIES.index(smoothed)] = 0.9
    t_end = window * 1.28 + 2.54 if t_end is None else t_end
    return encode_prediction(
        Prediction(device, window, t_end - 2.54, t_end, smoothed, probs, smoothed, probs, "m", 2.0, truth, "w0")
    )


def signal(device: str, t0: float, n: int = 10, rate: float = 10.0):
    acc = [[float(t0 + i), 0.0, 1.0] for i in range(n)]
    return encode_signal(Signal(device, t0, rate, acc, [[0.0, 0.0, 0.5]] * n))


def test_overview_shows_latest_smoothed_activity_confidence_age_and_match():
    live = LiveState()
    live.feed(prediction("a", 0, "WALKING", truth="WALKING"), now=1.0)
    live.feed(prediction("a", 1, "SITTING", truth="STANDING"), now=2.0)
    live.feed(prediction("b", 0, "LAYING"), now=3.0)
    rows = {r.device: r for r in live.overview(now=4.5)}
    assert rows["a"].activity == "SITTING"
    assert rows["a"].confidence == pytest.approx(0.9)
    assert rows["a"].age_s == pytest.approx(2.5)
    assert rows["a"].match is False and rows["a"].truth == "STANDING"
    assert rows["a"].accuracy == pytest.approx(0.5)
    assert rows["b"].match is None and rows["b"].truth is None


def test_transition_truth_is_shown_but_not_scored():
    live = LiveState()
    live.feed(prediction("a", 0, "STANDING", truth="STAND_TO_SIT"), now=0.0)
    (row,) = live.overview(now=0.0)
    assert row.truth == TRANSITION and row.match is None and row.accuracy is None
    assert live.devices["a"].confusion().sum() == 0


def test_session_confusion_matrix_equals_sklearn_on_all_pairs():
    rng = np.random.default_rng(0)
    truths = rng.choice(ACTIVITIES, 500)
    preds = [t if rng.random() < 0.7 else rng.choice(PREDICTED) for t in truths]
    live = LiveState()
    for i, (t, p) in enumerate(zip(truths, preds)):
        live.feed(prediction("a", i, str(p), truth=str(t)), now=float(i))
        if i == 123:  # reading mid-way must not lose or double-count pairs
            live.devices["a"].confusion()
    expected = confusion_matrix(truths, preds, labels=list(PREDICTED))[: len(ACTIVITIES)]
    np.testing.assert_array_equal(live.devices["a"].confusion(), expected)
    assert live.fleet_accuracy() == (np.trace(expected), len(truths))


def test_per_device_history_is_bounded_but_the_confusion_matrix_counts_the_whole_session(monkeypatch):
    monkeypatch.setattr(state_module, "MAX_PENDING_PAIRS", 300)
    live = LiveState()
    n = state_module.MAX_PREDICTIONS + 250
    for i in range(n):
        live.feed(prediction("a", i, "WALKING", truth="WALKING"), now=float(i))
        live.feed(signal("a", t0=float(i)), now=float(i))
    device = live.devices["a"]
    assert len(device.predictions) == state_module.MAX_PREDICTIONS
    assert len(device._pending_truth) < state_module.MAX_PENDING_PAIRS
    assert device.confusion().sum() == n
    assert device.windows == n
    # ten seconds of signal at 10 Hz, not the whole session
    frame = device.signal_frame()
    assert frame["t"][0] >= -state_module.SIGNAL_SECONDS and frame["t"][-1] == 0
    assert len(device.signal) <= 12


def test_timeline_bands_tile_the_last_seconds_with_truth_underneath():
    live = LiveState()
    for i in range(300):
        live.feed(prediction("a", i, "WALKING" if i < 250 else "SITTING", truth="WALKING"), now=float(i))
    bands = live.devices["a"].timeline(60.0)
    assert bands[-1]["end"] == 0.0 and bands[-1]["predicted"] == "SITTING"
    assert bands[0]["start"] >= -60.0 and len(bands) == int(60 / 1.28)
    assert bands[-1]["start"] == pytest.approx(-1.28)
    for before, after in zip(bands, bands[1:]):
        assert after["start"] == pytest.approx(before["end"])
    assert {b["truth"] for b in bands} == {"WALKING"}


def decoded(device: str, window: int, shown: str, raw: str, truth: str | None = None):
    """A prediction whose display (the decoder's label) differs from the raw label."""
    probs = [0.02] * 6
    probs[ACTIVITIES.index(raw)] = 0.9
    t_end = window * 1.28 + 2.54
    return encode_prediction(Prediction(device, window, t_end - 2.54, t_end, raw, probs, shown, probs, "m", 2.0, truth))


def test_timeline_draws_one_segment_per_display_decision_with_raw_and_truth_lanes():
    live = LiveState()
    raw = ["WALKING"] * 10 + ["SITTING"] + ["WALKING"] * 9 + ["STANDING"] * 20
    shown = ["WALKING"] * 20 + ["STAND_TO_SIT"] * 3 + ["SITTING"] * 17
    for i, (r, d) in enumerate(zip(raw, shown)):
        live.feed(decoded("a", i, d, r, truth="WALKING" if i < 20 else "SITTING"), now=float(i))
    lanes = live.devices["a"].segments(60.0)
    assert [s["label"] for s in lanes["display"]] == ["WALKING", "STAND_TO_SIT", "SITTING"]
    assert [s["label"] for s in lanes["raw"]] == ["WALKING", "SITTING", "WALKING", "STANDING"]
    assert [s["label"] for s in lanes["truth"]] == ["WALKING", "SITTING"]
    assert lanes["display"][-1]["end"] == 0.0
    assert lanes["display"][1]["end"] - lanes["display"][1]["start"] == pytest.approx(3 * 1.28)
    for lane in lanes.values():
        for before, after in zip(lane, lane[1:]):
            assert after["start"] == pytest.approx(before["end"])


def test_device_card_says_how_long_the_display_has_shown_the_activity():
    live = LiveState()
    for i in range(30):
        live.feed(prediction("a", i, "WALKING" if i < 20 else "SITTING"), now=float(i))
    (row,) = live.overview(now=30.0)
    assert row.activity == "SITTING" and row.lasted_s == pytest.approx(9 * 1.28)
    assert 'data-lasted="11.5"' in overview_html([row]) and "for 11 s" in overview_html([row])
    live.feed(prediction("a", 0, "SITTING"), now=31.0)  # the stream restarted: a new run
    assert live.overview(now=31.0)[0].lasted_s == 0.0


def test_activity_mix_counts_live_devices_by_what_they_show_with_transitions_together():
    live = LiveState()
    shown = {"a": "WALKING", "b": "WALKING", "c": "SIT_TO_STAND", "d": "LIE_TO_SIT", "e": "LAYING"}
    for name, label in shown.items():
        live.feed(decoded(name, 0, label, "WALKING"), now=0.0)
    live.feed(prediction("old", 0, "SITTING"), now=-100.0)  # no longer live
    assert live.activity_mix(now=1.0) == {"WALKING": 2, "LAYING": 1, TRANSITION: 2}
    bars = mix_chart(live.activity_mix(now=1.0))["data"]["values"]
    assert [(b["activity"], b["devices"]) for b in bars] == [("WALKING", 2), ("LAYING", 1), (TRANSITION, 2)]


def test_a_transition_on_display_is_drawn_hatched_and_neutral_not_as_an_error():
    live = LiveState()
    live.feed(decoded("a", 0, "STANDING", "STANDING", truth="STANDING"), now=0.0)
    live.feed(decoded("a", 1, "STAND_TO_SIT", "SITTING", truth="SITTING"), now=1.0)
    (row,) = live.overview(now=1.0)
    assert row.match is None and row.accuracy == pytest.approx(0.5)  # shown neutral, still scored
    card = overview_html([row])
    assert 'class="hs-card transition"' in card and 'class="hs-bad"' not in card and "Stand to sit" in card
    spec = timeline_chart(live.devices["a"].segments(60.0), 60.0)
    display = [v for v in spec["data"]["values"] if v["lane"] == "now label"]  # the lane the card's label is drawn in
    assert [v["activity"] for v in display] == ["STANDING", TRANSITION]
    hatch = spec["layer"][1]
    assert hatch["transform"][0]["filter"]["equal"] == TRANSITION and hatch["mark"]["fill"]["gradient"] == "linear"
    assert charts_module.colour_of("STAND_TO_SIT") == charts_module.COLOURS[TRANSITION]


def test_signal_frame_keeps_ten_seconds_of_samples_in_arrival_order_whatever_the_timestamps():
    live = LiveState()
    # a sped-up replay: 10 Hz samples, but chunk timestamps only 0.1 s apart
    for k in range(30):
        live.feed(signal("a", t0=100.0 + 0.1 * k, n=10), now=0.0)
    frame = live.devices["a"].signal_frame()
    assert frame["acc"].shape == frame["gyro"].shape == (100, 3)
    assert frame["t"][0] == pytest.approx(-9.9) and frame["t"][-1] == 0.0
    # the newest chunk's samples come last, in order
    np.testing.assert_allclose(frame["acc"][-10:, 0], 100.0 + 0.1 * 29 + np.arange(10), rtol=1e-6)


def test_health_banner_says_no_worker_then_no_data_then_nothing():
    live = LiveState()
    assert live.health(now=0.0).problem == "no_worker"
    live.feed(encode_stats("w0", {"devices": 0, "windows_per_s": 0.0}), now=1.0)
    assert live.health(now=2.0).problem == "no_data"
    live.feed(prediction("a", 0, "WALKING"), now=2.0)
    assert live.health(now=3.0).problem is None
    # a worker that stops is noticed a few seconds later, not never
    assert live.health(now=1.0 + state_module.STALE_AFTER_S + 1).problem == "no_worker"


def test_health_sums_workers_and_tolerates_missing_or_odd_stats_keys():
    live = LiveState()
    live.feed(
        encode_stats(
            "w0",
            {
                "devices": 3,
                "windows_per_s": 2.5,
                "latency_p50_ms": 4.0,
                "latency_p99_ms": 20.0,
                "drops": {"gap": 2, "non_finite": 1},
            },
        ),
        now=0.0,
    )
    live.feed(
        encode_stats("w1", {"devices": ["x", "y"], "latency_ms": {"p50": 6.0, "p99": 9.0}, "drops": {"gap": 5}}),
        now=0.0,
    )
    live.feed(encode_stats("w2", {"unexpected": "shape"}), now=0.0)
    h = live.health(now=0.5)
    assert h.workers == ["w0", "w1", "w2"]
    assert h.devices == 5 and h.windows_per_s == 2.5 and h.samples_per_s is None
    assert h.latency_p50_ms == 6.0 and h.latency_p99_ms == 20.0
    assert h.drops == {"gap": 7, "non_finite": 1}


def test_windows_per_second_is_taken_over_the_last_seconds_not_the_last_stats_interval():
    # devices in step finish their windows together: a 1-s stats interval holds 4 windows or none
    live = LiveState()
    windows = 0
    for t in range(12):
        windows += 4 if t % 4 != 3 else 0
        live.feed(
            encode_stats("w0", {"windows_per_s": 4.0 if t % 4 != 3 else 0.0, "totals": {"windows": windows}}), now=t
        )
    assert live.stats["w0"][1]["windows_per_s"] == 0.0  # the newest interval had none
    assert live.health(now=11.5).windows_per_s == pytest.approx(3.0, abs=0.5)


def test_a_restarted_worker_s_totals_start_its_rate_afresh():
    live = LiveState()
    for t, windows in ((0, 100), (1, 104), (2, 108), (3, 4), (4, 8)):  # restarted at t=3
        live.feed(encode_stats("w0", {"totals": {"windows": windows}}), now=t)
    assert live.health(now=4.5).windows_per_s == pytest.approx(4.0)


def test_a_forgotten_worker_s_rate_is_forgotten_with_its_stats():
    live = LiveState()
    for i in range(state_module.MAX_WORKERS + 50):
        live.feed(encode_stats(f"w{i}", {"devices": 1, "totals": {"windows": i}}), now=float(i))
    assert len(live.stats) == state_module.MAX_WORKERS and set(live.rates) == set(live.stats)


@pytest.mark.parametrize(
    "frames, reason",
    [
        ([b"p/a/", b"not json"], "header"),
        ([b"p/a/"], "frame_count"),
        ([b"x/a/", b"{}"], "topic"),
        ([b"p/a/", b'{"v": 2}'], "version"),
        ([b"p/a/", b'{"v": 1, "device": "a"}'], "header"),
        (prediction("bad device!", 0, "WALKING"), "device"),
        ([b"g/a/", b'{"v":1,"device":"a","t0":0,"rate":0,"acc":[[0,0,0]],"gyro":[[0,0,0]]}'], "header"),
        ([b"g/a/", b'{"v":1,"device":"a","t0":0,"rate":10,"acc":[[0,0]],"gyro":[[0,0,0]]}'], "header"),
    ],
)
def test_malformed_messages_are_counted_by_reason_and_do_not_change_the_page(frames, reason):
    live = LiveState()
    live.feed(prediction("good", 0, "WALKING"), now=0.0)
    assert live.feed(frames, now=0.0) is False
    assert live.rejects == {reason: 1}
    assert [r.device for r in live.overview(now=0.0)] == ["good"]
    assert live.health(now=0.0).rejects == {reason: 1}


def test_device_count_is_bounded_and_silent_devices_leave_the_overview(monkeypatch):
    monkeypatch.setattr(state_module, "MAX_DEVICES", 50)
    live = LiveState()
    for i in range(80):
        live.feed(prediction(f"d{i:02d}", 0, "WALKING"), now=float(i))
    assert len(live.devices) == 50
    assert min(live.devices) == "d30"  # the least recently seen went first
    late = 79 + state_module.LIVE_AFTER_S + 1
    live.feed(prediction("d79", 1, "SITTING"), now=late)
    assert [r.device for r in live.overview(now=late)] == ["d79"]
    live.forget(now=late + state_module.FORGET_AFTER_S)
    assert list(live.devices) == ["d79"]


def test_two_hundred_devices_feed_and_aggregate():
    """200 live devices with over a minute of history each: the page's
    aggregates cover every device and stay consistent."""
    live = LiveState()
    n_devices, n_windows = 200, 60
    messages = []
    for w in range(n_windows):
        for d in range(n_devices):
            activity = ACTIVITIES[(w // 20 + d) % 6]
            truth = activity if (w + d) % 10 else ACTIVITIES[(w // 20 + d + 1) % 6]
            messages.append(prediction(f"phone-{d:03d}", w, activity, truth=truth))
            messages.append(signal(f"phone-{d:03d}", t0=w * 1.28, n=13))
    assert live.feed_all(messages, now=100.0) == len(messages)
    rows = live.overview(now=101.0)
    assert len(rows) == n_devices
    assert all(r.accuracy == pytest.approx(0.9) for r in rows)
    assert live.fleet_accuracy() == (n_devices * n_windows * 9 // 10, n_devices * n_windows)
    html = overview_html(rows)
    assert html.count('class="hs-card') == n_devices
    device = live.devices["phone-123"]
    for spec in (
        probability_chart(device.latest.smoothed_probs, device.latest.probs),
        timeline_chart(device.segments(180.0), 180.0),
        mix_chart(live.activity_mix(now=101.0)),
        signal_chart(device.signal_frame()["t"], device.signal_frame()["acc"], "acc", "g"),
        confusion_chart(device.confusion()),
    ):
        assert spec["data"]["values"]


def test_overview_cards_escape_device_ids_and_mark_the_activity():
    live = LiveState()
    live.feed(prediction("a<b", 0, "WALKING"), now=0.0)  # refused: not a device id
    live.feed(prediction("a.b", 0, UNKNOWN), now=0.0)
    html = overview_html(live.overview(now=0.0))
    assert "a<b" not in html
    assert 'data-device="a.b" data-activity="unknown"' in html


@pytest.mark.parametrize("module", [state_module, charts_module])
def test_docstring_examples_of_the_dashboard_modules(module):
    # tests/test_doctests.py leaves harstream.dashboard out (importing app.py
    # would run the page), so the pure modules' examples run here.
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_the_final_history_is_never_rewritten_on_the_page_and_provisional_pieces_are_replaced():
    from harstream.stream.core.protocol import HistoryUpdate, encode_history

    def piece(a, b, label, final):
        return {"start": a, "end": b, "label": label, "final": final}

    live = LiveState()
    live.feed(prediction("a", 5, "SITTING", t_end=10.0), now=1.0)
    revisions = [
        [piece(0, 4, "SITTING", True), piece(4, 10, "STANDING", False)],
        [piece(4, 5, "SITTING", True), piece(5, 10, "SITTING", False)],
        [piece(2, 6, "WALKING", True)],  # overlaps what is final: a duplicate, ignored
        [piece(5, 6, "SITTING", True)],  # settled: no provisional piece left
    ]
    for pieces in revisions:
        assert live.feed(encode_history(HistoryUpdate("a", pieces, "waist", None, "w0")), now=2.0)
    device = live.devices["a"]
    assert list(device.final) == [{"start": 0.0, "end": 6.0, "label": "SITTING"}]
    assert device.provisional == []
    segments = device.segments(60.0)["history"]
    assert segments == [{"start": -10.0, "end": -4.0, "label": "SITTING", "provisional": False}]


def test_a_between_update_changes_the_card_but_adds_no_band_to_the_timeline():
    live = LiveState()
    for i in range(10):
        live.feed(decoded("a", i, "WALKING", "WALKING"), now=float(i))
    probs = [0.02, 0.02, 0.02, 0.9, 0.02, 0.02]
    t_end = 9 * 1.28 + 2.54 + 0.64
    between = Prediction("a", 9, t_end - 2.54, t_end, "SITTING", probs, "SITTING", probs, "m", 2.0, between=True)
    live.feed(encode_prediction(between), now=10.0)
    device = live.devices["a"]
    assert device.latest is not None and device.latest.smoothed == "SITTING" and device.latest.between
    assert [s["label"] for s in device.segments(60.0)["display"]] == ["WALKING"]
    assert device.windows == 10
    # the next window of the model's grid is the newest again
    live.feed(decoded("a", 10, "SITTING", "SITTING"), now=11.0)
    assert device.latest is not None and not device.latest.between and device.latest.window == 10


def test_a_device_set_down_is_drawn_in_the_history_lane_apart_from_lying_and_counted_apart_today():
    from harstream.dashboard.charts import COLOURS, timeline_chart, today_text
    from harstream.stream.core.protocol import HistoryUpdate, encode_history

    live = LiveState()
    live.feed(prediction("a", 5, "LAYING", t_end=10.0), now=1.0)
    pieces = [
        {"start": 0.0, "end": 4.0, "label": "LAYING", "final": True},
        {"start": 4.0, "end": 10.0, "label": "SET_DOWN", "final": True},
    ]
    today = {"day": "2026-12-07", "minutes": {"lying": 4.0, "set_down": 6.0}}
    assert live.feed(encode_history(HistoryUpdate("a", pieces, "waist", today, "w0")), now=2.0)
    device = live.devices["a"]
    segments = device.segments(60.0)["history"]
    assert [s["label"] for s in segments] == ["LAYING", "SET_DOWN"]
    drawn = timeline_chart({"history": segments}, 60.0)["data"]["values"]
    assert [v["activity"] for v in drawn] == ["LAYING", "SET_DOWN"]
    assert COLOURS["SET_DOWN"] != COLOURS["LAYING"] and drawn[1]["label"] == "Set down"
    assert today_text(device.today) == "today: lying 4 min · set down 6 min"
