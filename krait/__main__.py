"""The ``krait`` command: ``krait <site-root> [--host H] [--port P] [--workers N] ...``."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from typing import NoReturn

#: Where krait listens unless ``--host`` says otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Bad arguments: one line on stderr and exit status 2."""
        self.exit(2, f"krait: {message} (see krait --help)\n")


def _port_spec(value: str) -> tuple[int | None, int | None]:
    """``N`` (plain HTTP) or the original's ``HTTP/HTTPS`` form (``8080/``, ``/8443``)."""
    def one(part: str) -> int | None:
        if part == "":
            return None
        if not part.isdigit() or not 0 <= int(part) <= 65535:
            raise argparse.ArgumentTypeError(f"invalid port {part!r}")
        return int(part)

    if "/" in value:
        http, _, https = value.partition("/")
        ports = one(http), one(https)
        if ports == (None, None):
            raise argparse.ArgumentTypeError("--port needs at least one port")
        return ports
    port = one(value)
    if port is None:
        raise argparse.ArgumentTypeError("invalid port ''")
    return port, None


def _mode(value: str) -> int:
    """Permission bits in octal: ``660``, ``0o600``, ``0600``."""
    text = value[2:] if value.lower().startswith("0o") else value
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid mode {value!r} (octal, e.g. 660)") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"invalid mode {value!r} (from 0 to 777)")
    return mode


#: The core runs at most this many event loops.
MAX_LOOPS = 64

_LIMIT_FLAGS = {
    "max-request-line": ("max_request_line", int, "request line bytes (414 beyond)"),
    "max-header-size": ("max_header_size", int, "header block bytes (431 beyond)"),
    "max-header-fields": ("max_header_fields", int, "header fields (431 beyond)"),
    "max-body-size": ("max_body_size", int, "request body bytes (413 beyond)"),
    "header-timeout": ("header_timeout", float, "seconds to receive a request head (408)"),
    "keepalive-timeout": ("keepalive_timeout", float, "idle keep-alive seconds"),
    "worker-timeout": ("worker_timeout", float, "seconds a worker may take (504 beyond)"),
    "max-queue": ("max_queue", int, "requests waiting for a worker (503 beyond)"),
    "worker-pipeline": ("worker_pipeline", int, "requests handed to one worker at once (1-8)"),
    "max-connections": ("max_connections", int, "open connections"),
}

