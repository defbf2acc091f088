"""The request limits of architecture.md (request line, header block, header fields, body,
timeouts): their defaults, each set from `.py/init.py` and from the command line, exact at the
boundary (the limit itself is accepted, one byte or field more is refused), and bad values
refused at start-up (invariant 6)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import HttpReader, write_site
from tests.integration.test_hostile import (
    ECHO_INIT,
    HOME,
    ROBOTS,
    Reader,
    assert_alive,
    assert_closes,
    echo_site,
    status_line,
    wait_closed,
)

# Small limits, the same from both sources.
LINE, HEAD, FIELDS, BODY = 100, 1024, 10, 64
LIMITS_INIT = (f"config.max_request_line = {LINE}\n"
               f"config.max_header_size = {HEAD}\n"
               f"config.max_header_fields = {FIELDS}\n"
               f"config.max_body_size = {BODY}\n")
LIMITS_ARGS = ("--max-request-line", str(LINE), "--max-header-size", str(HEAD),
               "--max-header-fields", str(FIELDS), "--max-body-size", str(BODY))


def line_of(n: int) -> bytes:
    """A request line of exactly n bytes (CRLF excluded) for /robots.txt."""
    fixed = len(b"GET /robots.txt? HTTP/1.1")
    assert n >= fixed
    return b"GET /robots.txt?" + b"q" * (n - fixed) + b" HTTP/1.1"


def head_of(n: int) -> bytes:
    """A request head of exactly n bytes, request line and final empty line included."""
    fixed = len(b"GET /robots.txt HTTP/1.1\r\nHost: x\r\nX-Pad: \r\n\r\n")
    assert n >= fixed
    return b"GET /robots.txt HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * (n - fixed) + b"\r\n\r\n"


def head_with_fields(n: int) -> bytes:
    """A request head with exactly n header fields, Host included."""
    return (b"GET /robots.txt HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-F%d: v\r\n" % i for i in range(n - 1)) + b"\r\n")


def post_cl(body: bytes) -> bytes:
    return b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def post_chunked(*chunks: bytes) -> bytes:
    return (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n" % len(c) + c + b"\r\n" for c in chunks) + b"0\r\n\r\n")


def exchange(server, request: bytes, status: int, body: bytes | None = None,
             closes: bool | None = None) -> None:
    """Send one request on a fresh connection; check the status line, the body and whether the
    connection closes (for refusals: it must, and say so)."""
    if closes is None:
        closes = status >= 400
    with server.connect() as s:
        s.sendall(request)
        reader = Reader(s)
        line, _, headers, got = reader.response()
        assert line == status_line(status), request[:80]
        if body is not None:
            assert got == body
        if closes:
            assert headers.get("connection") == "close"
            assert_closes(s, reader)
        else:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert reader.response()[3] == HOME


@pytest.fixture(params=["init.py", "command-line"])
def limited(request, tmp_path, krait_server):
    """A server with LINE/HEAD/FIELDS/BODY set in init.py or given as command-line flags."""
    if request.param == "init.py":
        site = echo_site(tmp_path / "site", LIMITS_INIT)
        return krait_server(site, "--workers", "1")
    site = echo_site(tmp_path / "site")
    return krait_server(site, "--workers", "1", *LIMITS_ARGS)


def test_request_line_limit(limited):
    exchange(limited, line_of(LINE) + b"\r\nHost: x\r\n\r\n", 200, ROBOTS)
    exchange(limited, line_of(LINE + 1) + b"\r\nHost: x\r\n\r\n", 414)
    # Decided as soon as the line is too long, without waiting for its end.
    exchange(limited, line_of(LINE + 1), 414)
    assert_alive(limited)


def test_header_size_limit(limited):
    exchange(limited, head_of(HEAD), 200, ROBOTS)
    exchange(limited, head_of(HEAD + 1), 431)
    # HEAD + 1 bytes of a head that has not ended yet: refused without waiting for its end.
    exchange(limited, head_of(HEAD + 5)[:-4], 431)
    assert_alive(limited)


def test_header_fields_limit(limited):
    exchange(limited, head_with_fields(FIELDS), 200, ROBOTS)
    exchange(limited, head_with_fields(FIELDS + 1), 431)
    assert_alive(limited)


def test_body_limit_content_length(limited):
    exchange(limited, post_cl(b"c" * BODY), 200, b"c" * BODY)
    exchange(limited, post_cl(b"c" * (BODY + 1)), 413)
    # Decided on the head: the body need not be sent at all.
    exchange(limited, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (BODY + 1),
             413)
    assert_alive(limited)


def test_body_limit_chunked(limited):
    half = BODY // 2
    exchange(limited, post_chunked(b"d" * half, b"d" * (BODY - half)), 200, b"d" * BODY)
    exchange(limited, post_chunked(b"d" * half, b"d" * (BODY - half + 1)), 413)
    exchange(limited, post_chunked(b"d" * (BODY + 1)), 413)
    assert_alive(limited)


def test_command_line_overrides_init_py(tmp_path, krait_server):
    site = echo_site(tmp_path / "site", LIMITS_INIT)
    server = krait_server(site, "--workers", "1", "--max-request-line", "200",
                          "--max-body-size", "128")
    exchange(server, line_of(200) + b"\r\nHost: x\r\n\r\n", 200, ROBOTS)
    exchange(server, line_of(201) + b"\r\nHost: x\r\n\r\n", 414)
    exchange(server, post_cl(b"e" * 128), 200, b"e" * 128)
    exchange(server, post_cl(b"e" * 129), 413)
    # What the command line did not name still comes from init.py.
    exchange(server, head_with_fields(FIELDS + 1), 431)


def test_timeouts_from_init_py(tmp_path, krait_server):
    site = echo_site(tmp_path / "site", "config.header_timeout = 1\n"
                                        "config.keepalive_timeout = 1\n")
    server = krait_server(site, "--workers", "1")
    with server.connect() as s:
        start = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\n")
        reader = Reader(s, timeout=3)
        line, _, headers, _ = reader.response()
        assert line == status_line(408)
        assert headers["connection"] == "close"
        assert 0.5 <= time.monotonic() - start <= 3
        assert_closes(s, reader)
    with server.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(s).response()[3] == HOME
        data, elapsed = wait_closed(s, 3)
        assert data == b"" and 0.5 <= elapsed <= 3


def test_defaults(tmp_path, krait_server):
    """architecture.md: request line 8 KiB, head 64 KiB and 100 fields, body 16 MiB."""
    server = krait_server(echo_site(tmp_path / "site"), "--workers", "1")
    exchange(server, line_of(8192) + b"\r\nHost: x\r\n\r\n", 200, ROBOTS)
    exchange(server, line_of(8193) + b"\r\nHost: x\r\n\r\n", 414)
    exchange(server, head_of(64 * 1024), 200, ROBOTS)
    exchange(server, head_of(64 * 1024 + 1), 431)
    exchange(server, head_with_fields(100), 200, ROBOTS)
    exchange(server, head_with_fields(101), 431)
    exchange(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
             % (16 * 1024 * 1024 + 1), 413)
    # Exactly 16 MiB is welcome: the server invites the body.
    with server.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % (16 * 1024 * 1024))
        assert Reader(s).response()[0] == status_line(100)
    assert_alive(server)


# ---- bad values stop start-up (invariant 6) ------------------------------------------------


def start_fails(site: Path, *args: str) -> str:
    """Run krait expecting it to refuse to start; returns its output."""
    proc = subprocess.run([sys.executable, "-m", "krait", str(site), "--host", "127.0.0.1",
                           "--port", "0", "--workers", "1", *args],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "serving" not in out
    assert "Traceback" not in out
    return out


@pytest.mark.parametrize("setting", [
    "max_request_line = 0", "max_header_size = -1", "max_header_fields = 'many'",
    "max_body_size = None", "header_timeout = 0", "keepalive_timeout = -5",
])
def test_bad_limit_in_init_py_names_file_and_setting(tmp_path, setting):
    site = write_site(tmp_path / "site", {".py/init.py": ECHO_INIT + f"config.{setting}\n",
                                          "index.html": HOME})
    out = start_fails(site)
    assert "init.py:3" in out
    assert setting.split(" ")[0] in out


@pytest.mark.parametrize("flag,value", [
    ("--max-request-line", "0"), ("--max-header-size", "-1"), ("--max-header-fields", "x"),
    ("--max-body-size", "0"), ("--header-timeout", "0"), ("--keepalive-timeout", "-1"),
])
def test_bad_limit_on_command_line_is_a_one_line_error(tmp_path, flag, value):
    site = echo_site(tmp_path / "site")
    out = start_fails(site, flag, value)
    assert flag in out
    assert len(out.strip().splitlines()) <= 3  # argparse: usage line(s) + the error


def test_header_fields_over_the_cap_in_init_py_names_the_setting(tmp_path):
    site = write_site(tmp_path / "site", {".py/init.py": ECHO_INIT
                                          + "config.max_header_fields = 5000\n",
                                          "index.html": HOME})
    out = start_fails(site)
    assert "init.py:3" in out and "max_header_fields" in out


def test_header_fields_over_the_cap_on_command_line_names_the_flag(tmp_path):
    out = start_fails(echo_site(tmp_path / "site"), "--max-header-fields", "5000")
    assert "--max-header-fields" in out


def test_header_fields_at_the_cap(tmp_path, krait_server):
    server = krait_server(echo_site(tmp_path / "site"), "--workers", "1",
                          "--max-header-fields", "1000")
    exchange(server, head_with_fields(1000), 200, ROBOTS)
    exchange(server, head_with_fields(1001), 431)


# --- a per-route body limit: Route(..., max_body_size=N) -------------------------------------

ROUTE_LIMIT_INIT = '''\
from krait import config
from krait.mvc import SimpleCtrl


class Ctrl(SimpleCtrl):
    def __init__(self):
        import os
        import krait
        open(os.path.join(krait.site_root, "ran"), "a").write("ctrl\\n")
        super().__init__(".view/ctrl.html", {})


def app(environ, start_response):
    import os
    import krait
    open(os.path.join(krait.site_root, "ran"), "a").write("wsgi\\n")
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi %d" % len(body)]


config.spool_threshold = 1024
config.routes = [
    config.Route("POST", url="/small", target="echo.py", max_body_size=100),
    config.Route("POST", url="/zero", target="echo.py", max_body_size=0),
    config.Route("POST", url="/spooled", target="echo.py", max_body_size=4096),
    config.Route("POST", url="/ctrl", ctrl_class=Ctrl, max_body_size=10),
    config.Route("POST", url="/big", target="echo.py"),
    config.Route(prefix="/app", wsgi=app, max_body_size=10),
    config.Route(),
]
'''

ROUTE_LIMIT_ECHO = '''\
import os
import krait
open(os.path.join(krait.site_root, "ran"), "a").write("echo\\n")
with krait.request.open_body() as f:
    n = len(f.read())
krait.response = krait.Response(body=f"got {n} spooled={krait.request.body_file is not None}")
'''


def route_limit_site(root: Path) -> Path:
    return write_site(root, {".py/init.py": ROUTE_LIMIT_INIT, "echo.py": ROUTE_LIMIT_ECHO,
                             ".view/ctrl.html": "ctrl ok", "index.html": HOME})


def post_to(path: str, body: bytes, chunked: bool = False) -> bytes:
    if chunked:
        return (b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                % path.encode() + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (path.encode(), len(body)) + body)


def test_route_body_limit(tmp_path, krait_server):
    site = route_limit_site(tmp_path / "site")
    server = krait_server(site, "--workers", "1")
    ran = site / "ran"

    def ask(path: str, body: bytes, chunked: bool = False) -> tuple[int, bytes]:
        # One connection for all: a 413 of the route's limit leaves it usable.
        conn.sendall(post_to(path, body, chunked))
        status, _, text = reader.read()
        return status, text

    with server.connect() as conn:
        reader = HttpReader(conn, timeout=15)
        assert ask("/small", b"a" * 100) == (200, b"got 100 spooled=False")
        assert ran.read_text() == "echo\n"
        status, text = ask("/small", b"a" * 101)
        assert status == 413 and b"100 bytes" in text
        status, _ = ask("/small", b"a" * 101, chunked=True)
        assert status == 413
        assert ask("/zero", b"") == (200, b"got 0 spooled=False")
        assert ask("/zero", b"x")[0] == 413
        # A body spooled to a file (over spool_threshold) is measured by its file.
        assert ask("/spooled", b"s" * 4096) == (200, b"got 4096 spooled=True")
        assert ask("/spooled", b"s" * 4097)[0] == 413
        assert ask("/spooled", b"s" * 4097, chunked=True)[0] == 413
        # Without a limit of its own a route takes what the server takes.
        assert ask("/big", b"b" * 5000) == (200, b"got 5000 spooled=True")
        assert ask("/ctrl", b"c" * 10) == (200, b"ctrl ok")
        assert ask("/ctrl", b"c" * 11)[0] == 413
        assert ask("/app/x", b"w" * 10) == (200, b"wsgi 10")
        assert ask("/app/x", b"w" * 11)[0] == 413
        assert ask("/big", b"ok") == (200, b"got 2 spooled=False")
    # Refused bodies never reached the site's code.
    assert ran.read_text().splitlines() == ["echo", "echo", "echo", "echo", "ctrl", "wsgi",
                                            "echo"]


@pytest.mark.parametrize("value", ["-1", "'1 MiB'", "True", "1.5"])
def test_bad_route_body_limit_names_file_and_line(tmp_path, value):
    site = write_site(tmp_path / "site", {
        ".py/init.py": "from krait import config\n"
                       f"config.routes = [config.Route('POST', url='/x', max_body_size={value})]\n",
        "index.html": HOME})
    out = start_fails(site)
    assert "init.py:2" in out and "max_body_size" in out
