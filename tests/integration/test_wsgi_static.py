"""``krait --wsgi MODULE:APP --static /PREFIX=DIR`` and ``Route(prefix=..., static_dir=...)``:
a folder outside the site root served by the core (krait_server_add_static_dir), through a
real krait with 3 loops and with 1."""

from __future__ import annotations

import gzip
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HttpReader, write_site

# A plain WSGI callable (no framework) that says which path it got and notes every call.
APP = r'''
import os

CALLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.log")


def app(environ, start_response):
    with open(CALLS, "a") as f:
        f.write(environ["REQUEST_METHOD"] + " " + environ["SCRIPT_NAME"] + "|" +
                environ["PATH_INFO"] + "\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("app " + environ["REQUEST_METHOD"] + " " + environ["PATH_INFO"]).encode()]
'''

CSS = b"body { color: #123; }\n" * 20
SCRIPT = "import os\nprint('a script, sent as text')\n"


def _tree(base: Path) -> tuple[Path, Path]:
    """The application's folder and the static folder (beside it, outside any site root),
    with a secret next to the static folder and links in and out of it."""
    app_dir = write_site(base / "proj", {"proj/__init__.py": "", "proj/wsgi.py": APP})
    static = write_site(base / "assets", {
        "app.css": CSS,
        "app.css.gz": gzip.compress(CSS),
        "js/site.js": "let x = 1;\n",
        "tool.py": SCRIPT,
        "page.pyml": "<p>@x</p>\n",
        ".env": "SECRET=1\n",
        ".git/config": "[core]\n",
        "app.css~": "backup\n",
        "notes.txt.bak": "backup\n",
        "docs/index.html": "<h1>docs</h1>\n",
    })
    write_site(base, {"secret.txt": "TOP SECRET\n"})
    (static / "out.txt").symlink_to(base / "secret.txt")
    (static / "outdir").symlink_to(base / "proj")
    (static / "in.css").symlink_to("app.css")  # relative: RESOLVE_BENEATH refuses absolute links
    return app_dir, static


def _get(port: int, path: str, *headers: str, method: str = "GET",
         body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection, the path sent exactly as given."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        extra = "".join(h + "\r\n" for h in headers)
        if body:
            extra += f"Content-Length: {len(body)}\r\n"
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n"
                  .encode("latin-1") + body)
        return HttpReader(s).read(head_request=method == "HEAD")


class Alone:
    def __init__(self, base: Path, loops: str, *args: str) -> None:
        self.base = base
        self.app_dir, self.static = _tree(base)
        self.log = base / f"krait-{loops}.log"
        env = dict(os.environ, KRAIT_LOOPS=loops)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "krait", "--wsgi", "proj.wsgi:app", "--static",
             f"/static={self.static}", *args, "--host", "127.0.0.1", "--port", "0",
             "--workers", "1", "--access-log", "off"],
            cwd=self.app_dir, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = re.search(r"at http://127\.0\.0\.1:(\d+)/ .* and (\d+) loops?",
                          self.log.read_text())
            if m:
                self.port, self.loops = int(m.group(1)), int(m.group(2))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(self.log.read_text())

    def calls(self) -> str:
        path = self.app_dir / "proj" / "calls.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module", params=["3", "1"], ids=["loops3", "loops1"])
def alone(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alone]:
    server = Alone(tmp_path_factory.mktemp(f"static{request.param}"), request.param)
    assert server.loops == int(request.param)
    yield server
    server.stop()


def test_files_with_their_headers(alone):
    status, h, body = _get(alone.port, "/static/app.css")
    assert status == 200 and body == CSS
    assert h["content-type"] == "text/css; charset=utf-8"
    assert h["content-length"] == str(len(CSS))
    assert h["accept-ranges"] == "bytes"
    assert h["x-content-type-options"] == "nosniff"
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"', h["etag"])
    assert h["last-modified"].endswith(" GMT")
    assert h["cache-control"] == "max-age=300, must-revalidate"
    assert "vary" not in h and "content-encoding" not in h
    status, h, body = _get(alone.port, "/static/js/site.js")
    assert status == 200 and body == b"let x = 1;\n"
    assert h["content-type"] == "application/javascript; charset=utf-8"  # krait/_mime.py
    status, h, body = _get(alone.port, "/static/app.css", method="HEAD")
    assert status == 200 and body == b"" and h["content-length"] == str(len(CSS))
    # Served by the core: the application never saw any of these paths.
    assert "/static" not in alone.calls()


def test_range_and_conditional(alone):
    status, h, body = _get(alone.port, "/static/app.css", "Range: bytes=5-9")
    assert status == 206 and body == CSS[5:10]
    assert h["content-range"] == f"bytes 5-9/{len(CSS)}"
    status, h, body = _get(alone.port, "/static/app.css", "Range: bytes=0-1,10-11")
    assert status == 206 and h["content-type"].startswith("multipart/byteranges; boundary=")
    assert CSS[0:2] in body and CSS[10:12] in body
    status, _, _ = _get(alone.port, "/static/app.css", f"Range: bytes={len(CSS) + 5}-")
    assert status == 416
    _, h, _ = _get(alone.port, "/static/app.css")
    status, h304, body = _get(alone.port, "/static/app.css", f"If-None-Match: {h['etag']}")
    assert status == 304 and body == b"" and h304["etag"] == h["etag"]
    status, _, _ = _get(alone.port, "/static/app.css", f"If-Modified-Since: {h['last-modified']}")
    assert status == 304
    status, _, body = _get(alone.port, "/static/app.css", 'If-None-Match: "other"')
    assert status == 200 and body == CSS


