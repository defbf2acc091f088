"""The master process: loads ``.py/init.py``, validates ``krait.config``, builds the C core's
tables, starts and replaces workers, and runs the loop (in C, without the GIL) until a stop
signal. Python is called back only for rare events: a regex-route or cache-rule cache miss, a
worker's end, SIGHUP."""

from __future__ import annotations

import ipaddress
import json
import os
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
from krait import _errorpages, _metrics, _mime, _pubsub, config
from krait._core import Server, ffi, lib
from krait._proxy import parse_proxy
from krait._site import (
    LIMITS,
    VERB_BITS,
    Rules,
    StartupError,
    core_tables,
    load,
    route_bits,
    validate_sessions,
)
from krait.response import REASONS


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


def _bound_address(host: str, port: int) -> str:
    """The address the core listens on for ``host``, as a URL host (``127.0.0.1``,
    ``[::1]``, ``0.0.0.0``): the first address ``getaddrinfo`` gives, as the core binds
    (IPv4 first for an empty host). A name (``localhost``) shows what it resolved to."""
    try:
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                   0, socket.AI_PASSIVE | socket.AI_NUMERICSERV)
    except OSError:
        infos = []
    if not host:
        infos = [i for i in infos if i[0] == socket.AF_INET] or infos
    addr = infos[0][4][0] if infos else (host or "0.0.0.0")
    return f"[{addr}]" if ":" in addr else addr


#: The variables of systemd's socket activation (sd_listen_fds(3)).
LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
#: The first inherited descriptor (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3


def inherited_sockets(environ: dict[str, str] | Any = os.environ) -> list[tuple[int, str]]:
    """The listening sockets systemd (or any launcher speaking its protocol) handed over, as
    ``(fd, name)``: descriptors 3, 4, ... when ``LISTEN_PID`` is this process's pid and
    ``LISTEN_FDS`` says how many; names from ``LISTEN_FDNAMES`` (``FileDescriptorName=``),
    ``""`` without. The variables are then removed, so the workers never see them. Empty when
    the variables are absent or meant for another process.

    :raises StartupError: when they are ours but make no sense.
    """
    pid = environ.get("LISTEN_PID")
    if pid is None or pid.strip() != str(os.getpid()):
        return []
    count = environ.get("LISTEN_FDS", "")
    names = environ.get("LISTEN_FDNAMES")
    for name in LISTEN_VARS:
        environ.pop(name, None)
    if not count.isdigit() or int(count) < 1:
        raise StartupError(f"socket activation: LISTEN_FDS={count!r} is not a count of sockets")
    n = int(count)
    name_list = names.split(":") if names is not None else []
    return [(LISTEN_FDS_START + i, name_list[i] if i < len(name_list) else "")
            for i in range(n)]


def _socket_url(fd: int, tls: bool) -> str:
    """How the banner shows a listening socket: ``http://127.0.0.1:8080/``, ``unix:/path``."""
    with socket.socket(fileno=os.dup(fd)) as s:
        addr = s.getsockname()
        if s.family == socket.AF_UNIX:
            return f"unix:{addr if isinstance(addr, str) else addr.decode(errors='replace')}"
        host = f"[{addr[0]}]" if s.family == socket.AF_INET6 else addr[0]
        return f"{'https' if tls else 'http'}://{host}:{addr[1]}/"


def _is_loopback(host: str) -> bool:
    """Does ``--host`` listen on the loopback interface only? (``""`` means every one.)"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loop_count(requested: int | None) -> int:
    """The core's event loops: ``--loops``, else ``config.loops``, else ``$KRAIT_LOOPS``, else
    the CPUs this process may run on; at most 64."""
    n = requested if requested is not None else config.loops
    if n is None:
        env = os.environ.get("KRAIT_LOOPS", "").strip()
        if env:
            try:
                n = int(env)
            except ValueError:
                raise StartupError(f"KRAIT_LOOPS={env!r} is not a number") from None
    if n is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        n = min(cpus, 64)  # a bigger machine gets the most the core runs
    if not 1 <= int(n) <= 64:
        raise StartupError(f"loops must be from 1 to 64, not {n}")
    return int(n)


def _end_cause(status: int | None) -> str:
    """How a worker ended, from its exit status (``Popen.returncode``), for the error log."""
    if status is None:
        return "still running when the core let it go: killed"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def log(message: str) -> None:
    """One line to the error log (stderr)."""
    sys.stderr.write(f"krait: {message}\n")
    sys.stderr.flush()


def encode_pairs(pairs: list[tuple[str, str]]) -> bytes:
    """Pairs in the worker protocol's encoding: u16 count, then (u32 len, bytes) each."""
    out = bytearray(len(pairs).to_bytes(2, "little"))
    for name, value in pairs:
        for s in (name.encode("utf-8", "surrogateescape"),
                  value.encode("utf-8", "surrogateescape")):
            out += len(s).to_bytes(4, "little") + s
    return bytes(out)


