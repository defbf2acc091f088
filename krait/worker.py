"""A worker process: reads request frames from its socketpair, makes the per-request state the
original Krait API reads (``krait.request``, ``krait.response``, ...; see :mod:`krait._state`)
current, runs the ``.py`` script,
template or controller, and writes the response frame(s) back. One request at a time
(invariant 2). Started by the supervisor as
``python -m krait.worker <site> --fd N [--ready-fd M] [--notify-fd K] [--debug]``.

The loop is the hot path of every dynamic request: everything that can be decided once (the
routes, the cache rules, the base name of a target file, the compiled script) is decided once
and kept; nothing here imports, reads the configuration or stats more than the script file.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import html
import io
import itertools
import json
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

import krait
from krait import _errorpages, _mime, _state, config, mvc, protocol, sessions, websockets
from krait._proxy import TrustedProxies
from krait.errors import HTTPError, PayloadTooLarge
from krait.paths import PathRefused
from krait.request import Request
from krait.response import REASONS, ErrorResponse, FileResponse, Response, ResponseBadRequest

_NO_STORE = "no-cache, no-store, must-revalidate"
# Cache decision flags (krait.h KRAIT_CACHE_*), as Rules.cache_flags returns them.
_CACHE_NO_STORE, _CACHE_PRIVATE, _CACHE_PUBLIC, _CACHE_LONG = 1, 2, 4, 8
# Bounded memo tables (cleared when full: they refill on demand).
_MEMO_MAX = 4096
_RESULT = "__krait_return__"
# Frames held at most while a run of WebSocket messages is dispatched (Worker.dispatch_ws),
# and messages taken from the reader's buffer at a time.
_BATCH_MAX = 256
_RUN_MAX = 64
_WS_FRAMES = (protocol.WS_MESSAGE, protocol.WS_CLOSE)
# Bytes other threads' frames may queue while one thread writes; past it they wait.
_PENDING_MAX = 4 * 1024 * 1024
# The unit of /proc/self/statm (config.max_worker_memory).
_PAGE = os.sysconf("SC_PAGE_SIZE")
# An X-Request-ID a trusted proxy sends is taken when it is 1-128 of these characters (a UUID,
# hex, base64); anything else is replaced by one of ours.
_encode_id = protocol.header_encoder("X-Request-ID")
_REQUEST_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                              "0123456789-_.:+/=")


def _compile_script(source: bytes, path: str) -> Any:
    """Compile a ``.py`` target. Like Krait 1.0, a top-level ``return value`` is allowed (its
    non-``None`` value becomes ``krait.response``); only such a script is wrapped in a
    function, so every other script keeps plain module semantics."""
    try:
        return compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        if exc.msg != "'return' outside function":
            raise
    tree = ast.parse(source, path)
    body = tree.body
    # A docstring and ``from __future__`` imports must stay at the top of the module.
    head = 0
    while head < len(body) and (
            (isinstance(body[head], ast.ImportFrom) and body[head].module == "__future__")
            or (head == 0 and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str))):
        head += 1
    wrapper = ast.parse(f"def __krait_script__():\n    pass\n{_RESULT} = __krait_script__()\n")
    func = wrapper.body[0]
    assert isinstance(func, ast.FunctionDef)
    # The wrapper's own lines point at line 1, so that tracebacks name the script's lines.
    for node in [func, func.args, *ast.walk(wrapper.body[1])]:
        if hasattr(node, "lineno"):
            node.lineno = node.end_lineno = 1
    func.body = body[head:] or [ast.Pass()]
    wrapper.body[:0] = body[:head]
    ast.fix_missing_locations(wrapper)
    return compile(wrapper, path, "exec", dont_inherit=True)


class ScriptCache:
    """Compiled ``.py`` targets, reused until the file changes (mtime, size or inode)."""

    def __init__(self) -> None:
        self._code: dict[str, tuple[int, int, int, Any]] = {}

    def get(self, path: str) -> Any:
        st = os.stat(path)
        hit = self._code.get(path)
        if hit and hit[0] == st.st_mtime_ns and hit[1] == st.st_size and hit[2] == st.st_ino:
            return hit[3]
        with open(path, "rb") as f:
            code = _compile_script(f.read(), path)
        if len(self._code) >= _MEMO_MAX:
            self._code.clear()
        self._code[path] = (st.st_mtime_ns, st.st_size, st.st_ino, code)
        return code


_HTML = "text/html; charset=utf-8"


def _content_type_for(name: str) -> str:
    """The default ``Content-Type`` of a dynamic answer, from the base filename's extension
    (``x.json.pyml`` uses ``.json``). A ``.py`` script, a ``.pyml`` page and a controller's URL
    without an extension answer HTML in UTF-8 (the original said
    ``application/octet-stream``, which browsers download); an unknown extension is
    ``application/octet-stream``."""
    base = os.path.basename(name)
    if base.endswith(".pyml"):
        base = base[:-5]
        if "." not in base:
            return _HTML
    if base.endswith(".py"):
        return _HTML
    ext = os.path.splitext(base)[1]
    if not ext:
        return _HTML
    mime = _mime.type_for_extension(ext)
    if mime is None:
        return "application/octet-stream"
    return _mime.with_charset(mime)


def _as_response(value: Any) -> Response:
    """Accept any object with ``http_version``, ``status_code``, ``headers`` and ``body`` as
    ``krait.response``, checked like a :class:`Response`."""
    if isinstance(value, Response):
        return value
    try:
        return Response(getattr(value, "http_version", "HTTP/1.1"), value.status_code,
                        value.headers, value.body)
    except AttributeError:
        raise TypeError(f"krait.response must be a krait.Response, not "
                        f"{type(value).__name__}") from None


class Worker:
    """The per-process state: init.py's globals, caches, the socket."""

    def __init__(self, site_root: str, sock: socket.socket, debug: bool) -> None:
        self.site_root = site_root
        self.sock = sock
        self.debug = debug
        #: ``krait --static``: (prefix, folder) routes before the site's, as the master has them.
        self.static: list[tuple[str, str]] = []
        self.changed: list[str] = []
        self.scripts = ScriptCache()
        self.site_globals: dict[str, Any] = {}
        self.routes: list[config.Route] = []
        self.error_pages: dict[int, str] = {}  # status → the site's page (absolute filename)
        self.rules: Any = None
        self._templates: Any = None
        self._bases: dict[str, str] = {}  # target file → base name relative to the root
        self._flags: dict[tuple[str, bool], int] = {}  # (base, dynamic) → cache flags
        self._ctypes: dict[str, str] = {}  # base name → default content type
        self._max_age = (300, 864000)
        self.proxies = TrustedProxies()
        # Request ids made here: a random prefix per worker process, then a counter.
        self._id_prefix = os.urandom(6).hex() + "-"
        self._id_count = itertools.count(1)
        # The state of the request the main thread runs (also current in its context).
        self._st = _state.RequestState()
        self._static_page = False  # the current target is a template without constructs
        # The name the cache rules see for the current request: the target file, a controller
        # route's exact url, or None (never stored) for a controller on a regex or catch-all
        # route, whose URL a visitor chooses (web cache deception).
        self._cache_base: str | None = None
        self._view: str | None = None  # the view file of the current controller route
        self._static_only: tuple[str, ...] = ()
        # The socket to the core: held by the thread that writes; frames other threads send
        # meanwhile wait in _pending (guarded by _plock) and go out with the holder's.
        self._wlock = threading.Lock()
        self._plock = threading.Lock()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._hub: Any = None  # krait._wshub.Hub, created with the first WebSocket
        self._requests: queue.SimpleQueue[Any] | None = None  # set once a reader thread runs
        # Frames written by the reading thread while it hands a run of WebSocket messages to
        # controllers: sent together once the run ends (see dispatch_ws).
        self._batch: list[bytes] | None = None
        self._batch_thread = 0
        # Route index → (prefix, application) of the routes that mount a WSGI application.
        self._wsgi: dict[int, tuple[str, Any]] = {}
        # Worker recycling (config.max_requests, config.max_worker_memory): requests answered
        # (route questions aside), the count at which the master is next asked for a
        # replacement (0: never), the memory limit in bytes (0: none) with the time of its
        # next check and /proc/self/statm kept open, and the pipe that asks (ask_recycling).
        self.served = 0
        self._recycle_at = 0
        self._recycle_every = 0
        self._memory_limit = 0
        self._memory_next = 0.0
        self._statm: int | None = None
        self._notify_fd: int | None = None
        self._master = os.getppid()

    # -- start-up -----------------------------------------------------------------------------

    def load(self) -> None:
        """Load the site as the master did (:func:`krait._site.load`), with the master's
        command-line limits (passed as ``KRAIT_CONFIG_<name>`` variables)."""
        from krait._site import compare_tables, load

        overrides: dict[str, Any] = {}
        for key, value in os.environ.items():
            if key.startswith("KRAIT_CONFIG_"):
                overrides[key[len("KRAIT_CONFIG_"):]] = ast.literal_eval(value)
        site = load(self.site_root, overrides, self.static)
        tables = os.environ.get("KRAIT_CORE_TABLES")
        # Parts of init.py's settings that differ from what the core holds (a reload after an
        # edit): reported to the master, which says they wait for a restart.
        self.changed = compare_tables(site, json.loads(tables)) if tables else []
        self.site_globals = site.globals
        self.routes = site.routes
        self.error_pages = site.error_pages
        self.rules = site.rules
        self._wsgi = {i: (r.prefix, r.app) for i, r in enumerate(self.routes)
                      if r.wsgi is not None}
        self._max_age = (int(config.cache_max_age_default), int(config.cache_max_age_long_term))
        self._static_only = static_only_prefixes()
        _ = self.templates  # Mako is imported now, not during the first page

    @property
    def templates(self) -> Any:
        """The site's templates (:class:`krait.templates.lookup.SiteTemplates`). Compiled
        modules go to one cache directory shared by every worker of the site, outside it."""
        if self._templates is None:
            from krait.templates.lookup import SiteTemplates

            def import_script(filename: str, ns: dict[str, Any]) -> None:
                ns["__file__"] = filename
                self.run_script(filename, ns)

            self._templates = SiteTemplates(self.site_root, run_script=import_script,
                                            html_templates=bool(config.html_templates))
            if self._templates.module_directory is None:
                sys.stderr.write("krait: no usable cache directory for compiled templates; "
                                 "each worker compiles them in memory (set "
                                 "KRAIT_TEMPLATE_CACHE to a writable directory)\n")
        return self._templates

    def recycle_after(self, notify_fd: int | None) -> None:
        """Ask the master for a replacement (on ``notify_fd``) once ``config.max_requests``
        requests, plus a random jitter of up to ``config.max_requests_jitter``, are answered
        (and again every as many after that while it has not come), or once the worker's
        resident memory is above ``config.max_worker_memory`` MiB after a request."""
        self._notify_fd = notify_fd
        if notify_fd is None:
            return
        limit = int(config.max_requests)
        if limit > 0:
            import random

            self._recycle_every = limit + random.randint(0, int(config.max_requests_jitter))
            self._recycle_at = self._recycle_every
        if config.max_worker_memory > 0:
            try:
                self._statm = os.open("/proc/self/statm", os.O_RDONLY)
            except OSError:
                sys.stderr.write("krait: /proc/self/statm cannot be read: "
                                 "max_worker_memory is not enforced\n")
                return
            self._memory_limit = int(config.max_worker_memory) << 20

    def ask_recycling(self, reason: str) -> None:
        """Tell the master this worker is due for recycling: ``reason`` (a line for the error
        log) on the notice pipe, and SIGCHLD to wake its loop (the master reads every worker's
        pipe on SIGCHLD). The master starts a replacement, then retires this worker: the core
        hands it nothing more, and closes its socket once every request it was handed is
        answered; :meth:`serve` then returns, and the process exits with status 0. Until then
        this worker serves as before: nothing it was handed is lost."""
        if self._notify_fd is None or os.getppid() != self._master:
            return  # the master is gone: nobody would read it
        try:
            os.write(self._notify_fd, reason.encode("ascii", "replace") + b"\n")
            os.kill(self._master, signal.SIGCHLD)
        except OSError:
            pass  # a full pipe already asks; a master that is gone stops this worker anyway

    def count(self, frame: Any) -> None:
        """One more request answered (a route or cache-rule question is part of a request, not
        one)."""
        if not frame.flags & (protocol.REQ_ROUTE | protocol.REQ_CACHE):
            self.served += 1
            if self.served == self._recycle_at:
                self._recycle_at += self._recycle_every
                self.ask_recycling(f"it reached max_requests ({self.served} requests answered)")
            if self._memory_limit and time.monotonic() >= self._memory_next:
                self.check_memory()

    def check_memory(self) -> None:
        """Resident memory above ``config.max_worker_memory``: ask to be recycled. Read at most
        every 0.1 s (a read of /proc/self/statm costs a few µs), and after asking not again
        for 5 s (the replacement is loading)."""
        assert self._statm is not None
        rss = int(os.pread(self._statm, 128, 0).split()[1]) * _PAGE
        self._memory_next = time.monotonic() + 0.1
        if rss > self._memory_limit:
            self._memory_next += 5.0
            self.ask_recycling(f"its memory ({rss >> 20} MiB) is above max_worker_memory "
                               f"({self._memory_limit >> 20} MiB) after {self.served} requests")

    # -- running one request ------------------------------------------------------------------

    def namespace(self, path: str) -> dict[str, Any]:
        """Globals for a script or template: init.py's globals, then krait and ctrl."""
        ns = dict(self.site_globals)
        ns["__name__"] = "__krait_page__"
        ns["__file__"] = path
        ns["krait"] = krait
        ns["ctrl"] = self._st.curr_ctrl
        return ns

    def run_script(self, path: str, ns: dict[str, Any] | None = None) -> None:
        """Run a ``.py`` file; a non-``None`` top-level ``return`` value becomes
        ``krait.response``."""
        if ns is None:
            ns = self.namespace(path)
        exec(self.scripts.get(path), ns)  # noqa: S102 - running site scripts is the point
        result = ns.get(_RESULT)
        if result is not None:
            _state.current().response = result

    def render(self, path: str) -> str:
        """Render a target or view file by its extension: a template, a
        ``.py`` script (which outputs nothing), any other file verbatim."""
        return self.templates.render(path, self.namespace(path))

    def render_ctrl(self, ctrl: Any) -> str:
        """Make ``ctrl`` current, render the view its ``get_view()`` names (relative to the
        site root), and restore the previous controller."""
        mvc.push_ctrl(ctrl)
        try:
            view = ctrl.get_view()
            templates = self.templates
            filename = templates.locate(view, absolute_ok=True)[0]
            self._view = filename
            try:
                return templates.render(view, self.namespace(filename))
            except FileNotFoundError as exc:
                if getattr(exc, "filename", None) != filename:
                    raise  # something the view imports is missing, not the view
                raise FileNotFoundError(
                    f"view {view!r} of controller {type(ctrl).__qualname__} not found "
                    f"({filename})") from None
        finally:
            mvc.pop_ctrl()

    @staticmethod
    def url_params(frame: protocol.RequestFrame) -> dict[str, str]:
        """The named groups of the regex route that matched (the core sends them)."""
        return dict(frame.params)

    def base_name(self, path: str) -> str:
        """The target file relative to the site root (for content types and cache rules)."""
        base = self._bases.get(path)
        if base is None:
            base = os.path.relpath(path, self.site_root)
            if len(self._bases) >= _MEMO_MAX:
                self._bases.clear()
            self._bases[path] = base
        return base

    def handle(self, frame: protocol.RequestFrame) -> tuple[Response, str | None]:
        """Run the target; returns the response and the base filename for its content type
        and cache rules."""
        request, request_id = self.request_of(frame)
        st = self._st = _state.RequestState(
            request, dict(frame.params) if frame.params else {},
            websockets.WebsocketsRequest(request) if frame.flags & protocol.REQ_WEBSOCKET
            else None, request_id)
        _state.activate(st)
        self._static_page = False
        self._view = self._cache_base = None
        if frame.flags & protocol.REQ_WEBSOCKET and not self.same_origin(frame):
            return ErrorResponse(403, "this origin may not open a WebSocket here"), None
        route = self.routes[frame.route] if 0 <= frame.route < len(self.routes) else None
        if route is not None:
            _check_body_size(route, frame)
        if route is not None and route.ctrl_class is not None:
            # The URL names no file: its extension says nothing about the answer. The content
            # type comes from the view (or the page), and the cache rules see the route's
            # exact url, never a path a visitor made up (/account/settings.css).
            self._cache_base = route.url.lstrip("/") if route.url else None
            ctrl = route.ctrl_class()
            if st.response is not None:
                return _as_response(st.response), None
            text = self.render_ctrl(ctrl)
            base = self.base_name(self._view) if self._view else None
        else:
            path = frame.file
            base = self._cache_base = self.base_name(path)
            if self._static_only and _under(base, self._static_only):
                # A file in a static_only directory is data: sent as it is, never run.
                return self.static_file(path, base), base
            if path.endswith(".py"):
                self.run_script(path)
                text = ""
                if st.response is None and st.init_ctrl is not None:
                    text = self.render_ctrl(st.init_ctrl)
            else:
                text = self.render(path)
                # A template without constructs (only "@@") is static, and so is a .html
                # page under html_templates = False: it is cached like a static file (an
                # ETag of its body, a max-age).
                self._static_page = path.endswith((".html", ".htm", ".pyml")) and \
                    self.templates.is_static(path)
        if st.response is not None:
            return _as_response(st.response), base
        return Response("HTTP/1.1", 200, None, text), base

    def request_of(self, frame: protocol.RequestFrame) -> tuple[Request, str]:
        """The :class:`~krait.request.Request` a frame carries, and its request id."""
        body_file = frame.body_file
        addr, scheme, request_id = self.client(frame)
        return Request(frame.method, frame.path, frame.query, frame.version,
                       lambda: frame.headers, b"" if body_file else frame.body,
                       remote_addr=addr, server_addr=frame.server_addr,
                       server_port=frame.server_port, scheme=scheme, body_file=body_file,
                       request_id=request_id), request_id

    def client(self, frame: protocol.RequestFrame) -> tuple[str, str, str]:
        """The client's address and the scheme it used (the peer and the connection's, or what
        a trusted proxy says: ``X-Forwarded-For``, ``X-Forwarded-Proto``), and the request id
        (a trusted proxy's ``X-Request-ID``, or one made here). A client named by a PROXY
        protocol header (``REQ_PROXIED``) is final: its headers are not believed."""
        addr = frame.remote_addr
        scheme = "https" if frame.flags & protocol.REQ_TLS else "http"
        request_id = None
        # A PROXY protocol header already named the client (the core resolved it, and only
        # from a trusted proxy): the headers are the client's own, never a proxy's word.
        if self.proxies and not frame.flags & protocol.REQ_PROXIED:
            fwd_for = fwd_proto = fwd_id = None
            for name, value in frame.headers:
                if name == "x-forwarded-for":
                    fwd_for = value if fwd_for is None else f"{fwd_for},{value}"
                elif name == "x-forwarded-proto":
                    fwd_proto = value
                elif name == "x-request-id":
                    fwd_id = value
            if fwd_id and len(fwd_id) <= 128 and _REQUEST_ID_CHARS.issuperset(fwd_id) and \
                    self.proxies.trusts(addr):
                request_id = fwd_id
            addr, scheme = self.proxies.resolve(addr, fwd_for, fwd_proto, scheme)
        if request_id is None:
            request_id = self._id_prefix + str(next(self._id_count))
        return addr, scheme, request_id

    def respond_wsgi(self, frame: protocol.RequestFrame, prefix: str, app: Any) -> None:
        """Run a mounted WSGI application (PEP 3333, see :mod:`krait.wsgi`): its response
        goes out inline, streamed as its iterable yields, or as a file the core sends."""
        from krait import wsgi

        body_file = frame.body_file
        request, request_id = self.request_of(frame)
        addr, scheme = request.remote_addr, request.scheme
        self._st = _state.RequestState(request, {}, None, request_id)
        _state.activate(self._st)
        try:
            _check_body_size(self.routes[frame.route], frame)
        except HTTPError as exc:
            self.send(frame, self.error_response(exc.status, exc.message), None)
            return
        if body_file:
            body: Any = open(body_file, "rb")  # noqa: SIM115 - closed below
            length = os.fstat(body.fileno()).st_size
        else:
            body, length = io.BytesIO(frame.body), len(frame.body)
        exchange = wsgi.Exchange(frame.id, self.write)
        result: Any = None
        try:
            environ = wsgi.build_environ(frame, prefix, addr, scheme, body, length)
            result = app(environ, exchange.start_response)
            try:
                exchange.finish(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except (Exception, SystemExit, KeyboardInterrupt):  # noqa: BLE001
            if exchange.sent:
                # The status line has gone out: as for a broken krait stream, dying makes the
                # core cut the connection, the only honest end of a body cut short.
                sys.stderr.write(f"krait: {frame.method} {frame.path}: the WSGI application "
                                 "failed after its response started; the connection is cut\n"
                                 f"{traceback.format_exc()}")
                sys.stderr.flush()
                os._exit(70)
            self.send(frame, self.error_page(frame), None)
        finally:
            body.close()

    def same_origin(self, frame: protocol.RequestFrame) -> bool:
        """Does the handshake's ``Origin`` match the host asked for (or a trusted proxy's
        ``X-Forwarded-Host``), or ``config.websocket_origins``?"""
        origin = host = fwd_host = None
        for name, value in frame.headers:
            if name == "origin" or (name == "sec-websocket-origin" and origin is None):
                origin = value
            elif name == "host":
                host = value
            elif name == "x-forwarded-host":
                fwd_host = value
        if fwd_host and self.proxies and not frame.flags & protocol.REQ_PROXIED and \
                self.proxies.trusts(frame.remote_addr):
            host = fwd_host.split(",")[-1].strip()
        allowed = websockets.origin_allowed(origin, host, config.websocket_origins)
        if not allowed:
            sys.stderr.write(f"krait: WebSocket handshake for {frame.path} refused (403): "
                             f"Origin {origin!r} is not {host!r} nor in "
                             f"krait.config.websocket_origins\n")
            sys.stderr.flush()
        return allowed

    def static_file(self, path: str, base: str) -> Response:
        """A file of a ``static_only`` directory, sent as it is (the core sends it): its type
        from its extension (``.html`` and ``.py`` included), never sniffed, cached as a
        static file."""
        if not os.path.isfile(path):
            return ErrorResponse(404)
        self._static_page = True
        headers = [("X-Content-Type-Options", "nosniff")]
        flags = self.cache_flags(base, False)
        if flags & _CACHE_NO_STORE:
            headers.append(("Cache-Control", _NO_STORE))
        else:
            age = self._max_age[1] if flags & _CACHE_LONG else self._max_age[0]
            scope = "private, " if flags & _CACHE_PRIVATE else \
                "public, " if flags & _CACHE_PUBLIC else ""
            headers.append(("Cache-Control", f"{scope}max-age={age}, must-revalidate"))
        ext = os.path.splitext(path)[1]
        ctype = "text/plain; charset=utf-8" if ext in (".py", ".pyml", ".mako") else \
            _mime.with_charset(_mime.type_for_extension(ext) or "application/octet-stream")
        return FileResponse(path, content_type=ctype, headers=headers)

    def answer_route(self, frame: protocol.RequestFrame) -> None:
        """The core asks which route takes (verb, path): the site's regexes run here, in a
        worker and under its time limit, never in the core's loop."""
        from krait.supervisor import encode_pairs

        index, target, pairs, allow = self.rules.match(frame.route, frame.path)
        self.write(protocol.encode_route_answer(frame.id, index, allow, target,
                                                encode_pairs(pairs) if pairs else b""))

    def answer_cache(self, frame: protocol.RequestFrame) -> None:
        """The core asks which cache rules apply to a static file (``frame.path``, relative
        to the root): a site's cache-rule regexes run here, never in the core's loop."""
        self.write(protocol.encode_cache_answer(frame.id, self.cache_flags(frame.path, False)))

    def respond(self, frame: protocol.RequestFrame) -> None:
        if frame.flags & protocol.REQ_ROUTE:
            self.answer_route(frame)
            return
        if frame.flags & protocol.REQ_CACHE:
            self.answer_cache(frame)
            return
        base: str | None = None
        if frame.route in self._wsgi:
            try:
                self.respond_wsgi(frame, *self._wsgi[frame.route])
            finally:
                self.finish(frame)
            return
        try:
            response, base = self.handle(frame)
            # The session the page used is saved before anything is sent (its Set-Cookie
            # joins krait.extra_headers); a failure to save is the page's 500.
            sessions._finish()
            if isinstance(response, ErrorResponse) and response.status_code >= 400 and \
                    response.body is response._default_body:
                response = self.error_response(response.status_code, response.message,
                                               response.headers)
        except HTTPError as exc:
            if isinstance(exc, PathRefused):
                sys.stderr.write(f"krait: {frame.method} {frame.path}: 404, {exc.message}\n")
                sys.stderr.flush()
                response = self.error_response(404)
            else:
                response = self.error_response(exc.status, exc.message, exc.headers)
        except (Exception, SystemExit, KeyboardInterrupt):  # noqa: BLE001
            # A script's error (sys.exit() included) is a 500, never a dead worker.
            response = self.error_page(frame)
        try:
            if frame.flags & protocol.REQ_WEBSOCKET and self.websocket_answer(frame, response):
                return
            self.send(frame, response, base)
        except (ValueError, TypeError):
            # A header or body the core cannot take: still an error of the site's code. The
            # page goes out without the site's extra headers (they may be the culprit).
            self._st.extra_headers = []
            self.send(frame, self.error_page(frame), None)
        finally:
            self.finish(frame)

    def finish(self, frame: protocol.RequestFrame) -> None:
        """The request is answered: its spooled body file goes (the core removes it too), and
        the temporary files of its multipart parts."""
        request = self._st.request
        if request is not None:
            request._close()
        _drop_body_file(frame)

    def error_response(self, status: int, message: str | None = None,
                       headers: list[tuple[str, str]] | None = None) -> Response:
        """The answer for an error status: JSON for a client that prefers it, else the site's
        page from ``config.error_pages``, else the default page."""
        if status < 400:
            return ErrorResponse(status, message, headers)
        headers = [(k, v) for k, v in headers or () if k.lower() != "content-type"]
        reason = REASONS.get(status, "Unknown")
        request = self._st.request
        if request is not None and _errorpages.wants_json(request.headers.get("accept")):
            return Response("HTTP/1.1", status, [*headers, ("Content-Type", "application/json")],
                            _errorpages.json_body(status, reason, message))
        page = self.error_pages.get(status)
        if page is not None:
            try:
                ns = self.namespace(page)
                ns["error"] = _errorpages.PageError(status, reason, message)
                text = self.templates.render(page, ns)
                ctype = _content_type_for(self.base_name(page))
                return Response("HTTP/1.1", status, [*headers, ("Content-Type", ctype)], text)
            except Exception:  # noqa: BLE001 - the default page is the fallback
                sys.stderr.write(f"krait: the error page {page} for {status} failed; the "
                                 f"default page is sent instead\n{traceback.format_exc()}")
                sys.stderr.flush()
        return ErrorResponse(status, message, headers)

    def error_page(self, frame: protocol.RequestFrame) -> Response:
        """500 for the exception being handled: its traceback always goes to the error log,
        and onto the page only with ``--debug`` (the debug page: the author's frames first,
        the request and the route; see :mod:`krait._debugpage`)."""
        text = traceback.format_exc()
        sys.stderr.write(f"krait: error in {frame.method} {frame.path}\n{text}")
        sys.stderr.flush()
        if self.debug:
            try:
                from krait import _debugpage

                route = self.routes[frame.route] if 0 <= frame.route < len(self.routes) \
                    else None
                st = self._st
                body = _debugpage.render(sys.exc_info()[1], st.request,
                                         route, st.url_params, self.site_root)
            except Exception:  # noqa: BLE001 - the plain traceback is always possible
                sys.stderr.write(f"krait: the debug page failed\n{traceback.format_exc()}")
                body = (f"<html><head><title>500 Internal Server Error</title></head><body>"
                        f"<h1>500 Internal Server Error</h1><pre>{html.escape(text)}</pre>"
                        f"</body></html>")
            return Response("HTTP/1.1", 500, [("Content-Type", "text/html; charset=utf-8")],
                            body)
        return self.error_response(500)

    def cache_flags(self, base: str, dynamic: bool = True) -> int:
        key = (base, dynamic)
        flags = self._flags.get(key)
        if flags is None:
            flags = self.rules.cache_flags(base, dynamic=dynamic)
            if len(self._flags) >= _MEMO_MAX:
                self._flags.clear()
            self._flags[key] = flags
        return flags

    def send(self, frame: protocol.RequestFrame, response: Response, base: str | None) -> None:
        st = self._st
        extra = st.extra_headers
        headers = list(response.headers)
        if extra:
            headers += [(str(k), str(v)) for k, v in extra]
        names = {k.lower() for k, _ in headers}
        rid = st.request_id
        if rid is not None and "x-request-id" not in names:
            # Encoded here, unchecked: the id is ours, or a trusted proxy's checked one.
            echo: tuple[bytes, ...] = (_encode_id(rid),)
        else:
            echo = ()
        status = response.status_code
        if "content-type" not in names and status not in (204, 304):
            ctype = st.content_type
            if ctype is None and base is not None:
                ctype = self._ctypes.get(base)
                if ctype is None:
                    ctype = _content_type_for(base)
                    if len(self._ctypes) >= _MEMO_MAX:
                        self._ctypes.clear()
                    self._ctypes[base] = ctype
            if ctype is not None:
                headers.append(("Content-Type", ctype))
        fid = frame.id
        if response.file_path is not None:
            if "cache-control" not in names:
                headers.append(("Cache-Control", _NO_STORE))
            self.write(protocol.encode_response(
                fid, status, headers, response.file_path, protocol.BODY_FILE, encoded=echo))
            return
        if response.is_stream:
            if "cache-control" not in names:
                headers.append(("Cache-Control", _NO_STORE))
            self.stream(fid, status, headers, response, echo)
            return
        body = response.body_bytes()
        if "cache-control" not in names:
            cache_base = self._cache_base if base is not None else None
            flags = self.cache_flags(cache_base, not self._static_page) \
                if cache_base is not None else _CACHE_NO_STORE
            if not flags & _CACHE_NO_STORE and status == 200:
                # Behaviour §16.5: a dynamic page made storable gets an ETag of its rendered
                # body, never of its source file.
                etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
                age = self._max_age[1] if flags & _CACHE_LONG else self._max_age[0]
                scope = "private, " if flags & _CACHE_PRIVATE else \
                    "public, " if flags & _CACHE_PUBLIC else ""
                headers.append(("Cache-Control", f"{scope}max-age={age}, must-revalidate"))
                headers.append(("ETag", etag))
                request = st.request
                inm = request.headers.get("if-none-match") if request is not None else None
                if inm and _etag_listed(etag, inm):
                    status, body = 304, b""
            else:
                headers.append(("Cache-Control", _NO_STORE))
        frames = protocol.encode_response_stream(fid, status, headers, body, encoded=echo)
        self.write(*frames)

    def write(self, *frames: bytes) -> None:
        """Send frames to the core. Controller threads send too: whoever holds the socket
        sends what the others queued meanwhile along with its own (one system call for many
        threads' messages). A controller thread whose frames were queued returns at once,
        unless the queue is full (then it waits, as does the main thread always, until its
        frames have been sent)."""
        batch = self._batch
        if batch is not None and threading.get_ident() == self._batch_thread:
            batch.extend(frames)
            return
        self._send(frames, wait=threading.current_thread() is threading.main_thread())

    def _send(self, frames: tuple[bytes, ...] | list[bytes], wait: bool) -> None:
        out = frames
        if not self._wlock.acquire(blocking=False):
            with self._plock:
                self._pending.extend(frames)
                self._pending_bytes += sum(map(len, frames))
                held = self._wlock.acquire(blocking=False)
                if not held and not wait and self._pending_bytes < _PENDING_MAX:
                    return  # the thread that holds the socket sends them
            if not held:
                self._wlock.acquire()
            out = ()  # ours are queued: the loop below (or the holder, meanwhile) sends them
        try:
            while True:
                if out:
                    protocol.write_frames(self.sock, *out)
                with self._plock:
                    if not self._pending:
                        self._wlock.release()  # under _plock: nothing queued is left behind
                        return
                    out, self._pending, self._pending_bytes = self._pending, [], 0
        except BaseException:
            self._wlock.release()
            raise

    def dispatch_ws(self, reader: protocol.FrameReader) -> None:
        """Hand the WS_MESSAGE and WS_CLOSE frames at the head of the reader's buffer to their
        controllers (at least one is whole there). What controllers send meanwhile from this
        thread (an echo, a broadcast from on_in_message) is held and sent in one go when the
        run ends (or holds ``_BATCH_MAX`` frames): one system call, and one wake-up of the
        core, for many messages."""
        hub = self.hub
        batch: list[bytes] = []
        self._batch, self._batch_thread = batch, threading.get_ident()
        try:
            while True:
                if len(batch) >= _BATCH_MAX:
                    self._send_held(batch)
                run = reader.ws_messages(_RUN_MAX)
                if run:
                    hub.deliver(run)
                elif reader.buffered_type() in _WS_FRAMES:
                    ftype, fid, kind, code, data = reader.read_core_frame()  # type: ignore[misc]
                    if ftype == protocol.WS_CLOSE:
                        # The answers held so far go now, not after an on_stop that may
                        # take a while: the core holds its close frame for them (at most
                        # 1 s) and sends it once the hub answers this WS_CLOSE.
                        self._send_held(batch)
                    hub.dispatch(ftype, fid, kind, code, data)
                else:
                    break
        finally:
            self._batch = None
            self._send_held(batch)

    def _send_held(self, batch: list[bytes]) -> None:
        if batch:
            try:
                self._send(batch, wait=True)
            except OSError:
                pass  # the core is gone; the worker is about to end
            batch.clear()

    @property
    def hub(self) -> Any:
        if self._hub is None:
            from krait._wshub import Hub

            self._hub = Hub(self.write)
        return self._hub

    def websocket_answer(self, frame: protocol.RequestFrame, response: Response) -> bool:
        """Behaviour §12.1 for a handshake: accept (101) when the script set
        krait.websockets.response and any krait.response is 2xx; otherwise send the script's
        non-2xx response, or 400. Returns True when the response was sent here."""
        st = self._st
        accept = st.ws_response
        if accept is not None and 200 <= response.status_code < 300:
            headers = [(k, v) for k, v in st.extra_headers if k.lower() == "set-cookie"]
            if st.request_id is not None:
                headers.append(("X-Request-ID", st.request_id))
            if accept.protocol is not None:
                headers.append(("Sec-WebSocket-Protocol", accept.protocol))
            # Bound before the 101 leaves: the client may send at once, and the reader
            # thread must find the controller (messages wait until on_start has run).
            self.hub.bind(frame.id, accept.controller, st.for_websocket())
            try:
                self.write(protocol.encode_response(frame.id, 101, headers, b""))
            except BaseException:
                self.hub.ended(frame.id)
                raise
            self.hub.start(frame.id)
            return True
        if 200 <= response.status_code < 300:
            self.send(frame, ResponseBadRequest(), None)
            return True
        return False

    def stream(self, fid: int, status: int, headers: list[tuple[str, str]],
               response: Response, encoded: tuple[bytes, ...] = ()) -> None:
        """Send a generator/iterable body chunk by chunk, as it is produced."""
        frames = protocol.stream_frames(fid, status, headers, response.iter_body(),
                                        encoded=encoded)
        # The first frame (the RESPONSE head) checks the headers before anything is sent.
        self.write(next(frames))
        try:
            for out in frames:
                self.write(out)
        except Exception:  # noqa: BLE001
            # The status line has gone out: a 500 is impossible, and an END frame would make
            # a truncated body look complete. Dying makes the core cut the connection, the
            # only honest signal left (RFC 9112 §7.1: an incomplete chunked message).
            sys.stderr.write("krait: a streamed response body failed after its headers were "
                             f"sent; the connection is cut\n{traceback.format_exc()}")
            sys.stderr.flush()
            os._exit(70)

    def serve(self) -> None:
        """Answer requests one at a time. Until a WebSocket is open the main thread reads the
        socket itself (no hand-off on the hot path); from then on a reader thread does, so
        controllers get their messages while the main thread runs a request."""
        reader = protocol.FrameReader(self.sock)
        respond, count = self.respond, self.count
        websockets._publish_write = self.write  # krait.websockets.publish from any code
        if config.pubsub:
            from krait import _pubsub

            websockets._relay_publisher = _pubsub.Publisher(
                config.pubsub, os.environ.get("KRAIT_NODE_ID") or _pubsub.new_node_id())
        try:
            while self._requests is None:
                try:
                    if reader.next_type() in _WS_FRAMES:
                        self.dispatch_ws(reader)
                        continue
                    frame = reader.read_core_frame()
                except EOFError:
                    return
                respond(frame)  # type: ignore[arg-type]
                count(frame)
                if self._hub is not None and len(self._hub):
                    self._requests = queue.SimpleQueue()
                    threading.Thread(target=self._read_loop, args=(reader,), daemon=True,
                                     name="krait-reader").start()
            while True:
                frame = self._requests.get()
                if frame is None:
                    return
                respond(frame)
                count(frame)
        finally:
            if self._hub is not None:
                self._hub.close_all()

    def _read_loop(self, reader: protocol.FrameReader) -> None:
        assert self._requests is not None
        try:
            while True:
                if reader.next_type() in _WS_FRAMES:
                    self.dispatch_ws(reader)
                else:
                    self._requests.put(reader.read_core_frame())
        except (EOFError, OSError, ValueError):
            pass
        finally:
            self._requests.put(None)

    def terminate(self, signum: int, _frame: Any) -> None:
        """SIGTERM (the master stops): every open controller's on_stop runs, then exit."""
        if self._hub is not None:
            self._hub.close_all()
        os._exit(0)


def _check_body_size(route: config.Route, frame: protocol.RequestFrame) -> None:
    """Raise 413 when the body is larger than the route's ``max_body_size``."""
    limit = route.max_body_size
    if limit is None:
        return
    body_file = frame.body_file
    size = os.stat(body_file).st_size if body_file else len(frame.body)
    if size > limit:
        raise PayloadTooLarge(f"the body ({size} bytes) is larger than this page accepts "
                              f"({limit} bytes)")


def _drop_body_file(frame: protocol.RequestFrame) -> None:
    """The request is answered: its spooled body file goes (the core removes it too)."""
    if frame.body_file:
        try:
            os.unlink(frame.body_file)
        except OSError:
            pass


def static_only_prefixes() -> tuple[str, ...]:
    """``krait.config.static_only`` as root-relative directory prefixes ending in ``/``."""
    value = config.static_only
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError("krait.config.static_only must be a list of directories")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip("/"):
            raise TypeError(f"krait.config.static_only holds {item!r}, not a directory")
        out.append(item.strip("/") + "/")
    return tuple(out)


def _under(rel: str, prefixes: tuple[str, ...]) -> bool:
    rel = rel.replace(os.sep, "/")
    return any(rel.startswith(p) for p in prefixes)


def _etag_listed(etag: str, header: str) -> bool:
    """Weak comparison against an If-None-Match list (RFC 9110 §13.1.2)."""
    if header.strip() == "*":
        return True
    for item in header.split(","):
        item = item.strip()
        if item.startswith("W/"):
            item = item[2:]
        if item == etag:
            return True
    return False


def _tell_ready(fd: int | None, text: str) -> bool:
    """Write the readiness report for the supervisor; False when nobody listens."""
    if fd is None:
        return False
    try:
        os.write(fd, text.encode("utf-8", "replace"))
        return True
    except OSError:  # the supervisor did not wait for this worker (a replacement)
        return False
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="krait.worker")
    parser.add_argument("site_root")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, default=None)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--trusted-proxy", action="append", default=[])
    parser.add_argument("--notify-fd", type=int, default=None)
    parser.add_argument("--static", action="append", default=[])  # the master's PREFIX=DIR
    args = parser.parse_args(argv)
    # The master blocks these for its signalfd; a forked+exec'd child inherits the mask.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                                signal.SIGCHLD})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # A script's print() goes to the error log, never into a response.
    sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(2), "wb", buffering=0), line_buffering=True)
    sock = socket.socket(fileno=args.fd)
    worker = Worker(args.site_root, sock, args.debug)
    worker.proxies = TrustedProxies(args.trusted_proxy)
    worker.static = [(p, d) for p, _, d in (spec.partition("=") for spec in args.static)]
    try:
        worker.load()
    except Exception as exc:  # noqa: BLE001 - reported, then this worker is gone
        text = str(exc) if type(exc).__name__ == "StartupError" else traceback.format_exc()
        if not _tell_ready(args.ready_fd, text):
            sys.stderr.write(f"krait worker {os.getpid()}: cannot load the site: {text}\n")
        return 3
    signal.signal(signal.SIGTERM, worker.terminate)
    worker.recycle_after(args.notify_fd)
    _tell_ready(args.ready_fd, "\n".join(["ok", *worker.changed]))
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
