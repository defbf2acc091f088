"""site-example/ through a real krait process (issue 7): every page over HTTP, the guestbook
(POST, redirect, escaping, the cookie counter), the upload, the JSON API, the regex route, the
decorated controller, the cache rules of its CSS and JS, the WebSocket chat with two
clients, and the live counter (a POST publishes to the channel its WebSockets are on). The
site is copied to a temporary folder first, so its SQLite database lands there."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
import websocket

from tests.conftest import KraitProcess, raw_request

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "site-example"

#: Every page a visitor can reach from the navigation, and a word each must show.
PAGES = {
    "/": "A small site on krait",
    "/guestbook": "Sign the guestbook",
    "/upload": "Upload a file",
    "/chat": "/chat/socket",
    "/counter": "clicks so far",
    "/hello/world": "Hello, world!",
    "/hello": "Hello!",
    "/stats": "StatsCtrl",
    "/about": "About this site",
}


def copy_example(dest: Path, docs_html: Path | None = None) -> Path:
    """site-example/ (without a database or a documentation build left by a manual run), with
    ``docs_html`` (a Sphinx build of docs/) as its docs/ folder, as the README's command
    builds it."""
    site = dest / "site-example"

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = set(shutil.ignore_patterns("__pycache__", "*.db", "*.db-*")(folder, names))
        return skip | ({"docs"} if Path(folder) == SITE else set())

    shutil.copytree(SITE, site, ignore=ignore)
    if docs_html is not None:
        shutil.copytree(docs_html, site / "docs")
    return site


@pytest.fixture
def server(tmp_path: Path, krait_server, monkeypatch: pytest.MonkeyPatch) -> KraitProcess:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KRAIT_TEMPLATE_CACHE", str(tmp_path / "template-cache"))
    site = copy_example(tmp_path)
    return krait_server(site, "--workers", "2")


class HtmlChecker(HTMLParser):
    """Fails on what a browser would silently repair: unclosed or mismatched elements."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}
    #: Elements whose end tag HTML lets the author leave out.
    OPTIONAL_END = {"li", "p", "dt", "dd", "tr", "td", "th", "option"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack[-1] != tag and self.stack[-1] in self.OPTIONAL_END:
            self.stack.pop()
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()


def assert_valid_html(text: str) -> None:
    checker = HtmlChecker()
    checker.feed(text)
    checker.close()
    assert checker.doctype, "no <!doctype html>"
    assert not checker.errors, checker.errors
    assert not checker.stack, f"never closed: {checker.stack}"


def test_every_page_answers_valid_html(server: KraitProcess) -> None:
    for path, words in PAGES.items():
        r = requests.get(server.url + path, timeout=10)
        assert r.status_code == 200, path
        assert r.headers["content-type"] == "text/html; charset=utf-8", path
        assert words in r.text, path
        assert '<link rel="stylesheet" href="/css/site.css">' in r.text, path  # the layout
        assert_valid_html(r.text)
    # The database went to the copy, never to the repository's site-example/.
    assert (server.site / ".private" / "site.db").is_file()


def test_hidden_folders_are_not_served(server: KraitProcess) -> None:
    requests.get(server.url + "/guestbook", timeout=10)  # the database exists now
    for path in ("/.private/site.db", "/.py/init.py", "/.py/storage.py", "/.view/layout.html"):
        assert requests.get(server.url + path, timeout=10).status_code == 404, path


def test_guestbook_post_redirects_and_shows_the_entry_escaped(server: KraitProcess) -> None:
    s = requests.Session()
    name, message = "<script>alert(1)</script>", 'Hi & "bye" <b>'
    r = s.post(server.url + "/guestbook", data={"name": name, "message": message},
               allow_redirects=False, timeout=10)
    assert r.status_code == 302
    assert r.headers["location"] == "/guestbook?thanks=1"
    page = s.get(server.url + r.headers["location"], timeout=10)
    assert page.status_code == 200
    assert 'id="thanks"' in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "Hi &amp; &quot;bye&quot; &lt;b&gt;" in page.text
    assert "<script>" not in page.text
    assert_valid_html(page.text)
    # Several entries: newest first.
    s.post(server.url + "/guestbook", data={"name": "Ada", "message": "second"}, timeout=10)
    text = s.get(server.url + "/guestbook", timeout=10).text
    assert "<h2>2 messages</h2>" in text
    assert text.index("second") < text.index("alert(1)")


def test_guestbook_refuses_bad_posts(server: KraitProcess) -> None:
    r = requests.post(server.url + "/guestbook", data={"name": "x", "message": "  "}, timeout=10)
    assert r.status_code == 400
    assert "Please give a name and a message." in r.text
    r = requests.get(server.url + "/sign.py", timeout=10)   # the script by its own URL
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"


def test_visit_counter_cookie_increments(server: KraitProcess) -> None:
    s = requests.Session()
    for expected in (1, 2, 3):
        r = s.get(server.url + "/guestbook", timeout=10)
        assert f'<strong id="visits">{expected}</strong>' in r.text
        set_cookie = r.headers["set-cookie"]
        assert set_cookie.startswith(f"visits={expected}; path=/guestbook; max-age=31536000")
        assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    # A tampered cookie starts the count again instead of failing.
    r = requests.get(server.url + "/guestbook", cookies={"visits": "lots"}, timeout=10)
    assert '<strong id="visits">1</strong>' in r.text


def test_upload_shows_name_size_and_sha256(server: KraitProcess) -> None:
    data = os.urandom(200_000)
    r = requests.post(server.url + "/upload",
                      files={"file": ("<notes>.bin", data, "application/octet-stream")},
                      data={"note": "é <i>"}, timeout=10)
    assert r.status_code == 200
    assert '<dd id="up-name">&lt;notes&gt;.bin</dd>' in r.text
    assert '<dd id="up-size">200000 bytes</dd>' in r.text
    assert hashlib.sha256(data).hexdigest() in r.text
    assert '<dd id="up-note">é &lt;i&gt;</dd>' in r.text
    assert_valid_html(r.text)
    # Nothing is stored.
    assert not (server.site / ".private" / "uploads").exists()
    # Not multipart, or no file: 400.
    assert requests.post(server.url + "/upload", data={"x": "1"}, timeout=10).status_code == 400
    r = requests.post(server.url + "/upload", files={"note": (None, "only a note")}, timeout=10)
    assert r.status_code == 400


def test_upload_over_the_limit_is_413(server: KraitProcess) -> None:
    head = (b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b"
            b"\r\nContent-Length: %d\r\n\r\n" % (8 * 1024 * 1024 + 1))
    answer = raw_request(server.port, head)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


def test_json_api(server: KraitProcess) -> None:
    r = requests.get(server.url + "/api/entries", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"count": 0, "entries": []}
    for i in range(3):
        requests.post(server.url + "/guestbook", data={"name": f"<n{i}>", "message": "m"},
                      timeout=10)
    body = requests.get(server.url + "/api/entries?limit=2", timeout=10).json()
    assert body["count"] == 2
    assert [e["name"] for e in body["entries"]] == ["<n2>", "<n1>"]   # raw text in JSON
    assert set(body["entries"][0]) == {"id", "name", "message", "created"}
    for bad in ("abc", "0", "101"):
        r = requests.get(server.url + f"/api/entries?limit={bad}", timeout=10)
        assert r.status_code == 400, bad


def test_regex_route_with_a_url_parameter(server: KraitProcess) -> None:
    r = requests.get(server.url + "/hello/Ada", timeout=10)
    assert "<h1>Hello, Ada!</h1>" in r.text
    r = requests.get(server.url + "/hello/%3Cem%3Ehi", timeout=10)
    assert "<h1>Hello, &lt;em&gt;hi!</h1>" in r.text
    assert requests.get(server.url + "/hello/a/b", timeout=10).status_code == 404
    assert requests.get(server.url + "/hello/" + "x" * 41, timeout=10).status_code == 404


def test_controller_from_the_decorator(server: KraitProcess) -> None:
    requests.post(server.url + "/guestbook", data={"name": "a", "message": "b"}, timeout=10)
    r = requests.get(server.url + "/stats", headers={"User-Agent": "<agent>"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<dd id="stat-entries">1</dd>' in r.text
    assert '<dd id="req-method">GET</dd>' in r.text
    assert '<dd id="req-url">/stats</dd>' in r.text
    assert "&lt;agent&gt;" in r.text


def test_css_and_js_cache_headers(server: KraitProcess) -> None:
    for path, ctype in (("/css/site.css", "text/css"), ("/js/chat.js", "application/javascript")):
        r = requests.get(server.url + path, timeout=10)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(ctype)
        assert r.headers["cache-control"] == "public, max-age=864000, must-revalidate"
        etag = r.headers["etag"]
        again = requests.get(server.url + path, headers={"If-None-Match": etag}, timeout=10)
        assert again.status_code == 304
    # Pages are dynamic: never stored.
    r = requests.get(server.url + "/guestbook", timeout=10)
    assert r.headers["cache-control"] == "no-cache, no-store, must-revalidate"


def test_docs_route_without_a_build(server: KraitProcess) -> None:
    """Not built: /docs/ says how to build the documentation, in a page of its own."""
    r = requests.get(server.url + "/docs/", timeout=10)
    assert r.status_code == 404
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "The documentation has not been built" in r.text
    assert "python -m sphinx -q docs site-example/docs" in r.text
    assert_valid_html(r.text)


def test_docs_serves_the_built_site(tmp_path: Path, krait_server, docs_site,  # type: ignore[no-untyped-def]
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With the documentation built into site-example/docs/ (as the README's command does),
    /docs/ is its HTML, sent as Sphinx wrote it: pages with "@" and Python code in them are not
    run as templates, the search box's scripts and index are there, and the old Markdown URLs
    redirect to the pages."""
    monkeypatch.setenv("KRAIT_TEMPLATE_CACHE", str(tmp_path / "template-cache"))
    html = docs_site.check()
    server = krait_server(copy_example(tmp_path, html), "--workers", "2")
    r = requests.get(server.url + "/docs", allow_redirects=False, timeout=10)
    assert r.status_code == 301 and r.headers["location"] == "/docs/"
    r = requests.get(server.url + "/docs/", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.content == (html / "index.html").read_bytes()
    for page in ("tutorial.html", "templates.html", "benchmarks.html", "api/request.html",
                 "search.html"):
        r = requests.get(f"{server.url}/docs/{page}", timeout=10)
        assert r.status_code == 200, page
        assert r.headers["content-type"] == "text/html; charset=utf-8", page
        assert r.content == (html / page).read_bytes(), page   # as built, not rendered
    assert "@{" in requests.get(server.url + "/docs/templates.html", timeout=10).text
    for asset, ctype in (("searchindex.js", "javascript"), ("_static/searchtools.js", "javascript"),
                         ("_static/alabaster.css", "text/css")):
        r = requests.get(f"{server.url}/docs/{asset}", timeout=10)
        assert r.status_code == 200 and ctype in r.headers["content-type"], asset
    r = requests.get(server.url + "/docs/tutorial.md", allow_redirects=False, timeout=10)
    assert r.status_code == 301 and r.headers["location"] == "/docs/tutorial.html"
    assert requests.get(server.url + "/docs/nope.html", timeout=10).status_code == 404
    assert requests.get(server.url + "/docs/..%2Fsign.py", timeout=10).status_code in (400, 404)
    # Every page of the example site links to it.
    assert '<a href="/docs/">Docs</a>' in requests.get(server.url + "/", timeout=10).text


def ws_connect(server: KraitProcess) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{server.port}/chat/socket", timeout=10)


def recv_message(ws: websocket.WebSocket, text: str) -> dict[str, object]:
    """The next chat line with this text (lines sent before it are skipped)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = json.loads(ws.recv())
        if message.get("text") == text:
            return message
    raise AssertionError(f"no message {text!r}")


def test_chat_broadcasts_to_every_client(server: KraitProcess) -> None:
    # Two workers: the clients may well be in different processes; the room still reaches both.
    alice, bob = ws_connect(server), ws_connect(server)
    try:
        alice.send(json.dumps({"name": "<Alice>", "text": "hello from alice"}))
        for ws in (alice, bob):
            m = recv_message(ws, "hello from alice")
            assert m["type"] == "message" and m["name"] == "<Alice>"
        bob.send(json.dumps({"name": "Bob", "text": "hi alice"}))
        for ws in (alice, bob):
            assert recv_message(ws, "hi alice")["name"] == "Bob"
        # Nameless and empty messages; anything but JSON gets an error back.
        bob.send(json.dumps({"text": "no name"}))
        assert recv_message(alice, "no name")["name"] == "anonymous"
        alice.send("not json")
        assert json.loads(alice.recv())["type"] == "error"
        # A newcomer gets the history, oldest first.
        carol = ws_connect(server)
        try:
            texts = [json.loads(carol.recv())["text"] for _ in range(3)]
            assert texts == ["hello from alice", "hi alice", "no name"]
        finally:
            carol.close()
    finally:
        alice.close()
        bob.close()
    assert requests.get(server.url + "/stats", timeout=10).text.count(
        '<dd id="stat-chat">3</dd>') == 1


def test_chat_socket_refuses_plain_requests(server: KraitProcess) -> None:
    # The script by its own URL without an Upgrade: refused.
    assert requests.get(server.url + "/chat-socket.py", timeout=10).status_code == 400
    assert requests.get(server.url + "/chat/socket", timeout=10).status_code in (404, 405)


def test_counter_page_websocket_hears_a_post(server: KraitProcess) -> None:
    page = requests.get(server.url + "/counter", timeout=10)
    assert '<output id="count">0</output>' in page.text
    # Several pages open at once, in both workers: each is told the value it starts from.
    sockets = [websocket.create_connection(f"ws://127.0.0.1:{server.port}/counter/socket",
                                           timeout=10) for _ in range(6)]
    try:
        for ws in sockets:
            assert json.loads(ws.recv()) == {"count": 0}
        # The page's script posts and reads JSON back; every open page hears the new value.
        r = requests.post(server.url + "/counter", headers={"Accept": "application/json"},
                          timeout=10)
        assert r.status_code == 200 and r.json() == {"count": 1}
        for ws in sockets:
            assert json.loads(ws.recv()) == {"count": 1}
        # A plain form post (no script) is redirected back to the page, which shows the value.
        r = requests.post(server.url + "/counter", timeout=10)
        assert r.history[0].status_code == 302 and r.url == server.url + "/counter"
        assert '<output id="count">2</output>' in r.text
        for ws in sockets:
            assert json.loads(ws.recv()) == {"count": 2}
    finally:
        for ws in sockets:
            ws.close()
    # The handler and the socket script refuse what they are not for.
    assert requests.get(server.url + "/counter-post.py", timeout=10).status_code == 405
    assert requests.get(server.url + "/counter-socket.py", timeout=10).status_code == 400
