"""Hostile load (issue "The core never crashes"): floods, many connections, timeouts in waves,
slow clients, the connection cap and killed workers, against a real krait process.

Every test ends with the same health check (`assert_recovers`): the master is alive, its open
descriptors (/proc/PID/fd) and resident memory (/proc/PID/status VmRSS) are back to the
baseline measured after a warm-up, it does not spin once idle (CPU time over ~1 s), and a
fresh connection is served. Responses are parsed strictly (status line, headers,
Content-Length or chunked body) and compared one by one, in order, with what each request
must get; bytes after the last expected answer are an error.

What each test proves:

* test_pipelined_flood_in_one_write[static|options|404|py]: PIPELINE_FLOOD requests arriving
  in one write (a static file, `OPTIONS *`, a missing path, a .py page) are answered one by
  one, in order, without the core recursing through the pipeline (a stack overflow today).
* test_many_connections_pipelining_concurrently: CONCURRENT_CONNS connections, each with
  PIPELINE_PER_CONN mixed requests (static, .py, 404, OPTIONS) in flight at once, each
  connection's answers complete and in order; nothing bleeds from one connection to another.
* test_short_connections_some_reset: SHORT_CONNS connections one after another, most doing
  one request with `Connection: close`, one in SHORT_RESET_EVERY closed with a reset
  (SO_LINGER 0) in the middle of its request head or in the middle of a large response; no
  descriptor or memory is left behind for any of them.
* test_idle_connections_time_out_in_waves: IDLE_WAVES waves of IDLE_WAVE_CONNS keep-alive
  connections that each do one request and go quiet; all are closed by the keep-alive timeout
  (more than 256 in one loop turn), and the descriptors and memory of every wave are given
  back: the master does not grow wave after wave.
* test_ten_thousand_idle_connections_cost_little: IDLE_MANY keep-alive connections that have
  each done one request and now wait cost the master less than IDLE_MANY_MAX_KIB each in
  resident memory (an idle connection holds no buffer: nginx gives them back too), and the
  memory comes back once they close.
* test_slowloris_gets_408_while_others_are_served: LORIS_CONNS connections dripping a head
  one byte at a time are answered 408 (or closed) once --header-timeout has passed since their
  first byte, while a normal client keeps being served promptly.
* test_connection_cap_does_not_spin: with --max-connections MAX_CONNS held by idle clients,
  further clients wait in the listen backlog while the master stays idle (no busy loop on a
  listener it cannot accept from); once idle ones leave, the waiting ones are served.
* test_killed_workers_under_pipelined_load: workers SIGKILLed while clients pipeline .py
  requests: every request gets exactly one answer, in order, 200 (its own body) or 502,
  never anything else; the master lives and a replacement worker serves afterwards.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import KraitProcess, write_site

# ---- the numbers ---------------------------------------------------------------------------

PIPELINE_FLOOD = 2000          # requests in one write, per kind
CONCURRENT_CONNS = 200         # connections pipelining at the same time ...
PIPELINE_PER_CONN = 100        # ... this many requests each
SHORT_CONNS = 20_000           # one after another (~4 s quiet, ~16 s on a busy 2-CPU machine);
#                                2,000 of them reset: a leak of one descriptor each would show
SHORT_CONNS_BUDGET_S = 45      # a test failure, not a hang, if they take longer than this
SHORT_RESET_EVERY = 10         # one connection in this many is reset mid-request/mid-response
IDLE_WAVE_CONNS = 3000         # keep-alive connections left idle per wave
IDLE_WAVES = 3
KEEPALIVE_TIMEOUT_S = 1
HEADER_TIMEOUT_S = 1
LORIS_CONNS = 200              # slow-loris connections
LORIS_BYTE_INTERVAL_S = 0.05   # one byte per connection this often
MAX_CONNS = 50                 # --max-connections for the cap test
CAP_EXTRA = 20                 # clients beyond the cap
KILL_CLIENTS = 4               # connections pipelining .py requests while workers die
KILL_BATCH = 50                # requests per pipelined batch
KILLS = 3                      # workers SIGKILLed, one after another
IDLE_MANY = 10_000             # idle keep-alive connections held at once ...
IDLE_MANY_MAX_KIB = 4          # ... each costing the master at most this much RSS
WORKERS = 2

# Health-check tolerances.
# Descriptors: the baseline is taken after a warm-up that has used every path the test uses
# (static file, .py, 404, OPTIONS), so everything the master opens lazily is already open;
# what is left is per-connection state, and a connection costs one descriptor. Two spare
# descriptors allow for a worker socket being replaced at the moment of measurement.
FD_SLACK = 2
# Memory: freed connection buffers may stay in the allocator's free lists instead of going
# back to the kernel, so RSS after a test can sit above the baseline by up to the test's
# own high-water mark: CONCURRENT_CONNS connections x (the ~2 KiB connection struct, the
# touched pages of its 16 KiB read buffer, a few KiB of output) ~ 3 MiB, plus the access-log
# buffer and Python's own arenas. 16 MiB covers that with room. A leaked connection costs
# ~7.5 KiB of RSS (measured: 3000 idle connections timed out in one loop turn today leave
# ~20 MiB each wave), so a leak of a few thousand connections cannot hide in the slack. (A
# leak of a few bytes per request is not visible this way: that is for the C unit tests
# under ASan.)
RSS_SLACK_KIB = 16 * 1024
# Between waves of idle connections the shape of the load is the same each time, so once the
# first wave has set the allocator's high-water mark the others must reuse that memory. 4 MiB
# is for noise (the access log, Python): waves of 250 connections, too few to hit today's
# leak, measured 21, 21, 21 MiB; a wave of 3000 leaked connections adds ~20 MiB.
WAVE_RSS_SLACK_KIB = 4 * 1024
RECOVER_WITHIN_S = 5           # descriptors/memory may take a few loop turns to come back
# Busy loop: an idle master wakes about once a second (epoll_wait's timeout) and uses
# well under 10 ms of CPU per second; a spinning one uses ~1 s per second. 0.15 s over
# 1 s sits far from both.
IDLE_WINDOW_S = 1.0
IDLE_CPU_MAX_S = 0.15

CLK_TCK = os.sysconf("SC_CLK_TCK")

STATIC = b"a static file for the hostile load tests\n"
BIG = bytes(range(256)) * 4096  # 1 MiB: its response cannot leave in one write
PAGE_PY = (
    "import krait\n"
    "krait.response = krait.Response(body='page ' + krait.request.query.get('i', '-'))\n"
)
SLOW_PY = (
    "import time\nimport krait\ntime.sleep(0.002)\n"
    "krait.response = krait.Response(body='slow ' + krait.request.query.get('i', '-'))\n"
)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    # Short names: the shorter a request, the more of them one read of the core (16 KiB) takes
    # in, and the deeper a core that answers a buffer's pipeline recursively would go.
    return write_site(tmp_path / "site", {
        "s.txt": STATIC,
        "big.bin": BIG,
        "p.py": PAGE_PY,
        "slow.py": SLOW_PY,
    })


# ---- requests and what they must get -------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    status: int
    body: bytes | None = None      # None: any body (still framed correctly)
    header: str | None = None      # a header that must be present (lower-case)


def req(method: str, target: str, close: bool = False) -> bytes:
    return (f"{method} {target} HTTP/1.1\r\nHost: x\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode()


def static_req(i: int, close: bool = False) -> tuple[bytes, Expect]:
    return req("GET", "/s.txt", close), Expect(200, STATIC)


def options_req(i: int, close: bool = False) -> tuple[bytes, Expect]:
    return req("OPTIONS", "*", close), Expect(204, b"", "allow")


def missing_req(i: int, close: bool = False) -> tuple[bytes, Expect]:
    return req("GET", "/m", close), Expect(404)


def page_req(i: int, close: bool = False) -> tuple[bytes, Expect]:
    return req("GET", f"/p.py?i={i}", close), Expect(200, b"page %d" % i)


KINDS: dict[str, Callable[..., tuple[bytes, Expect]]] = {
    "static": static_req, "options": options_req, "404": missing_req, "py": page_req,
}


def plan(kinds: list[str], n: int) -> list[tuple[bytes, Expect]]:
    """n requests cycling through kinds; the last one asks the server to close."""
    return [KINDS[kinds[i % len(kinds)]](i, close=(i == n - 1)) for i in range(n)]


# ---- strict response parsing ---------------------------------------------------------------


class ProtocolError(AssertionError):
    pass


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5]\d\d) [^\r\n]*")


class ResponseStream:
    """Incremental HTTP/1.1 response parser: feed() bytes, get back the complete responses.
    Anything that is not a well-framed response is a ProtocolError."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.count = 0

    def feed(self, data: bytes) -> list[Response]:
        self.buf += data
        out = []
        while True:
            r = self._one()
            if r is None:
                return out
            self.count += 1
            out.append(r)

    def _one(self) -> Response | None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 65536:
                raise ProtocolError(f"no end of head in 64 KiB: {bytes(self.buf[:200])!r}")
            return None
        lines = bytes(self.buf[:end]).split(b"\r\n")
        m = _STATUS_LINE.fullmatch(lines[0])
        if not m:
            raise ProtocolError(f"answer {self.count}: bad status line {lines[0][:200]!r}")
        status = int(m.group(1))
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise ProtocolError(f"answer {self.count}: bad header line {line[:200]!r}")
            key = name.decode("latin-1").lower()
            v = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {v}" if key in headers else v
        pos = end + 4
        if status < 200 or status in (204, 304):
            if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
                raise ProtocolError(f"answer {self.count}: {status} with a body: {headers}")
            del self.buf[:pos]
            return Response(status, headers, b"")
        if "transfer-encoding" in headers:
            if headers["transfer-encoding"].lower() != "chunked" or "content-length" in headers:
                raise ProtocolError(f"answer {self.count}: bad framing {headers}")
            parts = []
            while True:
                eol = self.buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size_text = bytes(self.buf[pos:eol]).split(b";")[0]
                if not re.fullmatch(rb"[0-9a-fA-F]+", size_text):
                    raise ProtocolError(f"answer {self.count}: bad chunk size {size_text!r}")
                size = int(size_text, 16)
                if size == 0:
                    if self.buf[eol + 2:eol + 4] == b"":
                        return None
                    if self.buf[eol + 2:eol + 4] != b"\r\n":
                        raise ProtocolError(f"answer {self.count}: trailers not expected")
                    del self.buf[:eol + 4]
                    return Response(status, headers, b"".join(parts))
                if len(self.buf) < eol + 2 + size + 2:
                    return None
                parts.append(bytes(self.buf[eol + 2:eol + 2 + size]))
                if self.buf[eol + 2 + size:eol + 4 + size] != b"\r\n":
                    raise ProtocolError(f"answer {self.count}: chunk not followed by CRLF")
                pos = eol + 4 + size
        if "content-length" not in headers or not headers["content-length"].isdigit():
            raise ProtocolError(f"answer {self.count}: no usable length: {headers}")
        n = int(headers["content-length"])
        if len(self.buf) < pos + n:
            return None
        body = bytes(self.buf[pos:pos + n])
        del self.buf[:pos + n]
        return Response(status, headers, body)


