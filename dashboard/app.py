"""The live dashboard (run with ``harstream dashboard``).

Streamlit script: one subscriber and one :class:`LiveState` per browser
session, drained and redrawn by a fragment every ``REFRESH_S`` seconds.
Everything shown comes from the worker's output bus; nothing here computes
a prediction.

Environment: ``HARSTREAM_OUTPUT`` (the bus to subscribe to, default
``tcp://127.0.0.1:5556``), ``HARSTREAM_DASHBOARD_REFRESH`` (seconds, 1.0),
``HARSTREAM_KEYS`` (a CURVE key folder, for a bus off loopback),
``HARSTREAM_DASHBOARD_TOKEN`` (when set, a page shows nothing unless its
address carries ``?token=`` with it: served off loopback, the command
requires one).
"""

from __future__ import annotations

import hmac
import os
import time

import streamlit as st

from harstream.dashboard.charts import (
    confusion_chart,
    duration_text,
    md,
    md_code,
    mix_chart,
    overview_html,
    pretty,
    probability_chart,
    signal_chart,
    timeline_chart,
    today_chart,
    today_text,
)
from harstream.dashboard.feed import Subscriber
from harstream.dashboard.state import MODE_HINTS, STALE_AFTER_S, WORN_TEXT, LiveState, classes_of
from harstream.stream.bus.addresses import output_address
from harstream.stream.bus.auth import BusAuthError

REFRESH_S = float(os.environ.get("HARSTREAM_DASHBOARD_REFRESH", "1.0"))
TOKEN = os.environ.get("HARSTREAM_DASHBOARD_TOKEN") or None
TIMELINE_S = 180.0  # seconds of recording in the device timeline
FORGET_EVERY_S = 30.0

st.set_page_config(page_title="harstream · live", page_icon=":material/directions_run:", layout="wide")


def admitted() -> bool:
    """Every page without a token (loopback); with one, a page whose address carries it."""
    if TOKEN is None:
        return True
    return hmac.compare_digest(st.query_params.get("token", "").encode(), TOKEN.encode())


def session() -> tuple[Subscriber, LiveState]:
    """This browser session's subscriber and state (created on first run)."""
    if "hs_subscriber" not in st.session_state:
        st.session_state.hs_subscriber = Subscriber(output_address(), os.environ.get("HARSTREAM_KEYS") or None)
        st.session_state.hs_state = LiveState()
        st.session_state.hs_forgot = time.monotonic()
        st.session_state.hs_tick_ms = []
    return st.session_state.hs_subscriber, st.session_state.hs_state


