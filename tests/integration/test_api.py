"""The request/response API of .py scripts (behaviour §5, §8, §11, §14), through real HTTP
against a real krait process: every Request field, forms, multipart, JSON, every Response
class, streaming, extra headers, content types, cookies, print() and errors."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import HttpReader, KraitProcess, raw_request, recv_all, write_site

INIT = '''\
from krait import config
site_name = "api-site"
config.routes = [
    config.Route("ANY", regex=r"/x/(?P<script>[a-z_]+)", target="{script}.py"),
    config.Route(),
]
'''

ECHO = '''\
import base64, hashlib
import krait
r = krait.request
krait.response = krait.JsonResponse({
    "method": r.http_method, "url": r.url, "query": r.query, "query_string": r.query_string,
    "version": r.http_version, "headers": dict(r.headers),
    "mixed_get": r.headers.get("X-MiXeD-Case"), "mixed_in": "X-MIXED-CASE" in r.headers,
    "mixed_item": r.headers["x-Mixed-case"] if "x-mixed-case" in r.headers else None,
    "body_b64": base64.b64encode(r.body).decode() if len(r.body) < 65536 else None,
    "body_len": len(r.body), "body_sha256": hashlib.sha256(r.body).hexdigest(),
    "spooled": r.body_file, "cookies": r.cookies, "url_params": krait.url_params,
    "site_root": krait.site_root, "site_name": site_name, "remote_addr": r.remote_addr,
})
'''

MULTIPART = '''\
import hashlib
import krait
parts = krait.request.get_multipart_form()
if parts is None:
    krait.response = krait.ResponseBadRequest()
else:
    krait.response = krait.JsonResponse([
        {"name": p.name, "filename": p.filename, "content_type": p.content_type,
         "size": len(p.data), "sha256": hashlib.sha256(p.data).hexdigest()}
        for p in parts])
'''

RESPOND = '''\
import krait
from krait.response import ErrorResponse, FileResponse
kind = krait.request.query["kind"]
if kind == "response":
    krait.response = krait.Response("HTTP/1.1", 201, [("X-A", "1")], "created")
elif kind == "notfound":
    krait.response = krait.ResponseNotFound()
elif kind == "badrequest":
    krait.response = krait.ResponseBadRequest([("X-B", "2")])
elif kind == "redirect":
    krait.response = krait.ResponseRedirect("/elsewhere?x=1")
elif kind == "json":
    krait.response = krait.JsonResponse({"a": [1, "\\u00e9"]}, status_code=202)
elif kind == "file":
    krait.response = FileResponse("files/data.bin")
elif kind == "file_ct":
    krait.response = FileResponse("files/data.bin", content_type="image/png")
elif kind == "error":
    krait.response = ErrorResponse(409, "short & stout")
elif kind == "bytes":
    krait.response = krait.Response(body=b"\\x00\\xff\\x01")
elif kind == "duck":
    class Duck:
        http_version = "HTTP/1.1"
        status_code = 203
        headers = [("X-Duck", "quack")]
        body = "duck body"
    krait.response = Duck()
elif kind == "no_content":
    krait.response = krait.Response(status_code=204)
'''

STREAM = '''\
import os, time
import krait
gate = krait.request.query.get("gate")

def produce():
    yield "first;"
    if gate:
        deadline = time.monotonic() + 10
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
    yield b"second;"
    yield ""
    yield "x" * 200000
    yield "end"

krait.response = krait.Response(body=produce())
'''

HEADERS = '''\
import krait
q = krait.request.query
krait.extra_headers.append(("X-Extra", "one"))
krait.extra_headers.append(("X-Extra", "two"))
if "raw" in q:
    krait.set_content_type(raw=q["raw"])
elif "ext" in q:
    krait.set_content_type(ext=q["ext"])
if "custom" in q:
    krait.response = krait.Response(status_code=200, headers=[("X-Custom", "c")], body="custom")
else:
    krait.response = krait.Response(body="generated")
'''

COOKIES = '''\
import datetime
import krait
from krait import cookie
c = cookie.Cookie("count", "3")
c.set_max_age(3600)
c.set_path("/")
c.set_http_only(True)
cookie.set_cookie(c)
d = cookie.Cookie("sess", "abc")
d.set_expires(datetime.datetime(2030, 1, 2, 3, 4, 5))
d.set_secure(True)
d.set_same_site("lax")
cookie.set_cookie(d)
e = cookie.Cookie("gone", "")
e.set_max_age(0)
e.set_domain("example.com")
cookie.set_cookie(e)
krait.response = krait.JsonResponse({
    "a": cookie.get_cookie("a"), "missing": cookie.get_cookie("zz", "dflt"),
    "all": [[k.name, k.value] for k in cookie.get_cookies()],
    "queued": [str(k) for k in cookie.get_response_cookies()],
})
'''

FILES: dict[str, str | bytes] = {
    ".py/init.py": INIT,
    "echo.py": ECHO,
    "form.py": "import krait\nkrait.response = krait.JsonResponse(krait.request.get_post_form())\n",
    "multipart.py": MULTIPART,
    "jsonbody.py": "import krait\n"
                   "krait.response = krait.JsonResponse({'got': krait.request.json()})\n",
    "respond.py": RESPOND,
    "stream.py": STREAM,
    "headers.py": HEADERS,
    "cookies.py": COOKIES,
    "printer.py": "import krait\nprint('PRINTED-MARKER-42')\n"
                  "krait.response = krait.Response(body='body only')\n",
    "error.py": "def fail():\n    raise ValueError('kaboom-<marker>')\nfail()\n",
    "plain.py": "x = 1\n",
    "returned.py": '"""A Krait 1.0 style script."""\nfrom __future__ import annotations\n'
                   "import krait\nif krait.request.query.get('none'):\n    return None\n"
                   "def body() -> str:\n    return 'returned'\n"
                   "return krait.Response(status_code=200, body=body())\n",
    "site_global.py": "import krait\nkrait.response = krait.Response(body=site_name)\n",
    "forbidden.py": "from krait.errors import Forbidden\nraise Forbidden('no entry')\n",
    "bad_header.py": "import krait\nkrait.extra_headers.append(('X-Bad', 'a\\r\\nInjected: b'))\n",
    "init_ctrl.py": "from krait import mvc\n"
                    "mvc.set_init_ctrl(mvc.SimpleCtrl('.view/v.txt', {}))\n",
    ".view/v.txt": "a view, inserted verbatim: @not_code\n",
    "files/data.bin": bytes(range(256)) * 4096,  # 1 MiB
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_site(tmp_path_factory.mktemp("api") / "site", FILES)


def _start(site: Path, log_dir: Path, *args: str) -> Iterator[KraitProcess]:
    server = KraitProcess(site, ["--workers", "2", *args], log_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KraitProcess]:
    yield from _start(site, tmp_path_factory.mktemp("api-logs"))


@pytest.fixture(scope="module")
def debug_server(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KraitProcess]:
    yield from _start(site, tmp_path_factory.mktemp("api-debug-logs"), "--debug")


class Reader(HttpReader):
    """HttpReader that also keeps the last response's header lines, in order and unmerged
    (HttpReader joins repeated headers, which would hide separate Set-Cookie lines)."""

    last_headers: list[tuple[str, str]]

    def read(self, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        lines = self.buf[:self.buf.index(b"\r\n\r\n")].decode("latin-1").split("\r\n")[1:]
        self.last_headers = [(n.strip(), v.strip())
                             for n, _, v in (line.partition(":") for line in lines)]
        return super().read(head_request)


def exchange(server: KraitProcess, data: bytes, head: bool = False
             ) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send one request on a new connection; (status, header list in order, body)."""
    s = server.connect()
    try:
        s.sendall(data)
        reader = Reader(s, timeout=10)
        status, _, body = reader.read(head_request=head)
    finally:
        s.close()
    return status, reader.last_headers, body


