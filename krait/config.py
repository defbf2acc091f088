"""krait.config: what a site's ``.py/init.py`` sets — routes, cache rules, limits and TLS.

The server reads these once, after ``init.py`` has run, validates them (a bad value stops
start-up with the file and line that set it) and hands them to the C core.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any

from krait.errors import ConfigError

__all__ = [
    "ConfigError", "Route", "cache_long_term", "cache_max_age_default",
    "cache_max_age_long_term", "cache_no_store", "cache_private", "cache_public", "error_pages",
    "html_templates", "routes",
]


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_location() -> tuple[str | None, int | None]:
    """The first frame outside the krait package: where the site's code made the call."""
    frame: Any = sys._getframe(1)
    while frame is not None:
        name = os.path.abspath(frame.f_code.co_filename)
        if os.path.dirname(name) != _PACKAGE_DIR:
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None, None


class Route:
    """One routing rule: which requests go to which file or controller.

    :param verb: ``GET`` (also matches ``HEAD``), ``POST``, ``PUT``, ``DELETE``, ``PATCH``,
        ``CONNECT``, ``OPTIONS``, ``TRACE``, ``ANY`` or ``WEBSOCKET``; ``None`` means ``GET``.
    :param url: the exact decoded path to match (no query string).
    :param regex: a Python regular expression the whole decoded path must match; its named
        groups become ``krait.url_params`` and fill ``{name}`` in ``target``.
    :param target: the file that answers, relative to the site root; ``None`` means the
        request path itself.
    :param ctrl_class: a callable (normally a :class:`krait.mvc.CtrlBase` subclass) called with
        no arguments per request; its view renders the response.
    :param prefix: with ``wsgi`` or ``static_dir``: the URL prefix (``"/app"``) the application
        or folder is mounted at; it takes that path and every path below it (``/app/x``, never
        ``/apple``). ``"/"`` takes every path.
    :param wsgi: a WSGI application (PEP 3333): the callable itself or ``"package.module:name"``
        (imported in each worker, and once by the master at start-up to check it). A mounted
        application takes every verb unless ``verb`` is given (WebSocket handshakes excepted:
        WSGI cannot accept them). See docs/wsgi.md.
    :param static_dir: a folder (absolute, or relative to the site root) whose files the core
        serves at ``prefix``, as it serves the site's own (validators, ``Range``, ``.gz``
        siblings, hidden names refused), every one a plain file (a ``.py`` or ``.pyml`` is
        sent as text, never run), a missing one a 404: never a worker. Takes every verb unless
        ``verb`` is given (``GET`` and ``HEAD`` are answered; others get 405). The folder is
        opened once, at start-up. See docs/wsgi.md.
    :param max_body_size: the largest request body (bytes, after any chunked framing) this
        route's page, controller or application accepts; a larger one answers 413 before the
        site's code runs. It can only lower ``krait.config.max_body_size``, which the server
        enforces as the body arrives: this one is checked once the body has been received
        (spooled to a temporary file past ``spool_threshold``), so it protects the site's
        code, not the server's bandwidth or disk. ``None``: only the server's limit.
    """

    route_verbs = ("GET", "POST", "PUT", "DELETE", "PATCH", "CONNECT", "OPTIONS", "TRACE",
                   "ANY", "WEBSOCKET")

    def __init__(self, verb: str | None = None, url: str | None = None,
                 regex: str | None = None, target: str | None = None,
                 ctrl_class: Callable[[], Any] | None = None, *, prefix: str | None = None,
                 wsgi: str | Callable[..., Any] | None = None,
                 static_dir: str | os.PathLike[str] | None = None,
                 max_body_size: int | None = None) -> None:
        self.filename, self.lineno = _caller_location()
        if max_body_size is not None and (isinstance(max_body_size, bool) or
                                          not isinstance(max_body_size, int) or
                                          max_body_size < 0):
            raise ConfigError(f"route max_body_size {max_body_size!r} must be None or a whole "
                              "number of bytes, 0 or more", self.filename, self.lineno)
        if wsgi is not None and static_dir is not None:
            raise ConfigError("a route takes wsgi= or static_dir=, not both",
                              self.filename, self.lineno)
        kind = "wsgi" if wsgi is not None else "static_dir" if static_dir is not None else None
        if (prefix is None) != (kind is None):
            raise ConfigError("a route takes prefix= and wsgi= together (a mounted WSGI "
                              "application), or prefix= and static_dir= (a static folder)",
                              self.filename, self.lineno)
        if kind is not None:
            if url is not None or regex is not None or target is not None or \
                    ctrl_class is not None:
                raise ConfigError(f"a {kind} route takes no url, regex, target or ctrl_class: "
                                  "its prefix says which paths it takes",
                                  self.filename, self.lineno)
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise ConfigError(f"route prefix {prefix!r} must be a path starting with '/'",
                                  self.filename, self.lineno)
            if any(c in prefix for c in "?#%\0") or any(
                    part.startswith(".") for part in prefix.split("/") if part):
                raise ConfigError(f"route prefix {prefix!r} must be a plain decoded path (no "
                                  "'?', '#', '%', NUL or segment starting with '.')",
                                  self.filename, self.lineno)
            if prefix != "/":
                prefix = prefix.rstrip("/") or "/"
        if static_dir is not None:
            if isinstance(static_dir, os.PathLike):
                static_dir = os.fspath(static_dir)
            if not isinstance(static_dir, str) or not static_dir or "\0" in static_dir:
                raise ConfigError(f"static_dir {static_dir!r} must name a folder",
                                  self.filename, self.lineno)
            if verb is None:
                verb = "ANY"
            if verb == "WEBSOCKET":
                raise ConfigError("a static_dir route cannot take WebSocket handshakes",
                                  self.filename, self.lineno)
        if wsgi is not None:
            if isinstance(wsgi, str):
                module, sep, name = wsgi.partition(":")
                if not sep or not module or not name:
                    raise ConfigError(f"wsgi={wsgi!r}: write 'package.module:app'",
                                      self.filename, self.lineno)
            elif not callable(wsgi):
                raise ConfigError(f"wsgi application {wsgi!r} is not callable",
                                  self.filename, self.lineno)
            if verb is None:
                verb = "ANY"
            if verb == "WEBSOCKET":
                raise ConfigError("a wsgi route cannot take WebSocket handshakes (WSGI has no "
                                  "way to accept one)", self.filename, self.lineno)
        if verb is None:
            verb = "GET"
        if verb not in self.route_verbs:
            raise ConfigError(f"unknown route verb {verb!r} (one of {', '.join(self.route_verbs)})",
                              self.filename, self.lineno)
        if target is not None and ctrl_class is not None:
            raise ConfigError("a route takes a target or a ctrl_class, not both",
                              self.filename, self.lineno)
        if ctrl_class is not None and verb == "WEBSOCKET":
            raise ConfigError("a WEBSOCKET route cannot have a ctrl_class",
                              self.filename, self.lineno)
        if ctrl_class is not None and not callable(ctrl_class):
            raise ConfigError(f"ctrl_class {ctrl_class!r} is not callable",
                              self.filename, self.lineno)
        self.verb = verb
        self.url = url
        self.regex = regex
        self.target = target
        self.ctrl_class = ctrl_class
        self.prefix = prefix
        self.wsgi = wsgi
        #: The folder a static route serves (made absolute against the site root at start-up).
        self.static_dir: str | None = static_dir
        #: The largest body this route accepts (413 beyond), or ``None``.
        self.max_body_size = max_body_size
        #: The application itself, once the server has loaded ``wsgi`` (at start-up).
        self.app: Callable[..., Any] | None = wsgi if callable(wsgi) else None
        self.compiled: re.Pattern[str] | None = None
        if regex is not None:
            try:
                self.compiled = re.compile(regex)
            except re.error as exc:
                raise ConfigError(f"invalid route regex {regex!r}: {exc}",
                                  self.filename, self.lineno) from None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in (
            ("verb", self.verb), ("url", self.url), ("regex", self.regex),
            ("target", self.target), ("ctrl_class", self.ctrl_class), ("prefix", self.prefix),
            ("wsgi", self.wsgi), ("static_dir", self.static_dir),
            ("max_body_size", self.max_body_size)) if v is not None)
        return f"Route({fields})"

    def takes_path(self, path: str) -> bool | None:
        """For a prefix route: does ``path`` lie at or below the prefix (on a segment
        boundary, as the core decides)? ``None`` for any other route."""
        prefix = self.prefix
        if prefix is None:
            return None
        return path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/")


