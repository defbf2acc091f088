"""The metrics listener (``--metrics``, ``config.metrics``) against real krait processes:
known traffic (static files, Python pages, 404s, a redirect, a WebSocket, TLS), then a
scrape parsed as Prometheus text (a parser here, strict about the format) and its values
checked against what was sent, with one loop and with three (the loops' counters must add
up). Worker restarts by cause (a SIGKILL, a timeout, max_requests, max_worker_memory, a
SIGHUP), /healthz during a drain, and the listener staying off the site's port.

A response is counted just after its last byte is sent, so a client can read it a moment
before the count moves: every check first waits (a bounded poll) until the totals are there,
then compares every value exactly."""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import websocket

from krait._metrics import MAX_CLIENTS
from tests.conftest import KraitProcess, raw_request, recv_all, write_site
from tests.integration.test_tls import pki  # noqa: F401 - the module's certificates fixture
from tests.integration.test_websockets import ECHO
from tests.integration.test_workers import wait_for

TIMEOUT = 10.0

# Holds its worker until the test creates the file "release" (bounded, so that a failing
# test never leaves a worker behind).
SLOW = '''\
import os
import time

import krait

open(os.path.join(krait.site_root, "started"), "w").close()
deadline = time.monotonic() + 30
while not os.path.exists(os.path.join(krait.site_root, "release")) and \\
        time.monotonic() < deadline:
    time.sleep(0.01)
krait.response = krait.Response(body="done")
'''

FILES: dict[str, str | bytes] = {
    "index.html": "<p>hello</p>\n",
    "docs/index.html": "<p>docs</p>\n",
    "hello.py": "import krait\nkrait.response = krait.Response(body='hi from python')\n",
    "pid.py": "import os\nimport krait\nkrait.response = krait.Response(body=str(os.getpid()))\n",
    "spin.py": "while True:\n    pass\n",
    "slow.py": SLOW,
    "ws/echo.py": ECHO,
}

INIT = '''\
from krait import config
config.routes = [
    config.Route("WEBSOCKET", url="/ws/echo", target="ws/echo.py"),
    config.Route(),
]
'''


def make_site(root: Path, init_extra: str = "") -> Path:
    return write_site(root, {**FILES, ".py/init.py": INIT + init_extra})


# -- the Prometheus text format (0.0.4) ----------------------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf"^({NAME})(?:\{{(.*)\}})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"')
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class Scrape:
    """One page of /metrics, parsed and checked: every sample belongs to a family whose
    ``# TYPE`` (and ``# HELP``) came first, no sample twice, counters end in ``_total``,
    histograms have monotone cumulative buckets ending at ``le="+Inf"`` that equal
    ``_count``."""

    def __init__(self, text: str) -> None:
        assert text.endswith("\n"), "the format ends every line with a newline"
        self.types: dict[str, str] = {}
        self.helps: dict[str, str] = {}
        self.samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        order: list[tuple[str, dict[str, str], float]] = []
        for line in text[:-1].split("\n"):
            if line.startswith("# HELP "):
                name, _, doc = line[7:].partition(" ")
                assert re.fullmatch(NAME, name) and doc and name not in self.helps, line
                self.helps[name] = doc
            elif line.startswith("# TYPE "):
                name, kind = line[7:].split(" ")
                assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
                assert name not in self.types, f"two TYPE lines for {name}"
                assert name in self.helps, f"HELP before TYPE for {name}"
                self.types[name] = kind
            else:
                assert not line.startswith("#") and line, f"unexpected line {line!r}"
                m = SAMPLE.match(line)
                assert m, f"not a sample: {line!r}"
                name, label_text, value_text = m.groups()
                labels: dict[str, str] = {}
                if label_text:
                    pos = 0
                    while pos < len(label_text):
                        lm = LABEL.match(label_text, pos)
                        assert lm, f"bad labels in {line!r}"
                        assert lm.group(1) not in labels, f"label twice in {line!r}"
                        labels[lm.group(1)] = lm.group(2)
                        pos = lm.end()
                        if pos < len(label_text):
                            assert label_text[pos] == ",", f"bad labels in {line!r}"
                            pos += 1
                family = self._family(name)
                assert family in self.types, f"{name}: no TYPE line before it"
                value = float(value_text)
                key = (name, tuple(sorted(labels.items())))
                assert key not in self.samples, f"sample twice: {line!r}"
                self.samples[key] = value
                order.append((name, labels, value))
        for name, kind in self.types.items():
            if kind == "counter":
                assert name.endswith("_total"), f"counter {name} must end in _total"
            if kind == "histogram":
                self._check_histogram(name, order)
        for (name, _), value in self.samples.items():
            if self.types.get(self._family(name)) == "counter":
                assert value >= 0 and value == int(value), f"{name} = {value}"

    def _family(self, name: str) -> str:
        for suffix in HISTOGRAM_SUFFIXES:
            base = name[:-len(suffix)]
            if name.endswith(suffix) and self.types.get(base) == "histogram":
                return base
        return name

    def _check_histogram(self, name: str, order: list[tuple[str, dict[str, str], float]]) -> None:
        buckets = [(labels["le"], v) for n, labels, v in order if n == name + "_bucket"]
        assert buckets and buckets[-1][0] == "+Inf", f"{name}: the last bucket is le=+Inf"
        bounds = [float(le) for le, _ in buckets]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), bounds
        counts = [v for _, v in buckets]
        assert all(counts[i] <= counts[i + 1] for i in range(len(counts) - 1)), name
        assert self.value(name + "_count") == counts[-1], f"{name}: _count != +Inf bucket"
        assert self.value(name + "_sum") >= 0

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    def buckets(self, name: str) -> list[tuple[float, float]]:
        return sorted((float(dict(k)["le"]), v) for (n, k), v in self.samples.items()
                      if n == name + "_bucket")

    def requests(self) -> dict[tuple[str, str], int]:
        """krait_requests_total by (kind, status class)."""
        return {(dict(k)["kind"], dict(k)["status_class"]): int(v)
                for (n, k), v in self.samples.items() if n == "krait_requests_total"}


