"""The connection's own address and port (the REQUEST frame's server_addr/server_port): what a
page reads as ``krait.request.server_addr``/``server_port`` and a WSGI application as
``SERVER_NAME``/``SERVER_PORT``, through a real krait, with and without a ``Host`` header,
over TLS, a Unix socket, a PROXY protocol header, and connections that move between loops."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import HttpReader, KraitProcess, recv_all, write_site

WHERE = ("import krait\n"
         "r = krait.request\n"
         "krait.response = krait.Response('HTTP/1.1', 200, [('Content-Type', 'text/plain')],\n"
         "    f'{r.server_addr} {r.server_port} {r.remote_addr}')\n")

APP = ("import json\n"
       "def app(environ, start_response):\n"
       "    keys = ('SERVER_NAME', 'SERVER_PORT', 'HTTP_HOST', 'wsgi.url_scheme')\n"
       "    body = json.dumps({k: environ.get(k) for k in keys}).encode()\n"
       "    start_response('200 OK', [('Content-Type', 'application/json')])\n"
       "    return [body]\n")


def _site(root: Path, init: str = "") -> Path:
    return write_site(root, {
        ".py/init.py": "import os, sys\n"
                       "sys.path.insert(0, os.path.dirname(__file__))\n"
                       "from wsgiref.validate import validator\n"
                       "from krait import config\n"
                       "import envapp\n"
                       f"{init}"
                       "config.routes = [\n"
                       "    config.Route(prefix='/app', wsgi=validator(envapp.app)),\n"
                       "    config.Route(),\n"
                       "]\n",
        ".py/envapp.py": APP,
        "where.py": WHERE,
        "index.html": "home\n",
    })


def _exchange(s: socket.socket, request: bytes) -> tuple[int, bytes]:
    s.sendall(request)
    status, _, body = HttpReader(s).read()
    return status, body


def _ask(connect, request: bytes) -> tuple[int, bytes]:  # noqa: ANN001
    """One request on a new connection made by connect()."""
    with connect() as s:
        return _exchange(s, request)


def _where(body: bytes) -> tuple[str, int, str]:
    addr, port, remote = body.decode().split(" ")
    return addr, int(port), remote


HTTP10 = b"GET %s HTTP/1.0\r\n\r\n"  # no Host: the server's own address is all there is
WITH_HOST = b"GET %s HTTP/1.1\r\nHost: h.example:81\r\n\r\n"


@pytest.fixture
def plain(tmp_path: Path, krait_server) -> KraitProcess:  # noqa: ANN001
    return krait_server(_site(tmp_path / "site"), "--workers", "1")


def test_page_sees_the_listener_address_and_port(plain: KraitProcess) -> None:
    for request in (HTTP10 % b"/where.py", WITH_HOST % b"/where.py"):
        status, body = _ask(plain.connect, request)
        assert status == 200
        # The port the request came in on, whatever Host says (h.example:81 is not it).
        assert _where(body) == ("127.0.0.1", plain.port, "127.0.0.1")


def test_wsgi_server_name_and_port(plain: KraitProcess) -> None:
    # Without Host (HTTP/1.0): the address and port the connection reached, not localhost:80.
    status, body = _ask(plain.connect, HTTP10 % b"/app/")
    assert status == 200, body
    env = json.loads(body)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(plain.port))
    assert env["HTTP_HOST"] is None
    # With Host: its name (the host the client asked for), and still the listener's port.
    status, body = _ask(plain.connect, WITH_HOST % b"/app/")
    env = json.loads(body)
    assert status == 200
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("h.example", str(plain.port))
    assert env["HTTP_HOST"] == "h.example:81"
    # wsgiref.validate checked both sides of each request.
    assert "AssertionError" not in plain.log()


def test_connections_moving_between_loops_keep_their_address(tmp_path: Path,
                                                             krait_server) -> None:  # noqa: ANN001
    """With three loops, a Python page's connection moves to the hub and a static request
    sends it home again: the address goes with it every time."""
    server = krait_server(_site(tmp_path / "site"), "--workers", "2", "--loops", "3")
    conns = [server.connect() for _ in range(6)]
    try:
        for _ in range(2):
            for s in conns:
                assert _exchange(s, b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n") == \
                    (200, b"home\n")
                status, body = _exchange(s, b"GET /where.py HTTP/1.1\r\nHost: x\r\n\r\n")
                assert status == 200
                assert _where(body) == ("127.0.0.1", server.port, "127.0.0.1")
                status, body = _exchange(s, b"GET /app/ HTTP/1.1\r\nHost: x\r\n\r\n")
                assert json.loads(body)["SERVER_PORT"] == str(server.port)
    finally:
        for s in conns:
            s.close()


def test_unix_socket(tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    path = tmp_path / "k.sock"
    krait_server(_site(tmp_path / "site"), "--workers", "1", "--unix", str(path))

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(str(path))
        return s

    assert _where(_ask(connect, HTTP10 % b"/where.py")[1]) == ("unix", 0, "unix")
    # A Unix socket has no port and its path is no host name: Host's, else localhost:80.
    env = json.loads(_ask(connect, HTTP10 % b"/app/")[1])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("localhost", "80")
    env = json.loads(_ask(connect, WITH_HOST % b"/app/")[1])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("h.example", "81")


def test_proxy_protocol_changes_the_client_not_the_server(tmp_path: Path,
                                                         krait_server) -> None:  # noqa: ANN001
    server = krait_server(_site(tmp_path / "site"), "--workers", "1", "--proxy-protocol",
                          "--trusted-proxy", "127.0.0.1/32")
    header = b"PROXY TCP4 203.0.113.9 198.51.100.1 56324 443\r\n"
    with server.connect() as s:
        s.sendall(header + b"GET /where.py HTTP/1.0\r\n\r\n")
        response = recv_all(s)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response[:300]
    # The header's destination (198.51.100.1:443) is the proxy's business: the connection's
    # own end is what the worker is told.
    assert _where(body) == ("127.0.0.1", server.port, "203.0.113.9")


class _KraitOnV6(KraitProcess):
    """A krait listening on [::1] (the later --host wins over the fixture's 127.0.0.1)."""

    def _wait_ready(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = re.search(r"serving .* at http://\[::1\]:(\d+)/", self.log())
            if m:
                return int(m[1])
            if self.proc.poll() is not None:
                raise RuntimeError(f"krait exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"krait did not start:\n{self.log()}")


def test_ipv6(tmp_path: Path) -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = _KraitOnV6(_site(tmp_path / "site"), ["--workers", "1", "--host", "::1"],
                        tmp_path)
    try:
        def connect() -> socket.socket:
            return socket.create_connection(("::1", server.port), timeout=5)

        assert _where(_ask(connect, HTTP10 % b"/where.py")[1]) == ("::1", server.port, "::1")
        # In SERVER_NAME an IPv6 address is in brackets (RFC 3875 server-name), as in a URL.
        env = json.loads(_ask(connect, HTTP10 % b"/app/")[1])
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", str(server.port))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("pki")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem")], check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


def test_tls_port(tmp_path: Path, cert: tuple[Path, Path], krait_server) -> None:  # noqa: ANN001
    site = _site(tmp_path / "site", f"config.ssl_certificate_path = {str(cert[0])!r}\n"
                                    f"config.ssl_private_key_path = {str(cert[1])!r}\n")
    server = krait_server(site, "--workers", "1", "--https-port", "0")
    m = re.search(r"https://127\.0\.0\.1:(\d+)/", server.log())
    assert m, server.log()
    port = int(m[1])
    assert port != server.port
    ctx = ssl.create_default_context(cafile=str(cert[0]))

    def connect() -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        return ctx.wrap_socket(raw, server_hostname="127.0.0.1")

    assert _where(_ask(connect, HTTP10 % b"/where.py")[1]) == ("127.0.0.1", port, "127.0.0.1")
    env = json.loads(_ask(connect, HTTP10 % b"/app/")[1])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(port))
    assert env["wsgi.url_scheme"] == "https"
    env = json.loads(_ask(connect, WITH_HOST % b"/app/")[1])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("h.example", str(port))
    # The plain port, on the same server, is its own.
    env = json.loads(_ask(server.connect, HTTP10 % b"/app/")[1])
    assert (env["SERVER_PORT"], env["wsgi.url_scheme"]) == (str(server.port), "http")