def check_answer(i: int, r: Response, want: Expect, what: str = "") -> None:
    where = f"{what}request {i}"
    assert r.status == want.status, f"{where}: status {r.status}, expected {want.status}"
    if want.body is not None:
        assert r.body == want.body, f"{where}: body {r.body[:100]!r}, expected {want.body[:100]!r}"
    if want.header is not None:
        assert want.header in r.headers, f"{where}: no {want.header} header in {r.headers}"


def master_state(server: KraitProcess) -> str:
    """For failure messages; waits a moment, as a crashing master may not be gone yet."""
    try:
        rc = server.proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        rc = None
    if rc is None:
        return "master alive"
    if rc < 0:
        return f"master killed by {signal.Signals(-rc).name}"
    return f"master exited with {rc}"


def read_answers(server: KraitProcess, sock: socket.socket, n: int, timeout: float,
                 then_close: bool = True) -> list[Response]:
    """Exactly n responses from sock (within timeout in all); with then_close, the server must
    then close the connection with nothing more."""
    stream = ResponseStream()
    got: list[Response] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"{len(got)} of {n} answers after {timeout} s ({master_state(server)})")
        sock.settimeout(left)
        try:
            data = sock.recv(262144)
        except TimeoutError:
            continue
        except ConnectionResetError:
            data = b""
        if not data:
            pytest.fail(f"connection closed after {len(got)} of {n} answers "
                        f"({master_state(server)}); partial: {bytes(stream.buf[:120])!r}")
        got += stream.feed(data)
    assert len(got) == n and not stream.buf, f"more than {n} answers: {bytes(stream.buf[:200])!r}"
    if then_close:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            rest = sock.recv(65536)
        except ConnectionResetError:
            rest = b""
        except TimeoutError:
            pytest.fail("the connection stays open after Connection: close")
        assert rest == b"", f"bytes after the last answer: {rest[:200]!r}"
    return got


