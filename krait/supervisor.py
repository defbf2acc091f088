"""The master process: loads ``.py/init.py``, validates ``krait.config``, builds the C core's
tables, starts and replaces workers, and runs the loop (in C, without the GIL) until a stop
signal. Python is called back only for rare events: a regex-route or cache-rule cache miss, a
worker's end, SIGHUP."""

from __future__ import annotations

import os
import re
import runpy
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import krait
from krait import _mime, config
from krait._core import Server, ffi, lib
from krait.errors import ConfigError

VERB_BITS = {
    "GET": lib.KRAIT_VERB_GET, "POST": lib.KRAIT_VERB_POST, "PUT": lib.KRAIT_VERB_PUT,
    "DELETE": lib.KRAIT_VERB_DELETE, "CONNECT": lib.KRAIT_VERB_CONNECT,
    "OPTIONS": lib.KRAIT_VERB_OPTIONS, "TRACE": lib.KRAIT_VERB_TRACE,
    "WEBSOCKET": lib.KRAIT_VERB_WEBSOCKET, "PATCH": lib.KRAIT_VERB_PATCH,
    "ANY": lib.KRAIT_VERB_ANY,
}

# krait.config attribute → (core limit, scale to the core's unit).
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
    "shutdown_timeout": (lib.KRAIT_LIMIT_DRAIN, 1000),
}


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


def load_site(site_root: str) -> dict[str, Any]:
    """Put ``<site>/.py`` on ``sys.path``, set ``krait.site_root``, run ``init.py``.

    Returns init.py's globals. Raises StartupError with ``file:line: message``.
    """
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
        raise StartupError(f"{exc.filename}:{exc.lineno}: {exc.msg}") from None
    except BaseException as exc:  # noqa: BLE001 - any failure of the site's code stops start-up
        where = _site_frame(exc.__traceback__, site_root)
        loc = f"{where[0]}:{where[1]}" if where else init
        detail = "".join(traceback.format_exception(exc))
        raise StartupError(f"{loc}: {type(exc).__name__}: {exc}\n{detail}") from None


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
    if routes is None or len(routes) == 0:
        return [config.Route()]
    if not isinstance(routes, list):
        raise StartupError(f"krait.config.routes must be a list, not {type(routes).__name__}")
    for route in routes:
        if not isinstance(route, config.Route):
            raise StartupError(f"krait.config.routes holds {route!r}, not a krait.config.Route")
        where = f"{route.filename}:{route.lineno}"
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


def _compile_list(name: str) -> list[re.Pattern[str]]:
    value = getattr(config, name)
    if not isinstance(value, (list, tuple)):
        raise StartupError(f"krait.config.{name} must be a list of regexes")
    out = []
    for rx in value:
        try:
            out.append(re.compile(rx))
        except (re.error, TypeError) as exc:
            raise StartupError(f"krait.config.{name}: invalid regex {rx!r}: {exc}") from None
    return out


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
            if route.url is not None and route.url == path:
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
            bits = VERB_BITS[route.verb]
            if bits & verb:
                target = route.target or ""
                for name, value in params.items():
                    target = target.replace("{" + name + "}", value)
                return i, target, sorted(params.items()), allow | bits
            allow |= bits
        return -1, "", [], allow


@ffi.def_extern(error=-1)
def krait_py_cache(ud: Any, relpath: Any, length: int) -> int:
    sup: Supervisor = ffi.from_handle(ud)
    return sup.rules.cache_flags(ffi.unpack(relpath, length).decode("utf-8", "surrogateescape"))


@ffi.def_extern(error=-1)
def krait_py_route(ud: Any, verb: int, path: Any, length: int, route: Any, target: Any,
                   target_cap: int, params: Any, params_cap: int, params_len: Any,
                   allow: Any) -> int:
    sup: Supervisor = ffi.from_handle(ud)
    index, tgt, pairs, allowed = sup.rules.match(
        verb, ffi.unpack(path, length).decode("utf-8", "surrogateescape"))
    tb = tgt.encode("utf-8", "surrogateescape")
    pb = encode_pairs(pairs) if pairs else b""
    if len(tb) >= target_cap or len(pb) > params_cap:
        return -1
    route[0] = index
    ffi.memmove(target, tb + b"\0", len(tb) + 1)
    if pb:
        ffi.memmove(params, pb, len(pb))
    params_len[0] = len(pb)
    allow[0] = allowed
    return 0


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


