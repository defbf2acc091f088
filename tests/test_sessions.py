"""krait.sessions in-process: signed-cookie sessions, key rotation, expiry, cookie attributes,
the file and Redis stores, CSRF tokens and flash messages. Each "request" is a Request set as
krait.request, as the worker sets it; the response's Set-Cookie is read back from
krait.extra_headers. (tests/integration/test_sessions.py runs the same through a real server.)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import itsdangerous
import pytest

import krait
from krait import _state, config, sessions
from krait.errors import ConfigError, Forbidden
from krait.request import Request

SECRET = "s" * 40
OLD_SECRET = "o" * 40


class Browser:
    """Runs "requests" in-process and keeps the session cookie, as a browser would."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []
        self.headers: list[tuple[str, str]] = []

    def request(self, fn: Any = None, *, method: str = "GET", body: bytes = b"",
                headers: list[tuple[str, str]] | None = None, scheme: str = "http") -> Any:
        hdrs = list(headers or [])
        if self.cookies:
            hdrs.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        krait.request = Request(method, "/", "", "HTTP/1.1", hdrs, body, scheme=scheme)
        krait.extra_headers = []
        _state.current().extras.pop("krait.session", None)  # a new request: no session yet
        try:
            result = fn() if fn is not None else None
            sessions._finish()
        finally:
            self.headers = list(krait.extra_headers)
            krait.request = None
        self.set_cookies = [v for k, v in self.headers if k.lower() == "set-cookie"]
        for header in self.set_cookies:
            name, _, rest = header.partition("=")
            value = rest.split(";")[0]
            if "max-age=0" in header:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return result


@pytest.fixture(autouse=True)
def clean(tmp_path: Path) -> Iterator[None]:
    config.reset()
    sessions._engine = None
    (tmp_path / "site").mkdir()
    krait.site_root = str(tmp_path / "site")
    yield
    config.reset()
    sessions._engine = None
    krait.request = None
    _state.current().extras.pop("krait.session", None)
    krait.extra_headers = []


def setup(**settings: Any) -> None:
    config.session_secret = SECRET
    for name, value in settings.items():
        setattr(config, name, value)
    sessions.configure(krait.site_root)


def test_cookie_session_round_trip() -> None:
    setup()
    b = Browser()

    def count() -> int:
        krait.session["n"] = krait.session.get("n", 0) + 1
        return krait.session["n"]

    assert [b.request(count) for _ in range(3)] == [1, 2, 3]
    header = b.set_cookies[0]
    assert header.startswith("krait_session=")
    for attribute in ("path=/", "max-age=1209600", "HttpOnly", "SameSite=Lax"):
        assert attribute in header
    assert "Secure" not in header
    assert ("Vary", "Cookie") in b.headers


def test_untouched_session_sends_nothing() -> None:
    setup()
    b = Browser()
    b.request(lambda: krait.session.get("x"))
    assert b.set_cookies == [] and b.headers == [("Vary", "Cookie")]
    b.request()
    assert b.headers == []


def test_unchanged_session_is_not_resent_within_a_minute() -> None:
    setup()
    b = Browser()
    b.request(lambda: krait.session.update(user="ada"))
    assert b.set_cookies
    assert b.request(lambda: krait.session["user"]) == "ada"
    assert b.set_cookies == []


def test_secure_under_https_and_options() -> None:
    setup(session_same_site="Strict", session_cookie_name="sid")
    b = Browser()
    b.request(lambda: krait.session.update(a=1), scheme="https")
    assert "Secure" in b.set_cookies[0] and "SameSite=Strict" in b.set_cookies[0]
    assert b.set_cookies[0].startswith("sid=")


def test_forged_cookie_gives_a_new_session() -> None:
    setup()
    b = Browser()
    b.request(lambda: krait.session.update(admin=False))
    value = b.cookies["krait_session"]
    b.cookies["krait_session"] = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    assert b.request(lambda: (krait.session.new, krait.session.get("admin"))) == (True, None)
    other = itsdangerous.URLSafeTimedSerializer("x" * 40, salt="krait.session")
    b.cookies["krait_session"] = other.dumps({"admin": True})
    assert b.request(lambda: krait.session.get("admin")) is None


def test_key_rotation() -> None:
    config.session_secret = OLD_SECRET
    sessions.configure(krait.site_root)
    b = Browser()
    b.request(lambda: krait.session.update(user="ada"))
    old_cookie = b.cookies["krait_session"]
    setup(session_secret=[SECRET, OLD_SECRET])   # a new secret first; the old one verifies
    assert b.request(lambda: krait.session["user"]) == "ada"
    b.request(lambda: krait.session.update(more=1))
    assert b.cookies["krait_session"] != old_cookie
    setup(session_secret=[SECRET])                # the old one retired: the new cookie holds
    assert b.request(lambda: krait.session["more"]) == 1
    b.cookies["krait_session"] = old_cookie       # ... and a cookie of the old one is dead
    assert b.request(lambda: krait.session.get("user")) is None


