"""``harstream dashboard``: run the live Streamlit dashboard.

Runs ``streamlit run <package>/dashboard/app.py`` headless on 127.0.0.1 with
usage statistics off; the bus address reaches the app through
``HARSTREAM_OUTPUT`` (the one setting the app reads).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from harstream.commands._options import PORT, Number, add_keys, check_endpoints, endpoint_help
from harstream.logs import verbose_requested


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--subscribe", metavar="ADDR", help=endpoint_help("output", "connect", "output bus to subscribe to")
    )
    parser.add_argument("--port", type=PORT, default=8501, help="HTTP port (default 8501)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument(
        "--token",
        help="shared secret a page must carry in its address (?token=…); required for a --host off loopback",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name or address browsers use to reach the dashboard (repeatable); the page's live stream "
        "opens only under these, loopback names and --host (DNS rebinding)",
    )
    parser.add_argument(
        "--refresh", type=Number(float, 0.05, 3600), default=1.0, help="seconds between page updates (default 1)"
    )
    add_keys(parser)


def app_path() -> Path:
    """The Streamlit script inside the installed package."""
    import harstream.dashboard

    return Path(harstream.dashboard.__file__).resolve().parent / "app.py"


#: Names the dashboard is always served under: a page reaching it by any other
#: name (a DNS name an attacker re-pointed at this machine) gets no live stream.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def allowed_hosts(host: str, allow: Sequence[str] = ()) -> list[str]:
    """Streamlit's ``server.allowedHosts``: loopback, the bound address, ``allow``.

    >>> allowed_hosts("0.0.0.0", ["Dash.lan"])
    ['localhost', '127.0.0.1', '::1', 'dash.lan']
    """
    names = [*LOOPBACK_HOSTS]
    for name in ([] if host in WILDCARD_HOSTS else [host]) + list(allow):
        name = name.strip().strip("[]").lower()
        if name and name not in names:
            names.append(name)
    return names


def streamlit_command(port: int, host: str = "127.0.0.1", allow: Sequence[str] = ()) -> list[str]:
    """The command line that serves the dashboard."""
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.headless",
        "true",
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",  # no "Deploy" button on a monitoring page
        "--server.fileWatcherType",
        "none",  # an installed app does not change under us
    ]
    for name in allowed_hosts(host, allow):  # Streamlit's own check of the stream's Host header
        command += ["--server.allowedHosts", name]
    if not verbose_requested():
        # harstream prints the address itself; Streamlit's welcome and INFO lines are noise here.
        command += ["--logger.hideWelcomeMessage", "true", "--logger.level", "warning"]
    return command


def streamlit_env(
    subscribe: str | None, refresh: float = 1.0, keys: str | None = None, token: str | None = None
) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HARSTREAM_DASHBOARD_TOKEN", None)
    if token:  # in the environment, not on the command line other users can read
        env["HARSTREAM_DASHBOARD_TOKEN"] = token
    if subscribe:
        env["HARSTREAM_OUTPUT"] = subscribe
    if keys:
        env["HARSTREAM_KEYS"] = str(Path(keys).resolve())
    env["HARSTREAM_DASHBOARD_REFRESH"] = str(refresh)
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    return env


def run(args: argparse.Namespace) -> int:
    from harstream.stream.bus.addresses import output_address
    from harstream.stream.gateway.admission import is_loopback

    subscribe = args.subscribe or output_address()
    if not is_loopback(args.host) and not args.token:  # Streamlit has no login: the token is the page's
        print(f"harstream dashboard: serving {args.host} (not loopback) requires a token (--token)", file=sys.stderr)
        return 2
    # Refused here, before Streamlit starts: the page itself could only show the refusal.
    check_endpoints("dashboard", args.keys, ("--subscribe", subscribe, "connect"))
    command = streamlit_command(args.port, args.host, args.allow_host)
    opened = "/?token=…" if args.token else ""
    print(f"dashboard: http://{args.host}:{args.port}{opened}  (subscribing to {subscribe})", flush=True)
    if args.host in WILDCARD_HOSTS and not args.allow_host:
        print("dashboard: browsers elsewhere need the name they use given with --allow-host NAME", flush=True)
    # Become Streamlit rather than wrap it: signals (Ctrl-C, the demo's
    # SIGTERM) reach the server directly and no extra process is left over.
    os.execve(sys.executable, command, streamlit_env(args.subscribe, args.refresh, args.keys, args.token))
    return 0  # not reached
