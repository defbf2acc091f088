"""The master process: loads ``.py/init.py``, validates ``krait.config``, builds the C core's
tables, starts and replaces workers, and runs the loop (in C, without the GIL) until a stop
signal. Python is called back only for rare events: a regex-route or cache-rule cache miss, a
worker's end, SIGHUP."""

from __future__ import annotations

import ipaddress
import os
import re
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import krait
from krait import _errorpages, _mime, config
from krait._core import Server, ffi, lib
from krait.errors import ConfigError
from krait.paths import PathRefused, site_file
from krait.response import REASONS

VERB_BITS = {
    "GET": lib.KRAIT_VERB_GET, "POST": lib.KRAIT_VERB_POST, "PUT": lib.KRAIT_VERB_PUT,
    "DELETE": lib.KRAIT_VERB_DELETE, "CONNECT": lib.KRAIT_VERB_CONNECT,
    "OPTIONS": lib.KRAIT_VERB_OPTIONS, "TRACE": lib.KRAIT_VERB_TRACE,
    "WEBSOCKET": lib.KRAIT_VERB_WEBSOCKET, "PATCH": lib.KRAIT_VERB_PATCH,
    "ANY": lib.KRAIT_VERB_ANY,
}

# krait.config attribute → (core limit, scale to the core's unit).
#: The core's fixed ceiling on header fields per request (KRAIT__MAX_HEADERS_CAP).
MAX_HEADER_FIELDS = 1000

LIMITS = {
    "max_request_line": (lib.KRAIT_LIMIT_REQUEST_LINE, 1),
    "max_header_size": (lib.KRAIT_LIMIT_HEAD, 1),
    "max_header_fields": (lib.KRAIT_LIMIT_HEADERS, 1),
    "max_body_size": (lib.KRAIT_LIMIT_BODY, 1),
    "header_timeout": (lib.KRAIT_LIMIT_HEADER_TIMEOUT, 1000),
    "keepalive_timeout": (lib.KRAIT_LIMIT_KEEPALIVE, 1000),
    "worker_timeout": (lib.KRAIT_LIMIT_WORKER_TIMEOUT, 1000),
    "max_queue": (lib.KRAIT_LIMIT_QUEUE, 1),
    "max_websocket_message": (lib.KRAIT_LIMIT_WS_MESSAGE, 1),
    "body_timeout": (lib.KRAIT_LIMIT_BODY_TIMEOUT, 1000),
    "send_timeout": (lib.KRAIT_LIMIT_SEND_TIMEOUT, 1000),
    "max_connections": (lib.KRAIT_LIMIT_MAX_CONNS, 1),
    "spool_threshold": (lib.KRAIT_LIMIT_SPOOL, 1),
    "max_body_memory": (lib.KRAIT_LIMIT_BODY_MEMORY, 1),
    "shutdown_timeout": (lib.KRAIT_LIMIT_DRAIN, 1000),
    "websocket_ping_interval": (lib.KRAIT_LIMIT_WS_PING, 1000),
    "worker_pipeline": (lib.KRAIT_LIMIT_WORKER_DEPTH, 1),
}

#: The core's ceiling on requests handed to one worker at once (KRAIT__WORKER_DEPTH_MAX).
MAX_WORKER_PIPELINE = 8


def _raise_fd_limit() -> None:
    """Every connection is a descriptor: take the whole hard limit the system allows, so
    tens of thousands of idle keep-alive clients fit (the core also caps connections)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def _is_loopback(host: str) -> bool:
    """Does ``--host`` listen on the loopback interface only? (``""`` means every one.)"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class StartupError(Exception):
    """Start-up cannot go on; the message names the file and line where it can."""


def log(message: str) -> None:
    """One line to the error log (stderr)."""
    sys.stderr.write(f"krait: {message}\n")
    sys.stderr.flush()


def _site_frame(tb: Any, site_root: str) -> tuple[str, int] | None:
    """The innermost traceback frame inside the site: where its author should look."""
    found = None
    root = os.path.realpath(site_root)
    for fs in traceback.extract_tb(tb):
        if os.path.realpath(fs.filename).startswith(root + os.sep):
            found = (fs.filename, fs.lineno or 0)
    return found


