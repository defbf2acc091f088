"""Settings the core applies itself, before any worker sees a request: the Server header,
allowed hosts (with an absolute-form target's authority as the host), never-served names,
static-only folders, .html files that are not templates, and the core's own error pages
(the site's page, or the workers' default page; JSON to a client that prefers it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import HttpReader, KraitProcess, write_site

INIT = '''\
from krait import config

config.server_header = "{server}"
config.allowed_hosts = ["good.example", ".corp.example"]
config.never_serve = ["*.secret"]
config.static_only = ["files/"]
config.html_templates = False
config.error_pages = {{404: "errors/404.html", 400: "errors/400.pyml"}}
'''

FILES: dict[str, str | bytes] = {
    "a.txt": "hello\n",
    "data.secret": "SECRET\n",
    "notes.bak": "a .bak is served once never_serve no longer names it\n",
    "page.html": "<p>mail ann@example.com</p>\n",
    "host.py": ("import krait\n"
                "krait.response = krait.Response(body=krait.request.headers['host'])\n"),
    "files/run.py": "print('RAN')\n",
    "errors/404.html": "<h1>Lost? Our own 404 page.</h1>\n",
    "errors/400.pyml": "<h1>@error.status@</h1>\n",
}


def get(server: KraitProcess, target: str, host: str | None = "good.example",
        headers: str = "") -> tuple[int, dict[str, str], bytes]:
    s = server.connect(timeout=10)
    try:
        host_line = f"Host: {host}\r\n" if host is not None else ""
        s.sendall(f"GET {target} HTTP/1.1\r\n{host_line}{headers}\r\n".encode())
        return HttpReader(s, timeout=10).read()
    finally:
        s.close()


@pytest.fixture
def server(tmp_path: Path, krait_server) -> KraitProcess:  # noqa: ANN001
    write_site(tmp_path / "site", {".py/init.py": INIT.format(server="Shop/2"), **FILES})
    return krait_server(tmp_path / "site", "--workers", "1")


def test_server_header(server: KraitProcess, tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    status, headers, _ = get(server, "/a.txt")
    assert status == 200 and headers["server"] == "Shop/2"
    write_site(tmp_path / "bare", {".py/init.py": INIT.format(server=""), **FILES})
    bare = krait_server(tmp_path / "bare", "--workers", "1")
    status, headers, _ = get(bare, "/a.txt")
    assert status == 200 and "server" not in headers


@pytest.mark.parametrize(("host", "expected"), [
    ("good.example", 200), ("GOOD.example:8080", 200), ("corp.example", 200),
    ("www.corp.example", 200), ("evil.example", 400), ("notcorp.example", 400),
    ("good.example.evil", 400), (None, 400)])
def test_allowed_hosts_static_and_python(server: KraitProcess, host: str | None,
                                         expected: int) -> None:
    assert get(server, "/a.txt", host)[0] == expected
    assert get(server, "/host.py", host)[0] == expected


def test_absolute_form_authority_is_the_host(server: KraitProcess) -> None:
    # RFC 9112 §3.2.2: the target's authority wins over the Host field, for the check and
    # for what the page sees.
    status, _, body = get(server, "http://www.corp.example/host.py", host="evil.example")
    assert status == 200 and body == b"www.corp.example"
    assert get(server, "http://evil.example/a.txt", host="good.example")[0] == 400


def test_never_serve_is_the_sites_list(server: KraitProcess) -> None:
    status, _, body = get(server, "/data.secret")
    assert status == 404 and b"SECRET" not in body
    assert get(server, "/DATA.SECRET")[0] == 404  # any case
    assert get(server, "/notes.bak")[0] == 200  # the site replaced the default list


def test_static_only_folder(server: KraitProcess) -> None:
    status, headers, body = get(server, "/files/run.py")
    assert status == 200 and body == b"print('RAN')\n"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-type"].startswith("text/plain")


def test_html_not_templates_served_by_the_core(server: KraitProcess) -> None:
    status, headers, body = get(server, "/page.html")
    assert status == 200 and body == b"<p>mail ann@example.com</p>\n"
    assert "etag" in headers and headers["accept-ranges"] == "bytes"  # the core's answer


def test_core_errors_use_the_sites_page(server: KraitProcess) -> None:
    status, headers, body = get(server, "/missing.txt")
    assert status == 404 and body == b"<h1>Lost? Our own 404 page.</h1>\n"
    assert headers["content-type"] == "text/html; charset=utf-8"
    # A template page needs a worker to render it: the core sends the default page.
    status, headers, body = get(server, "/a%zz")
    assert status == 400 and b"400 Bad Request" in body and b"@error" not in body
    # Statuses without a page of the site's get the workers' default page.
    s = server.connect(timeout=10)
    try:
        s.sendall(b"GET /a.txt HTTP/1.1\r\nHost: good.example\r\nTransfer-Encoding: gzip\r\n\r\n")
        status, headers, body = HttpReader(s, timeout=10).read()
    finally:
        s.close()
    assert status == 501 and b"<title>501 Not Implemented</title>" in body


def test_core_errors_in_json(server: KraitProcess) -> None:
    status, headers, body = get(server, "/missing.txt", headers="Accept: application/json\r\n")
    assert status == 404 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"status": 404, "reason": "Not Found", "message": None}
    # A browser's Accept means HTML.
    status, headers, _ = get(server, "/missing.txt",
                             headers="Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n")
    assert headers["content-type"].startswith("text/html")
    status, headers, _ = get(server, "/missing.txt",
                             headers="Accept: text/html;q=0.5, application/json\r\n")
    assert headers["content-type"] == "application/json"
