"""Options in one place: every number any command takes is range-checked by
its argparse type, so a bad value is a one-line usage error naming the
option (exit code 2), never a traceback; and SIGTERM or Ctrl-C stops a
long-running command cleanly."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harstream.cli import COMMANDS, _module, main
from harstream.commands._options import Number
from harstream.commands.bench import BENCHMARKS

ROOT = Path(__file__).resolve().parent.parent
# Every command, and each benchmark of `harstream bench` (a command of its own each).
CHECKED = [name for name in COMMANDS if name != "bench"] + [f"bench {name}" for name in BENCHMARKS]


def parser_of(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"harstream {command}")
    name, *benchmark = command.split()
    _module(name).configure(parser)
    if benchmark:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return sub.choices[benchmark[0]]
    return parser


def number_options(command: str) -> list[tuple[str, Number]]:
    return [
        (action.option_strings[-1], action.type)
        for action in parser_of(command)._actions
        if isinstance(action.type, Number)
    ]


def given(command: str, option: str, value: str) -> list[str]:
    """``option`` given ``value`` as the command line spells it: once, or as
    many times as an option of a fixed number of values takes."""
    action = next(a for a in parser_of(command)._actions if option in a.option_strings)
    if isinstance(action.nargs, int) and action.nargs > 1:
        return [option, *[value] * action.nargs]
    return [f"{option}={value}"]


def bad_values(kind: Number) -> list[str]:
    """Just below, just above, not finite, not a number."""
    step = 1 if kind.kind is int else 0.5
    below = kind.low if kind.low_open else kind.low - step
    return [str(below), str(kind.high + step), "nan" if kind.kind is float else "1.5", "x"]


NUMBERS = [(command, option, kind) for command in CHECKED for option, kind in number_options(command)]


@pytest.mark.parametrize("command", CHECKED)
def test_every_number_a_command_takes_is_range_checked(command):
    unchecked = [
        action.option_strings
        for action in parser_of(command)._actions
        if action.type in (int, float)
        or (action.type is None and type(action.default) in (int, float) and action.nargs != 0)
    ]
    assert not unchecked, f"harstream {command}: numbers without a range-checked type: {unchecked}"


def test_every_command_with_numbers_is_covered():
    assert {command for command, _, _ in NUMBERS} >= {
        "worker",
        "bridge",
        "broker",
        "simulate",
        "tail",
        "gateway",
        "dashboard",
        "demo",
        "train",
        "evaluate",
        "calibrate",
    } | {f"bench {name}" for name in BENCHMARKS}


@pytest.mark.parametrize("command,option,kind", NUMBERS, ids=[f"{c} {o}" for c, o, _ in NUMBERS])
def test_a_bad_number_is_a_one_line_usage_error_naming_the_option(command, option, kind, capsys):
    for bad in bad_values(kind):
        with pytest.raises(SystemExit) as exited:
            main([*command.split(), *given(command, option, bad)])
        assert exited.value.code == 2, (option, bad)
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"harstream {command}: error: argument {option}: "), err[-1]
        assert bad in err[-1], err[-1]


def test_a_good_number_passes_at_both_ends_of_its_range():
    for _, _, kind in NUMBERS:
        for edge in (kind.high, kind.low if not kind.low_open else None):
            if edge is not None:
                assert kind(str(edge)) == edge


FIRST_NUMBER = {command: next(((o, k) for c, o, k in NUMBERS if c == command), None) for command in CHECKED}


@pytest.mark.parametrize("command", [c for c, first in FIRST_NUMBER.items() if first is not None])
def test_the_real_command_ends_a_bad_number_in_a_usage_error_not_a_traceback(command):
    option, kind = FIRST_NUMBER[command]  # type: ignore[misc]
    bad = str(kind.high * 10 + 1)  # "harstream gateway --port 80000" was an OverflowError traceback
    done = subprocess.run(
        [sys.executable, "-m", "harstream", *command.split(), option, bad], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr[-1000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"harstream {command}: error: argument {option}: {bad} is outside {kind.range_text()}"
    )


def test_gateway_port_80000_is_a_usage_error():
    done = subprocess.run(
        [sys.executable, "-m", "harstream", "gateway", "--port", "80000"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("argument --port: 80000 is outside 0..65535")


# ------------------------------------------------------------------ stopping


def _start(args: list[str], ready: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "harstream", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if ready in line or time.monotonic() > deadline:
            break
    return proc


def test_sigterm_stops_the_proxy_cleanly_even_when_it_comes_twice(ipc_address):
    addresses = [ipc_address(name) for name in ("in", "inb", "out", "outb")]
    proc = _start(
        ["proxy", "--ingest", addresses[0], "--ingest-backend", addresses[1]]
        + ["--output", addresses[2], "--output-backend", addresses[3]],
        "proxy output",
    )
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)  # as timeout(1) delivers it: to the child and to its group
    assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def test_ctrl_c_stops_tail_cleanly(ipc_address):
    proc = _start(["tail", "--subscribe", ipc_address("out")], "tail: listening")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def test_sigterm_stops_the_demo_and_every_part_it_started_even_when_it_comes_twice(ipc_address, tmp_path):
    from test_dashboard_browser import STARTUP_S, alive, dashboard_port, descendants

    log_path = tmp_path / "demo.log"
    with open(log_path, "w") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "harstream", "demo", "--subjects", "2", "--single-model"]
            + ["--port", str(dashboard_port()), "--ingest", ipc_address("in"), "--output", ipc_address("out")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started: set[int] = set()
        try:
            deadline = time.monotonic() + STARTUP_S
            while "harstream demo is running" not in log_path.read_text() and time.monotonic() < deadline:
                assert demo.poll() is None, log_path.read_text()[-2000:]
                started |= descendants(demo.pid)
                time.sleep(0.5)
            started |= descendants(demo.pid)
            assert len(started) >= 3, log_path.read_text()[-2000:]  # worker, dashboard, simulator
            demo.send_signal(signal.SIGTERM)
            demo.send_signal(signal.SIGTERM)
            assert demo.wait(60) == 0, log_path.read_text()[-2000:]
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
            for pid in started:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
    time.sleep(0.5)
    assert not [pid for pid in started if alive(pid)], "the demo left processes behind"
    assert "demo: stopping" in log_path.read_text()
