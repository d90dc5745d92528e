"""Phones through the gateway, scored on the label each phone was sent back.

What a person sees on the phone's page, measured as they would meet it: a
real ``harstream worker`` and a real ``harstream gateway`` (processes, the
shipped models), and every held-out HAPT session streamed at the same time,
in real time, as its own phone over the gateway's WebSocket
(:mod:`harstream.simulator.phones`: ``hello``, then 200 ms ``samples``
messages of m/s² and deg/s readings at the phone's rate with uneven
timestamps). Each phone keeps the ``prediction`` messages the gateway sends
it; each window's published label (``smoothed``) is scored as
``harstream bench stairs`` scores the worker core's, at the window's end and
on whole windows, in the placement-free model's classes.

Placements (phones are served in ``any`` mode, as a phone that declares
nothing is):

- ``waist``: the sessions as recorded at the waist, turned at random as the
  placement-free model's own test turns them;
- ``thigh`` / ``wrist``: the same sessions as a SIMULATED device on a
  swinging thigh (a trouser pocket) or wrist
  (:func:`~harstream.models.placement_free.limb_recordings`);
- ``thigh+fidgets`` / ``wrist+fidgets``: those limbs also moving while their
  owner sits or stands (SIMULATED reaches, gestures, posture shifts, tremor,
  a bouncing knee: :func:`~harstream.models.augment.simulate_fidgets`).

``--pocket-pressure HZ`` gives the thigh phones a SIMULATED barometer (a
phone in a pocket has one; a watch often not).

``--calibrated`` measures the issue's calibrated figure the way a user gets
it: per held-out subject and placement (thigh, wrist), both sessions as the
SIMULATED placement of the calibration study
(:func:`~harstream.models.studies.placement_calibration.simulate_placement`,
its draws), the first 60 s of walking, sitting and standing of the first
session written as CSV files and fitted by ``harstream calibrate`` (the
command, as a process) into the worker's ``--personal-dir``, and the second
session streamed as that phone; scored exactly (sitting shown STILL is
wrong) on walking, sitting and standing. A run takes as long as the
longest session (about 7.5 minutes for the held-out subjects).

    harstream bench phones [--placements waist thigh wrist ...] [--rate 100] [--jitter 0.2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from harstream.commands._options import SUBJECT, Number

PLACEMENTS = ("waist", "thigh", "wrist", "thigh+fidgets", "wrist+fidgets")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--placements", nargs="+", choices=PLACEMENTS, default=list(PLACEMENTS))
    parser.add_argument("--subjects", type=SUBJECT, nargs="+", metavar="S", help="default: the held-out subjects")
    parser.add_argument("--rate", type=Number(float, 10.0, 1000.0), default=100.0, help="each phone's sensor rate (Hz)")
    parser.add_argument(
        "--jitter", type=Number(float, 0.0, 0.49), default=0.2, help="reading times spread (share of a period)"
    )
    parser.add_argument(
        "--pocket-pressure",
        type=Number(float, 0.1, 100.0),
        default=None,
        metavar="HZ",
        help="a SIMULATED barometer at HZ on the thigh phones",
    )
    parser.add_argument("--no-gyro", action="store_true", help="phones without a gyroscope (no gyro readings)")
    parser.add_argument(
        "--quiet",
        type=Number(float, 0.0, 600.0),
        nargs=2,
        default=(0.0, 0.0),
        metavar=("EVERY", "FOR"),
        help="each phone goes quiet for FOR s at the end of every EVERY s (screen off) and then flushes what it "
        "read (default: never)",
    )
    parser.add_argument(
        "--calibrated",
        action="store_true",
        help="calibrated phones: `harstream calibrate` on each subject's first session, the second streamed "
        "(thigh and wrist, SIMULATED as the calibration study does)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/reports/phones_live.json"))


def run(args: argparse.Namespace) -> int:
    import asyncio

    from harstream.models.placement_free import TEST_ROTATION_OFFSET, limb_recordings, sessions_as_shipped
    from harstream.simulator.phones import PhoneHabits, replay_phones
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_embedded

    every, quiet = args.quiet
    if quiet > 0 and not quiet < every:
        print(f"harstream bench phones: --quiet {every:g} {quiet:g}: the quiet spell must be shorter", file=sys.stderr)
        return 2
    seed = 0  # the shipped placement-free model's (its metadata's) seed; its test turns
    subjects = set(args.subjects or UCI_TEST_SUBJECTS)
    recordings = load_embedded().recordings
    originals = [r for r in recordings if r.subject in subjects]
    held = [r for r in sessions_as_shipped(recordings, seed)[1] if r.subject in subjects]
    sets = {}
    workdir = None
    if args.calibrated:
        import tempfile

        workdir = Path(tempfile.mkdtemp(prefix="harstream-bench-phones-"))
        for kind in ("thigh", "wrist"):
            sets[f"{kind} calibrated"] = calibrated_sessions(kind, sorted(subjects), workdir / "personal", workdir)
    for name in [] if args.calibrated else args.placements:
        if name == "waist":
            sets[name] = held
            continue
        kind, fidgets = name.split("+")[0], name.endswith("+fidgets")
        sets[name] = limb_recordings(originals, kind, seed + TEST_ROTATION_OFFSET, fidgets=fidgets)
        if kind == "thigh" and args.pocket_pressure:
            from harstream.simulator.barometer import SimulatedBarometer, with_simulated_pressure

            model = SimulatedBarometer(rate_hz=args.pocket_pressure)
            sets[name] = [with_simulated_pressure(r, model, seed=i) for i, r in enumerate(sets[name])]

    with _Services(workdir / "personal" if workdir else None) as services:
        habits = PhoneHabits(
            rate_hz=args.rate,
            jitter=args.jitter,
            gyro=not args.no_gyro,
            quiet_every_s=args.quiet[0],
            quiet_s=args.quiet[1],
        )
        began = time.time()
        print(f"{sum(len(s) for s in sets.values())} phones streaming in real time …", flush=True)

        names = [phone_name(name, i) for name, recs in sets.items() for i in range(len(recs))]
        phones = asyncio.run(replay_phones(services.url, [r for recs in sets.values() for r in recs], habits, names))
        runs, first = {}, 0  # replay_phones keeps the order it was given: each set's phones are consecutive
        for name, recs in sets.items():
            runs[name], first = phones[first : first + len(recs)], first + len(recs)
        print(f"streamed in {time.time() - began:.0f} s; gateway counters {services.stats()}", flush=True)

    results = {}
    for name, phone_runs in runs.items():
        results[name] = score_runs(phone_runs)
        r = results[name]
        print(
            f"{name:>14} ({', '.join(r['modes'])} mode): exact walk/sit/stand {r['at_window_end']['exact']:.4f} / "
            f"{r['whole_windows']['exact']:.4f}; at window end: own classes "
            f"{r['at_window_end']['own_classes']:.4f}, moving vs still "
            f"{r['at_window_end']['moving_vs_still']:.4f}; whole windows: own classes "
            f"{r['whole_windows']['own_classes']:.4f}, moving vs still {r['whole_windows']['moving_vs_still']:.4f}; "
            f"windows {r['windows_received']} "
            f"of {r['windows_expected']}; delay p50 {r['delay_s']['p50']} s; errors {r['errors']}; "
            f"a phone sent at worst {r['sent_late_s_max']} s late",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": "harstream " + " ".join(sys.argv[1:]),
        "phone": {
            "rate_hz": args.rate,
            "jitter": args.jitter,
            "pocket_pressure_hz": args.pocket_pressure,
            "gyroscope": not args.no_gyro,
            "quiet_every_s": args.quiet[0],
            "quiet_s": args.quiet[1],
        },
        "simulated": "thigh and wrist motion, fidgets and any barometer are simulated from HAPT's waist recordings",
        "results": results,
    }
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")
    return 0


def phone_name(placement: str, i: int) -> str:
    """The phone id of ``placement``'s ``i``-th session (a device id allows no spaces).

    >>> phone_name("thigh calibrated", 3), phone_name("wrist+fidgets", 0)
    ('thigh.calibrated-3', 'wrist+fidgets-0')
    """
    return f"{placement.replace(' ', '.')}-{i}"


def calibrated_sessions(kind: str, subjects: list[int], personal: Path, workdir: Path, seed: int = 0) -> list:
    """Each subject's second session as a calibrated ``kind`` device, its
    personal model fitted by ``harstream calibrate`` into ``personal`` from
    the first session's first 60 s of walking, sitting and standing (CSV files
    in ``workdir``). The placement and the pocket are drawn as
    ``placement_calibration`` draws them for ``seed``."""
    import subprocess

    import numpy as np

    from harstream.models.augment import LimbMotion, uniform_rotations
    from harstream.models.placement_free import rotate_recording
    from harstream.models.studies.calibration import first_seconds
    from harstream.models.studies.placement_calibration import PLACEMENTS, simulate_placement
    from harstream.stream.data.recordings import load_embedded

    data = load_embedded()
    rng = np.random.default_rng([seed, PLACEMENTS.index(kind)])
    scored: list = []
    for subject, pocket in zip(subjects, uniform_rotations(len(subjects), rng)):
        recs = sorted(data.of_subjects([subject]), key=lambda r: r.name)
        if len(recs) < 2:
            continue
        limb = LimbMotion.draw(kind, rng)
        first, *later = [rotate_recording(simulate_placement(r, kind, limb, rng)[0], pocket) for r in recs]
        folder = workdir / f"{kind}-{subject}"
        write_bouts(first_seconds(first, ("WALKING", "SITTING", "STANDING"), 60.0), folder)
        device = "phone:" + phone_name(f"{kind} calibrated", len(scored))
        done = subprocess.run(
            [sys.executable, "-m", "harstream", "calibrate", "--data", str(folder), "--device", device]
            + ["--out", str(personal / f"{device.split(':')[1]}.personal.json")],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"harstream calibrate for {device} failed: {done.stderr[-500:]}")
        print(f"{device}: {done.stdout.strip().splitlines()[-1]}", flush=True)
        scored.append(later[0])
    return scored


def write_bouts(rec, folder: Path) -> None:
    """Each labelled stretch of ``rec`` as its own CSV file in ``folder``
    (docs/recordings.md: a pause inside one file is refused)."""
    import numpy as np

    from harstream.stream.core.activities import label_name

    folder.mkdir(parents=True, exist_ok=True)
    labelled = np.asarray(rec.labels) > 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], labelled.astype(np.int8), [0]])))
    for k, (a, b) in enumerate(zip(edges[::2], edges[1::2])):
        rows = ["time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label"]
        for i in range(a, b):
            values = ",".join(f"{v:.6f}" for v in rec.samples[i])
            rows.append(f"{i / 50:.2f},{values},{label_name(int(rec.labels[i]))}")
        (folder / f"bout{k:02d}_user{rec.subject:02d}.csv").write_text("\n".join(rows) + "\n")


def exact(rows, whole: bool = False) -> float:
    """Of the windows whose truth is walking, sitting or standing, the share
    shown exactly that (the issue's calibrated figure: STILL is wrong).

    >>> exact([("SITTING", "SITTING", None, ""), ("STANDING", "STILL", None, "")])
    0.5
    """
    return _share_right(rows, {t: (t,) for t in ("WALKING", "SITTING", "STANDING")}, whole)


def _share_right(rows, right: dict[str, tuple[str, ...]], whole: bool) -> float:
    """Of the rows whose truth (at the window's end, or ``whole``) is a key
    of ``right``, the share whose shown label is one of its values."""
    hits = [shown in right[truth] for end, shown, inside, _ in rows if (truth := inside if whole else end) in right]
    return round(sum(hits) / len(hits), 4) if hits else float("nan")


def score_runs(runs) -> dict:
    """Each phone's predictions against its recording's labels: the window
    label scores of ``harstream bench stairs``, how many windows came back, and
    the delay from a window's last reading to its label's arrival."""
    import numpy as np

    from harstream.bench.stairs import score
    from harstream.stream.core.activities import label_name
    from harstream.stream.core.pipeline import STEP, WINDOW

    rows, delays, expected, errors = [], [], 0, 0
    for run in runs:
        labels = np.asarray(run.recording.labels)
        expected += max(0, (len(labels) - WINDOW) // STEP + 1)
        errors += len(run.errors)
        for p in run.predictions:
            if p.get("between"):
                continue
            end = int(round((float(p["t_end"]) - run.t0) * 50))
            if not WINDOW - 1 <= end < len(labels):
                continue
            inside = labels[end - WINDOW + 1 : end + 1]
            truth = label_name(int(labels[end]))
            whole = truth if (inside == inside[-1]).all() else None
            rows.append((truth, p["smoothed"], whole, p["label"]))
            delays.append(float(p["_received"]) - float(p["t_end"]))
    d = np.asarray(delays) if delays else np.zeros(1)
    return {
        "phones": len(runs),
        "windows_expected": expected,
        "windows_received": len(rows),
        "errors": errors,
        "sent_late_s_max": round(max((run.late_s for run in runs), default=0.0), 2),
        "delay_s": {"p50": round(float(np.median(d)), 2), "p99": round(float(np.percentile(d, 99)), 2)},
        "modes": sorted({str(p.get("mode")) for run in runs for p in run.predictions}),
        "at_window_end": {**score(rows), "own_classes": own_classes(rows), "exact": exact(rows)},
        "whole_windows": {
            **score(rows, whole=True),
            "own_classes": own_classes(rows, whole=True),
            "exact": exact(rows, whole=True),
        },
    }


def own_classes(rows, whole: bool = False) -> float:
    """The issue's figure for a phone in ``any`` mode: of the windows whose
    truth is walking, sitting or standing, the share shown WALKING for
    walking and STILL for sitting or standing (stairs and lying left out).

    >>> own_classes([("WALKING", "WALKING", None, ""), ("SITTING", "WALKING", None, ""), ("LAYING", "STILL", None, "")])
    0.5
    """
    # a calibrated phone may name the posture itself
    right = {"WALKING": ("WALKING",), "SITTING": ("STILL", "SITTING"), "STANDING": ("STILL", "STANDING")}
    return _share_right(rows, right, whole)


class _Services:
    """A worker and a gateway as processes on free loopback ports, stopped on exit."""

    def __init__(self, personal_dir: Path | None = None):
        self.personal_dir = personal_dir

    def __enter__(self) -> _Services:
        import socket
        import subprocess
        import sys
        import threading

        def free_port() -> int:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]

        ingest, output, port = free_port(), free_port(), free_port()
        exe = [sys.executable, "-m", "harstream"]
        self.log = open(f"/tmp/harstream-bench-phones-{port}.log", "w")  # noqa: SIM115 (closed in __exit__)
        self.worker = subprocess.Popen(
            exe
            + ["worker", "--ingest", f"tcp://127.0.0.1:{ingest}", "--publish", f"tcp://127.0.0.1:{output}"]
            + (["--personal-dir", str(self.personal_dir)] if self.personal_dir else []),
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.gateway = subprocess.Popen(
            exe
            + ["gateway", "--port", str(port), "--ingest", f"tcp://127.0.0.1:{ingest}"]
            + ["--output", f"tcp://127.0.0.1:{output}", "--no-calibration"],
            stdout=self.log,
            stderr=self.log,
        )
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.port = port
        assert self.worker.stdout is not None
        for line in self.worker.stdout:  # the worker says its modes once its models are loaded
            self.log.write(line)
            if line.startswith("worker: modes"):
                break
        else:
            raise RuntimeError(f"worker exited ({self.worker.poll()}); see {self.log.name}")
        threading.Thread(target=self._drain, daemon=True).start()  # its stats lines must not fill the pipe
        self._wait_gateway()
        return self

    def _drain(self) -> None:
        assert self.worker.stdout is not None
        for line in self.worker.stdout:
            self.log.write(line)

    def _wait_gateway(self) -> None:
        import socket

        for _ in range(300):
            if self.gateway.poll() is not None:
                raise RuntimeError(f"gateway exited with code {self.gateway.returncode}; see {self.log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                time.sleep(2.0)  # the worker's sockets, after its models
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("gateway did not open its port in 30 s")

    def stats(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as r:
            stats = json.loads(r.read())
        return {"counts": stats.get("counts"), "rejects": stats.get("rejects")}

    def __exit__(self, *exc) -> None:
        for proc in (self.gateway, self.worker):
            proc.terminate()
        for proc in (self.gateway, self.worker):
            try:
                proc.wait(20)
            except Exception:
                proc.kill()
        self.log.close()
