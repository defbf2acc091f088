"""10,000 WebSocket subscribers on one channel of a real krait, each receiving a publish once.

The clients are lean: raw asyncio streams in this one test process (a handshake, the server's
"ready", then one frame each), so the run takes seconds. The test process needs some 10,000
file descriptors; it raises its own soft limit as far as the hard one allows and skips when
that is not enough."""

from __future__ import annotations

import asyncio
import base64
import os
import resource
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import KraitProcess, write_site
from tests.integration.test_channels import FILES

SUBSCRIBERS = 10_000


@pytest.fixture
def many_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = SUBSCRIBERS + 500
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"needs {want} file descriptors; the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, payload) of one unmasked server frame."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await reader.readexactly(n)


async def subscribe(port: int, channel: str,
                    gate: asyncio.Semaphore) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open one connection subscribed to channel; returns once the server said "ready"."""
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws?c={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert await read_frame(reader) == (0x1, b"ready")
        return reader, writer


async def fan_out(server: KraitProcess) -> list[tuple[int, bytes]]:
    gate = asyncio.Semaphore(200)  # handshakes in flight at once
    conns = await asyncio.wait_for(asyncio.gather(
        *(subscribe(server.port, "crowd", gate) for _ in range(SUBSCRIBERS))), 180)
    try:
        message = "m" * 100
        r = await asyncio.to_thread(requests.get, f"{server.url}/pub.py",
                                    params={"c": "crowd", "m": message}, timeout=30)
        assert r.status_code == 200 and r.text == "published"
        got = await asyncio.wait_for(asyncio.gather(*(read_frame(r) for r, _ in conns)), 60)
        # Exactly once: after a second publish, the next frame of each is that one.
        await asyncio.to_thread(requests.get, f"{server.url}/pub.py",
                                params={"c": "crowd", "m": "second"}, timeout=30)
        second = await asyncio.wait_for(asyncio.gather(*(read_frame(r) for r, _ in conns)), 60)
        assert set(second) == {(0x1, b"second")}
        return got
    finally:
        for _, writer in conns:
            writer.close()


def test_ten_thousand_subscribers_on_one_channel(tmp_path: Path, krait_server,  # noqa: ANN001
                                                 many_fds: None) -> None:
    server = krait_server(write_site(tmp_path / "site", FILES), "--workers", "2")
    got = asyncio.run(fan_out(server))
    assert len(got) == SUBSCRIBERS
    assert set(got) == {(0x1, b"m" * 100)}
    # The server is still serving pages.
    assert requests.get(f"{server.url}/pid.py", timeout=10).status_code == 200
