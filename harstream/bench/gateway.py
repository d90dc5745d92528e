"""``harstream bench gateway``: devices and samples/s one gateway process sustains.

The gateway runs as its own process (``harstream gateway``) publishing to a
SUB socket in this process; simulated phones (harstream JSON over WebSocket,
100 Hz acc + 100 Hz gyro in 200 ms batches, like the /phone page) run here.

1. **Real time**: N phones stream at their real rate for a few seconds; we
   count the 50 Hz samples that reach the bus and the gateway's CPU use.
2. **Flat out**: a few phones send as fast as they can; readings/s in and
   samples/s out is the gateway's ceiling.
3. **Baseline**, same run: the pure path (JSON parse, unit conversion,
   resample, encode) in this process with no sockets, to show what the
   network layer costs on top.
"""

from __future__ import annotations

import argparse

from harstream.commands._options import RATE, SECONDS, Number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices", default="1,10,50,100,200", help="comma-separated device counts for the real-time runs"
    )
    parser.add_argument("--seconds", type=SECONDS, default=5.0, help="length of each run")
    parser.add_argument("--rate", type=RATE, default=100.0, help="readings/s per sensor per phone")
    parser.add_argument("--flat-out-devices", type=Number(int, 0, 10_000), default=4)


def run(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_main(args))


