"""``harstream bench failover``: kill -9 one of several workers on the durable log.

Starts a redis-server (Unix socket, temporary folder), the bridge, ``--workers``
worker processes (``harstream worker --redis``) and a simulator of
``--devices`` devices, lets them run, ``kill -9``s one worker and counts, from
the predictions received on the output bus:

- ``takeover_s``: the longest a window of the killed worker's devices waited
  after its last sample (arrival minus window end, wall clock) among windows
  ending after the kill (infinite if none of them arrived: no takeover);
  the normal wait is ``normal_p50_s``;
- ``lost_windows``: (device, window) keys missing between a device's first
  and last received window, plus those missing at a device's end: every
  device streams the same seconds, so each should reach the last window
  any device reached (within one window, for the run's last moments);
  ``stalled_devices`` counts devices more than one window short at the end;
- ``duplicate_windows``: keys received more than once on the bus (the
  Redis copies are idempotent by construction).
"""

from __future__ import annotations

import argparse

from harstream.commands._options import SECONDS, SPEED, Number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=Number(int, 1, 1_000_000), default=500)
    parser.add_argument("--workers", type=Number(int, 2, 64), default=3)
    parser.add_argument("--before", type=SECONDS, default=15.0, help="seconds before the kill")
    parser.add_argument("--after", type=SECONDS, default=15.0, help="seconds after the kill")
    parser.add_argument("--speed", type=SPEED, default=1.0, help="simulator speed (1 = real time)")
    parser.add_argument("--runtime", default="auto", help="worker runtime (auto = the shipped model; none = no model)")
    parser.add_argument("--lease-ms", type=Number(int, 100, 60_000), default=600)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (worker logs)")


def run(args: argparse.Namespace) -> int:
    result = measure_failover(
        args.devices,
        args.workers,
        args.before,
        args.after,
        args.speed,
        args.runtime,
        args.lease_ms,
        printer=print,
        keep_folder=args.keep,
    )
    print(result["line"], flush=True)
    if args.keep:
        print(f"failover: logs in {result['folder']}")
    return 0


