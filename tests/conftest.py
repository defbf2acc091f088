"""Shared fixtures: a real `krait` process on an ephemeral port, with its logs kept."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


class KraitProcess:
    """A running `python -m krait <site>`; stop() sends SIGTERM and waits."""

    def __init__(self, site: Path, args: list[str], log_dir: Path) -> None:
        self.site = site
        self.log_path = log_dir / f"krait-{time.monotonic_ns()}.log"
        self.access_path = log_dir / f"access-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "krait", str(site), "--host", "127.0.0.1", "--port", "0",
               "--access-log", str(self.access_path), *args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.port = self._wait_ready()
        self.url = f"http://127.0.0.1:{self.port}"

    def _wait_ready(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = self.log()
            m = re.search(r"serving .* at http://127\.0\.0\.1:(\d+)/", text)
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"krait exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        raise RuntimeError(f"krait did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def access_log(self) -> str:
        return self.access_path.read_text(errors="replace") if self.access_path.exists() else ""

    def connect(self, timeout: float = 5.0) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return s

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def krait_server(tmp_path: Path) -> Iterator[Callable[..., KraitProcess]]:
    """Factory: krait_server(site_path, *extra_args) starts a server, stopped at teardown."""
    started: list[KraitProcess] = []

    def start(site: Path, *args: str) -> KraitProcess:
        p = KraitProcess(Path(site), list(args), tmp_path)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
        if os.environ.get("KRAIT_TEST_SHOW_LOGS"):
            print(p.log())


def recv_all(s: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the peer closes (or timeout)."""
    s.settimeout(timeout)
    chunks = []
    try:
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    except TimeoutError:
        pass
    return b"".join(chunks)


class HttpReader:
    """Reads HTTP/1.1 responses one at a time from a socket, keeping bytes that belong to the
    next response (pipelining)."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0) -> None:
        self.sock = sock
        self.buf = bytearray()  # grows in place: a large body costs no quadratic copying
        sock.settimeout(timeout)

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"connection closed; buffered {self.buf[:200]!r}")
        self.buf += data

    def read(self, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One response: (status, headers with lower-cased names, body)."""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers[key] = (headers[key] + ", " if key in headers else "") + value.strip()
        if head_request or status in (204, 304) or status < 200:
            return status, headers, b""
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                self._more()
            body, self.buf = bytes(self.buf[:n]), self.buf[n:]
            return status, headers, body
        if headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                while b"\r\n" not in self.buf:
                    self._more()
                size_line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._more()
                parts.append(self.buf[:size])
                self.buf = self.buf[size + 2:]
                if size == 0:
                    return status, headers, b"".join(parts)
        # Close-delimited.
        try:
            while True:
                self._more()
        except EOFError:
            pass
        body, self.buf = bytes(self.buf), bytearray()
        return status, headers, body


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send data on a fresh connection and return everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return recv_all(s, timeout)


def write_site(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create files under root (parents made); returns root."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


@pytest.fixture(scope="session")
def docs_site(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The documentation site built once per session (tests/docs/sphinx_site.py); skips when
    Sphinx or MyST-Parser is not installed (both are test dependencies)."""
    pytest.importorskip("sphinx", reason="sphinx is a test dependency")
    pytest.importorskip("myst_parser", reason="myst-parser is a test dependency")
    from tests.docs.sphinx_site import build

    return build(tmp_path_factory.mktemp("docs-site"))
