"""Hostile connections to a gateway serving TLS (what phone browsers need off loopback).

The TLS handshake used to run before any of the gateway's connection guards
saw the connection, for as long as asyncio allows one (60 s): measured, 1,100
silent connections from one address took all 1,024 files a process has by
default, and no phone got in for that minute; nothing was counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import time

import pytest

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed (makes a test certificate)"),
]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "gateway.crt", folder / "gateway.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


async def ask_stats(port: int, client_tls: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls)
    writer.write(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    return answer


def test_silent_connections_to_a_tls_gateway_are_limited_and_let_go_like_plain_ones(certificate, running_gateway):
    cert, key = certificate
    client_tls = ssl.create_default_context(cafile=cert)

    async def main():
        async with running_gateway(tls_cert=cert, tls_key=key, open_timeout=2.0, max_connections_per_address=16) as (
            gw,
            _,
        ):
            silent = [
                await asyncio.open_connection("127.0.0.1", gw.port, local_addr=("127.0.0.5", 0)) for _ in range(20)
            ]
            started = time.monotonic()
            assert (await ask_stats(gw.port, client_tls)).startswith(b"HTTP/1.1 200")  # a phone from elsewhere
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3.5):  # every silent one let go: 4 at once (busy), 16 after 2 s
                    for reader, _ in silent:
                        with contextlib.suppress(OSError):
                            await reader.read()
            took = time.monotonic() - started
            for _, writer in silent:
                writer.close()
            assert took < 3.5, "silent connections to the TLS port were held past the open timeout"
            assert gw.rejects["busy"] == 4 and gw.rejects["timeout"] == 16, dict(gw.rejects)
            assert (await ask_stats(gw.port, client_tls)).startswith(b"HTTP/1.1 200")

    asyncio.run(main())


def test_plain_http_on_the_tls_port_is_counted_and_does_not_harm_a_tls_phone(certificate, running_gateway):
    cert, key = certificate
    client_tls = ssl.create_default_context(cafile=cert)

    async def main():
        async with running_gateway(tls_cert=cert, tls_key=key, open_timeout=2.0) as (gw, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            with contextlib.suppress(OSError):
                async with asyncio.timeout(3):
                    await reader.read()
            writer.close()
            assert gw.rejects["tls"] == 1, dict(gw.rejects)
            assert (await ask_stats(gw.port, client_tls)).startswith(b"HTTP/1.1 200")

    asyncio.run(main())
