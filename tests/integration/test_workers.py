"""The worker pool through real HTTP against a real krait process (invariants 2, 3, 4, 7): dead,
killed and overrunning workers, load, SIGHUP and --reload, the bounded queue, request bodies
(spooled, chunked, 100-continue) and clients that go away."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import HttpReader, KraitProcess, recv_all, write_site

INIT = '''\
from krait import config
import settings
config.routes = [
    config.Route("ANY", regex=r"/x/(?P<script>[a-z_]+)", target="{script}.py"),
    config.Route(),
]
'''

SLOW = '''\
import os, time
import krait
q = krait.request.query
if "marker" in q:
    with open(q["marker"] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(q["marker"] + ".tmp", q["marker"])
time.sleep(float(q.get("t", "1")))
krait.response = krait.Response(body="slept")
'''

LOOP = '''\
import os
import krait
marker = krait.request.query["marker"]
with open(marker + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(marker + ".tmp", marker)
while True:
    pass
'''

BODY = '''\
import hashlib
import krait
r = krait.request
krait.response = krait.JsonResponse({
    "len": len(r.body), "sha256": hashlib.sha256(r.body).hexdigest(), "spooled": r.body_file,
    "content_length": r.headers.get("content-length"),
    "transfer_encoding": r.headers.get("transfer-encoding"),
})
'''

UPLOAD = '''\
import hashlib
import krait
parts = krait.request.get_multipart_form()
krait.response = krait.JsonResponse({"spooled": krait.request.body_file is not None, "parts": [
    [p.name, p.filename, len(p.data), hashlib.sha256(p.data).hexdigest()] for p in parts]})
'''

# A worker that breaks the frame protocol: the script writes to the worker's own socket to the
# core (its fd is on the worker's command line) before its real answer.
FORGE = '''\
import os
import struct
import sys
import krait
from krait import protocol
fd = int(sys.argv[sys.argv.index("--fd") + 1])
how = krait.request.query["how"]
if how == "wrong-id":
    frame = protocol.encode_response(0xFFFFFFF0, 200, [], b"forged")
elif how == "bad-type":
    frame = struct.pack("<IBI", 5, 99, 1)
else:
    frame = struct.pack("<I", 2) + b"xx"  # a length below the header's
os.write(fd, frame)
krait.response = krait.Response(body="after the forged frame")
'''

FILES: dict[str, str | bytes] = {
    "forge.py": FORGE,
    ".py/init.py": INIT,
    ".py/settings.py": "VALUE = 'v1'\n",
    "hello.py": "import krait\nkrait.response = krait.Response(body='Hello world!')\n",
    "pid.py": "import os\nimport krait\nkrait.response = krait.Response(body=str(os.getpid()))\n",
    "slow.py": SLOW,
    "loop.py": LOOP,
    "exit.py": "import os\nos._exit(3)\n",
    "segfault.py": "import ctypes\nctypes.string_at(0)\n",
    "sysexit.py": "import sys\nsys.exit(4)\n",
    "body.py": BODY,
    "upload.py": UPLOAD,
    "big.py": "import krait\nkrait.response = krait.Response(body=b'z' * (20 * 1024 * 1024))\n",
    "version.py": "import krait, settings\nkrait.response = krait.Response(body=settings.VALUE)\n",
    "edited.py": "import krait\nkrait.response = krait.Response(body='first version')\n",
}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site", FILES)


def get(server: KraitProcess, path: str, method: str = "GET", timeout: float = 10.0,
        head: bool = False) -> tuple[int, dict[str, str], bytes]:
    s = server.connect(timeout=timeout)
    try:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        return HttpReader(s, timeout=timeout).read(head_request=head)
    finally:
        s.close()


def send(server: KraitProcess, path: str) -> socket.socket:
    """Start a request and return its socket without reading the answer."""
    s = server.connect(timeout=15)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    return s


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def wait_pid_file(path: Path) -> int:
    return int(wait_for(lambda: path.exists() and path.read_text(), what=str(path)))


def children(pid: int) -> set[int]:
    """Live (not zombie) child processes of pid."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def zombies(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] == "Z":
                found.add(int(entry))
    return found


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# --- dying and overrunning workers -------------------------------------------------------------

