"""Several event loops (``--loops``): connections spread over them, a request for a worker moves
its connection to loop 0 and is answered in order, the connection cap and the access log are
the whole server's, and the option is checked. Real krait processes, real sockets.

(The whole suite also runs with ``KRAIT_LOOPS=3`` and ``KRAIT_LOOPS=1``: scripts/test.)"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import HttpReader, write_site

BIG = bytes(range(256)) * 256  # 64 KiB: a response that keeps a loop busy for a moment


def _site(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site", {
        "a.txt": "static a\n",
        "big.bin": BIG,
        "page.py": "import krait\nkrait.response = krait.Response(body="
                   "'python ' + krait.request.query.get('n', ''))\n",
    })


def _run_threads(target: Callable[[int], None], n: int) -> None:
    threads = [threading.Thread(target=target, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _sequential(server, conns: int, statics: int, python_first: bool) -> list[tuple[int, int]]:  # noqa: ANN001
    """One connection after another (so the loops take turns accepting), each asking for a
    Python page first if python_first, then for `statics` static files; then stop krait and
    return what each loop served."""
    for k in range(conns):
        with server.connect() as s:
            r = HttpReader(s)
            if python_first:
                s.sendall(f"GET /page?n={k} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
                assert r.read()[2] == f"python {k}".encode()
            for _ in range(statics):
                s.sendall(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n")
                assert r.read()[2] == b"static a\n"
    assert server.stop() == 0
    loops = _loop_line(server.log())
    assert all(c > 0 for _, c in loops), f"a loop accepted no connection: {loops}"
    return loops


def _loop_line(log: str) -> list[tuple[int, int]]:
    """(requests, connections) per loop from the line krait logs when it stops."""
    m = re.search(r"loops served (.*)", log)
    assert m, log
    return [(int(r), int(c)) for r, c in
            re.findall(r"(\d+) requests? on (\d+) connections?", m.group(1))]


def test_connections_spread_over_every_loop(tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    server = krait_server(_site(tmp_path), "--loops", "3", "--workers", "1")
    assert "and 3 loops" in server.log()
    failures: list[str] = []
    conns, per_conn = 90, 10

    def client(_: int) -> None:
        try:
            with server.connect() as s:
                r = HttpReader(s)
                for _ in range(per_conn):
                    s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
                    status, _, body = r.read()
                    if status != 200 or body != BIG:
                        failures.append(f"{status} {len(body)}")
        except (OSError, EOFError, ValueError) as exc:
            failures.append(repr(exc))

    _run_threads(client, conns)
    assert not failures, failures[:5]
    assert server.stop() == 0
    loops = _loop_line(server.log())
    assert len(loops) == 3
    assert sum(c for _, c in loops) == conns
    assert sum(r for r, _ in loops) == conns * per_conn
    assert all(c > 0 and r > 0 for r, c in loops), loops


def test_worker_requests_move_to_loop_zero_in_order(tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    """Static, Python, static, Python pipelined on connections every loop accepts: each answer
    in its place, whichever loop took the connection first."""
    server = krait_server(_site(tmp_path), "--loops", "3", "--workers", "2")
    failures: list[str] = []

    def client(k: int) -> None:
        try:
            with server.connect() as s:
                s.sendall(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n"
                          + f"GET /page?n={k} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
                          + b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n"
                          + f"GET /page?n={k}b HTTP/1.1\r\nHost: a\r\n\r\n".encode())
                r = HttpReader(s)
                got = [r.read() for _ in range(4)]
                want = [b"static a\n", f"python {k}".encode(), BIG, f"python {k}b".encode()]
                if [g[0] for g in got] != [200] * 4 or [g[2] for g in got] != want:
                    failures.append(f"{k}: {[(g[0], g[2][:20]) for g in got]}")
        except (OSError, EOFError, ValueError) as exc:
            failures.append(f"{k}: {exc!r}")

    _run_threads(client, 60)
    assert not failures, failures[:5]
    assert server.stop() == 0
    loops = _loop_line(server.log())
    assert sum(r for r, _ in loops) == 60 * 4  # a moved request is counted once


def test_connections_go_home_after_python(tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    """One connection after another (a quiet server): the loops take turns accepting. Each
    connection asks for a Python page (its connection moves to loop 0, which has the
    workers), then for 20 static files: the first is answered on loop 0, which then sends
    the idle connection back to the loop that accepted it, where the other 19 are served."""
    server = krait_server(_site(tmp_path), "--loops", "3", "--workers", "1")
    statics = 20
    loops = _sequential(server, 30, statics, python_first=True)
    for r, c in loops[1:]:
        assert r == (statics - 1) * c, loops
    assert loops[0][0] == (statics + 1) * loops[0][1] + 2 * sum(c for _, c in loops[1:])


def test_static_files_behind_a_regex_route_are_served_on_their_home_loop(
        tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    """A regex route's answer comes from a worker, which only loop 0 asks; the other loops copy
    it from loop 0's cache, so static files behind such a route (the usual
    ``[Route(regex=...), Route()]``) are served where their connection was accepted, not
    handed to loop 0 and back on every request."""
    site = _site(tmp_path)
    (site / ".py").mkdir()
    (site / ".py" / "init.py").write_text(
        "from krait import config\n"
        "config.routes = [config.Route('GET', regex=r'/item/(?P<id>\\d+)', "
        "target='page.py'), config.Route()]\n")
    server = krait_server(site, "--loops", "3", "--workers", "1")
    statics = 20
    loops = _sequential(server, 30, statics, python_first=False)
    # At most the first request of each (verb, path) needs loop 0.
    for r, c in loops[1:]:
        assert r >= (statics - 1) * c, f"static requests went through loop 0: {loops}"


def test_access_log_lines_are_whole(tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    server = krait_server(_site(tmp_path), "--loops", "3", "--workers", "1")
    n_threads, n_each = 30, 40
    failures: list[str] = []

    def client(k: int) -> None:
        try:
            with server.connect() as s:
                r = HttpReader(s)
                for i in range(n_each):
                    s.sendall(f"GET /a.txt?c={k}&i={i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
                    if r.read()[0] != 200:
                        failures.append(f"{k} {i}")
        except (OSError, EOFError, ValueError) as exc:
            failures.append(f"{k}: {exc!r}")

    _run_threads(client, n_threads)
    assert not failures, failures[:5]
    assert server.stop() == 0
    lines = server.access_log().splitlines()
    line_re = re.compile(r'^\S+ - - \[[^\]]+\] "GET /a\.txt\?c=(\d+)&i=(\d+) HTTP/1\.1" 200 \d+')
    seen = set()
    for line in lines:
        m = line_re.match(line)
        assert m and line.count('"GET ') == 1, line
        seen.add((int(m.group(1)), int(m.group(2))))
    assert len(lines) == n_threads * n_each
    assert seen == {(k, i) for k in range(n_threads) for i in range(n_each)}


def test_connection_cap_is_the_whole_servers(tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    """--max-connections 12 with 3 loops: twelve idle connections, wherever they landed, hold
    every loop's door shut; one closing lets the waiting one in."""
    server = krait_server(_site(tmp_path), "--loops", "3", "--max-connections", "12")
    idle = [server.connect() for _ in range(12)]
    for s in idle:  # each is accepted (an answer proves it) and stays open
        s.sendall(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n")
        assert HttpReader(s).read()[0] == 200
    extra = [server.connect() for _ in range(6)]  # the kernel completes them: the backlog
    for s in extra:
        s.sendall(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n")
        s.settimeout(0.2)
    time.sleep(1.0)
    answered = 0
    for s in extra:
        try:
            answered += bool(s.recv(100))
        except TimeoutError:
            pass
    assert answered == 0, "a connection beyond the cap was served"
    idle.pop().close()
    idle.pop().close()
    waiting = [s for s in extra]
    for s in waiting:
        s.settimeout(0.5)
    deadline = time.monotonic() + 10
    served = set()
    while time.monotonic() < deadline and len(served) < 2:
        for i, s in enumerate(waiting):
            if i in served:
                continue
            try:
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    served.add(i)
            except TimeoutError:
                pass
    assert len(served) >= 2, "the freed places were not taken"
    for s in idle + extra:
        s.close()


def test_loops_option(tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    site = _site(tmp_path)
    bad = subprocess.run([sys.executable, "-m", "krait", str(site), "--loops", "0"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--loops must be from 1 to 64" in bad.stderr
    env_bad = subprocess.run([sys.executable, "-m", "krait", str(site), "--port", "0"],
                             capture_output=True, text=True, timeout=30,
                             env={"KRAIT_LOOPS": "many", "PATH": "/usr/bin:/bin"})
    assert env_bad.returncode == 1 and "KRAIT_LOOPS='many' is not a number" in env_bad.stderr
    (site / ".py").mkdir()
    (site / ".py" / "init.py").write_text("import krait\nkrait.config.loops = 2\n")
    server = krait_server(site)
    assert "and 2 loops" in server.log()
    s = server.connect()
    s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
    status, _, body = HttpReader(s).read()
    assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(BIG).digest()
    s.close()
    server2 = krait_server(site, "--loops", "1")  # the command line wins over the config
    assert "and 1 loop " in server2.log()
    assert server2.stop() == 0
    assert "loops served" not in server2.log()
