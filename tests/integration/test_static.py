"""Static files served by the C core, through real sockets against a real krait process."""

from __future__ import annotations

import gzip
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import HttpReader, raw_request, recv_all, write_site

KIB = b"0123456789abcdef" * 64


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    write_site(root, {
        "index.html": "<p>home</p>\n",
        "about.htm": "<p>about</p>\n",
        "page.pyml": "<p>plain pyml</p>\n",
        "data.json.pyml": '{"a": 1}\n',
        "css/site.css": "body { color: red }\n",
        "js/app.js": "console.log(1)\n",
        "one.bin": KIB,
        "docs/index.html": "<p>docs</p>\n",
        "robots.txt": "User-agent: *\n",
        "noext": "x",
        "big.txt": "y" * 100000,
        "style.css": "a{}" * 100,
        ".hidden": "secret",
        ".private/db.txt": "secret",
        "sub/.git/config": "secret",
        "100%.txt": "percent",
        "space name.txt": "spaced",
    })
    (root / "style.css.gz").write_bytes(gzip.compress((root / "style.css").read_bytes()))
    return root


@pytest.fixture
def server(site, krait_server):
    return krait_server(site, "--workers", "1")


def test_index_and_headers(server):
    r = requests.get(server.url + "/")
    assert r.status_code == 200
    assert r.text == "<p>home</p>\n"
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Server"].startswith("krait/")
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", r.headers["Date"])
    assert r.headers["Content-Length"] == "12"
    assert r.headers["Cache-Control"] == "max-age=300, must-revalidate"
    assert re.fullmatch(r'"[^"]+"', r.headers["ETag"])
    assert r.headers["Last-Modified"].endswith(" GMT")
    assert r.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("url,body", [
    ("/index", "<p>home</p>\n"),
    ("/index.html", "<p>home</p>\n"),
    ("/about", "<p>about</p>\n"),
    ("/about.htm", "<p>about</p>\n"),
    ("/about.html", "<p>about</p>\n"),       # .html ↔ .htm twin
    ("/page", "<p>plain pyml</p>\n"),
    ("/docs", "<p>docs</p>\n"),              # directory → 301 to /docs/ → index
    ("/docs/", "<p>docs</p>\n"),
    ("/./docs/./index", "<p>docs</p>\n"),
    ("//docs//index.html", "<p>docs</p>\n"),
    ("/100%25.txt", "percent"),
    ("/space%20name.txt", "spaced"),
    ("/css%2Fsite.css", "body { color: red }\n"),  # %2F decodes to a real '/', inside the root
])
def test_extension_and_index_search(server, url, body):
    r = requests.get(server.url + url)
    assert r.status_code == 200, url
    assert r.text == body


@pytest.mark.parametrize("url,ctype", [
    ("/css/site.css", "text/css; charset=utf-8"),
    ("/js/app.js", "application/javascript; charset=utf-8"),
    ("/robots.txt", "text/plain; charset=utf-8"),
    ("/data.json.pyml", "application/json; charset=utf-8"),
    ("/data.json", "application/json; charset=utf-8"),
    ("/page.pyml", "text/html; charset=utf-8"),
    ("/one.bin", "application/octet-stream"),
    ("/noext", "application/octet-stream"),
])
def test_content_types(server, url, ctype):
    r = requests.get(server.url + url)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == ctype


@pytest.mark.parametrize("url", [
    "/.hidden", "/.private/db.txt", "/sub/.git/config", "/css/../.hidden", "/nope",
    "/robots.txt/", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc/passwd", "/.%2e/etc/passwd",
    "//etc/passwd", "/%2Fetc%2Fpasswd", "/docs/../.private/db.txt", "/.py/init.py",
])
def test_never_outside_root_or_hidden(server, url):
    s = server.connect()
    s.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status, _, body = HttpReader(s).read()
    s.close()
    assert status in (400, 404), url
    assert b"secret" not in body and b"root:" not in body


@pytest.mark.parametrize("url", ["/robots.txt%00.html", "/a%zz", "/a%2", "/a%"])
def test_bad_escapes_are_400(server, url):
    s = server.connect()
    s.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status, _, _ = HttpReader(s).read()
    assert status == 400


