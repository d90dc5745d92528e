"""A host holding an IPv6 /64 counts as one address for every per-address limit.

Every home router and phone network hands a subscriber a /64: one host can
take a fresh address per connection. The gateway's per-address limits
(connections held, new connections per second, calibrations) used to count
each IPv6 address apart, so such a host walked past all of them; they now
count an IPv6 client by its /64 (``admission.address_key``).

Many addresses of one /64 exist only inside a network namespace of our own
(``unshare -n``, as root): there ``lo`` holds addresses of two /64s, and the real
gateway and its clients talk over real sockets. Elsewhere that test is
skipped; the key function and a gateway on ``::1`` are tested everywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from websockets.asyncio.client import connect

from harstream.stream.gateway.admission import address_key


def test_an_ipv6_client_is_counted_by_its_64_an_ipv4_one_by_its_address():
    same = {address_key(a) for a in ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:DB8:1:2:0::9")}
    assert same == {"2001:db8:1:2::/64"}
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")  # the neighbour's /64
    assert address_key("::ffff:198.51.100.7") == "198.51.100.7"  # an IPv4 client of a dual-stack socket
    assert address_key("198.51.100.7") != address_key("198.51.100.8")  # IPv4: per address, as before
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("?") == "?"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_the_limits_hold_over_ipv6(running_gateway):
    """A gateway on ::1: a client's fourth connection is refused when three is
    the most one address may hold, and the refusal names its /64."""

    async def main():
        async with running_gateway(host="::1", max_connections=10, max_connections_per_address=3) as (gw, _):
            url = f"ws://[::1]:{gw.port}/ws"
            held = [await connect(url) for _ in range(3)]
            with pytest.raises(Exception, match="503"):
                await connect(url)
            assert gw.rejects["busy"] == 1
            for ws in held:
                await ws.close()

    asyncio.run(main())


# Runs inside a fresh network namespace whose lo holds addresses of
# 2001:db8:1:2::/64 (the host) and 2001:db8:1:3::/64 (a neighbour).
_IN_NAMESPACE = r"""
import asyncio, json, socket
from websockets.asyncio.client import connect
from harstream.stream.gateway.server import Gateway, GatewayConfig

HOST, NEIGHBOUR = "2001:db8:1:2::", "2001:db8:1:3::"

def open_from(source, port):
    s = socket.socket(socket.AF_INET6)
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("::1", port))
    return s

def ask_stats(source, port):
    with open_from(source, port) as s:
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
        return s.recv(100)[:12].decode()

async def calibrate_from(source, port, device):
    ws = await connect(f"ws://[::1]:{port}/ws", local_addr=(source, 0))
    await ws.send(json.dumps({"type": "hello", "device": device}))
    assert json.loads(await ws.recv())["type"] == "welcome"
    await ws.send(json.dumps({"type": "calibrate", "action": "start", "activity": "sit"}))
    while True:
        answer = json.loads(await ws.recv())
        if answer["type"] in ("calibration", "error"):
            return ws, answer.get("reason") or answer.get("event")

async def main(folder):
    out = {}
    config = GatewayConfig(
        host="::1", port=0, ingest="tcp://127.0.0.1:9", stats_interval=0,
        max_connections_per_address=3, calibration_per_address=2,
        calibration_dir=folder + "/c", personal_dir=folder + "/p",
    )
    gw = Gateway(config, fit=lambda *args: None)
    await gw.start()
    try:
        port = gw.port
        loop = asyncio.get_running_loop()
        held = await loop.run_in_executor(None, lambda: [open_from(HOST + str(i), port) for i in (1, 2, 3)])
        out["fourth_of_the_64"] = await loop.run_in_executor(None, ask_stats, HOST + "4", port)
        out["neighbour"] = await loop.run_in_executor(None, ask_stats, NEIGHBOUR + "1", port)
        for s in held:
            s.close()
        await asyncio.sleep(0.3)
        sockets, answers = [], []
        for i in (1, 2, 3):
            ws, answer = await calibrate_from(HOST + "a" + str(i), port, f"phone-{i}")
            sockets.append(ws)
            answers.append(answer)
        ws, answer = await calibrate_from(NEIGHBOUR + "a1", port, "neighbour")
        sockets.append(ws)
        out["calibrations"] = answers + [answer]
        for ws in sockets:
            await ws.close()
    finally:
        await gw.close()
    # --connects-limit 1 (bursts of 4 s worth): the fifth new connection of the /64 within a second
    gw = Gateway(GatewayConfig(host="::1", port=0, ingest="tcp://127.0.0.1:9", stats_interval=0, max_connects_per_s=1))
    await gw.start()
    try:
        port = gw.port
        sources = [HOST + s for s in ("1", "2", "3", "4", "a1")] + [NEIGHBOUR + "1"]
        out["connects"] = await loop.run_in_executor(None, lambda: [ask_stats(s, port) for s in sources])
    finally:
        await gw.close()
    print(json.dumps(out))

import sys
asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"), reason="needs root")
def test_one_host_holding_a_64_is_one_address_to_every_limit(tmp_path):
    """From fresh addresses of one /64: the fourth connection is refused when
    an address may hold three, the third calibration when it may hold two,
    and the fifth new connection in a second when it may open four; an
    address of the next /64 gets in each time."""
    addresses = [f"2001:db8:1:2::{i}" for i in ("1", "2", "3", "4", "a1", "a2", "a3")] + [
        "2001:db8:1:3::1",
        "2001:db8:1:3::a1",
    ]
    added = " && ".join(f"ip -6 addr add {a}/64 dev lo nodad" for a in addresses)
    script = f'ip link set lo up && {added} && exec {sys.executable} -c "$0" {tmp_path}'
    run = subprocess.run(
        ["unshare", "-n", "sh", "-c", script, _IN_NAMESPACE], capture_output=True, text=True, timeout=60
    )
    if run.returncode != 0 and "unshare failed" in run.stderr:
        pytest.skip(f"no network namespace here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["fourth_of_the_64"] == "HTTP/1.1 503", out
    assert out["neighbour"] == "HTTP/1.1 200", out
    assert out["calibrations"] == ["started", "started", "calibration_limit", "started"], out
    assert out["connects"] == ["HTTP/1.1 200"] * 4 + ["HTTP/1.1 429", "HTTP/1.1 200"], out
