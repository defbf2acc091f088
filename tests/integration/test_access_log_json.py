"""The access log as JSON lines (``--access-log-format json``, ``config.access_log_format``)
through a real krait: the fields of static, Python, 404 and HEAD answers, hostile bytes in the
request line and headers, cut fields, HTTPS, several loops, SIGUSR1 and the settings.

Run with KRAIT_LOOPS=3 and KRAIT_LOOPS=1 (the loop count comes from the environment unless a
test sets --loops)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import HttpReader, KraitProcess, write_site
from tests.integration.test_loops import _loop_line
from tests.integration.test_sockets import in_parallel, wait_for
from tests.integration.test_tls import _https_port, pki  # noqa: F401 - the fixture
from tests.integration.test_tls import _site as tls_site

#: Every line has exactly these keys, in this order.
KEYS = ["time", "remote", "peer", "method", "path", "version", "host", "referer", "ua", "tls", "id",
        "status", "bytes", "duration", "loop", "worker", "worker_pid", "truncated"]
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
#: A whole line's bound (KRAIT__LOGJSON_HEAD_MAX + KRAIT__LOGJSON_TAIL_MAX).
LINE_MAX = 2176 + 320

PAGE = ("import krait, os\n"
        "krait.response = krait.Response(body='%d %s' % (os.getpid(), "
        "krait.request.request_id))\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site", {"a.txt": "static a\n", "index.html": "hello\n",
                                          "page.py": PAGE})


def loops_env() -> int:
    return int(os.environ.get("KRAIT_LOOPS") or os.cpu_count() or 1)


def parse(raw: bytes) -> list[dict[str, Any]]:
    """Every line of a log: strict UTF-8, one JSON object with the keys in order, within the
    bound, and each value of its type."""
    out = []
    assert raw.endswith(b"\n") or not raw
    for line in raw.split(b"\n")[:-1]:
        assert len(line) + 1 <= LINE_MAX, line[:200]
        rec = json.loads(line.decode("utf-8"))  # strict: the line is valid UTF-8
        assert list(rec) == KEYS, rec
        assert TIME.match(rec["time"]), rec
        for key in ("status", "bytes", "loop"):
            assert type(rec[key]) is int, rec
        assert type(rec["duration"]) is float and rec["duration"] >= 0, rec
        assert type(rec["truncated"]) is bool, rec
        for key in ("remote", "peer", "method", "path", "version", "host", "referer", "ua", "tls",
                    "id"):
            assert rec[key] is None or type(rec[key]) is str, rec
        assert (rec["worker"] is None) == (rec["worker_pid"] is None), rec
        out.append(rec)
    return out


def wait_lines(server: KraitProcess, n: int) -> list[dict[str, Any]]:
    """The log once it holds n lines (each loop writes its lines at the end of a turn)."""
    wait_for(lambda: server.access_path.exists() and
             server.access_path.read_bytes().count(b"\n") >= n, what=f"{n} log lines")
    return parse(server.access_path.read_bytes())


def one(recs: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    """The one record with these values (lines of different loops may come in any order)."""
    found = [r for r in recs if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, recs)
    return found[0]


def original(value: str) -> bytes:
    """The bytes a client sent, from a logged value: \\xHH is byte HH (a backslash itself was
    logged as \\x5c), everything else is UTF-8."""
    return re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes.fromhex(m.group(1).decode()),
                  value.encode("utf-8"))


def exchange(server: KraitProcess, data: bytes, head: bool = False) -> tuple[int, dict, bytes]:
    with server.connect() as s:
        s.sendall(data)
        return HttpReader(s).read(head_request=head)


def test_static_python_404_and_head(site: Path, krait_server) -> None:  # noqa: ANN001
    server = krait_server(site, "--access-log-format", "json", "--workers", "1")
    ua, ref = "tester/1.0 (json)", "http://example.org/from"
    with server.connect() as s:
        r = HttpReader(s)
        for method, target in [("GET", "/a.txt"), ("GET", "/page.py?x=1"), ("GET", "/missing"),
                               ("HEAD", "/a.txt")]:
            s.sendall(f"{method} {target} HTTP/1.1\r\nHost: site.test\r\nUser-Agent: {ua}\r\n"
                      f"Referer: {ref}\r\n\r\n".encode())
            status, headers, body = r.read(head_request=method == "HEAD")
            if target.startswith("/page.py"):
                page_body = body
                pid, rid = body.decode().split()
                assert headers["x-request-id"] == rid
    recs = wait_lines(server, 4)
    static, head = one(recs, path="/a.txt", method="GET"), one(recs, method="HEAD")
    page, missing = one(recs, path="/page.py?x=1"), one(recs, path="/missing")
    loops = loops_env()
    for rec in (static, page, missing, head):
        assert rec["remote"] == "127.0.0.1" and rec["version"] == "HTTP/1.1", rec
        assert rec["host"] == "site.test" and rec["ua"] == ua and rec["referer"] == ref, rec
        assert rec["tls"] is None and rec["truncated"] is False, rec
        assert 0 <= rec["loop"] < loops, rec
    assert (static["method"], static["path"], static["status"], static["bytes"]) == \
        ("GET", "/a.txt", 200, len("static a\n"))
    assert static["id"] is None and static["worker"] is None and static["worker_pid"] is None
    # A Python page: the worker that ran it, the id it sent, on the hub (loop 0).
    assert (page["status"], page["bytes"]) == (200, len(page_body))
    assert page["worker_pid"] == int(pid) and page["id"] == rid, page
    assert type(page["worker"]) is int and page["worker"] >= 0 and page["loop"] == 0, page
    assert (missing["path"], missing["status"], missing["worker"]) == ("/missing", 404, None)
    assert (head["method"], head["status"], head["bytes"]) == ("HEAD", 200, 0)


def test_hostile_bytes_give_valid_lines(site: Path, krait_server) -> None:  # noqa: ANN001
    server = krait_server(site, "--access-log-format", "json", "--workers", "1")
    # Quotes, a backslash, %00, bytes of no UTF-8 sequence, a surrogate, C1 and C0 controls,
    # a client's own "\x41": in the target (answered 400 by the core, the line keeps it) and
    # in a Python page's query, the user agent and the referer (answered 200).
    target = b'/q"b\\c%00\xff\xc3(\xed\xa0\x80\xc3\xa9'
    agent = b'"\\\t\xfe\xed\xa0\x80\xc3\xa9\xc2\x9b \\x41'
    referer = b'\xf4\x90\x80\x80 "q"'
    query = b'/page.py?a="\\%00\x80\xff'
    assert exchange(server, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 400
    assert exchange(server, b"GET /a.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: " + agent +
                    b"\r\nReferer: " + referer + b"\r\n\r\n")[0] == 200
    assert exchange(server, b"GET " + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
    # A control byte in the target: 400 before a request line is known, so no method or path.
    assert exchange(server, b"GET /q\x01\x1b[31m HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 400
    recs = wait_lines(server, 4)
    bad = one(recs, status=400, method="GET")
    ctl = one(recs, status=400, method=None)
    hdrs = one(recs, status=200, worker=None)
    page = [r for r in recs if r["worker"] is not None][0]
    assert (bad["status"], original(bad["path"])) == (400, target), bad
    assert "\\x5c" in bad["path"] and '"' in bad["path"], bad  # a backslash is \x5c
    assert original(hdrs["ua"]) == agent and original(hdrs["referer"]) == referer, hdrs
    assert "\t" in hdrs["ua"] and "\u009b" in hdrs["ua"], hdrs  # as \u0009 and \u009b
    assert original(page["path"]) == query and page["id"] is not None, page
    assert ctl["status"] == 400 and ctl["method"] is None and ctl["path"] is None, ctl
    raw = server.access_path.read_bytes()
    assert not re.search(rb"[\x00-\x1f\x7f]", raw.replace(b"\n", b"")), "a raw control byte"
    assert b"\xc2\x9b" not in raw, "a raw C1 control"


def test_long_fields_are_cut_and_flagged(site: Path, krait_server) -> None:  # noqa: ANN001
    server = krait_server(site, "--access-log-format", "json", "--workers", "1")
    path = b"/a.txt?" + b'"\\\xff' * 1500
    agent = b"\xe2\x82\xac" * 2000  # valid UTF-8, 6000 bytes
    status, _, _ = exchange(server, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nUser-Agent: " +
                            agent + b"\r\n\r\n")
    assert status == 200
    assert exchange(server, b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
    recs = wait_lines(server, 2)
    long, short = one(recs, truncated=True), one(recs, truncated=False)
    assert long["truncated"] is True and short["truncated"] is False
    cut_path, cut_agent = original(long["path"]), original(long["ua"])
    assert 0 < len(cut_path) < len(path) and path.startswith(cut_path), long
    assert 0 < len(cut_agent) < len(agent) and agent.startswith(cut_agent), long
    assert len(cut_agent) % 3 == 0, "a UTF-8 sequence cut in two"


def test_https_has_the_tls_version(tmp_path: Path, pki: Path, krait_server) -> None:  # noqa: ANN001, F811
    server = krait_server(tls_site(tmp_path / "s", pki), "--https-port", "0",
                          "--access-log-format", "json", "--workers", "1")
    base = f"https://localhost:{_https_port(server)}"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", _https_port(server)), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /index.html?v12 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert HttpReader(s).read()[0] == 200
    assert requests.get(base + "/index.html", verify=str(pki / "ca.pem")).status_code == 200
    assert requests.get(base + "/hello", verify=str(pki / "ca.pem")).text == "dynamic https"
    assert requests.get(server.url + "/hello?plain").text == "dynamic http"
    recs = wait_lines(server, 4)
    v12, static = one(recs, path="/index.html?v12"), one(recs, path="/index.html")
    page, plain = one(recs, path="/hello"), one(recs, path="/hello?plain")
    assert v12["tls"] == "TLSv1.2", v12
    assert static["tls"] == "TLSv1.3" and page["tls"] == "TLSv1.3", (static, page)
    assert page["worker_pid"] is not None and page["id"] is not None, page
    assert plain["tls"] is None, plain


WS_INIT = ("from krait import config\n"
           "config.routes = [config.Route('WEBSOCKET', url='/ws', target='ws.py'), "
           "config.Route()]\n")
WS_ECHO = ("import krait\n"
           "from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse\n"
           "class Echo(WebsocketsCtrlBase):\n"
           "    def on_in_message(self, message):\n"
           "        self.push_out_message(message)\n"
           "krait.websockets.response = WebsocketsResponse(Echo())\n")


def test_websocket_handshake_and_request_ids(site: Path, krait_server) -> None:  # noqa: ANN001
    """A 101 has its worker and the worker's id; a trusted proxy's id is the line's, and a
    value the log must not take (a quote in it) is replaced by the worker's own, as in the
    header."""
    write_site(site, {".py/init.py": WS_INIT, "ws.py": WS_ECHO})
    server = krait_server(site, "--access-log-format", "json", "--workers", "1",
                          "--trusted-proxy", "127.0.0.1")
    with server.connect() as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert HttpReader(s).read()[0] == 101
        ws = one(wait_lines(server, 1), path="/ws")
    # The worker's id for the handshake (the 101 itself does not carry the header).
    assert (ws["status"], ws["bytes"]) == (101, 0) and re.match(r"^[0-9a-f]{12}-\d+$", ws["id"])
    assert ws["worker_pid"] is not None and ws["loop"] == 0, ws
    chosen = "proxy-chosen:id/1+2="
    status, headers, _ = exchange(server, b"GET /page.py?proxy HTTP/1.1\r\nHost: x\r\n"
                                  b"X-Request-ID: " + chosen.encode() + b"\r\n\r\n")
    assert status == 200 and headers["x-request-id"] == chosen
    status, headers, _ = exchange(server, b"GET /page.py?bad HTTP/1.1\r\nHost: x\r\n"
                                  b'X-Request-ID: a"b\r\n\r\n')
    assert status == 200 and headers["x-request-id"] != 'a"b'
    recs = wait_lines(server, 3)
    assert one(recs, path="/page.py?proxy")["id"] == chosen
    assert one(recs, path="/page.py?bad")["id"] == headers["x-request-id"]


def test_lines_from_several_loops(site: Path, krait_server) -> None:  # noqa: ANN001
    """Three loops, one connection after another (so the loops take turns accepting): every
    line parses, and each loop wrote as many lines as it says it served."""
    server = krait_server(site, "--loops", "3", "--workers", "1",
                          "--access-log-format", "json")
    for k in range(30):
        with server.connect() as s:
            r = HttpReader(s)
            for i in range(3):
                s.sendall(f"GET /a.txt?c={k}&i={i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
                assert r.read()[0] == 200
    assert server.stop() == 0
    recs = parse(server.access_path.read_bytes())
    assert sorted(r["path"] for r in recs) == \
        sorted(f"/a.txt?c={k}&i={i}" for k in range(30) for i in range(3))
    served = [n for n, _ in _loop_line(server.log())]
    assert Counter(r["loop"] for r in recs) == Counter(
        {i: n for i, n in enumerate(served) if n}), served
    assert len({r["loop"] for r in recs}) > 1, served


def test_parallel_lines_are_whole(site: Path, krait_server) -> None:  # noqa: ANN001
    """Many clients at once on the loops of the environment: no line is split or mixed."""
    server = krait_server(site, "--workers", "1", "--access-log-format", "json")
    errors: list[str] = []
    sent = in_parallel(server.port, "p", threads=8, conns=3, each=6, errors=errors)
    assert not errors, errors[:5]
    assert server.stop() == 0
    recs = parse(server.access_path.read_bytes())
    assert sorted(r["path"] for r in recs) == sorted(sent)
    assert all(r["loop"] < loops_env() for r in recs)
    assert all((r["worker"] is None) == r["path"].startswith("/index.html") for r in recs)


def test_sigusr1_reopens_a_json_log(site: Path, krait_server) -> None:  # noqa: ANN001
    server = krait_server(site, "--workers", "1", "--access-log-format", "json")
    log = server.access_path
    errors: list[str] = []
    before = in_parallel(server.port, "a", threads=3, conns=2, each=6, errors=errors)
    wait_for(lambda: log.read_bytes().count(b"\n") == len(before), what="the first lines")
    rotated = log.with_name(log.name + ".1")
    log.rename(rotated)
    server.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "reopened the access log" in server.log(), what="the reopen")
    after = in_parallel(server.port, "b", threads=3, conns=2, each=6, errors=errors)
    assert server.stop() == 0
    assert not errors, errors[:5]
    assert sorted(r["path"] for r in parse(rotated.read_bytes())) == sorted(before)
    assert sorted(r["path"] for r in parse(log.read_bytes())) == sorted(after)


def test_config_sets_the_format_and_the_command_line_wins(site: Path,
                                                          krait_server) -> None:  # noqa: ANN001
    write_site(site, {".py/init.py": "from krait import config\n"
                                     "config.access_log_format = 'json'\n"})
    server = krait_server(site, "--workers", "1")
    assert exchange(server, b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
    assert wait_lines(server, 1)[0]["path"] == "/a.txt"
    combined = krait_server(site, "--workers", "1", "--access-log-format", "combined")
    assert exchange(combined, b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
    wait_for(lambda: combined.access_log().endswith("\n"), what="the combined line")
    assert re.match(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET /a\.txt HTTP/1\.1" 200 9 "-" "-" '
                    r'\d+\.\d{6}\n$', combined.access_log()), combined.access_log()


def test_an_unknown_format_stops_startup(site: Path) -> None:
    cmd = [sys.executable, "-m", "krait", str(site), "--port", "0", "--workers", "1"]
    bad_flag = subprocess.run([*cmd, "--access-log-format", "xml"], capture_output=True,
                              text=True, timeout=60)
    assert bad_flag.returncode == 2 and "invalid choice: 'xml'" in bad_flag.stderr
    write_site(site, {".py/init.py": "from krait import config\n"
                                     "config.access_log_format = 'JSON lines'\n"})
    bad_config = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    out = bad_config.stdout + bad_config.stderr
    assert bad_config.returncode == 1
    assert re.search(r"init\.py:2: krait\.config\.access_log_format must be \"combined\" or "
                     r"\"json\", not 'JSON lines'", out), out
