#!/usr/bin/env python3
"""Static files: krait against nginx, both with one worker / one loop thread.

Creates a temporary site with a 1 KiB and a 1 MiB file, starts ``krait --workers 1
--access-log off`` and nginx (1 worker process, sendfile on, tcp_nopush on, access_log off) on
127.0.0.1, and loads both with wrk over keep-alive connections. For every (file, connection
count) the servers take turns: krait, nginx, krait, nginx, ... Prints requests/s, throughput and
the ratio krait/nginx, as a Markdown table, and writes every run to a JSON file.

Run by hand (never from CI): ``python bench/static.py`` (about 5 minutes with the defaults).
wrk runs on the same machine and shares its CPUs with the server under test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import HOST, Server, Servers, log  # noqa: E402

NGINX = "/usr/sbin/nginx"

NGINX_CONF = """\
# Written by bench/static.py for one benchmark run.
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000000;
    keepalive_timeout 65s;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {host}:{port};
        root {root};
    }}
}}
"""

FILES = {"1KiB": ("/1k.bin", 1024), "1MiB": ("/1m.bin", 1024 * 1024)}


def make_site(root: Path) -> dict[str, bytes]:
    root.mkdir(mode=0o755)
    # nginx's worker drops root privileges: the site must be world-readable.
    os.chmod(root.parent, 0o755)
    contents = {}
    for name, (path, size) in FILES.items():
        data = os.urandom(size)
        (root / path.lstrip("/")).write_bytes(data)
        os.chmod(root / path.lstrip("/"), 0o644)
        contents[name] = data
    return contents


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Run by hand only. Everything listens on 127.0.0.1; every "
                                "process started is stopped by its PID.")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    p.add_argument("--rounds", type=int, default=3,
                   help="runs per server and configuration, alternating servers (3)")
    p.add_argument("--warmup", type=int, default=2,
                   help="seconds of unmeasured load per server before each configuration (2)")
    p.add_argument("--connections", type=common.positive_ints, default=[50, 256],
                   help="comma-separated connection counts (50,256)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--sizes", default="1KiB,1MiB", help="files to load: 1KiB,1MiB")
    p.add_argument("--only", choices=["krait", "nginx"], help="run one server only")
    p.add_argument("--json", type=Path, default=common.BENCH_DIR / "results" / "static.json",
                   help="where to write every run (bench/results/static.json)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--report", type=Path, metavar="JSON",
                   help="only print the tables of an earlier run's results file")
    common.add_quiet_arguments(p)
    args = p.parse_args(argv)
    if args.report:
        payload, results = common.load_results(args.report, args)
        common.print_machine(payload["machine"])
        print(report(results, args))
        return 0
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    sizes = [s for s in args.sizes.split(",") if s]
    for s in sizes:
        if s not in FILES:
            p.error(f"unknown size {s!r}")

    common.require(common.WRK, "apt-get install wrk")
    common.require(NGINX, "apt-get install nginx")
    info = common.machine_info()
    info["nginx"] = common.command_version([NGINX, "-v"], r"nginx version: (\S+)")
    for k, v in info.items():
        log(f"{k:>8}: {v}")

    tmp = Path(tempfile.mkdtemp(prefix="krait-bench-static-"))
    root = tmp / "site"
    contents = make_site(root)
    servers: list[Server] = []
    kport, nport = common.free_port(), common.free_port()
    if args.only != "nginx":
        servers.append(Server(
            "krait", [sys.executable, "-m", "krait", str(root), "--host", HOST,
                      "--port", str(kport), "--workers", "1", "--access-log", "off"],
            kport, cwd=str(tmp), log_path=str(tmp / "krait.log"), version=info["krait"]))
    if args.only != "krait":
        prefix = tmp / "nginx"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, host=HOST, port=nport, root=root))
        servers.append(Server(
            "nginx", [NGINX, "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"],
            nport, cwd=str(tmp), log_path=str(prefix / "stderr.log"), version=info["nginx"],
            stop_signal=15))

    tests = [(s, FILES[s][0]) for s in sizes]
    started = time.monotonic()
    try:
        with Servers() as running:
            for server in servers:
                running.start(server, FILES["1KiB"][0])
                for name, (path, _) in FILES.items():
                    common.check_response(server, path, contents[name])
            results = common.run_matrix(servers, tests, args.connections, args.threads,
                                        args.duration, args.rounds, args.warmup,
                                        common.quiet_from_args(args))
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"total time {time.monotonic() - started:.0f} s")
    info["krait build after"] = common.krait_build()

    payload = common.results_payload(info, ["python", "bench/static.py", *argv], servers, results,
                                     args)
    common.write_json(args.json, payload)
    print(report(results, args))
    return 0


def report(results: list[common.WrkResult], args: argparse.Namespace) -> str:
    summaries = common.summarize(results, args.max_other)
    by_key = {(s.test, s.connections, s.server): s for s in summaries}
    rows = []
    for s in summaries:
        ref = by_key.get((s.test, s.connections, "nginx"))
        ratio_rps = ratio_tp = "–"
        if ref is not None and s.server != "nginx":
            ratio_rps = f"{s.rps_mean / ref.rps_mean:.2f}"
            ratio_tp = f"{s.mib_mean / ref.mib_mean:.2f}"
        rows.append([s.test, str(s.connections), s.server,
                     common.fmt_range(s.rps, ",.0f"), common.fmt_range(s.mib_s, ",.1f"),
                     f"{sum(s.cpu) / len(s.cpu):.2f}", f"{statistics.fmean(s.cpu_us):.1f}",
                     s.runs_used, f"{max(s.other):.2f}",
                     f"{sum(s.p99) / len(s.p99):.2f}", str(s.errors), ratio_rps, ratio_tp])
    header = ["file", "conns", "server", "requests/s mean (min–max)", "MiB/s mean (min–max)",
              "server CPU cores", "server CPU µs/req", "clean runs", "others' CPU max",
              "p99 ms", "errors",
              "krait/nginx req/s", "krait/nginx MiB/s"]
    title = (f"wrk -t{args.threads}, {args.duration:g} s per run, {args.rounds} rounds "
             f"alternating servers, keep-alive")
    return f"\n{title}\n\n" + common.markdown_table(header, rows) + "\n"


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)
