"""Worker recycling (``config.max_requests``, ``--max-requests``, ``--max-requests-jitter``)
through a real krait: a worker that has answered its requests is replaced by a fresh one while
requests keep coming, one after another and many at once (the core hands a busy worker up to
``worker_pipeline`` requests, which wait in its socket); every request is answered 200, the
workers' pids change, the old workers exit, and nothing is logged as a crash — while a worker
that really dies is."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import KraitProcess, write_site
from tests.integration.test_workers import children, gone, wait_for

# The worker's pid; a short sleep keeps the worker busy long enough for requests to queue
# behind the running one (in its socket) and for replacements to load meanwhile.
PID = '''\
import os, time
import krait
time.sleep(float(krait.request.query.get("t", "0.005")))
krait.response = krait.Response(body=str(os.getpid()))
'''

RECYCLED = re.compile(r"worker (\d+) recycled: it reached max_requests \((\d+) requests "
                      r"answered\); worker (\d+) replaces it")
OVER_MEMORY = re.compile(r"worker (\d+) recycled: its memory \((\d+) MiB\) is above "
                         r"max_worker_memory \(80 MiB\) after (\d+) requests; worker (\d+) "
                         r"replaces it")
CRASH = "ended unexpectedly"


# Each request keeps 30 MiB more (written, so resident) in a module that stays loaded.
GROW = '''\
import os
import krait
import store
store.kept.append(b"x" * (30 << 20))
krait.response = krait.Response(body=str(os.getpid()))
'''


def make_site(root: Path, init: str = "from krait import config\n") -> Path:
    return write_site(root, {".py/init.py": init, ".py/store.py": "kept = []\n", "pid.py": PID,
                             "grow.py": GROW})


def workers_of(server: KraitProcess) -> set[int]:
    return children(server.proc.pid)


def recycled(server: KraitProcess) -> list[tuple[int, int, int]]:
    """(old pid, requests it had answered when it asked, new pid) per recycling logged."""
    return [(int(a), int(n), int(b)) for a, n, b in RECYCLED.findall(server.log())]


def assert_clean(server: KraitProcess) -> None:
    """Nothing failed: no crash line, no traceback, no 5xx in the access log."""
    log = server.log()
    assert CRASH not in log, log
    assert "Traceback" not in log, log
    assert not re.search(r'" 5\d\d ', server.access_log()), server.access_log()


def settle(server: KraitProcess, count: int) -> None:
    """Wait until the recyclings started have finished: ``count`` workers, the same as the
    core's (the replacements of the last ones may still be loading when the traffic ends)."""
    wait_for(lambda: len(workers_of(server)) == count, timeout=30,
             what=f"{count} workers again")


def test_sequential_requests_are_all_answered_while_workers_are_recycled(tmp_path, krait_server):
    site = make_site(tmp_path / "site", "from krait import config\nconfig.max_requests = 5\n")
    server = krait_server(site, "--workers", "2")
    first = workers_of(server)
    assert len(first) == 2
    pids = []
    with requests.Session() as http:
        for _ in range(200):
            r = http.get(f"{server.url}/pid", timeout=15)
            assert r.status_code == 200, r.text
            pids.append(int(r.text))
    # Fresh workers answered some of them: the first ones did not answer all 200.
    assert set(pids) - first, set(pids)
    done = recycled(server)
    assert done, server.log()
    # Without jitter, each asked after exactly max_requests (it then serves on until its
    # replacement has loaded the site).
    assert {n for _, n, _ in done} == {5}
    settle(server, 2)
    for old, _, _ in done:
        wait_for(lambda old=old: gone(old), what=f"recycled worker {old} to exit")
    assert_clean(server)
    assert server.stop() == 0


