"""`harstream COMMAND --help` tells a user the value an option takes when it
is not given (docs/ and the help agree on defaults)."""

from __future__ import annotations

import re

import pytest

from harstream.cli import main


def _raw_help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def _help(capsys, *argv: str) -> str:
    return " ".join(_raw_help(capsys, *argv).split())  # one line: argparse wraps where it likes


def _entry(text: str, option: str) -> str:
    """The help of one option, its wrapped lines joined."""
    lines = text.split("options:")[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option + " "))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("  -")), len(lines))
    return " ".join(" ".join(lines[start:end]).split())


def test_every_benchmark_option_with_a_default_shows_it_once(capsys):
    said = _help(capsys, "bench", "capacity")
    assert "--devices DEVICES [DEVICES ...] (default 250 500 1000 2000)" in said
    assert "measured seconds per run (default 60.0)" in said
    assert said.count("(default 12)") == 1  # --partitions said it already
    assert "--model MODEL --chunk" in said  # no default, nothing added


@pytest.mark.parametrize(
    ("argv", "option", "default"),
    [
        (("gateway",), "--idle-timeout", "30"),
        (("gateway",), "--max-gap", "0.5"),
        (("worker",), "--idle-timeout", "30"),
        (("worker",), "--stats-every", "5"),
        (("simulate",), "--phone-rate", "100"),
        (("train",), "--batch-size", "64"),
    ],
)
def test_command_options_say_their_default(capsys, argv, option, default):
    entry = _entry(_raw_help(capsys, *argv), option)
    assert re.search(rf"default {re.escape(default)}\b", entry), entry


def test_the_command_list_says_evaluate_scores_the_shipped_model_by_default(capsys):
    """README: `harstream evaluate` scores the shipped model on the held-out
    subjects; the command list said only "repeat train+evaluate"."""
    said = _help(capsys)
    assert "evaluate score the shipped model (or --artifact) on the held-out subjects" in said
