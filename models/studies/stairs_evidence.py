"""Stairs on evidence, scored on the worker's published label (HAPT held-out subjects).

Every held-out session, turned as the placement-free model's own test turns it
(:func:`~harstream.models.placement_free.sessions_as_shipped`), is streamed in
1-second messages through the worker's core
(:class:`~harstream.stream.core.worker.StreamCore`) serving the shipped
placement-free model exactly as ``harstream worker`` loads it
(:func:`harstream.commands.worker.load_served`: runtime and display decoder),
and each window's published label (``smoothed``, what the page shows) is
scored against the activity at the window's end, per class, in the model's
classes (sitting, standing, lying: STILL). Conditions:

- ``ungated``: the same model and display without the stairs gate (served as
  if the device declared the waist): what the model alone claims;
- ``no pressure``: any mode, gated, no barometer (the browser page's case);
- ``pressure R Hz``: any mode, gated, a SIMULATED barometer at R Hz
  (:mod:`harstream.simulator.barometer`: altitude from the stairs labels,
  noise, drift, door steps, quantisation). HAPT has no barometer: these
  figures say what the estimator and gate do with a barometer that behaves
  as simulated, not what a real phone's does.

    python -m harstream.models.studies.stairs_evidence [--rates 1 5 25] [--noise 0.03]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE, class_for
from harstream.stream.core.model_routing import ModelRouter, ServedModel
from harstream.stream.core.protocol import SampleBatch
from harstream.stream.core.worker import StreamCore
from harstream.stream.data.recordings import Recording

T0 = 1_700_000_000.0


def replay_published(recording: Recording, served: ServedModel, gated: bool) -> list[tuple[str, str]]:
    """(truth, published label) of every window of ``recording`` through the
    worker core, in 1-s messages carrying its barometer rows if it has them."""
    router = ModelRouter(ServedModel("waist", "waist", "unused", ACTIVITIES))
    if gated:
        router.any = served
        placement = {"placement": "any"}
    else:  # the same model, display and classes, served in waist mode: not gated
        router.waist = ServedModel(
            "waist",
            "waist",
            served.model_id,
            served.classes,
            served.context_steps,
            served.display,
            served.runtime,
            features=served.features,
        )
        placement = {"placement": "waist"}
    core = StreamCore(ACTIVITIES, "unused", router=router)
    samples = np.asarray(recording.samples, np.float32)
    labels = np.asarray(recording.labels, np.int16)
    p = recording.pressure
    out = []
    for start in range(0, len(samples), 50):
        stop = min(start + 50, len(samples))
        pressure = None
        if p is not None:
            rows = p[(p[:, 0] >= start / 50) & (p[:, 0] < stop / 50)]
            pressure = rows + [T0, 0.0]
        batch = SampleBatch(
            recording.name,
            start,
            T0 + start / 50,
            samples[start:stop],
            labels=labels[start:stop],
            meta=placement,
            pressure=pressure,
        )
        core.accept(batch, now=float(start) / 50)
        while core.waiting:
            x, taken = core.take_batch()
            probs = taken[0].served.runtime.predict(x)
            for pred in core.finish_batch(taken, probs, now=float(start) / 50):
                out.append((pred.truth, pred.smoothed))
    return out


def score(pairs: list[tuple[str | None, str]]) -> dict:
    """Per class of the model (truth in its classes): windows and the share
    published as that class; overall accuracy on the model's classes."""
    per: dict[str, Counter] = {c: Counter() for c in PLACEMENT_FREE}
    for truth, shown in pairs:
        if truth not in ACTIVITIES:
            continue  # transitions and unlabelled time
        cls = class_for(truth, PLACEMENT_FREE)
        per[cls]["n"] += 1
        per[cls]["right"] += shown == cls
        per[cls][f"shown {shown}"] += 1
    total = sum(c["n"] for c in per.values())
    right = sum(c["right"] for c in per.values())
    return {
        "accuracy": round(right / max(total, 1), 4),
        "windows": total,
        "per_class": {c: {"windows": v["n"], "recall": round(v["right"] / max(v["n"], 1), 4)} for c, v in per.items()},
        "shown": {c: {k[6:]: n for k, n in v.items() if k.startswith("shown ")} for c, v in per.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 5.0, 25.0], help="barometer rates (Hz)")
    parser.add_argument("--noise", type=float, default=0.03, help="barometer noise (hPa, standard deviation)")
    parser.add_argument("--doors", type=float, default=0.5, help="door/ventilation steps per minute")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--out", type=Path, default=Path("docs/reports/stairs_evidence.json"))
    args = parser.parse_args(argv)

    from harstream.commands.worker import load_served
    from harstream.models.artifact import ANY_MODEL, load_artifact
    from harstream.models.placement_free import sessions_as_shipped
    from harstream.simulator.barometer import SimulatedBarometer, with_simulated_pressure
    from harstream.stream.core.smoothing import DEFAULT_THRESHOLD
    from harstream.stream.data.recordings import load_embedded

    worker_args = argparse.Namespace(
        runtime=args.runtime, no_fast_start=False, whole_model=False, display="decoder", threshold=DEFAULT_THRESHOLD
    )
    served = load_served(None, "any", worker_args)
    seed = int(load_artifact(ANY_MODEL).metadata.get("seed", 0))
    held = sessions_as_shipped(load_embedded().recordings, seed)[1]
    conditions: dict[str, tuple[bool, list[Recording]]] = {"ungated": (False, held), "no pressure": (True, held)}
    for rate in args.rates:
        model = SimulatedBarometer(rate_hz=rate, noise_hpa=args.noise, doors_per_min=args.doors)
        conditions[f"pressure {rate:g} Hz"] = (
            True,
            [with_simulated_pressure(r, model, seed=i) for i, r in enumerate(held)],
        )
    results = {}
    for name, (gated, recordings) in conditions.items():
        began = time.perf_counter()
        pairs = [pair for rec in recordings for pair in replay_published(rec, served, gated)]
        results[name] = score(pairs)
        r = results[name]
        print(
            f"{name:>16}: accuracy {r['accuracy']:.4f} on {r['windows']} windows; recall "
            + ", ".join(f"{c} {v['recall']:.3f}" for c, v in r["per_class"].items())
            + f" ({time.perf_counter() - began:.0f} s)",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "model": served.model_id,
                "sessions": len(held),
                "barometer": {"simulated": True, "noise_hpa": args.noise, "doors_per_min": args.doors},
                "results": results,
            },
            indent=1,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
