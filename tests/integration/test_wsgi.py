"""WSGI applications (PEP 3333) mounted on krait and served alone, through a real krait."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import HttpReader, write_site

PEP3333_APP = r'''
import hashlib, json, os, sys

CLOSED = os.path.join(os.path.dirname(__file__), "closed.log")


class Body:
    """An iterable with close(), as PEP 3333 says the server must close."""
    def __init__(self, parts, tag):
        self.parts, self.tag = parts, tag
    def __iter__(self):
        return iter(self.parts)
    def close(self):
        with open(CLOSED, "a") as f:
            f.write(self.tag + "\n")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/environ"):
        out = {k: v for k, v in environ.items() if isinstance(v, (str, bool, tuple))}
        out["wsgi.input"] = type(environ["wsgi.input"]).__name__
        out["wsgi.errors"] = environ["wsgi.errors"] is sys.stderr
        out["body"] = environ["wsgi.input"].read().decode()
        body = json.dumps(out).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return Body([body], "environ")
    if path == "/upload":
        h, n, f = hashlib.sha256(), 0, environ["wsgi.input"]
        while True:
            data = f.read(65536)
            if not data:
                break
            h.update(data)
            n += len(data)
        body = json.dumps({"sha": h.hexdigest(), "n": n, "input": type(f).__name__,
                           "length": environ.get("CONTENT_LENGTH")}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        def gen():
            try:
                for i in range(3):
                    yield b"part%d;" % i
            finally:
                with open(CLOSED, "a") as f:
                    f.write("stream\n")
        return gen()
    if path == "/write":
        write = start_response("201 Created", [("Content-Type", "text/plain"),
                                               ("X-Many", "1"), ("X-Many", "2")])
        write(b"written;")
        return Body([b"iterated"], "write")
    if path == "/exc_info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("503 Busy", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced"]
    if path == "/exc_info_late":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"started")
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Oops", [], sys.exc_info())  # re-raises: the stream is cut
        return [b"never"]
    if path == "/twice":
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b""]
    if path == "/hop":
        start_response("200 OK", [("Connection", "close")])
        return [b"x"]
    if path == "/badstatus":
        start_response("200", [])
        return [b"x"]
    if path == "/file":
        f = open(os.path.join(os.path.dirname(__file__), "data.bin"), "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 4096)
    if path == "/length":
        start_response("200 OK", [("Content-Length", "5")])
        return [b"12345678"]
    if path == "/fail":
        raise RuntimeError("the app failed")
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no " + path.encode("latin-1")]
'''

DATA = bytes(range(256)) * 1024  # 256 KiB


def _site(tmp_path: Path, routes: str = "") -> Path:
    return write_site(tmp_path / "site", {
        ".py/init.py": "import os, sys\n"
                       "sys.path.insert(0, os.path.dirname(__file__))\n"
                       "from krait import config\n"
                       "config.routes = [\n"
                       "    config.Route(prefix='/app', wsgi='pepapp:app'),\n"
                       f"{routes}"
                       "    config.Route(),\n"
                       "]\n",
        ".py/pepapp.py": PEP3333_APP,
        ".py/data.bin": DATA,
        "index.html": "home",
    })


@pytest.fixture
def pep(tmp_path, krait_server):
    site = _site(tmp_path)
    return site, krait_server(site, "--workers", "1")


def closed(site: Path, want: set[str] | None = None, timeout: float = 5) -> list[str]:
    """What the applications' close() wrote; with ``want``, wait (close() runs after the last
    byte of the answer has left, so the client may read it first) until it is all there."""
    path = site / ".py" / "closed.log"
    deadline = time.monotonic() + timeout
    while True:
        names = path.read_text().split() if path.exists() else []
        if want is None or want <= set(names) or time.monotonic() > deadline:
            return names
        time.sleep(0.02)


def test_environ(pep):
    site, server = pep
    r = requests.post(server.url + "/app/environ/x%20y?a=1&b=%20", data=b"k=v",
                      headers={"X-Thing": "one", "Cookie": "a=1", "Content-Type": "text/x"})
    assert r.status_code == 200
    env = r.json()
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/app"
    assert env["PATH_INFO"] == "/environ/x y"
    assert env["QUERY_STRING"] == "a=1&b=%20"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_X_THING"] == "one"
    assert env["HTTP_COOKIE"] == "a=1"
    assert env["CONTENT_TYPE"] == "text/x"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"].isdigit()
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is False
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.run_once"] is False
    assert env["wsgi.errors"] is True
    assert env["body"] == "k=v"
    # The prefix itself: PATH_INFO empty; a path merely starting like it is not the app's.
    assert requests.get(server.url + "/app").status_code == 404  # the app's own 404
    assert requests.get(server.url + "/app").text == "no "
    assert requests.get(server.url + "/apple").status_code == 404
    assert requests.get(server.url + "/").text == "home"
    assert "environ" in closed(site, {"environ"})


def test_chunked_request_and_underscore_headers(pep):
    _, server = pep
    with server.connect() as s:
        s.sendall(b"POST /app/environ HTTP/1.1\r\nHost: h.example:81\r\n"
                  b"Transfer-Encoding: chunked\r\nX_Smuggle: 1\r\n\r\n"
                  b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        status, _, body = HttpReader(s).read()
    env = json.loads(body)
    assert status == 200
    assert env["body"] == "abcde" and env["CONTENT_LENGTH"] == "5"
    assert "HTTP_TRANSFER_ENCODING" not in env
    assert "HTTP_X_SMUGGLE" not in env
    # SERVER_NAME is the host asked for; SERVER_PORT the port the request came in on (CGI).
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("h.example", str(server.port))


def test_streaming_write_and_close(pep):
    site, server = pep
    with server.connect() as s:
        s.sendall(b"GET /app/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = HttpReader(s).read()
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert body == b"part0;part1;part2;"
    r = requests.get(server.url + "/app/write")
    assert r.status_code == 201 and r.text == "written;iterated"
    assert r.raw.headers.getlist("X-Many") == ["1", "2"]
    assert {"stream", "write"} <= set(closed(site, {"stream", "write"}))


def test_exc_info(pep):
    _, server = pep
    r = requests.get(server.url + "/app/exc_info")
    assert r.status_code == 503 and r.text == "replaced"
    # After the head went out, exc_info re-raises: the body is cut, never completed.
    with server.connect() as s:
        s.sendall(b"GET /app/exc_info_late HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(EOFError):
            HttpReader(s).read()
    assert "the WSGI application failed after its response started" in server.log()
    assert requests.get(server.url + "/app/stream").status_code == 200  # a new worker


@pytest.mark.parametrize("path", ["/app/twice", "/app/hop", "/app/badstatus", "/app/fail"])
def test_protocol_errors_are_500(pep, path):
    _, server = pep
    r = requests.get(server.url + path)
    assert r.status_code == 500
    assert "Connection" not in r.headers or path != "/app/hop"


def test_content_length_is_honoured(pep):
    _, server = pep
    r = requests.get(server.url + "/app/length")
    assert r.content == b"12345"


def test_file_wrapper_sent_by_the_core(pep):
    _, server = pep
    r = requests.get(server.url + "/app/file")
    assert r.status_code == 200 and r.content == DATA
    # Sent as a file (BODY_FILE): a Content-Length, not a chunked stream of 4 KiB blocks.
    assert r.headers["Content-Length"] == str(len(DATA))
    assert "Transfer-Encoding" not in r.headers
    assert requests.head(server.url + "/app/file").headers["Content-Length"] == str(len(DATA))


def test_large_upload_is_read_from_the_spooled_file(pep):
    _, server = pep
    data = os.urandom(3 * 1024 * 1024)  # over the 1 MiB spool threshold
    r = requests.put(server.url + "/app/upload", data=data)
    assert r.status_code == 200
    out = r.json()
    assert out == {"sha": hashlib.sha256(data).hexdigest(), "n": len(data),
                   "input": "BufferedReader", "length": str(len(data))}
    small = requests.put(server.url + "/app/upload", data=b"abc").json()
    assert small["input"] == "BytesIO" and small["n"] == 3


def test_wsgiref_validator_is_satisfied(tmp_path, krait_server):
    """wsgiref.validate wraps an app and asserts every PEP 3333 rule on both sides."""
    app = ("from wsgiref.validate import validator\n"
           "def inner(environ, start_response):\n"
           "    n = int(environ.get('CONTENT_LENGTH') or 0)\n"
           "    body = environ['wsgi.input'].read(n)  # PEP 3333: read(size)\n"
           "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
           "    return [b'ok:' + body]\n"
           "app = validator(inner)\n")
    site = write_site(tmp_path / "v", {
        ".py/init.py": "import os, sys\nsys.path.insert(0, os.path.dirname(__file__))\n"
                       "from krait import config\n"
                       "config.routes = [config.Route(prefix='/', wsgi='vapp:app')]\n",
        ".py/vapp.py": app,
    })
    server = krait_server(site, "--workers", "1")
    assert requests.get(server.url + "/x?y=1").text == "ok:"
    assert requests.post(server.url + "/", data=b"abc").text == "ok:abc"
    assert "AssertionError" not in server.log()


def test_callable_route_and_websocket_route_under_prefix(tmp_path, krait_server):
    site = write_site(tmp_path / "c", {
        ".py/init.py": "from krait import config\n"
                       "def hello(environ, start_response):\n"
                       "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                       "    return [environ['REQUEST_METHOD'].encode()]\n"
                       "config.routes = [config.Route(prefix='/api/', wsgi=hello),\n"
                       "                 config.Route(verb='GET', url='/x')]\n",
    })
    server = krait_server(site, "--workers", "1")
    assert requests.delete(server.url + "/api/v1").text == "DELETE"
    assert requests.get(server.url + "/api").text == "GET"


@pytest.mark.parametrize("route, message", [
    ("config.Route(prefix='app', wsgi='pepapp:app')", "must be a path starting with '/'"),
    ("config.Route(prefix='/x', wsgi='missing_mod:app')",
     "cannot be loaded: ModuleNotFoundError"),
    ("config.Route(prefix='/x', wsgi='pepapp:nothing')", "cannot be loaded: AttributeError"),
    ("config.Route(prefix='/x', wsgi='pepapp:DATA_NAME')", "is not callable"),
    ("config.Route(prefix='/x', wsgi='pepapp')", "write 'package.module:app'"),
    ("config.Route(prefix='/x')", "prefix= and wsgi= together"),
    ("config.Route('WEBSOCKET', prefix='/x', wsgi='pepapp:app')", "WebSocket"),
])
def test_startup_errors_name_the_line(tmp_path, route, message):
    site = write_site(tmp_path / "bad", {
        ".py/init.py": "import os, sys\nsys.path.insert(0, os.path.dirname(__file__))\n"
                       f"from krait import config\nconfig.routes = [{route}]\n",
        ".py/pepapp.py": PEP3333_APP + "\nDATA_NAME = 3\n",
    })
    result = subprocess.run([sys.executable, "-m", "krait", str(site), "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert message in result.stderr
    assert f"{site / '.py' / 'init.py'}:4" in result.stderr


def _start_alone(cwd: Path, *args: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    log = cwd / "krait.log"
    proc = subprocess.Popen([sys.executable, "-m", "krait", *args, "--host", "127.0.0.1",
                             "--port", "0", "--workers", "1", "--access-log", "off"],
                            cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = re.search(r"at http://127\.0\.0\.1:(\d+)/", log.read_text())
        if m:
            return proc, int(m.group(1)), log
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(log.read_text())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_krait_wsgi_alone(tmp_path):
    write_site(tmp_path, {"proj/__init__.py": "", "proj/wsgi.py": PEP3333_APP})
    proc, port, log = _start_alone(tmp_path, "--wsgi", "proj.wsgi:app")
    try:
        url = f"http://127.0.0.1:{port}"
        env = requests.get(url + "/environ").json()
        assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/environ"
        assert requests.get(url + "/").text == "no /"
        assert "serving the WSGI application proj.wsgi:app" in log.read_text()
    finally:
        _stop(proc)


def test_krait_wsgi_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "krait", "--wsgi", "nope:app", "--port", "0"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "krait --wsgi: wsgi='nope:app' cannot be loaded: ModuleNotFoundError" in result.stderr
    result = subprocess.run([sys.executable, "-m", "krait", "--wsgi", "nope", "--port", "0"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "package.module:app" in result.stderr
    result = subprocess.run([sys.executable, "-m", "krait", str(tmp_path), "--wsgi", "a:b"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not both" in result.stderr


def test_mount_after_a_regex_route(tmp_path, krait_server):
    """A regex route first: the worker decides the route (Rules.match), prefix rules too."""
    site = write_site(tmp_path / "r", {
        ".py/init.py": "from krait import config\n"
                       "def hello(environ, start_response):\n"
                       "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                       "    return [environ['PATH_INFO'].encode()]\n"
                       "config.routes = [config.Route(regex=r'/n/(?P<id>\\d+)', target='n.py'),\n"
                       "                 config.Route(prefix='/m', wsgi=hello)]\n",
        "n.py": "krait.response = krait.Response('HTTP/1.1', 200, [], 'n')\n",
    })
    server = krait_server(site, "--workers", "1")
    assert requests.get(server.url + "/n/1").text == "n"
    assert requests.get(server.url + "/m/x").text == "/x"
    assert requests.post(server.url + "/m").status_code == 200
    assert requests.get(server.url + "/mx").status_code == 404