def test_gzip_sibling(alone):
    status, h, body = _get(alone.port, "/static/app.css", "Accept-Encoding: gzip, br")
    assert status == 200 and h["content-encoding"] == "gzip"
    assert h["vary"] == "Accept-Encoding" and gzip.decompress(body) == CSS


@pytest.mark.parametrize("path", [
    "/static/../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E%2Fsecret.txt",
    "/static/..%2f..%2fsecret.txt",
    "/static%2f..%2fsecret.txt",
    "/static/js/..%2F..%2F..%2Fsecret.txt",
    "/static/out.txt",
    "/static/outdir/proj/wsgi.py",
    "/static/.env",
    "/static/.git/config",
    "/static/%2egit/config",
    "/static/app.css~",
    "/static/notes.txt.bak",
    "/static/missing.css",
    "/static/",
])
def test_refused_paths_are_404(alone, path):
    status, _, body = _get(alone.port, path)
    assert status == 404
    assert b"TOP SECRET" not in body and b"SECRET=1" not in body and b"backup" not in body
    assert "secret" not in alone.calls()


def test_symlink_inside_the_folder_is_followed(alone):
    status, _, body = _get(alone.port, "/static/in.css")
    assert status == 200 and body == CSS


def test_python_and_templates_are_files(alone):
    status, h, body = _get(alone.port, "/static/tool.py")
    assert status == 200 and body == SCRIPT.encode()
    assert h["content-type"] == "text/plain; charset=utf-8"
    assert h["x-content-type-options"] == "nosniff"
    status, h, body = _get(alone.port, "/static/page.pyml")
    assert status == 200 and body == b"<p>@x</p>\n"
    assert h["content-type"] == "text/plain; charset=utf-8"
    assert "tool" not in alone.calls()


def test_directory_index_and_redirect(alone):
    status, h, _ = _get(alone.port, "/static/docs?v=1")
    assert status == 301 and h["location"] == "/static/docs/?v=1"
    status, _, body = _get(alone.port, "/static/docs/")
    assert status == 200 and body == b"<h1>docs</h1>\n"


def test_other_verbs_get_405_not_the_app(alone):
    status, h, _ = _get(alone.port, "/static/app.css", method="POST", body=b"x=1")
    assert status == 405 and h["allow"] == "GET, HEAD, OPTIONS"
    assert "POST /static" not in alone.calls() and "|/static" not in alone.calls()


@pytest.mark.parametrize("path", ["/", "/staticx", "/stat", "/api/static/app.css",
                                  "/static-files/app.css"])
def test_the_app_gets_every_other_path(alone, path):
    status, _, body = _get(alone.port, path)
    assert status == 200 and body == f"app GET {path}".encode()
    status, _, body = _get(alone.port, path, method="POST", body=b"a=b")
    assert status == 200 and body == f"app POST {path}".encode()
    assert f"GET |{path}\n" in alone.calls()


@pytest.mark.parametrize("spec, message", [
    ("static", "write /PREFIX=DIR"),
    ("/static=", "write /PREFIX=DIR"),
    ("static=DIR", "must be a path starting with '/'"),
    ("/.hidden=DIR", "plain decoded path"),
    ("/static=missing", "no such folder"),
    ("/static=afile.txt", "not a folder"),
])
def test_bad_static_values_exit_2(tmp_path, spec, message):
    (tmp_path / "DIR").mkdir()
    (tmp_path / "afile.txt").write_text("x")
    result = subprocess.run([sys.executable, "-m", "krait", "--wsgi", "proj.wsgi:app",
                             "--static", spec, "--port", "0"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("krait: --static ") and message in lines[0]


def test_with_a_site_root_and_in_init_py(tmp_path, krait_server):
    """--static beside a site root, and the same from init.py (a folder relative to the root),
    both before the site's routes; cache rules see the files under their URL path."""
    _, static = _tree(tmp_path)
    site = write_site(tmp_path / "site", {
        ".py/init.py": "from krait import config\n"
                       "config.routes = [config.Route(prefix='/media/', "
                       "static_dir='../assets/js'), config.Route()]\n"
                       "config.cache_long_term = [r'media/.*', r'static/app\\.css']\n",
        "index.html": "<p>home</p>\n",
        "static/app.css": "the site's own, hidden behind the --static route\n",
        "page.py": "krait.response = krait.Response('HTTP/1.1', 200, [], 'page')\n",
    })
    server = krait_server(site, "--static", f"/static={static}")
    status, h, body = _get(server.port, "/static/app.css")
    assert status == 200 and body == CSS
    assert h["cache-control"] == "max-age=864000, must-revalidate"
    status, h, body = _get(server.port, "/media/site.js")
    assert status == 200 and body == b"let x = 1;\n"
    assert h["cache-control"] == "max-age=864000, must-revalidate"
    assert _get(server.port, "/media/../app.css")[0] == 404
    assert _get(server.port, "/static/tool.py")[2] == SCRIPT.encode()
    assert _get(server.port, "/page")[2] == b"page"
    assert _get(server.port, "/")[2] == b"<p>home</p>\n"


def test_bad_static_dir_in_init_py_stops_start_up(tmp_path):
    site = write_site(tmp_path / "site", {
        ".py/init.py": "from krait import config\n"
                       "config.routes = [config.Route(prefix='/m', static_dir='nowhere')]\n",
    })
    result = subprocess.run([sys.executable, "-m", "krait", str(site), "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{site / '.py' / 'init.py'}:2: static_dir 'nowhere' is not a folder" in result.stderr