def test_sigkill_mid_request_gives_502_and_the_next_request_is_served(site, krait_server,
                                                                       tmp_path):
    server = krait_server(site, "--workers", "1")
    marker = tmp_path / "pid"
    s = send(server, f"/x/slow?t=30&marker={marker}")
    pid = wait_pid_file(marker)
    os.kill(pid, signal.SIGKILL)
    status, headers, body = HttpReader(s, timeout=10).read()
    s.close()
    assert status == 502
    assert b"502 Bad Gateway" in body
    assert headers["content-type"] == "text/html; charset=utf-8"
    status, _, body = get(server, "/x/pid")
    assert status == 200 and int(body) != pid
    assert wait_for(lambda: gone(pid), what="the killed worker to be reaped")


@pytest.mark.parametrize("script", ["exit", "segfault"])
def test_a_worker_dying_in_a_script_gives_502(site, krait_server, script):
    server = krait_server(site, "--workers", "1")
    before = get(server, "/x/pid")[2]
    status, _, _ = get(server, f"/x/{script}")
    assert status == 502
    status, _, body = get(server, "/x/pid")
    assert status == 200 and body != before


@pytest.mark.parametrize("how", ["wrong-id", "bad-type", "bad-length"])
def test_a_worker_breaking_the_frame_protocol_is_replaced_with_502(site, krait_server, how):
    # An answer for a request it is not running, an unknown frame type, an impossible length:
    # the core kills that worker, its client gets 502, and a fresh worker takes the next one.
    server = krait_server(site, "--workers", "1")
    before = int(get(server, "/x/pid")[2])
    status, _, body = get(server, f"/x/forge?how={how}")
    assert status == 502 and b"forged" not in body
    status, _, body = get(server, "/x/pid")
    assert status == 200 and int(body) != before
    assert wait_for(lambda: gone(before), what="the broken worker to be reaped")


def test_sys_exit_in_a_script_is_a_500_and_the_worker_lives(site, krait_server):
    server = krait_server(site, "--workers", "1")
    before = get(server, "/x/pid")[2]
    assert get(server, "/x/sysexit")[0] == 500
    assert get(server, "/x/pid")[2] == before
    assert "SystemExit: 4" in server.log()


def test_infinite_loop_gives_504_and_the_worker_is_replaced(site, krait_server, tmp_path):
    server = krait_server(site, "--workers", "1", "--worker-timeout", "1")
    marker = tmp_path / "pid"
    started = time.monotonic()
    s = send(server, f"/x/loop?marker={marker}")
    pid = wait_pid_file(marker)
    status, _, body = HttpReader(s, timeout=10).read()
    s.close()
    assert status == 504 and b"504 Gateway Timeout" in body
    assert 0.9 <= time.monotonic() - started < 8
    assert wait_for(lambda: gone(pid), what="the looping worker to be killed")
    status, _, body = get(server, "/x/pid")
    assert status == 200 and int(body) != pid
    assert len(wait_for(lambda: len(children(server.proc.pid)) == 1 and
                        children(server.proc.pid), what="one worker")) == 1


def test_other_workers_are_not_disturbed(site, krait_server, tmp_path):
    server = krait_server(site, "--workers", "2", "--worker-timeout", "2")
    marker = tmp_path / "pid"
    s = send(server, f"/x/loop?marker={marker}")
    wait_pid_file(marker)
    # While one worker spins, the other one keeps serving.
    for _ in range(20):
        assert get(server, "/x/hello")[::2] == (200, b"Hello world!")
    assert HttpReader(s, timeout=10).read()[0] == 504
    s.close()


def head_answer(server: KraitProcess, path: str) -> bytes:
    """Everything the server sends for one HEAD request, until it is idle for a moment."""
    s = server.connect(timeout=10)
    try:
        s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            more = s.recv(65536)
            if not more:
                return data
            data += more
        s.settimeout(0.5)
        try:
            while more := s.recv(65536):
                data += more
        except TimeoutError:
            pass
        return data
    finally:
        s.close()