def metrics_port(server: KraitProcess) -> int:
    m = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", server.log())
    assert m, server.log()
    return int(m.group(1))


def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    raw = raw_request(port, f"{method} {path} HTTP/1.1\r\nHost: m\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), raw[:200]
    return int(head.split()[1]), body.decode()


def scrape(port: int) -> Scrape:
    status, body = http_get(port, "/metrics")
    assert status == 200, body
    return Scrape(body)


def get_close(port: int, path: str) -> bytes:
    """One request on its own connection; everything the server sent."""
    return raw_request(port, f"GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
                       .encode())


def total(s: Scrape) -> int:
    return sum(s.requests().values())


# -- counts against the traffic -------------------------------------------------------------------

@pytest.mark.parametrize("loops", ["1", "3"])
def test_counts_match_the_traffic(tmp_path: Path, krait_server, loops: str) -> None:
    server = krait_server(make_site(tmp_path / "site"), "--workers", "2", "--loops", loops,
                          "--metrics", "127.0.0.1:0")
    mport = metrics_port(server)
    assert mport != server.port
    first = scrape(mport)
    assert total(first) == 0 and first.value("krait_connections_accepted_total") == 0
    assert first.value("krait_request_duration_seconds_count") == 0
    assert first.value("krait_workers_idle") == 2 and first.value("krait_workers_busy") == 0

    n_static, n_python, n_missing = 20, 7, 5
    sent = received = 0
    answers: list[bytes] = []
    for path in (["/index.html"] * n_static + ["/hello.py"] * n_python +
                 ["/missing.html"] * n_missing + ["/docs"]):
        request = f"GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n".encode()
        answer = raw_request(server.port, request)
        sent += len(request)
        received += len(answer)
        answers.append(answer)
    statuses = [int(a.split()[1]) for a in answers]
    assert statuses == [200] * n_static + [200] * n_python + [404] * n_missing + [301]
    expected = {("static", "2xx"): n_static, ("python", "2xx"): n_python,
                ("static", "4xx"): n_missing, ("static", "3xx"): 1}
    n_http = n_static + n_python + n_missing + 1
    s = wait_for(lambda: (x := scrape(mport)) and total(x) >= n_http and x, what="the counts")
    # Bytes: exactly what went over those connections (plain HTTP, so no TLS overhead).
    wait_for(lambda: scrape(mport).value("krait_sent_bytes_total") >= received, what="bytes out")
    s = scrape(mport)
    assert s.value("krait_received_bytes_total") == sent
    assert s.value("krait_sent_bytes_total") == received
    assert s.value("krait_connections_accepted_total") == n_http

    # A WebSocket: the handshake (101), k messages each way, open while it is.
    k = 4
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws/echo", timeout=TIMEOUT)
    try:
        for i in range(k):
            ws.send(f"message {i}")
            assert ws.recv() == f"message {i}"
        s = wait_for(lambda: (x := scrape(mport)) and
                     x.value("krait_websocket_messages_total", direction="out") == k and x,
                     what="the echoes counted")
        assert s.value("krait_websocket_connections_open") == 1
        assert s.value("krait_connections_open") == 1
        assert s.value("krait_websocket_messages_total", direction="in") == k
    finally:
        ws.close()
    expected["websocket", "1xx"] = 1
    s = wait_for(lambda: (x := scrape(mport)) and
                 x.value("krait_websocket_connections_open") == 0 and
                 x.value("krait_connections_open") == 0 and x, what="the WebSocket closed")

    counted = s.requests()
    assert len(counted) == 15  # every kind and class is listed, zero or not
    assert {key: v for key, v in counted.items() if v} == expected
    n = sum(expected.values())
    assert s.value("krait_request_duration_seconds_count") == n
    buckets = s.buckets("krait_request_duration_seconds")
    assert buckets[0] == (0.0005, buckets[0][1]) and buckets[-1] == (math.inf, n)
    assert 0 < s.value("krait_request_duration_seconds_sum")
    assert s.value("krait_websocket_messages_total", direction="in") == k
    assert s.value("krait_websocket_messages_total", direction="out") == k
    assert s.value("krait_connections_accepted_total") == n_http + 1
    assert s.value("krait_tls_handshakes_total") == 0
    assert s.value("krait_tls_handshake_failures_total") == 0
    assert s.value("krait_workers_idle") == 2 and s.value("krait_workers_busy") == 0
    assert s.value("krait_queue_depth") == 0 and s.value("krait_draining") == 0
    assert all(s.value("krait_worker_restarts_total", cause=c) == 0
               for c in ("crash", "timeout", "recycle", "memory", "reload"))
    assert s.types["krait_request_duration_seconds"] == "histogram"
    assert s.types["krait_requests_total"] == "counter"
    assert s.types["krait_connections_open"] == "gauge"

    # The site's port serves no metrics; the metrics port serves nothing else.
    assert get_close(server.port, "/metrics").startswith(b"HTTP/1.1 404 ")
    assert http_get(mport, "/healthz") == (200, "ok\n")
    assert http_get(mport, "/index.html")[0] == 404
    assert http_get(mport, "/metrics", method="POST")[0] == 405
    head = raw_request(mport, b"HEAD /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    assert b"text/plain; version=0.0.4" in head
    # Those scrapes were not counted as the site's traffic.
    after = wait_for(lambda: (x := scrape(mport)) and total(x) == n + 1 and x, what="the 404")
    assert after.requests()["static", "4xx"] == n_missing + 1


def test_queue_depth_and_busy_workers(tmp_path: Path, krait_server) -> None:
    """One worker held by a slow page, two more requests waiting for it."""
    site = make_site(tmp_path / "site")
    server = krait_server(site, "--workers", "1", "--worker-pipeline", "1",
                          "--metrics", "127.0.0.1:0")
    mport = metrics_port(server)
    socks = []
    try:
        for _ in range(3):
            s = server.connect(timeout=TIMEOUT)
            s.sendall(b"GET /slow.py HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
            socks.append(s)
        s = wait_for(lambda: (x := scrape(mport)) and x.value("krait_queue_depth") == 2 and x,
                     what="two requests waiting")
        assert s.value("krait_workers_busy") == 1 and s.value("krait_workers_idle") == 0
        (site / "release").touch()
        for sock in socks:
            assert recv_all(sock, TIMEOUT).endswith(b"done")
    finally:
        for sock in socks:
            sock.close()
    s = wait_for(lambda: (x := scrape(mport)) and x.value("krait_queue_depth") == 0 and
                 x.value("krait_workers_idle") == 1 and x, what="an idle worker again")
    assert s.requests()["python", "2xx"] == 3


# -- worker restarts ------------------------------------------------------------------------------

def restarts(s: Scrape) -> dict[str, int]:
    return {dict(k)["cause"]: int(v) for (n, k), v in s.samples.items()
            if n == "krait_worker_restarts_total"}


def pid_of_worker(server: KraitProcess) -> int:
    answer = get_close(server.port, "/pid.py")
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    return int(answer.rpartition(b"\r\n\r\n")[2])


def test_a_killed_worker_is_a_crash_and_an_overrun_a_timeout(tmp_path: Path,
                                                            krait_server) -> None:
    server = krait_server(make_site(tmp_path / "site"), "--workers", "1",
                          "--worker-timeout", "1", "--metrics", "127.0.0.1:0")
    mport = metrics_port(server)
    pid = pid_of_worker(server)
    os.kill(pid, signal.SIGKILL)
    s = wait_for(lambda: (x := scrape(mport)) and restarts(x)["crash"] == 1 and x,
                 what="a crash counted")
    assert restarts(s) == {"crash": 1, "timeout": 0, "recycle": 0, "memory": 0, "reload": 0}
    assert wait_for(lambda: pid_of_worker(server) != pid, what="a new worker")

    answer = get_close(server.port, "/spin.py")
    assert answer.startswith(b"HTTP/1.1 504 "), answer[:100]
    s = wait_for(lambda: (x := scrape(mport)) and restarts(x)["timeout"] == 1 and x,
                 what="a timeout counted")
    assert restarts(s) == {"crash": 1, "timeout": 1, "recycle": 0, "memory": 0, "reload": 0}
    assert "overran worker_timeout" in server.log()
    assert s.requests()["python", "5xx"] == 1  # the 504


def test_recycling_and_reload_are_counted(tmp_path: Path, krait_server) -> None:
    server = krait_server(make_site(tmp_path / "site"), "--workers", "1",
                          "--max-requests", "3", "--metrics", "127.0.0.1:0")
    mport = metrics_port(server)
    first = pid_of_worker(server)
    for _ in range(2):
        assert pid_of_worker(server) == first
    s = wait_for(lambda: (x := scrape(mport)) and restarts(x)["recycle"] == 1 and x,
                 what="a recycle counted")
    assert restarts(s) == {"crash": 0, "timeout": 0, "recycle": 1, "memory": 0, "reload": 0}
    wait_for(lambda: pid_of_worker(server) != first, what="the replacement serving")
    server.proc.send_signal(signal.SIGHUP)
    s = wait_for(lambda: (x := scrape(mport)) and restarts(x)["reload"] == 1 and x,
                 what="a reload counted")
    assert restarts(s)["crash"] == 0 and restarts(s)["timeout"] == 0


def test_memory_recycling_is_counted(tmp_path: Path, krait_server) -> None:
    # 1 MiB: every Python worker is above it after its first request.
    server = krait_server(make_site(tmp_path / "site"), "--workers", "1",
                          "--max-worker-memory", "1", "--metrics", "127.0.0.1:0")
    mport = metrics_port(server)
    pid_of_worker(server)
    s = wait_for(lambda: (x := scrape(mport)) and restarts(x)["memory"] == 1 and x,
                 what="a memory recycle counted")
    assert restarts(s) == {"crash": 0, "timeout": 0, "recycle": 0, "memory": 1, "reload": 0}


# -- TLS ------------------------------------------------------------------------------------------

def test_tls_handshakes_and_failures(tmp_path: Path, pki: Path, krait_server) -> None:  # noqa: F811
    site = make_site(tmp_path / "site",
                     f"config.ssl_certificate_path = {str(pki / 'server.pem')!r}\n"
                     f"config.ssl_private_key_path = {str(pki / 'server.key')!r}\n")
    server = krait_server(site, "--https-port", "0", "--metrics", "127.0.0.1:0")
    mport = metrics_port(server)
    m = re.search(r"https://127\.0\.0\.1:(\d+)/", server.log())
    assert m, server.log()
    https = int(m.group(1))
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", https), timeout=TIMEOUT) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /index.html HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
            assert recv_all(tls, TIMEOUT).startswith(b"HTTP/1.1 200 ")
    # Plain HTTP on the TLS port: a failed handshake (answered with a readable 400).
    assert b"speaks HTTPS" in raw_request(https, b"GET / HTTP/1.1\r\nHost: m\r\n\r\n")
    # A client that connects and leaves without a byte is no failure.
    socket.create_connection(("127.0.0.1", https), timeout=TIMEOUT).close()
    s = wait_for(lambda: (x := scrape(mport)) and
                 x.value("krait_tls_handshake_failures_total") == 1 and
                 x.value("krait_connections_open") == 0 and x, what="the failure counted")
    assert s.value("krait_tls_handshakes_total") == 3
    assert s.requests()["static", "2xx"] == 3


# -- /healthz and stopping ------------------------------------------------------------------------

def test_healthz_is_503_while_draining(tmp_path: Path, krait_server) -> None:
    # Set in init.py this time (config.metrics), not on the command line.
    site = make_site(tmp_path / "site", 'config.metrics = "127.0.0.1:0"\n')
    server = krait_server(site, "--workers", "1")
    mport = metrics_port(server)
    assert http_get(mport, "/healthz") == (200, "ok\n")
    sock = server.connect(timeout=TIMEOUT)
    try:
        sock.sendall(b"GET /slow.py HTTP/1.1\r\nHost: m\r\n\r\n")
        wait_for(lambda: (site / "started").exists(), what="the slow page to start")
        server.proc.send_signal(signal.SIGTERM)
        # The in-flight request holds the drain open until the test releases it.
        status, body = wait_for(lambda: (x := http_get(mport, "/healthz")) and
                                x[0] == 503 and x, what="/healthz to answer 503")
        assert body == "draining\n"
        assert scrape(mport).value("krait_draining") == 1
        assert server.proc.poll() is None
        (site / "release").touch()
        assert recv_all(sock, TIMEOUT).endswith(b"done")
    finally:
        sock.close()
    assert server.proc.wait(timeout=TIMEOUT) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", mport), timeout=TIMEOUT).close()


# -- refusals -------------------------------------------------------------------------------------

def run_krait(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "krait", str(site), "--workers", "1",
                           "--access-log", "off", *args],
                          capture_output=True, text=True, timeout=60)


def test_the_sites_port_is_refused_for_metrics(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = run_krait(make_site(tmp_path / "site"), "--host", "127.0.0.1", "--port", str(port),
                     "--metrics", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert "is the site's port" in done.stderr


@pytest.mark.parametrize("spec", ["9100", "::1:9100", "127.0.0.1:99999", "host:"])
def test_bad_metrics_addresses_are_refused(tmp_path: Path, spec: str) -> None:
    done = run_krait(make_site(tmp_path / "cli"), "--port", "0", "--metrics", spec)
    assert done.returncode == 2 and "--metrics" in done.stderr
    done = run_krait(make_site(tmp_path / "cfg", f"config.metrics = {spec!r}\n"), "--port", "0")
    assert done.returncode == 1 and "krait.config.metrics" in done.stderr


# -- the listener's bounds ------------------------------------------------------------------------

def test_the_listener_is_bounded(tmp_path: Path, krait_server) -> None:
    server = krait_server(make_site(tmp_path / "site"), "--workers", "1",
                          "--metrics", "127.0.0.1:0")
    mport = metrics_port(server)
    huge = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 9000
    assert raw_request(mport, huge).startswith(b"HTTP/1.1 431 ")
    assert raw_request(mport, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    # Connections that send nothing never keep a health check out: past MAX_CLIENTS of them
    # a newcomer replaces the oldest, and each is closed at its deadline anyway.
    idle = [socket.create_connection(("127.0.0.1", mport), timeout=TIMEOUT)
            for _ in range(MAX_CLIENTS + 20)]
    try:
        for _ in range(5):
            assert raw_request(mport, b"GET /healthz HTTP/1.1\r\n\r\n").startswith(
                b"HTTP/1.1 200 ")
        # The oldest were dropped for the newcomers, at once, unanswered.
        assert recv_all(idle[0], TIMEOUT) == b""
        # The newest are closed at their deadline (5 s to send a head), unanswered too.
        assert recv_all(idle[-1], 15) == b""
    finally:
        for s in idle:
            s.close()
