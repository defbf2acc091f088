"""Issue 18 through a real krait: web cache deception on controller routes, static_only
directories, form field limits, header values, cookies' safe defaults, trusted proxies and the
multipart parser's independence from read sizes."""

from __future__ import annotations

import base64
import os
import struct
import time
from pathlib import Path

import pytest

from tests.conftest import HttpReader, KraitProcess, write_site

INIT = '''\
import krait
from krait import config, mvc


class AccountCtrl(mvc.CtrlBase):
    def __init__(self):
        self.token = krait.cookie.get_cookie("session", "-")

    def get_view(self):
        return ".view/account.html"


config.cache_public = [r".*\\.css", "styles"]
config.cache_long_term = [r".*\\.css"]
config.static_only = ["uploads/"]
config.websocket_queue_bytes = 3 * 1024 * 1024
config.websocket_worker_queue_bytes = 4 * 1024 * 1024
config.websocket_origins = ["https://app.example"]
config.routes = [
    config.Route("WEBSOCKET", url="/ws/slow"),
    config.Route(regex=r"/account/.*", ctrl_class=AccountCtrl),
    config.Route(url="/styles", ctrl_class=lambda: mvc.SimpleCtrl(".view/styles.css", {})),
    config.Route("POST", url="/form.py"),
    config.Route("POST", url="/multipart.py"),
    config.Route(),
]
'''

