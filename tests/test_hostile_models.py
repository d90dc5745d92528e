"""Model artifacts made hostile: the metadata JSON beside a ``.keras`` file
handed to ``harstream evaluate --artifact`` and ``harstream worker --model``.
Each is refused naming the file and the field, at once (before TensorFlow
is imported), never with a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harstream.models.artifact import DEFAULT_MODEL, metadata_path

SHIPPED = json.loads(metadata_path(DEFAULT_MODEL).read_text())


def artifact_with(tmp_path: Path, metadata: str) -> Path:
    """The shipped model's file beside ``metadata`` (its JSON text)."""
    model = tmp_path / "m.keras"
    shutil.copyfile(DEFAULT_MODEL, model)
    metadata_path(model).write_text(metadata)
    return model


def changed(**fields) -> str:
    return json.dumps({**SHIPPED, **fields})


def evaluate(model: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harstream", "evaluate", "--artifact", str(model)],
        capture_output=True,
        text=True,
        timeout=60,
    )


HOSTILE = [
    ("[]", "a JSON list, not an object of model metadata"),
    ('"model"', "a JSON str, not an object of model metadata"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON (maximum recursion depth"),
    ('{"preprocessing": ' + "1" * 5000 + "}", "not valid JSON (Exceeds the limit (4300 digits)"),
    (changed(preprocessing=[1, 2]), "preprocessing is not an object"),
    (changed(placement=["any"]), 'placement ["any"] is not one of waist, any, personal'),
    (changed(sha256=0), "sha256 0 is not 64 lowercase hex digits"),
    (changed(sha256=["a"]), 'sha256 ["a"] is not 64 lowercase hex digits'),
    (changed(architecture="lstm\n2026-12-07 worker: forged"), 'architecture "lstm\\n2026-12-07 worker: forged" is not'),
    (changed(architecture=7), "architecture 7 is not printable text"),
    (changed(context_steps=[None]), "context_steps [null] is not a list of whole numbers"),
    (changed(context_steps=[1e400]), "context_steps [Infinity] is not a list of whole numbers"),
    (changed(decoder=[0.5]), "decoder [0.5] is not an object"),
    (changed(split={"test_subjects": "2,4"}), 'split.test_subjects "2,4" is not a list of whole numbers'),
    (changed(split=[2, 4]), "split [2, 4] is not an object"),
    (changed(windows={"train": "many"}), 'windows.train "many" is not a whole number'),
    (changed(seed="0"), 'seed "0" is not a whole number'),
]


@pytest.mark.parametrize("metadata, says", HOSTILE, ids=[f"{i}" for i in range(len(HOSTILE))])
def test_hostile_metadata_is_refused_naming_its_file_and_field_before_tensorflow(tmp_path, metadata, says):
    # before, each was a traceback (AttributeError, ValueError, RecursionError, TypeError)
    # after TensorFlow had been imported
    model = artifact_with(tmp_path, metadata)
    start = time.monotonic()
    done = evaluate(model)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"harstream evaluate: {metadata_path(model)}: " in done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - start < 10


def test_thousands_of_classes_are_refused_in_a_line_of_bounded_length(tmp_path):
    model = artifact_with(tmp_path, changed(classes=[f"class {i}" for i in range(100_000)]))
    done = evaluate(model)
    assert done.returncode == 2
    assert "are not what a waist model has" in done.stderr and "(100,000 in all)" in done.stderr
    assert len(done.stderr) < 2000


def test_metadata_of_gigabytes_is_refused_without_reading_it(tmp_path):
    model = artifact_with(tmp_path, "")
    with open(metadata_path(model), "wb") as f:
        f.truncate(1 << 30)  # sparse
    done = evaluate(model)
    assert done.returncode == 2
    assert "over 4,194,304 bytes; no model's metadata is" in done.stderr


def test_a_worker_given_metadata_that_is_no_object_names_it_and_exits(tmp_path):
    model = artifact_with(tmp_path, "[]")
    done = subprocess.run(
        [sys.executable, "-m", "harstream", "worker", "--model", str(model), "--ingest", "tcp://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"worker: {metadata_path(model)}: a JSON list, not an object of model metadata" in done.stderr + done.stdout
    assert "AttributeError" not in done.stderr + done.stdout


def test_the_shipped_models_metadata_passes_the_checks():
    from harstream.models.artifact import ANY_MODEL, ANY_NO_GYRO_MODEL, read_metadata

    for model in (DEFAULT_MODEL, ANY_MODEL, ANY_NO_GYRO_MODEL):
        read_metadata(model)


def write_zip(path: Path, members: list[tuple[str, int, int, bytes]]) -> None:
    """A zip written by hand: (name, method 0 stored / 8 deflated, declared size,
    data); CRCs are 0 (a reader that checks finds out only after unpacking)."""
    import struct

    body, directory = b"", b""
    for name, method, size, data in members:
        raw = name.encode()
        offset = len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, 0, len(data), size, len(raw), 0)
        body += raw + data
        directory += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            method,
            0,
            0,
            0,
            len(data),
            size,
            len(raw),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        directory += raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory), len(body), 0)
    path.write_bytes(body + directory + end)


def deflated_spaces(size: int) -> bytes:
    """``size`` bytes of spaces deflated (raw), built from one compressed block
    repeated: after a full flush a block refers to nothing before it."""
    import zlib

    block = 16 << 20
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = squeeze.compress(b" " * block) + squeeze.flush(zlib.Z_FULL_FLUSH)
    return one * (size // block) + squeeze.flush()


def peak_rss_of(command: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``command`` in a fresh Python that reports its child's peak memory (bytes)."""
    probe = (
        "import resource, subprocess, sys, json;"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120);"
        "print(json.dumps([done.returncode, done.stdout, done.stderr,"
        " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024]))"
    )
    out = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, timeout=150)
    code, stdout, stderr, peak = json.loads(out.stdout)
    return subprocess.CompletedProcess(command, code, stdout, stderr), peak


def test_a_keras_zip_whose_config_unpacks_to_gigabytes_is_refused_from_its_directory(tmp_path):
    # before, Keras (it guards only members declaring over 4 GiB) read the 3 GiB
    # config.json into memory, then failed on it: 3+ GB of memory for a 3 MB file
    model = tmp_path / "bomb.keras"
    write_zip(
        model,
        [
            ("metadata.json", 0, 2, b"{}"),
            ("config.json", 8, 3 << 30, deflated_spaces(3 << 30)),
        ],
    )
    from harstream.models.artifact import file_sha256

    metadata_path(model).write_text(changed(sha256=file_sha256(model)))
    done, peak = peak_rss_of([sys.executable, "-m", "harstream", "evaluate", "--artifact", str(model)])
    assert peak < 1 << 30, f"peak memory {peak:,} bytes"
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{model}: member config.json unpacks to 3,221,225,472 bytes" in done.stderr


def test_a_model_file_of_gigabytes_is_refused_before_it_is_hashed(tmp_path):
    model = artifact_with(tmp_path, changed(sha256="0" * 64))
    with open(model, "r+b") as f:
        f.truncate(3 << 30)  # sparse
    done, peak = peak_rss_of([sys.executable, "-m", "harstream", "evaluate", "--artifact", str(model)])
    assert peak < 1 << 30, f"peak memory {peak:,} bytes"
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{model}: 3,221,225,472 bytes; a model file over 1,073,741,824 bytes is not read" in done.stderr