def _fake_clock(monkeypatch: pytest.MonkeyPatch, offset: list[float]) -> None:
    real = time.time

    class Clock:
        @staticmethod
        def time() -> float:
            return real() + offset[0]

    monkeypatch.setattr(itsdangerous.timed, "time", Clock)
    monkeypatch.setattr(sessions, "time", Clock)


def test_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    setup(session_max_age=3600)
    offset = [0.0]
    _fake_clock(monkeypatch, offset)
    b = Browser()
    b.request(lambda: krait.session.update(user="ada"))
    offset[0] = 3000
    assert b.request(lambda: krait.session["user"]) == "ada"   # and refreshed (sliding)
    assert b.set_cookies
    offset[0] = 6000
    assert b.request(lambda: krait.session["user"]) == "ada"
    offset[0] = 6000 + 3601
    assert b.request(lambda: krait.session.get("user")) is None


def test_clear_deletes_the_cookie() -> None:
    setup()
    b = Browser()
    b.request(lambda: krait.session.update(user="ada"))
    b.request(lambda: krait.session.clear())
    assert "max-age=0" in b.set_cookies[0]
    assert "krait_session" not in b.cookies


def test_values_must_be_json() -> None:
    setup()
    with pytest.raises(sessions.SessionError, match="not JSON"):
        Browser().request(lambda: krait.session.update(x={1, 2}))


def test_too_large_for_a_cookie() -> None:
    setup()
    with pytest.raises(sessions.SessionError, match="session_store"):
        Browser().request(lambda: krait.session.update(x=os.urandom(4000).hex()))


def test_in_place_change_needs_modified() -> None:
    setup()
    b = Browser()
    b.request(lambda: krait.session.update(cart=[]))

    def add() -> None:
        krait.session["cart"].append(1)
        krait.session.modified = True

    b.request(add)
    assert b.request(lambda: krait.session["cart"]) == [1]


def test_no_secret() -> None:
    sessions.configure(krait.site_root)   # nothing set: fine until a session is used
    with pytest.raises(sessions.SessionError, match="session_secret"):
        Browser().request(lambda: krait.session.get("x"))
    config.session_store = "file"
    with pytest.raises(ConfigError, match="session_secret"):
        sessions.configure(krait.site_root)


@pytest.mark.parametrize("settings, message", [
    ({"session_secret": "short"}, "at least 32"),
    ({"session_secret": []}, "empty list"),
    ({"session_secret": 12}, "must be a str"),
    ({"session_max_age": 0}, "session_max_age"),
    ({"session_same_site": "lax"}, "session_same_site"),
    ({"session_cookie_name": "a b"}, "session_cookie_name"),
    ({"session_store": "memcached://x"}, "session_store"),
    ({"session_store": "file", "session_dir": "sessions"}, "served by the site"),
])
def test_bad_settings(settings: dict[str, Any], message: str) -> None:
    config.session_secret = SECRET
    for name, value in settings.items():
        setattr(config, name, value)
    with pytest.raises(ConfigError, match=message) as info:
        sessions.configure(krait.site_root)
    assert info.value.filename and info.value.filename.endswith("test_sessions.py")


def test_outside_a_request() -> None:
    setup()
    with pytest.raises(sessions.SessionError, match="while a request"):
        krait.session.get("x")
    assert "no request" in repr(krait.session)


# -- the file store -----------------------------------------------------------------------------

def test_file_store(tmp_path: Path) -> None:
    setup(session_store="file")
    directory = tmp_path / "site" / ".private" / "sessions"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    b = Browser()
    b.request(lambda: krait.session.update(secret_note="never in the cookie"))
    assert "never" not in b.cookies["krait_session"]
    files = list(directory.iterdir())
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert b.request(lambda: krait.session["secret_note"]) == "never in the cookie"
    # A new id after login; the old record is gone.
    old = b.cookies["krait_session"]
    b.request(lambda: krait.session.regenerate())
    assert b.cookies["krait_session"] != old
    assert [p.name for p in directory.iterdir()] != [files[0].name]
    assert len(list(directory.iterdir())) == 1
    # Logout removes the record and the cookie.
    b.request(lambda: krait.session.clear())
    assert list(directory.iterdir()) == [] and "krait_session" not in b.cookies


def test_file_store_expiry_and_cleanup(tmp_path: Path) -> None:
    setup(session_store="file", session_dir=str(tmp_path / "elsewhere"), session_max_age=100)
    store = sessions._get_engine().store
    assert isinstance(store, sessions.FileStore)
    store.save("a", {"x": 1}, 100)
    store.save("b", {"x": 2}, -1)          # already expired
    assert store.load("a") == {"x": 1}
    assert store.load("b") is None          # and removed
    path = store._path("a")
    os.utime(path, (time.time() - 200, time.time() - 200))
    assert store.cleanup(100) == 1
    assert os.listdir(store.directory) == []


