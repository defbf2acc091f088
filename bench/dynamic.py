#!/usr/bin/env python3
"""Dynamic pages: krait's Python workers against other Python servers, 2 workers each.

Two pages: /hello answers the 12 bytes "Hello world!", /8k answers 8 KiB. Served by:

- krait --workers 2 (a site with hello.py and 8k.py, bench/apps/krait_site/),
- uWSGI + Flask (--processes 2, HTTP/1.1 keep-alive socket),
- gunicorn + Flask (2 sync workers: they close the connection after every response),
- Tornado (2 processes from tornado.process.fork_processes),
- granian (a plain WSGI callable, --workers 2),
- karlooper (2 processes on one SO_REUSEPORT port; it closes every connection).

The competitors run from a separate virtualenv (default /tmp/krait-bench-venv; --setup creates
it), never from the project's dependencies. For every (page, connection count) the servers take
turns: krait, uwsgi, gunicorn, ..., krait, uwsgi, ... Prints requests/s and krait's ratio to the
fastest competitor as Markdown, and writes every run to a JSON file.

Run by hand (never from CI): ``python bench/dynamic.py --setup`` (about 10 minutes with the
defaults). wrk runs on the same machine and shares its CPUs with the servers.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import HOST, Server, Servers, log  # noqa: E402

APPS = common.BENCH_DIR / "apps"
DEFAULT_VENV = Path("/tmp/krait-bench-venv")
COMPETITOR_PACKAGES = ["flask", "gunicorn", "uwsgi", "tornado", "granian", "karlooper"]
ALL_SERVERS = ["krait", "uwsgi", "gunicorn", "tornado", "granian", "karlooper", "krait-py-url",
               "uwsgi-close"]
DEFAULT_SERVERS = ALL_SERVERS[:6]
PAGES = {"hello": ("/hello", b"Hello world!"), "8KiB": ("/8k", b"x" * 8192)}
#: krait-py-url: the same krait, asked for /hello.py and /8k.py (no extension search)
PY_URLS = {"hello": "/hello.py", "8KiB": "/8k.py"}


def setup_venv(venv: Path) -> None:
    """Create the competitors' virtualenv and install them (uWSGI is compiled: needs gcc)."""
    common.setup_venv(venv, COMPETITOR_PACKAGES)


venv_version = common.venv_version


def venv_imports(venv: Path, module: str) -> str | None:
    """None if ``module`` imports in the venv's Python, else the error."""
    p = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {module}"],
                       capture_output=True, text=True, timeout=60)
    return None if p.returncode == 0 else (p.stderr.strip().splitlines() or ["?"])[-1]