# Settings of whole numbers where 0 is meaningful (off).
_COUNT_FLAGS = {
    "max-requests": ("max_requests", "N",
                     "requests a worker answers before a fresh one replaces it; 0: never"),
    "max-requests-jitter": ("max_requests_jitter", "N",
                            "up to this many requests more, drawn per worker, so workers are "
                            "not all replaced at once"),
    "max-worker-memory": ("max_worker_memory", "MiB",
                          "resident memory above which a worker is replaced after its "
                          "request; 0: no limit"),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``krait`` command line; ``--help`` shows every option with its default."""
    from krait import __version__, config
    from krait._site import ACCESS_LOG_FORMATS

    cpus = os.cpu_count() or 1
    p = _Parser(prog="krait", description="Serve a Krait site: static files from C, "
                ".py scripts and .pyml templates from Python workers.")
    p.add_argument("--version", action="version", version=f"krait {__version__}")
    p.add_argument("site_root", nargs="?", help="the site's folder")
    p.add_argument("-r", "--site-root", dest="site_root_opt", help=argparse.SUPPRESS)
    p.add_argument("--wsgi", metavar="MODULE:APP", default=None,
                   help="serve this WSGI application alone (no site folder), imported from "
                        "the current directory, e.g. --wsgi myproject.wsgi:application "
                        "(default: none)")
    p.add_argument("--static", action="append", default=[], metavar="/PREFIX=DIR",
                   help="serve the files of folder DIR at URL prefix /PREFIX from the core "
                        "(never a worker: a .py there is sent as text), before the "
                        "application's or the site's routes; repeatable, e.g. "
                        "--static /static=./static (default: none)")
    p.add_argument("--host", default=DEFAULT_HOST, metavar="ADDR",
                   help="address to listen on: 127.0.0.1 is this machine only, 0.0.0.0 every "
                        "IPv4 interface, :: every interface (IPv6 and IPv4) "
                        f"(default: {DEFAULT_HOST})")
    p.add_argument("-p", "--port", type=_port_spec, default=None, metavar="PORT",
                   help="port, or HTTP/HTTPS like 8080/8443; 0 picks a free one; none when "
                        "--unix is given without it (default: 8080)")
    p.add_argument("--https-port", type=int, default=None, metavar="PORT",
                   help="HTTPS port (default: none)")
    p.add_argument("--unix", default=None, metavar="PATH",
                   help="also (or, without --port, only) listen on this Unix socket, for a "
                        "proxy on this machine (default: krait.config.unix_socket, none)")
    p.add_argument("--unix-mode", type=_mode, default=None, metavar="MODE",
                   help="the Unix socket's permissions, octal (default: "
                        "krait.config.unix_socket_mode, 660)")
    p.add_argument("-w", "--workers", type=int, default=cpus, metavar="N",
                   help=f"Python worker processes (default: the number of CPUs, {cpus} here)")
    p.add_argument("--loops", type=int, default=None, metavar="N",
                   help="event loops (threads) serving connections (default: krait.config.loops, "
                        "else $KRAIT_LOOPS, else the number of CPUs)")
    p.add_argument("--access-log", default="-", metavar="FILE|-|off",
                   help="access log file, '-' for standard output, 'off' for none "
                        "(default: -)")
    p.add_argument("--access-log-format", default=None, choices=ACCESS_LOG_FORMATS,
                   help="the access log's lines: 'combined' (Apache's Combined Log Format "
                        "plus the seconds taken) or 'json' (one JSON object per line) "
                        "(default: krait.config.access_log_format, combined)")
    p.add_argument("--debug", action="store_true",
                   help="show the debug page (traceback, source, request) on errors "
                        "(default: off)")
    p.add_argument("--reload", action="store_true",
                   help="restart workers when a .py file under the site changes "
                        "(default: off)")
    p.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDR",
                   help="a reverse proxy (address or network, or 'unix' for clients of the "
                        "Unix socket) whose X-Forwarded-For and "
                        "X-Forwarded-Proto are believed; repeatable (default: none)")
    p.add_argument("--proxy-protocol", action="store_true",
                   help="connections from a --trusted-proxy start with a PROXY protocol "
                        "header (v1 or v2, as HAProxy's send-proxy sends), which names the "
                        "client (default: off)")
    p.add_argument("--pubsub", default=None, metavar="URL",
                   help="relay WebSocket channels between the site's machines through this "
                        "Redis, e.g. redis://10.0.0.5:6379/0 (default: krait.config.pubsub, "
                        "none)")
    p.add_argument("--metrics", default=None, metavar="ADDR:PORT",
                   help="serve Prometheus metrics (/metrics) and a health check (/healthz) on "
                        "this address, never the site's port, e.g. 127.0.0.1:9100 "
                        "(default: krait.config.metrics, none)")
    for flag, (name, metavar, text) in _COUNT_FLAGS.items():
        p.add_argument(f"--{flag}", type=int, default=None, metavar=metavar,
                       help=f"{text} (default: krait.config.{name}, {getattr(config, name)})")
    for flag, (name, kind, text) in _LIMIT_FLAGS.items():
        default = getattr(config, name)
        p.add_argument(f"--{flag}", type=kind, default=None,
                       metavar="S" if kind is float else "N",
                       help=f"{text} (default: krait.config.{name}, {default:g})" if kind is float
                       else f"{text} (default: krait.config.{name}, {default})")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``krait`` console script and ``python -m krait``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    site_root = args.site_root or args.site_root_opt
    if args.wsgi is not None:
        if site_root:
            parser.error("--wsgi serves an application alone: give it or a site root, not both")
        module, sep, name = args.wsgi.partition(":")
        if not sep or not module or not name:
            parser.error(f"--wsgi {args.wsgi!r}: write package.module:app")
    elif not site_root:
        parser.error("the site root is required: krait <site-root> (or krait --wsgi MODULE:APP)")
    static = [_static_spec(parser, spec) for spec in args.static]
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    if args.loops is not None and not 1 <= args.loops <= MAX_LOOPS:
        parser.error(f"--loops must be from 1 to {MAX_LOOPS}, not {args.loops}")
    if not args.host.strip():
        parser.error("--host needs an address: 127.0.0.1 (this machine), 0.0.0.0 (every IPv4 "
                     "interface) or :: (every interface)")
    from krait.supervisor import Options, Supervisor

    http_port, https_port = args.port if args.port is not None else (8080, None)
    if args.unix is not None and not args.unix.strip():
        parser.error("--unix needs a path")
    limits = {}
    for flag, (name, _, _) in _LIMIT_FLAGS.items():
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            if not math.isfinite(value) or value <= 0:
                parser.error(f"--{flag} must be a positive number, not {value:g}")
            if flag == "max-header-fields" and value > 1000:
                parser.error("--max-header-fields may be at most 1000")
            limits[name] = value
    for flag, (name, _, _) in _COUNT_FLAGS.items():
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            if value < 0:
                parser.error(f"--{flag} must be 0 or more, not {value}")
            limits[name] = value
    if args.https_port is not None:
        if not 0 <= args.https_port <= 65535:
            parser.error(f"invalid port '{args.https_port}' for --https-port")
        https_port = args.https_port
    from krait._pubsub import URL_SCHEMES

    if args.pubsub is not None and not args.pubsub.startswith(URL_SCHEMES):
        parser.error(f"--pubsub {args.pubsub!r}: give a Redis URL, e.g. redis://host:6379/0")
    from krait._metrics import parse_address

    if args.metrics is not None:
        try:
            parse_address(args.metrics)
        except ValueError as exc:
            parser.error(f"--metrics: {exc}")
    from krait._proxy import parse_proxy

    for spec in args.trusted_proxy:
        try:
            parse_proxy(spec)
        except ValueError:
            parser.error(f"--trusted-proxy {spec!r} is not an address or network")
    if args.proxy_protocol and not args.trusted_proxy:
        parser.error("--proxy-protocol needs --trusted-proxy: the proxies whose connections "
                     "start with a PROXY header")
    opts = Options(site_root=site_root or "", host=args.host, port=http_port,
                   https_port=https_port, workers=args.workers, loops=args.loops,
                   access_log=args.access_log, access_log_format=args.access_log_format,
                   debug=args.debug, reload=args.reload,
                   limits=limits, trusted_proxies=list(args.trusted_proxy),
                   proxy_protocol=args.proxy_protocol,
                   pubsub=args.pubsub, port_given=args.port is not None, unix=args.unix,
                   unix_mode=args.unix_mode, static=static, metrics=args.metrics)
    if args.wsgi is None:
        return Supervisor(opts).run()
    opts.site_root = wsgi_site(args.wsgi, os.getcwd())
    opts.wsgi = args.wsgi
    opts.watch_dirs = [os.getcwd()]
    try:
        return Supervisor(opts).run()
    finally:
        shutil.rmtree(opts.site_root, ignore_errors=True)


def _static_spec(parser: argparse.ArgumentParser, spec: str) -> tuple[str, str]:
    """``--static /PREFIX=DIR`` as (prefix, absolute folder); a bad one exits 2 with one
    line."""
    from krait import config
    from krait.errors import ConfigError

    prefix, sep, folder = spec.partition("=")
    if not sep or not prefix or not folder:
        parser.error(f"--static {spec!r}: write /PREFIX=DIR, e.g. /static=./static")
    folder = os.path.abspath(os.path.expanduser(folder))
    try:
        route = config.Route(prefix=prefix, static_dir=folder)
    except ConfigError as exc:
        parser.error(f"--static {spec!r}: {exc.message}")
    if not os.path.exists(folder):
        parser.error(f"--static {spec!r}: no such folder: {folder}")
    if not os.path.isdir(folder):
        parser.error(f"--static {spec!r}: not a folder: {folder}")
    assert route.prefix is not None
    return route.prefix, folder


def wsgi_site(spec: str, app_dir: str) -> str:
    """``krait --wsgi``: an empty site in a temporary folder whose ``init.py`` puts
    ``app_dir`` first on ``sys.path`` (as gunicorn does with the current directory) and mounts
    the application at ``/``, so every path goes to it. Nothing of the site folder is served:
    the folder is empty, and the core never leaves it. Returns the folder (the caller removes
    it)."""
    root = tempfile.mkdtemp(prefix="krait-wsgi-")
    os.mkdir(os.path.join(root, ".py"))
    with open(os.path.join(root, ".py", "init.py"), "w", encoding="utf-8") as f:
        f.write("# Written by krait --wsgi: the application alone, mounted at /.\n"
                "import sys\n\n"
                "from krait import config\n\n"
                f"sys.path.insert(0, {app_dir!r})\n"
                f"route = config.Route(prefix='/', wsgi={spec!r})\n"
                "route.filename, route.lineno = 'krait --wsgi', None\n"
                "config.routes = [route]\n")
    return root


if __name__ == "__main__":
    sys.exit(main())
