"""Review of the "post, don't call" core (52c557a): sequences of real traffic that broke it.

Each test names the defect it reproduces; see the review report (docs/review-52c557a.md).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.conftest import HttpReader, write_site

STATIC = b"static\n"
SLOW_PY = "import time\nimport krait\ntime.sleep(3)\nkrait.response = krait.Response(body='slow')\n"
PAGE_PY = "import krait\nkrait.response = krait.Response(body='page')\n"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site", {"a.txt": STATIC, "slow.py": SLOW_PY, "p.py": PAGE_PY})


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