@ffi.def_extern()
def krait_py_event(ud: Any, kind: int, a: int, b: int) -> None:
    try:
        ffi.from_handle(ud).on_event(kind, a, b)
    except Exception:  # noqa: BLE001 - never let an exception unwind into C
        traceback.print_exc()


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


@dataclass
class Options:
    """What the command line decided."""

    site_root: str
    host: str = "127.0.0.1"
    port: int | None = 8080
    https_port: int | None = None
    workers: int = 0
    #: ``--loops``; None: ``config.loops``, then ``$KRAIT_LOOPS``, then the CPUs.
    loops: int | None = None
    access_log: str = "-"
    #: ``--access-log-format``, over ``config.access_log_format``.
    access_log_format: str | None = None
    debug: bool = False
    reload: bool = False
    limits: dict[str, float] = field(default_factory=dict)
    trusted_proxies: list[str] = field(default_factory=list)
    #: ``--proxy-protocol``: a trusted proxy's connections start with a PROXY header.
    proxy_protocol: bool = False
    #: ``--pubsub URL``: relay channels through this Redis, over ``config.pubsub``.
    pubsub: str | None = None
    #: ``--port`` was given: a Unix socket (``--unix``, ``config.unix_socket``) is then served
    #: besides the port, not instead of it.
    port_given: bool = True
    #: ``--unix PATH`` and ``--unix-mode``, over ``config.unix_socket(_mode)``.
    unix: str | None = None
    unix_mode: int | None = None
    #: ``--wsgi``: the application served alone (``site_root`` is then a temporary folder).
    wsgi: str | None = None
    #: ``--static PREFIX=DIR``: (prefix, absolute folder) pairs, routes before the site's.
    static: list[tuple[str, str]] = field(default_factory=list)
    #: More folders whose ``.py`` files ``--reload`` watches (``--wsgi``: the application's).
    watch_dirs: list[str] = field(default_factory=list)
    #: ``--metrics ADDR:PORT``, over ``config.metrics``.
    metrics: str | None = None

    def config_overrides(self) -> dict[str, Any]:
        """The ``krait.config`` values the command line sets over init.py's, by name."""
        overrides: dict[str, Any] = dict(self.limits)
        if self.pubsub is not None:
            overrides["pubsub"] = self.pubsub
        if self.access_log_format is not None:
            overrides["access_log_format"] = self.access_log_format
        if self.unix is not None:
            overrides["unix_socket"] = self.unix
        if self.unix_mode is not None:
            overrides["unix_socket_mode"] = self.unix_mode
        if self.metrics is not None:
            overrides["metrics"] = self.metrics
        return overrides


#: Signals the C loop takes through its signalfd. They are blocked in every thread of the
#: master (helper threads included), or the kernel could deliver one to a thread that would
#: die of it (SIGHUP's default action is to terminate the process).
LOOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1}
#: Seconds a new worker may take to load the site before start-up or a reload gives up.
READY_TIMEOUT = 60.0
#: Seconds between two scans of the site for changed .py files (``--reload``).
WATCH_INTERVAL = 0.5


