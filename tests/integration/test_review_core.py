"""Review of the "post, don't call" core (52c557a): sequences of real traffic that broke it.

Each test names the defect it reproduces; see the review report (docs/review-52c557a.md).
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import HttpReader, write_site

STATIC = b"static\n"
SLOW_PY = "import time\nimport krait\ntime.sleep(3)\nkrait.response = krait.Response(body='slow')\n"
PAGE_PY = "import krait\nkrait.response = krait.Response(body='page')\n"


# A script that writes raw frames on its worker's socket (user code is hostile to the core):
# it finds the worker and the request frame in its callers' frames.
FORGE_PY = """
import inspect
import krait
from krait import protocol
for info in inspect.stack():
    loc = info.frame.f_locals
    if 'frame' in loc and hasattr(loc.get('self'), 'sock') and hasattr(loc['frame'], 'id'):
        worker, fid = loc['self'], loc['frame'].id
        break
KIND = %r
if KIND == 'end-first':
    worker.write(protocol.encode_end(fid))   # END of a stream that never began
elif KIND == 'stream-then-response':
    worker.write(protocol.encode_response(fid, 200, [], b'', protocol.BODY_STREAM),
                 protocol.encode_chunk(fid, b'part'))
# then the worker's own answer follows, for an id the core may already have let go
krait.response = krait.Response(body='after')
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site", {
        "a.txt": STATIC, "slow.py": SLOW_PY, "p.py": PAGE_PY,
        "end_first.py": FORGE_PY % "end-first",
        "stream_then_response.py": FORGE_PY % "stream-then-response",
    })


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def served(port: int, timeout: float = 3.0) -> bool:
    """A fresh connection gets its static file within timeout."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(get("/a.txt"))
            status, _, body = HttpReader(s, timeout).read()
            return status == 200 and body == STATIC
    except OSError:
        return False


def test_503_at_the_end_of_a_pipeline_budget_does_not_hang_the_loop(krait_server, site):
    """loop.c step_conn: a 503 from a full wait queue (worker.c krait__worker_submit →
    krait__error_now with keep-alive) posts the connection on srv->ready while step_conn
    runs it; when the next pipelined request then finds the budget (64) used up, step_conn
    appends c->ready to srv->deferred while it is still linked in srv->ready. The lists are
    corrupted: drive() then takes the same connection forever (the master spins at 100% CPU
    and never calls epoll_wait again), or follows it after it is freed."""
    k = krait_server(site, "--workers", "1", "--worker-pipeline", "1", "--max-queue", "1")
    busy = k.connect()
    busy.sendall(get("/slow.py"))           # the only worker is busy for 3 s
    time.sleep(0.3)
    queued = k.connect()
    queued.sendall(get("/slow.py"))         # the wait queue (1) is full
    time.sleep(0.3)
    c = k.connect()
    post = b"GET /p.py HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    c.sendall(get("/a.txt") * 63 + post + get("/a.txt"))
    r = HttpReader(c, 5)
    statuses = [r.read()[0] for _ in range(65)]
    assert statuses == [200] * 63 + [503, 200]
    # The loop must still be alive: a new client is served, the slow one gets its answer.
    assert served(k.port), "the master no longer serves new connections (spinning in drive)"
    status, _, body = HttpReader(busy, 6).read()
    assert (status, body) == (200, b"slow")
    for s in (busy, queued, c):
        s.close()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.parametrize("script", ["end_first", "stream_then_response"])
def test_out_of_order_stream_frames_kill_the_worker(krait_server, site, script):
    """worker.c deliver(): an END (or CHUNK) for jobs[0] before any streamed RESPONSE, or a
    second RESPONSE after a streamed one, is taken as in order. END-first: job_done() drops the
    job, the connection stays in CS_WORKER with no worker, no timer and (once the client sends
    or closes) no epoll interest: its client never gets an answer and the descriptor is never
    given back. Stream-then-RESPONSE: the second head is written into the chunked body (a
    response spliced into another) and c->streaming stays set with no worker: the connection
    hangs in CS_WRITE forever. The design says such a worker is broken: killed, 502 or a cut
    stream, the connection closed."""
    k = krait_server(site, "--workers", "1")
    assert served(k.port)
    base = fd_count(k.proc.pid)
    s = k.connect()
    s.sendall(get(f"/{script}.py"))
    s.settimeout(5)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            m = re.search(rb"\r\nContent-Length: (\d+)", head)
            if sep and m and len(body) >= int(m.group(1)):
                break  # one whole response (a 502): answered
    except TimeoutError:
        pytest.fail(f"no answer and no close after 5 s; got {data[:300]!r}")
    # Whatever came, it must hold one response head only (never a head spliced into a body).
    assert data.count(b"HTTP/1.1 ") <= 1, data[:400]
    s.close()
    # The killed worker's replacement may still be starting (its socket, pidfd, ready pipe).
    deadline = time.monotonic() + 10
    while fd_count(k.proc.pid) > base + 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fd_count(k.proc.pid) <= base + 3
    assert served(k.port)


# ---- WebSocket ------------------------------------------------------------------------------

WS_INIT = """
from krait import config
config.routes = [config.Route("WEBSOCKET", url="/ws", target="ws.py"), config.Route()]
config.max_websocket_message = 64 * 1024
"""
WS_ECHO = """
import krait
from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse


class Echo(WebsocketsCtrlBase):
    def __init__(self):
        super().__init__(use_in_message_queue=False)

    def on_in_message(self, message):
        self.push_out_message(message)


krait.websockets.response = WebsocketsResponse(Echo())
"""


def ws_open(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_ping_flood_from_a_client_that_never_reads_is_bounded(krait_server, tmp_path):
    """wsconn.c ws_frame(): every PING is answered by appending a PONG to c->out, and while
    that output is blocked (the client does not read) the connection is still read
    (conn.c blocked_events keeps EPOLLIN for CS_WS). Nothing bounds c->out there (the 2x
    message-limit rule is applied to the worker's messages only): a client that sends pings
    and never reads makes the master buffer everything it sends, without limit."""
    site = write_site(tmp_path / "wssite", {".py/init.py": WS_INIT, "ws.py": WS_ECHO,
                                            "a.txt": STATIC})
    k = krait_server(site, "--workers", "1")
    s = ws_open(k.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    before = rss_kib(k.proc.pid)
    ping = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125   # masked, key 0
    burst = ping * 1000                                               # ~128 KiB
    s.settimeout(2)
    sent = 0
    deadline = time.monotonic() + 10
    try:
        while sent < 96 * 1024 * 1024 and time.monotonic() < deadline:
            s.sendall(burst)
            sent += len(burst)
    except OSError:
        pass  # the server stopped reading or closed: bounded
    grown = rss_kib(k.proc.pid) - before
    s.close()
    assert grown < 32 * 1024, f"master RSS grew by {grown} KiB after {sent} bytes of pings"
    assert served(k.port)
