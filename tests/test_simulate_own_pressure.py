"""`harstream simulate --source my.csv --speed 10` replays a CSV's own
barometer (its pressure_hpa column, docs/recordings.md) with the samples.
The readings must keep their spacing against the samples whatever the
speed, as they do with `--pressure`: else a sped-up replay packs ten seconds
of samples into one second of bus time while the readings keep theirs, and
the worker's vertical speed is wrong. The real command, a real SUB socket."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import zmq

from harstream.stream.core.protocol import decode_samples

SECONDS = 10.0


def _csv_with_barometer(path) -> None:
    rows = ["time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label,pressure_hpa"]
    for k in range(int(SECONDS * 50)):
        t = k / 50
        pressure = f"{1008.4 - 0.05 * t:.3f}" if k % 10 == 0 else ""  # 5 Hz, climbing
        rows.append(f"{t:.2f},1.0,0.0,0.0,0.0,0.0,0.0,WALKING_UPSTAIRS,{pressure}")
    path.write_text("\n".join(rows) + "\n")


def test_a_csvs_own_barometer_keeps_its_spacing_against_the_samples_at_speed_10(tmp_path, ipc_address):
    source = tmp_path / "stairs.csv"
    _csv_with_barometer(source)
    address = ipc_address("ingest")
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    argv = ["simulate", "--source", str(source), "--subjects", "0", "--speed", "10", "--no-tail-replay"]
    argv += ["--publish", "@" + address, "--wait", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "harstream", *argv], stdout=subprocess.PIPE, text=True)
    try:
        sub.connect(address)
        batches = []
        while sub.poll(15_000):
            batch = decode_samples(sub.recv_multipart())
            batches.append(batch)
            if batch.seq + len(batch.samples) >= SECONDS * 50:
                break
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        sub.close()
    assert sum(len(b.samples) for b in batches) == SECONDS * 50
    first = batches[0].t0
    # the samples' times: by their place in the stream
    assert all(abs((b.t0 - first) - b.seq / 50) < 1e-3 for b in batches)
    readings = np.concatenate([b.pressure for b in batches if b.pressure is not None])
    assert len(readings) == SECONDS * 5
    # every reading at its CSV time on the samples' clock (0.2 s apart), so the climb reads 0.05 hPa/s
    np.testing.assert_allclose(readings[:, 0] - first, np.arange(len(readings)) * 0.2, atol=1e-3)


def test_a_bad_recording_is_one_line_naming_file_and_line_and_exit_2(tmp_path):
    bad = tmp_path / "walk.csv"
    bad.write_text("time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n0,1,0,0,0,0,0\n0.02,1,n/a,0,0,0,0\n")
    done = subprocess.run(
        [sys.executable, "-m", "harstream", "simulate", "--source", str(bad), "--subjects", "0", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "walk.csv line 3, column acc_y: 'n/a' is not a finite number" in done.stderr
