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
