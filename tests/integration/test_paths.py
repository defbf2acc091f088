"""One path rule through every entry point (issue 18, item 1), with real requests.

Each path of the table is tried as a static URL, as the ``{name}`` of a route target, as a
controller's view, as an ``@import``, as a ``FileResponse`` and through ``get_full_path``. A
path the rule refuses gives 404 and never the file's content, whatever the entry point.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import HttpReader, KraitProcess, write_site

INIT = '''\
import krait
from krait import config, mvc


class ViewCtrl(mvc.CtrlBase):
    def get_view(self):
        return krait.request.query["p"]


config.routes = [
    config.Route(url="/ctrl", ctrl_class=ViewCtrl),
    config.Route(regex=r"/t/(?P<name>.+)", target="{name}"),
    config.Route(),
]
'''

FILES: dict[str, str | bytes] = {
    ".py/init.py": INIT,
    ".py/secrets.json": "SECRET-PY",
    ".secret/config.txt": "SECRET-DOT",
    ".view/v.txt": "VIEW-OK",
    "pages/ok.txt": "PAGE-OK",
    "pages/old.txt~": "SECRET-TILDE",
    "pages/#draft.txt#": "SECRET-HASH",
    "pages/x.swp": "SECRET-SWP",
    "pages/x.bak": "SECRET-BAK",
    "pages/x.ORIG": "SECRET-ORIG",
    "imp.html": "[@import krait.request.query['p']@]",
    "file.py": "import krait\nkrait.response = krait.FileResponse(krait.request.query['p'])\n",
    "full.py": ("import krait\n"
                "with open(krait.get_full_path(krait.request.query['p'])) as f:\n"
                "    krait.response = krait.Response(body=f.read())\n"),
}

OK = "ok"
REFUSED = "refused"
# (path, expected for static URLs and route targets, expected for views/imports/files)
TABLE = [
    ("pages/ok.txt", OK, OK),
    ("pages/in.txt", OK, OK),                      # symlink staying inside, not hidden
    (".view/v.txt", REFUSED, OK),                  # a view directory: for pages only
    (".secret/config.txt", REFUSED, REFUSED),
    (".py/secrets.json", REFUSED, REFUSED),
    ("pages/../.secret/config.txt", REFUSED, REFUSED),
    ("../outside/secret.txt", REFUSED, REFUSED),
    ("pages/out.txt", REFUSED, REFUSED),           # symlink to a file outside the root
    ("pages/outdir/secret.txt", REFUSED, REFUSED),  # through a symlinked directory
    ("pages/to-hidden.txt", REFUSED, REFUSED),     # symlink inside, to a hidden path
    (".view/../.secret/config.txt", REFUSED, REFUSED),
    ("pages/old.txt~", "backup", REFUSED),
    ("pages/#draft.txt#", "backup", REFUSED),
    ("pages/x.swp", "backup", REFUSED),
    ("pages/x.bak", "backup", REFUSED),
    ("pages/x.ORIG", "backup", REFUSED),
]
CONTENT = {
    "pages/ok.txt": "PAGE-OK", "pages/in.txt": "PAGE-OK", ".view/v.txt": "VIEW-OK",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> KraitProcess:  # type: ignore[misc]
    from tests.conftest import KraitProcess as Proc

    tmp = tmp_path_factory.mktemp("paths")
    os.environ["KRAIT_TEMPLATE_CACHE"] = str(tmp / "template-cache")
    site = write_site(tmp / "site", FILES)
    outside = write_site(tmp / "outside", {"secret.txt": "SECRET-OUT"})
    os.symlink("ok.txt", site / "pages/in.txt")
    os.symlink(outside / "secret.txt", site / "pages/out.txt")
    os.symlink(outside, site / "pages/outdir")
    os.symlink("../.secret/config.txt", site / "pages/to-hidden.txt")
    proc = Proc(site, ["--workers", "1"], tmp)
    yield proc
    proc.stop()


def get(server: KraitProcess, target: str) -> tuple[int, bytes]:
    s = server.connect(timeout=10)
    try:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        status, _, body = HttpReader(s, timeout=10).read()
        return status, body
    finally:
        s.close()


def check(status: int, body: bytes, path: str, expected: str) -> None:
    if expected == OK:
        assert status == 200, (path, status, body)
        assert CONTENT[path].encode() in body
    else:
        assert status in (400, 404), (path, status, body)
        assert b"SECRET" not in body


@pytest.mark.parametrize("encode", ["plain", "percent"])
@pytest.mark.parametrize(("path", "expected", "_"), TABLE)
def test_static_url(server: KraitProcess, path: str, expected: str, _: str,
                    encode: str) -> None:
    if expected == "backup":
        expected = REFUSED  # the core refuses config.never_serve too
    target = "/" + (path if encode == "plain" else quote(path, safe="").replace(".", "%2e"))
    check(*get(server, target), path, expected)


@pytest.mark.parametrize("encode", ["plain", "percent"])
@pytest.mark.parametrize(("path", "expected", "_"), TABLE)
def test_route_target_with_name(server: KraitProcess, path: str, expected: str, _: str,
                                encode: str) -> None:
    if expected == "backup":
        expected = REFUSED
    target = "/t/" + (path if encode == "plain" else quote(path, safe="").replace(".", "%2e"))
    check(*get(server, target), path, expected)


@pytest.mark.parametrize("entry", ["/ctrl?p=", "/imp?p=", "/file.py?p=", "/full.py?p="])
@pytest.mark.parametrize(("path", "_", "expected"), TABLE)
def test_paths_from_pages(server: KraitProcess, entry: str, path: str, _: str,
                          expected: str) -> None:
    check(*get(server, entry + quote(path, safe="")), path, expected)


def test_refusals_are_logged_without_the_path_on_the_page(server: KraitProcess) -> None:
    status, body = get(server, "/ctrl?p=" + quote(".secret/config.txt"))
    assert status == 404 and b".secret" not in body
    assert "hidden segment '.secret'" in server.log()


def test_site_file_table(tmp_path: Path) -> None:
    from krait.paths import PathRefused, site_file

    root = write_site(tmp_path / "r", {"a/b.txt": "x", ".view/v.html": "v"})
    os.symlink(tmp_path, root / "a/up")
    assert site_file(root, "a/b.txt") == str(root / "a/b.txt")
    assert site_file(root, "/a//./b.txt") == str(root / "a/b.txt")
    assert site_file(root, ".view/v.html", views=True) == str(root / ".view/v.html")
    for bad in ("../r/a/b.txt", "a/../a/b.txt", ".view/v.html", "a/up", "a/up/x", "a\0b",
                "a/b.txt~", "a/.b", "a/B.BAK", "a/#b#"):
        with pytest.raises(PathRefused):
            site_file(root, bad)
    with pytest.raises(PathRefused):
        site_file(root, ".view/.x", views=True)
    assert site_file(root, "a/b.swp", never_serve=()) == str(root / "a/b.swp")