@pytest.mark.parametrize("script, status", [("exit", 502), ("loop", 504)])
def test_head_request_to_a_failing_script_gets_no_body(site, krait_server, tmp_path, script,
                                                       status):
    server = krait_server(site, "--workers", "1", "--worker-timeout", "1")
    raw = head_answer(server, f"/x/{script}?marker={tmp_path / 'pid'}")
    assert raw.startswith(f"HTTP/1.1 {status} ".encode())
    assert raw.endswith(b"\r\n\r\n"), raw   # a HEAD response has no body (RFC 9110 §9.3.2)


# --- load and reloads ----------------------------------------------------------------------

def hammer(port: int, path: str, count: int, results: list, errors: list) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            reader = HttpReader(s, timeout=20)
            for _ in range(count):
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
                status, _, body = reader.read()
                results.append((status, body))
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(repr(exc))


def test_2000_requests_from_50_clients_none_lost(site, krait_server):
    server = krait_server(site, "--workers", "2")
    results: list = []
    errors: list = []
    threads = [threading.Thread(target=hammer, args=(server.port, "/x/hello", 40, results,
                                                     errors)) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results) == 2000
    assert all(r == (200, b"Hello world!") for r in results), set(results)


def reload_count(server: KraitProcess) -> int:
    return server.log().count("krait: reloaded:")


def test_sighup_under_load_loses_nothing(site, krait_server):
    server = krait_server(site, "--workers", "2")
    first_workers = children(server.proc.pid)
    assert len(first_workers) == 2
    stop = threading.Event()
    results: list = []
    errors: list = []

    def client() -> None:
        try:
            while not stop.is_set():
                # A new connection now and then too, not only keep-alive.
                hammer(server.port, "/x/pid", 25, results, errors)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        for n in range(1, 4):
            wait_for(lambda n=n: len(results) > 100 * n, what="some traffic")
            server.proc.send_signal(signal.SIGHUP)
            wait_for(lambda n=n: reload_count(server) >= n, what=f"reload {n}")
        count = len(results)
        wait_for(lambda: len(results) > count + 100, what="traffic after the reloads")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors
    assert all(status == 200 for status, _ in results)
    served_by = {int(body) for _, body in results}
    assert served_by - first_workers, "no request reached a new worker"
    # The old workers are gone, exactly the configured count remains, nothing left a zombie.
    final = wait_for(lambda: (len(children(server.proc.pid)) == 2 and
                              children(server.proc.pid)), what="two workers")
    assert not final & first_workers
    assert wait_for(lambda: not zombies(server.proc.pid), what="no zombies")


def test_sighup_with_a_broken_init_keeps_the_old_workers(site, krait_server):
    server = krait_server(site, "--workers", "1")
    pid = int(get(server, "/x/pid")[2])
    good = (site / ".py/init.py").read_text()
    (site / ".py/init.py").write_text(good + "raise RuntimeError('broken-on-reload')\n")
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in server.log(), what="the failed reload")
    assert "broken-on-reload" in server.log()
    assert get(server, "/x/pid")[::2] == (200, str(pid).encode())
    (site / ".py/init.py").write_text(good)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: reload_count(server) == 1, what="the good reload")
    status, _, body = get(server, "/x/pid")
    assert status == 200 and int(body) != pid