def build_servers(names: list[str], venv: Path, tmp: Path, workers: int,
                  info: dict[str, str]) -> list[Server]:
    vbin = venv / "bin"
    vpy = str(vbin / "python")
    servers = []
    for name in names:
        port = common.free_port()
        logf = str(tmp / f"{name}.log")
        if name in ("krait", "krait-py-url"):
            site = tmp / f"{name}_site"
            shutil.copytree(APPS / "krait_site", site)
            py_url = name == "krait-py-url"
            servers.append(Server(
                name, [sys.executable, "-m", "krait", str(site), "--host", HOST,
                       "--port", str(port), "--workers", str(workers), "--access-log", "off"],
                port, cwd=str(tmp), log_path=logf, version=info["krait"],
                notes=f"--workers {workers}: C loop in the master + {workers} Python workers"
                      + ("; URLs /hello.py and /8k.py" if py_url else ""),
                paths=dict(PY_URLS) if py_url else {}))
            continue
        dist = {"uwsgi": "uWSGI", "uwsgi-close": "uWSGI"}.get(name, name)
        version = venv_version(venv, dist)
        if version is None:
            info[name] = "not installed (see --setup)"
            log(f"  {name}: not installed in {venv}; skipped")
            continue
        if name in ("uwsgi", "uwsgi-close"):
            # --http11-socket keeps connections alive, but each process then serves one
            # connection until the client closes it: with more connections than processes, the
            # others wait in the accept queue. --http-socket closes after every response.
            keep = name == "uwsgi"
            flask = venv_version(venv, "flask")
            servers.append(Server(
                "uwsgi+flask" if keep else "uwsgi+flask close",
                [str(vbin / "uwsgi"), "--http11-socket" if keep else "--http-socket",
                 f"{HOST}:{port}", "--master", "--processes", str(workers), "--threads", "1",
                 "--chdir", str(APPS), "--wsgi-file", "flask_app.py", "--callable", "app",
                 "--need-app", "--disable-logging", "--die-on-term", "--listen", "1024",
                 "--virtualenv", str(venv)],
                port, cwd=str(APPS), log_path=logf, version=f"uWSGI {version}, Flask {flask}",
                notes=f"--processes {workers}, " + (
                    "--http11-socket (keep-alive: one connection per process at a time)" if keep
                    else "--http-socket (a connection per request)")))
        elif name == "gunicorn":
            flask = venv_version(venv, "flask")
            servers.append(Server(
                "gunicorn+flask", [str(vbin / "gunicorn"), "--workers", str(workers),
                                   "--worker-class", "sync", "--bind", f"{HOST}:{port}",
                                   "--chdir", str(APPS), "flask_app:app"],
                port, cwd=str(APPS), log_path=logf,
                version=f"gunicorn {version}, Flask {flask}",
                notes=f"{workers} sync workers (no keep-alive: one connection per request)"))
        elif name == "tornado":
            servers.append(Server(
                "tornado", [vpy, str(APPS / "tornado_app.py"), str(port), str(workers)],
                port, cwd=str(APPS), log_path=logf, version=f"Tornado {version}",
                notes=f"fork_processes({workers}) sharing one listening socket"))
        elif name == "granian":
            servers.append(Server(
                "granian", [str(vbin / "granian"), "--interface", "wsgi", "--host", HOST,
                            "--port", str(port), "--workers", str(workers), "--http", "1",
                            "--no-ws", "wsgi_app:app"],
                port, cwd=str(APPS), log_path=logf, version=f"granian {version}",
                notes=f"--workers {workers}, plain WSGI callable, other options default"))
        elif name == "karlooper":
            err = venv_imports(venv, "karlooper.web.application")
            if err is not None:
                info["karlooper"] = f"{version} installed but does not import: {err}"
                log(f"  karlooper: {info['karlooper']}; skipped")
                continue
            servers.append(Server(
                "karlooper", [vpy, str(APPS / "karlooper_app.py"), str(port), str(workers)],
                port, cwd=str(tmp), log_path=logf, version=f"karlooper {version}",
                notes=f"{workers} forked processes on one SO_REUSEPORT port; closes every "
                      "connection after the response"))
        info[name] = servers[-1].version
    return servers


