"""Loading a site: run ``.py/init.py``, validate ``krait.config`` (routes, error pages, cache
rules, limits, the hardening settings) and build the :class:`Rules` that route requests and
decide cache headers. The master (:mod:`krait.supervisor`) and every worker
(:mod:`krait.worker`) load the site through :func:`load`, so both see the same checks and the
same errors, each naming the file and line of ``init.py`` where the author should look.
"""

from __future__ import annotations

import os
import re
import runpy
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import krait
from krait import config
from krait._core import lib
from krait.errors import ConfigError
from krait.paths import PathRefused, site_file

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


class StartupError(Exception):
    """Start-up cannot go on; the message names the file and line where it can."""


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
        # The file, the line and the caret: runpy's and krait's frames above them say nothing.
        detail = "".join(traceback.format_exception_only(type(exc), exc))
        if _site_frame(exc.__traceback__, site_root) is not None:  # in a module init.py imports
            detail = _site_traceback(exc, site_root)
        raise StartupError(f"{exc.filename}:{exc.lineno}: {type(exc).__name__}: {exc.msg}\n"
                           f"{detail}") from None
    except BaseException as exc:  # noqa: BLE001 - any failure of the site's code stops start-up
        where = _site_frame(exc.__traceback__, site_root)
        loc = f"{where[0]}:{where[1]}" if where else init
        raise StartupError(f"{loc}: {type(exc).__name__}: {exc}\n"
                           f"{_site_traceback(exc, site_root)}") from None


def _target_exists(site_root: str, target: str) -> bool:
    """Does target name a file, with the URL search (a folder's index, then the .html, .htm,
    .pyml and .py extensions)?"""
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


def static_routes(static: Sequence[tuple[str, str]]) -> list[config.Route]:
    """``krait --static PREFIX=DIR``, each as the route ``Route(prefix=PREFIX,
    static_dir=DIR)``, named ``krait --static`` in messages."""
    out = []
    for prefix, folder in static:
        route = config.Route(prefix=prefix, static_dir=folder)
        route.filename, route.lineno = "krait --static", None
        out.append(route)
    return out


def validate_routes(site_root: str,
                    static: Sequence[tuple[str, str]] = ()) -> list[config.Route]:
    """Check krait.config.routes (invariant 6); an empty list means [Route()]. The command
    line's static folders (``static``: (prefix, folder) pairs) come first."""
    routes = config.routes
    set_at = config.where("routes")
    prefix = f"{set_at}: " if set_at else ""
    if routes is None or (isinstance(routes, (list, tuple)) and len(routes) == 0):
        routes = [config.Route()]
    if not isinstance(routes, (list, tuple)):
        raise StartupError(f"{prefix}krait.config.routes must be a list of krait.config.Route, "
                           f"not {type(routes).__name__}")
    routes = [*static_routes(static), *routes]
    for route in routes:
        if not isinstance(route, config.Route):
            raise StartupError(f"{prefix}krait.config.routes holds {route!r}, "
                               "not a krait.config.Route")
        where = f"{route.filename}:{route.lineno}" if route.lineno is not None \
            else str(route.filename)
        if route.wsgi is not None:
            route.app = _load_wsgi(route, where, site_root)
            continue
        if route.static_dir is not None:
            folder = os.path.join(site_root, os.path.expanduser(route.static_dir))
            if not os.path.isdir(folder):
                raise StartupError(f"{where}: static_dir {route.static_dir!r} is not a folder")
            route.static_dir = os.path.abspath(folder)
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
    return routes


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


def compile_cache_rules(name: str) -> list[re.Pattern[str]]:
    """Compile the cache-rule regexes of ``krait.config.<name>``."""
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
        if _NESTED_QUANTIFIER.search(rx):
            # A worker runs it once per file path (files that exist: a client cannot invent
            # them), under worker_timeout: a pattern that backtracks costs that worker, and
            # the file's request gets 504 each time it is asked.
            sys.stderr.write(f"krait: {prefix}warning: krait.config.{name} regex {rx!r} "
                             "repeats a group that itself repeats: on a long file name it can "
                             "take exponential time (a worker then overruns worker_timeout "
                             "for that file); write it without the nesting\n")
    return out


#: Characters a regex takes literally (ASCII, printable, none of re's special characters).
_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - frozenset(".^$*+?{}[]\\|()")
#: Characters a backslash makes literal (re: any ASCII punctuation; not letters or digits).
_ESCAPABLE = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ ")


