"""``harstream bench memory``: the worker core's memory per device, and whether it grows.

In process, no bus: the real :class:`~harstream.stream.core.worker.StreamCore`
with the shipped model's serving runtime (staged, from its checked
conversion), its decoder and history; ``--devices`` devices stream held-out
HAPT sessions in 10-sample messages on a simulated clock, as fast as the
machine goes, with the worker loop's chores at their periods (signals and
history and eviction every second, stats every 10 s). Devices come
and go as phones do: every ``--life`` minutes each device is replaced by a
new one (a new id), and the old ones are evicted after ``idle_timeout``.

Memory is Python's own allocations (``tracemalloc``: numpy arrays included),
measured at each checkpoint with the old devices evicted. The baseline is the
same core before any device. Prints a Markdown table: held memory and devices
at each checkpoint, memory per device, and the growth per simulated hour
after the first checkpoint (what a leak would show).
"""

from __future__ import annotations

import argparse

from harstream.commands._options import Number

CHUNK = 10  # samples per message (0.2 s at 50 Hz)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=Number(int, 1, 20_000), default=200, help="devices at any one time")
    parser.add_argument("--minutes", type=Number(float, 1.0, 24 * 60.0), default=12.0, help="simulated minutes")
    parser.add_argument(
        "--life",
        type=Number(float, 0.0, 24 * 60.0),
        default=2.0,
        help="minutes each device id lives before a new one takes its place (0: the same devices throughout)",
    )
    parser.add_argument("--checkpoints", type=Number(int, 2, 100), default=6)


def run(args: argparse.Namespace) -> int:
    import gc
    import time
    import tracemalloc

    import numpy as np
    from tqdm import tqdm

    from harstream.models.fast_start import load_cached_runtime
    from harstream.stream.core.decoder import display_for
    from harstream.stream.core.protocol import SampleBatch, encode_prediction, encode_samples
    from harstream.stream.core.worker import StreamCore, WorkerConfig
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_embedded

    cached = load_cached_runtime(None)
    if cached is None:
        raise SystemExit("bench memory: no checked conversion of the shipped model yet; run `harstream worker` once")
    runtime, meta = cached
    classes, context = list(meta["classes"]), tuple(meta.get("context_steps") or ())
    recs = load_embedded().of_subjects(UCI_TEST_SUBJECTS)
    config = WorkerConfig(
        context_steps=context,
        display=display_for(classes, meta.get("decoder")),
        features=getattr(runtime, "features", None),
    )
    clock = [1000.0]
    core = StreamCore(classes, meta.get("model_id", "model"), config, wall_clock=lambda: clock[0])
    steps = int(args.minutes * 60 * 50 / CHUNK)
    life = int(args.life * 60 * 50 / CHUNK) or steps + 1
    marks = {int(steps * (i + 1) / args.checkpoints) - 1 for i in range(args.checkpoints)}
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    rows: list[tuple[float, int, float]] = []  # simulated minutes, devices held, MB held above the baseline
    wall = time.perf_counter()
    for k in tqdm(range(steps), desc="simulated 0.2 s steps", unit="step", mininterval=2.0):
        now = clock[0] = 1000.0 + k * CHUNK / 50
        generation, age = divmod(k, life)
        for d in range(args.devices):
            rec = recs[d % len(recs)]
            off = (d * 997 + k * CHUNK) % (len(rec.samples) - CHUNK)
            part = rec.samples[off : off + CHUNK].astype(np.float32)
            core.ingest(encode_samples(SampleBatch(f"d{d}.{generation}", seq=age * CHUNK, t0=now, samples=part)), now)
        while core.waiting:
            x, taken = core.take_batch()
            for p in core.finish_batch(taken, runtime.predict(x), now=now):
                encode_prediction(p)
        if k % 5 == 0:
            core.take_signals(now)
            core.take_history()
            core.settle_quiet(now)
            core.evict_idle(now)
        if k % 50 == 0:
            core.stats(now)
        if k in marks:
            # the replaced devices go now: only the streaming ones are held
            core.evict_idle(now + config.idle_timeout - 1e-3)
            core.take_history()
            gc.collect()
            rows.append(
                ((k + 1) * CHUNK / 50 / 60, len(core.devices), (tracemalloc.get_traced_memory()[0] - base) / 1e6)
            )
    peak = (tracemalloc.get_traced_memory()[1] - base) / 1e6
    tracemalloc.stop()
    seconds = time.perf_counter() - wall

    print(
        f"{args.devices} devices at a time, {args.minutes:g} simulated minutes, a new id every "
        f"{args.life:g} min ({'none' if not args.life else 'churn'}), {seconds:.0f} s wall; "
        f"Python allocations (tracemalloc) above the core without devices\n"
    )
    print("| simulated minutes | devices held | MB held | kB per device held |")
    print("|---|---|---|---|")
    for minutes, held, mb in rows:
        per = 1000 * mb / held if held else float("nan")
        print(f"| {minutes:.1f} | {held} | {mb:.2f} | {per:.1f} |")
    (m0, _, mb0), (m1, _, mb1) = rows[0], rows[-1]
    growth = (mb1 - mb0) / max(m1 - m0, 1e-9) * 60
    print(f"\npeak {peak:.2f} MB; growth after the first checkpoint: {growth:+.2f} MB per simulated hour")
    return 0
