""".pyml templates through a real krait process (behaviour §3.3, §7, issue 4): exact output of
the forms, @import, layouts, .mako views, static pages, the shared compiled-module cache and
reloads, and errors in the log and on the --debug page. The whole §7.5 table runs in-process in
tests/test_pyml.py; here a handful of its rows prove the server path renders them byte for
byte."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from krait.templates.pyml import is_dynamic
from tests.conftest import HttpReader, KraitProcess, write_site

INIT = '''\
import krait
from krait import config, mvc

# The bindings of behaviour §7.5: templates see init.py's globals.
name = "Ann"
x = True
n = 0
xs = [1, 2, 3]
d = {"b": 2, "a": 1}
html = '<b>"hi" & \\'bye\\'</b>'
a = 2
b = 3


class PageCtrl(mvc.CtrlBase):
    def __init__(self):
        self.who = "<ctrl>"

    def get_view(self):
        return ".view/scope.html"


config.routes = [config.Route("GET", url="/scope", ctrl_class=PageCtrl), config.Route()]
'''

#: Text that means something to Mako, literal in a .pyml page.
MAKO_TEXT = "${x} <%text> %\n## \\\n<%def name='f()'/>"
#: (file, template, exact output): rows of behaviour §7.5 (with the §16.4 fixes).
CASES = [
    ("hello.html", "Hello @name@!", "Hello Ann!"),
    ("space.html", "Hello @name !", "Hello Ann !"),
    ("at.html", "user@@example.com", "user@example.com"),
    ("atat.html", "@@@name@", "@Ann"),
    ("x.html", "@x@@name@", "TrueAnn"),
    ("esc.html", "@html@", "&lt;b&gt;&quot;hi&quot; &amp; &apos;bye&apos;&lt;/b&gt;"),
    ("raw.html", "@!html done", "<b>\"hi\" & 'bye'</b> done"),
    ("paren.html", "@(a + b) apples", "5 apples"),
    ("exec.pyml", '@{\n    y = a * 10\n    z = y + 1\n}@z@|@{ s = "}" }@s@', "21|}"),
    ("if.htm", "@if x:\nyes\n@else:\nno\n@/if\n", "\nyes\n\n"),
    ("elif.html", "@if n:A@elif x:B@else:C@/if@", "B"),
    ("cond.html", '@if {"a": 1}["a"]:A@/if@|@for i in xs[1:]:@i@@/for@', "A|23"),
    ("loop.html", "@for i in xs:\n<li>@i@</li>\n@/for\n",
     "\n<li>1</li>\n\n<li>2</li>\n\n<li>3</li>\n\n"),
    ("kv.html", "@for k, v in sorted(d.items()):[@k@=@v@]@/for@", "[a=1][b=2]"),
    ("nest.html", "@for i in xs:@if i % 2:odd@else:even@/if@ @/for@", "odd even odd "),
    ("mako.html", MAKO_TEXT, MAKO_TEXT),
    ("end.html", "end @", "end "),
]

VIEWS = {
    ".view/h.html": "<h>@name@</h>",
    ".view/a/b/deep.html": 'deep[@import ".view/h.html"@]',
    ".view/notes.txt": "mail me @ home ${x} <%x%>\r\n",
    ".view/side.py": "import krait\nkrait.extra_headers.append(('X-Side', 'ran ' + name))\n",
    ".view/layout.html": ("<html><title>@block title:Site@/block@</title>\n"
                          "<body>@block content:default@/block@</body></html>"),
    ".view/scope.html": "@ctrl.who@|@krait.request.query@|@name@|@{ mine = 'own' }@mine@",
    ".view/greet.mako": "<%! import math %>${name.upper()} ${html} ${int(math.sqrt(16))}\n"
                        "% if x:\n T\n% endif\n",
}

PAGES = {
    "nested/deeper/page.html": '@import ".view/a/b/deep.html"@|@import (".view/" + "h.html")@',
    "imports.html": "[@import '.view/notes.txt'@][@import '.view/side.py'@]",
    "child.html": ('@extends ".view/layout.html"\nignored\n@block title:Home - @name@@/block@'
                   "@block content:\n@for i in xs:<i>@i@</i>@/for@\n@/block@"),
    "view.html": "[@import '.view/greet.mako'@]",
    "plain.html": "<p>plain, no construct</p>\n",
    "only-atat.html": "mail: a@@b.c\n",
    "script.py": "import krait\nkrait.response = krait.Response(body=str(name))\n",
}


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A template cache outside the site root, for the server started by the test."""
    path = tmp_path / "template-cache"
    monkeypatch.setenv("KRAIT_TEMPLATE_CACHE", str(path))
    return path


@pytest.fixture
def site(tmp_path: Path, cache_dir: Path) -> Path:
    files: dict[str, str | bytes] = {".py/init.py": INIT, **VIEWS, **PAGES}
    for filename, template, _ in CASES:
        files[f"cases/{filename}"] = template
    return write_site(tmp_path / "site", files)


