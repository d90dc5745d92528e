"""The dashboard page (Streamlit AppTest) fed by a real ZeroMQ PUB socket."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pyarrow
import pyarrow.ipc
import pytest
import zmq
from streamlit.testing.v1 import AppTest

import harstream.dashboard
from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
from harstream.stream.core.protocol import Prediction, Signal, encode_prediction, encode_signal, encode_stats

APP = str(Path(harstream.dashboard.__file__).resolve().parent / "app.py")
WAIT_S = 30.0  # upper bound for the subscriber to join and messages to arrive


@pytest.fixture
def bus(monkeypatch):
    """A PUB socket on a free loopback port; the app subscribes to it."""
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    monkeypatch.setenv("HARSTREAM_OUTPUT", address)
    yield sock
    sock.close(0)


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def cards(at: AppTest) -> dict[str, str]:
    """device -> activity, as the overview cards carry them."""
    body = "".join(h.proto.body for h in at.get("html"))
    return dict(re.findall(r'data-device="([^"]+)" data-activity="([^"]+)"', body))


def publish_until(at: AppTest, send, done, wait_s: float = WAIT_S) -> None:
    """Publish with ``send()`` and rerun the page until ``done(at)``.

    Repeats the publishing because a SUB socket joins a moment after it
    connects (ZeroMQ's slow joiner) and misses what was sent before."""
    deadline = time.monotonic() + wait_s
    while True:
        send()
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception
        if done(at):
            return
        assert time.monotonic() < deadline, "the page did not show what was published"


def prediction(device, window, smoothed, truth=None):
    probs = [0.04] * 6
    if smoothed in ACTIVITIES:
        probs[ACTIVITIES.index(smoothed)] = 0.8
    t_end = 2.54 + 1.28 * window
    return encode_prediction(
        Prediction(
            device, window, t_end - 2.54, t_end, smoothed, probs, smoothed, probs, "test-model", 4.0, truth, "w0"
        )
    )


def stats(devices=3, **extra):
    return encode_stats(
        "w0",
        {
            "devices": devices,
            "samples_per_s": 150.0,
            "windows_per_s": 2.3,
            "latency_p50_ms": 4.5,
            "latency_p99_ms": 12.0,
            "drops": {"duplicate": 2},
            **extra,
        },
    )


def test_without_a_worker_the_page_says_so_instead_of_freezing(bus):
    at = new_app()
    assert [e for e in at.error if "No worker" in e.value]
    assert not cards(at)


def test_with_a_worker_but_no_devices_the_page_says_no_data(bus):
    at = new_app()
    publish_until(at, lambda: bus.send_multipart(stats(devices=0)), lambda at: at.warning)
    assert "No data" in at.warning[0].value
    assert not at.error


def test_overview_shows_every_device_its_activity_and_the_health_numbers(bus):
    at = new_app()
    window = iter(range(10_000))

    def send():
        w = next(window)
        bus.send_multipart(stats())
        bus.send_multipart(prediction("phone-a", w, "WALKING", truth="WALKING"))
        bus.send_multipart(prediction("phone-b", w, "SITTING", truth="STANDING"))
        bus.send_multipart(prediction("phone-c", w, "LAYING"))

    publish_until(at, send, lambda at: len(cards(at)) == 3)
    assert cards(at) == {"phone-a": "WALKING", "phone-b": "SITTING", "phone-c": "LAYING"}
    assert not at.error and not at.warning
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["devices (worker)"] == "3"
    assert metrics["latency p99"] == "12.0 ms"
    assert metrics["dropped"] == "2"
    body = at.get("html")[0].proto.body
    assert "✓</span> truth Walking" in body and "✗</span> truth Standing" in body
    assert any("Fleet accuracy" in c.value and "50.0%" in c.value for c in at.caption)


def test_overview_has_the_activity_mix_and_how_long_each_display_has_lasted(bus):
    at = new_app()
    window = iter(range(10_000))

    def send():
        w = next(window)
        bus.send_multipart(stats())
        for name, activity in (("phone-a", "WALKING"), ("phone-b", "WALKING"), ("phone-c", "STAND_TO_SIT")):
            bus.send_multipart(prediction(name, w, activity))

    publish_until(at, send, lambda at: len(cards(at)) == 3 and "for 2 s" in at.get("html")[0].proto.body)
    chart = at.get("vega_lite_chart")[0].proto
    assert json.loads(chart.spec)["title"]["text"] == "activity mix now"
    rows = pyarrow.ipc.open_stream(chart.data.data).read_all().to_pylist()  # Streamlit ships the data as Arrow
    assert {r["activity"]: r["devices"] for r in rows} == {"WALKING": 2, "TRANSITION": 1}
    body = at.get("html")[0].proto.body
    assert 'class="hs-card transition"' in body and 'data-activity="STAND_TO_SIT"' in body


def test_device_view_follows_the_selected_device_and_its_activity_changes(bus):
    at = new_app()
    state = {"w": 0, "activity": "WALKING"}

    def send():
        state["w"] += 1
        bus.send_multipart(stats(devices=2))
        bus.send_multipart(prediction("phone-a", state["w"], state["activity"], truth="WALKING"))
        bus.send_multipart(prediction("phone-b", state["w"], "STANDING", truth="STANDING"))
        bus.send_multipart(
            encode_signal(Signal("phone-b", state["w"] * 1.28, 10.0, [[0, 0, 1]] * 13, [[0, 0.1, 0]] * 13))
        )

    publish_until(at, send, lambda at: len(cards(at)) == 2)
    at.selectbox(key="hs_device_select").select("phone-b").run()
    publish_until(at, send, lambda at: len(at.get("vega_lite_chart")) >= 4)
    assert any(m.value.startswith("**Standing**") for m in at.markdown)
    assert any("Confusion matrix since this page opened" in m.value for m in at.markdown)
    # the selection survives the refreshes, and a change of activity shows
    state["activity"] = "WALKING_UPSTAIRS"
    publish_until(at, send, lambda at: cards(at).get("phone-a") == "WALKING_UPSTAIRS")
    assert at.selectbox(key="hs_device_select").value == "phone-b"


def moded(device, window, mode, classes, smoothed, placement=None):
    """A prediction from a worker serving ``device`` in ``mode`` with a model of ``classes``
    (and where it seems worn, if the worker says)."""
    probs = [round(0.2 / (len(classes) - 1), 6)] * len(classes)
    probs[classes.index(smoothed)] = 0.8
    t_end = 2.54 + 1.28 * window
    return encode_prediction(
        Prediction(
            device,
            window,
            t_end - 2.54,
            t_end,
            smoothed,
            probs,
            smoothed,
            probs,
            f"{mode}-model",
            4.0,
            None,
            "w0",
            mode=mode,
            classes=classes,
            placement=placement,
        )
    )


def test_each_device_card_has_a_badge_of_its_mode_and_the_view_shows_only_its_classes(bus):
    at = new_app()
    window = iter(range(10_000))
    free = list(PLACEMENT_FREE)

    def send():
        w = next(window)
        bus.send_multipart(stats(devices=3))
        bus.send_multipart(moded("phone:a", w, "any", free, "STILL"))
        bus.send_multipart(moded("phone:b", w, "personal", [*free[:3], "SITTING", "STILL"], "SITTING"))
        bus.send_multipart(moded("replay-1", w, "waist", list(ACTIVITIES), "STANDING"))

    publish_until(at, send, lambda at: len(cards(at)) == 3)
    body = "".join(h.proto.body for h in at.get("html"))
    modes = dict(re.findall(r'data-device="([^"]+)"[^>]*data-mode="([^"]*)"', body))
    assert modes == {"phone:a": "any", "phone:b": "personal", "replay-1": "waist"}
    assert body.count('class="hs-badge any"') == 1 and body.count('class="hs-badge personal"') == 1
    assert cards(at)["phone:a"] == "STILL"
    # the followed device (phone:a, first in order) is in any mode: its classes only, and the hint
    publish_until(at, send, lambda at: len(at.get("vega_lite_chart")) >= 2)
    assert any("calibrate this phone to tell sitting/standing/lying" in c.value for c in at.caption)
    bars = next(c for c in at.get("vega_lite_chart") if "probability" in c.proto.spec).proto
    rows = pyarrow.ipc.open_stream(bars.data.data).read_all().to_pylist()
    assert [r["activity"] for r in rows] == free


def test_a_device_the_worker_places_on_the_thigh_shows_it_beside_its_mode_badge(bus):
    at = new_app()
    window = iter(range(10_000))
    free = list(PLACEMENT_FREE)

    def send():
        w = next(window)
        bus.send_multipart(stats(devices=2))
        bus.send_multipart(moded("phone:a", w, "any", free, "WALKING", placement="thigh"))
        bus.send_multipart(moded("phone:b", w, "any", free, "WALKING"))

    publish_until(at, send, lambda at: len(cards(at)) == 2)
    body = "".join(h.proto.body for h in at.get("html"))
    card_a, card_b = (
        re.search(rf'data-device="{d}".*?</div></div>', body, re.S).group(0) for d in ("phone:a", "phone:b")
    )
    assert 'class="hs-badge any"' in card_a and "worn: thigh (pocket)" in card_a
    assert "worn:" not in card_b  # not sure yet: nothing shown
    # the followed device (phone:a) names it beside its mode too
    publish_until(at, send, lambda at: any("worn: **thigh (pocket)**" in c.value for c in at.caption))


def test_malformed_messages_are_counted_on_the_page_not_raised(bus):
    at = new_app()
    window = iter(range(10_000))

    def send():
        bus.send_multipart([b"p/x/", b"{not json"])
        bus.send_multipart([b"p/y/", b'{"v":1,"device":"y","probs":"NaN"}'])
        bus.send_multipart(prediction("phone-a", next(window), "SITTING"))
        bus.send_multipart(stats(devices=1))

    publish_until(at, send, lambda at: cards(at) and any("undecodable here" in c.value for c in at.caption))
    assert cards(at) == {"phone-a": "SITTING"}
    assert any("undecodable here: header" in c.value for c in at.caption)


def test_two_hundred_live_devices_all_appear(bus):
    at = new_app()
    window = iter(range(10_000))
    names = [f"phone-{d:03d}" for d in range(200)]

    def send():
        w = next(window)
        bus.send_multipart(stats(devices=200))
        for d, name in enumerate(names):
            bus.send_multipart(prediction(name, w, ACTIVITIES[d % 6], truth=ACTIVITIES[d % 6]))
            bus.send_multipart(encode_signal(Signal(name, w * 1.28, 10.0, [[0, 0, 1]] * 13, [[0, 0, 0]] * 13)))

    publish_until(at, send, lambda at: len(cards(at)) == 200)
    assert not at.error and not at.warning
    assert len(at.selectbox(key="hs_device_select").options) == 200


def test_the_subscriber_takes_the_signal_feed_of_the_followed_device_only(bus):
    from harstream.dashboard.feed import Subscriber

    sub = Subscriber(bus.getsockopt_string(zmq.LAST_ENDPOINT))
    try:
        sub.follow_signal("phone-1")
        got: list[bytes] = []
        deadline = time.monotonic() + WAIT_S
        while b"p/phone-1/" not in got or b"g/phone-1/" not in got:
            assert time.monotonic() < deadline, got
            for device in ("phone-1", "phone-10", "phone-2"):
                bus.send_multipart(encode_signal(Signal(device, 0.0, 10.0, [[0, 0, 1]], [[0, 0, 0]])))
                bus.send_multipart(prediction(device, 0, "WALKING"))
            time.sleep(0.1)
            got += [frames[0] for frames in sub.drain()]
        assert {t for t in got if t.startswith(b"g/")} == {b"g/phone-1/"}
        assert {b"p/phone-10/", b"p/phone-2/"} <= set(got)
        sub.follow_signal("phone-2")
        deadline = time.monotonic() + WAIT_S
        while b"g/phone-2/" not in got:
            assert time.monotonic() < deadline
            bus.send_multipart(encode_signal(Signal("phone-2", 0.0, 10.0, [[0, 0, 1]], [[0, 0, 0]])))
            time.sleep(0.1)
            got = [frames[0] for frames in sub.drain()]
        bus.send_multipart(encode_signal(Signal("phone-1", 0.0, 10.0, [[0, 0, 1]], [[0, 0, 0]])))
        bus.send_multipart(prediction("phone-1", 1, "WALKING"))  # sent after: arrives after
        deadline = time.monotonic() + WAIT_S
        got = []
        while b"p/phone-1/" not in got:
            assert time.monotonic() < deadline
            time.sleep(0.05)
            got += [frames[0] for frames in sub.drain()]
        assert b"g/phone-1/" not in got
    finally:
        sub.close()


def history(device, window, label, today_minutes):
    """A history revision as the worker publishes it after ``window``: one
    final piece, then the provisional rest (the last two windows)."""
    from harstream.stream.core.protocol import HistoryUpdate, encode_history

    t = 1.28 * window
    return encode_history(
        HistoryUpdate(
            device,
            [
                {"start": t - 2.56 - 1.28, "end": t - 2.56, "label": label, "final": True},
                {"start": t - 2.56, "end": t + 2.56, "label": label, "final": False},
            ],
            "waist",
            {"day": "2026-12-07", "minutes": today_minutes},
            "w0",
        )
    )


def test_the_timeline_draws_the_final_history_with_its_provisional_end_hatched_and_the_card_the_days_minutes(bus):
    at = new_app()
    state = {"w": 3}
    minutes = {"walking": 12.0, "stairs": 1.0, "sitting": 65.0, "standing": 0.0, "lying": 0.0}

    def send():
        state["w"] += 1
        bus.send_multipart(stats(devices=1))
        bus.send_multipart(prediction("phone-a", state["w"], "SITTING"))
        bus.send_multipart(history("phone-a", state["w"], "SITTING", minutes))

    def timeline_has_history(at) -> bool:
        return any("final history" in c.proto.spec for c in at.get("vega_lite_chart"))

    publish_until(at, send, timeline_has_history)
    timeline = next(c for c in at.get("vega_lite_chart") if "final history" in c.proto.spec).proto
    values = pyarrow.ipc.open_stream(timeline.data.data).read_all().to_pylist()  # Streamlit ships the data as Arrow
    lane = [v for v in values if v["lane"] == "final history"]
    assert {v["provisional"] for v in lane} == {True, False}
    assert all(v["label"] == "Sitting" for v in lane)
    final_end = max(v["end"] for v in lane if not v["provisional"])
    assert min(v["start"] for v in lane if v["provisional"]) >= final_end - 1e-6  # hatched only after the final part
    assert "datum.provisional" in timeline.spec  # the hatch layer
    # the card keeps the now label and gets the day's minutes
    body = "".join(h.proto.body for h in at.get("html"))
    assert cards(at) == {"phone-a": "SITTING"}
    assert "today: walking 12 min · stairs 1 min · sitting 1 h 5 min" in body
    assert any(c.value.startswith("today: walking 12 min") for c in at.caption)