#: The routes, tried in order; the first match wins. Empty means ``[Route()]``.
routes: list[Route] = []
#: Regexes (full match on the path relative to the root) of files clients must not store.
cache_no_store: list[str] = []
#: Regexes of files only private (browser) caches may keep.
cache_private: list[str] = []
#: Regexes of files any cache may keep (``Cache-Control: public``).
cache_public: list[str] = []
#: Regexes of files that get the long max-age.
cache_long_term: list[str] = []
#: Seconds for ``max-age`` by default.
cache_max_age_default: int = 300
#: Seconds for ``max-age`` of files in ``cache_long_term``.
cache_max_age_long_term: int = 864000

#: ``.html`` and ``.htm`` files are templates, like ``.pyml`` ones (Krait's rule): an ``@`` in
#: them starts Python code, so a literal one is written ``@@``. ``False`` sends them as written
#: (an e-mail address or CSS ``@media`` is then plain text); only ``.pyml`` files are templates.
html_templates: bool = True

#: The site's own error pages: status → file relative to the site root, e.g.
#: ``{404: "errors/404.html", 500: "errors/500.html"}``. A template is rendered (it sees
#: ``error.status``, ``error.reason`` and ``error.message``); any other file is sent as it is. A
#: page that fails gives way to the default page. Statuses not listed get the default page.
error_pages: dict[int, str] = {}