def concurrent_round(url: str) -> tuple[list[int], set[int]]:
    """200 requests from 40 keep-alive clients at once: their statuses and the pids that
    answered them."""
    statuses: list[int] = []
    pids: set[int] = set()
    errors: list[BaseException] = []
    start = threading.Barrier(40)

    def client() -> None:
        try:
            with requests.Session() as http:
                start.wait(timeout=30)
                for _ in range(5):
                    r = http.get(f"{url}/pid?t=0.02", timeout=30)
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        pids.add(int(r.text))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return statuses, pids


def test_concurrent_pipelined_requests_are_all_answered_while_workers_are_recycled(
        tmp_path, krait_server):
    site = make_site(tmp_path / "site")
    # Up to 8 requests wait in a busy worker's socket: a recycled worker must answer them all
    # before it goes (the core 502s the one a worker that leaves was running).
    server = krait_server(site, "--workers", "2", "--max-requests", "5",
                          "--worker-pipeline", "8")
    first = workers_of(server)
    # A replacement loads the site while its worker serves on; on a busy machine that can
    # outlast one round, so rounds go on until one has been answered by a new worker too.
    for _ in range(10):
        statuses, pids = concurrent_round(server.url)
        assert statuses == [200] * 200, sorted(set(statuses))
        if pids - first:
            break
    assert pids - first, server.log()
    assert recycled(server), server.log()
    settle(server, 2)
    assert_clean(server)
    assert server.stop() == 0


def test_jitter_spreads_when_workers_are_recycled(tmp_path, krait_server):
    site = make_site(tmp_path / "site")
    server = krait_server(site, "--workers", "2", "--max-requests", "5",
                          "--max-requests-jitter", "20")
    with requests.Session() as http:
        for _ in range(300):
            assert http.get(f"{server.url}/pid", timeout=15).status_code == 200
    settle(server, 2)
    counts = [n for _, n, _ in recycled(server)]
    assert len(counts) >= 3, server.log()
    assert all(5 <= n <= 25 for n in counts), counts
    # 21 possible limits per worker: equal draws for every one of them are (1/21)^(k-1).
    assert len(set(counts)) > 1, counts
    assert_clean(server)
    assert server.stop() == 0


def test_without_max_requests_the_workers_stay(tmp_path, krait_server):
    server = krait_server(make_site(tmp_path / "site"), "--workers", "2")
    first = workers_of(server)
    with requests.Session() as http:
        pids = {int(http.get(f"{server.url}/pid", timeout=15).text) for _ in range(100)}
    assert pids <= first
    assert workers_of(server) == first
    assert not recycled(server)


def test_a_worker_above_max_worker_memory_is_recycled(tmp_path, krait_server):
    server = krait_server(make_site(tmp_path / "site"), "--workers", "1",
                          "--max-worker-memory", "80")
    (first,) = workers_of(server)
    pids = []
    with requests.Session() as http:
        # 30 MiB more each: above 80 MiB after the second or third; the worker serves on
        # until its replacement has loaded, and pid.py requests meanwhile are answered too.
        for _ in range(40):
            for path in ("/grow", "/pid", "/pid"):
                r = http.get(f"{server.url}{path}", timeout=15)
                assert r.status_code == 200, r.text
                pids.append(int(r.text))
            if pids[-1] != first:
                break
            time.sleep(0.2)
    assert pids[-1] != first, server.log()
    (old, rss, served, new), = OVER_MEMORY.findall(server.log())
    assert int(old) == first and int(new) == pids[-1]
    assert int(rss) > 80 and 2 <= int(served) <= 3 * 40
    wait_for(lambda: gone(first), what="the recycled worker to exit")
    assert workers_of(server) == {pids[-1]}
    assert_clean(server)
    assert server.stop() == 0


def test_a_worker_that_dies_is_logged_as_a_crash(tmp_path, krait_server):
    """The line the tests above look for is there when a worker really ends."""
    server = krait_server(make_site(tmp_path / "site"), "--workers", "1")
    (pid,) = workers_of(server)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: CRASH in server.log(), what="the crash line")
    assert re.search(rf"worker {pid} ended unexpectedly \((killed by SIGKILL|still running "
                     r"when the core let it go: killed)\); starting a new one", server.log())
    assert requests.get(f"{server.url}/pid", timeout=15).status_code == 200