def _site_traceback(exc: BaseException, site_root: str) -> str:
    """The traceback of an error in the site's code, without krait's own frames above it."""
    tb = exc.__traceback__
    root = os.path.realpath(site_root) + os.sep
    while tb is not None and not os.path.realpath(tb.tb_frame.f_code.co_filename).startswith(root):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def load_site(site_root: str) -> dict[str, Any]:
    """Put ``<site>/.py`` on ``sys.path``, set ``krait.site_root``, run ``init.py``.

    Returns init.py's globals. Raises StartupError with ``file:line: message``.
    """
    if not os.path.exists(site_root):
        raise StartupError(f"site root {site_root!r} does not exist")
    if not os.path.isdir(site_root):
        raise StartupError(f"site root {site_root!r} is not a directory")
    if not os.access(site_root, os.R_OK | os.X_OK):
        raise StartupError(f"site root {site_root!r} is not readable")
    config.reset()
    krait.site_root = site_root
    py_dir = os.path.join(site_root, ".py")
    if py_dir not in sys.path:
        sys.path.append(py_dir)
    init = os.path.join(py_dir, "init.py")
    if not os.path.isfile(init):
        return {}
    try:
        return runpy.run_path(init, run_name="__krait_init__")
    except ConfigError as exc:
        where = exc.filename and f"{exc.filename}:{exc.lineno}" or init
        raise StartupError(f"{where}: {exc.message}") from None
    except SyntaxError as exc:
        raise StartupError(f"{exc.filename}:{exc.lineno}: {type(exc).__name__}: {exc.msg}\n"
                           f"{_site_traceback(exc, site_root)}") from None
    except BaseException as exc:  # noqa: BLE001 - any failure of the site's code stops start-up
        where = _site_frame(exc.__traceback__, site_root)
        loc = f"{where[0]}:{where[1]}" if where else init
        raise StartupError(f"{loc}: {type(exc).__name__}: {exc}\n"
                           f"{_site_traceback(exc, site_root)}") from None


def _target_exists(site_root: str, target: str) -> bool:
    """Does target name a file, with the index and extension search of behaviour §3.2?"""
    path = os.path.join(site_root, target.lstrip("/"))
    if os.path.isdir(path):
        path = os.path.join(path, "index")
    if os.path.isfile(path):
        return True
    for ext in (".html", ".htm", ".pyml", ".py"):
        if os.path.isfile(path + ext):
            return True
    twin = {".html": path[:-1], ".htm": path + "l"}
    for suffix, other in twin.items():
        if path.endswith(suffix) and os.path.isfile(other):
            return True
    return False


def validate_routes(site_root: str) -> list[config.Route]:
    """Check krait.config.routes (invariant 6); an empty list means [Route()]."""
    routes = config.routes
    set_at = config.where("routes")
    prefix = f"{set_at}: " if set_at else ""
    if routes is None:
        return [config.Route()]
    if not isinstance(routes, (list, tuple)):
        raise StartupError(f"{prefix}krait.config.routes must be a list of krait.config.Route, "
                           f"not {type(routes).__name__}")
    if len(routes) == 0:
        return [config.Route()]
    for route in routes:
        if not isinstance(route, config.Route):
            raise StartupError(f"{prefix}krait.config.routes holds {route!r}, "
                               "not a krait.config.Route")
        where = f"{route.filename}:{route.lineno}" if route.lineno is not None \
            else str(route.filename)
        if route.wsgi is not None:
            route.app = _load_wsgi(route, where, site_root)
            continue
        target = route.target
        if target is not None and "{" not in target:
            if any(part.startswith(".") for part in target.strip("/").split("/") if part):
                raise StartupError(f"{where}: route target {target!r} is a hidden path")
            if not _target_exists(site_root, target):
                raise StartupError(f"{where}: route target {target!r} does not exist")
        if target is not None and route.compiled is not None:
            for name in re.findall(r"\{(\w+)\}", target):
                if name not in route.compiled.groupindex:
                    raise StartupError(
                        f"{where}: target {target!r} uses {{{name}}}, "
                        f"which the regex does not capture")
    return list(routes)


def _load_wsgi(route: config.Route, where: str, site_root: str) -> Any:
    """Import (and check) the WSGI application a route mounts; an error names the route."""
    from krait.wsgi import load_app

    try:
        return load_app(route.wsgi)  # type: ignore[arg-type]
    except SyntaxError as exc:
        raise StartupError(f"{where}: wsgi={route.wsgi!r}: {exc.filename}:{exc.lineno}: "
                           f"SyntaxError: {exc.msg}") from None
    except BaseException as exc:  # noqa: BLE001 - any failure of the import stops start-up
        # The application's own frames (not krait's, not the import machinery's): where its
        # author should look. None for a module or name that does not exist.
        tb = exc.__traceback__
        while tb is not None and not _app_frame(tb.tb_frame.f_code.co_filename):
            tb = tb.tb_next
        if tb is None:
            raise StartupError(f"{where}: wsgi={route.wsgi!r} cannot be loaded: "
                               f"{type(exc).__name__}: {exc}") from None
        last = traceback.extract_tb(tb)[-1]
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        raise StartupError(f"{where}: wsgi={route.wsgi!r} cannot be loaded "
                           f"({last.filename}:{last.lineno}): {type(exc).__name__}: {exc}\n"
                           f"{text}") from None


def _app_frame(filename: str) -> bool:
    """Is this a frame of the application's code (a real file outside krait)?"""
    return os.path.isfile(filename) and \
        os.path.dirname(os.path.abspath(filename)) != os.path.dirname(config.__file__) and \
        "importlib" not in filename


def route_bits(route: config.Route) -> int:
    """The verbs a route takes, as the core's bits: a WSGI application never takes WebSocket
    handshakes (WSGI cannot accept one), so a later WEBSOCKET route under its prefix works."""
    bits = VERB_BITS[route.verb]
    if route.prefix is not None:
        bits &= ~lib.KRAIT_VERB_WEBSOCKET
    return bits