def test_file_store_directory_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "loose"
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)
    setup(session_store="file", session_dir=str(directory))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


# -- the Redis store ----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own on a free port, stopped by its pid afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_redis_store(redis_url: str) -> None:
    import redis

    setup(session_store=redis_url, session_max_age=600)
    b = Browser()
    b.request(lambda: krait.session.update(user="ada"))
    assert "ada" not in b.cookies["krait_session"]
    assert b.request(lambda: krait.session["user"]) == "ada"
    client = redis.Redis.from_url(redis_url)
    keys = client.keys("krait:session:*")
    assert len(keys) == 1 and 0 < client.ttl(keys[0]) <= 600
    b.request(lambda: krait.session.clear())
    assert client.keys("krait:session:*") == []


def test_unreachable_redis_stops_start_up() -> None:
    config.session_secret = SECRET
    config.session_store = f"redis://127.0.0.1:{_free_port()}/0"
    with pytest.raises(ConfigError, match="cannot be used"):
        sessions.configure(krait.site_root)


# -- CSRF and flash -----------------------------------------------------------------------------

def test_csrf() -> None:
    setup()
    b = Browser()
    token = b.request(krait.csrf_token)
    assert b.request(krait.csrf_token) != "" and "krait_session" in b.cookies
    form = f"name=ada&csrf_token={token}".encode()
    ctype = [("Content-Type", "application/x-www-form-urlencoded")]
    b.request(krait.check_csrf, method="POST", body=form, headers=ctype)  # passes
    b.request(krait.check_csrf, method="POST", headers=[("X-CSRF-Token", token)])
    b.request(krait.check_csrf, method="GET")                             # safe: no check
    for body in (b"name=ada", b"csrf_token=forged", b"csrf_token=" + token[:-1].encode()):
        with pytest.raises(Forbidden):
            b.request(krait.check_csrf, method="POST", body=body, headers=ctype)
    # Another visitor's token is no good for this one.
    other = Browser()
    other.request(krait.csrf_token)
    with pytest.raises(Forbidden):
        other.request(krait.check_csrf, method="POST", body=form, headers=ctype)
    # Nor after the session was regenerated.
    b.request(lambda: krait.session.regenerate())
    with pytest.raises(Forbidden):
        b.request(krait.check_csrf, method="POST", body=form, headers=ctype)


def test_csrf_multipart_and_input() -> None:
    setup()
    b = Browser()
    html = b.request(krait.csrf_input)
    assert html.startswith('<input type="hidden" name="csrf_token" value="')
    token = html.split('value="')[1].split('"')[0]
    body = (f'--XX\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
            '--XX--\r\n').encode()
    b.request(krait.check_csrf, method="POST", body=body,
              headers=[("Content-Type", "multipart/form-data; boundary=XX")])


def test_flash() -> None:
    setup()
    b = Browser()
    b.request(lambda: (krait.flash("saved", "success"), krait.flash("careful", "warning")))

    def read() -> tuple[Any, Any]:
        return (krait.get_flashed_messages(with_categories=True),
                krait.get_flashed_messages())

    assert b.request(read) == ([("success", "saved"), ("warning", "careful")],
                               ["saved", "careful"])
    assert b.request(krait.get_flashed_messages) == []      # shown once
    b.request(lambda: krait.flash("only errors"))
    assert b.request(lambda: krait.get_flashed_messages(category_filter=["error"])) == []
    assert b.request(krait.get_flashed_messages) == []


def test_find_use(tmp_path: Path) -> None:
    root = tmp_path / "scan"
    files = {
        "index.html": "<p>plain</p>\n",
        ".git/x.py": "krait.session\n",             # hidden: never run, never looked at
        "uploads/evil.py": "krait.session\n",       # static_only: data
        ".view/form.html": "<p>\n@krait.csrf_token()@</p>\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert sessions.find_use(str(root), [".view"], ("uploads/",)) == \
        (str(root / ".view" / "form.html"), 2)
    (root / ".view" / "form.html").unlink()
    assert sessions.find_use(str(root), [".view"], ("uploads/",)) is None
    (root / ".py").mkdir()
    (root / ".py" / "app.py").write_text("import os\nfrom krait import config, flash\n")
    assert sessions.find_use(str(root), [".view"], ("uploads/",)) == \
        (str(root / ".py" / "app.py"), 2)
    (root / ".py" / "app.py").write_text("krait.sessions_count = 1  # not a session\n")
    assert sessions.find_use(str(root), [".view"], ("uploads/",)) is None