def core_cache_rule(pattern: object) -> tuple[str, str | None] | None:
    """The form the core evaluates a cache-rule regex in, if it has one: ``(text, None)`` for
    a regex that only matches ``text`` (``robots\\.txt``), ``(before, after)`` for one that
    matches ``before.*after`` (``css/.*``, ``.*\\.css``, ``img/.*\\.png``: one ``.*`` at
    most, the rest literal ASCII, escaped or not). ``None`` for anything else (classes,
    alternation, other quantifiers, flags, ``^``/``$``, non-ASCII): a worker evaluates those.
    Under ``fullmatch``, ``.*`` takes any run of characters without a newline, as the core's
    form does (krait_server_add_cache_rule)."""
    if not isinstance(pattern, str):
        return None
    parts: list[list[str]] = [[]]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "." and i + 1 < n and pattern[i + 1] == "*":
            if len(parts) == 2 or (i + 2 < n and pattern[i + 2] in "*+?{"):
                return None  # a second .*, or a lazy or possessive one
            parts.append([])
            i += 2
        elif ch == "\\" and i + 1 < n and pattern[i + 1] in _ESCAPABLE:
            parts[-1].append(pattern[i + 1])
            i += 2
        elif ch in _PLAIN:
            parts[-1].append(ch)
            i += 1
        else:
            return None
    before = "".join(parts[0])
    return (before, None) if len(parts) == 1 else (before, "".join(parts[1]))


def validate_hardening() -> None:
    """Check the path, upload, form and WebSocket settings of ``krait.config``."""
    def fail(name: str, what: str) -> StartupError:
        set_at = config.where(name)
        return StartupError(f"{set_at + ': ' if set_at else ''}krait.config.{name} must be "
                            f"{what}, not {getattr(config, name)!r}")

    for name in ("view_dirs", "never_serve", "static_only", "websocket_origins", "allowed_hosts"):
        value = getattr(config, name)
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or \
                not all(isinstance(v, str) and v.strip("/") for v in value):
            raise fail(name, "a list of non-empty strings")
    for name in ("max_form_fields", "max_form_memory_size", "websocket_queue_bytes",
                 "websocket_worker_queue_bytes"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise fail(name, "a positive whole number")
    header = config.server_header
    if header is not None and (not isinstance(header, str) or
                               any(c < " " and c != "\t" or c == "\x7f" for c in header)):
        raise fail("server_header", "None or a header value without control characters")
    from krait._pubsub import URL_SCHEMES

    if config.pubsub is not None and (not isinstance(config.pubsub, str) or
                                      not config.pubsub.startswith(URL_SCHEMES)):
        raise fail("pubsub", "None or a Redis URL (redis://host:6379/0)")
    if config.pubsub:
        try:
            import redis  # noqa: F401
        except ImportError:
            raise fail("pubsub", "usable: the redis package is missing (pip install "
                       "'krait[redis]')") from None


def validate_sessions(site_root: str, scan: bool = False) -> None:
    """Check the session settings of ``krait.config`` and open the session store (a bad secret,
    a served session directory or an unreachable Redis stop start-up). With ``scan`` (the
    master, once), a site whose code uses sessions without ``config.session_secret`` stops
    start-up too, naming the first place that uses them."""
    from krait import sessions

    try:
        sessions.configure(site_root)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    if scan and not config.session_secret:
        found = sessions.find_use(site_root, list(config.view_dirs), static_only_dirs())
        if found is not None:
            raise StartupError(
                f"{found[0]}:{found[1]}: this site uses sessions (krait.session, CSRF tokens or "
                "flash messages), which need krait.config.session_secret: set it in "
                ".py/init.py to a random text of 32 characters or more, kept out of version "
                "control (python3 -c 'import secrets; print(secrets.token_hex(32))')")


def static_only_dirs() -> tuple[str, ...]:
    """``krait.config.static_only`` as root-relative prefixes ending in ``/`` (unchecked)."""
    value = config.static_only
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(v.strip("/") + "/" for v in value if isinstance(v, str) and v.strip("/"))


@dataclass
class Rules:
    """Routes and cache rules, as the core's questions to workers ask about them."""

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

    def core_cache_rules(self) -> list[tuple[int, str, str | None]] | None:
        """The cache rules in the form the core evaluates them: (list flag, before, after)
        each (see :func:`core_cache_rule`), or ``None`` when some regex has no such form, so
        that a worker must decide every file's flags (the core then asks one, once per file,
        and never runs a regex in its loop). Decided once, at start-up."""
        out = []
        for flag, patterns in ((lib.KRAIT_CACHE_NO_STORE, self.no_store),
                               (lib.KRAIT_CACHE_PRIVATE, self.private),
                               (lib.KRAIT_CACHE_PUBLIC, self.public),
                               (lib.KRAIT_CACHE_LONG, self.long_term)):
            for p in patterns:
                form = core_cache_rule(p.pattern)
                if form is None:
                    return None
                out.append((flag, *form))
        return out

    def match(self, verb: int, path: str) -> tuple[int, str, list[tuple[str, str]], int]:
        """First matching route: (index, target, params, allow mask)."""
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


#: The access log's formats (``config.access_log_format``, ``--access-log-format``).
ACCESS_LOG_FORMATS = ("combined", "json")


def validate_settings() -> None:
    """Check the limits, cache ages, ``html_templates`` and the hardening settings of
    ``krait.config`` (invariant 6)."""
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
    for name in ("max_requests", "max_requests_jitter", "max_worker_memory"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            set_at = config.where(name)
            raise StartupError(f"{set_at + ': ' if set_at else ''}krait.config.{name} must "
                               f"be a whole number, 0 or more, not {value!r}")
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
    if config.access_log_format not in ACCESS_LOG_FORMATS:
        set_at = config.where("access_log_format")
        raise StartupError(f"{set_at + ': ' if set_at else ''}krait.config.access_log_format "
                           f"must be \"combined\" or \"json\", not "
                           f"{config.access_log_format!r}")
    if config.unix_socket is not None and (not isinstance(config.unix_socket, str) or
                                           not config.unix_socket):
        set_at = config.where("unix_socket")
        raise StartupError(f"{set_at + ': ' if set_at else ''}krait.config.unix_socket must "
                           f"be None or a path, not {config.unix_socket!r}")
    if config.metrics is not None:
        from krait._metrics import parse_address

        try:
            parse_address(config.metrics)
        except ValueError as exc:
            set_at = config.where("metrics")
            raise StartupError(f"{set_at + ': ' if set_at else ''}krait.config.metrics must "
                               f"be None or \"ADDR:PORT\": {exc}") from None
    mode = config.unix_socket_mode
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        set_at = config.where("unix_socket_mode")
        raise StartupError(f"{set_at + ': ' if set_at else ''}krait.config.unix_socket_mode "
                           f"must be permission bits from 0 to 0o777, not {mode!r}")
    validate_hardening()


@dataclass
class Site:
    """A loaded site: what init.py decided, validated."""

    root: str
    #: init.py's globals (scripts and templates see them).
    globals: dict[str, Any]
    routes: list[config.Route]
    rules: Rules
    #: status → the site's page (absolute filename).
    error_pages: dict[int, str]
    #: Routes that can never match (``file:line: warning: ...``).
    warnings: list[str]


def load(site_root: str, overrides: dict[str, Any] | None = None,
         static: Sequence[tuple[str, str]] = ()) -> Site:
    """Load the site at ``site_root``: run init.py, apply ``overrides`` (the command line's
    limits, by ``krait.config`` name) over what it set, put the command line's static folders
    (``--static``: (prefix, folder) pairs) before its routes, and validate everything.

    :raises StartupError: with ``file:line: message`` (and the site's traceback, for an
        exception in its code).
    """
    site_globals = load_site(site_root)
    for name, value in (overrides or {}).items():
        setattr(config, name, value)
    routes = validate_routes(site_root, static)
    error_pages = validate_error_pages(site_root)
    rules = Rules(routes=routes, no_store=compile_cache_rules("cache_no_store"),
                  private=compile_cache_rules("cache_private"),
                  public=compile_cache_rules("cache_public"),
                  long_term=compile_cache_rules("cache_long_term"), root=site_root)
    validate_settings()
    validate_sessions(site_root)
    return Site(site_root, site_globals, routes, rules, error_pages, route_warnings(routes))


def _identity(obj: object) -> str | None:
    """A name that stays the same when a reload brings new code for the same thing: a
    controller class or a WSGI application, by module and qualified name."""
    if obj is None or isinstance(obj, str):
        return obj
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__name__)}"


