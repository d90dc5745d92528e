"""What `harstream demo` starts and how the parts find each other (the argv
only; the parts themselves are tested where they live, the whole demo in
test_dashboard_browser)."""

from __future__ import annotations

import argparse

import pytest

from harstream.commands import demo


def planned(*argv: str) -> dict[str, list[str]]:
    parser = argparse.ArgumentParser()
    demo.configure(parser)
    return {name: args[3:] for name, args in demo.plan(parser.parse_args(list(argv)))}


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_durable_demo_with_a_gateway_puts_every_part_on_an_address_the_proxy_binds():
    parts = planned(
        "--durable",
        "redis://127.0.0.1:6379/0",
        "--gateway",
        "--ingest",
        "ipc:///tmp/b/in",
        "--output",
        "ipc:///tmp/b/out",
    )
    proxy = parts["proxy"]
    bound = {option(proxy, o) for o in ("--ingest", "--ingest-backend", "--output", "--output-backend")}
    assert bound == {"@ipc:///tmp/b/in", "@ipc:///tmp/b/in.back", "@ipc:///tmp/b/out", "@ipc:///tmp/b/out.back"}
    assert option(parts["bridge"], "--ingest") == ">ipc:///tmp/b/in.back"
    assert {option(parts[w], "--publish") for w in ("worker-a", "worker-b")} == {">ipc:///tmp/b/out.back"}
    assert option(parts["gateway"], "--ingest") == option(parts["simulator"], "--publish") == ">ipc:///tmp/b/in"
    assert option(parts["gateway"], "--output") == option(parts["dashboard"], "--subscribe") == ">ipc:///tmp/b/out"


def test_durable_workers_get_the_demos_model_options_and_serve_modes_unless_told_one_model():
    parts = planned("--durable", "redis://127.0.0.1:6379/0", "--any-model", "a.keras", "--personal-dir", "mine")
    for worker in ("worker-a", "worker-b"):
        assert option(parts[worker], "--any-model") == "a.keras"
        assert option(parts[worker], "--personal-dir") == "mine"
        assert "--single-model" not in parts[worker]
    one = planned("--durable", "redis://127.0.0.1:6379/0", "--single-model")
    assert "--single-model" in one["worker-a"] and "--single-model" in one["worker-b"]


def test_the_durable_demo_moved_to_other_tcp_ports_moves_the_proxy_back_ends_too():
    parts = planned(
        "--durable",
        "redis://127.0.0.1:6379/0",
        "--ingest",
        "tcp://127.0.0.1:18555",
        "--output",
        "tcp://127.0.0.1:18556",
    )
    assert option(parts["proxy"], "--ingest-backend") == "@tcp://127.0.0.1:18557"
    assert option(parts["proxy"], "--output-backend") == "@tcp://127.0.0.1:18558"
    assert option(parts["bridge"], "--ingest") == ">tcp://127.0.0.1:18557"
    defaults = planned("--durable", "redis://127.0.0.1:6379/0")["proxy"]
    assert option(defaults, "--ingest-backend") == "@tcp://127.0.0.1:5557"
    assert option(defaults, "--output-backend") == "@tcp://127.0.0.1:5558"
    with pytest.raises(SystemExit, match="front ports"):
        planned(
            "--durable",
            "redis://127.0.0.1:6379/0",
            "--ingest",
            "tcp://127.0.0.1:18555",
            "--output",
            "tcp://127.0.0.1:18557",
        )


def test_the_running_banner_names_the_phone_page_when_the_gateway_runs():
    parser = argparse.ArgumentParser()
    demo.configure(parser)
    plain = demo.running_banner(parser.parse_args(["--port", "8600"]))
    assert "http://127.0.0.1:8600" in plain and "/phone" not in plain
    phones = demo.running_banner(parser.parse_args(["--gateway", "--gateway-port", "8766"]))
    assert "http://127.0.0.1:8766/phone" in phones and "docs/phones.md" in phones
