"""``harstream bench capacity``: how many live 50 Hz devices a worker keeps up with.

For each device count, starts real processes on free loopback ports — a
worker (or a proxy and N sharded workers) and ``harstream simulate --devices
N --loop --speed 1`` — and reads the workers' stats messages for the whole
run. A run *keeps up* when the workers take in at least 97 % of the offered
samples, nothing is dropped anywhere, and the lag (age of a window's last
sample when its prediction leaves) does not grow from the first to the last
third of the run. Prints a Markdown table for docs/BENCHMARKS.md.

With ``--redis`` each run is made twice, on the bus and on the durable path
(a redis-server on a Unix socket, ``harstream bridge`` and ``harstream worker
--redis`` processes), and a second table sets the two side by side: the CPU
of every process of the path (worker(s) and proxy on the bus; worker(s),
bridge and redis-server on the log; the simulator in neither) and the
device-seconds served per CPU-second.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from harstream.commands._options import PARTITIONS, SECONDS, SECONDS_OR_OFF, Number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=Number(int, 1, 1_000_000), nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--duration", type=SECONDS, default=60.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=SECONDS_OR_OFF, default=10.0, help="seconds before measuring")
    parser.add_argument(
        "--shards", type=Number(int, 1, 64), nargs="+", default=[1], help="worker counts to try (>1 uses the proxy)"
    )
    parser.add_argument("--runtime", default="auto", help="worker runtime (none = inference off)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--chunk", type=Number(int, 1, 50_000), default=10, help="samples per message")
    parser.add_argument(
        "--speed", type=Number(float, 0, 1000), default=1.0, help="simulator speed (0 = as fast as the bus takes)"
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="with --shards > 1: no proxy; the simulator binds the ingest and each worker "
        "connects to it (its shard's topics filtered at the publisher) and to the bench",
    )
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every worker, e.g. --worker-arg=--whole-model (repeatable)",
    )
    parser.add_argument(
        "--bridge-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="with --redis: extra argument for the bridge, e.g. --bridge-arg=--flush-ms=40 (repeatable)",
    )
    parser.add_argument(
        "--watch-signals",
        action="store_true",
        help="subscribe to every device's signal feed too (g/), as if a page showed all of "
        "them; by default only stats are subscribed, and a worker makes no signal feed "
        "nobody receives",
    )
    parser.add_argument(
        "--personal",
        type=Number(int, 0, 10**6),
        default=None,
        metavar="N",
        help="the devices declare placement any (the placement-free model serves them) and the first N "
        "of them are calibrated: a personal model each, written into a fresh --personal-dir; "
        "0 = any mode, none calibrated (the baseline to compare with)",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="measure the durable path too (redis-server + bridge + workers on the log), "
        "each device count right after the bus path's run, and compare their CPU per device-second",
    )
    parser.add_argument(
        "--partitions", type=PARTITIONS, default=12, help="partitions of the log with --redis (default 12)"
    )
    parser.add_argument(
        "--profile", default=None, metavar="FILE", help="run the (first) worker under cProfile and write the stats here"
    )


def run(args: argparse.Namespace) -> int:
    import os

    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores shared with other jobs)")
    rows, pairs = [], []
    for shards in args.shards:
        for n in args.devices:
            if args.personal is not None:
                from harstream.bench.personal_models import calibrated_devices

                folder, placed = calibrated_devices(n, args.personal)
                run_args = argparse.Namespace(**vars(args))
                run_args.worker_arg = [*args.worker_arg, f"--personal-dir={folder}", "--personal-poll=0.5"]
                result = measure(n, shards, run_args, ["--placement", "any"])
                print(f"personal models written: {placed} of {n} devices ({folder})", flush=True)
            else:
                result = measure(n, shards, args)
            rows.append(result)
            print(row(result), flush=True)
            if getattr(args, "redis", False):
                durable = measure(n, shards, args, durable=True)
                rows.append(durable)
                pairs.append((result, durable))
                print(row(durable), flush=True)
    print()
    print(HEADER)
    for r in rows:
        print(row(r))
    if pairs:
        print()
        print(PATHS_HEADER)
        for bus, durable in pairs:
            print(paths_row(bus, durable))
    return 0


PATHS_HEADER = (
    "| devices | workers | bus: CPU (cores) | bus: device-s per CPU-s | durable: CPU (cores: workers + bridge + "
    "redis) | durable: device-s per CPU-s | durable cost per device-s (x bus) | both keep up |\n"
    "|---|---|---|---|---|---|---|---|"
)


def per_cpu(r: dict) -> float:
    """Device-seconds served per CPU-second of every process of the path."""
    return r["taken"] / 50 / r["path_cpu"] if r["path_cpu"] > 0 else float("nan")


def paths_row(bus: dict, durable: dict) -> str:
    d = durable["path_parts"]
    return (
        f"| {bus['devices']} | {bus['workers']} | {bus['path_cpu']:.2f} | {per_cpu(bus):,.0f} "
        f"| {durable['path_cpu']:.2f} ({d['workers']:.2f} + {d['bridge']:.2f} + {d['redis']:.2f}) "
        f"| {per_cpu(durable):,.0f} | {per_cpu(bus) / per_cpu(durable):.2f} "
        f"| {'yes' if bus['ok'] and durable['ok'] else 'no'} |"
    )


HEADER = (
    "| devices | workers | offered samples/s | taken samples/s | windows/s | batch mean | latency p50 / p99 ms "
    "| worst 1-s p99 ms | lag p50 / p99 ms | drops (sim / worker) | worker CPU (cores) | device-s per worker CPU-s "
    "| simulator CPU | load avg | between places / taken back | keeps up |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def row(r: dict) -> str:
    return (
        f"| {r['devices']} | {r['workers']}{' (log)' if r.get('durable') else ''} | {r['offered']:,.0f} | {r['taken']:,.0f} | {r['windows']:,.0f} "
        f"| {r['batch']:.1f} | {r['lat50']:.1f} / {r['lat99']:.1f} | {r['lat99max']:.1f} "
        f"| {r['lag50']:.0f} / {r['lag99']:.0f} | {r['sim_drops']} / {r['worker_drops']} | {r['worker_cpu']:.2f} "
        f"| {r['taken'] / 50 / r['worker_cpu'] if r['worker_cpu'] > 0 else float('nan'):,.0f} | {r['sim_cpu']:.2f} "
        f"| {r['load']:.1f} | {r.get('between', 'off')} "
        f"| {'yes' if r['ok'] else 'no'} |"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc), 0 if gone."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def free_address() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def start_workers(shards: int, args: argparse.Namespace, env: dict, extra: list[str] | None = None):
    """Worker (and proxy) processes; returns (processes, output address: the
    bench binds it with ``--direct``, else connects)."""
    import subprocess
    import sys

    exe = [sys.executable, "-m", "harstream"]
    procs = []
    base = ["worker", "--runtime", args.runtime, "--stats-every", "1000"] + list(getattr(args, "worker_arg", []))
    base += extra or []
    if args.model:
        base += ["--model", args.model]
    if shards == 1:
        cmd = exe + base
        if args.profile:
            cmd = [sys.executable, "-m", "cProfile", "-o", args.profile, "-m", "harstream"] + base
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
        return procs, env["HARSTREAM_OUTPUT"]
    if getattr(args, "direct", False):  # no proxy: workers connect to the simulator and to the bench
        for k in range(shards):
            cmd = base + [
                "--shard",
                f"{k}/{shards}",
                "--ingest",
                ">" + env["HARSTREAM_INGEST"],
                "--publish",
                ">" + env["HARSTREAM_OUTPUT"],
            ]
            procs.append(subprocess.Popen(exe + cmd, env=env, stdout=subprocess.DEVNULL))
        return procs, env["HARSTREAM_OUTPUT"]
    from harstream.stream.bus.proxy import default_output_secret

    backs = free_address(), free_address()
    procs.append(
        subprocess.Popen(
            exe + ["proxy", "--ingest-backend", backs[0], "--output-backend", backs[1]],
            env=env,
            stdout=subprocess.DEVNULL,
        )
    )
    for k in range(shards):
        cmd = base + ["--shard", f"{k}/{shards}", "--ingest", ">" + backs[0], "--publish", ">" + backs[1]]
        cmd += ["--output-secret", str(default_output_secret(backs[1]))]  # the proxy's, by default
        procs.append(subprocess.Popen(exe + cmd, env=env, stdout=subprocess.DEVNULL))
    return procs, env["HARSTREAM_OUTPUT"]


def start_durable(shards: int, args: argparse.Namespace, env: dict, folder):
    """redis-server, the bridge (binding the ingest) and ``shards`` workers on
    the log (connecting to the output, which the bench binds); returns
    (processes, output address, {part: pids} for the CPU count)."""
    import subprocess
    import sys

    from harstream.stream.durable.broker import start_redis

    redis_proc, url = start_redis(folder, unix_socket=folder / "redis.sock")
    exe = [sys.executable, "-m", "harstream"]
    partitions = str(args.partitions)
    bridge = subprocess.Popen(
        exe
        + ["bridge", "--redis", url, "--partitions", partitions, "--stats-every", "1000"]
        + list(getattr(args, "bridge_arg", [])),
        env=env,
        stdout=subprocess.DEVNULL,
    )
    base = ["worker", "--runtime", args.runtime, "--stats-every", "1000", "--redis", url, "--partitions", partitions]
    base += list(getattr(args, "worker_arg", []))
    if args.model:
        base += ["--model", args.model]
    workers = [
        subprocess.Popen(
            exe + base + ["--publish", ">" + env["HARSTREAM_OUTPUT"], "--id", f"log-worker-{k}"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for k in range(shards)
    ]
    parts = {"workers": [w.pid for w in workers], "bridge": [bridge.pid], "redis": [redis_proc.pid]}
    # redis-server last: the others stop first (SIGTERM), so nothing waits on a broker gone away
    return [bridge, *workers, redis_proc], env["HARSTREAM_OUTPUT"], parts


def stop(procs) -> None:
    import signal

    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except Exception:
            p.kill()


def measure(
    n: int, shards: int, args: argparse.Namespace, sim_extra: list[str] | None = None, durable: bool = False
) -> dict:
    import os
    import re
    import shutil
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    import numpy as np
    import zmq

    from harstream.stream.core.protocol import decode_stats

    env = {
        **os.environ,
        "HARSTREAM_INGEST": free_address(),
        "HARSTREAM_OUTPUT": free_address(),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    folder = Path(tempfile.mkdtemp(prefix="hs-cap-")) if durable else None
    if folder is not None:
        procs, output, parts = start_durable(shards, args, env, folder)
    else:
        procs, output = start_workers(shards, args, env)
        parts = {"workers": [p.pid for p in procs[-shards:]], "proxy": [p.pid for p in procs[:-shards]]}
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"stats/")
    if getattr(args, "watch_signals", False):
        sub.setsockopt(zmq.SUBSCRIBE, b"g/")
    direct = getattr(args, "direct", False) and shards > 1 and not durable
    if durable:  # the workers on the log connect to us
        sub.bind(output)
    elif direct:  # the workers connect to us, and the simulator binds the ingest
        sub.bind(output)
        sim_extra = [*(sim_extra or []), "--publish", "@" + env["HARSTREAM_INGEST"]]
    else:
        sub.connect(output)
    sim = None
    try:
        seen: set[str] = set()
        deadline = time.monotonic() + 300
        while len(seen) < shards and time.monotonic() < deadline:  # workers up (model loaded)
            if sub.poll(1000):
                seen.add(decode_stats(sub.recv_multipart())["worker"])
        if len(seen) < shards:
            raise SystemExit(f"capacity: only {len(seen)} of {shards} workers started")
        total = args.warmup + args.duration
        sim_cmd = [
            sys.executable,
            "-m",
            "harstream",
            "simulate",
            "--devices",
            str(n),
            "--loop",
            "--speed",
            str(args.speed),
            "--chunk",
            str(args.chunk),
            "--duration",
            str(total),
        ]
        sim = subprocess.Popen(sim_cmd + (sim_extra or []), env=env, stdout=subprocess.PIPE, text=True)
        t_start = time.monotonic()
        samples_rows = []
        cpu_rows: list[tuple[float, float, float, dict]] = []  # (t, worker CPU s, simulator CPU s, per part)
        worker_pids = parts["workers"]
        while sim.poll() is None or time.monotonic() - t_start < total + 2:
            if time.monotonic() - t_start > total + 60:
                break
            if sub.poll(500):
                frames = sub.recv_multipart()
                if not frames[0].startswith(b"stats/"):
                    continue  # a signal message (--watch-signals)
                s = decode_stats(frames)
                s["_t"] = time.monotonic() - t_start
                samples_rows.append(s)
                cpu_rows.append(
                    (
                        s["_t"],
                        sum(cpu_seconds(p) for p in worker_pids),
                        cpu_seconds(sim.pid),
                        {part: sum(cpu_seconds(p) for p in pids) for part, pids in parts.items()},
                    )
                )
            elif sim.poll() is not None and time.monotonic() - t_start > total + 2:
                break
        sim_out = sim.stdout.read() if sim.stdout else ""
        load = os.getloadavg()[0]
    finally:
        if sim is not None and sim.poll() is None:
            sim.terminate()
            sim.wait(10)
        stop(procs)
        sub.close(0)
        ctx.term()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    # Stats from the simulator's own clock: time after warm-up, before it stopped.
    t_sim_started = min((s["_t"] for s in samples_rows if s["samples_per_s"] > 0), default=0.0)
    window = [s for s in samples_rows if t_sim_started + args.warmup <= s["_t"] <= t_sim_started + total]
    sim_drops = int(m.group(1)) if (m := re.search(r"drops=(\d+)", sim_out.splitlines()[-1] if sim_out else "")) else -1
    sim_rate = re.search(r"\(([\d.]+)/s\)", sim_out.splitlines()[-1]) if sim_out else None

    def per_second(key: str) -> np.ndarray:
        return np.array([s[key] for s in window if s.get(key) is not None], dtype=float)

    def summed(key: str) -> float:
        # Each worker reports its own rate; add them up per second.
        by_worker: dict[str, list[float]] = {}
        for s in window:
            by_worker.setdefault(s["worker"], []).append(s[key])
        return float(sum(np.median(v) for v in by_worker.values())) if by_worker else 0.0

    in_window = [c for c in cpu_rows if t_sim_started + args.warmup <= c[0] <= t_sim_started + total]
    if len(in_window) >= 2:
        span = in_window[-1][0] - in_window[0][0]
        worker_cpu = (in_window[-1][1] - in_window[0][1]) / span
        alive = [c for c in in_window if c[2] > 0]  # 0 once the simulator has exited
        sim_cpu = (alive[-1][2] - alive[0][2]) / (alive[-1][0] - alive[0][0]) if len(alive) >= 2 else float("nan")
        path_parts = {part: (in_window[-1][3][part] - in_window[0][3][part]) / span for part in parts}
    else:
        worker_cpu = sim_cpu = float("nan")
        path_parts = {part: float("nan") for part in parts}
    lag = per_second("lag_p50_ms")
    thirds = np.array_split(lag, 3) if len(lag) >= 3 else [lag, lag, lag]
    growing = len(lag) >= 3 and np.median(thirds[2]) > np.median(thirds[0]) + 250.0
    last = {}
    for s in samples_rows:
        last[s["worker"]] = s
    worker_drops = sum(sum(s.get("drops", {}).values()) for s in last.values())
    offered = n * 50.0 * (args.speed or 1.0) if args.speed else (float(sim_rate.group(1)) if sim_rate else 0.0)
    taken = summed("samples_per_s")
    lat99 = per_second("latency_p99_ms")
    return {
        "devices": n,
        "workers": shards,
        "offered": offered,
        "taken": taken,
        "windows": summed("windows_per_s"),
        "batch": float(np.median(per_second("batch_mean"))) if len(window) else 0.0,
        "lat50": float(np.median(per_second("latency_p50_ms"))) if len(window) else float("nan"),
        "lat99": float(np.median(lat99)) if len(lat99) else float("nan"),
        "lat99max": float(lat99.max()) if len(lat99) else float("nan"),
        "lag50": float(np.median(lag)) if len(lag) else float("nan"),
        "lag99": float(np.median(per_second("lag_p99_ms"))) if len(window) else float("nan"),
        "sim_drops": sim_drops,
        "worker_drops": worker_drops,
        "load": load,
        "worker_cpu": worker_cpu,
        "sim_cpu": sim_cpu,
        "ok": bool(window) and taken >= 0.97 * offered and sim_drops == 0 and worker_drops == 0 and not growing,
        "sim_line": sim_out.splitlines()[-1] if sim_out else "",
        "durable": durable,
        "path_cpu": sum(path_parts.values()),  # every process of the path: workers (+ proxy | bridge + redis)
        "path_parts": path_parts,
        # display-only updates between windows, as the workers' last stats said (places now, taken back, loop busy)
        "between": between_places(last.values()),
    }


def between_places(stats: Iterable[dict]) -> str:
    """``devices with a place / taken back, loop busy`` over the workers' last
    stats; ``off`` when no worker gives updates between windows.

    >>> between_places([{"between": {"devices": 700, "taken_back": 40, "loop_busy": 0.81}}, {"between": None}])
    '700 / 40, busy 0.81'
    """
    places = [s["between"] for s in stats if s.get("between")]
    if not places:
        return "off"
    busy = "/".join(f"{b['loop_busy']:.2f}" if b.get("loop_busy") is not None else "?" for b in places)
    return f"{sum(b['devices'] for b in places)} / {sum(b.get('taken_back', 0) for b in places)}, busy {busy}"
