"""Shared fixtures. Tests build their own small fixtures; only the expensive,
read-only embedded dataset is shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def embedded():
    """The embedded HAPT dataset (decoded once, cached on disk)."""
    from harstream.stream.recordings import load_embedded

    return load_embedded()


@pytest.fixture
def output_dir(request) -> Path:
    """A folder under test-output/ named for the test, kept after the run."""
    path = Path(__file__).resolve().parent.parent / "test-output" / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path