def bump(path: Path, text: str) -> None:
    """Rewrite a file so that its mtime surely changes, even within one timestamp tick."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 2 * 10**9, before + 2 * 10**9))


def test_reload_flag_restarts_workers_when_a_py_file_changes(site, krait_server):
    server = krait_server(site, "--workers", "1", "--reload")
    assert get(server, "/x/version")[2] == b"v1"
    pid = int(get(server, "/x/pid")[2])
    bump(site / ".py/settings.py", "VALUE = 'v2'\n")
    wait_for(lambda: get(server, "/x/version")[2] == b"v2", what="the reload")
    assert "settings.py changed: reloading" in server.log()
    assert int(get(server, "/x/pid")[2]) != pid


def test_without_reload_modules_stay_but_scripts_are_fresh(site, krait_server):
    server = krait_server(site, "--workers", "1")
    assert get(server, "/x/edited")[2] == b"first version"
    bump(site / "edited.py", "import krait\nkrait.response = krait.Response(body='second')\n")
    assert get(server, "/x/edited")[2] == b"second"
    # An imported module is not re-imported without a reload.
    bump(site / ".py/settings.py", "VALUE = 'v2'\n")
    time.sleep(0.6)
    assert get(server, "/x/version")[2] == b"v1"


def test_worker_count(site, krait_server):
    server = krait_server(site, "--workers", "3")
    assert len(children(server.proc.pid)) == 3
    assert "with 3 workers" in server.log()


# --- the queue -----------------------------------------------------------------------------

def test_full_queue_gives_503_with_retry_after(site, krait_server, tmp_path):
    server = krait_server(site, "--workers", "1", "--max-queue", "1")
    marker = tmp_path / "pid"
    busy = send(server, f"/x/slow?t=2&marker={marker}")
    wait_pid_file(marker)                       # the only worker is busy
    time.sleep(0.2)                             # too long to be pipelined behind it
    queued = send(server, "/x/slow?t=0")        # waits in the queue (its one place)
    time.sleep(0.3)
    started = time.monotonic()
    status, headers, body = get(server, "/x/hello")
    assert status == 503
    assert time.monotonic() - started < 1.5     # refused at once, not after the wait
    assert headers["retry-after"].isdigit()
    assert b"503 Service Unavailable" in body
    assert HttpReader(busy, timeout=10).read()[::2] == (200, b"slept")
    assert HttpReader(queued, timeout=10).read()[::2] == (200, b"slept")
    busy.close()
    queued.close()
    assert get(server, "/x/hello")[0] == 200


# --- pipelining: requests queued on a busy worker's socket (architecture: keep workers fed) ---

@pytest.mark.parametrize("pipeline, refused", [("2", 1), ("1", 2)])
def test_a_busy_worker_takes_its_next_request_ahead(site, krait_server, pipeline, refused):
    # Four requests at once, one worker, one place in the wait queue: the worker runs one and,
    # with --worker-pipeline 2, holds the next in its socket; the queue takes one more; the
    # rest are refused.
    server = krait_server(site, "--workers", "1", "--max-queue", "1",
                          "--worker-pipeline", pipeline)
    socks = [send(server, "/x/slow?t=1") for _ in range(4)]
    statuses = sorted(HttpReader(s, timeout=10).read()[0] for s in socks)
    assert statuses == [200] * (4 - refused) + [503] * refused
    for s in socks:
        s.close()


def test_a_request_queued_behind_a_killed_one_goes_to_the_new_worker(site, krait_server,
                                                                     tmp_path):
    server = krait_server(site, "--workers", "1")
    marker = tmp_path / "pid"
    doomed = send(server, f"/x/slow?t=30&marker={marker}")
    # Sent once the first runs: with several loops, two connections reach the worker pool in
    # no set order, so "behind" must leave after "doomed" has started.
    pid = wait_pid_file(marker)
    behind = send(server, "/x/pid")
    os.kill(pid, signal.SIGKILL)
    assert HttpReader(doomed, timeout=10).read()[0] == 502
    status, _, body = HttpReader(behind, timeout=10).read()
    assert status == 200 and int(body) != pid  # not failed: it had not started


def test_a_request_queued_behind_an_overrun_is_served_not_timed_out(site, krait_server,
                                                                    tmp_path):
    server = krait_server(site, "--workers", "1", "--worker-timeout", "1")
    marker = tmp_path / "pid"
    looping = send(server, f"/x/loop?marker={marker}")
    pid = wait_pid_file(marker)  # then "behind" is surely behind it (see above)
    behind = send(server, "/x/pid")
    assert HttpReader(looping, timeout=10).read()[0] == 504
    status, _, body = HttpReader(behind, timeout=10).read()
    assert status == 200 and int(body) != pid


def test_each_queued_request_gets_the_whole_time_limit(site, krait_server):
    # 0.7 s each, one after the other on the only worker: the second ends 1.4 s after it was
    # sent, past the 1 s limit, but its own run took 0.7 s.
    server = krait_server(site, "--workers", "1", "--worker-timeout", "1")
    first = send(server, "/x/slow?t=0.7")
    second = send(server, "/x/slow?t=0.7")
    assert HttpReader(first, timeout=10).read()[::2] == (200, b"slept")
    assert HttpReader(second, timeout=10).read()[::2] == (200, b"slept")


def test_a_queued_request_whose_client_left_is_dropped(site, krait_server):
    server = krait_server(site, "--workers", "1")
    first = send(server, "/x/slow?t=0.3")
    gone_client = send(server, "/x/slow?t=0.3")
    gone_client.close()
    assert HttpReader(first, timeout=10).read()[::2] == (200, b"slept")
    for _ in range(5):
        assert get(server, "/x/hello")[::2] == (200, b"Hello world!")


# --- request bodies ------------------------------------------------------------------------

def test_body_over_the_spool_threshold_reaches_the_script(site, krait_server):
    server = krait_server(site, "--workers", "1")
    data = os.urandom(3 * 1024 * 1024 + 5)
    r = requests.post(server.url + "/x/body", data=data, timeout=20)
    got = r.json()
    assert got["len"] == len(data)
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["spooled"]                       # it came as a file
    spool = got["spooled"]
    wait_for(lambda: not os.path.exists(spool), what="the spool file to be removed")
    small = b"s" * (512 * 1024)
    got = requests.post(server.url + "/x/body", data=small, timeout=20).json()
    assert got["len"] == len(small) and got["spooled"] is None


def test_large_multipart_upload_is_streamed_from_the_spool(site, krait_server):
    server = krait_server(site, "--workers", "1")
    blob = os.urandom(5 * 1024 * 1024)
    r = requests.post(server.url + "/x/upload", data={"title": "big"},
                      files={"file": ("big;one.bin", blob, "application/octet-stream")},
                      timeout=30)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["spooled"] is True
    assert got["parts"] == [["title", None, 3, hashlib.sha256(b"big").hexdigest()],
                            ["file", "big;one.bin", len(blob), hashlib.sha256(blob).hexdigest()]]


def test_chunked_request_body(site, krait_server):
    server = krait_server(site, "--workers", "1")
    s = server.connect(timeout=10)
    try:
        s.sendall(b"POST /x/body HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n")
        status, _, body = HttpReader(s, timeout=10).read()
    finally:
        s.close()
    assert status == 200
    got = json.loads(body)
    assert got["len"] == 12 and got["sha256"] == hashlib.sha256(b"hello world!").hexdigest()
    assert got["spooled"] is None


def test_large_chunked_body_is_spooled(site, krait_server):
    server = krait_server(site, "--workers", "1")
    data = os.urandom(2 * 1024 * 1024)

    def chunks():
        for i in range(0, len(data), 100000):
            yield data[i:i + 100000]

    r = requests.post(server.url + "/x/body", data=chunks(), timeout=30)
    got = r.json()
    assert got["transfer_encoding"] == "chunked"
    assert got["len"] == len(data) and got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["spooled"]


def test_expect_100_continue(site, krait_server):
    server = krait_server(site, "--workers", "1")
    s = server.connect(timeout=10)
    try:
        s.sendall(b"POST /x/body HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            data = s.recv(4096)
            assert data
            interim += data
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello there")
        status, _, body = HttpReader(s, timeout=10).read()
    finally:
        s.close()
    assert status == 200
    assert json.loads(body)["sha256"] == hashlib.sha256(b"hello there").hexdigest()


# --- clients that go away or never read ------------------------------------------------------

def test_client_disconnecting_mid_request_does_not_block_the_worker(site, krait_server,
                                                                      tmp_path):
    server = krait_server(site, "--workers", "1")
    marker = tmp_path / "pid"
    s = send(server, f"/x/slow?t=0.5&marker={marker}")
    wait_pid_file(marker)
    s.close()                                   # gone while its script runs
    started = time.monotonic()
    assert get(server, "/x/hello")[::2] == (200, b"Hello world!")
    assert time.monotonic() - started < 5
    # Gone in the middle of sending a body: the worker never saw it.
    s = server.connect()
    s.sendall(b"POST /x/body HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
    s.close()
    started = time.monotonic()
    assert get(server, "/x/hello")[::2] == (200, b"Hello world!")
    assert time.monotonic() - started < 2


def test_client_that_never_reads_does_not_hold_the_worker(site, krait_server):
    server = krait_server(site, "--workers", "1")
    lazy = server.connect()
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lazy.sendall(b"GET /x/big HTTP/1.1\r\nHost: h\r\n\r\n")   # 20 MiB, never read
    time.sleep(0.3)
    for _ in range(5):
        assert get(server, "/x/hello")[::2] == (200, b"Hello world!")
    lazy.close()


def test_sigterm_waits_for_a_running_script(site, krait_server, tmp_path):
    server = krait_server(site, "--workers", "1")
    marker = tmp_path / "pid"
    s = send(server, f"/x/slow?t=1&marker={marker}")
    wait_pid_file(marker)
    assert server.stop() == 0
    raw = recv_all(s, timeout=10)
    s.close()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"slept")


# -- a streamed response to a client that does not read (backpressure) ----------------------------

STREAM_MIB = 96
BIG_STREAM = f'''\
import os
import krait


def chunks():
    with open(os.path.join(krait.site_root, "streamed"), "a") as f:
        block = b"s" * 65536
        for i in range({STREAM_MIB} * 16):
            yield block
            f.write("x")
            f.flush()


krait.response = krait.Response("HTTP/1.1", 200, [], chunks())
'''


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def stalled_stream(site: Path, krait_server) -> tuple[KraitProcess, socket.socket, Path]:  # type: ignore[no-untyped-def]
    """One worker streams STREAM_MIB MiB to a client that reads nothing; returns once the
    worker has stopped producing (it is blocked: the core stopped reading it)."""
    (site / "big.py").write_text(BIG_STREAM)
    progress = site / "streamed"
    server = krait_server(site, "--workers", "1")
    s = server.connect(timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /big.py HTTP/1.1\r\nHost: h\r\n\r\n")
    wait_for(lambda: progress.exists(), what="the stream to start")
    last = -1
    while True:  # bounded: the loop ends when two reads 0.5 s apart agree, or the stream ends
        size = progress.stat().st_size
        if size == last or size >= STREAM_MIB * 16:
            break
        last = size
        time.sleep(0.5)
    return server, s, progress


def test_a_stream_to_a_client_that_does_not_read_holds_its_worker_back(site, krait_server):
    # Without backpressure the core would buffer the whole 96 MiB for this client. With it,
    # what is in flight is the core's 1 MiB threshold plus the kernel's socket buffers.
    server, s, progress = stalled_stream(site, krait_server)
    produced = progress.stat().st_size
    assert produced < 16 * 16, f"the worker produced {produced} of {STREAM_MIB * 16} blocks"
    assert rss_kib(server.proc.pid) < 64 * 1024
    # Reading it all gets every byte, and the connection goes on with the next request.
    reader = HttpReader(s, timeout=30)
    status, headers, body = reader.read()
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert len(body) == STREAM_MIB << 20 and body.count(b"s") == len(body)
    s.sendall(b"GET /hello.py HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reader.read()[0] == 200
    s.close()


def test_a_client_that_leaves_a_held_back_stream_frees_its_worker(site, krait_server):
    server, s, progress = stalled_stream(site, krait_server)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # a reset: the rest of the stream is read from the worker and dropped
    status, _, body = get(server, "/hello.py", timeout=30)
    assert status == 200
    assert wait_for(lambda: progress.stat().st_size == STREAM_MIB * 16,
                    what="the worker to finish its stream")
    assert server.proc.poll() is None
