"""``harstream bench personal_models``: how fast personal models start serving, and what they cost.

A real calibration (the first session of a held-out HAPT subject: walking,
sitting, standing) is fitted once over the shipped placement-free model and
written as ``N`` personal models, one per device, into a fresh folder; the
worker's registry (the real :class:`~harstream.stream.personal.registry.PersonalRegistry`
with the real loader, in this process) then serves them. Measured:

- *noticed → serving*: from the look at which a file is due to be loaded
  to its device being served (the registry's loads, in the loop, within
  its 20 ms budget per tick, ticks 0.1 s apart as the worker runs them);
- each load's time (median, max) and the process's memory growth per model;
- the personal heads' cost in the worker's batch: one batch of 64 windows of
  64 different calibrated devices vs the same batch uncalibrated (the shared
  model's probabilities given), median of repeats;
- the worker core's CPU time per device-second with ``--devices`` devices
  streaming HAPT sessions in 0.2 s messages through the real
  :class:`~harstream.stream.core.worker.StreamCore` and the shipped
  placement-free model's serving runtime, all in ``any`` mode vs all
  calibrated (rounds interleaved, process CPU time: robust to other jobs on
  the machine, unlike wall-clock capacity): the ratio is the calibrated
  capacity against the uncalibrated.

The capacity of a worker with calibrated devices is ``harstream bench
capacity --personal N`` (which uses :func:`calibrated_devices`).
"""

from __future__ import annotations

import argparse

from harstream.commands._options import COUNT, SECONDS, Number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models", type=Number(int, 1, 100_000), nargs="+", default=[17, 1000], help="personal models written at once"
    )
    parser.add_argument("--repeats", type=COUNT, default=200, help="batches timed for the head's cost")
    parser.add_argument(
        "--devices", type=Number(int, 1, 100_000), default=1000, help="devices in the worker-core comparison"
    )
    parser.add_argument("--seconds", type=SECONDS, default=20.0, help="stream seconds per device in that comparison")
    parser.add_argument(
        "--rounds", type=Number(int, 1, 1000), default=3, help="interleaved rounds of that comparison (median)"
    )


def _fit():
    """One real personal fit (subject 2's first session: walk, sit, stand)."""
    from harstream.models.artifact import ANY_MODEL, load_artifact
    from harstream.models.personal import fit_personal
    from harstream.models.studies.calibration import first_seconds
    from harstream.stream.data.recordings import load_dataset

    base = load_artifact(ANY_MODEL)
    first = sorted(load_dataset().of_subjects([2]), key=lambda r: r.name)[0]
    return fit_personal([first_seconds(first, ("WALKING", "SITTING", "STANDING"), 60.0)], base), base


def write_models(folder, devices, fit=None, base=None) -> int:
    """Write ``fit`` (fitted once) as the personal model of each of ``devices``."""
    from pathlib import Path

    from harstream.models.personal import save_personal
    from harstream.stream.personal.registry import personal_model_path

    if fit is None:
        fit, base = _fit()
    for device in devices:
        save_personal(fit, personal_model_path(Path(folder), device), device, base)
    return len(devices)


