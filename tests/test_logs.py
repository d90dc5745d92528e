"""Commands print harstream's own lines; third-party start-up notes only when asked for."""

from __future__ import annotations

import os
import subprocess
import sys

NOISY_BLOCK = r"""
import os, sys
from harstream.logs import quiet_native_stderr
with quiet_native_stderr():
    # what TensorFlow's C++ writes straight to file descriptor 2
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"I0000 00:00:1796062520.895855   22414 service.cc:153] XLA service 0x5575 initialized\n")
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"E0000 00:00:1796062520.895855   22414 loader.cc:12] a real error\n")
    print("a python warning", file=sys.stderr)
print("stdout untouched")
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("HARSTREAM_LOG", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**clean, **env}
    )


def test_start_up_notes_are_dropped_and_errors_kept():
    out = _run(NOISY_BLOCK)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        "E0000 00:00:1796062520.895855   22414 loader.cc:12] a real error",
        "a python warning",
    ]
    assert out.stdout == "stdout untouched\n"


def test_harstream_log_debug_shows_everything():
    out = _run(NOISY_BLOCK, HARSTREAM_LOG="debug")
    assert "XLA service" in out.stderr
    assert "XNNPACK" in out.stderr
    assert "a real error" in out.stderr


def test_importing_tensorflow_after_configure_logging_prints_nothing():
    code = "from harstream.logs import configure_logging; configure_logging(False); import keras, tensorflow"
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