#: Limits (architecture.md defaults); the command line overrides these.
max_request_line: int = 8 * 1024
max_header_size: int = 64 * 1024
max_header_fields: int = 100
max_body_size: int = 16 * 1024 * 1024
header_timeout: float = 10.0
keepalive_timeout: float = 60.0
worker_timeout: float = 30.0
max_queue: int = 1024
max_websocket_message: int = 16 * 1024 * 1024
body_timeout: float = 30.0
send_timeout: float = 60.0
max_connections: int = 65536
spool_threshold: int = 1024 * 1024
#: Request-body bytes the core holds in memory, all connections together; past it every body
#: goes to its temporary file as it arrives (as one over ``spool_threshold`` always does).
max_body_memory: int = 64 * 1024 * 1024
shutdown_timeout: float = 10.0
#: Seconds of silence after which the core pings an open WebSocket; no answer within as long
#: again closes it.
websocket_ping_interval: float = 30.0
#: Event loops of the core (threads of the master): each accepts connections and serves
#: static files and TLS on its own; Python pages and WebSockets go through loop 0, which
#: holds the workers. ``None``: the ``KRAIT_LOOPS`` environment variable if set, else the
#: number of CPUs krait may run on. ``--loops`` on the command line wins over both.
loops: int | None = None
#: The access log's format: ``"combined"`` (Apache's Combined Log Format plus the seconds
#: taken, the default) or ``"json"`` (one JSON object per line; docs/deployment.md lists the
#: fields). ``--access-log-format`` on the command line wins. Read at start: a reload (SIGHUP)
#: keeps the format the server started with.
access_log_format: str = "combined"
#: A Unix socket to listen on (plain HTTP), e.g. ``"/run/krait/site.sock"``, for a proxy on
#: the same machine. Alone, it replaces the TCP port (``--port`` given too: both).
#: ``--unix`` on the command line wins. A stale socket file at the path is replaced; anything
#: else there stops start-up.
unix_socket: str | None = None
#: The Unix socket's permission bits (``--unix-mode``): 0o660 lets its owner and group (the
#: proxy's user should be in it) connect.
unix_socket_mode: int = 0o660
#: Metrics for Prometheus (``GET /metrics``) and a health check for load balancers
#: (``GET /healthz``: 200, then 503 from SIGTERM on) on a listener of their own, never the
#: site's port: ``"ADDR:PORT"``, e.g. ``"127.0.0.1:9100"`` (``"[::1]:9100"``; ``":9100"``
#: listens on every interface). ``--metrics`` on the command line wins. ``None``: none.
metrics: str | None = None
#: Requests handed to one worker at once: it runs one, the next waits in its socket so the
#: worker goes straight on to it. 1 sends a request only to an idle worker.
worker_pipeline: int = 4
#: Worker recycling: a worker that has answered this many requests is replaced by a fresh one
#: (it answers every request it was handed first; none fails). 0: workers live until they
#: die or the site is reloaded. Bounds what a slowly leaking site (or library) costs.
max_requests: int = 0
#: Up to this many requests more, drawn at random per worker, so that workers started
#: together are not all replaced together.
max_requests_jitter: int = 0
#: Worker recycling by memory: a worker whose resident memory (RSS) is above this many MiB
#: after a request is replaced the same way. 0: no limit.
max_worker_memory: int = 0

