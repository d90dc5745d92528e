"""What `harstream tail` prints for a replay's predictions: a window whose
recording carries no label there (truth ``unknown``) is not marked wrong,
one with a label is marked ok or ≠. The real command on a real bus."""

from __future__ import annotations

import subprocess
import sys
import time

import zmq

from harstream.stream.core.protocol import Prediction, encode_prediction

CLASSES = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]


def _prediction(window: int, truth: str | None) -> Prediction:
    probs = [0.9, 0.02, 0.02, 0.02, 0.02, 0.02]
    return Prediction(
        "d1", window, 0.0, 2.56, "WALKING", probs, "WALKING", probs, "m@1", 5.0, truth, "w", "waist", CLASSES
    )


def test_tail_marks_a_labelled_window_and_leaves_an_unlabelled_one_unmarked(ipc_address):
    address = ipc_address("out")
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(address)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harstream", "tail", "--subscribe", address, "--count", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:  # until tail's subscription has arrived
            for k, truth in enumerate(["unknown", "WALKING", "SITTING"]):
                pub.send_multipart(encode_prediction(_prediction(k, truth)))
            time.sleep(0.2)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        pub.close()
    lines = {int(line.split("#")[1].split()[0]): line for line in out.splitlines() if line.startswith("d1")}
    assert "truth unknown" in lines[0] and "≠" not in lines[0] and " ok" not in lines[0]
    assert "truth WALKING  ok" in lines[1]
    assert "truth SITTING  ≠" in lines[2]


def test_json_without_final_is_a_usage_error():
    done = subprocess.run(
        [sys.executable, "-m", "harstream", "tail", "--json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--json goes with --final" in done.stderr