#: A group with a quantifier inside, itself quantified ("(a+)+", "([a-z0-9]+-?)*", "(x*){2,}"):
#: the shape of regexes that backtrack exponentially.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)[+*{]")


def route_warnings(routes: list[config.Route]) -> list[str]:
    """Routes that can never match, each as ``file:line: warning: ...``: a route after a
    catch-all (``Route()`` with neither ``url`` nor ``regex``) of the same verb, or after an
    earlier route with the same verb and ``url``; and a ``url`` without a leading ``/`` (the
    path it is compared with always has one)."""
    out = []
    all_verbs = set(config.Route.route_verbs)
    taken: dict[str, config.Route] = {}  # verb → the catch-all that takes it
    urls: dict[tuple[str, str], config.Route] = {}  # (verb, url) → the first route with it

    def where(route: config.Route) -> str:
        return f"{route.filename}:{route.lineno}"

    for route in routes:
        verbs = all_verbs if route.verb == "ANY" else {route.verb}
        pattern = route.compiled.pattern if route.compiled is not None else None
        if pattern is not None and _NESTED_QUANTIFIER.search(pattern):
            out.append(f"{where(route)}: warning: route regex {pattern!r} repeats a group that "
                       "itself repeats: some paths a client invents take it exponential time. "
                       "Regexes run in a worker, under worker_timeout, so a slow one costs that "
                       "worker (504), not the server; still, write it without the nesting")
        if route.url is not None and not route.url.startswith("/"):
            out.append(f"{where(route)}: warning: route url {route.url!r} never matches: request "
                       f"paths start with '/' (write {'/' + route.url!r})")
        shadow = next((taken[v] for v in sorted(verbs) if v in taken), None) \
            if all(v in taken for v in verbs) else None
        if shadow is not None:
            out.append(f"{where(route)}: warning: {route!r} never matches: the catch-all "
                       f"{shadow!r} at {where(shadow)} comes first and takes every "
                       f"{'request' if route.verb == 'ANY' else route.verb + ' request'} "
                       "(routes are tried in order: put the catch-all last)")
        elif route.url is not None and route.regex is None and route.prefix is None and all(
                (v, route.url) in urls for v in verbs):
            first = urls[(sorted(verbs)[0], route.url)]
            out.append(f"{where(route)}: warning: {route!r} never matches: {first!r} at "
                       f"{where(first)} has the same url and comes first")
        if route.prefix is not None:
            if route.prefix == "/":
                for v in verbs - {"WEBSOCKET"}:
                    taken.setdefault(v, route)
        elif route.url is None and route.regex is None:
            for v in verbs:
                taken.setdefault(v, route)
        elif route.url is not None:
            for v in verbs:
                urls.setdefault((v, route.url), route)
    return out


def validate_error_pages(site_root: str) -> dict[int, str]:
    """Check ``krait.config.error_pages``: statuses 400-599 mapped to files under the site root
    (not ``.py`` scripts). Returns status → absolute filename."""
    pages = config.error_pages
    set_at = config.where("error_pages") or os.path.join(site_root, ".py", "init.py")
    if not isinstance(pages, dict):
        raise StartupError(f"{set_at}: krait.config.error_pages must be a dict of status → "
                           f"file, not {type(pages).__name__}")
    out = {}
    for status, page in pages.items():
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise StartupError(f"{set_at}: krait.config.error_pages: {status!r} is not an "
                               "error status (400-599)")
        if not isinstance(page, str) or not page.strip("/"):
            raise StartupError(f"{set_at}: krait.config.error_pages[{status}] must be a file "
                               f"path relative to the site root, not {page!r}")
        rel = os.path.normpath(page.lstrip("/"))
        if rel == ".." or rel.startswith(".." + os.sep) or "\0" in rel:
            raise StartupError(f"{set_at}: krait.config.error_pages[{status}] = {page!r} "
                               "leaves the site root")
        filename = os.path.join(site_root, rel)
        if not os.path.isfile(filename):
            raise StartupError(f"{set_at}: krait.config.error_pages[{status}] = {page!r}: "
                               f"no such file ({filename})")
        if filename.endswith(".py"):
            raise StartupError(f"{set_at}: krait.config.error_pages[{status}] = {page!r}: a "
                               "page must be a template or a file, not a .py script")
        out[status] = filename
    return out


#: The statuses the core answers by itself (malformed or oversized requests, missing files,
#: workers that fail, time out or are all busy).
CORE_ERROR_STATUSES = (400, 404, 405, 408, 413, 414, 417, 426, 431, 500, 501, 502, 503, 504,
                       505)


def _is_template(filename: str) -> bool:
    """Would a worker render this page (a ``.pyml``, or an ``.html``/``.htm`` with an ``@``
    while ``config.html_templates`` holds)?"""
    if filename.endswith(".pyml"):
        return True
    if config.html_templates and filename.endswith((".html", ".htm")):
        with open(filename, "rb") as f:
            return b"@" in f.read()
    return False


