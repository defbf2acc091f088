"""Safe defaults (issue 14): krait listens on 127.0.0.1 unless --host says otherwise, and its
banner shows the address it really listens on. The listening socket is checked in
/proc/net/tcp (no traffic leaves the loopback interface)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_site


def start(site: Path, log: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start krait (no --host unless given) and return it with its banner line."""
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "krait", str(site), "--port", "0",
                             "--workers", "1", "--access-log", "off", *args],
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = re.search(r"krait: serving .*", log.read_text(errors="replace"))
        if m:
            return proc, m.group(0)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"krait did not start:\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def listening_ipv4(port: int) -> list[str]:
    """The local IPv4 addresses with a listening TCP socket on ``port``."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        addr, hexport = fields[1].split(":")
        if int(hexport, 16) == port and fields[3] == "0A":  # TCP_LISTEN
            found.append(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site", {"index.html": "hello\n"})


def test_the_default_is_loopback_only(site: Path, tmp_path: Path) -> None:
    proc, banner = start(site, tmp_path / "log")
    try:
        m = re.search(r" at http://127\.0\.0\.1:(\d+)/ ", banner)
        assert m, banner
        assert listening_ipv4(int(m.group(1))) == ["127.0.0.1"]
    finally:
        stop(proc)


def test_the_banner_shows_the_address_listened_on(site: Path, tmp_path: Path) -> None:
    # 127.0.0.2 is loopback too (127/8), and no other default would print it.
    proc, banner = start(site, tmp_path / "log", "--host", "127.0.0.2")
    try:
        m = re.search(r" at http://127\.0\.0\.2:(\d+)/ ", banner)
        assert m, banner
        assert listening_ipv4(int(m.group(1))) == ["127.0.0.2"]
    finally:
        stop(proc)


def test_a_name_shows_what_it_resolved_to(site: Path, tmp_path: Path) -> None:
    proc, banner = start(site, tmp_path / "log", "--host", "localhost")
    try:
        assert re.search(r" at http://(127\.0\.0\.1|\[::1\]):\d+/ ", banner), banner
    finally:
        stop(proc)
