"""The ``--debug`` page for a 500: the author's frames first, with the source lines around each
(the ``.pyml``/``.html`` line of a template, not the compiled module), krait's, Mako's and the
standard library's frames folded, then the request and the route that matched.

Only built when the server runs with ``--debug`` (never otherwise, whatever the client's
address): it shows source code, headers and cookies.
"""

from __future__ import annotations

import html
import linecache
import os
import sysconfig
import traceback
from typing import Any

from krait.templates import pyml

_KRAIT_DIR = os.path.dirname(os.path.abspath(__file__))
_LIBRARY_DIRS = tuple({os.path.realpath(p) for p in (
    sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib"),
    sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib"),
) if p})
_CONTEXT = 5  # source lines shown before and after the line of a frame

_STYLE = """
body{margin:0;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;
color:#1d2330;background:#f6f7f9}
header{background:#7a1f1f;color:#fff;padding:1rem 1.5rem}
header h1{margin:0;font-size:1.35rem}header p{margin:.3rem 0 0;white-space:pre-wrap;
font-family:ui-monospace,Menlo,Consolas,monospace}
main{padding:0 1.5rem 2rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
.frame{background:#fff;border:1px solid #d8dbe2;border-radius:6px;margin:.6rem 0}
.frame.author{border-left:5px solid #c0392b}
.where{padding:.4rem .7rem;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
.where b{color:#7a1f1f}
pre{margin:0;padding:.4rem 0;overflow-x:auto;font:13px/1.4 ui-monospace,Menlo,Consolas,monospace;
border-top:1px solid #eceef2}
pre span{display:block;padding:0 .7rem}pre span.hit{background:#fde2e1;font-weight:bold}
details.library{margin:.6rem 0;color:#5b6272}details.library summary{cursor:pointer}
table{border-collapse:collapse;background:#fff;font-size:13px}
td,th{border:1px solid #d8dbe2;padding:.25rem .6rem;text-align:left;vertical-align:top;
font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
th{background:#eceef2;font-family:inherit}.notes{white-space:pre-wrap}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class _Frame:
    def __init__(self, filename: str, lineno: int, name: str, kind: str) -> None:
        self.filename = filename
        self.lineno = lineno
        self.name = name
        self.kind = kind  # "template", "site" (both the author's) or "library"

    @property
    def author(self) -> bool:
        return self.kind != "library"


def _kind(filename: str, site_root: str) -> str:
    real = os.path.realpath(filename)
    root = os.path.realpath(site_root) + os.sep
    if real.startswith(root):
        return "site"
    if real.startswith(_KRAIT_DIR + os.sep) or real.startswith(_LIBRARY_DIRS) \
            or filename.startswith("<"):
        return "library"
    return "site"  # the author's own modules elsewhere on sys.path


def frames(exc: BaseException, site_root: str) -> list[_Frame]:
    """The traceback's frames, outermost first; a template's frame names its ``.pyml`` file
    and line, not the compiled module."""
    out = []
    templates = {id(tb): (filename, line) for tb, filename, line in
                 pyml._template_tbs(exc.__traceback__)}
    for tb, summary in zip(_tbs(exc.__traceback__), traceback.extract_tb(exc.__traceback__),
                           strict=False):
        hit = templates.get(id(tb))
        if hit is not None and hit[0]:
            out.append(_Frame(hit[0], hit[1], "template", "template"))
        else:
            out.append(_Frame(summary.filename, summary.lineno or 0, summary.name,
                              _kind(summary.filename, site_root)))
    return out


def _tbs(tb: Any) -> list[Any]:
    out = []
    while tb is not None:
        out.append(tb)
        tb = tb.tb_next
    return out


def _source(frame: _Frame) -> str:
    linecache.checkcache(frame.filename)
    first = max(1, frame.lineno - _CONTEXT)
    rows = []
    for n in range(first, frame.lineno + _CONTEXT + 1):
        text = linecache.getline(frame.filename, n)
        if not text and n > frame.lineno:
            break
        cls = ' class="hit"' if n == frame.lineno else ""
        rows.append(f"<span{cls}>{n:>5}  {_esc(text.rstrip())}</span>")
    return f"<pre>{''.join(rows)}</pre>" if rows else ""


def _frame_html(frame: _Frame, source: bool) -> str:
    cls = "frame author" if frame.author else "frame"
    what = "template" if frame.kind == "template" else f"in <b>{_esc(frame.name)}</b>"
    return (f'<div class="{cls}"><div class="where">{_esc(frame.filename)}, line '
            f"{frame.lineno}, {what}</div>{_source(frame) if source else ''}</div>")


def _table(rows: list[tuple[str, Any]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _form(request: Any) -> list[tuple[str, Any]]:
    ctype = request.headers.get("content-type", "")
    try:
        if ctype.startswith("application/x-www-form-urlencoded"):
            return list(request.get_post_form().items())
        if ctype.startswith("multipart/form-data"):
            rows = []
            for part in request.get_multipart_form() or ():
                if part.filename is None:
                    rows.append((part.name, part.data.decode("utf-8", "replace")))
                else:
                    rows.append((part.name, f"(file {part.filename!r}, {part.content_type}, "
                                            f"{part.size} bytes)"))
            return rows
    except Exception as exc:  # noqa: BLE001 - the page must not fail on a bad body
        return [("(unreadable)", f"{type(exc).__name__}: {exc}")]
    return []


def render(exc: BaseException, request: Any, route: Any, url_params: dict[str, str],
           site_root: str) -> str:
    """The debug page for ``exc``, raised while answering ``request``.

    :param exc: the exception (with its traceback).
    :param request: ``krait.request`` (may be ``None``).
    :param route: the :class:`krait.config.Route` that matched, or ``None`` (the default route
        or a file found by its URL).
    :param url_params: ``krait.url_params``.
    :param site_root: the site root (frames under it are the author's).
    """
    all_frames = frames(exc, site_root)
    author = [f for f in all_frames if f.author]
    title = f"{type(exc).__name__}"
    message = str(exc)
    notes = "\n".join(getattr(exc, "__notes__", ()))
    parts = [f"<header><h1>{_esc(title)}</h1><p>{_esc(message)}</p></header><main>"]
    if notes:
        parts.append(f'<h2>Where</h2><pre class="notes">{_esc(notes)}</pre>')
    parts.append("<h2>Your code</h2>")
    if author:
        parts.extend(_frame_html(f, True) for f in reversed(author))
    else:
        parts.append("<p>No frame of the site's code: the error was raised by krait or a "
                     "library (see the traceback below).</p>")
    parts.append("<h2>Traceback (most recent call last)</h2>")
    run: list[_Frame] = []

    def flush() -> None:
        if run:
            inner = "".join(_frame_html(f, True) for f in run)
            parts.append(f'<details class="library"><summary>{len(run)} frame'
                         f'{"s" if len(run) != 1 else ""} of krait and libraries</summary>'
                         f"{inner}</details>")
            run.clear()

    for frame in all_frames:
        if frame.author:
            flush()
            parts.append(_frame_html(frame, True))
        else:
            run.append(frame)
    flush()
    parts.append(f'<pre class="notes">{_esc(type(exc).__name__)}: {_esc(message)}</pre>')
    if request is not None:
        url = request.url + (f"?{request.query_string}" if request.query_string else "")
        parts.append("<h2>Request</h2>")
        parts.append(_table([("method", request.http_method), ("URL", url),
                             ("remote address", getattr(request, "remote_addr", "")),
                             ("scheme", getattr(request, "scheme", ""))]))
        where = f"{route.filename}:{route.lineno}" if route is not None and route.filename \
            else ""
        route_text = (f"{route!r}" + (f"  (set at {where})" if where else "")) \
            if route is not None else "none (the file named by the URL)"
        parts.append("<h2>Route</h2>")
        parts.append(_table([("route", route_text), *sorted(url_params.items())]))
        parts.append("<h2>Headers</h2>")
        parts.append(_table(sorted(request.headers.items())))
        parts.append("<h2>Query</h2>")
        parts.append(_table(list(request.query.items())))
        parts.append("<h2>Form</h2>")
        parts.append(_table(_form(request)))
        parts.append("<h2>Cookies</h2>")
        parts.append(_table(sorted(request.cookies.items())))
    parts.append("</main>")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>500 {_esc(title)} · krait debug</title><style>{_STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>")