# ---- the master's health -------------------------------------------------------------------


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def children(pid: int) -> set[int]:
    """Live (not zombie) child processes of pid: the workers."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


@dataclass
class Baseline:
    fds: int
    rss_kib: int


def one_request(server: KraitProcess, data: bytes, want: Expect, timeout: float = 5) -> None:
    with server.connect(timeout=timeout) as s:
        s.sendall(data)
        check_answer(0, read_answers(server, s, 1, timeout)[0], want)


def warm_up(server: KraitProcess) -> Baseline:
    """Use every path once (lazily opened files, Python imports, worker start), then measure."""
    for kinds in (["static"], ["options"], ["404"], ["py"], list(KINDS)):
        reqs = plan(kinds, 40)
        with server.connect(timeout=10) as s:
            s.sendall(b"".join(r for r, _ in reqs))
            for i, (r, (_, want)) in enumerate(zip(read_answers(server, s, len(reqs), 10),
                                                   reqs, strict=True)):
                check_answer(i, r, want, "warm-up ")
    time.sleep(0.2)
    pid = server.proc.pid
    return Baseline(fd_count(pid), rss_kib(pid))


def assert_recovers(server: KraitProcess, base: Baseline, rss_base_kib: int | None = None) -> None:
    """Alive; descriptors and memory back to the baseline; idle means idle; still serving."""
    pid = server.proc.pid
    assert server.proc.poll() is None, master_state(server)
    rss_limit = (rss_base_kib if rss_base_kib is not None else base.rss_kib) + RSS_SLACK_KIB
    deadline = time.monotonic() + RECOVER_WITHIN_S
    while True:
        fds, rss = fd_count(pid), rss_kib(pid)
        if fds <= base.fds + FD_SLACK and rss <= rss_limit:
            break
        if time.monotonic() > deadline:
            assert fds <= base.fds + FD_SLACK, (
                f"{fds} descriptors open, baseline {base.fds} (+{FD_SLACK} allowed)")
            pytest.fail(f"RSS {rss // 1024} MiB, limit {rss_limit // 1024} MiB "
                        f"(baseline + {RSS_SLACK_KIB // 1024} MiB)")
        time.sleep(0.1)
    assert_idle(server)
    one_request(server, *static_req(0, close=True))
    assert server.proc.poll() is None, master_state(server)


def assert_idle(server: KraitProcess, window: float = IDLE_WINDOW_S) -> float:
    before = cpu_seconds(server.proc.pid)
    time.sleep(window)
    used = cpu_seconds(server.proc.pid) - before
    assert used < IDLE_CPU_MAX_S, f"the master used {used:.2f} s of CPU in {window} s idle"
    return used


# ---- pipelining ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["static", "options", "404", "py"])
def test_pipelined_flood_in_one_write(site, krait_server, kind):
    server = krait_server(site, "--workers", str(WORKERS))
    base = warm_up(server)
    reqs = plan([kind], PIPELINE_FLOOD)
    data = b"".join(r for r, _ in reqs)
    with server.connect(timeout=30) as s:
        # One sendall of the whole buffer, from a thread so that reading the answers cannot
        # wait on it (the server stops reading while its answers are not taken).
        sender = threading.Thread(target=s.sendall, args=(data,), daemon=True)
        sender.start()
        got = read_answers(server, s, len(reqs), timeout=30)
        sender.join(5)
    for i, (r, (_, want)) in enumerate(zip(got, reqs, strict=True)):
        check_answer(i, r, want)
    assert_recovers(server, base)


def test_many_connections_pipelining_concurrently(site, krait_server):
    server = krait_server(site, "--workers", str(WORKERS))
    base = warm_up(server)
    sel = selectors.DefaultSelector()
    conns = []
    for c in range(CONCURRENT_CONNS):
        s = server.connect(timeout=10)
        s.setblocking(False)
        # The kinds rotate differently on each connection, so neighbours differ.
        kinds = list(KINDS)[c % 4:] + list(KINDS)[:c % 4]
        reqs = plan(kinds, PIPELINE_PER_CONN)
        st = {"sock": s, "id": c, "reqs": reqs, "out": memoryview(b"".join(r for r, _ in reqs)),
              "stream": ResponseStream(), "got": [], "eof": False}
        conns.append(st)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
    deadline = time.monotonic() + 60
    open_ = len(conns)
    try:
        while open_ and time.monotonic() < deadline:
            for key, ev in sel.select(timeout=1):
                st = key.data
                s = st["sock"]
                if ev & selectors.EVENT_WRITE and st["out"]:
                    try:
                        n = s.send(st["out"])
                    except BlockingIOError:
                        n = 0
                    st["out"] = st["out"][n:]
                    if not st["out"]:
                        sel.modify(s, selectors.EVENT_READ, st)
                if ev & selectors.EVENT_READ:
                    try:
                        data = s.recv(262144)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        data = b""
                    if data:
                        st["got"] += st["stream"].feed(data)
                        assert len(st["got"]) <= len(st["reqs"]), f"connection {st['id']}: extra"
                    else:
                        st["eof"] = True
                        sel.unregister(s)
                        open_ -= 1
        short = [(st["id"], len(st["got"])) for st in conns if len(st["got"]) < PIPELINE_PER_CONN]
        assert not short, (f"{len(short)} connections short of answers, e.g. "
                           f"(connection, answers) {short[:5]} ({master_state(server)})")
        for st in conns:
            assert st["eof"], f"connection {st['id']} not closed after Connection: close"
            assert not st["stream"].buf, f"connection {st['id']}: bytes after the last answer"
            for i, (r, (_, want)) in enumerate(zip(st["got"], st["reqs"], strict=True)):
                check_answer(i, r, want, f"connection {st['id']}, ")
    finally:
        sel.close()
        for st in conns:
            st["sock"].close()
    assert_recovers(server, base)


# ---- many short connections, some reset ----------------------------------------------------


def reset_close(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_short_connections_some_reset(site, krait_server):
    server = krait_server(site, "--workers", str(WORKERS))
    base = warm_up(server)
    whole = req("GET", "/s.txt", close=True)
    start = time.monotonic()
    resets = 0
    for i in range(SHORT_CONNS):
        if time.monotonic() - start > SHORT_CONNS_BUDGET_S:
            pytest.fail(f"only {i} of {SHORT_CONNS} connections in {SHORT_CONNS_BUDGET_S} s "
                        f"({master_state(server)})")
        try:
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        except OSError as e:
            pytest.fail(f"connection {i}: {e} ({master_state(server)})")
        if i % SHORT_RESET_EVERY == SHORT_RESET_EVERY - 1:
            resets += 1
            if (i // SHORT_RESET_EVERY) % 2:
                s.sendall(whole[:len(whole) // 2])          # reset mid-request
            else:
                s.sendall(req("GET", "/big.bin"))           # reset mid-response
                s.recv(1024)
            reset_close(s)
            continue
        with s:
            s.sendall(whole)
            try:
                r = read_answers(server, s, 1, timeout=5)[0]
            except AssertionError as e:
                raise AssertionError(f"connection {i}: {e}") from None
            check_answer(i, r, Expect(200, STATIC), "connection ")
    elapsed = time.monotonic() - start
    print(f"{SHORT_CONNS} connections ({resets} reset) in {elapsed:.1f} s")
    assert_recovers(server, base)


# ---- idle connections timed out in waves ---------------------------------------------------


def open_idle_wave(server: KraitProcess, n: int) -> list[socket.socket]:
    """n keep-alive connections, each having done one request (answered) and now idle."""
    socks = []
    one = req("GET", "/s.txt")
    try:
        # Each sends its request at once: the header timeout (1 s here) runs from the accept,
        # and connecting 3000 on a busy machine can take longer than that.
        for _ in range(n):
            socks.append(server.connect(timeout=10))
            socks[-1].sendall(one)
        for i, s in enumerate(socks):
            got = read_answers(server, s, 1, timeout=10, then_close=False)
            check_answer(i, got[0], Expect(200, STATIC), "idle wave ")
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def wait_all_closed(server: KraitProcess, socks: list[socket.socket], limit: float) -> float:
    """Every socket sees the server's close with no bytes (keep-alive timeout closes silently).
    Returns the seconds it took."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    start = time.monotonic()
    left = len(socks)
    try:
        while left:
            if time.monotonic() - start > limit:
                pytest.fail(f"{left} of {len(socks)} idle connections still open {limit} s "
                            f"later ({master_state(server)})")
            for key, _ in sel.select(timeout=0.5):
                try:
                    data = key.fileobj.recv(4096)
                except ConnectionResetError:
                    data = b""
                assert data == b"", f"an idle connection got bytes: {data[:200]!r}"
                sel.unregister(key.fileobj)
                left -= 1
    finally:
        sel.close()
        for s in socks:
            s.close()
    return time.monotonic() - start