def wait_for_log(server: KraitProcess, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if text in log:
            return log
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not in the log:\n{server.log()[-3000:]}")


# --- krait.Request ---------------------------------------------------------------------------

def test_request_fields(server, site):
    r = requests.post(server.url + "/x/echo?a=1&b=x+y&c=%C3%A9&d&a=2&e=f=g",
                      data=b"\x00binary\xff", headers={"X-Mixed-Case": "Yes",
                                                      "Content-Type": "application/x-test"})
    assert r.status_code == 200
    got = r.json()
    assert got["method"] == "POST"
    assert got["url"] == "/x/echo"
    assert got["query_string"] == "a=1&b=x+y&c=%C3%A9&d&a=2&e=f=g"
    assert got["query"] == {"a": "2", "b": "x y", "c": "é", "d": "", "e": "f=g"}
    assert got["version"] == "HTTP/1.1"
    assert got["headers"]["x-mixed-case"] == "Yes"
    assert got["headers"]["content-type"] == "application/x-test"
    assert got["headers"]["content-length"] == "8"
    assert got["mixed_get"] == got["mixed_item"] == "Yes"
    assert got["mixed_in"] is True
    assert base64.b64decode(got["body_b64"]) == b"\x00binary\xff"
    assert got["spooled"] is None
    assert got["url_params"] == {"script": "echo"}
    assert got["site_root"] == str(site)
    assert got["site_name"] == "api-site"   # init.py's globals are visible to scripts
    assert got["remote_addr"] == "127.0.0.1"


def test_request_methods_and_version(server):
    for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, _, body = exchange(server, f"{method} /x/echo HTTP/1.1\r\nHost: h\r\n"
                                           f"Content-Length: 0\r\n\r\n".encode())
        assert status == 200, method
        assert json.loads(body)["method"] == method
    status, _, body = exchange(server, b"GET /x/echo?q=1 HTTP/1.0\r\nHost: h\r\n\r\n")
    assert status == 200
    got = json.loads(body)
    assert got["version"] == "HTTP/1.0" and got["query"] == {"q": "1"}


def test_percent_decoded_url(server):
    status, _, body = exchange(server, b"GET /./%65cho.py?x=%2F HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 200
    got = json.loads(body)
    assert got["url"] == "/echo.py"
    assert got["query"] == {"x": "/"}
    status, _, body = exchange(server, b"GET /%65cho HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 200 and json.loads(body)["url"] == "/echo"


def test_repeated_headers_are_joined(server):
    status, _, body = exchange(server, b"GET /x/echo HTTP/1.1\r\nHost: h\r\nX-Rep: a\r\n"
                                       b"x-rep: b\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n")
    assert status == 200
    got = json.loads(body)
    assert got["headers"]["x-rep"] == "a,b"
    assert got["cookies"] == {"a": "1", "b": "2"}


def test_post_form(server):
    r = requests.post(server.url + "/x/form", data={"name": "Zoë & co", "n": "1", "empty": ""})
    assert r.status_code == 200
    assert r.json() == {"name": "Zoë & co", "n": "1", "empty": ""}
    r = requests.post(server.url + "/x/form", data=b"a=1&a=2&b=c=d&flag&x+y=%2B")
    assert r.json() == {"a": "2", "b": "c=d", "flag": "", "x y": "+"}


def test_json_body(server):
    r = requests.post(server.url + "/x/jsonbody", json={"k": [1, 2, {"é": None}]})
    assert r.status_code == 200
    assert r.json() == {"got": {"k": [1, 2, {"é": None}]}}
    r = requests.post(server.url + "/x/jsonbody", data=b"{not json")
    assert r.status_code == 400
    assert "400 Bad Request" in r.text
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"


BOUNDARY = "kraitTestBoundary0123"


def multipart_body(parts: list[tuple[str, str | None, bytes]], boundary: str = BOUNDARY) -> bytes:
    out = bytearray()
    for disposition, ctype, data in parts:
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def test_multipart_binary_files_and_semicolons(server):
    binary = bytes(range(256)) * 8 + b"\r\n--not-a-boundary\r\n"
    body = multipart_body([
        ('form-data; name="title"', None, "Zoë".encode()),
        ('form-data; name="upload"; filename="a;b; c=d.bin"', "application/octet-stream",
         binary),
        ('form-data; name="note"; filename="n.txt"', "text/plain; charset=utf-8", b"hi;there"),
        ('form-data; name="empty"; filename=""', "application/octet-stream", b""),
    ])
    r = requests.post(server.url + "/x/multipart", data=body, headers={
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}; charset=utf-8"})
    assert r.status_code == 200, r.text
    parts = r.json()
    assert [(p["name"], p["filename"], p["content_type"], p["size"]) for p in parts] == [
        ("title", None, "text/plain", 4),
        ("upload", "a;b; c=d.bin", "application/octet-stream", len(binary)),
        ("note", "n.txt", "text/plain; charset=utf-8", 8),
        ("empty", "", "application/octet-stream", 0),
    ]
    assert parts[1]["sha256"] == hashlib.sha256(binary).hexdigest()


def test_multipart_with_requests_files(server):
    r = requests.post(server.url + "/x/multipart", data={"field": "v"},
                      files={"f": ("photo.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "image/png")})
    assert r.status_code == 200
    parts = {p["name"]: p for p in r.json()}
    assert parts["field"]["size"] == 1 and parts["field"]["filename"] is None
    assert parts["f"]["filename"] == "photo.png"
    assert parts["f"]["content_type"] == "image/png" and parts["f"]["size"] == 108


@pytest.mark.parametrize("body", [
    b"--kraitTestBoundary0123\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end",
    b"garbage without any boundary",
    b"--kraitTestBoundary0123\r\nno-colon-header\r\n\r\nx\r\n--kraitTestBoundary0123--\r\n",
])
def test_malformed_multipart_is_400(server, body):
    r = requests.post(server.url + "/x/multipart", data=body, headers={
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert r.status_code == 400
    assert "<title>400 Bad Request</title>" in r.text


def test_multipart_wrong_content_type_is_none(server):
    r = requests.post(server.url + "/x/multipart", data=b"x=1")
    assert r.status_code == 400   # the script answers ResponseBadRequest when it gets None
    wait_for_log(server, "get_multipart_form: the request has no Content-Type")
    r = requests.post(server.url + "/x/multipart", data=b"x=1",
                      headers={"Content-Type": "text/plain"})
    assert r.status_code == 400
    wait_for_log(server, "'text/plain' is not multipart/form-data")


def test_cookies_in_and_out(server):
    status, headers, body = exchange(server, b"GET /x/cookies HTTP/1.1\r\nHost: h\r\n"
                                             b"Cookie: a=1; b=two; a=3; flag\r\n\r\n")
    assert status == 200
    got = json.loads(body)
    assert got["a"] == "1" and got["missing"] == "dflt"
    assert got["all"] == [["a", "1"], ["b", "two"], ["a", "3"], ["", "flag"]]
    # set_cookie adds HttpOnly and SameSite=Lax where the cookie has neither (issue 18).
    expected = [
        "count=3; max-age=3600; path=/; HttpOnly; SameSite=Lax",
        "sess=abc; expires=Wed, 02 Jan 2030 03:04:05 GMT; Secure; SameSite=Lax; HttpOnly",
        "gone=; max-age=0; domain=example.com; HttpOnly; SameSite=Lax",
    ]
    assert [v for n, v in headers if n.lower() == "set-cookie"] == expected
    assert got["queued"] == expected


def test_request_cookies_attribute(server):
    r = requests.get(server.url + "/x/echo", headers={"Cookie": 'x=1; y="quoted"; x=2'})
    assert r.json()["cookies"] == {"x": "1", "y": '"quoted"'}


# --- krait.Response and friends ----------------------------------------------------------------

def test_response_plain(server):
    r = requests.get(server.url + "/x/respond?kind=response")
    assert (r.status_code, r.reason, r.text) == (201, "Created", "created")
    assert r.headers["X-A"] == "1"
    assert r.headers["Content-Length"] == "7"
    assert r.headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"  # a .py target (issue 15)


def test_response_not_found_and_bad_request(server):
    r = requests.get(server.url + "/x/respond?kind=notfound")
    assert r.status_code == 404
    assert "<title>404 Not Found</title>" in r.text and "<h1>404 Not Found</h1>" in r.text
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    r = requests.get(server.url + "/x/respond?kind=badrequest")
    assert r.status_code == 400
    assert "<title>400 Bad Request</title>" in r.text and "<h1>400 Bad Request</h1>" in r.text
    assert r.headers["X-B"] == "2"


def test_response_redirect(server):
    status, headers, body = exchange(server, b"GET /x/respond?kind=redirect HTTP/1.1\r\n"
                                             b"Host: h\r\n\r\n")
    assert status == 302
    assert ("Location", "/elsewhere?x=1") in headers
    assert body == b""


def test_json_response(server):
    r = requests.get(server.url + "/x/respond?kind=json")
    assert r.status_code == 202
    assert r.headers["Content-Type"] == "application/json"
    assert r.content == '{"a": [1, "é"]}'.encode()


def test_file_response_is_sent_by_the_core(server, site):
    data = (site / "files/data.bin").read_bytes()
    status, headers, body = exchange(server, b"GET /x/respond?kind=file HTTP/1.1\r\n"
                                             b"Host: h\r\n\r\n")
    assert status == 200
    hd = {n.lower(): v for n, v in headers}
    assert hd["content-length"] == str(len(data))      # a file body, not a chunked stream
    assert "transfer-encoding" not in hd
    assert hd["content-type"] == "application/octet-stream"
    assert body == data
    r = requests.get(server.url + "/x/respond?kind=file_ct")
    assert r.headers["Content-Type"] == "image/png" and r.content == data
    r = requests.head(server.url + "/x/respond?kind=file")
    assert r.headers["Content-Length"] == str(len(data)) and r.content == b""


def test_error_response_any_status(server):
    r = requests.get(server.url + "/x/respond?kind=error")
    assert (r.status_code, r.reason) == (409, "Conflict")
    assert "<title>409 Conflict</title>" in r.text
    assert "<h1>409 Conflict</h1><p>short &amp; stout</p>" in r.text
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"


def test_bytes_duck_and_no_content(server):
    r = requests.get(server.url + "/x/respond?kind=bytes")
    assert r.content == b"\x00\xff\x01"
    r = requests.get(server.url + "/x/respond?kind=duck")
    assert (r.status_code, r.headers["X-Duck"], r.text) == (203, "quack", "duck body")
    status, headers, body = exchange(server, b"GET /x/respond?kind=no_content HTTP/1.1\r\n"
                                             b"Host: h\r\n\r\n")
    assert status == 204 and body == b""
    assert "content-length" not in {n.lower() for n, _ in headers}


def test_streamed_generator_goes_out_chunked_as_produced(server, tmp_path):
    gate = tmp_path / "gate"
    s = server.connect(timeout=10)
    try:
        s.sendall(f"GET /x/stream?gate={gate} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        head = b""
        while b"first;" not in head:   # the first chunk arrives before the generator ends
            data = s.recv(65536)
            assert data, head
            head += data
        assert b"second;" not in head
        assert b"\r\nTransfer-Encoding: chunked\r\n" in head
        gate.write_text("go")
        reader = HttpReader(s, timeout=10)
        reader.buf = head[head.index(b"\r\n\r\n") + 4:]
        body = b""
        while not body.endswith(b"end"):
            size_line, _, reader.buf = reader.buf.partition(b"\r\n") if b"\r\n" in reader.buf \
                else (b"", b"", reader.buf)
            if not size_line:
                reader._more()
                continue
            size = int(size_line, 16)
            while len(reader.buf) < size + 2:
                reader._more()
            body += reader.buf[:size]
            reader.buf = reader.buf[size + 2:]
        while b"0\r\n\r\n" not in reader.buf:
            reader._more()
    finally:
        s.close()
    assert body == b"first;second;" + b"x" * 200000 + b"end"


def test_streamed_response_with_requests(server):
    r = requests.get(server.url + "/x/stream")
    assert r.headers["Transfer-Encoding"] == "chunked"
    assert r.content == b"first;second;" + b"x" * 200000 + b"end"
    # HTTP/1.0 has no chunked coding: the body is delimited by closing the connection.
    raw = raw_request(server.port, b"GET /x/stream HTTP/1.0\r\n\r\n", timeout=10)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert body == b"first;second;" + b"x" * 200000 + b"end"


def test_extra_headers_and_content_type(server):
    status, headers, body = exchange(server, b"GET /x/headers HTTP/1.1\r\nHost: h\r\n\r\n")
    assert body == b"generated"
    assert [v for n, v in headers if n == "X-Extra"] == ["one", "two"]
    assert ("Content-Type", "text/html; charset=utf-8") in headers  # a .py target (issue 15)
    r = requests.get(server.url + "/x/headers?ext=json")
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    r = requests.get(server.url + "/x/headers?ext=nosuchext")
    assert r.headers["Content-Type"] == "application/octet-stream"
    r = requests.get(server.url + "/x/headers?raw=text/x-custom;+charset=latin-1")
    assert r.headers["Content-Type"] == "text/x-custom; charset=latin-1"
    # extra_headers are added to a custom response too.
    status, headers, body = exchange(server, b"GET /x/headers?custom=1 HTTP/1.1\r\n"
                                             b"Host: h\r\n\r\n")
    assert body == b"custom"
    assert ("X-Custom", "c") in headers
    assert [v for n, v in headers if n == "X-Extra"] == ["one", "two"]


def test_script_without_response_is_empty_200(server):
    r = requests.get(server.url + "/plain")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"  # issue 15
    assert r.headers["Content-Length"] == "0"


def test_top_level_return(server):
    r = requests.get(server.url + "/returned")
    assert (r.status_code, r.text) == (200, "returned")
    r = requests.get(server.url + "/returned?none=1")
    assert (r.status_code, r.content) == (200, b"")


def test_init_ctrl_from_script(server):
    r = requests.get(server.url + "/init_ctrl")
    assert r.status_code == 200
    assert r.text == "a view, inserted verbatim: @not_code\n"


def test_init_py_globals(server):
    assert requests.get(server.url + "/site_global").text == "api-site"


def test_print_goes_to_the_log(server):
    r = requests.get(server.url + "/printer")
    assert r.text == "body only"
    assert "PRINTED-MARKER" not in r.text
    wait_for_log(server, "PRINTED-MARKER-42")


def test_exception_is_a_plain_500_with_traceback_in_log(server):
    r = requests.get(server.url + "/error")
    assert r.status_code == 500
    assert "<h1>500 Internal Server Error</h1><p>Something went wrong on the server." in r.text
    assert "kaboom" not in r.text and "Traceback" not in r.text
    log = wait_for_log(server, "kaboom-<marker>")
    assert "Traceback (most recent call last)" in log
    assert f"{os.sep}error.py\", line 2, in fail" in log
    # The worker survived: the next request is served.
    assert requests.get(server.url + "/plain").status_code == 200


def test_debug_shows_the_traceback(debug_server):
    r = requests.get(debug_server.url + "/error")
    assert r.status_code == 500
    assert "Traceback (most recent call last)" in r.text
    assert "kaboom-&lt;marker&gt;" in r.text          # escaped HTML
    assert "error.py, line 2, in <b>fail</b>" in r.text
    wait_for_log(debug_server, "kaboom-<marker>")


def test_http_errors_from_scripts(server):
    r = requests.get(server.url + "/forbidden")
    assert r.status_code == 403
    assert "<p>no entry</p>" in r.text


def test_header_injection_is_refused(server):
    status, headers, body = exchange(server, b"GET /bad_header HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 500
    assert not any(n.lower() == "injected" for n, _ in headers)
    wait_for_log(server, "X-Bad")


def test_head_on_script_keeps_length(server):
    status, headers, body = exchange(server, b"HEAD /x/respond?kind=response HTTP/1.1\r\n"
                                             b"Host: h\r\n\r\n", head=True)
    assert status == 201
    assert ("Content-Length", "7") in headers


def test_keep_alive_mix_of_dynamic_and_static(server):
    s = server.connect()
    reader = HttpReader(s)
    try:
        for _ in range(3):
            s.sendall(b"GET /x/respond?kind=response HTTP/1.1\r\nHost: h\r\n\r\n"
                      b"GET /.view/v.txt HTTP/1.1\r\nHost: h\r\n\r\n"
                      b"GET /plain HTTP/1.1\r\nHost: h\r\n\r\n")
            assert reader.read()[::2] == (201, b"created")
            assert reader.read()[0] == 404
            assert reader.read()[::2] == (200, b"")
    finally:
        s.close()


def test_access_log_has_dynamic_requests(server):
    requests.get(server.url + "/x/echo?log-me=1")
    deadline = time.monotonic() + 5
    while "log-me=1" not in server.access_log() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert '"GET /x/echo?log-me=1 HTTP/1.1" 200 ' in server.access_log()


def test_remote_disconnect_does_not_matter(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /x/echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert recv_all(s).startswith(b"HTTP/1.1 200 OK\r\n")