FILES: dict[str, str | bytes] = {
    ".py/init.py": INIT,
    ".view/account.html": "<p>token @ctrl.token@</p>",
    ".view/styles.css": "body { color: red }",
    ".view/evil.html": "@{ import os }EVIL",
    "uploads/shell.py": "import krait\nkrait.response = krait.Response(body='RAN')\n",
    "uploads/page.html": "<b>@(6 * 7)@</b>",
    "uploads/note.txt": "plain",
    "imp-upload.html": "[@import 'uploads/page.html'@]",
    "ws/slow.py": ("import krait\nfrom krait import websockets\n"
                   "class Slow(websockets.WebsocketsCtrlBase):\n"
                   "    pass  # never pops its messages\n"
                   "websockets.response = websockets.WebsocketsResponse(Slow())\n"),
    "hdr.py": ("import krait\n"
               "krait.extra_headers.append(('X-Test', krait.request.query['v']))\n"),
    "setcookie.py": ("from krait import cookie\n"
                     "c = cookie.Cookie('sid', '1')\nc.set_path('/')\ncookie.set_cookie(c)\n"
                     "c = cookie.Cookie('theme', 'dark')\nc.set_path('/')\n"
                     "c.set_http_only(False)\nc.set_same_site(False)\ncookie.set_cookie(c)\n"),
    "expires.py": ("import datetime, krait\nfrom krait import cookie\n"
                   "tz = datetime.timezone(datetime.timedelta(hours=3))\n"
                   "try:\n"
                   "    when = datetime.datetime(1, 1, 1, tzinfo=tz)\n"
                   "    cookie.Cookie('a', 'b').set_expires(when)\n"
                   "    name = 'no error'\n"
                   "except Exception as e:\n"
                   "    name = type(e).__name__\n"
                   "krait.response = krait.Response(body=name)\n"),
    "multipart.py": ("import krait\nparts = krait.request.get_multipart_form()\n"
                     "krait.response = krait.Response(body=repr([(p.name, p.data) "
                     "for p in parts]))\n"),
    "form.py": ("import krait\n"
                "krait.response = krait.Response(body=str(len(krait.request.get_post_form())))\n"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> KraitProcess:  # type: ignore[misc]
    tmp = tmp_path_factory.mktemp("hardening")
    os.environ["KRAIT_TEMPLATE_CACHE"] = str(tmp / "template-cache")
    site = write_site(tmp / "site", FILES)
    proc = KraitProcess(site, ["--workers", "1"], tmp)
    yield proc
    proc.stop()


def request(server: KraitProcess, target: str, method: str = "GET", headers: str = "",
            body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    s = server.connect(timeout=10)
    try:
        length = f"Content-Length: {len(body)}\r\n" if body or method == "POST" else ""
        s.sendall(f"{method} {target} HTTP/1.1\r\nHost: h\r\n{headers}{length}\r\n".encode()
                  + body)
        return HttpReader(s, timeout=10).read()
    finally:
        s.close()


# -- item 2: web cache deception --------------------------------------------------------------

@pytest.mark.parametrize("url", ["/account/settings", "/account/settings.css",
                                 "/account/x.js", "/account/a.png"])
def test_controller_answers_never_follow_the_url_extension(server: KraitProcess,
                                                           url: str) -> None:
    status, headers, body = request(server, url, headers="Cookie: session=victim-token\r\n")
    assert status == 200 and b"victim-token" in body
    assert headers["cache-control"] == "no-cache, no-store, must-revalidate"
    assert "etag" not in headers
    assert headers["content-type"] == "text/html; charset=utf-8"  # the view's, not the URL's


def test_a_controller_route_with_an_exact_url_may_opt_in(server: KraitProcess) -> None:
    status, headers, body = request(server, "/styles")
    assert (status, body) == (200, b"body { color: red }")
    assert headers["content-type"].startswith("text/css")           # from the view
    assert headers["cache-control"].startswith("public, max-age=")  # cache_public "styles"


# -- item 10: static_only ---------------------------------------------------------------------

def test_static_only_files_are_never_run(server: KraitProcess) -> None:
    status, headers, body = request(server, "/uploads/shell.py")
    assert status == 200 and body.startswith(b"import krait")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-type"].startswith("text/plain")
    status, headers, body = request(server, "/uploads/page.html")
    assert (status, body) == (200, b"<b>@(6 * 7)@</b>")
    assert headers["x-content-type-options"] == "nosniff"
    # ...nor imported into a page as a template.
    status, _, body = request(server, "/imp-upload.html")
    assert status == 404 and b"42" not in body


# -- item 6: max_form_fields ------------------------------------------------------------------

def test_urlencoded_forms_have_a_field_limit(server: KraitProcess) -> None:
    body = "&".join(f"f{i}=v" for i in range(1000)).encode()
    assert request(server, "/form.py", "POST", body=body)[2] == b"1000"
    status, _, _ = request(server, "/form.py", "POST", body=body + b"&one=more")
    assert status == 413
    # Empty parts are not fields.
    assert request(server, "/form.py", "POST", body=body + b"&&&")[2] == b"1000"


# -- items 4 and 5: WebSocket queues and origins ----------------------------------------------

class WS:
    """A raw WebSocket client: handshake with the given headers, masked binary frames out."""

    def __init__(self, server: KraitProcess, headers: str = "") -> None:
        self.sock = server.connect(timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws/slow HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{headers}\r\n".encode())
        self.reader = HttpReader(self.sock, timeout=10)
        self.status, self.headers, _ = self.reader.read(head_request=True)

    def send(self, payload: bytes) -> None:
        head = bytes([0x82])
        n = len(payload)
        head += bytes([0x80 | 127]) + struct.pack("!Q", n) if n > 0xFFFF else \
            bytes([0x80 | 126]) + struct.pack("!H", n) if n > 125 else bytes([0x80 | n])
        # A zero masking key keeps the payload as it is (RFC 6455 §5.3 allows any key).
        self.sock.sendall(head + b"\0\0\0\0" + payload)

    def close_code(self, timeout: float = 10.0) -> int | None:
        """Read frames until the server's close frame; its status code."""
        buf = bytearray(self.reader.buf)
        self.sock.settimeout(timeout)
        while True:
            while len(buf) < 2:
                buf += self.sock.recv(65536) or b"\xff\xff"
            n = buf[1] & 0x7F
            start = 2 + (2 if n == 126 else 8 if n == 127 else 0)
            while len(buf) < start:
                buf += self.sock.recv(65536)
            if n == 126:
                n = struct.unpack("!H", buf[2:4])[0]
            elif n == 127:
                n = struct.unpack("!Q", buf[2:10])[0]
            while len(buf) < start + n:
                buf += self.sock.recv(65536)
            opcode, payload = buf[0] & 0x0F, bytes(buf[start:start + n])
            del buf[:start + n]
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


MIB = b"x" * (1024 * 1024)


def test_a_slow_controller_queue_is_bounded_per_connection(server: KraitProcess) -> None:
    ws = WS(server)
    assert ws.status == 101
    for _ in range(4):
        ws.send(MIB)
    assert ws.close_code() == 1008
    ws.sock.close()


def test_a_slow_controller_queue_is_bounded_per_worker(server: KraitProcess) -> None:
    a, b = WS(server), WS(server)
    assert (a.status, b.status) == (101, 101)
    a.send(MIB)
    a.send(MIB)
    time.sleep(0.3)
    b.send(MIB)
    b.send(MIB)        # 4 MiB queued in the worker: the limit, not beyond
    b.send(MIB)        # 3 MiB for b alone is allowed, 5 MiB for the worker is not
    assert b.close_code() == 1008
    a.sock.close()
    b.sock.close()
    # a's messages no longer count once it has gone.
    time.sleep(0.3)
    c = WS(server)
    for _ in range(3):
        c.send(MIB)
    c.sock.settimeout(0.5)
    try:
        assert c.sock.recv(10) == b""  # nothing: neither a close frame nor an EOF
    except TimeoutError:
        pass
    c.sock.close()


@pytest.mark.parametrize(("origin", "status"), [
    (None, 101),                             # not a browser page
    ("http://127.0.0.1:{port}", 101),        # same origin
    ("HTTP://127.0.0.1:{port}/", 101),
    ("https://app.example", 101),            # config.websocket_origins
    ("https://evil.example", 403),
    ("http://127.0.0.1:1", 403),             # another port is another origin
    ("http://127.0.0.1.evil.example:{port}", 403),
    ("null", 403),
])
def test_websocket_handshakes_check_the_origin(server: KraitProcess, origin: str | None,
                                               status: int) -> None:
    header = "" if origin is None else f"Origin: {origin.format(port=server.port)}\r\n"
    ws = WS(server, header)
    assert ws.status == status
    ws.sock.close()


# -- items 9 and 13: header values, cookies --------------------------------------------------

@pytest.mark.parametrize("value", ["a\\x1bb", "a\\x01", "a\\x7f", "a\\x0bb", "a\\x0cb"])
def test_header_values_from_scripts_refuse_control_characters(server: KraitProcess,
                                                              value: str) -> None:
    status, headers, body = request(server, "/hdr.py?v=" + value.replace("\\x", "%"))
    assert status == 500 and "x-test" not in headers
    status, headers, _ = request(server, "/hdr.py?v=a%09b%20c")
    assert (status, headers["x-test"]) == (200, "a\tb c")           # HTAB is allowed


def test_cookies_are_httponly_and_samesite_lax_unless_opted_out(server: KraitProcess) -> None:
    s = server.connect(timeout=10)
    try:
        s.sendall(b"GET /setcookie.py HTTP/1.1\r\nHost: h\r\n\r\n")
        reader = HttpReader(s, timeout=10)
        while b"\r\n\r\n" not in reader.buf:
            reader._more()
        head = bytes(reader.buf).split(b"\r\n\r\n")[0].decode()
    finally:
        s.close()
    cookies = [line.split(":", 1)[1].strip() for line in head.split("\r\n")
               if line.lower().startswith("set-cookie:")]
    assert cookies == ["sid=1; path=/; HttpOnly; SameSite=Lax", "theme=dark; path=/"]


def test_set_expires_near_year_one_is_a_value_error(server: KraitProcess) -> None:
    assert request(server, "/expires.py")[2] == b"ValueError"


# -- item 11: multipart parts do not depend on where the 64 KiB reads fall --------------------

PART = (b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nvalue\r\n"
        b"--b\r\nContent-Disposition: form-data; name=\"g\"\r\n\r\n" + b"y" * 70000 +
        b"\r\n--b--\r\n")


@pytest.mark.parametrize("pad", [*range(65530, 65540), 0, 1, 131071, 131072])
def test_multipart_answer_does_not_depend_on_read_offsets(server: KraitProcess,
                                                          pad: int) -> None:
    ctype = "Content-Type: multipart/form-data; boundary=b\r\n"
    # Preamble ending in CRLF: the parts, wherever the boundary falls.
    body = b"x" * pad + b"\r\n" + PART
    status, _, text = request(server, "/multipart.py", "POST", ctype, body)
    assert status == 200 and text.startswith(b"[('f', b'value'), ('g', b'yyy")
    # "--b" right after other bytes is no delimiter (RFC 2046 §5.1.1): always 400.
    if pad:
        status, _, _ = request(server, "/multipart.py", "POST", ctype, b"x" * pad + PART)
        assert status == 400


# -- item 7: the compiled-template cache must be ours --------------------------------------

@pytest.mark.parametrize("mode", [0o777, 0o770, 0o755])
def test_template_cache_directory_must_be_private(tmp_path: Path, krait_server,  # type: ignore[no-untyped-def]
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  mode: int) -> None:
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    cache.chmod(mode)
    monkeypatch.setenv("KRAIT_TEMPLATE_CACHE", str(cache))
    site = write_site(tmp_path / "site", {"page.html": "<p>@(6 * 7)@</p>"})
    server = krait_server(site, "--workers", "1")
    status, _, body = request(server, "/page.html")
    assert (status, body) == (200, b"<p>42</p>")
    modules = list(cache.rglob("*.py"))
    if mode & 0o022:  # writable by others: compiled in memory, nothing written or read there
        assert modules == [] and "not using the template cache" in server.log()
    else:
        assert modules and "not using the template cache" not in server.log()


def test_a_planted_module_symlink_is_never_executed(tmp_path: Path) -> None:
    from krait.templates.lookup import _read_own_module

    evil = tmp_path / "evil.py"
    evil.write_text("raise SystemExit('planted')\n")
    (tmp_path / "module.py").symlink_to(evil)
    assert _read_own_module(str(tmp_path / "module.py")) is None
    evil.chmod(0o666)
    assert _read_own_module(str(evil)) is None
    evil.chmod(0o600)
    assert _read_own_module(str(evil)) == b"raise SystemExit('planted')\n"
