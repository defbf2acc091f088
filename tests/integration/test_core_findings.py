"""The findings of the core's review, each through a real krait: a worker whose socket dies
while its client pipelines, bodies larger than memory should hold, hostile frames from a
worker (header names and values, interim statuses, an answer read together with end-of-file),
CONNECT, HTTP/1.0 keep-alive, HTTP/1.2, the framing of a body sent to a static file, bare LF in
chunked framing, and an oversized access-log line."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import HttpReader, KraitProcess, write_site

# A script that answers with a RESPONSE frame of its own making (the request's id found on
# the worker's stack), then ends the worker at once: the core must read that answer even
# though end-of-file follows it in the same read, and must check every byte of it.
FORGE = '''\
import os
import struct
import sys
import krait

fd = int(sys.argv[sys.argv.index("--fd") + 1])
f = sys._getframe()
while f is not None and not hasattr(f.f_locals.get("frame"), "id"):
    f = f.f_back
rid = f.f_locals["frame"].id
status = int(krait.request.query.get("status", "200"))
headers = [(b"X-Ok", b"1"), (b"X-Bad\\r\\nSet-Cookie", b"evil"), (b"X-Ctl", b"a\\x01b"),
           (b"X-Nul", b"a\\x00b"), (b"Upgrade", b"h2c"), (b"Transfer-Encoding", b"chunked"),
           (b"", b"empty name"), (b"X Space", b"v"), (b"X-Tab", b"a\\tb")]
body = b"forged-ok"
payload = struct.pack("<HBH", status, 0, len(headers))
for name, value in headers:
    payload += struct.pack("<I", len(name)) + name + struct.pack("<I", len(value)) + value
payload += struct.pack("<I", len(body)) + body
os.write(fd, struct.pack("<IBI", 5 + len(payload), 2, rid) + payload)
os._exit(0)
'''

# Its socket to the core shut down: the worker's next send fails and it goes (EPIPE), with
# the client's next request already handed to it.
KILL = '''\
import os
import socket
import sys
import krait

fd = int(sys.argv[sys.argv.index("--fd") + 1])
socket.socket(fileno=os.dup(fd)).shutdown(socket.SHUT_RDWR)
krait.response = krait.Response(body="never seen")
'''

FILES: dict[str, str | bytes] = {
    ".py/init.py": "from krait import config\nconfig.routes = [config.Route('ANY')]\n",
    "a.txt": "static\n",
    "hello.py": "import krait\nkrait.response = krait.Response(body='hello')\n",
    "pid.py": "import os, krait\nkrait.response = krait.Response(body=str(os.getpid()))\n",
    "size.py": ("import krait\n"
                "krait.response = krait.Response(body=str(len(krait.request.body or b'')))\n"),
    "forge.py": FORGE,
    "kill.py": KILL,
}


@pytest.fixture
def server(tmp_path: Path, krait_server) -> KraitProcess:  # noqa: ANN001
    return krait_server(write_site(tmp_path / "site", FILES), "--workers", "1")


def exchange(server: KraitProcess, data: bytes, answers: int = 1,
             timeout: float = 10) -> list[tuple[int, dict[str, str], bytes]]:
    s = server.connect(timeout=timeout)
    try:
        s.sendall(data)
        reader = HttpReader(s, timeout=timeout)
        return [reader.read() for _ in range(answers)]
    finally:
        s.close()


def closed_after(s: socket.socket) -> bool:
    s.settimeout(5)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_worker_gone_mid_pipeline_gives_one_answer_each(server: KraitProcess) -> None:
    # The worker's socket dies while /hello waits behind /kill on it: /kill gets 502, /hello
    # is answered by the replacement — one answer each, in order, no stray 500.
    got = exchange(server, b"GET /kill.py HTTP/1.1\r\nHost: h\r\n\r\n"
                           b"GET /hello.py HTTP/1.1\r\nHost: h\r\n\r\n"
                           b"GET /a.txt HTTP/1.1\r\nHost: h\r\n\r\n", answers=3)
    assert [g[0] for g in got] == [502, 200, 200]
    assert got[1][2] == b"hello" and got[2][2] == b"static\n"
    assert server.proc.poll() is None


def test_an_answer_read_with_end_of_file_is_delivered_and_checked(server: KraitProcess) -> None:
    before = exchange(server, b"GET /pid.py HTTP/1.1\r\nHost: h\r\n\r\n")[0][2]
    status, headers, body = exchange(server, b"GET /forge.py HTTP/1.1\r\nHost: h\r\n\r\n")[0]
    assert (status, body) == (200, b"forged-ok")
    assert headers["x-ok"] == "1" and headers["x-tab"] == "a\tb"
    for name in ("set-cookie", "x-ctl", "x-nul", "upgrade", "x space", "transfer-encoding"):
        assert name not in headers, name
    assert headers["content-length"] == "9"
    after = exchange(server, b"GET /pid.py HTTP/1.1\r\nHost: h\r\n\r\n")[0][2]
    assert after != before  # the worker that exited was replaced


@pytest.mark.parametrize("status", [100, 101, 103, 199])
def test_an_interim_status_from_a_script_is_a_500(server: KraitProcess, status: int) -> None:
    got = exchange(server, f"GET /forge.py?status={status} HTTP/1.1\r\nHost: h\r\n\r\n"
                           "GET /a.txt HTTP/1.1\r\nHost: h\r\n\r\n".encode(), answers=2)
    assert got[0][0] == 500 and b"forged-ok" not in got[0][2]
    assert got[1][0] == 200  # the connection goes on, in step


@pytest.mark.parametrize("target", ["/hello.py", "h:443", "/a.txt"])
def test_connect_is_refused(server: KraitProcess, target: str) -> None:
    s = server.connect(timeout=10)
    try:
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: h\r\n\r\nGET /a.txt HTTP/1.1\r\n"
                  "Host: h\r\n\r\n".encode())
        status, _, _ = HttpReader(s, timeout=10).read()
        assert status == 400
        assert closed_after(s)  # never a tunnel, never more HTTP on it
    finally:
        s.close()


def test_http10_keep_alive_is_said(server: KraitProcess) -> None:
    got = exchange(server, b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                           b"GET /hello.py HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", answers=2)
    assert [g[0] for g in got] == [200, 200]
    assert got[0][1]["connection"].lower() == "keep-alive"
    assert got[1][1]["connection"].lower() == "keep-alive"


def test_http12_is_served_as_http11(server: KraitProcess) -> None:
    s = server.connect(timeout=10)
    try:
        s.sendall(b"GET /a.txt HTTP/1.2\r\nHost: h\r\n\r\n")
        data = b""
        while b"static\n" not in data:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")
    finally:
        s.close()


@pytest.mark.parametrize("body", [b"zz\r\nab\r\n0\r\n\r\n", b"-1\r\nab\r\n0\r\n\r\n",
                                  b"fffffffffffffffffff\r\nab\r\n0\r\n\r\n",
                                  b"3\r\nabcdef\r\n0\r\n\r\n", b"3\nabc\r\n0\r\n\r\n",
                                  b"3\r\nabc\n0\r\n\r\n"])
@pytest.mark.parametrize("request_line", ["GET /a.txt", "POST /size.py"])
def test_bad_chunked_framing_is_400_for_any_target(server: KraitProcess, body: bytes,
                                                   request_line: str) -> None:
    # A static file that takes no body still has its body's framing checked before its 200.
    s = server.connect(timeout=10)
    try:
        s.sendall(f"{request_line} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                  .encode() + body)
        status, _, _ = HttpReader(s, timeout=10).read()
        assert status == 400
        assert closed_after(s)
    finally:
        s.close()


def test_good_chunked_body_to_a_static_file(server: KraitProcess) -> None:
    status, headers, body = exchange(
        server, b"GET /a.txt HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n")[0]
    assert (status, body) == (200, b"static\n")  # its framing was sound


def test_an_oversized_log_line_is_clamped(server: KraitProcess) -> None:
    agent = "A" * 60000
    referer = '"' * 3000  # each one escaped: four bytes in the log
    status, _, _ = exchange(server, f"GET /a.txt HTTP/1.1\r\nHost: h\r\nUser-Agent: {agent}\r\n"
                                    f"Referer: {referer}\r\n\r\n".encode())[0]
    assert status == 200
    deadline = time.monotonic() + 5
    while "GET /a.txt" not in server.access_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [ln for ln in server.access_log().splitlines() if "GET /a.txt" in ln]
    assert len(lines) == 1 and len(lines[0]) < 1100
    assert server.proc.poll() is None


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_large_bodies_go_to_disk_as_they_arrive(tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    # Six 15 MiB uploads at once, each paused halfway: the master's memory must not hold them.
    site = write_site(tmp_path / "site", FILES)
    server = krait_server(site, "--workers", "2", "--max-body-size", str(32 << 20))
    exchange(server, b"GET /size.py HTTP/1.1\r\nHost: h\r\n\r\n")
    base = rss_kib(server.proc.pid)
    size = 15 << 20
    chunk = b"x" * (1 << 20)
    socks = [server.connect(timeout=30) for _ in range(6)]
    peak = 0
    try:
        for s in socks:
            s.sendall(f"POST /size.py HTTP/1.1\r\nHost: h\r\nContent-Length: {size}\r\n\r\n"
                      .encode())
        for _ in range(size // len(chunk) // 2):
            for s in socks:
                s.sendall(chunk)
        time.sleep(0.5)
        peak = rss_kib(server.proc.pid) - base
        for _ in range(size // len(chunk) - size // len(chunk) // 2):
            for s in socks:
                s.sendall(chunk)
        answers: list[bytes] = []
        lock = threading.Lock()

        def read(s: socket.socket) -> None:
            _, _, body = HttpReader(s, timeout=30).read()
            with lock:
                answers.append(body)

        threads = [threading.Thread(target=read, args=(s,)) for s in socks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert answers == [str(size).encode()] * 6
    finally:
        for s in socks:
            s.close()
    # 45 MiB of bodies were in flight: in memory, the master would have grown by that.
    assert peak < 16 * 1024, f"the master grew by {peak // 1024} MiB while bodies arrived"