def get(server: KraitProcess, path: str, headers: str = "",
        method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    s = server.connect(timeout=10)
    try:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: h\r\n{headers}\r\n".encode())
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


def test_forms_render_exactly(site: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    server = krait_server(site)
    for filename, template, expected in CASES:
        status, headers, body = get(server, f"/cases/{filename}")
        assert (filename, status) == (filename, 200), body
        assert body.decode() == expected, filename
        # Without a construct the page is static: the core serves a file without any '@'
        # itself, and a page whose only '@' are '@@' is cacheable too (behaviour §3.3).
        dynamic = is_dynamic(template)
        assert ("no-store" in headers["cache-control"]) == dynamic, filename
        assert ("etag" in headers) != dynamic, filename
    # The default content type follows the file name; .pyml is HTML.
    assert get(server, "/cases/exec.pyml")[1]["content-type"].startswith("text/html")


def test_import_resolution_and_kinds(site: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    server = krait_server(site)
    # Relative to the site root from a nested page and from a nested import (§7.4).
    status, _, body = get(server, "/nested/deeper/page.html")
    assert (status, body) == (200, b"deep[<h>Ann</h>]|<h>Ann</h>")
    # A .txt file verbatim (its '@', '${' and CRLF untouched); a .py file runs, prints nothing.
    status, headers, body = get(server, "/imports.html")
    assert status == 200
    assert body == b"[mail me @ home ${x} <%x%>\r\n][]"
    assert headers["x-side"] == "ran Ann"


def test_layouts_and_mako_views(site: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    server = krait_server(site)
    status, _, body = get(server, "/child.html")
    assert (status, body) == (200, b"<html><title>Home - Ann</title>\n"
                                   b"<body>\n<i>1</i><i>2</i><i>3</i>\n</body></html>")
    # The layout alone renders its default blocks.
    assert get(server, "/.view/layout.html")[0] == 404      # hidden, as any dot path
    status, _, body = get(server, "/view.html")
    assert (status, body) == (200, b"[ANN <b>\"hi\" & 'bye'</b> 4\n T\n]")


def test_scope_ctrl_krait_init_globals_and_own_names(site: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    server = krait_server(site)
    status, _, body = get(server, "/scope?q=1")
    assert (status, body) == (200, b"&lt;ctrl&gt;|{&apos;q&apos;: &apos;1&apos;}|Ann|own")
    # A .py page sees init.py's globals too.
    assert get(server, "/script.py")[2] == b"Ann"


def test_static_and_dynamic_pages(site: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    server = krait_server(site)
    # No '@' at all: the core serves the file itself, cacheable, with an ETag (§3.3, §10).
    status, headers, body = get(server, "/plain.html")
    assert (status, body) == (200, b"<p>plain, no construct</p>\n")
    assert "etag" in headers and "max-age=" in headers["cache-control"]
    assert get(server, "/plain.html", f"If-None-Match: {headers['etag']}\r\n")[0] == 304
    # Only '@@': rendered by a worker ('@@' → '@') but static by behaviour §3.3: cacheable,
    # with an ETag of its body that answers If-None-Match.
    status, headers, body = get(server, "/only-atat.html")
    assert (status, body) == (200, b"mail: a@b.c\n")
    assert "max-age=" in headers["cache-control"] and "etag" in headers
    assert get(server, "/only-atat.html", f"If-None-Match: {headers['etag']}\r\n")[0] == 304
    # A page with constructs is dynamic: never stored.
    status, headers, _ = get(server, "/cases/hello.html")
    assert headers["cache-control"] == "no-cache, no-store, must-revalidate"
    assert "etag" not in headers
    # The decision is made once per file version: a construct added to the static page makes
    # it dynamic on the next request, and removing it makes it static again.
    plain = site / "plain.html"
    for text, mtime, dynamic in (("<p>@name@</p>\n", 10, True), ("<p>Ann</p>\n", 20, False)):
        plain.write_text(text)
        os.utime(plain, (time.time() + mtime, time.time() + mtime))
        status, headers, body = get(server, "/plain.html")
        assert (status, body) == (200, b"<p>Ann</p>\n")
        assert ("no-store" in headers["cache-control"]) == dynamic
        assert ("etag" in headers) != dynamic


def test_compiled_modules_are_shared_outside_the_root_and_reloaded(  # type: ignore[no-untyped-def]
        site: Path, cache_dir: Path, krait_server) -> None:
    page = site / "edit.html"
    page.write_text("one @name@")
    os.utime(page, (time.time() - 100, time.time() - 100))
    server = krait_server(site, "--workers", "2")
    for _ in range(4):                       # both workers, whichever answers
        assert get(server, "/edit.html")[2] == b"one Ann"
    modules = list(cache_dir.rglob("edit.html.py"))
    assert len(modules) == 1                 # one cache directory for every worker
    assert not [p for p in site.rglob("*.py") if p.name.endswith(".html.py")]
    # Rewritten while the server runs (a newer mtime): fresh on the very next request, from
    # every worker.
    page.write_text("two @name@!")
    os.utime(page, (time.time() + 5, time.time() + 5))
    for _ in range(4):
        assert get(server, "/edit.html")[2] == b"two Ann!"
    # Replaced by a file with an older modification time than the compiled module (a restored
    # backup): the module's stamp no longer matches, so it is recompiled too.
    tmp = site / "edit.tmp"
    tmp.write_text("three @name@")
    os.utime(tmp, (time.time() - 1000, time.time() - 1000))
    os.replace(tmp, page)
    for _ in range(4):
        assert get(server, "/edit.html")[2] == b"three Ann"
    # An edited layout is picked up by the page that extends it.
    layout = site / ".view/layout.html"
    layout.write_text("<L>@block content:@/block@</L>")
    os.utime(layout, (time.time() + 10, time.time() + 10))
    assert get(server, "/child.html")[2] == b"<L>\n<i>1</i><i>2</i><i>3</i>\n</L>"


def test_syntax_error_is_500_with_file_line_and_column(  # type: ignore[no-untyped-def]
        site: Path, krait_server) -> None:
    write_site(site, {"bad.html": "line one\n  @if x\n", "bad2.html": "ok\n@import 'bad.html'@\n"})
    server = krait_server(site)
    status, headers, body = get(server, "/bad.html")
    assert status == 500
    assert b"<h1>500 Internal Server Error</h1>" in body
    assert b"bad.html" not in body                     # nothing leaks without --debug
    bad = str(site / "bad.html")
    log = wait_for_log(server, "PymlSyntaxError")
    assert f'in template "{bad}", line 2, column 3' in log
    assert f'File "{bad}", line 2' in log
    assert "incomplete '@if' condition" in log
    # Imported by another page: the same error, and the importing line.
    assert get(server, "/bad2.html")[0] == 500
    log = wait_for_log(server, f'in template "{site / "bad2.html"}", line 2')
    assert f'in template "{site / "bad2.html"}", line 2' in log


def test_debug_page_shows_the_template_location(site: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    write_site(site, {"bad.html": "line one\n  @if x\n",
                      "boom.html": "first\nsecond @name@\n@(1/0)@\nlast\n"})
    server = krait_server(site, "--debug")
    status, _, body = get(server, "/bad.html")
    text = body.decode()
    assert status == 500
    assert f"in template &quot;{site / 'bad.html'}&quot;, line 2, column 3" in text
    assert "incomplete &#x27;@if&#x27; condition" in text
    status, _, body = get(server, "/boom.html")
    text = body.decode()
    assert status == 500
    assert "ZeroDivisionError" in text
    assert f"in template &quot;{site / 'boom.html'}&quot;, line 3\n    @(1/0)@" in text


def test_runtime_error_names_template_line_in_the_log(  # type: ignore[no-untyped-def]
        site: Path, krait_server) -> None:
    write_site(site, {"boom.html": "first\n@for i in xs:\n@(i / (i - 2))@\n@/for\n",
                      "outer.html": "x\n\n@import 'boom.html'@\n"})
    server = krait_server(site)
    assert get(server, "/outer.html")[0] == 500
    log = wait_for_log(server, "ZeroDivisionError")
    assert "ZeroDivisionError: division by zero" in log
    assert f'in template "{site / "outer.html"}", line 3' in log
    assert f'in template "{site / "boom.html"}", line 3\n    @(i / (i - 2))@' in log


def test_broken_templates_give_a_clean_500(site: Path, krait_server) -> None:  # type: ignore[no-untyped-def]
    # 200 KiB of output before the failure: the client gets a complete 500, never a part of
    # the page under a 200.
    write_site(site, {"late.html": "@for i in range(20000):0123456789@/for@@(1/0)@",
                      "late-syntax.html": "x" * 300000 + "@{ y = 1"})
    server = krait_server(site)
    for path in ("/late.html", "/late-syntax.html"):
        status, headers, body = get(server, path)
        assert status == 500
        assert int(headers["content-length"]) == len(body) < 1000  # the error page alone
        assert b"0123456789" not in body and b"xxx" not in body
    # The server goes on answering.
    assert get(server, "/cases/hello.html")[2] == b"Hello Ann!"


def test_http_errors_raised_by_a_template_keep_their_status(  # type: ignore[no-untyped-def]
        site: Path, krait_server) -> None:
    write_site(site, {"gone.html": "x@{ from krait.errors import NotFound; raise NotFound() }"})
    server = krait_server(site)
    status, _, body = get(server, "/gone.html")
    assert status == 404
    assert b"<h1>404 Not Found</h1><p>There is no page at this address.</p></main>" in body
    assert b"</style></head><body><main>" in body  # nothing of the page before the error