def measure_failover(
    devices: int,
    workers: int,
    before: float,
    after: float,
    speed: float = 1.0,
    runtime: str = "auto",
    lease_ms: int = 600,
    partitions: int = 12,
    printer=None,
    keep_folder: bool = False,
    subjects=(2, 4, 9, 10, 12, 13, 18, 20, 24),
) -> dict:
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import threading
    import time
    from collections import Counter
    from pathlib import Path

    import zmq

    from harstream.simulator.replay import ReplaySchedule, devices_for, replay
    from harstream.stream.core.protocol import Prediction, decode_output
    from harstream.stream.data.recordings import load_embedded
    from harstream.stream.durable.bridge import serve_bridge
    from harstream.stream.durable.broker import Keys, connect, start_redis
    from harstream.stream.durable.leases import Leases

    say = printer or (lambda *_: None)
    folder = Path(tempfile.mkdtemp(prefix="hs-failover-"))
    redis_proc, url = start_redis(folder, unix_socket=folder / "redis.sock")
    out_addr = f"ipc://{folder}/out"
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"p/")
    sub.setsockopt(zmq.RCVHWM, 1_000_000)
    sub.bind(out_addr)
    received: list[tuple[float, Prediction]] = []
    stop_rx = threading.Event()

    def receive():
        while not stop_rx.is_set():
            if sub.poll(50):
                while True:
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    msg = decode_output(frames)
                    if isinstance(msg, Prediction):
                        received.append((time.time(), msg))

    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    stop_bridge, bridge_ready, bridge_addr = threading.Event(), threading.Event(), []

    def bridge_up(address: str) -> None:
        bridge_addr.append(address)
        bridge_ready.set()

    bridge = threading.Thread(
        target=serve_bridge,
        daemon=True,
        kwargs=dict(
            url=url,
            ingest=f"ipc://{folder}/in",
            partitions=partitions,
            stop=stop_bridge,
            printer=None,
            on_ready=bridge_up,
        ),
    )
    procs: dict[str, subprocess.Popen] = {}
    stop_sim = threading.Event()
    try:
        bridge.start()
        bridge_ready.wait(20)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}
        for i in range(workers):
            wid = f"w{i}"
            procs[wid] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "harstream",
                    "worker",
                    "--redis",
                    url,
                    "--publish",
                    ">" + out_addr,
                    "--id",
                    wid,
                    "--runtime",
                    runtime,
                    "--partitions",
                    str(partitions),
                    "--lease-ms",
                    str(lease_ms),
                    "--signal-interval",
                    "0",
                    "--stats-every",
                    "1000",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(folder / f"{wid}.log", "w"),
            )
        leases = Leases(connect(url), Keys(), lease_ms)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # every worker started and balanced
            held = Counter(h.split()[0] for h in leases.holders(partitions) if h)
            if len(held) == workers and sum(held.values()) == partitions:
                break
            time.sleep(0.2)
        say(f"failover: {workers} workers balanced: {dict(held)}")
        recordings = load_embedded().of_subjects(list(subjects))
        sim = threading.Thread(
            target=replay,
            daemon=True,
            kwargs=dict(
                schedule=ReplaySchedule(devices_for(recordings, devices), chunk=10, loop=True),
                publish=bridge_addr[0],
                speed=speed,
                stop=stop_sim,
                printer=None,
            ),
        )
        sim.start()
        time.sleep(before)
        holders = leases.holders(partitions)
        victim = "w0"
        orphaned = {p for p, h in enumerate(holders) if h and h.split()[0] == victim}
        killed_at = time.time()
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        say(f"failover: killed {victim} (partitions {sorted(orphaned)}) at +{before:.0f} s")
        time.sleep(after)
        stop_sim.set()
        sim.join(10)
        time.sleep(3.0)  # let the last windows arrive
    finally:  # whatever happened (a broker timeout on a loaded machine), nothing is left running
        stop_sim.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            proc.wait(30)
        stop_bridge.set()
        bridge.join(10)
        stop_rx.set()
        rx.join(5)
        sub.close(0)
        redis_proc.terminate()
        redis_proc.wait(10)
    result = score(received, killed_at, orphaned, partitions, victim)
    result["line"] = (
        f"takeover_s={result['takeover_s']:.3f} lost_windows={result['lost_windows']} "
        f"stalled_devices={result['stalled_devices']} "
        f"duplicate_windows={result['duplicate_windows']} devices={result['devices']} "
        f"normal_p50_s={result['normal_p50_s']:.3f} orphaned_devices={result['orphaned_devices']} "
        f"workers={workers} runtime={runtime} lease_ms={lease_ms}"
    )
    if keep_folder:
        result["folder"] = str(folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def score(received, killed_at: float, orphaned: set[int], partitions: int, victim: str) -> dict:
    """The failover figures from (arrival wall time, prediction) pairs."""
    from collections import Counter

    import numpy as np

    from harstream.stream.durable.partitions import partition_of

    count = Counter((p.device, p.window) for _, p in received)
    windows: dict[str, set[int]] = {}
    for device, window in count:
        windows.setdefault(device, set()).add(window)
    gaps = sum(max(w) - min(w) + 1 - len(w) for w in windows.values())
    last_all = max((max(w) for w in windows.values()), default=0)
    short = {d: last_all - max(w) - 1 for d, w in windows.items() if last_all - max(w) > 1}
    lost = gaps + sum(short.values())
    duplicates = sum(1 for c in count.values() if c > 1)
    waits_after = [
        t - p.t_end for t, p in received if partition_of(p.device, partitions) in orphaned and p.t_end > killed_at
    ]
    normal = [t - p.t_end for t, p in received if p.t_end < killed_at]
    orphaned_devices = {d for d in windows if partition_of(d, partitions) in orphaned}
    return {
        "takeover_s": max(waits_after) if waits_after else float("inf"),
        "lost_windows": lost,
        "stalled_devices": len(short),
        "duplicate_windows": duplicates,
        "devices": len(windows),
        "orphaned_devices": len(orphaned_devices),
        "normal_p50_s": float(np.median(normal)) if normal else float("nan"),
        "predictions": len(received),
        "by_worker": dict(Counter(p.worker for _, p in received)),
    }
