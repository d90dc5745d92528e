"""Every docstring example in the package is a test."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest


def modules_with_examples() -> list[str]:
    names = []
    for package in (
        "harstream",
        "harstream.commands",
        "harstream.bench",
        "harstream.stream",
        "harstream.stream.core",
        "harstream.stream.bus",
        "harstream.stream.data",
        "harstream.stream.files",
        "harstream.stream.personal",
        "harstream.stream.gateway",
        "harstream.stream.durable",
        "harstream.models",
        "harstream.models.studies",
        "harstream.simulator",
    ):
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{package}."):
            spec = importlib.util.find_spec(info.name)
            if spec and spec.origin and Path(spec.origin).read_text().count(">>> "):
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("module", modules_with_examples())
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