def test_symlinks(site, krait_server, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret outside")
    os.symlink(outside, site / "out-abs")
    os.symlink("../outside.txt", site / "out-rel")
    os.symlink("robots.txt", site / "in-link")
    os.symlink(".private/db.txt", site / "to-hidden")
    os.symlink("css", site / "dirlink")
    server = krait_server(site)
    for url in ("/out-abs", "/out-rel", "/to-hidden"):
        r = requests.get(server.url + url)
        assert r.status_code == 404, url
        assert "secret" not in r.text
    assert requests.get(server.url + "/in-link").text == "User-agent: *\n"
    assert requests.get(server.url + "/dirlink/site.css").status_code == 200


def test_head_keeps_length(server):
    r = requests.head(server.url + "/big.txt")
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "100000"
    assert r.content == b""


def test_options_and_405(server):
    r = requests.options(server.url + "/robots.txt")
    assert r.status_code == 204
    assert "GET" in r.headers["Allow"] and "HEAD" in r.headers["Allow"]
    r = requests.post(server.url + "/robots.txt", data=b"x")
    assert r.status_code == 405
    assert "GET" in r.headers["Allow"]
    r = requests.delete(server.url + "/robots.txt")
    assert r.status_code == 405
    raw = raw_request(server.port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 204 ")
    assert b"Allow: " in raw


def test_unknown_method_501(server):
    raw = raw_request(server.port, b"BREW /robots.txt HTTP/1.1\r\nHost: x\r\n"
                                   b"Connection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 501 Not Implemented\r\n")


def test_conditional_requests(server):
    url = server.url + "/robots.txt"
    r = requests.get(url)
    etag, lm = r.headers["ETag"], r.headers["Last-Modified"]
    for inm in (etag, f"W/{etag}", f'"nope", {etag}', "*", f'"a" ,W/{etag}'):
        r2 = requests.get(url, headers={"If-None-Match": inm})
        assert r2.status_code == 304, inm
        assert r2.content == b""
        assert r2.headers["ETag"] == etag
        assert r2.headers["Cache-Control"] == r.headers["Cache-Control"]
        assert r2.headers["Last-Modified"] == lm
    assert requests.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    assert requests.get(url, headers={"If-None-Match": ""}).status_code == 200
    assert requests.get(url, headers={"If-Modified-Since": lm}).status_code == 304
    assert requests.get(url, headers={"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}
                        ).status_code == 200
    # RFC 9110 §13.1.3: If-Modified-Since is ignored when If-None-Match is present.
    assert requests.get(url, headers={"If-None-Match": '"other"', "If-Modified-Since": lm}
                        ).status_code == 200
    assert requests.get(url, headers={"If-Modified-Since": "garbage"}).status_code == 200
    assert requests.get(url, headers={"If-Match": '"other"'}).status_code == 412
    assert requests.get(url, headers={"If-Match": etag}).status_code == 200


def test_ranges(server):
    url = server.url + "/one.bin"
    r = requests.get(url, headers={"Range": "bytes=0-99"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "bytes 0-99/1024"
    assert r.content == KIB[:100]
    r = requests.get(url, headers={"Range": "bytes=-10"})
    assert r.content == KIB[-10:]
    r = requests.get(url, headers={"Range": "bytes=1000-"})
    assert r.content == KIB[1000:]
    r = requests.get(url, headers={"Range": "bytes=5000-6000"})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == "bytes */1024"
    r = requests.get(url, headers={"Range": "items=0-1"})
    assert r.status_code == 200 and r.content == KIB
    # If-Range with the current ETag honours the range; with another, the full body.
    etag = r.headers["ETag"]
    r = requests.get(url, headers={"Range": "bytes=0-0", "If-Range": etag})
    assert r.status_code == 206 and r.content == KIB[:1]
    r = requests.get(url, headers={"Range": "bytes=0-0", "If-Range": '"old"'})
    assert r.status_code == 200 and r.content == KIB


def test_multipart_byteranges(server):
    r = requests.get(server.url + "/one.bin", headers={"Range": "bytes=0-9,100-109"})
    assert r.status_code == 206
    ctype = r.headers["Content-Type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=")[1].encode()
    assert int(r.headers["Content-Length"]) == len(r.content)
    parts = r.content.split(b"--" + boundary)
    assert parts[-1] == b"--\r\n"
    bodies = [p.split(b"\r\n\r\n", 1)[1][:-2] for p in parts[1:-1]]
    assert bodies == [KIB[0:10], KIB[100:110]]
    assert b"Content-Range: bytes 0-9/1024" in parts[1]
    assert b"Content-Range: bytes 100-109/1024" in parts[2]


def test_extension_search_follows_every_change_to_the_folder(tmp_path, krait_server):
    # The core remembers what "/d/hello" resolved to, checked against the folder's change
    # time: adding, removing or renaming a file is seen on the very next request.
    site = write_site(tmp_path / "site", {
        "d/hello.py": "import krait\nkrait.response = krait.Response(body='py')\n",
        "d/index.py": "import krait\nkrait.response = krait.Response(body='index')\n",
        "d/other.txt": "x",
    })
    server = krait_server(site, "--workers", "1")
    time.sleep(2.2)                         # the folder has settled: answers are remembered

    def get(path: str) -> tuple[int, bytes]:
        r = requests.get(server.url + path, timeout=10)
        return r.status_code, r.content

    for _ in range(3):
        assert get("/d/hello") == (200, b"py")
        assert get("/d/") == (200, b"index")
    (site / "d" / "hello.html").write_text("html")
    assert get("/d/hello") == (200, b"html")    # .html comes first in the search
    (site / "d" / "index.html").write_text("static index")
    assert get("/d/") == (200, b"static index")
    (site / "d" / "hello.html").unlink()
    (site / "d" / "index.html").unlink()
    assert get("/d/hello") == (200, b"py")
    assert get("/d/") == (200, b"index")
    time.sleep(2.2)
    assert get("/d/hello") == (200, b"py")      # remembered again
    (site / "d" / "hello.py").rename(site / "d" / "renamed.py")
    assert get("/d/hello")[0] == 404
    assert get("/d/renamed") == (200, b"py")
    (site / "d" / "renamed.py").rename(site / "d" / "hello.py")
    assert get("/d/hello") == (200, b"py")
    os.replace(site / "d", site / "old")       # the folder itself goes
    assert get("/d/hello")[0] == 404
    assert get("/old/hello") == (200, b"py")


def test_gzip_sibling(server):
    plain = requests.get(server.url + "/style.css", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers.get("Content-Encoding") is None
    assert "Vary" not in plain.headers       # not looked for: gzip was not asked for
    assert plain.content == b"a{}" * 100
    gz = requests.get(server.url + "/style.css", headers={"Accept-Encoding": "gzip, br"})
    assert gz.headers["Content-Encoding"] == "gzip"
    assert gz.headers["Vary"] == "Accept-Encoding"
    assert gz.headers["Content-Type"] == "text/css; charset=utf-8"
    assert gz.content == b"a{}" * 100  # requests decodes it
    assert gz.headers["ETag"] != plain.headers["ETag"]
    refused = requests.get(server.url + "/style.css", headers={"Accept-Encoding": "gzip;q=0"})
    assert refused.headers.get("Content-Encoding") is None
    assert "Vary" not in refused.headers
    # A file without a sibling never says Vary.
    assert "Vary" not in requests.get(server.url + "/robots.txt").headers


def test_edited_file_served_fresh(server, site):
    url = server.url + "/robots.txt"
    first = requests.get(url)
    (site / "robots.txt").write_text("changed\n")
    os.utime(site / "robots.txt", ns=(time.time_ns(), time.time_ns() + 10**9))
    second = requests.get(url)
    assert second.text == "changed\n"
    assert second.headers["ETag"] != first.headers["ETag"]
    (site / "new.txt").write_text("new")
    assert requests.get(server.url + "/new.txt").text == "new"


def test_keep_alive_http11_and_close(server):
    s = server.connect()
    reader = HttpReader(s)
    for _ in range(3):
        s.sendall(b"GET /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = reader.read()
        assert status == 200 and "connection" not in headers
    s.sendall(b"GET /robots.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = reader.read()
    assert headers["connection"] == "close"
    assert recv_all(s) == b""


def test_http10(server):
    raw = raw_request(server.port, b"GET /robots.txt HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in raw and raw.endswith(b"User-agent: *\n")
    s = server.connect()
    reader = HttpReader(s)
    for _ in range(2):
        s.sendall(b"GET /robots.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = reader.read()
        assert status == 200 and headers.get("connection") != "close"


def test_absolute_form(server):
    raw = raw_request(server.port, b"GET http://example.com/robots.txt HTTP/1.1\r\n"
                                   b"Host: example.com\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"User-agent: *\n")


def test_pipelining_100_in_one_write(server):
    s = server.connect()
    urls = ["/robots.txt", "/index.html", "/nope", "/css/site.css"] * 25
    s.sendall(b"".join(f"GET {u} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for u in urls))
    reader = HttpReader(s)
    expected = {"/robots.txt": (200, b"User-agent: *\n"), "/index.html": (200, b"<p>home</p>\n"),
                "/css/site.css": (200, b"body { color: red }\n")}
    for u in urls:
        status, _, body = reader.read()
        if u == "/nope":
            assert status == 404
        else:
            assert (status, body) == expected[u]


def test_one_byte_at_a_time(server):
    s = server.connect()
    req = b"GET /robots.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: slow\r\n\r\n"
    for i in range(len(req)):
        s.sendall(req[i:i + 1])
        time.sleep(0.002)
    status, _, body = HttpReader(s).read()
    assert status == 200 and body == b"User-agent: *\n"


def test_large_file_sendfile(server):
    r = requests.get(server.url + "/big.txt")
    assert r.content == b"y" * 100000


def test_1000_concurrent_connections(server):
    socks = []
    try:
        for _ in range(1000):
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        for s in socks:
            s.sendall(b"GET /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        for s in socks:
            status, _, body = HttpReader(s, timeout=10).read()
            assert status == 200 and body == b"User-agent: *\n"
    finally:
        for s in socks:
            s.close()


def test_idle_connections_do_not_slow_an_active_one(server):
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2000)]
    try:
        s = server.connect()
        reader = HttpReader(s)
        for _ in range(200):
            s.sendall(b"GET /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            assert reader.read()[0] == 200
    finally:
        for c in idle:
            c.close()


def test_access_log_line(server):
    requests.get(server.url + "/robots.txt", headers={"User-Agent": "tester/1",
                                                       "Referer": "http://r/"})
    deadline = time.monotonic() + 5
    while "tester/1" not in server.access_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = [ln for ln in server.access_log().splitlines() if "tester/1" in ln][0]
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /robots.txt HTTP/1.1"'
        r' 200 14 "http://r/" "tester/1" \d+\.\d{6}', line), line


def test_sigterm_finishes_in_flight_and_exits_0(site, krait_server):
    server = krait_server(site)
    s = server.connect()
    s.sendall(b"GET /big.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    got = {}

    def read():
        got["r"] = HttpReader(s, timeout=10).read()

    t = threading.Thread(target=read)
    t.start()
    assert server.stop() == 0
    t.join()
    assert got["r"][0] == 200 and len(got["r"][2]) == 100000
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1)


DIR_INIT = """\
from krait import config
config.routes = [config.Route("GET", url="/manual", target="docs"),
                 config.Route("POST", url="/docs"), config.Route()]
"""


def test_directory_without_trailing_slash_redirects(tmp_path, krait_server):
    site = write_site(tmp_path / "site", {
        ".py/init.py": DIR_INIT,
        "docs/index.html": '<a href="page.html">page</a>\n',
        "docs/page.html": "<p>page</p>\n",
        "app/index.py": "import krait\nkrait.response = krait.Response(body='app')\n",
        "a b/café/index.htm": "<p>deep</p>\n",
        "noindex/file.txt": "x",
        "docs.txt": "not the directory",
    })
    server = krait_server(site, "--workers", "1")

    def get(url: str, method: str = "GET") -> requests.Response:
        return requests.request(method, server.url + url, allow_redirects=False, timeout=10)

    for url, location in [
            ("/docs", "/docs/"),
            ("/docs", "/docs/"),                  # again: the resolution is remembered
            ("/docs?a=1&b=x%20y", "/docs/?a=1&b=x%20y"),
            ("/./docs", "/docs/"),                # the normalised path
            ("/app", "/app/"),                    # an index a worker answers
            ("/a%20b/caf%C3%A9", "/a%20b/caf%C3%A9/"),  # encoded again from the decoded path
            ("/a%20b/caf%c3%a9", "/a%20b/caf%C3%A9/")]:
        r = get(url)
        assert r.status_code == 301, url
        assert r.headers["Location"] == location, url
        assert r.headers["Content-Length"] == "0"
    r = get("/docs", "HEAD")
    assert r.status_code == 301 and r.headers["Location"] == "/docs/"
    # Followed, the index's relative links resolve inside the directory.
    r = requests.get(server.url + "/docs", timeout=10)
    assert r.status_code == 200 and r.url == server.url + "/docs/"
    assert requests.get(r.url + "page.html", timeout=10).text == "<p>page</p>\n"
    # No redirect: with the slash, a file, a directory without an index, a route's target
    # (the URL asked for is not a directory), another method (a 301 would turn it into a GET).
    assert get("/docs/").text == '<a href="page.html">page</a>\n'
    assert get("/app/").text == "app"
    assert get("/docs/page").status_code == 200
    assert get("/noindex").status_code == 404
    assert get("/manual").status_code == 200
    assert get("/docs", "POST").status_code == 405
    # On a kept-alive connection the next request is answered as usual.
    with server.connect() as s:
        s.sendall(b"GET /docs HTTP/1.1\r\nHost: x\r\n\r\nGET /docs/ HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = HttpReader(s)
        status, headers, body = reader.read()
        assert (status, headers["location"], body) == (301, "/docs/", b"")
        status, _, body = reader.read()
        assert (status, body) == (200, b'<a href="page.html">page</a>\n')