# init.py as a replacement worker loads it once the test has written the marker file.
SLOW_OR_BROKEN_INIT = '''\
import os, sys, time
from krait import config
config.max_requests = 3
marker = os.path.join(os.path.dirname(__file__), "marker")
if "--fd" in sys.argv and os.path.exists(marker):
    how = open(marker).read()
    if how.startswith("slow"):
        open(marker + ".read", "w").close()
        time.sleep(float(how[5:] or 30))
    else:
        raise RuntimeError("the replacement cannot load")
'''


def site_processes(site: Path) -> set[int]:
    """Every process whose command line names the site (workers, replacements)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if str(site).encode() in f.read():
                        found.add(int(entry))
            except OSError:
                pass
    return found


def test_a_replacement_that_cannot_load_leaves_the_old_worker_serving(tmp_path, krait_server):
    site = make_site(tmp_path / "site", SLOW_OR_BROKEN_INIT)
    server = krait_server(site, "--workers", "1")
    (first,) = workers_of(server)
    (site / ".py" / "marker").write_text("broken")
    with requests.Session() as http:
        for _ in range(3):
            assert http.get(f"{server.url}/pid", timeout=15).text == str(first)
        wait_for(lambda: "could not load the site" in server.log(), timeout=30,
                 what="the failed replacement")
        # It asks again after as many requests more; still the same worker, still 200.
        for _ in range(10):
            r = http.get(f"{server.url}/pid", timeout=15)
            assert r.status_code == 200 and r.text == str(first)
    log = server.log()
    assert f"worker {first} is due for recycling, but its replacement could not load the " \
           "site; it goes on serving" in log and "RuntimeError: the replacement cannot load" in log
    assert not recycled(server) and CRASH not in log
    assert server.stop() == 0


def test_stopping_while_a_replacement_loads_leaves_no_process(tmp_path, krait_server):
    site = make_site(tmp_path / "site", SLOW_OR_BROKEN_INIT)
    server = krait_server(site, "--workers", "1")
    (first,) = workers_of(server)
    (site / ".py" / "marker").write_text("slow")
    with requests.Session() as http:
        for _ in range(3):
            assert http.get(f"{server.url}/pid", timeout=15).status_code == 200
    wait_for(lambda: len(workers_of(server)) == 2, what="the replacement to start")
    assert server.stop() == 0
    wait_for(lambda: not site_processes(site), timeout=10,
             what="no worker or replacement left")


@pytest.mark.parametrize("first_ready", ["replacement", "reload"])
def test_a_reload_while_a_replacement_loads_leaves_one_generation(tmp_path, krait_server,
                                                                   first_ready):
    site = make_site(tmp_path / "site", SLOW_OR_BROKEN_INIT)
    server = krait_server(site, "--workers", "1")
    (first,) = workers_of(server)
    marker = site / ".py" / "marker"
    marker.write_text("slow:3")
    with requests.Session() as http:
        for _ in range(3):
            assert http.get(f"{server.url}/pid", timeout=15).status_code == 200
        wait_for(lambda: len(workers_of(server)) == 2, what="the replacement to start")
        wait_for((site / ".py" / "marker.read").exists, what="the replacement to read it")
        if first_ready == "reload":
            marker.write_text("slow:0")  # the reload's worker loads at once
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded: 1 new worker" in server.log(), timeout=30,
                 what="the reload")
        # Whichever finished loading first, one worker is left: the reload's. A replacement
        # ready after the reload retired its worker is discarded, not installed.
        settle(server, 1)
        assert bool(recycled(server)) == (first_ready == "replacement"), server.log()
        (last,) = workers_of(server)
        assert last != first
        for _ in range(5):
            r = http.get(f"{server.url}/pid", timeout=15)
            assert r.status_code == 200 and r.text == str(last)
    assert_clean(server)
    assert server.stop() == 0
