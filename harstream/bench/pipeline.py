"""``harstream bench pipeline``: preprocessing cost per device-second.

The causal per-device pipeline fed as the worker could feed it — one push
per 10-sample message, one push per completed window (64 samples, what the
worker does), and one vectorised push for many devices at once
(``push_many``) — against the batch offline filter over a whole recording,
the cheapest possible. Prints a Markdown table.
"""

from __future__ import annotations

import argparse

from harstream.commands._options import COUNT, SECONDS, Number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=Number(int, 1, 100_000), default=256, help="devices for the vectorised push")
    parser.add_argument("--seconds", type=SECONDS, default=60.0, help="seconds of signal per device")
    parser.add_argument("--repeats", type=COUNT, default=3)


def run(args: argparse.Namespace) -> int:
    import os
    import time

    import numpy as np

    from harstream.stream.core.batch_push import push_many
    from harstream.stream.core.pipeline import DevicePipeline, preprocess_recording
    from harstream.stream.data.recordings import load_dataset

    rec = load_dataset().recordings[0]
    n = int(args.seconds * 50)
    data = np.asarray(rec.samples[:n], np.float64)
    seconds = len(data) / 50.0

    def per_device_second(fn, devices: int = 1) -> float:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return float(np.median(times)) / (seconds * devices)

    def chunked(size: int):
        def go():
            pipe = DevicePipeline()
            for i in range(0, len(data), size):
                pipe.push(data[i : i + size])

        return go

    def many():
        pipes = [DevicePipeline() for _ in range(args.devices)]
        push_many(pipes, [data[:128]] * args.devices)
        for i in range(128, len(data) - 63, 64):
            push_many(pipes, [data[i : i + 64]] * args.devices)

    base = per_device_second(lambda: preprocess_recording(data))
    rows = [
        ("offline: whole recording in one call (baseline)", base),
        ("live: one push per 10-sample message", per_device_second(chunked(10))),
        ("live: one push per window (64 samples), as the worker buffers", per_device_second(chunked(64))),
        (f"live: push_many over {args.devices} devices, 64 samples each", per_device_second(many, args.devices)),
    ]
    print(f"{rec.name}, {seconds:.0f} s of signal; load average {os.getloadavg()[0]:.1f}\n")
    print("| preprocessing | µs per device-second | vs offline | device-seconds per CPU-second |\n|---|---|---|---|")
    for name, cost in rows:
        print(f"| {name} | {cost * 1e6:.1f} | {cost / base:.1f}× | {1 / cost:,.0f} |")
    return 0
