"""``harstream keys DIR``: make the CURVE key folder for a bus off loopback."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="folder to write bus.key(_secret), client.key(_secret) and clients/ into")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harstream.stream.bus.auth import generate_keys

    folder = Path(args.folder)
    if (folder / "bus.key_secret").exists():
        raise SystemExit(f"keys: {folder} already holds keys; not overwriting them")
    for path in generate_keys(folder):
        print(f"keys: wrote {path}")
    print(
        "keys: give --keys to every part on the bus (worker, bridge, proxy, simulate, tail, gateway, dashboard); a server host needs bus.key_secret and "
        "clients/, a client host client.key_secret and bus.key"
    )
    return 0
