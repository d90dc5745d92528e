"""Stairs on evidence, scored on the worker's published label (HAPT held-out subjects).

Every held-out session, turned as the placement-free model's own test turns it
(:func:`~harstream.models.placement_free.sessions_as_shipped`), is streamed in
1-second messages through the worker's core
(:class:`~harstream.stream.core.worker.StreamCore`) serving the shipped
placement-free model exactly as ``harstream worker`` loads it
(:func:`harstream.commands.worker.load_served`: runtime and display decoder),
and each window's published label (``smoothed``, what the page shows) is
scored per class, in the model's classes (sitting, standing, lying: STILL),
two ways: against the activity at the window's end (every labelled window,
those spanning a change of activity included: a label shown *now* has not
seen the new activity long), and on the windows wholly inside one labelled
activity (the windows the model's own test scores). Conditions:

- ``ungated``: the same model and display without the stairs gate (served as
  if the device declared the waist): what the model alone claims;
- ``no pressure``: any mode, gated, no barometer (the browser page's case);
- ``pressure R Hz``: any mode, gated, a SIMULATED barometer at R Hz
  (:mod:`harstream.simulator.barometer`: altitude from the stairs labels,
  noise, drift, door steps, quantisation). HAPT has no barometer: these
  figures say what the estimator and gate do with a barometer that behaves
  as simulated, not what a real phone's does;
- ``thigh`` / ``wrist``: any mode, gated, no barometer, the held-out
  sessions as a SIMULATED device on a swinging thigh or wrist
  (:func:`~harstream.models.placement_free.limb_recordings`, as the
  cross-placement study makes them): flat walking must stay WALKING
  (``stairs false alarm``), and a limb's stairs without evidence are
  WALKING too.

    harstream bench stairs [--rates 1 5 25] [--noise 0.03] [--model PATH] [--no-limbs]

``--barometer-only`` scores the estimator alone on synthetic level walking
and climbs (no model): how often a level barometer with door steps and
pulses (3 events in 2 minutes) claims descending (``verdict``) or only leans
down (``leaning``, which backs a model's own downstairs claim: in a pocket,
where the model claims downstairs on flat walking, that share of its claims
survives), and how often a 0.2 m/s climb is missed 5-20 s into it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from harstream.commands._options import Number

if TYPE_CHECKING:  # heavy imports happen inside the functions (bench modules import only argparse)
    from harstream.stream.core.model_routing import ServedModel
    from harstream.stream.data.recordings import Recording

T0 = 1_700_000_000.0
#: What a device at rest may be shown: STILL, or a posture a personal model knows.
STILL_SHOWN = ("STILL", "SITTING", "STANDING", "LAYING")


def replay_published(
    recording: Recording, served: ServedModel, gated: bool
) -> list[tuple[str | None, str, str | None, str]]:
    """(truth at the window's end, published label, the activity the whole
    window lies in or None, the window's own label) of every window of
    ``recording`` through the worker core, in 1-s messages carrying its
    barometer rows if it has them. The window's own label is the model's
    argmax where the device is not gated."""
    import numpy as np

    from harstream.stream.core.activities import ACTIVITIES
    from harstream.stream.core.model_routing import ModelRouter, ServedModel
    from harstream.stream.core.pipeline import WINDOW
    from harstream.stream.core.protocol import SampleBatch
    from harstream.stream.core.worker import StreamCore

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
                end = int(round((pred.t_end - T0) * 50))
                inside = labels[end - WINDOW + 1 : end + 1]
                whole = pred.truth if end >= WINDOW - 1 and (inside == inside[-1]).all() else None
                out.append((pred.truth, pred.smoothed, whole, pred.label))
    return out


def score(rows: list[tuple[str | None, str, str | None, str]], whole: bool = False, raw: bool = False) -> dict:
    """Per class of the model (truth in its classes): windows and the share
    published as that class (``raw``: labelled so by the window alone);
    overall accuracy on the model's classes. Truth at each window's end, or
    (``whole``) only the windows wholly inside one activity."""
    from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE, class_for

    per: dict[str, Counter] = {c: Counter() for c in PLACEMENT_FREE}
    agree = 0  # moving vs still: published moving (any walking class) exactly when the truth moves
    postures: dict[str, Counter] = {}  # each HAPT posture: windows, and those shown STILL
    for end_truth, published, inside, own in rows:
        truth = inside if whole else end_truth
        shown = own if raw else published
        if truth not in ACTIVITIES:
            continue  # transitions and unlabelled time
        cls = class_for(truth, PLACEMENT_FREE)
        per[cls]["n"] += 1
        per[cls]["right"] += shown == cls
        per[cls][f"shown {shown}"] += 1
        agree += (shown in STILL_SHOWN) == (cls == "STILL")
        if cls == "STILL" and truth is not None:
            postures.setdefault(truth, Counter())["n"] += 1
            postures[truth]["still"] += shown == "STILL"
    total = sum(c["n"] for c in per.values())
    right = sum(c["right"] for c in per.values())
    walking = per["WALKING"]
    return {
        "accuracy": round(right / max(total, 1), 4),
        "windows": total,
        "moving_vs_still": round(agree / max(total, 1), 4),
        "stairs_as_walking": round(
            sum(per[c]["shown WALKING"] for c in ("WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS"))
            / max(per["WALKING_UPSTAIRS"]["n"] + per["WALKING_DOWNSTAIRS"]["n"], 1),
            4,
        ),
        "stairs_false_alarm": round(
            (walking["shown WALKING_UPSTAIRS"] + walking["shown WALKING_DOWNSTAIRS"]) / max(walking["n"], 1), 4
        ),
        "per_class": {c: {"windows": v["n"], "recall": round(v["right"] / max(v["n"], 1), 4)} for c, v in per.items()},
        "posture_as_still": {p: round(v["still"] / max(v["n"], 1), 4) for p, v in sorted(postures.items())},
        "shown": {c: {k[6:]: n for k, n in v.items() if k.startswith("shown ")} for c, v in per.items()},
    }


def barometer_only(rates=(1.0, 5.0, 25.0), noises=(0.01, 0.03, 0.05), runs: int = 20) -> list[dict]:
    """The estimator alone on synthetic level and climbing stretches (see the module doc)."""
    import numpy as np

    from harstream.stream.core.barometer import AltitudeRate, pressure_hpa

    rows = []
    for rate in rates:
        step = max(int(rate), 1)
        for noise in noises:
            claims = leans = level_n = missed = climb_n = 0
            spent = 0.0
            for seed in range(runs):
                rng = np.random.default_rng(seed)
                t = np.arange(0, 120, 1 / rate)
                p = pressure_hpa(np.zeros_like(t), 1000.0) + rng.normal(0, noise, len(t))
                for k in range(3):  # two lasting steps and one door opened and shut
                    at, size = rng.uniform(5, 115), rng.choice([-1, 1]) * rng.uniform(0.05, 0.3)
                    until = at + rng.uniform(1, 6) if k == 2 else np.inf
                    p = p + np.where((t > at) & (t < until), size, 0.0)
                p = np.round((p + t * rng.uniform(-1, 1) / 3600) / 0.01) * 0.01  # drift, quantisation
                climb = np.where(t < 20, 0, np.where(t < 40, (t - 20) * 0.2, 4.0))
                pc = np.round((pressure_hpa(climb, 1000.0) + rng.normal(0, noise, len(t))) / 0.01) * 0.01
                level, climbing = AltitudeRate(), AltitudeRate()
                for i in range(0, len(t), step):
                    now = float(t[min(i + step, len(t)) - 1])
                    began = time.perf_counter()
                    level.push(t[i : i + step], p[i : i + step])
                    spent += time.perf_counter() - began
                    climbing.push(t[i : i + step], pc[i : i + step])
                    if now >= 10:
                        level_n += 1
                        said = level.verdict(now)
                        claims += said == "down"
                        leans += said != "down" and level.leaning(now) == "down"
                    if 25 <= now < 40:
                        climb_n += 1
                        missed += climbing.verdict(now) != "up"
            rows.append(
                {
                    "cpu_ms_per_device_s": round(spent * 1000 / (runs * 120), 2),
                    "rate_hz": rate,
                    "noise_hpa": noise,
                    "level_claimed_down": round(claims / level_n, 3),
                    "level_leaning_down": round(leans / level_n, 3),
                    "climb_missed": round(missed / climb_n, 3),
                }
            )
            print(rows[-1], flush=True)
    return rows


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rates",
        type=Number(float, 0.1, 100.0),
        nargs="*",
        default=[1.0, 5.0, 25.0],
        help="barometer rates (Hz; none: no simulated barometer)",
    )
    parser.add_argument(
        "--noise", type=Number(float, 0.0, 1.0), default=0.03, help="barometer noise (hPa, standard deviation)"
    )
    parser.add_argument("--doors", type=Number(float, 0.0, 60.0), default=0.5, help="door/ventilation steps per minute")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--model", default=None, help="the placement-free model (default: the shipped one)")
    parser.add_argument("--no-limbs", action="store_true", help="leave out the simulated thigh and wrist")
    parser.add_argument("--out", type=Path, default=Path("docs/reports/stairs_evidence.json"))
    parser.add_argument("--barometer-only", action="store_true", help="the estimator alone on synthetic stretches")


def run(args: argparse.Namespace) -> int:
    if args.barometer_only:
        barometer_only()
        return 0

    from harstream.commands.worker import load_served
    from harstream.models.artifact import ANY_MODEL, load_artifact
    from harstream.models.augment import LIMBS
    from harstream.models.placement_free import TEST_ROTATION_OFFSET, limb_recordings, sessions_as_shipped
    from harstream.simulator.barometer import SimulatedBarometer, with_simulated_pressure
    from harstream.stream.core.smoothing import DEFAULT_THRESHOLD
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_embedded

    worker_args = argparse.Namespace(
        runtime=args.runtime, no_fast_start=False, whole_model=False, display="decoder", threshold=DEFAULT_THRESHOLD
    )
    served = load_served(args.model, "any", worker_args)
    seed = int(load_artifact(args.model or ANY_MODEL).metadata.get("seed", 0))
    recordings = load_embedded().recordings
    held = sessions_as_shipped(recordings, seed)[1]
    conditions: dict[str, tuple[bool, list[Recording]]] = {"ungated": (False, held), "no pressure": (True, held)}
    if not args.no_limbs:  # the held-out sessions as recorded, each as a simulated limb (then turned at random)
        originals = [r for r in recordings if r.subject in set(UCI_TEST_SUBJECTS)]
        for kind in LIMBS:
            conditions[kind] = (True, limb_recordings(originals, kind, seed + TEST_ROTATION_OFFSET))
        for kind in LIMBS:  # limbs that also move while their owner sits or stands
            conditions[f"{kind} fidgets"] = (
                True,
                limb_recordings(originals, kind, seed + TEST_ROTATION_OFFSET, fidgets=True),
            )
        for kind in LIMBS:  # limbs swinging beyond the simulated training ranges
            conditions[f"{kind} unseen"] = (
                True,
                limb_recordings(originals, kind, seed + TEST_ROTATION_OFFSET, unseen=True),
            )
    for rate in args.rates:
        model = SimulatedBarometer(rate_hz=rate, noise_hpa=args.noise, doors_per_min=args.doors)
        conditions[f"pressure {rate:g} Hz"] = (
            True,
            [with_simulated_pressure(r, model, seed=i) for i, r in enumerate(held)],
        )
    results = {}
    for name, (gated, recordings) in conditions.items():
        began = time.perf_counter()
        rows = [t for rec in recordings for t in replay_published(rec, served, gated)]
        results[name] = {**score(rows), "whole_windows": score(rows, whole=True)}
        if not gated:  # the model alone, window by window (no display, no gate)
            results[name]["window_label"] = {
                "at_window_end": score(rows, raw=True)["accuracy"],
                "whole_windows": score(rows, whole=True, raw=True)["accuracy"],
            }
            print(f"{name:>16}: the window's own label {results[name]['window_label']}", flush=True)
        for label, r in (("end", results[name]), ("whole", results[name]["whole_windows"])):
            print(
                f"{name:>16} {label:>5}: accuracy {r['accuracy']:.4f} on {r['windows']} windows; recall "
                + ", ".join(f"{c} {v['recall']:.3f}" for c, v in r["per_class"].items())
                + f"; stairs false alarm {r['stairs_false_alarm']:.3f}; moving vs still {r['moving_vs_still']:.4f}"
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