def core_error_pages(pages: dict[int, str]) -> list[tuple[int, bytes, str]]:
    """(status, body, content type) for each of the core's own error statuses: the site's page
    from ``config.error_pages`` when it is a plain file (a template needs a worker to render
    it, so the core then sends the default page, as it does for the other statuses), else the
    workers' default page."""
    out = []
    for status in CORE_ERROR_STATUSES:
        page = pages.get(status)
        if page is not None and not _is_template(page):
            with open(page, "rb") as f:
                body = f.read()
            ext = os.path.splitext(page)[1]
            ctype = _mime.with_charset(_mime.type_for_extension(ext) or "text/html")
            out.append((status, body, ctype))
        else:
            text = _errorpages.page_html(status, REASONS.get(status, "Error"))
            out.append((status, text.encode("utf-8"), "text/html; charset=utf-8"))
    return out


def _compile_list(name: str) -> list[re.Pattern[str]]:
    """Compile the cache-rule regexes of ``krait.config.<name>`` (behaviour §10.1)."""
    value = getattr(config, name)
    set_at = config.where(name)
    prefix = f"{set_at}: " if set_at else ""
    if not isinstance(value, (list, tuple)):
        raise StartupError(f"{prefix}krait.config.{name} must be a list of regexes, "
                           f"not {type(value).__name__}")
    out = []
    for rx in value:
        try:
            out.append(re.compile(rx))
        except (re.error, TypeError) as exc:
            raise StartupError(f"{prefix}krait.config.{name}: invalid regex {rx!r}: {exc}"
                               ) from None
    return out


