"""What a site's author meets through a real krait process (issue 15): the '@' trap in .html
pages and ``config.html_templates``, undefined names, error pages, the ``--debug`` page, the
default content type of scripts and the start-up warnings about routes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import HttpReader, KraitProcess, write_site

CONTACT = ("<h1>Contact</h1>\n<style>@media (max-width:600px){h1{font-size:1em}}</style>\n"
           "<p><a href='mailto:ann@example.com'>ann@example.com</a></p>\n")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "template-cache"
    monkeypatch.setenv("KRAIT_TEMPLATE_CACHE", str(path))
    return path


def get(server: KraitProcess, path: str, headers: str = "",
        method: str = "GET", body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    s = server.connect(timeout=10)
    try:
        length = f"Content-Length: {len(body)}\r\n" if body else ""
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: h\r\n{length}{headers}\r\n".encode()
                  + body)
        return HttpReader(s, timeout=10).read(head_request=method == "HEAD")
    finally:
        s.close()


def wait_for_log(server: KraitProcess, *needles: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = server.log()
        if all(needle in text for needle in needles) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_the_at_trap_is_explained_in_the_log(tmp_path: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    site = write_site(tmp_path / "site", {"contact.html": CONTACT,
                                          "fixed.html": CONTACT.replace("@", "@@")})
    server = krait_server(site, "--workers", "1")
    status, _, body = get(server, "/contact")
    assert status == 500 and b"ann@example.com" not in body
    log = wait_for_log(server, "is a template because")
    assert "contact.html\" is a template because its name ends in .html or .htm" in log
    assert "line 3, column 23: @example.com'>ann@example.com</a></p>" in log
    assert "write @@ for a literal @" in log and "html_templates = False" in log
    status, headers, body = get(server, "/fixed")
    assert status == 200 and body.decode() == CONTACT
    assert "etag" in headers  # a page whose only '@' are '@@' is cached like a file


def test_html_templates_false_serves_html_as_written(tmp_path: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    site = write_site(tmp_path / "site", {
        ".py/init.py": "from krait import config\nconfig.html_templates = False\nname = 'Ann'\n",
        "contact.html": CONTACT,
        "hello.pyml": "Hello @name@",
    })
    server = krait_server(site, "--workers", "1")
    status, headers, body = get(server, "/contact")
    assert status == 200 and body.decode() == CONTACT
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "etag" in headers and "no-store" not in headers["cache-control"]
    assert get(server, "/hello")[2] == b"Hello Ann"


def test_html_templates_must_be_a_bool(tmp_path: Path) -> None:
    import subprocess
    import sys

    site = write_site(tmp_path / "site", {
        ".py/init.py": "from krait import config\nconfig.html_templates = 'no'\n"})
    proc = subprocess.run([sys.executable, "-m", "krait", str(site), "--port", "0",
                           "--host", "127.0.0.1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"{site / '.py/init.py'}:2: krait.config.html_templates must be True or False" \
        in proc.stderr


def test_an_undefined_name_is_named_in_the_log(tmp_path: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    site = write_site(tmp_path / "site", {".py/init.py": "site_name = 'x'\n",
                                          "p.pyml": "<h1>\n@site_nme@</h1>\n"})
    server = krait_server(site, "--workers", "1")
    assert get(server, "/p")[0] == 500
    log = wait_for_log(server, "is not defined")
    assert "NameError: name 'site_nme' is not defined (did you mean 'site_name'?) in " \
           f'template "{site / "p.pyml"}", line 2' in log


ERRORS_INIT = '''\
from krait import config
config.error_pages = {404: "errors/404.html", 500: ".view/500.html", 403: "errors/403.txt",
                      409: "errors/broken.pyml"}
site_name = "Example"
'''
ERRORS_SITE = {
    ".py/init.py": ERRORS_INIT,
    "errors/404.html": "<h1>@site_name@: @error.status@ @error.reason@</h1><p>@error.message@</p>",
    ".view/500.html": "<h1>Sorry (@error.status@)</h1>",
    "errors/403.txt": "no entry @ all",
    "errors/broken.pyml": "@(1 / 0)@",
    "missing.py": "from krait.errors import NotFound\nraise NotFound('No <such> thing')\n",
    "boom.py": "raise RuntimeError('boom')\n",
    "forbidden.py": "from krait.errors import Forbidden\nraise Forbidden()\n",
    "conflict.py": "from krait.errors import HTTPError\nraise HTTPError(409, 'taken')\n",
    "gone.py": "import krait\nkrait.response = krait.ErrorResponse(410, 'moved away')\n",
    "custom.py": "import krait\nr = krait.ErrorResponse(404)\nr.body = 'mine'\n"
                 "krait.response = r\n",
    "allow.py": "from krait.errors import MethodNotAllowed\nraise MethodNotAllowed(['POST'])\n",
}


def test_error_pages_of_the_site(tmp_path: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    server = krait_server(write_site(tmp_path / "site", ERRORS_SITE), "--workers", "1")
    status, headers, body = get(server, "/missing")
    assert status == 404 and headers["content-type"] == "text/html; charset=utf-8"
    assert body == b"<h1>Example: 404 Not Found</h1><p>No &lt;such&gt; thing</p>"
    assert "no-store" in headers["cache-control"]
    status, _, body = get(server, "/boom")
    assert (status, body) == (500, b"<h1>Sorry (500)</h1>")
    status, headers, body = get(server, "/forbidden")
    assert (status, body) == (403, b"no entry @ all")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    # The site's page fails: the default page, and the log says why.
    status, headers, body = get(server, "/conflict")
    assert status == 409 and b"<h1>409 Conflict</h1><p>taken</p>" in body
    assert "the error page" in wait_for_log(server, "broken.pyml for 409 failed")
    # No page of the site for 410: the default one, with the message.
    status, _, body = get(server, "/gone")
    assert status == 410 and b"<h1>410 Gone</h1><p>moved away</p>" in body
    # A response whose body the script wrote is its own.
    assert get(server, "/custom")[2] == b"mine"
    # Headers of the error stay (Allow of a 405).
    status, headers, body = get(server, "/allow")
    assert status == 405 and headers["allow"] == "POST"
    assert b"<h1>405 Method Not Allowed</h1>" in body


def test_error_bodies_in_json_for_clients_that_ask(tmp_path: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    server = krait_server(write_site(tmp_path / "site", ERRORS_SITE), "--workers", "1")
    import json

    for accept in ("application/json", "application/problem+json, text/html;q=0.5"):
        status, headers, body = get(server, "/missing", f"Accept: {accept}\r\n")
        assert status == 404 and headers["content-type"] == "application/json"
        assert json.loads(body) == {"status": 404, "reason": "Not Found",
                                    "message": "No <such> thing"}
    status, headers, body = get(server, "/boom", "Accept: application/json\r\n")
    assert (status, json.loads(body)) == (500, {"status": 500, "message": None,
                                                "reason": "Internal Server Error"})
    # A browser's Accept and */* get HTML.
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    for accept in (browser, "*/*"):
        assert get(server, "/missing", f"Accept: {accept}\r\n")[1]["content-type"] \
            == "text/html; charset=utf-8"


@pytest.mark.parametrize(("pages", "message"), [
    ("{404: 'nope.html'}", "krait.config.error_pages[404] = 'nope.html': no such file"),
    ("{200: 'e.html'}", "krait.config.error_pages: 200 is not an error status"),
    ("{404: '../e.html'}", "krait.config.error_pages[404] = '../e.html' leaves the site root"),
    ("{404: 'e.py'}", "krait.config.error_pages[404] = 'e.py': a page must be a template or a "
                      "file, not a .py script"),
    ("['e.html']", "krait.config.error_pages must be a dict"),
])
def test_error_pages_are_checked_at_start_up(tmp_path: Path, pages: str, message: str) -> None:
    import subprocess
    import sys

    site = write_site(tmp_path / "site", {
        ".py/init.py": f"from krait import config\nconfig.error_pages = {pages}\n",
        "e.html": "x", "e.py": ""})
    proc = subprocess.run([sys.executable, "-m", "krait", str(site), "--port", "0",
                           "--host", "127.0.0.1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"{site / '.py/init.py'}:2: {message}" in proc.stderr


DEBUG_SITE = {
    ".py/init.py": "from krait import config\n"
                   "config.routes = [config.Route('ANY', regex=r'/p/(?P<id>\\d+)', "
                   "target='p.html'), config.Route()]\n",
    ".py/helpers.py": "def ratio(a, b):\n    total = a + b\n    return a / b\n",
    "p.html": "<h1>Ratio</h1>\n@{ import helpers }\n<p>@helpers.ratio(1, 0)@</p>\n",
}


def test_the_debug_page(tmp_path: Path, krait_server, cache_dir: Path) -> None:  # type: ignore[no-untyped-def]
    site = write_site(tmp_path / "site", DEBUG_SITE)
    server = krait_server(site, "--workers", "1", "--debug")
    body = b"name=Ann&city=Paris+%26+Lyon"
    status, headers, page_bytes = get(
        server, "/p/42?x=1", "Content-Type: application/x-www-form-urlencoded\r\n"
        "Cookie: session=abc; theme=dark\r\nX-Test: <hello>\r\n", method="POST", body=body)
    page = page_bytes.decode()
    assert status == 500 and headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>ZeroDivisionError</h1><p>division by zero</p>" in page
    # The author's frames come first, innermost first, with the template's own line.
    mine = page[page.index("<h2>Your code</h2>"):page.index("<h2>Traceback")]
    helpers, template = mine.index("helpers.py, line 3"), mine.index("p.html, line 3, template")
    assert helpers < template
    assert '<span class="hit">    3  &lt;p&gt;@helpers.ratio(1, 0)@&lt;/p&gt;</span>' in mine
    assert '<span class="hit">    3      return a / b</span>' in mine
    assert "    1  &lt;h1&gt;Ratio&lt;/h1&gt;" in mine  # lines around it
    assert str(cache_dir) not in mine and "krait/worker.py" not in mine
    # krait's and Mako's frames are folded.
    assert "of krait and libraries</summary>" in page and "krait/worker.py" in page
    # The request and the route.
    assert "<th>method</th><td>POST</td>" in page
    assert "<th>URL</th><td>/p/42?x=1</td>" in page
    assert "<th>x-test</th><td>&lt;hello&gt;</td>" in page
    assert "<th>city</th><td>Paris &amp; Lyon</td>" in page
    assert "<th>session</th><td>abc</td>" in page and "<th>theme</th><td>dark</td>" in page
    assert "<th>id</th><td>42</td>" in page
    assert f"Route(verb=&#x27;ANY&#x27;, regex=&#x27;/p/(?P&lt;id&gt;\\\\d+)&#x27;, " \
           f"target=&#x27;p.html&#x27;)  (set at {site / '.py/init.py'}:2)" in page
    assert "warning: --debug" not in server.log()  # listening on 127.0.0.1 only


def test_no_debug_page_without_debug(tmp_path: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    server = krait_server(write_site(tmp_path / "site", DEBUG_SITE), "--workers", "1")
    status, _, body = get(server, "/p/1")
    assert status == 500 and b"ZeroDivisionError" not in body and b"helpers" not in body


def test_loopback_hosts() -> None:
    from krait.supervisor import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("") and not _is_loopback("0.0.0.0") and not _is_loopback("10.0.0.1")


def test_routes_that_never_match_are_warned_about(tmp_path: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    site = write_site(tmp_path / "site", {
        ".py/init.py": (
            "from krait import config\n"
            "config.routes = [\n"
            "    config.Route('POST', url='/form', target='a.py'),\n"     # 3
            "    config.Route('GET', url='about', target='a.py'),\n"      # 4
            "    config.Route(),\n"                                        # 5
            "    config.Route('GET', url='/late', target='a.py'),\n"      # 6
            "    config.Route('POST', url='/form', target='a.py'),\n"     # 7
            "    config.Route('POST', url='/other', target='a.py'),\n"    # 8
            "    config.Route('WEBSOCKET', url='/ws', target='a.py'),\n"  # 9
            "    config.Route('ANY', regex='/x.*', target='a.py'),\n"     # 10
            "]\n"),
        "a.py": ""})
    server = krait_server(site, "--workers", "1")
    init = site / ".py/init.py"
    log = server.log()
    assert f"{init}:4: warning: route url 'about' never matches: request paths start with " \
           "'/' (write '/about')" in log
    assert f"{init}:6: warning: Route(verb='GET', url='/late', target='a.py') never matches: " \
           f"the catch-all Route(verb='GET') at {init}:5 comes first and takes every GET " \
           "request (routes are tried in order: put the catch-all last)" in log
    assert f"{init}:7: warning: Route(verb='POST', url='/form', target='a.py') never matches: " \
           f"Route(verb='POST', url='/form', target='a.py') at {init}:3 has the same url" in log
    for line in (3, 5, 8, 9, 10):
        assert f"{init}:{line}: warning" not in log


def test_route_warnings_for_any() -> None:
    from krait import config
    from krait._site import route_warnings

    catch_all = config.Route("ANY")
    late = config.Route("POST", url="/p")
    assert len(route_warnings([catch_all, late, config.Route("ANY", url="/q")])) == 2
    assert route_warnings([config.Route(), config.Route("ANY", url="/q")]) == []
    assert route_warnings([config.Route(url="/a"), config.Route("ANY", url="/a")]) == []
