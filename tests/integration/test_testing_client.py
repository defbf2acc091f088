"""krait.testing.Client against a real krait: every request option, cookies kept, redirects,
uploads, WebSockets; and sessions, CSRF and flash messages end to end (file and Redis
stores, several workers)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from krait.testing import Client, SiteStartError
from tests.test_sessions import redis_url  # noqa: F401  (a fixture: its own redis-server)

SECRET = "t" * 40


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


def make_site(root: Path, store: str | None = None) -> Path:
    store_line = f"config.session_store = {store!r}" if store else ""
    return write(root, {
        ".py/init.py": f"""
            from krait import config
            config.session_secret = {SECRET!r}
            {store_line}
            config.routes = [
                config.Route("ANY", url="/echo", target="echo.py"),
                config.Route("POST", url="/sign", target="sign.py"),
                config.Route("WEBSOCKET", url="/ws", target="ws.py"),
                config.Route(),
            ]
            """,
        "echo.py": """
            import krait
            req = krait.request
            ctype = req.headers.get("content-type", "")
            files = {}
            form = {}
            if ctype.startswith("multipart/"):
                for part in req.get_multipart_form():
                    if part.filename is None:
                        form[part.name] = part.data.decode()
                    else:
                        files[part.name] = [part.filename, part.content_type, part.data.decode()]
            elif ctype.startswith("application/x-www-form-urlencoded"):
                form = req.get_post_form()
            krait.response = krait.JsonResponse({
                "method": req.http_method, "query": req.query, "form": form, "files": files,
                "json": req.json() if ctype == "application/json" else None,
                "checks": req.form_list("check") if form else [],
                "cookies": req.cookies, "x": req.headers.get("x-test")})
            """,
        "setcookie.py": """
            import krait
            krait.cookie.set_cookie(krait.cookie.Cookie("plain", "yes"))
            """,
        "away.py": """
            import krait
            krait.response = krait.ResponseRedirect("/count", status_code=303)
            """,
        "count.py": """
            import krait
            krait.session["n"] = krait.session.get("n", 0) + 1
            krait.response = krait.JsonResponse({"n": krait.session["n"]})
            """,
        "form.html": """
            <form method="post" action="/sign">
            <input type="hidden" name="csrf_token" value="@krait.csrf_token()@">
            </form>
            @for category, message in krait.get_flashed_messages(with_categories=True):
            <p class="@category@">@message@</p>
            @/for@
            """,
        "sign.py": """
            import krait
            krait.check_csrf()
            krait.flash("Signed by " + krait.request.get_post_form().get("name", "?"), "ok")
            krait.response = krait.ResponseRedirect("/form", status_code=303)
            """,
        "ws.py": """
            import krait
            from krait.websockets import WebsocketsCtrlBase, WebsocketsResponse

            class Ctrl(WebsocketsCtrlBase):
                def __init__(self, n):
                    super().__init__()
                    self.n = n

                def on_in_message(self, message):
                    if isinstance(message, str):
                        self.push_out_message(f"{message.upper()} {self.n}")
                    else:
                        self.push_out_message(bytes(reversed(message)))

            # The handshake's script reads the session and hands the controller what it needs.
            krait.websockets.response = WebsocketsResponse(Ctrl(krait.session.get("n")))
            """,
    })


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    site = make_site(tmp_path_factory.mktemp("site"))
    with Client(site, args=["--debug"]) as c:
        yield c


def test_methods_bodies_and_headers(client: Client) -> None:
    r = client.get("/echo", query={"a": "1", "b": ["x", "y"]}, headers={"X-Test": "hi"})
    assert r.status == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json()["query"] == {"a": "1", "b": "y"} and r.json()["x"] == "hi"
    r = client.post("/echo", data={"name": "Ada Lovelace", "check": ["1", "2"]})
    assert r.json()["method"] == "POST"
    assert r.json()["form"]["name"] == "Ada Lovelace" and r.json()["checks"] == ["1", "2"]
    assert client.put("/echo", json={"k": [1, 2]}).json()["json"] == {"k": [1, 2]}
    assert client.delete("/echo").json()["method"] == "DELETE"
    assert client.patch("/echo", json=1).json()["json"] == 1
    assert client.head("/echo").body == b""
    assert client.get("/nothing-here").status == 404


def test_uploads(client: Client, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"PNG!")
    r = client.post("/echo", data={"title": "Hi"}, files={
        "a": ("notes.txt", "some text"), "b": photo,
        "c": ("data.bin", b"raw", "application/x-thing")})
    assert r.json()["form"] == {"title": "Hi"}
    assert r.json()["files"] == {"a": ["notes.txt", "text/plain", "some text"],
                                 "b": ["photo.png", "image/png", "PNG!"],
                                 "c": ["data.bin", "application/x-thing", "raw"]}


def test_cookies_kept_and_redirects(client: Client) -> None:
    client.get("/setcookie")
    assert client.cookies["plain"] == "yes"
    assert client.get("/echo").json()["cookies"]["plain"] == "yes"
    r = client.get("/away")
    assert r.status == 303 and r.location == "/count"
    r = client.get("/away", follow_redirects=True)
    assert r.status == 200 and r.url.endswith("/count") and "n" in r.json()


def test_session_csrf_flash(client: Client) -> None:
    first = client.get("/count").json()["n"]
    assert client.get("/count").json()["n"] == first + 1
    page = client.get("/form")
    token = page.csrf_token
    assert token
    assert client.post("/sign", data={"name": "Ada"}).status == 403
    assert client.post("/sign", data={"name": "Ada", "csrf_token": "forged"}).status == 403
    r = client.post("/sign", data={"name": "Ada", "csrf_token": token})
    assert r.status == 303
    page = client.get("/form")
    assert '<p class="ok">Signed by Ada</p>' in page.text
    assert "Signed by" not in client.get("/form").text     # shown once
    header = next(v for v in r.get_all("set-cookie") if v.startswith("krait_session="))
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" not in header
    # Another browser (no session) cannot use that token.
    with Client(client.site_root) as other:
        assert other.post("/sign", data={"csrf_token": token}).status == 403


def test_websocket(client: Client) -> None:
    n = client.get("/count").json()["n"]
    with client.websocket("/ws") as ws:
        ws.send("hello")
        assert ws.receive() == f"HELLO {n}"      # the handshake saw the session
        ws.send(b"\x01\x02\x03")
        assert ws.receive() == b"\x03\x02\x01"


def test_start_failure(tmp_path: Path) -> None:
    write(tmp_path, {".py/init.py": "from krait import config\nconfig.session_store = 'file'\n"})
    with pytest.raises(SiteStartError, match="session_secret"):
        Client(tmp_path).start()


def test_start_failure_sessions_used_without_secret(tmp_path: Path) -> None:
    write(tmp_path, {"count.py": "import krait\n\nkrait.session['n'] = 1\n"})
    with pytest.raises(SiteStartError, match=r"count\.py:3: this site uses sessions"):
        Client(tmp_path).start()


def test_start_failure_short_secret(tmp_path: Path) -> None:
    write(tmp_path, {".py/init.py": "from krait import config\nconfig.session_secret = 'x'\n"})
    with pytest.raises(SiteStartError, match=r"init\.py:2: .*at least 32"):
        Client(tmp_path).start()


def test_file_store_across_workers(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", store="file")
    with Client(site, workers=2) as c:
        seen = [c.get("/count").json() for _ in range(8)]
    assert [s["n"] for s in seen] == list(range(1, 9))
    directory = site / ".private" / "sessions"
    assert len(os.listdir(directory)) == 1
    assert "krait_session" not in str(seen)


def test_redis_store(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    site = make_site(tmp_path / "site", store=redis_url)
    with Client(site, workers=2) as c:
        assert [c.get("/count").json()["n"] for _ in range(4)] == [1, 2, 3, 4]
        page = c.get("/form")
        assert c.post("/sign", data={"name": "R", "csrf_token": page.csrf_token}).status == 303
        assert "Signed by R" in c.get("/form").text
