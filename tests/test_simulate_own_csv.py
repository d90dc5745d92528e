"""`harstream simulate --source walk.csv` replays the user's own recording as
docs/recordings.md says, with no `--subjects`: a CSV without a subject
column is subject 0, which the default (HAPT's held-out test subjects) left
out, so the command refused every own recording unless told `--subjects 0`.
The real command, a real SUB socket."""

from __future__ import annotations

import subprocess
import sys

import zmq

from harstream.stream.core.protocol import decode_samples

SAMPLES = 100


def test_an_own_csv_is_replayed_without_naming_its_subject(tmp_path, ipc_address):
    source = tmp_path / "walk.csv"
    rows = ["time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label"]
    rows += [f"{k / 50:.2f},1.0,0.0,0.0,0.0,0.0,0.0,WALKING" for k in range(SAMPLES)]
    source.write_text("\n".join(rows) + "\n")
    address = ipc_address("ingest")
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    argv = ["simulate", "--source", str(source), "--speed", "0", "--no-tail-replay", "--publish", "@" + address]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harstream", *argv, "--wait", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        sub.connect(address)
        got = 0
        while got < SAMPLES and sub.poll(15_000):
            batch = decode_samples(sub.recv_multipart())
            assert batch.device == "walk"
            got += len(batch.samples)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        sub.close()
    assert proc.returncode == 0, err.decode()
    assert got == SAMPLES
    assert b"1 devices from 1 sessions" in out
