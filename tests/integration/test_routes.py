"""Routing (behaviour §4 with the §16.2 fixes) through real HTTP against a real krait process:
order, exact URLs, full-match regexes with named groups in krait.url_params, {name} targets,
default targets, verbs (ANY, OPTIONS, HEAD as GET), 404 and 405 with Allow, ctrl_class routes
with views, and routes added by krait.mvc decorators."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import HttpReader, KraitProcess, write_site

INIT = '''\
import krait
from krait import config, mvc


class PageCtrl(mvc.CtrlBase):
    def __init__(self):
        krait.extra_headers.append(("X-Ctrl", f"{krait.request.http_method} "
                                              f"{sorted(krait.url_params.items())}"))

    def get_view(self):
        return ".view/page.txt"


config.routes = [
    config.Route(url="/first", target="a.py"),
    config.Route(url="/first", target="b.py"),          # never reached: the first match wins
    config.Route(regex=r"/item/(?P<id>\\d+)", target="show.py"),
    config.Route(regex=r"/page/(?P<name>[a-z]+)", target="pages/{name}.py"),
    config.Route(regex=r"/two/(?P<a>\\w+)/(?P<b>\\w+)(?:/(?P<c>\\w+))?", target="show.py"),
    config.Route("POST", url="/submit"),                # default target: /submit → submit.py
    config.Route("PUT", url="/put-only", target="show.py"),
    config.Route("DELETE", regex=r"/del/(?P<what>.+)", target="show.py"),
    config.Route("ANY", url="/any", target="show.py"),
    config.Route("OPTIONS", url="/opts", target="show.py"),
    config.Route(url="/ctrl", ctrl_class=PageCtrl),
    config.Route("ANY", regex=r"/ctrl/(?P<slug>\\w+)\\.txt", ctrl_class=PageCtrl),
    config.Route(url="/probe", target="probe.py"),
    config.Route(url="/robots", target="pub/file.txt"),
    config.Route(regex=r"/pub/.*"),                     # GET files under /pub only
]
mvc.import_ctrls_from("ctrl")                           # decorated routes come after
'''

DECO = '''\
import krait
from krait import mvc


@mvc.route_ctrl_decorator("GET", url="/deco")
@mvc.route_ctrl_decorator("POST", regex=r"/deco/(?P<n>\\d+)")
class DecoCtrl(mvc.CtrlBase):
    def __init__(self):
        krait.extra_headers.append(("X-Deco", repr(krait.url_params)))

    def get_view(self):
        return ".view/deco.txt"
'''

SHOW = '''\
import krait
krait.response = krait.JsonResponse({"method": krait.request.http_method,
                                     "url": krait.request.url, "params": krait.url_params})
'''

FILES: dict[str, str | bytes] = {
    ".py/init.py": INIT,
    ".py/ctrl/__init__.py": "",
    ".py/ctrl/deco.py": DECO,
    ".view/page.txt": "page view @{not a template}\n",
    ".view/deco.txt": "deco view\n",
    "a.py": "import krait\nkrait.response = krait.Response(body='a')\n",
    "b.py": "import krait\nkrait.response = krait.Response(body='b')\n",
    "show.py": SHOW,
    "pages/about.py": "import krait\nkrait.response = krait.Response(body='about page')\n",
    "submit.py": "import krait\n"
                 "krait.response = krait.JsonResponse(krait.request.get_post_form())\n",
    "probe.py": "import krait\nkrait.extra_headers.append(('X-Ran', krait.request.http_method))\n"
                "krait.response = krait.Response(body='probe body 123')\n",
    "pub/file.txt": "public\n",
    "item/abc": "a file that only a default route would serve\n",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KraitProcess]:
    site = write_site(tmp_path_factory.mktemp("routes") / "site", FILES)
    proc = KraitProcess(site, ["--workers", "2"], tmp_path_factory.mktemp("routes-logs"))
    try:
        yield proc
    finally:
        proc.stop()


def raw(server: KraitProcess, request: bytes, head: bool = False
        ) -> tuple[int, dict[str, str], bytes]:
    s = server.connect()
    try:
        s.sendall(request)
        return HttpReader(s, timeout=10).read(head_request=head)
    finally:
        s.close()


def show(r: requests.Response) -> dict:
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def test_first_match_wins(server):
    assert requests.get(server.url + "/first").text == "a"


def test_regex_named_groups(server):
    assert show(requests.get(server.url + "/item/42")) == {
        "method": "GET", "url": "/item/42", "params": {"id": "42"}}
    # The path is percent-decoded before matching.
    assert show(requests.get(server.url + "/item/%34%32"))["params"] == {"id": "42"}
    # A group that did not take part in the match is left out.
    assert show(requests.get(server.url + "/two/x/y"))["params"] == {"a": "x", "b": "y"}
    assert show(requests.get(server.url + "/two/x/y/z"))["params"] == {
        "a": "x", "b": "y", "c": "z"}


@pytest.mark.parametrize("path", ["/item/42x", "/item/", "/xitem/42", "/item/42/more",
                                  "/item/abc"])
def test_regex_must_match_the_whole_path(server, path):
    # Nothing else matches these paths (there is no catch-all route): 404.
    assert requests.get(server.url + path).status_code == 404, path


def test_target_with_group_substitution(server):
    r = requests.get(server.url + "/page/about")
    assert (r.status_code, r.text) == (200, "about page")
    assert requests.get(server.url + "/page/missing").status_code == 404


def test_default_target_for_post(server):
    r = requests.post(server.url + "/submit", data={"who": "me"})
    assert r.status_code == 200 and r.json() == {"who": "me"}


def test_405_with_allow_when_only_another_verb_matches(server):
    status, headers, body = raw(server, b"GET /submit HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 405
    assert headers["allow"] == "POST, OPTIONS"
    assert b"405 Method Not Allowed" in body
    status, headers, _ = raw(server, b"PUT /first HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n"
                                     b"\r\n")
    assert status == 405 and headers["allow"] == "GET, HEAD, OPTIONS"
    status, headers, _ = raw(server, b"GET /put-only HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 405 and headers["allow"] == "PUT, OPTIONS"
    status, headers, _ = raw(server, b"POST /del/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n"
                                     b"\r\n")
    assert status == 405 and headers["allow"] == "DELETE, OPTIONS"


def test_404_when_nothing_matches(server):
    for method in ("GET", "POST", "DELETE"):
        status, _, _ = raw(server, f"{method} /nothing/here HTTP/1.1\r\nHost: h\r\n"
                                   f"Content-Length: 0\r\n\r\n".encode())
        assert status == 404, method


def test_other_verbs(server):
    assert show(requests.put(server.url + "/put-only"))["method"] == "PUT"
    got = show(requests.delete(server.url + "/del/a/b%20c"))
    assert got == {"method": "DELETE", "url": "/del/a/b c", "params": {"what": "a/b c"}}


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_any_matches_every_method(server, method):
    status, _, body = raw(server, f"{method} /any HTTP/1.1\r\nHost: h\r\n"
                                  f"Content-Length: 0\r\n\r\n".encode())
    assert status == 200
    assert json.loads(body)["method"] == method


def test_options_routes(server):
    status, _, body = raw(server, b"OPTIONS /opts HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 200 and json.loads(body)["method"] == "OPTIONS"
    status, headers, _ = raw(server, b"GET /opts HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 405 and headers["allow"] == "OPTIONS"
    # Without an OPTIONS route the core answers with what the path takes.
    status, headers, body = raw(server, b"OPTIONS /put-only HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 204 and headers["allow"] == "PUT, OPTIONS" and body == b""


def test_head_routes_as_get_runs_the_script_and_drops_the_body(server):
    get = requests.get(server.url + "/probe")
    assert get.text == "probe body 123" and get.headers["X-Ran"] == "GET"
    s = server.connect()
    try:
        reader = HttpReader(s, timeout=10)
        s.sendall(b"HEAD /probe HTTP/1.1\r\nHost: h\r\n\r\n")
        status, headers, _ = reader.read(head_request=True)
        assert status == 200
        assert headers["x-ran"] == "HEAD"
        assert headers["content-length"] == "14"
        # No body bytes followed: the next response on the connection parses cleanly.
        s.sendall(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n")
        status, _, body = reader.read()
        assert (status, body) == (200, b"a")
    finally:
        s.close()


def test_head_then_get_on_one_connection(server):
    s = server.connect()
    try:
        reader = HttpReader(s, timeout=10)
        s.sendall(b"HEAD /any HTTP/1.1\r\nHost: h\r\n\r\nGET /first HTTP/1.1\r\nHost: h\r\n\r\n")
        status, headers, body = reader.read(head_request=True)
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        status, _, body = reader.read()
        assert (status, body) == (200, b"a")
    finally:
        s.close()


def test_exact_url_route_to_a_static_file(server):
    r = requests.get(server.url + "/robots")
    assert (r.status_code, r.text) == (200, "public\n")
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "ETag" in r.headers           # served by the core as a static file


def test_regex_route_to_static_files(server):
    assert requests.get(server.url + "/pub/file.txt").text == "public\n"
    assert requests.get(server.url + "/pub/none.txt").status_code == 404


def test_ctrl_class_route_with_a_text_view(server):
    r = requests.get(server.url + "/ctrl")
    assert r.status_code == 200
    assert r.text == "page view @{not a template}\n"       # a .txt view is inserted verbatim
    assert r.headers["X-Ctrl"] == "GET []"
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"   # URL without extension
    r = requests.post(server.url + "/ctrl/hello.txt")
    assert r.text == "page view @{not a template}\n"
    assert r.headers["X-Ctrl"] == "POST [('slug', 'hello')]"
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"  # from the URL's extension


def test_routes_from_decorators(server):
    r = requests.get(server.url + "/deco")
    assert (r.status_code, r.text, r.headers["X-Deco"]) == (200, "deco view\n", "{}")
    r = requests.post(server.url + "/deco/7")
    assert (r.status_code, r.headers["X-Deco"]) == (200, "{'n': '7'}")
    assert requests.get(server.url + "/deco/7").status_code == 405


def test_route_decisions_are_stable_under_repetition(server):
    # Regex decisions are cached by the core per (verb, path); repeated and interleaved
    # requests must keep giving the same answers.
    s = server.connect()
    try:
        reader = HttpReader(s, timeout=10)
        for _ in range(20):
            s.sendall(b"GET /item/1 HTTP/1.1\r\nHost: h\r\n\r\n"
                      b"DELETE /item/1 HTTP/1.1\r\nHost: h\r\n\r\n"
                      b"GET /item/2 HTTP/1.1\r\nHost: h\r\n\r\n")
            status, _, body = reader.read()
            assert status == 200 and json.loads(body)["params"] == {"id": "1"}
            status, headers, _ = reader.read()
            assert status == 405 and headers["allow"] == "GET, HEAD, OPTIONS"
            status, _, body = reader.read()
            assert status == 200 and json.loads(body)["params"] == {"id": "2"}
    finally:
        s.close()
