"""MVC through a real krait process (behaviour §4.4, §4.5, §8, §9): ctrl_class routes with URL
parameters, controllers from decorators in packages, set_init_ctrl from scripts, SimpleCtrl,
the controller stack and @import-ctrl, content types, and controllers whose view is missing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import HttpReader, KraitProcess, write_site

INIT = '''\
import krait
from krait import config, mvc

site_title = "MVC & co"


class ItemCtrl(mvc.CtrlBase):
    def __init__(self):
        self.params = sorted(krait.url_params.items())
        self.item = krait.url_params["item"]

    def get_view(self):
        return ".view/item.html"


class DataCtrl(mvc.CtrlBase):
    def __init__(self):
        self.values = [1, 2, "<3>"]

    def get_view(self):
        return "/.view/data.json.pyml"


class TypedCtrl(mvc.CtrlBase):
    def get_view(self):
        return ".view/typed.html"


class MissingViewCtrl(mvc.CtrlBase):
    def get_view(self):
        return ".view/nope.html"


class NoViewCtrl(mvc.CtrlBase):
    pass


class BrokenImportCtrl(mvc.CtrlBase):
    def get_view(self):
        return ".view/imports-missing.html"


class Named(mvc.CtrlBase):
    def __init__(self, name, view=".view/named.html"):
        self.name = name
        self.view = view

    def get_view(self):
        return self.view


class OuterCtrl(Named):
    def __init__(self):
        super().__init__("outer", ".view/outer.html")


mvc.import_ctrls_from("ctrl")          # the decorators' routes come first
config.routes.extend([
    config.Route("GET", regex=r"/items/(?P<item>[a-z]+)/(?P<num>[0-9]+)", ctrl_class=ItemCtrl),
    config.Route("GET", url="/data.json", ctrl_class=DataCtrl),
    config.Route("GET", url="/typed", ctrl_class=TypedCtrl),
    config.Route("GET", url="/missing", ctrl_class=MissingViewCtrl),
    config.Route("GET", url="/noview", ctrl_class=NoViewCtrl),
    config.Route("GET", url="/broken-import", ctrl_class=BrokenImportCtrl),
    config.Route("GET", url="/outer", ctrl_class=OuterCtrl),
    config.Route("GET", url="/notes.txt",
                 ctrl_class=lambda: mvc.SimpleCtrl(".view/notes.txt", {})),
    config.Route(),
])
'''

PAGES = '''\
from krait import mvc


@mvc.route_ctrl_decorator(url="/deco")
class DecoCtrl(mvc.SimpleCtrl):
    def __init__(self):
        super().__init__(".view/deco.html", {"where": __name__})
'''

DEEP = '''\
import krait
from krait import mvc


@mvc.route_ctrl_decorator("GET", regex=r"/deep/(?P<n>[0-9]+)")
@mvc.route_ctrl_decorator(url="/deep-alias")
class DeepCtrl(mvc.CtrlBase):
    def __init__(self):
        self.where = __name__
        self.n = krait.url_params.get("n", "-")

    def get_view(self):
        return ".view/deep.html"
'''

STACK = '''\
import krait
from krait import mvc

seen = [repr(mvc.curr_ctrl), len(mvc.ctrl_stack)]
assert mvc.push_ctrl("A") == "A"
mvc.push_ctrl("B")
seen += [mvc.curr_ctrl, list(mvc.ctrl_stack)]
seen.append(mvc.pop_ctrl())
seen.append(mvc.pop_ctrl())
seen.append(mvc.pop_ctrl())
mvc.push_ctrl("left pushed")      # never popped: the next request must not see it
krait.response = krait.JsonResponse(seen)
'''

FILES: dict[str, str | bytes] = {
    ".py/init.py": INIT,
    ".py/ctrl/__init__.py": "",
    ".py/ctrl/pages.py": PAGES,
    ".py/ctrl/sub/__init__.py": "",
    ".py/ctrl/sub/deep.py": DEEP,
    ".view/item.html": "<p>@ctrl.item@ @ctrl.params@ @krait.url_params['num']@ @site_title@</p>",
    ".view/data.json.pyml": '@{ import json }'
                            '{"values": [@!", ".join(json.dumps(str(v)) for v in ctrl.values)@]}',
    ".view/typed.html": '@{ krait.set_content_type(raw="text/plain; charset=utf-8") }typed',
    ".view/imports-missing.html": "x @import '.view/not-there.html'@",
    ".view/named.html": "(@ctrl.name@:@len(mvc.ctrl_stack)@)",
    ".view/outer.html": ("[@ctrl.name@ @import-ctrl Named('a')@ @ctrl.name@ "
                         "@import-ctrl Named('b', '.view/mid.html')@ @ctrl.name@"
                         "@(mvc.curr_ctrl is ctrl)@]"),
    ".view/mid.html": "{@ctrl.name@ @import-ctrl Named('c') @ctrl.name@}",
    ".view/deco.html": "deco from @ctrl.where@",
    ".view/deep.html": "deep from @ctrl.where@ n=@ctrl.n@",
    ".view/simple.html": "<h1>@ctrl.title@</h1>@(ctrl.n * 2)@",
    ".view/notes.txt": "verbatim @ctrl ${x}\n",
    "simple.py": ("from krait import mvc\n"
                  "mvc.set_init_ctrl(mvc.SimpleCtrl('.view/simple.html', "
                  "{'title': 'T<', 'n': 21}))\n"),
    "simple-missing.py": ("from krait import mvc\n"
                          "mvc.set_init_ctrl(mvc.SimpleCtrl('.view/none.html', {}))\n"),
    "response-wins.py": ("import krait\nfrom krait import mvc\n"
                         "mvc.set_init_ctrl(mvc.SimpleCtrl('.view/simple.html', {}))\n"
                         "krait.response = krait.Response(body='the response')\n"),
    "stack.py": STACK,
    "embed.html": "@(ctrl is None)@ @import-ctrl mvc.SimpleCtrl('.view/simple.html', "
                  "{'title': 'E', 'n': 1})@ @(ctrl is None)@",
}


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KRAIT_TEMPLATE_CACHE", str(tmp_path / "template-cache"))
    return write_site(tmp_path / "site", FILES)


@pytest.fixture
def server(site: Path, krait_server) -> KraitProcess:  # type: ignore[no-untyped-def]
    return krait_server(site, "--workers", "1")


def get(server: KraitProcess, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    s = server.connect(timeout=10)
    try:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        return HttpReader(s, timeout=10).read(head_request=method == "HEAD")
    finally:
        s.close()


def wait_for_log(server: KraitProcess, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while needle not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.log()


def test_ctrl_class_route_with_url_params(server: KraitProcess) -> None:
    status, headers, body = get(server, "/items/pen/42")
    assert status == 200
    assert body == (b"<p>pen [(&apos;item&apos;, &apos;pen&apos;), "
                    b"(&apos;num&apos;, &apos;42&apos;)] 42 MVC &amp; co</p>")
    # No extension in the URL: HTML in UTF-8 (issue 15; the original said octet-stream),
    # never stored.
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache, no-store, must-revalidate"
    # HEAD runs the controller too and keeps the GET length.
    status, head_headers, _ = get(server, "/items/pen/42", "HEAD")
    assert (status, head_headers["content-length"]) == (200, headers["content-length"])
    assert get(server, "/items/pen/x")[0] == 404


def test_content_type_from_url_extension_and_from_the_view(server: KraitProcess) -> None:
    status, headers, body = get(server, "/data.json")
    assert status == 200
    assert headers["content-type"].split(";")[0] == "application/json"
    assert json.loads(body) == {"values": ["1", "2", "<3>"]}
    status, headers, body = get(server, "/typed")
    assert (status, body) == (200, b"typed")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    # A .txt view is inserted verbatim; the URL's extension gives the type.
    status, headers, body = get(server, "/notes.txt")
    assert (status, body) == (200, b"verbatim @ctrl ${x}\n")
    assert headers["content-type"].startswith("text/plain")


def test_decorated_controllers_from_packages_and_sub_packages(server: KraitProcess) -> None:
    assert get(server, "/deco")[2] == b"deco from ctrl.pages"
    assert get(server, "/deep/7")[2] == b"deep from ctrl.sub.deep n=7"
    assert get(server, "/deep-alias")[2] == b"deep from ctrl.sub.deep n=-"


def test_set_init_ctrl_and_simple_ctrl_from_a_script(server: KraitProcess) -> None:
    status, headers, body = get(server, "/simple.py")
    assert (status, body) == (200, b"<h1>T&lt;</h1>42")
    assert get(server, "/simple")[2] == b"<h1>T&lt;</h1>42"   # extension search finds it
    # krait.response wins over the init controller (behaviour §8).
    assert get(server, "/response-wins.py")[2] == b"the response"


def test_controller_stack_and_import_ctrl(server: KraitProcess) -> None:
    # @import-ctrl pushes, renders the view with the new ctrl, pops: three levels deep here.
    status, _, body = get(server, "/outer")
    assert (status, body) == (200, b"[outer (a:1) outer {b (c:2) b} outerTrue]")
    # From a page served directly: ctrl is None around the embedded controller.
    assert get(server, "/embed.html")[2] == b"True <h1>E</h1>2 True"
    # push_ctrl/pop_ctrl semantics (§9.3), and a fresh stack for every request.
    for _ in range(2):
        status, _, body = get(server, "/stack.py")
        assert status == 200
        assert json.loads(body) == ["None", 0, "B", ["A"], "A", None, None]


def test_missing_view_names_the_controller_and_the_path(site: Path,
                                                        server: KraitProcess) -> None:
    status, _, body = get(server, "/missing")
    assert status == 500
    assert b"nope" not in body
    full = site / ".view" / "nope.html"
    log = wait_for_log(server, "MissingViewCtrl")
    assert f"view '.view/nope.html' of controller MissingViewCtrl not found ({full})" in log
    assert get(server, "/simple-missing.py")[0] == 500
    log = wait_for_log(server, "of controller SimpleCtrl")
    assert f"view '.view/none.html' of controller SimpleCtrl not found " \
           f"({site / '.view' / 'none.html'})" in log
    # A view that exists but imports a missing file is not reported as a missing view.
    assert get(server, "/broken-import")[0] == 500
    log = wait_for_log(server, "not-there.html")
    assert "cannot find template '/.view/not-there.html'" in log
    assert "of controller BrokenImportCtrl" not in log
    # CtrlBase.get_view() must be overridden.
    assert get(server, "/noview")[0] == 500
    assert "NoViewCtrl.get_view() is not implemented" in wait_for_log(server, "NoViewCtrl")
    # The worker goes on serving.
    assert get(server, "/deco")[0] == 200


def test_missing_view_on_the_debug_page(site: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    server = krait_server(site, "--debug", "--workers", "1")
    status, _, body = get(server, "/missing")
    assert status == 500
    assert (f"view &#x27;.view/nope.html&#x27; of controller MissingViewCtrl not found "
            f"({site / '.view' / 'nope.html'})").encode() in body
