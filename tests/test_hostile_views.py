"""What people look at, fed hostile text: `harstream tail` in a terminal, the
dashboard in a browser, log lines. A publisher that reaches an output
subscriber (a tail or dashboard bound on loopback without keys takes any local
publisher) must not get terminal control sequences onto a screen, markdown
or HTML into the page, or a forged line into a log; what it sends is counted
as malformed and the real messages beside it are still shown."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import zmq

from harstream.stream.core.protocol import (
    HistoryUpdate,
    Prediction,
    Signal,
    encode_history,
    encode_prediction,
    encode_signal,
    encode_stats,
)

HARSTREAM = [str(Path(sys.executable).parent / "harstream")]
#: Terminal control (ANSI CSI: clear the screen; OSC: set the window title), a
#: forged line, bidi overrides and zero-width characters.
HOSTILE = [
    "\x1b[2J\x1b[31mSITTING",
    "\x1b]0;owned\x07WALKING",
    "WALKING\nd9    #1   LAYING   1.00",
    "\u202eGNIKLAW",
    "WALK\u200bING",
    "\x9b2J",  # the 8-bit CSI
]


def prediction(device: str = "d1", window: int = 0, **fields) -> Prediction:
    p = Prediction(device, window, 0.0, 2.54, "SITTING", [0.1, 0.9], "SITTING", [0.1, 0.9], "m", 1.0)
    p.classes = ["STANDING", "SITTING"]
    for k, v in fields.items():
        setattr(p, k, v)
    return p


def forged() -> list[list[bytes]]:
    """Output messages whose text carries terminal control or layout tricks."""
    out = []
    for text in HOSTILE:
        for field in ("label", "smoothed", "truth", "model", "mode", "worker"):
            out.append(encode_prediction(prediction(**{field: text})))
        out.append(encode_prediction(prediction(classes=["STANDING", text], smoothed=text)))
        piece = {"start": 1.0, "end": 2.0, "label": text, "final": True}
        out.append(encode_history(HistoryUpdate("d1", [piece])))
        out.append(encode_history(HistoryUpdate("d1", [{**piece, "label": "SITTING"}], mode=text, worker=text)))
        out.append(encode_stats(text, {"devices": 1}))
        out.append(encode_stats("w", {"devices": 1, "model": text, "runtime": text}))
        out.append(encode_stats("w", {"devices": 1, "drops": {text: 1}, "broker": {"up": 1, "partitions": text}}))
    return out


def run_tail(address: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.Popen(
        [*HARSTREAM, "tail", "--subscribe", "@" + address, "--count", "1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_tail_prints_no_terminal_control_or_layout_character_a_publisher_sent(tmp_path: Path):
    """A tail bound on loopback (``@ipc://…``) takes any local publisher: its
    predictions, final history and stats lines reached the terminal verbatim
    (escape sequences cleared it or set its title; a newline forged a line).
    A prediction or history carrying such text is refused by the decoder (so
    the dashboard and the gateway refuse it too); a stats line shows any
    unprintable character as its escape; the good message is printed."""
    plain, final = f"ipc://{tmp_path}/plain", f"ipc://{tmp_path}/final"
    tails = [run_tail(plain, "--stats"), run_tail(final, "--final")]
    ctx = zmq.Context()
    pubs = []
    try:
        for address in (plain, final):
            pub = ctx.socket(zmq.PUB)
            pub.setsockopt(zmq.LINGER, 0)
            pub.connect(address)
            pubs.append(pub)
        good_piece = {"start": 1.0, "end": 2.0, "label": "SITTING", "final": True}
        good = [encode_prediction(prediction("good", 7)), encode_history(HistoryUpdate("good", [good_piece]))]
        deadline = time.monotonic() + 20
        while any(t.poll() is None for t in tails) and time.monotonic() < deadline:
            for pub in pubs:
                for frames in forged():
                    pub.send_multipart(frames)
                for frames in good:  # after the forged ones: the tail stops at the first it takes
                    pub.send_multipart(frames)
            time.sleep(0.05)
        outputs = [t.communicate(timeout=10) for t in tails]
    finally:
        for t in tails:
            if t.poll() is None:
                t.kill()
        for pub in pubs:
            pub.close(0)
        ctx.term()
    for (out, err), tail in zip(outputs, tails):
        text = out.decode("utf-8")
        assert tail.returncode == 0, err.decode()
        assert "good" in text, text
        for ch in "\x1b\x07\x9b\u202e\u200b":
            assert ch not in text, f"{ch!r} reached the terminal: {text!r}"
        assert not any(line.startswith("d9") for line in text.splitlines()), text  # no forged line


# ------------------------------------------------------------ the dashboard


class Beacon:
    """A loopback HTTP server that records every path asked of it: an image
    or link the page was made to load."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.paths: list[str] = []
        paths = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                paths.append(self.path)
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def markdown_forgeries(url: str) -> list[list[bytes]]:
    """Output messages whose printable text is markdown: images from ``url``
    (which the browser would load as soon as the page is drawn), a link."""

    def image(name: str) -> str:
        return f"![{name}]({url}/{name}.png)"

    stats = {
        "devices": 1,
        "model": image("stats-model"),
        "runtime": image("runtime"),
        "batch_mean": image("batch"),
        "pending": f"[click]({url}/link)",
        "drops": {image("drop"): 3},
    }
    p = prediction("d1", 3, model=f"x` {image('model')} `x", mode="**m**", label=image("label"), smoothed="SITTING")
    piece = {"start": 1.0, "end": 2.0, "label": "SITTING", "final": True}
    today = {"day": "2026-12-07", "minutes": {f"[t]({url})": 5.0}}  # a category's name: 32 characters at most
    broken = prediction("d1", 4, latency_ms=image("latency"))  # formatted as a number by the page
    history = encode_history(HistoryUpdate("d1", [piece], today=today))
    # the device on screen's raw signal at a rate of 1e308: its window of seconds overflowed
    signal = encode_signal(Signal("d1", 0.0, 1e308, [[0.0, 0.0, 1.0]] * 5, [[0.0, 0.0, 0.0]] * 3))
    return [encode_stats("w", stats), encode_prediction(p), history, encode_prediction(broken), signal]


def test_dashboard_shows_markdown_in_bus_text_as_text_and_loads_nothing_it_names(tmp_path: Path):
    """The page writes the model's id, the mode, labels, the workers' stats
    (model, runtime, drop reasons) and the day's minutes into Streamlit
    markdown; markdown in them (an image from any address, a link) was
    rendered: a publisher made every viewer's browser fetch a URL of its
    choosing. Now such text is shown as it is, and nothing is fetched."""
    from playwright.sync_api import sync_playwright
    from test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, dashboard_port, page_problems

    beacon = Beacon()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    port = dashboard_port()
    dashboard = subprocess.Popen(
        [*HARSTREAM, "dashboard", "--port", str(port), "--subscribe", pub.getsockopt_string(zmq.LAST_ENDPOINT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            deadline = time.monotonic() + 60
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}/", timeout=5000)
                    break
                except Exception:
                    assert time.monotonic() < deadline, "the dashboard did not come up"
                    time.sleep(0.3)
            shown = "() => document.body.innerText.includes('stats-model') && document.body.innerText.includes('today')"
            deadline = time.monotonic() + 60
            while True:
                for frames in markdown_forgeries(beacon.url):
                    pub.send_multipart(frames)
                try:
                    page.wait_for_function(shown, timeout=500)
                    break
                except Exception:
                    assert time.monotonic() < deadline, page.inner_text("body")[:2000]
            page.wait_for_timeout(1500)  # a refresh or two more
            links = page.eval_on_selector_all(
                "a[href], img[src]",
                f"els => els.filter(e => (e.href || e.src).includes('{beacon.url}')).map(e => e.parentElement.outerHTML.slice(0, 300))",
            )
            text = page.inner_text("body")
            assert not page_problems(page)
            browser.close()
    finally:
        os.killpg(dashboard.pid, 15)
        dashboard.wait(10)
        pub.close(0)
        ctx.term()
        beacon.close()
    assert beacon.paths == [], f"the page fetched {beacon.paths}"
    assert links == [], links
    assert "![stats-model]" in text and "![drop]" in text, text[:2000]


def test_the_dashboard_keeps_a_bounded_number_of_workers_stats_whatever_ids_arrive():
    """Every stats message was kept under its worker's id for good: workers
    restarting under new ids, or a publisher inventing one per message (each
    up to a header's 64 KiB), grew the page's memory without end, and
    the health line walked them all each tick. Now the least recently heard
    go past 64, and any not heard for 10 minutes are forgotten; one message's
    drop reasons are taken up to 64."""
    from harstream.dashboard.state import FORGET_AFTER_S, MAX_WORKERS, LiveState

    state = LiveState()
    padding = "x" * 2_000
    for i in range(200):
        assert state.feed(encode_stats(f"w-{i}", {"devices": 1, "padding": padding}), now=float(i) / 100)
    assert len(state.stats) == MAX_WORKERS
    assert "w-199" in state.stats and "w-0" not in state.stats  # the newest kept
    reasons = {f"r{i}": 1 for i in range(5_000)}
    assert state.feed(encode_stats("flood", {"devices": 1, "drops": reasons}), now=20.0)
    assert len(state.health(20.0).drops) <= 64
    state.forget(20.0 + FORGET_AFTER_S + 1)
    assert state.stats == {}


# ------------------------------------------------------------ the phone page


def test_a_prediction_whose_probabilities_are_no_list_of_numbers_is_not_forwarded_to_the_phone(running_gateway):
    """The gateway re-encodes each prediction for its phone: probabilities
    nested 900 deep (JSON allows it; deeper fails to decode) were decoded,
    encoded again and sent to the phone as they were. A prediction's
    probabilities must now be a flat list of at most 64 numbers (refused as
    header otherwise, counted as bad_predictions), and the good one after
    it arrives."""
    import asyncio
    import contextlib
    import json

    from websockets.asyncio.client import connect

    deep: list = []
    for _ in range(900):
        deep = [deep]

    async def main():
        async with running_gateway(output=True) as (gw, tap):
            async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                await ws.send(json.dumps({"type": "hello", "device": "p1"}))
                await ws.recv()
                good = prediction("phone:p1", 1)
                async with asyncio.timeout(10):
                    while True:  # the forged one first, then a good one, until the subscription is live
                        await tap.pub.send_multipart(encode_prediction(prediction("phone:p1", 0, probs=deep)))
                        await tap.publish(good)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.1):
                                msg = json.loads(await ws.recv())
                                break
                assert msg["type"] == "prediction" and msg["probs"] == [0.1, 0.9], msg
                assert gw.stats()["counts"]["bad_predictions"] >= 1

    asyncio.run(main())