def _validate_hardening() -> None:
    """Check the path, upload, form and WebSocket settings of ``krait.config`` (issue 18)."""
    def fail(name: str, what: str) -> StartupError:
        set_at = config.where(name)
        return StartupError(f"{set_at + ': ' if set_at else ''}krait.config.{name} must be "
                            f"{what}, not {getattr(config, name)!r}")

    for name in ("view_dirs", "never_serve", "static_only", "websocket_origins", "allowed_hosts"):
        value = getattr(config, name)
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or \
                not all(isinstance(v, str) and v.strip("/") for v in value):
            raise fail(name, "a list of non-empty strings")
    for name in ("max_form_fields", "websocket_queue_bytes", "websocket_worker_queue_bytes"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise fail(name, "a positive whole number")
    header = config.server_header
    if header is not None and (not isinstance(header, str) or
                               any(c < " " and c != "\t" or c == "\x7f" for c in header)):
        raise fail("server_header", "None or a header value without control characters")


def encode_pairs(pairs: list[tuple[str, str]]) -> bytes:
    """Pairs in the worker protocol's encoding: u16 count, then (u32 len, bytes) each."""
    out = bytearray(len(pairs).to_bytes(2, "little"))
    for name, value in pairs:
        for s in (name.encode("utf-8", "surrogateescape"),
                  value.encode("utf-8", "surrogateescape")):
            out += len(s).to_bytes(4, "little") + s
    return bytes(out)


@dataclass
class Rules:
    """Routes and cache rules, as the core's callbacks ask about them."""

    routes: list[config.Route]
    no_store: list[re.Pattern[str]] = field(default_factory=list)
    private: list[re.Pattern[str]] = field(default_factory=list)
    public: list[re.Pattern[str]] = field(default_factory=list)
    long_term: list[re.Pattern[str]] = field(default_factory=list)
    #: The site root: a target whose ``{name}`` came from the URL is checked under it.
    root: str = ""

    def cache_flags(self, rel: str, dynamic: bool = False) -> int:
        """Behaviour §10.2: static files start storable, dynamic pages not; then each list
        that matches applies, later ones overriding earlier ones."""
        storable, private, public, long = not dynamic, False, False, False
        if any(p.fullmatch(rel) for p in self.no_store):
            storable = False
        if any(p.fullmatch(rel) for p in self.private):
            storable, private = True, True
        if any(p.fullmatch(rel) for p in self.public):
            storable, private, public = True, False, True
        if any(p.fullmatch(rel) for p in self.long_term):
            storable, long = True, True
        flags = 0 if storable else lib.KRAIT_CACHE_NO_STORE
        flags |= lib.KRAIT_CACHE_PRIVATE if private else 0
        flags |= lib.KRAIT_CACHE_PUBLIC if public else 0
        flags |= lib.KRAIT_CACHE_LONG if long else 0
        return flags

    def match(self, verb: int, path: str) -> tuple[int, str, list[tuple[str, str]], int]:
        """First matching route (behaviour §4, §16.2): (index, target, params, allow mask)."""
        allow = 0
        for i, route in enumerate(self.routes):
            params: dict[str, str] = {}
            if route.prefix is not None:
                hit = bool(route.takes_path(path))
            elif route.url is not None and route.url == path:
                hit = True
            elif route.compiled is not None:
                m = route.compiled.fullmatch(path)
                hit = m is not None
                if m is not None:
                    params = {k: v for k, v in m.groupdict().items() if v is not None}
            else:
                hit = route.url is None
            if not hit:
                continue
            bits = route_bits(route)
            if bits & verb:
                target = route.target or ""
                filled = False
                for name, value in params.items():
                    if "{" + name + "}" in target:
                        target, filled = target.replace("{" + name + "}", value), True
                if filled and self.root:
                    # The visitor chose part of this path: the path rule decides, as for any
                    # URL (no hidden segment, no backup, no link out of the root); 404 if not.
                    try:
                        site_file(self.root, target)
                    except PathRefused:
                        return -1, "", [], 0
                return i, target, sorted(params.items()), allow | bits
            allow |= bits
        return -1, "", [], allow


@ffi.def_extern(error=-1)
def krait_py_cache(ud: Any, relpath: Any, length: int) -> int:
    sup: Supervisor = ffi.from_handle(ud)
    return sup.rules.cache_flags(ffi.unpack(relpath, length).decode("utf-8", "surrogateescape"))


@ffi.def_extern()
def krait_py_event(ud: Any, kind: int, a: int, b: int) -> None:
    try:
        ffi.from_handle(ud).on_event(kind, a, b)
    except Exception:  # noqa: BLE001 - never let an exception unwind into C
        traceback.print_exc()


@dataclass
class Options:
    """What the command line decided."""

    site_root: str
    host: str = ""
    port: int | None = 8080
    https_port: int | None = None
    workers: int = 0
    access_log: str = "-"
    debug: bool = False
    reload: bool = False
    limits: dict[str, float] = field(default_factory=dict)
    trusted_proxies: list[str] = field(default_factory=list)
    #: ``--wsgi``: the application served alone (``site_root`` is then a temporary folder).
    wsgi: str | None = None
    #: More folders whose ``.py`` files ``--reload`` watches (``--wsgi``: the application's).
    watch_dirs: list[str] = field(default_factory=list)


#: Signals the C loop takes through its signalfd. They are blocked in every thread of the
#: master (helper threads included), or the kernel could deliver one to a thread that would
#: die of it (SIGHUP's default action is to terminate the process).
LOOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
#: Seconds a new worker may take to load the site before start-up or a reload gives up.
READY_TIMEOUT = 60.0
#: Seconds between two scans of the site for changed .py files (``--reload``).
WATCH_INTERVAL = 0.5


class WorkerProc:
    """A worker process and the master's ends of its sockets."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket | None,
                 ready_fd: int | None) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.sock = sock  # the core's end, until it is handed to the core
        self.ready_fd = ready_fd  # read end of the readiness pipe, until it is read
        self.started = time.monotonic()
        self.slot: int | None = None

    def close_ready(self) -> None:
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None

    def discard(self) -> None:
        """Kill a worker that never reached the core."""
        self.close_ready()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            pass


def wait_ready(procs: list[WorkerProc], timeout: float) -> list[str]:
    """Wait until every worker has loaded the site; returns the errors (empty: all ready).

    A worker writes ``ok`` on its readiness pipe once ``init.py`` ran, or the reason it failed;
    end-of-file without ``ok`` means it died while starting.
    """
    import selectors

    errors: list[str] = []
    pending = {w.ready_fd: w for w in procs if w.ready_fd is not None}
    texts: dict[int, bytes] = {fd: b"" for fd in pending}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for fd in pending:
            sel.register(fd, selectors.EVENT_READ)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                errors += [f"worker {w.pid} did not finish loading the site in {timeout:g} s"
                           for w in pending.values()]
                break
            for key, _ in sel.select(left):
                fd = key.fd
                data = os.read(fd, 65536)
                if data:
                    texts[fd] += data
                    continue
                sel.unregister(fd)
                w = pending.pop(fd)
                w.close_ready()
                text = texts[fd].decode("utf-8", "replace").strip()
                if text != "ok":
                    status = w.proc.poll()
                    if not text:
                        text = f"worker {w.pid} exited while loading the site" + (
                            f" (status {status})" if status is not None else "")
                    errors.append(text)
    return errors


class Supervisor:
    """Owns the core server and the worker processes."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.workers: dict[int, WorkerProc] = {}  # slot → worker serving requests
        self.exiting: list[WorkerProc] = []  # retired or dead, not yet reaped
        self.retired: set[int] = set()  # slots being retired (no replacement)
        self.stopping = False
        self.quick_deaths = 0
        self.server: Server | None = None
        self.rules = Rules(routes=[])
        self.log_file: Any = None
        self.count = 1
        # Reloads: a generation of new workers starts in a helper thread; the loop thread
        # installs it when woken by a SIGHUP the helper sends to this process.
        self._lock = threading.Lock()
        self._generation: list[WorkerProc] | None = None  # starting
        self._ready: tuple[list[WorkerProc], list[str]] | None = None  # started, to install
        self._again = False  # another reload was asked for while one was starting
        self._watch_requested = False
        self._stop_threads = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- start-up -----------------------------------------------------------------------------

    def configure(self) -> Server:
        opts = self.opts
        load_site(opts.site_root)
        for name, value in opts.limits.items():
            setattr(config, name, value)
        routes = validate_routes(opts.site_root)
        for warning in route_warnings(routes):
            log(warning)
        error_pages = validate_error_pages(opts.site_root)
        self.rules = Rules(routes=routes, no_store=_compile_list("cache_no_store"),
                           private=_compile_list("cache_private"),
                           public=_compile_list("cache_public"),
                           long_term=_compile_list("cache_long_term"), root=opts.site_root)
        for name in LIMITS:
            value = getattr(config, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                set_at = config.where(name)
                raise StartupError(f"{set_at + ': ' if set_at else ''}krait.config.{name} must "
                                   f"be a positive number, not {value!r}")
        if config.max_header_fields > MAX_HEADER_FIELDS:
            set_at = config.where("max_header_fields")
            raise StartupError(f"{set_at + ': ' if set_at else ''}krait.config.max_header_fields "
                               f"may be at most {MAX_HEADER_FIELDS}, not "
                               f"{config.max_header_fields!r}")
        pipeline = config.worker_pipeline
        if not isinstance(pipeline, int) or pipeline > MAX_WORKER_PIPELINE:
            set_at = config.where("worker_pipeline")
            raise StartupError(f"{set_at + ': ' if set_at else ''}krait.config.worker_pipeline "
                               f"must be a whole number from 1 to {MAX_WORKER_PIPELINE}, not "
                               f"{config.worker_pipeline!r}")
        if not isinstance(config.html_templates, bool):
            set_at = config.where("html_templates")
            raise StartupError(f"{set_at + ': ' if set_at else ''}krait.config.html_templates "
                               f"must be True or False, not {config.html_templates!r}")
        for name in ("cache_max_age_default", "cache_max_age_long_term"):
            value = getattr(config, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                set_at = config.where(name)
                raise StartupError(f"{set_at + ': ' if set_at else ''}krait.config.{name} must "
                                   f"be a number of seconds, not {value!r}")
        _validate_hardening()
        server = Server(opts.site_root)
        self.server = server
        server.set_version(krait.__version__)
        if config.server_header is not None:
            server.set_server_header(config.server_header)
        server.set_never_serve(list(config.never_serve))
        for prefix in config.static_only:
            server.add_static_only(prefix)
        for host in config.allowed_hosts:
            server.add_allowed_host(host)
        server.set_html_templates(bool(config.html_templates))
        for status, html_page, html_type in core_error_pages(error_pages):
            server.set_error_page(status, html_page, html_type,
                                  _errorpages.json_body(status, REASONS.get(status, "Error")))
        for name, (which, scale) in LIMITS.items():
            server.set_limit(which, int(getattr(config, name) * scale))
        server.set_cache_ages(int(config.cache_max_age_default),
                              int(config.cache_max_age_long_term))
        for ext, mime in sorted(_mime.table().items()):
            server.add_mime(ext.lstrip("."), mime)
        for route in routes:
            if route.prefix is not None:
                server.add_prefix_route(route_bits(route), route.prefix)
                continue
            server.add_route(VERB_BITS[route.verb], route.url, route.compiled is not None,
                             route.target, route.ctrl_class is not None)
        server.set_callbacks(self)
        if opts.access_log in ("", "-"):
            server.set_access_log(1)
        elif opts.access_log.lower() not in ("off", "none"):
            self.log_file = open(opts.access_log, "ab", buffering=0)  # noqa: SIM115
            server.set_access_log(self.log_file.fileno())
        return server

    def load_certificate(self) -> None:
        """(Re)load the TLS certificate and key named by krait.config (behaviour §13.1)."""
        assert self.server is not None
        cert, key = config.ssl_certificate_path, config.ssl_private_key_path
        passphrase = config.ssl_key_passphrase
        for name, value in (("ssl_certificate_path", cert), ("ssl_private_key_path", key)):
            if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                set_at = config.where(name) or os.path.join(self.opts.site_root, ".py",
                                                           "init.py")
                raise StartupError(f"{set_at}: an HTTPS port needs krait.config.{name}")
        if passphrase is not None and not isinstance(passphrase, str):
            raise StartupError("krait.config.ssl_key_passphrase must be a str")
        for name in ("https_redirect", "hsts"):
            kind = bool if name == "https_redirect" else str
            if not isinstance(getattr(config, name), kind):
                set_at = config.where(name)
                raise StartupError(f"{set_at + ': ' if set_at else ''}krait.config.{name} must "
                                   f"be a {kind.__name__}")
        self.server.set_tls(os.fspath(cert), os.fspath(key), passphrase)  # type: ignore[arg-type]

    # -- workers ------------------------------------------------------------------------------

    def start_worker(self, wait_ready: bool) -> WorkerProc:
        """fork+exec ``python -m krait.worker``; the core's end of its socketpair stays in the
        returned WorkerProc until :meth:`install`. With ``wait_ready``, keep the read end of
        its readiness pipe to learn when it has loaded the site."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ready_r, ready_w = os.pipe()
        # -P: the current directory must not shadow the installed krait (a checkout has a
        # krait/ folder without the compiled core).
        cmd = [sys.executable, "-P", "-m", "krait.worker", self.opts.site_root, "--fd",
               str(child.fileno()), "--ready-fd", str(ready_w)]
        if self.opts.debug:
            cmd.append("--debug")
        for proxy in self.opts.trusted_proxies:
            cmd += ["--trusted-proxy", proxy]
        env = dict(os.environ)
        for name, value in self.opts.limits.items():
            env[f"KRAIT_CONFIG_{name}"] = repr(value)
        try:
            proc = subprocess.Popen(cmd, pass_fds=(child.fileno(), ready_w),
                                    start_new_session=True, stdin=subprocess.DEVNULL,
                                    stdout=sys.stderr.fileno(), env=env)
        except BaseException:
            parent.close()
            os.close(ready_r)
            raise
        finally:
            child.close()
            os.close(ready_w)
        if not wait_ready:
            os.close(ready_r)
            ready_r = None
        return WorkerProc(proc, parent, ready_r)

    def install(self, w: WorkerProc) -> None:
        """Hand a started worker to the core (which owns its socket from then on)."""
        assert self.server is not None and w.sock is not None
        fd = w.sock.detach()
        w.sock = None
        try:
            # Opened before anyone reaps the child (Popen has not waited for it), so the pidfd
            # names this worker and never a later process that reuses its pid.
            pidfd = os.pidfd_open(w.pid)
        except OSError:
            pidfd = -1
        try:
            w.slot = self.server.add_worker(fd, w.pid, pidfd)
        except OSError:
            os.close(fd)
            if pidfd >= 0:
                os.close(pidfd)
            raise
        self.workers[w.slot] = w

    def spawn_worker(self) -> None:
        """Start a replacement worker and hand it to the core at once: requests wait on its
        socket while it loads the site."""
        self.install(self.start_worker(wait_ready=False))

    def reap(self) -> None:
        for w in list(self.workers.values()):
            w.proc.poll()
        for w in list(self.exiting):
            if w.proc.poll() is not None:
                self.exiting.remove(w)

    def on_event(self, kind: int, a: int, b: int) -> None:
        if kind == lib.KRAIT_EVENT_CHILD:
            self.reap()
        elif kind == lib.KRAIT_EVENT_WORKER_EXIT:
            self.worker_exit(a)
        elif kind == lib.KRAIT_EVENT_RELOAD:
            self.on_reload_signal()

    def worker_exit(self, slot: int) -> None:
        """The core let go of a worker: retired (it exits by itself on end-of-file), or dead,
        overrunning or broken (replace it)."""
        w = self.workers.pop(slot, None)
        if w is None:
            return
        self.exiting.append(w)
        if slot in self.retired:
            self.retired.discard(slot)
            return
        if w.proc.poll() is None:
            try:
                w.proc.kill()  # it stopped answering the core: it must not linger
            except ProcessLookupError:
                pass
        if self.stopping or self.server is None:
            return
        if time.monotonic() - w.started < 1.0:
            self.quick_deaths += 1
        else:
            self.quick_deaths = 0
        if self.quick_deaths > 20:
            log("workers keep dying right after start; stopping (see the errors above)")
            self.server.stop()
            return
        try:
            self.spawn_worker()
        except OSError as exc:
            log(f"cannot start a worker: {exc}")

    # -- reloads (SIGHUP, --reload) -----------------------------------------------------------

    def on_reload_signal(self) -> None:
        """SIGHUP in the loop thread: install a generation that finished starting, and/or
        start a new one."""
        with self._lock:
            ready, self._ready = self._ready, None
            requested, self._watch_requested = self._watch_requested, False
        if ready is not None:
            self.install_generation(*ready)
        if ready is None or requested:
            if self.opts.https_port is not None:
                try:
                    self.load_certificate()
                    log("reloaded the TLS certificate")
                except (OSError, StartupError) as exc:
                    log(f"the TLS certificate was not reloaded, the old one stays: {exc}")
            self.request_reload()

    def request_reload(self) -> None:
        """Start new workers with freshly loaded code; the old ones keep serving meanwhile."""
        if self.stopping:
            return
        with self._lock:
            if self._generation is not None:
                self._again = True
                return
            log("reloading: starting new workers")
            gen: list[WorkerProc] = []
            try:
                for _ in range(self.count):
                    gen.append(self.start_worker(wait_ready=True))
            except OSError as exc:
                log(f"reload failed: cannot start workers: {exc}")
                for w in gen:
                    w.discard()
                return
            self._generation = gen
        t = threading.Thread(target=self._await_generation, args=(gen,), daemon=True,
                             name="krait-reload")
        self._threads.append(t)
        t.start()

    def _await_generation(self, gen: list[WorkerProc]) -> None:
        errors = wait_ready(gen, READY_TIMEOUT)
        with self._lock:
            self._generation = None
            self._ready = (gen, errors)
        self._wake_loop()

    def _wake_loop(self) -> None:
        """Run on_reload_signal in the loop thread (the only one that may touch the core)."""
        if not self._stop_threads.is_set():
            os.kill(os.getpid(), signal.SIGHUP)

    def install_generation(self, gen: list[WorkerProc], errors: list[str]) -> None:
        assert self.server is not None
        if self.stopping:
            for w in gen:
                w.discard()
            return
        if errors:
            for w in gen:
                w.discard()
            for error in errors:
                log(f"reload failed, the old workers keep serving: {error}")
        else:
            old = list(self.workers)
            try:
                for w in gen:
                    self.install(w)
            except OSError as exc:
                log(f"reload failed: {exc}")
                for w in gen:
                    if w.slot is None:
                        w.discard()
            else:
                for slot in old:
                    self.retired.add(slot)
                    self.server.retire_worker(slot)
                log(f"reloaded: {len(gen)} new worker{'s' if len(gen) != 1 else ''}")
        with self._lock:
            again, self._again = self._again, False
        if again:
            self.request_reload()

    def reload(self) -> None:
        """SIGHUP: fresh workers with newly loaded code replace the old ones, none dropped."""
        self.request_reload()

    def _scan_sources(self) -> dict[str, tuple[int, int]]:
        """(mtime, size) of every .py file under the site root, hidden folders included."""
        found: dict[str, tuple[int, int]] = {}
        for folder, dirs, files in (step for top in [self.opts.site_root, *self.opts.watch_dirs]
                                    for step in os.walk(top)):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", ".git", ".hg", ".svn",
                                                    "node_modules")]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    found[path] = (st.st_mtime_ns, st.st_size)
        return found

    def _watch(self) -> None:
        """--reload: poll the site's .py files; a change, addition or removal reloads."""
        before = self._scan_sources()
        while not self._stop_threads.wait(WATCH_INTERVAL):
            now = self._scan_sources()
            if now == before:
                continue
            changed = sorted(set(now.items()) ^ set(before.items()))
            before = now
            name = changed[0][0]
            if not self.opts.wsgi:
                name = os.path.relpath(name, self.opts.site_root)
            log(f"{name} changed: reloading")
            with self._lock:
                self._watch_requested = True
            self._wake_loop()

    def stop_workers(self) -> None:
        with self._lock:
            pending = list(self._generation or []) + list(self._ready[0] if self._ready else [])
            self._generation, self._ready = None, None
        procs = [w.proc for w in [*self.workers.values(), *self.exiting]]
        self.workers.clear()
        self.exiting.clear()
        for w in pending:
            w.discard()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- running ------------------------------------------------------------------------------

    def run(self) -> int:
        opts = self.opts
        _raise_fd_limit()
        try:
            server = self.configure()
            urls = []
            host = opts.host or ""
            shown = host or "127.0.0.1"
            if ":" in shown:
                shown = f"[{shown}]"
            if opts.port is not None:
                port = server.listen(host, opts.port)
                urls.append(f"http://{shown}:{port}/")
            if opts.https_port is not None:
                self.load_certificate()
                https = server.listen(host, opts.https_port, tls=True)
                urls.append(f"https://{shown}:{https}/")
                server.set_https(https if config.https_redirect else 0, config.hsts or "")
        except StartupError as exc:
            log(str(exc))
            return 1
        except OSError as exc:
            log(str(exc))
            return 1
        self.count = count = opts.workers or os.cpu_count() or 1
        first: list[WorkerProc] = []
        try:
            for _ in range(count):
                first.append(self.start_worker(wait_ready=True))
            errors = wait_ready(first, READY_TIMEOUT)
            if errors:
                raise StartupError("a worker could not load the site:\n" + errors[0])
            for w in first:
                self.install(w)
        except BaseException as exc:  # noqa: BLE001 - Ctrl-C while the workers load, too
            if isinstance(exc, OSError):
                log(f"cannot start workers: {exc}")
            elif isinstance(exc, StartupError):
                log(str(exc))
            for w in first:
                if w.slot is None:
                    w.discard()
            self.stopping = True
            self.stop_workers()
            server.close()
            if isinstance(exc, KeyboardInterrupt):
                log("interrupted while the workers were starting")
                return 130
            if not isinstance(exc, (OSError, StartupError)):
                raise
            return 1
        # From here on the loop owns these signals (through its signalfd). Blocked before any
        # helper thread starts, so that every thread inherits the mask: the C loop blocks them
        # only in its own thread, and a SIGHUP delivered to another one would kill the process.
        signal.pthread_sigmask(signal.SIG_BLOCK, LOOP_SIGNALS)
        what = f"the WSGI application {opts.wsgi}" if opts.wsgi else os.path.abspath(
            opts.site_root)
        log(f"serving {what} at {' '.join(urls)} "
            f"with {count} worker{'s' if count != 1 else ''} (pid {os.getpid()})")
        if opts.debug and not _is_loopback(opts.host):
            log(f"warning: --debug on {opts.host or 'every interface'}: the error page shows "
                "any client your source code, tracebacks, request headers and cookies. Use "
                "--host 127.0.0.1 unless this network is yours alone")
        if not opts.wsgi and not os.path.isfile(os.path.join(opts.site_root, ".py", "init.py")):
            log("no .py/init.py in the site: every file is served by its URL. Create it to add "
                "routes, cache rules and limits (see docs/configuration.md)")
        if opts.reload:
            t = threading.Thread(target=self._watch, daemon=True, name="krait-watch")
            self._threads.append(t)
            t.start()
        try:
            server.run()
        finally:
            self.stopping = True
            self._stop_threads.set()
            self.stop_workers()
            server.close()
            if self.log_file is not None:
                self.log_file.close()
        log("stopped")
        return 0