def calibrated_devices(n: int, calibrated: int) -> tuple[str, int]:
    """A fresh folder holding personal models of the first ``calibrated`` of
    the ``n`` devices ``harstream simulate --devices n`` replays; ``(folder, count)``."""
    import tempfile

    from harstream.simulator.replay import devices_for
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_dataset

    names = [d.device for d in devices_for(load_dataset().of_subjects(list(UCI_TEST_SUBJECTS)), n)]
    folder = tempfile.mkdtemp(prefix="harstream-personal-")
    return folder, write_models(folder, names[: max(0, calibrated)])


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def run(args: argparse.Namespace) -> int:
    import os
    import shutil
    import tempfile
    import time
    from pathlib import Path

    import numpy as np

    from harstream.models.personal_serving import load_personal_model
    from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
    from harstream.stream.core.model_routing import ModelRouter, ServedModel
    from harstream.stream.core.posture import apply_heads, posture_cues
    from harstream.stream.personal.model_file import read_personal_file
    from harstream.stream.personal.registry import PersonalRegistry

    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores shared with other jobs)")
    fit, base = _fit()
    from harstream.models.personal import window_features

    # the shared model as a staged worker serves it (its feature stage: the heads' discriminant needs it)
    shared = ServedModel(
        "any", "any", base.model_id, PLACEMENT_FREE, base.context_steps, features=lambda x: window_features(x, base)
    )
    print("| models written | noticed → all serving (s) | ticks | load ms median / max | memory per model (kB) |")
    print("|---|---|---|---|---|")
    for count in args.models:
        folder = Path(tempfile.mkdtemp(prefix="harstream-personal-bench-"))
        try:
            write_models(folder, [f"phone:bench-{i}" for i in range(count)], fit, base)
            router = ModelRouter(ServedModel("waist", "waist", "hapt", ACTIVITIES), shared)
            times: list[float] = []

            def timed(path, times=times):
                t = time.perf_counter()
                try:
                    return load_personal_model(path, shared)
                finally:
                    times.append(time.perf_counter() - t)

            registry = PersonalRegistry(folder, timed, interval=0.0)
            registry.poll(0.0, router)  # first look: files seen, waiting to settle
            rss = _rss_mb()
            noticed = time.perf_counter()
            ticks, now = 0, 1.0
            while len(router.personal) < count and ticks < 100_000 and not registry.refusals:
                registry.poll(now, router)
                ticks += 1
                now += 0.1
            # the loop's own work between ticks is not counted: ticks are 0.1 s apart in the worker
            busy = time.perf_counter() - noticed
            served = busy + 0.1 * (ticks - 1)
            grown = (_rss_mb() - rss) * 1000 / count
            print(
                f"| {count} | {served:.2f} (loading {busy:.2f}) | {ticks} | {1000 * np.median(times):.2f} / "
                f"{1000 * max(times):.2f} | {grown:.1f} |",
                flush=True,
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # The heads' cost in a batch: 64 windows of 64 devices.
    from harstream.stream.core.pipeline import STEP, preprocess_recording
    from harstream.stream.data.recordings import load_dataset

    rec = load_dataset().of_subjects([2])[0]
    processed = preprocess_recording(rec.samples.astype(np.float32))
    windows = np.stack([processed[s : s + 128] for s in range(0, 64 * STEP, STEP)])
    probs = np.tile([0.05, 0.05, 0.05, 0.85], (64, 1))
    folder = Path(tempfile.mkdtemp(prefix="harstream-personal-bench-"))
    try:
        write_models(folder, [f"phone:b{i}" for i in range(64)], fit, base)
        heads = [read_personal_file(p) for p in sorted(folder.iterdir())]
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    features = window_features(windows, base)  # the worker has them already (the shared model's feature stage)

    def once() -> float:
        t = time.perf_counter()
        cues = posture_cues(windows)
        rows = apply_heads(probs, cues, heads, features)
        [h.pick(r) for h, r in zip(heads, rows)]
        return time.perf_counter() - t

    cost = np.median([once() for _ in range(args.repeats)])
    print()
    print(
        f"personal heads in a batch of 64 windows of 64 calibrated devices: {1000 * cost:.3f} ms "
        f"({1e6 * cost / 64:.1f} µs per window: cues + heads + picking each device's classes)"
    )
    core_comparison(args, fit, base)
    return 0


def core_comparison(args: argparse.Namespace, fit, base) -> None:
    """Worker-core CPU per device-second, uncalibrated vs calibrated (see the module doc)."""
    import dataclasses
    import shutil
    import tempfile
    import time
    from pathlib import Path

    import numpy as np

    from harstream.commands.worker import load_served
    from harstream.models.personal_serving import load_personal_model
    from harstream.simulator.replay import ReplaySchedule, devices_for
    from harstream.stream.core.model_routing import ModelRouter
    from harstream.stream.core.protocol import encode_samples
    from harstream.stream.core.worker import StreamCore, WorkerConfig
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_dataset
    from harstream.stream.personal.registry import personal_model_path

    opts = argparse.Namespace(
        runtime="auto", no_fast_start=False, whole_model=False, display="decoder", threshold=0.5, smooth=5
    )
    waist, anywhere = load_served(None, "waist", opts), load_served(None, "any", opts)
    devices = devices_for(load_dataset().of_subjects(list(UCI_TEST_SUBJECTS)), args.devices)
    names = [d.device for d in devices]
    # the messages, encoded once: every device's first --seconds in 0.2 s chunks, interleaved as live
    schedule = ReplaySchedule(devices, chunk=10, loop=True)
    messages = [
        encode_samples(chunk.batch(1000.0 + chunk.seq / 50.0, meta={"placement": "any"}))
        for step in range(1, int(args.seconds * 5) + 1)
        for chunk in schedule.advance(step * 10)
    ]
    folder = Path(tempfile.mkdtemp(prefix="harstream-personal-bench-"))
    try:
        write_models(folder, names, fit, base)
        heads = [load_personal_model(personal_model_path(folder, n), anywhere, None) for n in names]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    # the personal models' display decoders as the worker makes them
    from harstream.stream.core.decoder import display_for

    factories = {m.classes: display_for(m.classes, m.head.decoder) for m in heads if m.head is not None}
    heads = [dataclasses.replace(m, display=factories[m.classes]) for m in heads]

    def one_run(calibrated: bool) -> tuple[float, int]:
        router = ModelRouter(waist, anywhere)
        if calibrated:
            for model in heads:
                router.set_personal(model)
        core = StreamCore(waist.classes, waist.model_id, WorkerConfig(max_batch=64), router=router)
        predictions = 0
        started = time.process_time()
        for i, frames in enumerate(messages):
            core.ingest(frames, now=i * 1e-4)
            if core.ready_devices >= 64 or i == len(messages) - 1:
                while core.waiting:
                    x, taken = core.take_batch()
                    probs = taken[0].served.runtime.predict(x)
                    predictions += len(core.finish_batch(taken, probs, now=i * 1e-4))
        return time.process_time() - started, predictions

    plain, calibrated = [], []
    for _ in range(args.rounds):
        plain.append(one_run(False))
        calibrated.append(one_run(True))
    device_seconds = args.devices * args.seconds
    cpu_plain = float(np.median([c for c, _ in plain]))
    cpu_cal = float(np.median([c for c, _ in calibrated]))
    print()
    print(f"worker core, {args.devices} devices × {args.seconds:g} s of HAPT each, {args.rounds} interleaved rounds:")
    print("| devices served | CPU s (median) | predictions | device-s per CPU-s | capacity vs uncalibrated |")
    print("|---|---|---|---|---|")
    print(f"| all in any mode | {cpu_plain:.2f} | {plain[0][1]} | {device_seconds / cpu_plain:,.0f} | 100 % |")
    print(
        f"| all calibrated ({args.devices} personal models) | {cpu_cal:.2f} | {calibrated[0][1]} | "
        f"{device_seconds / cpu_cal:,.0f} | {100 * cpu_plain / cpu_cal:.0f} % |"
    )
