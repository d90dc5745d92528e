"""The final history on the durable log: kept in a real redis-server through a
fenced script, idempotent by device and time, and the day's minutes survive a
new owner."""

from __future__ import annotations

import pytest

from harstream.stream.core.activities import ACTIVITIES
from harstream.stream.core.protocol import HistoryUpdate
from harstream.stream.core.today import CATEGORY
from harstream.stream.core.worker import StreamCore
from harstream.stream.durable.broker import Keys, connect
from harstream.stream.durable.history_store import HistoryStore, restore_today
from harstream.stream.durable.leases import Leases

T0 = 20_000 * 86_400.0 + 3600.0  # an hour into a day (UTC)


def update(*pieces, provisional=()):
    rows = [{"start": T0 + a, "end": T0 + b, "label": label, "final": True} for a, b, label in pieces]
    rows += [{"start": T0 + a, "end": T0 + b, "label": label, "final": False} for a, b, label in provisional]
    return HistoryUpdate("phone-1", rows, "waist", None, "w0")


def test_final_pieces_are_kept_once_per_stretch_and_a_replay_is_clipped_to_what_is_not_final(redis_url):
    client = connect(redis_url)
    lease = Leases(client, Keys(), ttl_ms=10_000).acquire(0, "w0")
    store = HistoryStore(client, Keys().prefix)
    lease_key = Keys().lease(0)
    first = store.keep(
        lease_key, lease.value, update((0, 60, "WALKING"), (60, 120, "SITTING"), provisional=[(120, 122, "SITTING")])
    )
    assert [(p["start"] - T0, p["end"] - T0, p["final"]) for p in first.pieces] == [
        (0, 60, True),
        (60, 120, True),
        (120, 122, False),
    ]
    # the same revision again (a new owner replaying windows), and one overlapping what is final
    assert store.keep(lease_key, lease.value, update((0, 60, "WALKING"), (60, 120, "SITTING"))).final_pieces() == []
    again = store.keep(lease_key, lease.value, update((100, 180, "STANDING")))
    assert [(p["start"] - T0, p["end"] - T0) for p in again.final_pieces()] == [(120, 180)]
    kept = store.pieces("phone-1")
    assert [(p["start"] - T0, p["end"] - T0, p["label"]) for p in kept] == [
        (0, 60, "WALKING"),
        (60, 120, "SITTING"),
        (120, 180, "STANDING"),
    ]
    day, seconds = store.today("phone-1")
    assert seconds == {"walking": 60.0, "sitting": 60.0, "standing": 60.0}


def test_a_worker_whose_lease_moved_keeps_and_publishes_nothing(redis_url):
    client = connect(redis_url)
    leases = Leases(client, Keys(), ttl_ms=10_000)
    lease = leases.acquire(0, "w0")
    store = HistoryStore(client, Keys().prefix)
    assert store.keep(Keys().lease(0), "w-old 0", update((0, 60, "WALKING"))) is None
    assert store.pieces("phone-1") == [] and store.today("phone-1") is None
    assert store.keep(Keys().lease(0), lease.value, update((0, 60, "WALKING"))) is not None


def test_the_days_minutes_survive_a_new_owner(redis_url):
    client = connect(redis_url)
    lease = Leases(client, Keys(), ttl_ms=10_000).acquire(0, "w0")
    store = HistoryStore(client, Keys().prefix)
    first = StreamCore(ACTIVITIES, "m")
    published = store.keep(
        Keys().lease(0), lease.value, update((0, 120, "WALKING"), (120, 300, "LAYING")), first, ACTIVITIES
    )
    assert published.today["minutes"]["lying"] == 3.0
    fresh = StreamCore(ACTIVITIES, "m")  # the worker restarted: a new core knows nothing
    assert fresh.today.summary("phone-1", ACTIVITIES) is None
    assert restore_today(store, fresh, ["phone-1", "never-seen"]) == 1
    assert fresh.today.summary("phone-1", ACTIVITIES)["minutes"] == {
        "walking": 2.0,
        "stairs": 0.0,
        "sitting": 0.0,
        "standing": 0.0,
        "lying": 3.0,
    }


def test_a_durable_worker_publishes_the_final_history_it_keeps(redis_url, tiny_lstm, ipc_address):
    """Bridge → Redis Streams → a worker on the log; what it publishes on h/ is
    what it kept: the same final pieces, no stretch twice, the day's minutes."""
    import threading

    import zmq
    from test_durable_log import Bridge, LogWorker, owners

    from harstream.simulator.replay import ReplaySchedule, devices_for, replay
    from harstream.stream.core.protocol import decode_output
    from harstream.stream.data.recordings import load_embedded

    artifact, runtime = tiny_lstm
    rec = load_embedded().of_subjects([2])[0]
    rec = type(rec)(rec.name, rec.subject, rec.samples[:1500], rec.labels[:1500])  # 30 s
    out = ipc_address("out")
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"h/")
    sub.bind(out)
    got: list = []
    done = threading.Event()

    def collect():
        while not done.is_set():
            if sub.poll(50):
                got.append(decode_output(sub.recv_multipart()))

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    bridge = Bridge(redis_url)
    worker = LogWorker(runtime, redis_url, out, "w0")
    try:
        from conftest import wait_for

        assert wait_for(lambda: sum(owners(redis_url).values()) > 0)
        replay(
            ReplaySchedule(devices_for([rec]), chunk=10),
            publish=bridge.ingest,
            speed=0,
            stream_clock=True,
            wait_subscriptions=1,
        )
        # the device goes quiet: its last stretch is settled (a revision with no provisional piece) and kept
        assert wait_for(lambda: bool(got) and all(p["final"] for p in got[-1].pieces), timeout=30)
    finally:
        worker.close()
        bridge.close()
        done.set()
        reader.join(5)
        sub.close(0)
    published = [p for h in got for p in h.final_pieces()]
    assert published, "no final piece published"
    for a, b in zip(published, published[1:]):
        assert b["start"] >= a["end"] - 1e-6  # no stretch twice
    store = HistoryStore(connect(redis_url), Keys().prefix)
    kept = store.pieces(rec.name)
    assert [(p["start"], p["end"], p["label"]) for p in kept] == [
        (pytest.approx(p["start"], abs=1e-5), pytest.approx(p["end"], abs=1e-5), p["label"]) for p in published
    ]
    day, seconds = store.today(rec.name)
    # what the day counts: every piece but transitions and unknown (the device handled before anything was shown)
    counted = sum(p["end"] - p["start"] for p in published if p["label"] in CATEGORY)
    assert sum(seconds.values()) == pytest.approx(counted, abs=1e-3)
    assert got[-1].today is not None or any(h.today for h in got)