class Supervisor:
    """Owns the core server and the worker processes."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.quick_deaths = 0
        self.server: Server | None = None
        self.rules = Rules(routes=[])
        self.log_file: Any = None

    # -- start-up -----------------------------------------------------------------------------

    def configure(self) -> Server:
        opts = self.opts
        load_site(opts.site_root)
        for name, value in opts.limits.items():
            setattr(config, name, value)
        routes = validate_routes(opts.site_root)
        self.rules = Rules(routes=routes, no_store=_compile_list("cache_no_store"),
                           private=_compile_list("cache_private"),
                           public=_compile_list("cache_public"),
                           long_term=_compile_list("cache_long_term"))
        server = Server(opts.site_root)
        self.server = server
        server.set_version(krait.__version__)
        for name, (which, scale) in LIMITS.items():
            value = getattr(config, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise StartupError(f"krait.config.{name} must be a positive number, not {value!r}")
            server.set_limit(which, int(value * scale))
        server.set_cache_ages(int(config.cache_max_age_default),
                              int(config.cache_max_age_long_term))
        for ext, mime in sorted(_mime.table().items()):
            server.add_mime(ext.lstrip("."), mime)
        for route in routes:
            server.add_route(VERB_BITS[route.verb], route.url, route.compiled is not None,
                             route.target, route.ctrl_class is not None)
        server.set_callbacks(self)
        if opts.access_log in ("", "-"):
            server.set_access_log(1)
        elif opts.access_log.lower() not in ("off", "none"):
            self.log_file = open(opts.access_log, "ab", buffering=0)  # noqa: SIM115
            server.set_access_log(self.log_file.fileno())
        return server

    # -- workers ------------------------------------------------------------------------------

    def spawn_worker(self) -> None:
        assert self.server is not None
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [sys.executable, "-m", "krait.worker", self.opts.site_root, "--fd",
               str(child.fileno())]
        if self.opts.debug:
            cmd.append("--debug")
        env = dict(os.environ)
        for name, value in self.opts.limits.items():
            env[f"KRAIT_CONFIG_{name}"] = repr(value)
        proc = subprocess.Popen(cmd, pass_fds=(child.fileno(),), start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(), env=env)
        child.close()
        fd = parent.detach()
        slot = self.server.add_worker(fd, proc.pid)
        self.workers[slot] = proc
        proc.started = time.monotonic()  # type: ignore[attr-defined]

    def reap(self) -> None:
        for proc in list(self.workers.values()):
            proc.poll()

    def on_event(self, kind: int, a: int, b: int) -> None:
        if kind == lib.KRAIT_EVENT_CHILD:
            self.reap()
        elif kind == lib.KRAIT_EVENT_WORKER_EXIT:
            proc = self.workers.pop(a, None)
            if proc is not None and proc.poll() is None:
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
            if self.stopping or self.server is None:
                return
            started = getattr(proc, "started", 0.0)
            if time.monotonic() - started < 1.0:
                self.quick_deaths += 1
            else:
                self.quick_deaths = 0
            if self.quick_deaths > 20:
                log("workers keep dying right after start; stopping (see the errors above)")
                self.server.stop()
                return
            self.spawn_worker()
        elif kind == lib.KRAIT_EVENT_RELOAD:
            self.reload()

    def reload(self) -> None:
        """SIGHUP: fresh workers with newly loaded code replace the old ones, none dropped."""
        assert self.server is not None
        log("reloading workers")
        old = list(self.workers)
        for _ in range(len(old)):
            self.spawn_worker()
        for slot in old:
            self.server.retire_worker(slot)

    def stop_workers(self) -> None:
        procs = list(self.workers.values())
        self.workers.clear()
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
        except StartupError as exc:
            log(str(exc))
            return 1
        except OSError as exc:
            log(str(exc))
            return 1
        count = opts.workers or os.cpu_count() or 1
        try:
            for _ in range(count):
                self.spawn_worker()
        except OSError as exc:
            log(f"cannot start workers: {exc}")
            return 1
        log(f"serving {os.path.abspath(opts.site_root)} at {' '.join(urls)} "
            f"with {count} worker{'s' if count != 1 else ''} (pid {os.getpid()})")
        if not os.path.isfile(os.path.join(opts.site_root, ".py", "init.py")):
            log("no .py/init.py in the site: every file is served by its URL. Create it to add "
                "routes, cache rules and limits (see docs/configuration.md)")
        try:
            server.run()
        finally:
            self.stopping = True
            self.stop_workers()
            server.close()
            if self.log_file is not None:
                self.log_file.close()
        log("stopped")
        return 0
