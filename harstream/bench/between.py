"""``harstream bench between``: the worker core's CPU with and without the display-only updates between windows.

In process, no bus: the real :class:`~harstream.stream.core.worker.StreamCore`
with the shipped model's serving runtime (staged: numpy features + LiteRT
decision, from its checked conversion), its decoder and its feature stage;
``--devices`` devices stream held-out HAPT sessions (different offsets) in
10-sample messages, all in step; after each round of messages every waiting
batch is labelled and every prediction encoded. Process CPU seconds per
setting, rounds interleaved: no between updates (``--between-devices 0``),
between windows cut but none labelled (``cut only``: the gate set out of
reach), ``--between`` for every device as built (the gate of ``WorkerConfig``)
and the default (the first 256 devices). Prints a Markdown table.
"""

from __future__ import annotations

import argparse

from harstream.commands._options import COUNT, SECONDS, Number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=Number(int, 1, 100_000), default=300)
    parser.add_argument("--seconds", type=SECONDS, default=40.0, help="seconds of signal per device")
    parser.add_argument("--repeats", type=COUNT, default=3)


def run(args: argparse.Namespace) -> int:
    import statistics
    import time

    import numpy as np

    from harstream.models.fast_start import load_cached_runtime
    from harstream.stream.core.decoder import display_for
    from harstream.stream.core.protocol import SampleBatch, encode_prediction, encode_samples
    from harstream.stream.core.worker import StreamCore, WorkerConfig
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_embedded

    cached = load_cached_runtime(None)
    if cached is None:
        raise SystemExit("bench between: no checked conversion of the shipped model yet; run `harstream worker` once")
    runtime, meta = cached
    if not hasattr(runtime, "features"):
        raise SystemExit("bench between: the shipped model's cached runtime is not staged")
    classes, context = list(meta["classes"]), tuple(meta.get("context_steps") or ())
    recs = load_embedded().of_subjects(UCI_TEST_SUBJECTS)
    n, chunk, devices = int(args.seconds * 50), 10, args.devices
    messages = []
    for i in range(0, n, chunk):
        for d in range(devices):
            rec = recs[d % len(recs)]
            off = (d * 997) % (len(rec.samples) - n)
            part = rec.samples[off + i : off + i + chunk].astype(np.float32)
            messages.append(encode_samples(SampleBatch(f"d{d}", seq=i, t0=1000.0 + i / 50, samples=part)))
    settings: dict[str, dict] = {
        "off (--between-devices 0)": dict(between_devices=0),
        "cut only (between windows cut, none labelled)": dict(
            between_devices=None, between_motion=16.0, between_turn=180.0
        ),
        "--between (gated peeks, every device)": dict(between_devices=None),
        "default (--between-devices 256)": dict(between_devices=256),
    }

    def one(kw: dict) -> tuple[float, int]:
        config = WorkerConfig(
            context_steps=context,
            display=display_for(classes, meta.get("decoder")),
            features=runtime.features,
            **kw,
        )
        core = StreamCore(classes, meta.get("model_id", "model"), config, wall_clock=lambda: 2000.0)
        start = time.process_time()
        for k, frames in enumerate(messages):
            core.ingest(frames, now=k * 1e-4)
            if k % devices == devices - 1:
                while core.waiting:
                    x, taken = core.take_batch()
                    for p in core.finish_batch(taken, runtime.predict(x), now=k * 1e-4):
                        encode_prediction(p)
        return time.process_time() - start, core.totals["between"]

    cpu: dict[str, list[float]] = {name: [] for name in settings}
    between: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, kw in settings.items():
            seconds, labelled = one(kw)
            cpu[name].append(seconds)
            between[name] = labelled
    base = statistics.median(cpu["off (--between-devices 0)"])
    print(f"{devices} devices x {args.seconds:g} s, process CPU s (median of {args.repeats}, interleaved)\n")
    print("| worker core | CPU s (each run) | median | vs off | between updates published |")
    print("|---|---|---|---|---|")
    for name, values in cpu.items():
        med = statistics.median(values)
        runs = " / ".join(f"{v:.2f}" for v in values)
        print(f"| {name} | {runs} | {med:.2f} | {100 * (med / base - 1):+.0f} % | {between[name]:,} |")
    return 0
