"""Workers' stats messages with numbers no worker makes, on the real page
(Streamlit AppTest) fed by a real PUB socket: the health line must show
counts and rates a worker can have, or n/a, never raise or print inf."""

from __future__ import annotations

from test_dashboard_app import bus, new_app, prediction, publish_until  # noqa: F401 (bus: the fixture)

from harstream.stream.core.protocol import encode_stats


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_stats_numbers_no_worker_makes_leave_the_health_line_drawn_and_finite(bus):  # noqa: F811
    # two workers of 1e308 devices summed to inf: the health line's int() raised on
    # every refresh; totals from -1e308 to 1e308 made inf windows a second
    at = new_app()
    sent = iter(range(10_000))

    def send():
        k = next(sent)
        bus.send_multipart(prediction("phone-a", k, "SITTING"))
        for worker in ("w1", "w2"):
            body = {"devices": 1e308, "samples_per_s": 1e308, "latency_p50_ms": -5.0, "drops": {"late": 1e300}}
            body["totals"] = {"windows": 1e308 if k % 2 else -1e308, "samples": 1e308}
            bus.send_multipart(encode_stats(worker, body))
        bus.send_multipart(encode_stats("w3", {"devices": 2, "totals": {"windows": 10 * k, "samples": 640 * k}}))

    publish_until(at, send, lambda at: "windows / s" in metrics(at) and metrics(at)["windows / s"] != "n/a")
    shown = metrics(at)
    assert shown["devices (worker)"] == "2", shown  # the workers' 1e308 left out, w3's 2 kept
    assert "inf" not in " ".join(shown.values()) and all(len(v) < 20 for v in shown.values()), shown