def test_idle_connections_time_out_in_waves(site, krait_server):
    server = krait_server(site, "--workers", str(WORKERS),
                          "--keepalive-timeout", str(KEEPALIVE_TIMEOUT_S),
                          "--header-timeout", str(HEADER_TIMEOUT_S))
    base = warm_up(server)
    pid = server.proc.pid
    rss_after = []
    for wave in range(IDLE_WAVES):
        socks = open_idle_wave(server, IDLE_WAVE_CONNS)
        # The keep-alive timeout plus one epoll_wait timeout (1 s) plus scheduling.
        wait_all_closed(server, socks, KEEPALIVE_TIMEOUT_S + 4)
        deadline = time.monotonic() + RECOVER_WITHIN_S
        while fd_count(pid) > base.fds + FD_SLACK and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fd_count(pid) <= base.fds + FD_SLACK, (
            f"wave {wave}: {fd_count(pid)} descriptors, baseline {base.fds}")
        rss_after.append(rss_kib(pid))
        print(f"wave {wave}: RSS {rss_after[-1] // 1024} MiB (baseline {base.rss_kib // 1024})")
        # The first wave sets the allocator's high-water mark (3000 connections' buffers at
        # once, which it may keep for reuse); the waves after it must reuse that memory, not
        # add to it.
        assert rss_after[-1] <= rss_after[0] + WAVE_RSS_SLACK_KIB, (
            f"wave {wave}: RSS {rss_after[-1] // 1024} MiB, after the first wave "
            f"{rss_after[0] // 1024} MiB: the master grows wave after wave "
            f"(MiB after each: {[r // 1024 for r in rss_after]})")
    assert_recovers(server, base, rss_base_kib=rss_after[0])