#: Hidden directories (relative to the site root) that controller views, ``@import`` and
#: :func:`krait.get_full_path` may read from. Nothing else whose path has a segment starting
#: with ``.`` is ever read for a page (see :mod:`krait.paths`).
view_dirs: list[str] = [".view"]
#: File names never served, rendered or imported, in any directory: shell-style patterns
#: compared without regard to case (editors' backups and swap files by default).
never_serve: list[str] = ["*~", "#*#", "*.swp", "*.swo", "*.swx", "*.bak", "*.orig", "*.rej"]
#: Directories (relative to the site root, e.g. ``"uploads/"``) whose files are only ever data:
#: never run as scripts, never rendered as templates, never imported into a page. Put
#: visitors' uploads here.
static_only: list[str] = []
#: Fields at most in a ``application/x-www-form-urlencoded`` body; more answers 413.
max_form_fields: int = 1000
#: Bytes of a ``multipart/form-data`` body's plain fields (parts without a file name), all
#: together, that :meth:`krait.request.Request.get_multipart_form` keeps in memory; more answers
#: 413. File parts are not counted: past a few dozen KiB they go to temporary files.
max_form_memory_size: int = 1024 * 1024
#: Origins (``"https://app.example.com"``) whose pages may open WebSockets here, besides the
#: site's own (the request's ``Host``); ``["*"]`` allows every origin.
websocket_origins: list[str] = []
#: Bytes of received WebSocket messages a controller may have waiting, per connection and for
#: all connections of a worker; past either, the connection is closed with 1008.
websocket_queue_bytes: int = 32 * 1024 * 1024
websocket_worker_queue_bytes: int = 128 * 1024 * 1024
#: The ``Server`` header of every response: ``None`` keeps ``krait/<version>``, ``""`` omits it.
server_header: str | None = None
#: Channels across machines: a Redis URL (``"redis://127.0.0.1:6379/0"``) through which every
#: krait of the site shares what :func:`krait.websockets.publish` sends. ``None``: a channel is
#: the connections of this krait only.
pubsub: str | None = None
#: Host names this site answers to (``"example.com"``, or ``".example.com"`` for it and every
#: subdomain; any case, the port ignored). Empty: every host. A request for another host, or
#: without one, gets 400 before anything else looks at it — static files included.
allowed_hosts: list[str] = []

