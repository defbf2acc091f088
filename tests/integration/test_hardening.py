"""Issue 18 through a real krait: web cache deception on controller routes, static_only
directories, form field limits, header values, cookies' safe defaults, trusted proxies and the
multipart parser's independence from read sizes."""

from __future__ import annotations

import os

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
config.routes = [
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