def core_tables(site: Site) -> dict[str, str]:
    """What the master hands the C core from a loaded site, by part, each as a short digest.

    The core reads these once, at start-up. A worker that loads the site again (a reload, a
    recycle, a crash replacement) compares its own with the master's: its ``routes`` must be
    the same, since the core names a request's route by its index in the master's list (a
    worker with other routes would run another route's code); the other parts may differ,
    and then take effect only when krait restarts.
    """
    import hashlib

    from krait import _mime

    parts: dict[str, object] = {
        "routes": [(r.verb, r.url, r.regex, r.target, _identity(r.ctrl_class), r.prefix,
                    r.static_dir, _identity(r.wsgi)) for r in site.routes],
        "cache rules": [[p.pattern for p in getattr(site.rules, k)]
                        for k in ("no_store", "private", "public", "long_term")],
        "limits": [(name, getattr(config, name)) for name in LIMITS] + [
            config.cache_max_age_default, config.cache_max_age_long_term],
        "MIME types": sorted(_mime.table().items()),
        "error pages": sorted(site.error_pages.items()),
        "hardening settings": [config.server_header, list(config.never_serve),
                               list(config.static_only), list(config.allowed_hosts),
                               bool(config.html_templates), bool(config.https_redirect),
                               config.hsts],
    }
    return {name: hashlib.sha256(repr(value).encode("utf-8", "backslashreplace"))
            .hexdigest()[:16] for name, value in parts.items()}


def compare_tables(site: Site, master: dict[str, str]) -> list[str]:
    """Check a freshly loaded site against the tables the master's core holds (see
    :func:`core_tables`); returns the parts that differ, which take effect at a restart.

    :raises StartupError: the routes differ (naming init.py): this worker must not serve.
    """
    mine = core_tables(site)
    if mine.get("routes") != master.get("routes"):
        where = os.path.join(site.root, ".py", "init.py")
        raise StartupError(
            f"{where}: the routes differ from the ones krait started with; krait reads routes "
            "once, so restart it to serve the new ones")
    return [name for name, digest in mine.items()
            if name != "routes" and master.get(name) not in (None, digest)]