def fmt(value: float | None, spec: str = ".0f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def show_health(state: LiveState, endpoint: str, now: float) -> None:
    health = state.health(now)
    if health.problem == "no_worker":
        if health.stats_age_s is None:
            st.error(
                f"**No worker**: nothing heard on `{endpoint}` yet. Start one with "
                "`harstream worker` (or everything with `harstream demo`).",
                icon=":material/cloud_off:",
            )
        else:
            st.error(
                f"**No worker**: no stats message on `{endpoint}` for {health.stats_age_s:.0f} s. "
                "The worker stopped or the bus is unreachable; the page shows the last state it saw.",
                icon=":material/cloud_off:",
            )
    elif health.problem == "no_data":
        waited = "yet" if health.data_age_s is None else f"for {health.data_age_s:.0f} s"
        st.warning(
            f"**No data**: the worker is up but no prediction {waited}: is any device streaming "
            "(`harstream simulate`, a phone on `harstream gateway`)?",
            icon=":material/sensors_off:",
        )
    cols = st.columns(6)
    cols[0].metric("devices (worker)", fmt(health.devices))
    cols[1].metric("windows / s", fmt(health.windows_per_s, ".1f"))
    cols[2].metric("samples / s", fmt(health.samples_per_s, ",.0f"))
    cols[3].metric("latency p50", fmt(health.latency_p50_ms, ".1f", " ms"))
    cols[4].metric("latency p99", fmt(health.latency_p99_ms, ".1f", " ms"))
    dropped = sum(health.drops.values()) + sum(health.rejects.values())
    cols[5].metric("dropped", f"{dropped:,}")
    if dropped:
        parts = [f"{md(reason)} {count:,}" for reason, count in sorted(health.drops.items())]
        parts += [f"undecodable here: {md(reason)} {count:,}" for reason, count in sorted(health.rejects.items())]
        st.caption("Dropped by reason: " + " · ".join(parts))
    workers = []
    for name in health.workers:
        stats = state.stats[name][1]
        # every value from the bus is any publisher's text: shown as text, never as markdown
        extra = [
            f"model {md_code(stats['model'])}" if "model" in stats else None,
            f"runtime {md(stats['runtime'])}" if "runtime" in stats else None,
            f"batch mean {md(stats['batch_mean'])}" if "batch_mean" in stats else None,
            f"pending {md(stats['pending'])}" if "pending" in stats else None,
        ]
        details = ", ".join(str(x) for x in extra if x)
        workers.append(f"{md(name)} ({details})" if details else md(name))
    st.caption(f"Subscribed to `{endpoint}` · workers: {'; '.join(workers) if workers else 'none'}")


def show_overview(state: LiveState, now: float) -> list[str]:
    rows = state.overview(now)
    st.subheader(f"Live devices ({len(rows)})")
    if not rows:
        st.info("No live device yet: predictions appear here as soon as the worker labels a window.")
        return []
    hits, scored = state.fleet_accuracy()
    mix_col, text_col = st.columns([1, 2])
    mix_col.vega_lite_chart(spec=mix_chart(state.activity_mix(now)), width="stretch")
    if scored:
        text_col.caption(
            f"Fleet accuracy against ground truth (the decoded display, since this page opened): "
            f"{hits / scored:.1%} of {scored:,} windows"
        )
    text_col.caption(
        "Cards show what the worker's display decoder decided and for how long (the now label), "
        "and the day's minutes from the worker's final history; "
        "a hatched grey card is a posture change (sit to stand, ...), not an error. "
        "The badge is the device's mode: waist (HAPT model), any (placement-free: postures "
        "show as STILL) or personal (calibrated on the device)."
    )
    cards = overview_html(rows, stale_after=STALE_AFTER_S)
    if len(rows) > 24:  # a fleet scrolls inside its own box; the device view stays in reach
        with st.container(height=420, border=False):
            st.html(cards)
    else:
        st.html(cards)
    return [r.device for r in rows]


def show_device(state: LiveState, devices: list[str]) -> str | None:
    """The selected device's view; returns the device shown."""
    if not devices:
        return None
    st.subheader("Device")
    current = st.session_state.get("hs_device")
    if current not in devices:
        current = devices[0]
    device = st.selectbox(
        "device", devices, index=devices.index(current), key="hs_device_select", label_visibility="collapsed"
    )
    st.session_state.hs_device = device
    ds = state.devices[device]
    p = ds.latest
    left, right = st.columns([1, 2])
    with left:
        st.markdown(
            f"**{md(pretty(p.smoothed))}** for {duration_text(ds.run_seconds)} (window {p.window}: "
            f"raw {md(pretty(p.label))}, {p.latency_ms:.1f} ms, model {md_code(p.model)})"
        )
        if p.mode:
            worn = (
                f" · worn: **{WORN_TEXT[p.placement]}** (estimated from the gait)" if p.placement in WORN_TEXT else ""
            )
            st.caption(f"Mode **{md(p.mode)}**: {MODE_HINTS.get(p.mode, 'a mode this page does not know')}{worn}")
        st.vega_lite_chart(spec=probability_chart(p.smoothed_probs or p.probs, p.probs, classes_of(p)), width="stretch")
    with right:
        accuracy = ds.rolling_accuracy()
        label = (
            "no ground truth" if accuracy is None else f"rolling accuracy {accuracy:.0%} (last 100 labelled windows)"
        )
        st.markdown(f"**Activity, last {TIMELINE_S / 60:.0f} min** · {label}")
        st.vega_lite_chart(spec=timeline_chart(ds.segments(TIMELINE_S), TIMELINE_S), width="stretch")
        st.caption(
            "Final history: what happened, settled by the worker a few seconds after each window "
            "(hatched: not final yet). Now label: what the card shows at once."
        )
        if ds.today:
            st.vega_lite_chart(spec=today_chart(ds.today), width="stretch")
            st.caption(today_text(ds.today, md) + " (kept by the worker: a reload shows it again)")
    signal = ds.signal_frame()
    acc_col, gyro_col = st.columns(2)
    if len(signal["t"]):
        acc_col.vega_lite_chart(spec=signal_chart(signal["t"], signal["acc"], "acceleration", "g"), width="stretch")
        gyro_col.vega_lite_chart(spec=signal_chart(signal["t"], signal["gyro"], "gyroscope", "rad/s"), width="stretch")
    else:
        acc_col.caption("Waiting for this device's signal feed (the page subscribes to the device on screen).")
    matrix = ds.confusion()
    if matrix.sum():
        left, _ = st.columns([3, 2])
        left.markdown(
            f"**Confusion matrix since this page opened** ({int(matrix.sum()):,} labelled windows, "
            "displayed label vs ground truth; a transition on display counts as *unknown*)"
        )
        left.vega_lite_chart(spec=confusion_chart(matrix), width="stretch")
    return device


@st.fragment(run_every=REFRESH_S)
def live() -> None:
    try:
        subscriber, state = session()
    except BusAuthError as exc:  # an address off loopback without keys, a key file missing
        st.error(f"**Cannot subscribe to the bus**: {exc}")
        return
    started = time.perf_counter()
    now = time.monotonic()
    state.feed_all(subscriber.drain(), now)
    if now - st.session_state.hs_forgot > FORGET_EVERY_S:
        state.forget(now)
        st.session_state.hs_forgot = now
    show_health(state, subscriber.endpoint, now)
    devices = show_overview(state, now)
    subscriber.follow_signal(show_device(state, devices))
    ticks = st.session_state.hs_tick_ms
    ticks.append(1000 * (time.perf_counter() - started))
    del ticks[:-30]
    st.caption(
        f"{state.messages:,} messages · page tick {ticks[-1]:.0f} ms (median of last {len(ticks)}: "
        f"{sorted(ticks)[len(ticks) // 2]:.0f} ms) · refresh every {REFRESH_S:g} s"
    )


st.title("harstream · live activity recognition")
if admitted():
    live()
else:  # nothing from the bus reaches this session
    st.error("**Token needed**: open this page with `?token=` and the dashboard's --token.")