#: Sessions (``krait.session``, CSRF tokens, flash messages; see docs/sessions.md).
#: The secret that signs session cookies: a random text of 32 characters or more, kept out of
#: version control. A list rotates secrets: the first signs, every one still verifies, so
#: visitors keep their sessions while an old secret is retired. ``None``: no sessions.
session_secret: str | bytes | list[str | bytes] | None = None
#: Where session data lives: ``None`` in the signed cookie itself (at most about 4 KB, readable
#: by the visitor, not changeable); ``"file"`` in files of ``session_dir`` (only a signed id
#: travels); ``"redis://host:port/db"`` in Redis, for several machines; or a
#: ``krait.sessions.SessionStore``.
session_store: object = None
#: The directory of the ``"file"`` store, relative to the site root or absolute; it must be
#: hidden or outside the site. ``None``: ``.private/sessions``.
session_dir: str | None = None
#: Seconds a session lives after the visitor's last request.
session_max_age: int = 14 * 24 * 3600
#: The session cookie's name.
session_cookie_name: str = "krait_session"
#: ``None``: the cookie is ``Secure`` when the request came over HTTPS; ``True``: always.
session_cookie_secure: bool | None = None
#: The session cookie's ``SameSite``: ``"Lax"``, ``"Strict"`` or ``"None"``.
session_same_site: str = "Lax"

#: TLS, used when an HTTPS port is given (``--https-port`` or
#: ``--port HTTP/HTTPS``). Reloaded on SIGHUP.
ssl_certificate_path: str | None = None
ssl_private_key_path: str | None = None
ssl_key_passphrase: str | None = None
#: With an HTTPS port: answer plain-HTTP requests with a 301 to the same URL over HTTPS.
https_redirect: bool = False
#: With an HTTPS port: a ``Strict-Transport-Security`` value for every HTTPS response
#: (e.g. ``"max-age=31536000"``); empty for none.
hsts: str = ""


class _TrackedList(list):
    """A default list of ``krait.config`` that remembers where the site last changed it, so a
    bad value added with ``config.cache_private.append(...)`` is reported with its file:line."""

    def __init__(self, name: str, items: Any = ()) -> None:
        super().__init__(items)
        self._name = name

    def _touched(self) -> None:
        _locations[self._name] = _caller_location()

    def append(self, item: Any) -> None:
        self._touched()
        super().append(item)

    def extend(self, items: Any) -> None:
        self._touched()
        super().extend(items)

    def insert(self, index: Any, item: Any) -> None:
        self._touched()
        super().insert(index, item)

    def __setitem__(self, index: Any, item: Any) -> None:
        self._touched()
        super().__setitem__(index, item)

    def __iadd__(self, items: Any) -> _TrackedList:
        self._touched()
        return super().__iadd__(items)

    def __reduce__(self) -> Any:
        return (list, (list(self),))


# Where each setting was last assigned or changed by site code: name → (filename, lineno).
_locations: dict[str, tuple[str | None, int | None]] = {}


def where(name: str) -> str | None:
    """``"file:line"`` of the site code that last set or changed ``krait.config.<name>``, or
    ``None`` when the site never touched it (or the place is unknown)."""
    filename, lineno = _locations.get(name, (None, None))
    if filename is None:
        return None
    return f"{filename}:{lineno}" if lineno is not None else filename


class _ConfigModule(type(sys)):  # type: ignore[misc]
    """The module's class: assignments like ``config.cache_private = [...]`` are recorded."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_"):
            _locations[name] = _caller_location()
        super().__setattr__(name, value)


def reset() -> None:
    """Restore every setting to its default (used before loading a site)."""
    namespace = sys.modules[__name__].__dict__
    for name, value in _DEFAULTS.items():
        namespace[name] = _TrackedList(name, value) if isinstance(value, list) else \
            dict(value) if isinstance(value, dict) else value
    _locations.clear()


_DEFAULTS = {k: (list(v) if isinstance(v, list) else v) for k, v in dict(globals()).items()
             if not k.startswith("_")
             and isinstance(v, (int, float, str, list, dict, type(None)))
             and k not in ("annotations",)}
reset()
sys.modules[__name__].__class__ = _ConfigModule