async def _main(args) -> int:
    import asyncio
    import os
    import socket
    import subprocess
    import sys

    import zmq
    import zmq.asyncio

    ctx = zmq.asyncio.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"s/")
    sub.setsockopt(zmq.RCVHWM, 1_000_000)
    sub.bind("tcp://127.0.0.1:0")
    ingest = sub.getsockopt_string(zmq.LAST_ENDPOINT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-c",
        "import sys; from harstream.cli import main; sys.exit(main())",
        "gateway",
        "--port",
        str(port),
        "--ingest",
        ingest,
        "--no-predictions",
        "--stats-interval",
        "0",
        "--rate-limit",
        "10000",
        "--readings-limit",
        "1000000",
        "--signal-rate",
        "1000000",
        "--max-connections",
        "5000",
        "--max-connections-per-address",
        "5000",
        "--connects-limit",
        "10000",
    ]
    import tempfile

    log = tempfile.TemporaryFile()  # a pipe nobody reads would block the gateway
    gateway = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    counts: dict[str, int] = {}

    async def count_samples():
        import json

        while True:
            frames = await sub.recv_multipart()
            header = json.loads(frames[1])
            device = header["device"].removeprefix("phone:")  # the gateway's namespace
            counts[device] = counts.get(device, 0) + header["n"]

    counter = asyncio.create_task(count_samples())
    rows = []
    try:
        await _wait_port(port, gateway)
        # Warm up until samples reach the bus (ZeroMQ subscription is live).
        stop = asyncio.Event()
        warm = asyncio.create_task(_phone(port, "warmup", args.rate, 60, stop, flat_out=False))
        async with asyncio.timeout(30):
            while counts.get("warmup", 0) < 10:
                await asyncio.sleep(0.05)
        stop.set()
        await warm
        baseline = _pure_path_readings_per_s(args.rate)
        print(
            f"gateway pid {gateway.pid}, port {port}, bus {ingest}; pure path (no sockets, this process): {baseline:,.0f} readings/s"
        )
        for n in [int(x) for x in args.devices.split(",")]:
            rows.append(await _run(port, gateway.pid, counts, n, args.seconds, args.rate, False))
            print(_row(rows[-1], baseline), flush=True)
        rows.append(await _run(port, gateway.pid, counts, args.flat_out_devices, args.seconds, args.rate, True))
        print(_row(rows[-1], baseline), flush=True)
    finally:
        counter.cancel()
        gateway.terminate()
        try:
            gateway.wait(10)
        except subprocess.TimeoutExpired:
            gateway.kill()
        sub.close()
        ctx.term()
    print()
    print(
        f"Command: `harstream bench gateway --devices {args.devices} --seconds {args.seconds:g} --rate {args.rate:g}`; "
        f"gateway = one process, phones + bus subscriber = another; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end (a busy machine caps what one process gets)."
    )
    print()
    print(
        "| mode | phones | readings/s handled | samples/s on bus | expected | delivered | gateway CPU (1 core = 100 %) "
        "| 50 Hz phones per gateway core | CPU per reading vs pure path | phones behind schedule by |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(_row(r, baseline))
    return 0


def _row(r: dict, baseline: float) -> str:
    expected = f"{r['expected']:,.0f}" if r["expected"] else "–"
    delivered = f"{r['out'] / r['expected']:.1%}" if r["expected"] else "–"
    per_core = r["out"] / max(r["cpu"], 1e-9) / 50
    cost = r["cpu"] * baseline / max(r["in"], 1e-9)
    lag = "–" if r["mode"] == "flat out" else f"{max(r['lag'], 0.0):.1f} s"
    return (
        f"| {r['mode']} | {r['devices']} | {r['in']:,.0f} | {r['out']:,.0f} | {expected} | {delivered} | "
        f"{r['cpu']:.0%} | {per_core:,.0f} | {cost:.1f}× | {lag} |"
    )


async def _run(port, pid, counts, n, seconds, rate, flat_out) -> dict:
    import asyncio
    import time

    prefix = f"{'flat' if flat_out else 'rt'}{n}-"
    stop = asyncio.Event()
    sent, ready, go = [0], [0], asyncio.Event()
    lags: dict[str, float] = {}  # device → how far behind schedule its sends ran, s
    phones = [
        asyncio.create_task(_phone(port, f"{prefix}{i}", rate, seconds, stop, flat_out, sent, ready, lags, go))
        for i in range(n)
    ]
    async with asyncio.timeout(300):
        while ready[0] < n:
            failed = [p for p in phones if p.done()]
            if failed:
                raise RuntimeError(f"{len(failed)} of {n} phones failed to connect: {failed[0].exception()!r}")
            await asyncio.sleep(0.05)
    go.set()
    await asyncio.sleep(1.0)  # settle; measure the steady part
    before = sum(v for k, v in counts.items() if k.startswith(prefix))
    cpu_before, t_before = _cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t_before
    # Behind schedule = the phones (this process) could not offer real time.
    lag = max(lags.values(), default=0.0)
    after = sum(v for k, v in counts.items() if k.startswith(prefix))
    cpu = (_cpu_seconds(pid) - cpu_before) / elapsed
    stop.set()
    await asyncio.gather(*phones, return_exceptions=True)
    out = (after - before) / elapsed
    # Readings the gateway turned into bus samples (what phones queued may be more).
    handled = out * 2 * rate / 50
    return {
        "mode": "flat out" if flat_out else "real time",
        "devices": n,
        "in": handled,
        "out": out,
        "expected": 0 if flat_out else n * 50,
        "cpu": cpu,
        "lag": lag,
    }


async def _phone(port, device, rate, seconds, stop, flat_out, sent=None, ready=None, lag_out=None, go=None) -> None:
    """One simulated phone: hello, then 200 ms batches of acc + gyro readings
    (real time: one every 200 ms; flat out: as fast as the socket takes them)."""
    import asyncio
    import itertools
    import json
    import time

    import numpy as np
    from websockets.asyncio.client import connect

    batch_s = 0.2
    k = int(rate * batch_s)
    t = time.time()
    rng = np.random.default_rng(abs(hash(device)) % 2**32)

    def message(i: int) -> str:
        ts = (t + (i * k + np.arange(k)) / rate) * 1000
        acc = np.column_stack([ts, rng.normal(0, 1, (k, 3)) + [0, 9.8, 0]]).round(4).tolist()
        gyro = np.column_stack([ts, rng.normal(0, 20, (k, 3))]).round(3).tolist()
        return json.dumps({"type": "samples", "acc": acc, "gyro": gyro})

    # Made before the clock starts, so the phones' own JSON encoding (in
    # this one process for all phones) does not limit what the gateway gets.
    made = [message(i) for i in range(1500 if flat_out else int((seconds + 4) / batch_s))]
    # No handshake timeout: with hundreds of phones in one process, making messages delays handshakes.
    async with connect(f"ws://127.0.0.1:{port}/ws", compression=None, max_queue=None, open_timeout=None) as ws:
        await ws.send(json.dumps({"type": "hello", "device": device, "units": {"acc": "m/s2", "gyro": "deg/s"}}))
        await ws.recv()
        if ready is not None:
            ready[0] += 1
        if go is not None:  # all phones start together, once all are connected
            await go.wait()
        next_send = time.monotonic()
        for i in itertools.count():
            if stop.is_set() or i >= len(made):
                break
            await ws.send(made[i])
            if sent is not None:
                sent[0] += 2 * k
            if flat_out:
                await asyncio.sleep(0)
            else:
                next_send += batch_s
                lag = time.monotonic() - next_send
                if lag_out is not None:
                    lag_out[device] = lag
                await asyncio.sleep(max(0.0, -lag))


def _pure_path_readings_per_s(rate: float) -> float:
    """Parse + convert + resample + encode in-process, no sockets: readings per CPU-second."""
    import json
    import time

    import numpy as np

    from harstream.stream.core.protocol import encode_samples
    from harstream.stream.gateway.phone_feeds import DeviceFeed
    from harstream.stream.gateway.phone_formats import load_message, parse_hello, parse_samples

    hello = parse_hello({"type": "hello", "device": "pure", "units": {"acc": "m/s2", "gyro": "deg/s"}})
    k, t, n = int(rate * 0.2), time.time(), 0
    feed = DeviceFeed("phone:pure", now=t, max_readings_per_s=1e12)
    rng = np.random.default_rng(0)
    messages = []
    for i in range(300):
        ts = (t + (i * k + np.arange(k)) / rate) * 1000
        messages.append(
            json.dumps(
                {
                    "type": "samples",
                    "acc": np.column_stack([ts, rng.normal(0, 1, (k, 3))]).round(4).tolist(),
                    "gyro": np.column_stack([ts, rng.normal(0, 20, (k, 3))]).round(3).tolist(),
                }
            )
        )
    start = time.process_time()  # CPU time, comparable to the gateway's CPU share
    for raw in messages:
        readings = parse_samples(load_message(raw), hello)
        for batch in feed.add(readings, t):
            encode_samples(batch)
        n += len(readings)
    return n / (time.process_time() - start)


def _cpu_seconds(pid: int) -> float:
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _wait_port(port: int, proc) -> None:
    import asyncio

    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with code {proc.returncode}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("gateway did not start listening")