def main(argv: list[str]) -> int:
    p = common.driver_parser(__doc__, DEFAULT_VENV)
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                   help=f"comma-separated, from {','.join(ALL_SERVERS)} "
                   f"({','.join(DEFAULT_SERVERS)}); krait-py-url is krait asked for "
                   "/hello.py instead of /hello")
    p.add_argument("--workers", type=int, default=2, help="worker processes per server (2)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    p.add_argument("--rounds", type=int, default=2,
                   help="runs per server and configuration, alternating servers (2)")
    p.add_argument("--warmup", type=int, default=2,
                   help="seconds of unmeasured load per server before each configuration (2)")
    p.add_argument("--connections", type=common.positive_ints, default=[50, 256],
                   help="comma-separated connection counts (50,256)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--pages", default="hello,8KiB", help="pages to load: hello,8KiB")
    p.add_argument("--json", type=Path, default=common.BENCH_DIR / "results" / "dynamic.json",
                   help="where to write every run (bench/results/dynamic.json)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--report", type=Path, metavar="JSON",
                   help="only print the tables of an earlier run's results file")
    common.add_quiet_arguments(p)
    args = p.parse_args(argv)
    if args.report:
        payload, results = common.load_results(args.report, args)
        common.print_machine(payload["machine"])
        servers = [Server(s["name"], s["cmd"], 0, keepalive=s["keepalive"])
                   for s in payload["servers"]]
        print(report(results, servers, args))
        return 0
    names = [n for n in args.servers.split(",") if n]
    for n in names:
        if n not in ALL_SERVERS:
            p.error(f"unknown server {n!r}")
    pages = [n for n in args.pages.split(",") if n]
    for n in pages:
        if n not in PAGES:
            p.error(f"unknown page {n!r}")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")

    common.require(common.WRK, "apt-get install wrk")
    if args.setup:
        setup_venv(args.venv)
    competitors = [n for n in names if not n.startswith("krait")]
    if competitors and not (args.venv / "bin" / "python").exists():
        p.error(f"no virtualenv at {args.venv}: run with --setup")
    info = common.machine_info()

    tmp = Path(tempfile.mkdtemp(prefix="krait-bench-dynamic-"))
    servers = build_servers(names, args.venv, tmp, args.workers, info)
    for k, v in info.items():
        log(f"{k:>11}: {v}")
    tests = [(n, PAGES[n][0]) for n in pages]
    started = time.monotonic()
    try:
        with Servers() as running:
            for server in servers:
                running.start(server, server.paths.get("hello", PAGES["hello"][0]))
                for page, (path, body) in PAGES.items():
                    common.check_response(server, server.paths.get(page, path), body)
            results = common.run_matrix(servers, tests, args.connections, args.threads,
                                        args.duration, args.rounds, args.warmup,
                                        common.quiet_from_args(args))
    finally:
        common.remove_tmp(tmp, args.keep)
    common.runs_done(info, started)

    payload = common.results_payload(info, ["python", "bench/dynamic.py", *argv], servers,
                                     results, args)
    common.write_json(args.json, payload)
    print(report(results, servers, args))
    return 0


def report(results: list[common.WrkResult], servers: list[Server],
           args: argparse.Namespace) -> str:
    summaries = common.summarize(results, args.max_other)
    keepalive = {s.name: s.keepalive for s in servers}
    groups: dict[tuple[str, int], list[common.Summary]] = {}
    for s in summaries:
        groups.setdefault((s.test, s.connections), []).append(s)
    rows = []
    verdicts = []
    for (test, conns), group in groups.items():
        krait = next((s for s in group if s.server == "krait"), None)
        others = [s for s in group if not s.server.startswith("krait")]
        fastest = max(others, key=lambda s: s.rps_mean, default=None)
        for s in sorted(group, key=lambda s: -s.rps_mean):
            ratio = f"{krait.rps_mean / s.rps_mean:.2f}" if krait and s is not krait else "–"
            ka = keepalive.get(s.server)
            rows.append([test, str(conns), s.server, common.fmt_range(s.rps, ",.0f"),
                         common.fmt_range(s.mib_s, ",.2f"), f"{sum(s.cpu) / len(s.cpu):.2f}",
                         f"{statistics.fmean(s.cpu_us):.0f}",
                         s.runs_used, f"{max(s.other):.2f}", f"{sum(s.p99) / len(s.p99):.2f}",
                         str(s.errors), "yes" if ka else "no" if ka is False else "?", ratio])
        if krait and fastest:
            verdicts.append(f"- {test}, {conns} connections: krait {krait.rps_mean:,.0f} req/s, "
                            f"fastest competitor {fastest.server} {fastest.rps_mean:,.0f} req/s: "
                            f"ratio {krait.rps_mean / fastest.rps_mean:.2f}")
    header = ["page", "conns", "server", "requests/s mean (min–max)", "MiB/s",
              "server CPU cores", "server CPU µs/req", "clean runs", "others' CPU max",
              "p99 ms", "errors",
              "keep-alive", "krait/this"]
    title = (f"wrk -t{args.threads}, {args.duration} s per run, {args.rounds} rounds "
             f"alternating servers, {args.workers} workers each")
    return (f"\n{title}\n\n" + common.markdown_table(header, rows) + "\n\n"
            + "\n".join(verdicts) + "\n")


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)