class WorkerProc:
    """A worker process and the master's ends of its sockets."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket | None,
                 ready_fd: int | None, notify_fd: int | None = None) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.sock = sock  # the core's end, until it is handed to the core
        self.ready_fd = ready_fd  # read end of the readiness pipe, until it is read
        # Read end (non-blocking) of the pipe on which the worker asks to be recycled.
        self.notify_fd = notify_fd
        self.started = time.monotonic()
        self.slot: int | None = None
        self.replacement: WorkerProc | None = None  # starting, to recycle this one
        self.recycle_reason = ""  # why it asked to be recycled, for the log
        self.gen_no = 0  # a crash replacement: the reload generation it replaces a worker of
        #: Parts of init.py's settings it loaded that differ from the core's (reported ready).
        self.changed: list[str] = []

    def close_ready(self) -> None:
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None

    def close_notify(self) -> None:
        if self.notify_fd is not None:
            os.close(self.notify_fd)
            self.notify_fd = None

    def recycling_asked(self) -> str | None:
        """Why the worker asked to be recycled (``config.max_requests``,
        ``config.max_worker_memory``), when it asked since the last call; else None."""
        if self.notify_fd is None:
            return None
        try:
            data = os.read(self.notify_fd, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        lines = data.splitlines()
        if not lines:
            self.close_notify()  # end-of-file: the worker has ended
            return None
        text = lines[-1].decode("ascii", "replace")[:200]
        return "".join(c if c.isprintable() else "?" for c in text)

    def discard(self) -> None:
        """Kill a worker that never reached the core."""
        self.close_ready()
        self.close_notify()
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
                first, _, rest = text.partition("\n")
                if first == "ok":
                    w.changed = rest.split("\n") if rest else []
                else:
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
        self.tables: dict[str, str] = {}
        self._changed_logged: list[str] = []
        self.log_file: Any = None
        self.log_path = ""
        self.tls = False  # an HTTPS listener: SIGHUP reloads the certificate
        self.count = 1
        self.loops = 1
        # Reloads: a generation of new workers starts in a helper thread; the loop thread
        # installs it when woken by a SIGHUP the helper sends to this process.
        self._lock = threading.Lock()
        self._generation: list[WorkerProc] | None = None  # starting
        self._ready: tuple[list[WorkerProc], list[str]] | None = None  # started, to install
        self._again = False  # another reload was asked for while one was starting
        # Recycling: (old worker, its replacement, loading errors) once the replacement has
        # loaded the site, for the loop thread to install.
        self._loaded: list[tuple[WorkerProc, WorkerProc, list[str]]] = []
        self._replacing: list[WorkerProc] = []  # replacements started, not yet handled
        # Replacements of ended workers: loading, loaded (to install), and retries due (by
        # the reload generation they replace a worker of: gen_no counts installed reloads).
        self._spawning: list[WorkerProc] = []
        self._spawned: list[tuple[WorkerProc, list[str]]] = []
        self._spawn_due: list[int] = []
        self._spawn_failures = 0
        self._spawn_error: str | None = None
        self.gen_no = 0
        self._watch_requested = False
        self._stop_threads = threading.Event()
        self.node_id = _pubsub.new_node_id()
        self.relay: _pubsub.Relay | None = None
        self._threads: list[threading.Thread] = []
        self.restarts = _metrics.Restarts()  # worker restarts by cause, for /metrics
        self.metrics: _metrics.MetricsListener | None = None

    # -- start-up -----------------------------------------------------------------------------

    def configure(self) -> Server:
        opts = self.opts
        site = load(opts.site_root, opts.config_overrides(), opts.static)
        routes = site.routes
        for warning in site.warnings:
            log(warning)
        validate_sessions(opts.site_root, scan=True)
        self.rules = site.rules
        # Every worker checks that it loaded the same routes (krait._site.core_tables).
        self.tables = core_tables(site)
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
        for spec in opts.trusted_proxies:
            net = parse_proxy(spec)
            server.add_trusted_proxy("unix" if net is None else str(net))
        server.set_proxy_protocol(opts.proxy_protocol)
        for status, html_page, html_type in core_error_pages(site.error_pages):
            server.set_error_page(status, html_page, html_type,
                                  _errorpages.json_body(status, REASONS.get(status, "Error")))
        for name, (which, scale) in LIMITS.items():
            server.set_limit(which, int(getattr(config, name) * scale))
        server.set_cache_ages(int(config.cache_max_age_default),
                              int(config.cache_max_age_long_term))
        for ext, mime in sorted(_mime.table().items()):
            server.add_mime(ext.lstrip("."), mime)
        for route in routes:
            if route.static_dir is not None:
                server.add_static_dir(route_bits(route), route.prefix, route.static_dir)
                continue
            if route.prefix is not None:
                server.add_prefix_route(route_bits(route), route.prefix)
                continue
            server.add_route(VERB_BITS[route.verb], route.url, route.compiled is not None,
                             route.target, route.ctrl_class is not None)
        # Cache rules: the core evaluates plain ones (literal, before.*after) itself; one regex
        # of any other shape and a worker decides every file's flags (asked once per file,
        # never in the loop). See docs/design.md, "Routing".
        core_rules = site.rules.core_cache_rules()
        if core_rules is None:
            server.set_cache_questions(True)
        else:
            for flag, before, after in core_rules:
                server.add_cache_rule(flag, before, after)
        server.set_callbacks(self)
        self.loops = loop_count(opts.loops)
        server.set_loops(self.loops)
        server.set_access_log_format(config.access_log_format == "json")
        if opts.access_log in ("", "-"):
            server.set_access_log(1)
        elif opts.access_log.lower() not in ("off", "none"):
            # By its absolute name: SIGUSR1 opens it again (reopen_logs).
            self.log_path = os.path.abspath(opts.access_log)
            self.log_file = open(self.log_path, "ab", buffering=0)  # noqa: SIM115
            server.set_access_log(self.log_file.fileno())
        return server

    def listen(self, server: Server) -> list[str]:
        """Bind what the command line and init.py ask for; returns the banner's addresses."""
        opts = self.opts
        urls = []
        host = opts.host
        unix = config.unix_socket
        # A Unix socket alone replaces the default port; with --port krait listens on both.
        if opts.port is not None and (unix is None or opts.port_given):
            port = server.listen(host, opts.port)
            urls.append(f"http://{_bound_address(host, port)}:{port}/")
        if opts.https_port is not None:
            self.load_certificate()
            self.tls = True
            https = server.listen(host, opts.https_port, tls=True)
            urls.append(f"https://{_bound_address(host, https)}:{https}/")
            server.set_https(https if config.https_redirect else 0, config.hsts or "")
        if unix is not None:
            path = os.path.abspath(unix)
            server.listen_unix(path, config.unix_socket_mode)
            urls.append(f"unix:{path}")
        return urls

    def listen_metrics(self, server: Server, urls: list[str]) -> None:
        """Bind the metrics listener (``--metrics``, ``config.metrics``) on a socket of its
        own; it is served from :meth:`run` on. Refuses the site's own port."""
        if config.metrics is None:
            return
        try:
            host, port = _metrics.parse_address(config.metrics)
        except ValueError as exc:
            raise StartupError(f"metrics: {exc}") from None
        site_ports = {int(u.rsplit(":", 1)[1].rstrip("/")) for u in urls
                      if u.startswith(("http://", "https://"))}
        if port and port in site_ports:
            raise StartupError(f"metrics: {config.metrics} is the site's port; give the "
                               "metrics a port of their own (e.g. 127.0.0.1:9100)")
        try:
            self.metrics = _metrics.MetricsListener(host, port, server, self.restarts,
                                                    lambda: self.loops)
        except OSError as exc:
            raise StartupError(f"cannot listen for metrics on {config.metrics}: "
                               f"{exc.strerror or exc}") from None
        log(f"metrics at {self.metrics.url} (and /healthz)")

    def listen_inherited(self, server: Server, sockets: list[tuple[int, str]]) -> list[str]:
        """Socket activation: serve on the sockets systemd handed over instead of binding
        any (``--host``, ``--port``, ``--https-port`` and ``--unix`` are then unused). A socket
        named ``https`` (``FileDescriptorName=https``) speaks TLS; every other one plain
        HTTP."""
        urls = []
        https_port = 0
        for fd, name in sockets:
            tls = name.lower() == "https"
            if tls and not self.tls:
                self.load_certificate()
                self.tls = True
            url = _socket_url(fd, tls)
            port = server.listen_fd(fd, tls)
            if tls and port and not https_port:
                https_port = port
            urls.append(url)
        if self.tls:
            server.set_https(https_port if config.https_redirect else 0, config.hsts or "")
        log(f"socket activation: {len(sockets)} inherited socket"
            f"{'s' if len(sockets) != 1 else ''}")
        return urls

    def load_certificate(self) -> None:
        """(Re)load the TLS certificate and key named by krait.config."""
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
        # Every worker gets a notice pipe: whether it asks to be recycled is for the site it
        # loads to say (config.max_requests), which a reload may change.
        notify_r, notify_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # -P: the current directory must not shadow the installed krait (a checkout has a
        # krait/ folder without the compiled core).
        cmd = [sys.executable, "-P", "-m", "krait.worker", self.opts.site_root, "--fd",
               str(child.fileno()), "--ready-fd", str(ready_w), "--notify-fd", str(notify_w)]
        if self.opts.debug:
            cmd.append("--debug")
        for proxy in self.opts.trusted_proxies:
            cmd += ["--trusted-proxy", proxy]
        for prefix, folder in self.opts.static:
            cmd += ["--static", f"{prefix}={folder}"]
        env = dict(os.environ)
        for name, value in self.opts.config_overrides().items():
            env[f"KRAIT_CONFIG_{name}"] = repr(value)  # read back with ast.literal_eval
        env["KRAIT_CORE_TABLES"] = json.dumps(self.tables)
        env["KRAIT_NODE_ID"] = self.node_id  # channels across machines tag messages with it
        try:
            proc = subprocess.Popen(cmd, pass_fds=(child.fileno(), ready_w, notify_w),
                                    start_new_session=True, stdin=subprocess.DEVNULL,
                                    stdout=sys.stderr.fileno(), env=env)
        except BaseException:
            parent.close()
            os.close(ready_r)
            os.close(notify_r)
            raise
        finally:
            child.close()
            os.close(ready_w)
            os.close(notify_w)
        if not wait_ready:
            os.close(ready_r)
            ready_r = None
        return WorkerProc(proc, parent, ready_r, notify_r)

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
        """Start a replacement for a worker that ended. It is handed to the core only once it
        has loaded the site: one that cannot (init.py broken since start-up, or its routes
        changed) never serves; another is tried after a pause that grows, while the other
        workers serve and requests wait in the core's queue."""
        new = self.start_worker(wait_ready=True)
        new.gen_no = self.gen_no
        self._spawning.append(new)
        t = threading.Thread(target=self._await_spawn, args=(new,), daemon=True,
                             name="krait-spawn")
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(t)
        t.start()

    def _await_spawn(self, new: WorkerProc) -> None:
        errors = wait_ready([new], READY_TIMEOUT)
        with self._lock:
            self._spawned.append((new, errors))
        if not self._stop_threads.is_set():
            os.kill(os.getpid(), signal.SIGCHLD)  # the loop thread installs it (reap)

    def _spawn_later(self, delay: float, gen_no: int) -> None:
        if self._stop_threads.wait(delay):
            return
        with self._lock:
            self._spawn_due.append(gen_no)
        os.kill(os.getpid(), signal.SIGCHLD)

    def install_spawned(self, new: WorkerProc, errors: list[str]) -> None:
        """In the loop thread: hand a replacement that loaded the site to the core; or, if it
        could not load it, try another later."""
        if new in self._spawning:
            self._spawning.remove(new)
        if self.stopping or new.gen_no != self.gen_no:
            new.discard()  # stopping, or a reload has installed a whole new set meanwhile
            return
        if errors:
            new.discard()
            self._spawn_failures += 1
            delay = min(30.0, 0.25 * 2 ** min(self._spawn_failures, 7))
            if errors[0] != self._spawn_error:
                log(f"a replacement worker could not load the site, the other workers go on "
                    f"serving; trying again in {delay:g} s (and later, this error once): "
                    f"{errors[0]}")
                self._spawn_error = errors[0]
            t = threading.Thread(target=self._spawn_later, args=(delay, self.gen_no),
                                 daemon=True, name="krait-spawn-later")
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(t)
            t.start()
            return
        failures, self._spawn_failures, self._spawn_error = self._spawn_failures, 0, None
        try:
            self.install(new)
        except OSError as exc:
            new.discard()
            log(f"cannot hand a new worker to the core: {exc}")
            return
        if failures:
            log(f"worker {new.pid} loaded the site and serves (after {failures} replacement"
                f"{'s' if failures != 1 else ''} that could not)")
        self.log_changed([new])

    def reap(self) -> None:
        """SIGCHLD: reap ended workers; then the workers that asked to be recycled (they
        send SIGCHLD too), and the replacements that finished loading (so does their
        helper thread)."""
        for w in list(self.workers.values()):
            w.proc.poll()
        for w in list(self.exiting):
            if w.proc.poll() is not None:
                self.exiting.remove(w)
        for w in list(self.workers.values()):
            reason = w.recycling_asked()
            if reason is not None:
                self.recycle(w, reason)
        with self._lock:
            loaded, self._loaded = self._loaded, []
            spawned, self._spawned = self._spawned, []
            due, self._spawn_due = self._spawn_due, []
        for old, new, errors in loaded:
            self.replace_recycled(old, new, errors)
        for new, errors in spawned:
            self.install_spawned(new, errors)
        for gen_no in due:
            if gen_no == self.gen_no and not self.stopping:
                try:
                    self.spawn_worker()
                except OSError as exc:
                    log(f"cannot start a worker: {exc}")

    # -- recycling (config.max_requests) ------------------------------------------------------

    def recycle(self, w: WorkerProc, reason: str) -> None:
        """A worker has answered its ``config.max_requests`` or grown past
        ``config.max_worker_memory`` (``reason`` says which): start its replacement. It keeps
        serving until the replacement has loaded the site (:meth:`replace_recycled`)."""
        if self.stopping or w.replacement is not None or w.slot is None or \
                self.workers.get(w.slot) is not w or w.slot in self.retired:
            return
        try:
            new = self.start_worker(wait_ready=True)
        except OSError as exc:
            log(f"worker {w.pid} is due for recycling, but a replacement cannot start "
                f"({exc}); it goes on serving")
            return
        w.replacement = new
        w.recycle_reason = reason
        self._replacing.append(new)
        t = threading.Thread(target=self._await_replacement, args=(w, new), daemon=True,
                             name="krait-recycle")
        self._threads = [t for t in self._threads if t.is_alive()]  # one per recycle
        self._threads.append(t)
        t.start()

    def _await_replacement(self, old: WorkerProc, new: WorkerProc) -> None:
        errors = wait_ready([new], READY_TIMEOUT)
        with self._lock:
            self._loaded.append((old, new, errors))
        if not self._stop_threads.is_set():
            os.kill(os.getpid(), signal.SIGCHLD)  # the loop thread installs it (reap)

    def replace_recycled(self, old: WorkerProc, new: WorkerProc, errors: list[str]) -> None:
        """In the loop thread: hand the loaded replacement to the core and retire the old
        worker (the core lets it go once it has answered everything it was handed; it then
        exits by itself). An old worker that died or was retired by a reload meanwhile has
        been replaced already: the replacement goes."""
        old.replacement = None
        if new in self._replacing:
            self._replacing.remove(new)
        if self.stopping or errors or old.slot is None or self.workers.get(old.slot) is not old \
                or old.slot in self.retired:
            new.discard()
            if errors and not self.stopping:
                log(f"worker {old.pid} is due for recycling, but its replacement could not "
                    f"load the site; it goes on serving: {errors[0]}")
            return
        try:
            self.install(new)
        except OSError as exc:
            new.discard()
            log(f"worker {old.pid} is due for recycling, but its replacement cannot be "
                f"installed ({exc}); it goes on serving")
            return
        self.retired.add(old.slot)
        assert self.server is not None
        self.server.retire_worker(old.slot)
        # The worker's own line says why (worker.py, ask_recycling).
        self.restarts.add("memory" if "max_worker_memory" in old.recycle_reason else "recycle")
        log(f"worker {old.pid} recycled: {old.recycle_reason}; worker {new.pid} replaces it")
        self.log_changed([new])

    def on_event(self, kind: int, a: int, b: int) -> None:
        if kind == lib.KRAIT_EVENT_CHILD:
            self.reap()
        elif kind == lib.KRAIT_EVENT_WORKER_EXIT:
            self.worker_exit(a)
        elif kind == lib.KRAIT_EVENT_RELOAD:
            self.on_reload_signal()
        elif kind == lib.KRAIT_EVENT_REOPEN_LOGS:
            self.reopen_logs()

    def reopen_logs(self) -> None:
        """SIGUSR1 (logrotate): open the access log again by its name, hand the new file to
        the core, which swaps it for every loop at once, then close the old one. Errors go to
        standard error, which has no name to reopen (a terminal, a pipe, the journal)."""
        if self.log_file is None or self.server is None:
            log("SIGUSR1: the access log is not a file, nothing to reopen")
            return
        try:
            new = open(self.log_path, "ab", buffering=0)  # noqa: SIM115
        except OSError as exc:
            log(f"cannot reopen the access log, lines go on to the old file: {exc}")
            return
        old, self.log_file = self.log_file, new
        self.server.swap_access_log(new.fileno())
        old.close()  # after the swap: no loop writes to it any more
        log(f"reopened the access log {self.log_path}")

    def worker_exit(self, slot: int) -> None:
        """The core let go of a worker: retired (it exits by itself on end-of-file), or dead,
        overrunning or broken (replace it)."""
        w = self.workers.pop(slot, None)
        if w is None:
            return
        w.close_notify()
        self.exiting.append(w)
        if slot in self.retired:
            self.retired.discard(slot)
            return
        status = w.proc.poll()
        if status is None:
            try:
                w.proc.kill()  # it stopped answering the core: it must not linger
            except ProcessLookupError:
                pass
        if self.stopping or self.server is None:
            return
        timed_out = self.server.worker_end(slot) == lib.KRAIT_WORKER_END_TIMEOUT
        self.restarts.add("timeout" if timed_out else "crash")
        cause = "killed: a request overran worker_timeout" if timed_out else _end_cause(status)
        log(f"worker {w.pid} ended unexpectedly ({cause}); starting a new one")
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
            if self.tls:
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
            # Every new worker loads the same files: one broken save is one message, not one
            # per worker (distinct reasons are each logged once).
            for error in dict.fromkeys(errors):
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
                self.gen_no += 1
                for slot in old:
                    self.retired.add(slot)
                    self.server.retire_worker(slot)
                self.restarts.add("reload", len(old))
                log(f"reloaded: {len(gen)} new worker{'s' if len(gen) != 1 else ''}")
                self.log_changed(gen)
        with self._lock:
            again, self._again = self._again, False
        if again:
            self.request_reload()

    def log_changed(self, workers: list[WorkerProc]) -> None:
        """Say once which of init.py's settings the new workers loaded differ from the ones
        the core read at start-up: those wait for a restart (routes never differ: a worker
        with other routes refuses to start)."""
        changed = list(dict.fromkeys(part for w in workers for part in w.changed))
        if changed and changed != self._changed_logged:
            log(f"init.py changed its {', '.join(changed)}: the core read them at start-up, "
                "so they take effect when krait restarts")
        self._changed_logged = changed

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
            pending_loaded, self._loaded = self._loaded, []
            pending += [new for _, new, _ in pending_loaded]
            pending_spawned, self._spawned = self._spawned, []
            pending += [new for new, _ in pending_spawned]
            self._generation, self._ready = None, None
        for new in self._replacing + self._spawning:
            if any(new is n for n in pending):
                continue
            # Still loading: its helper thread reads its readiness pipe; killed, it ends.
            new.proc.kill()
            new.proc.wait()
            if new.sock is not None:
                new.sock.close()
                new.sock = None
            new.close_notify()
        self._replacing.clear()
        self._spawning.clear()
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
            inherited = inherited_sockets()
            urls = (self.listen_inherited(server, inherited) if inherited
                    else self.listen(server))
            self.listen_metrics(server, urls)
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
            if self.metrics is not None:
                self.metrics.stop()
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
            f"with {count} worker{'s' if count != 1 else ''} and {self.loops} "
            f"loop{'s' if self.loops != 1 else ''} (pid {os.getpid()})")
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
        if config.pubsub:
            self.relay = _pubsub.Relay(config.pubsub, server.publish, self.node_id)
            self.relay.start()
        if self.metrics is not None:
            self.metrics.start()
        try:
            server.run()
        finally:
            if self.metrics is not None:
                self.metrics.stop()  # before the core's counters are freed
            self.stopping = True
            self._stop_threads.set()
            if self.relay is not None:
                self.relay.stop()
            self.stop_workers()
            served = [server.loop_stat(i, lib.KRAIT_STAT_REQUESTS) for i in range(self.loops)]
            accepted = [server.loop_stat(i, lib.KRAIT_STAT_CONNS) for i in range(self.loops)]
            server.close()
            if self.log_file is not None:
                self.log_file.close()
        if self.loops > 1:
            log("loops served " + ", ".join(
                f"{r} request{'s' if r != 1 else ''} on {a} connection{'s' if a != 1 else ''}"
                for r, a in zip(served, accepted, strict=True)))
        log("stopped")
        return 0