def test_ten_thousand_idle_connections_cost_little(site, krait_server):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = IDLE_MANY + 200
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"this process may open {hard} descriptors, the test needs {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    server = krait_server(site, "--workers", str(WORKERS))
    base = warm_up(server)
    pid = server.proc.pid
    socks: list[socket.socket] = []
    try:
        for _ in range(IDLE_MANY // 1000):
            socks += open_idle_wave(server, 1000)
        time.sleep(0.5)
        grown = rss_kib(pid) - base.rss_kib
        print(f"{len(socks)} idle connections: master RSS +{grown // 1024} MiB "
              f"({grown * 1024 // len(socks)} bytes each)")
        assert grown < IDLE_MANY * IDLE_MANY_MAX_KIB, (
            f"{len(socks)} idle connections cost {grown // 1024} MiB "
            f"({grown / len(socks):.1f} KiB each, at most {IDLE_MANY_MAX_KIB} allowed)")
        assert_idle(server)
    finally:
        for s in socks:
            s.close()
    assert_recovers(server, base)


# ---- slow-loris ----------------------------------------------------------------------------


def test_slowloris_gets_408_while_others_are_served(site, krait_server):
    server = krait_server(site, "--workers", str(WORKERS),
                          "--header-timeout", str(HEADER_TIMEOUT_S))
    base = warm_up(server)
    head = req("GET", "/s.txt") + b"X-Padding: " + b"p" * 200 + b"\r\n"  # never finished
    lorises = []
    for _ in range(LORIS_CONNS):
        s = server.connect(timeout=10)
        s.setblocking(False)
        lorises.append({"sock": s, "sent": 0, "opened": time.monotonic(), "first": None,
                        "done": None, "data": b""})
    limit = HEADER_TIMEOUT_S + 2.5   # the timeout, one epoll_wait (1 s), scheduling
    start = time.monotonic()
    served, worst = 0, 0.0
    try:
        while any(lo["done"] is None for lo in lorises):
            now = time.monotonic()
            assert now - start < limit + 5, (
                f"{sum(lo['done'] is None for lo in lorises)} slow-loris connections still "
                f"open after {now - start:.1f} s ({master_state(server)})")
            for lo in lorises:
                if lo["done"] is not None:
                    continue
                s = lo["sock"]
                try:
                    data = s.recv(4096)
                    lo["data"] += data
                    if not data:
                        lo["done"] = now
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    lo["done"] = now
                if lo["done"] is None and lo["sent"] < len(head) and not lo["data"]:
                    try:
                        s.send(head[lo["sent"]:lo["sent"] + 1])
                        lo["sent"] += 1
                        if lo["first"] is None:
                            lo["first"] = now
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        pass
            # A normal client, meanwhile.
            t0 = time.monotonic()
            one_request(server, *page_req(served, close=True))
            worst = max(worst, time.monotonic() - t0)
            served += 1
            time.sleep(LORIS_BYTE_INTERVAL_S)
    finally:
        for lo in lorises:
            lo["sock"].close()
    for k, lo in enumerate(lorises):
        took = lo["done"] - lo["first"]
        assert took <= limit, f"slow-loris {k} closed {took:.1f} s after its first byte"
        lived = lo["done"] - lo["opened"]
        assert lived >= HEADER_TIMEOUT_S - 0.2, f"slow-loris {k} cut after only {lived:.2f} s"
        if lo["data"]:
            assert lo["data"].startswith(b"HTTP/1.1 408 "), f"slow-loris {k}: {lo['data'][:80]!r}"
    got_408 = sum(bool(lo["data"]) for lo in lorises)
    print(f"slow-loris: {got_408} answered 408, {LORIS_CONNS - got_408} closed silently; "
          f"normal client: {served} requests served meanwhile, slowest {worst * 1000:.0f} ms")
    assert worst < 1.0, f"a normal request took {worst:.2f} s during the slow-loris"
    assert_recovers(server, base)


# ---- the connection cap --------------------------------------------------------------------


def test_connection_cap_does_not_spin(site, krait_server):
    server = krait_server(site, "--workers", str(WORKERS), "--max-connections", str(MAX_CONNS),
                          "--keepalive-timeout", "60", "--header-timeout", "60")
    base = warm_up(server)
    holders = open_idle_wave(server, MAX_CONNS)
    waiting = []
    try:
        for _ in range(CAP_EXTRA):
            s = server.connect(timeout=10)   # completes in the kernel's backlog
            waiting.append(s)
            s.sendall(req("GET", "/s.txt", close=True))
        time.sleep(0.2)
        for i, s in enumerate(waiting):
            s.setblocking(False)
            try:
                early = s.recv(200)
            except BlockingIOError:
                continue    # not accepted, so not answered: waiting, as it should
            pytest.fail(f"client {i} beyond --max-connections {MAX_CONNS} was not left "
                        f"waiting: got {early!r}")
        # Measured now, asserted after the waiting clients' part, so a failure says both.
        before = cpu_seconds(server.proc.pid)
        time.sleep(IDLE_WINDOW_S)
        spent = cpu_seconds(server.proc.pid) - before
        print(f"master CPU with the cap held: {spent:.2f} s in {IDLE_WINDOW_S} s")
        # Idle ones leave: the waiting ones get in and are served.
        for s in holders[:CAP_EXTRA]:
            s.close()
        for i, s in enumerate(waiting):
            s.setblocking(True)
            check_answer(i, read_answers(server, s, 1, timeout=5)[0], Expect(200, STATIC),
                         "waiting client ")
    finally:
        for s in holders + waiting:
            s.close()
    assert spent < IDLE_CPU_MAX_S, (
        f"the master used {spent:.2f} s of CPU in {IDLE_WINDOW_S} s with the cap held")
    assert_recovers(server, base)


# ---- workers SIGKILLed under load ----------------------------------------------------------


def test_killed_workers_under_pipelined_load(site, krait_server):
    server = krait_server(site, "--workers", str(WORKERS))
    base = warm_up(server)
    master = server.proc.pid
    stop = threading.Event()
    errors: list[str] = []
    counts = {"200": 0, "502": 0}
    lock = threading.Lock()

    def client(c: int) -> None:
        try:
            n = 0
            while not stop.is_set():
                reqs = [(req("GET", f"/slow.py?i={c}-{n + k}"), b"slow %d-%d" % (c, n + k))
                        for k in range(KILL_BATCH)]
                with server.connect(timeout=20) as s:
                    s.sendall(b"".join(r for r, _ in reqs) + req("GET", "/s.txt", True))
                    got = read_answers(server, s, len(reqs) + 1, timeout=20)
                for i, (r, (_, body)) in enumerate(zip(got, reqs, strict=False)):
                    if r.status == 502:
                        with lock:
                            counts["502"] += 1
                        continue
                    assert (r.status, r.body) == (200, body), (
                        f"client {c}, request {n + i}: {r.status} {r.body[:80]!r}")
                    with lock:
                        counts["200"] += 1
                check_answer(len(reqs), got[-1], Expect(200, STATIC), f"client {c}, ")
                n += KILL_BATCH
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(f"{type(e).__name__}: {e}")
            stop.set()

    threads = [threading.Thread(target=client, args=(c,), daemon=True)
               for c in range(KILL_CLIENTS)]
    for t in threads:
        t.start()
    killed = []
    try:
        for _ in range(KILLS):
            time.sleep(0.4)
            workers = children(master)
            if stop.is_set() or not workers:
                break
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            # Wait for its replacement before the next kill.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not stop.is_set():
                now = children(master)
                if victim not in now and len(now) == WORKERS:
                    break
                time.sleep(0.05)
        time.sleep(0.4)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[0]
    assert all(not t.is_alive() for t in threads), "a client is stuck"
    assert len(killed) == KILLS, f"only {len(killed)} workers killed ({master_state(server)})"
    print(f"answers: {counts}, killed {killed}")
    assert server.proc.poll() is None, master_state(server)
    workers = children(master)
    assert len(workers) == WORKERS and not workers & set(killed), workers
    # A replacement serves.
    one_request(server, *page_req(7, close=True))
    assert_recovers(server, base)
