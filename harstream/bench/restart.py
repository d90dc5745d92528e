"""``harstream bench restart``: how fast a killed worker is back.

Replays devices at real speed into a worker process, then repeatedly kills
the worker with SIGKILL and starts a new one on the same addresses. For each
restart it measures, from the new process's start, when its first
prediction arrives on the output bus, and per device how many windows of the
64-sample grid went unlabelled between the last window of the killed worker
and the first of its successor. The baseline in the same run is the full
start path (``--no-fast-start``: Keras load, runtime checks); the fast start
loads the checked LiteRT conversion (of a staged model: numpy features and the
decision stage's conversion, from its staged serving record). Also measured: when the new worker had
bound its output (the subscriber's reconnect, seen by a socket monitor). Goal:
first prediction < 1.28 s after start, at most one window lost per device.
The simulator replays each device's last window of messages to a new
subscriber (tail replay), so the new worker's first window is ready as soon
as its subscription reaches the simulator. With ``--no-tail-replay`` a first
window needs 128 samples from the first one the new worker receives (the
first one published after the kill, handed over from the producer's queue),
so the first prediction comes one window (2.56 s) after the kill at best.
"""

from __future__ import annotations

import argparse

from harstream.commands._options import COUNT, Number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=COUNT, default=5, help="fast restarts measured")
    parser.add_argument(
        "--baseline-repeats", type=Number(int, 0, 1000), default=1, help="full-path restarts measured (0 = none)"
    )
    parser.add_argument("--devices", type=Number(int, 1, 100_000), default=4)
    parser.add_argument("--model", default=None, help="model artifact (default: the shipped model)")
    parser.add_argument(
        "--no-tail-replay",
        dest="tail_replay",
        action="store_false",
        help="the simulator does not replay its tail to a new subscriber",
    )


def run(args: argparse.Namespace) -> int:
    import os
    import statistics
    import tempfile
    import threading

    import numpy as np

    from harstream.simulator.replay import ReplayDevice, ReplaySchedule, replay

    folder = tempfile.mkdtemp(prefix="hs-restart-")
    env = {**os.environ, "HARSTREAM_INGEST": f"ipc://{folder}/in", "HARSTREAM_OUTPUT": f"ipc://{folder}/out"}
    rng = np.random.default_rng(0)
    devs = [
        ReplayDevice(f"dev-{i}", rng.normal(0, 0.3, (3000, 6)).astype(np.float32), None) for i in range(args.devices)
    ]
    reader = _Reader(env["HARSTREAM_OUTPUT"])
    stop = threading.Event()
    worker = _start(env, args.model, fast=True)  # the first start writes the conversion's record if missing
    sim = threading.Thread(
        target=replay,
        daemon=True,
        kwargs=dict(
            schedule=ReplaySchedule(devs, chunk=10, loop=True),
            publish=env["HARSTREAM_INGEST"],
            speed=1.0,
            stop=stop,
            wait_subscriptions=1,
            wait_timeout=600,
            printer=None,
            tail_replay=args.tail_replay,
        ),
    )
    sim.start()
    print(
        f"load average at start: {os.getloadavg()[0]:.1f} (2 cores shared with other jobs); "
        f"tail replay {'on' if args.tail_replay else 'off'}",
        flush=True,
    )
    rows: dict[str, list[tuple[float, float, float, int]]] = {"full start (baseline)": [], "fast start": []}
    try:
        names = [d.device for d in devs]
        plan = [("full start (baseline)", False)] * args.baseline_repeats + [("fast start", True)] * args.repeats
        for label, fast in plan:
            if not reader.wait_each(names, worker.pid, 2, timeout=600):
                raise SystemExit("restart bench: the worker never served every device")
            worker.kill()
            killed = reader.clock()
            worker.wait()
            mark = len(reader.predictions)
            reader.connected.clear()
            worker = _start(env, args.model, fast=fast)
            started = reader.clock()
            if not reader.wait_each(names, worker.pid, 2, timeout=600):
                raise SystemExit("restart bench: the restarted worker never served every device")
            got = reader.predictions
            first_at = min(at for at, p in got[mark:] if p.worker == f"worker-{worker.pid}")
            bound = min((t for t in reader.connected if t >= started), default=float("nan")) - started
            lost = max(
                _lost([p for _, p in got[:mark] if p.device == n], [p for _, p in got[mark:] if p.device == n])
                for n in names
            )
            rows[label].append((bound, first_at - started, first_at - killed, lost))
            print(
                f"{label}: bound {bound:.2f} s, first prediction {first_at - started:.2f} s after start "
                f"({first_at - killed:.2f} s after the kill), at most {lost} window(s) lost per device",
                flush=True,
            )
    finally:
        stop.set()
        sim.join(10)
        worker.kill()
        worker.wait()
        reader.close()
    print()
    print(
        "| start path | restarts | start → output bound, median s | start → first prediction, median (max) s "
        "| kill → first prediction, median s | windows lost per device, max |"
    )
    print("|---|---|---|---|---|---|")
    for label, results in rows.items():
        if results:
            bounds, firsts, since_kills, losts = zip(*results)
            print(
                f"| {label} | {len(results)} | {statistics.median(bounds):.2f} | {statistics.median(firsts):.2f} "
                f"({max(firsts):.2f}) | {statistics.median(since_kills):.2f} | {max(losts)} |"
            )
    return 0


def _start(env: dict, model: str | None, fast: bool):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "harstream", "worker", "--stats-every", "3600"]
    cmd += ["--model", model] if model else []
    cmd += [] if fast else ["--no-fast-start"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _lost(before: list, after: list) -> int:
    """Windows of the 64-sample grid missing between the two workers' labels
    (0 also when the successor's first window overlaps the last one labelled,
    as it does when it is built from the replayed tail); -1: no data."""
    if not before or not after:
        return -1
    last, first = max(p.t_end for p in before), min(p.t_end for p in after)
    return max(0, int(round((first - last) * 50) // 64) - 1)


class _Reader:
    """Predictions on the output bus with their arrival time, read in a thread."""

    def __init__(self, address: str):
        import threading
        import time

        import zmq

        self.clock = time.monotonic
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"p/")
        self.sock.setsockopt(zmq.RECONNECT_IVL, 10)  # notice a new worker's bind within 10 ms
        self.connected: list[float] = []  # when the SUB (re)connected: the worker had bound its output
        self._monitor = self.sock.get_monitor_socket(zmq.EVENT_CONNECTED)
        self.sock.connect(address)
        self.predictions: list = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import zmq

        from harstream.stream.core.protocol import decode_prediction

        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(20))
            if self._monitor in ready:
                self._monitor.recv_multipart()
                self.connected.append(self.clock())
            if self.sock in ready:
                frames = self.sock.recv_multipart()
                self.predictions.append((self.clock(), decode_prediction(frames)))

    def wait_each(self, names: list[str], pid: int, count: int, timeout: float) -> bool:
        import time

        deadline = time.monotonic() + timeout
        me = f"worker-{pid}"
        while time.monotonic() < deadline:
            mine = [p.device for _, p in self.predictions if p.worker == me]
            if all(mine.count(n) >= count for n in names):
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.disable_monitor()
        self._monitor.close(0)
        self.sock.close(0)
        self.ctx.term()
