"""``harstream demo``: simulator + worker + dashboard (+ gateway) in one command.

Each part runs as its own ``harstream`` subprocess in its own process group,
so Ctrl-C (or SIGTERM) stops every process the demo started, children of
children included, and nothing is left behind. If one part dies the demo
says which and stops the rest.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from harstream.commands._options import PORT, SPEED, SUBJECT
from harstream.commands._running import ignore_signals, stop_on_signals

STOP_TIMEOUT_S = 10.0


def configure(parser: argparse.ArgumentParser) -> None:
    from harstream.stream.bus.addresses import ingest_address, output_address
    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS

    parser.add_argument(
        "--subjects",
        type=SUBJECT,
        nargs="+",
        default=list(UCI_TEST_SUBJECTS),
        metavar="N",
        help="subjects to replay, looping (default: the UCI held-out test subjects)",
    )
    parser.add_argument("--speed", type=SPEED, default=1.0, help="replay speed, 1 = real time (default 1)")
    parser.add_argument("--model", help="model artifact for the worker (default: the shipped model)")
    parser.add_argument(
        "--any-model",
        default=None,
        metavar="PATH",
        help="placement-free model for phones (any mode; default: the shipped any.keras)",
    )
    parser.add_argument(
        "--personal-dir",
        default=None,
        metavar="DIR",
        help="folder of personal models the worker watches (default $HARSTREAM_PERSONAL_DIR or runs/personal)",
    )
    parser.add_argument(
        "--single-model",
        action="store_true",
        help="the worker serves --model to every device (no any or personal mode)",
    )
    parser.add_argument("--gateway", action="store_true", help="also run the phone gateway")
    parser.add_argument("--gateway-port", type=PORT, default=8765, help="gateway port (default 8765)")
    parser.add_argument(
        "--durable",
        default=None,
        metavar="URL",
        help="run the bridge and two workers on the durable log at URL (start `harstream broker` "
        "first) behind `harstream proxy`, instead of one worker on the bus",
    )
    parser.add_argument("--port", type=PORT, default=8501, help="dashboard port (default 8501)")
    parser.add_argument(
        "--ingest",
        default=ingest_address(),
        help="ingest bus address the worker binds (default $HARSTREAM_INGEST or tcp://127.0.0.1:5555)",
    )
    parser.add_argument(
        "--output",
        default=output_address(),
        help="output bus address the worker binds (default $HARSTREAM_OUTPUT or tcp://127.0.0.1:5556)",
    )


def plan(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """``(name, argv)`` of every process to start, in start order.

    The worker binds both buses; everything else connects, so the order
    only decides what the first seconds look like. With ``--durable`` the
    proxy binds them instead (as for several workers): producers and
    subscribers connect to it as usual, the bridge takes the ingest bus from
    its back end and the two workers publish into its output back end, where
    the dashboard and the gateway both read them.
    """
    from harstream.stream.bus.addresses import DEFAULT_PROXY_INGEST_BACKEND, DEFAULT_PROXY_OUTPUT_BACKEND

    me = [sys.executable, "-m", "harstream"]
    ingest, output = _bare(args.ingest), _bare(args.output)
    models = ["--model", args.model] if args.model else []
    for option, value in (
        ("--any-model", getattr(args, "any_model", None)),
        ("--personal-dir", getattr(args, "personal_dir", None)),
    ):
        if value:
            models += [option, value]
    if getattr(args, "single_model", False):
        models.append("--single-model")
    if getattr(args, "durable", None):
        from harstream.stream.bus.proxy import default_output_secret

        ingest_back = _backend(ingest, DEFAULT_PROXY_INGEST_BACKEND)
        output_back = _backend(output, DEFAULT_PROXY_OUTPUT_BACKEND)
        taken = {ingest, output} & {ingest_back, output_back}
        if taken:
            raise SystemExit(
                f"harstream demo: the proxy's back ends are the front ports + 2 ({ingest_back}, {output_back}); "
                f"{', '.join(sorted(taken))} is a front address too: pick --ingest/--output ports further apart"
            )
        secret = str(default_output_secret(output_back))  # only the workers may publish output
        parts = [
            (
                "proxy",
                me
                + [
                    "proxy",
                    "--ingest",
                    "@" + ingest,
                    "--ingest-backend",
                    "@" + ingest_back,
                    "--output",
                    "@" + output,
                    "--output-backend",
                    "@" + output_back,
                    "--output-secret",
                    secret,
                ],
            ),
            ("bridge", me + ["bridge", "--redis", args.durable, "--ingest", ">" + ingest_back]),
        ]
        parts += [
            (
                f"worker-{k}",
                me
                + [
                    "worker",
                    "--redis",
                    args.durable,
                    "--publish",
                    ">" + output_back,
                    "--output-secret",
                    secret,
                    "--id",
                    f"worker-{k}",
                    *models,
                ],
            )
            for k in "ab"
        ]
    else:
        parts = [("worker", me + ["worker", "--ingest", "@" + ingest, "--publish", "@" + output, *models])]
    parts += [
        ("dashboard", me + ["dashboard", "--subscribe", ">" + output, "--port", str(args.port)]),
        (
            "simulator",
            me
            + [
                "simulate",
                "--subjects",
                *map(str, args.subjects),
                "--speed",
                str(args.speed),
                "--loop",
                "--publish",
                ">" + ingest,
            ],
        ),
    ]
    if args.gateway:
        gateway = me + ["gateway", "--port", str(args.gateway_port), "--ingest", ">" + ingest, "--output", ">" + output]
        if getattr(args, "personal_dir", None):  # calibrations from the phone page land where the workers look
            gateway += ["--personal-dir", args.personal_dir]
        parts.append(("gateway", gateway))
    return parts


def run(args: argparse.Namespace) -> int:
    env = dict(
        os.environ, HARSTREAM_INGEST=_bare(args.ingest), HARSTREAM_OUTPUT=_bare(args.output), PYTHONUNBUFFERED="1"
    )
    procs: list[tuple[str, subprocess.Popen]] = []
    # SIGTERM and SIGHUP (terminal closed) end the demo exactly like Ctrl-C.
    stop = stop_on_signals(hangup=True)
    try:
        for name, argv in plan(args):
            if stop.is_set():
                break
            print(f"demo: starting {name}: {' '.join(argv[1:])}", flush=True)
            # A new session puts each part in its own process group: the demo
            # can stop all of it, and a Ctrl-C in the terminal reaches only
            # the demo, which then stops the parts in order.
            procs.append((name, subprocess.Popen(argv, env=env, start_new_session=True)))
        url = f"http://127.0.0.1:{args.port}"
        if _wait_http(f"{url}/_stcore/health", procs, timeout=60.0, stop=stop):
            print(running_banner(args), flush=True)
        elif not stop.is_set() and all(p.poll() is None for _, p in procs):
            print(f"demo: the dashboard is slow to start; it will be at {url}", flush=True)
        while not stop.wait(0.5):
            for name, proc in procs:
                if proc.poll() is not None:
                    print(f"demo: {name} exited with code {proc.returncode}; stopping the rest", file=sys.stderr)
                    return 1
        print("\ndemo: stopping", flush=True)
        return 0
    finally:
        ignore_signals()  # a second Ctrl-C must not cut the clean-up short
        _stop(procs)


def _stop(procs: list[tuple[str, subprocess.Popen]]) -> None:
    """SIGTERM every process group, wait, then SIGKILL what is left."""
    for _name, proc in reversed(procs):
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, proc in reversed(procs):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"demo: {name} did not stop in {STOP_TIMEOUT_S:.0f} s; killing it", file=sys.stderr)
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        # Children the part started itself share its group: end them too.
        _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_http(url: str, procs: list[tuple[str, subprocess.Popen]], timeout: float, stop: threading.Event) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if any(p.poll() is not None for _, p in procs):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        stop.wait(0.3)
    return False


def running_banner(args: argparse.Namespace) -> str:
    """What the demo says once its page answers: where to look, and with
    ``--gateway`` where a phone's page is (on loopback: this machine's browser)."""
    lines = [f"  harstream demo is running: open http://127.0.0.1:{args.port}"]
    if args.gateway:
        lines.append(
            f"  phones: http://127.0.0.1:{args.gateway_port}/phone on this machine, or "
            f"harstream simulate --gateway ws://127.0.0.1:{args.gateway_port}/ws "
            "(a phone on your Wi-Fi: docs/phones.md)"
        )
    lines.append("  (Ctrl-C stops everything)")
    return "\n" + "\n".join(lines) + "\n"


def _backend(address: str, default: str) -> str:
    """The proxy back end beside a front ``address``: a sibling socket file
    for ``ipc://``, the port two up on the same host for ``tcp://`` (the
    defaults 5555/5556 give 5557/5558; a demo moved to other ports does not
    take those), else ``default``.

    >>> _backend("ipc:///tmp/bus/in", "tcp://127.0.0.1:5557"), _backend("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5557")
    ('ipc:///tmp/bus/in.back', 'tcp://127.0.0.1:5557')
    >>> _backend("tcp://127.0.0.1:18555", "tcp://127.0.0.1:5557")
    'tcp://127.0.0.1:18557'
    """
    if address.startswith("ipc://"):
        return address + ".back"
    host, _, port = address.rpartition(":")
    if address.startswith("tcp://") and port.isdigit() and int(port) + 2 <= 65535:
        return f"{host}:{int(port) + 2}"
    return default


def _bare(address: str) -> str:
    """An address without a bind/connect prefix."""
    return address.lstrip("@>")
