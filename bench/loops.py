#!/usr/bin/env python3
"""Several cores: krait --loops 2 against krait --loops 1 and nginx with 2 worker processes.

Two parts, each with the three servers side by side in one run, taking turns (A, B, C, A, B,
C, ...) as in bench/static.py:

- static: a 1 KiB and a 1 MiB file over keep-alive HTTP, loaded by wrk. krait runs with
  ``--loops N --workers 1 --access-log off``; nginx with bench/static.py's configuration
  (sendfile, tcp_nopush, access_log off) but ``worker_processes 2``.
- tls: new HTTPS connections per second, loaded by bench/tlsload.c (built here with gcc):
  each connection a TCP connect, a full handshake (the client keeps no session, asks for no
  ticket, and every completed connection is checked not to be resumed), one ``GET
  /small.txt`` with ``Connection: close``, the whole response checked, close. A throwaway
  RSA-2048 certificate, the same for all; both servers as bench/static.py --https sets them up
  (TLS 1.2 and 1.3, krait's TLS 1.2 cipher list, server preference, kTLS asked for), proven
  alike with openssl s_client before measuring.

Reports requests (or connections) per second, the CPU seconds per request (or connection) of
each server's whole process tree, read from /proc, and the ratios, as Markdown tables; and,
for krait, the CPU of each thread of the master during each run (the loops) and the per-loop
split of requests and connections that krait logs at exit with more than one loop. Every run
goes to a JSON file.

Run by hand (never from CI), with the Python whose krait has ``--loops``, from a directory
outside any checkout: ``cd /tmp && /path/to/venv/bin/python /path/to/bench/loops.py``
(about 12 minutes with the defaults). wrk and tlsload run on the same machine and share its
CPUs with the server under test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import static  # noqa: E402
from common import HOST, Server, Servers, log  # noqa: E402

TLSLOAD_C = common.BENCH_DIR / "tlsload.c"
GCC = "gcc"
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror"]
SMALL = "/small.txt"
PARTS = ["static", "tls"]
K2, NG, K1 = "krait --loops 2", "nginx 2 workers", "krait --loops 1"
EXIT_LINE = re.compile(r"krait: loops served (.+)$", re.M)


# --------------------------------------------------------------------------- threads

def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of a process, by thread id."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        st = raw[raw.rindex(")") + 2:].split()
        out[int(tid)] = (int(st[11]) + int(st[12])) / common.CLK_TCK
    return out


def thread_split(pid: int, before: dict[int, float], after: dict[int, float],
                 duration: float) -> list[dict]:
    """The master's threads that used at least 1 % of a core between two samples, busiest
    first; the main thread (loop 0, which holds the workers) is marked."""
    rows = []
    for tid, cpu in after.items():
        cores = (cpu - before.get(tid, 0.0)) / duration
        if cores >= 0.01:
            rows.append({"tid": tid, "main": tid == pid, "cores": round(cores, 3)})
    return sorted(rows, key=lambda r: -r["cores"])


def fmt_threads(rows: list[dict]) -> str:
    return " + ".join(f"{r['cores']:.2f}{' (main)' if r['main'] else ''}" for r in rows) or "–"


def exit_split(server: Server) -> str | None:
    """The per-loop line krait logs at exit (with more than one loop), from its log."""
    if not server.log_path or not Path(server.log_path).exists():
        return None
    m = EXIT_LINE.findall(Path(server.log_path).read_text(errors="replace"))
    return m[-1] if m else None


def log_size(server: Server) -> int:
    return Path(server.log_path).stat().st_size if server.log_path else 0


def log_problems(server: Server, offset: int) -> list[str]:
    """Lines of a server's log after ``offset`` that look like errors (for the records; the
    set-up checks before, openssl s_client offering what the server refuses, are left out)."""
    if not server.log_path or not Path(server.log_path).exists():
        return []
    with open(server.log_path, "rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    bad = re.compile(r"error|fail|crit|alert|emerg|warn|traceback|stopped:", re.I)
    return [line for line in lines if bad.search(line)][:20]


# --------------------------------------------------------------------------- servers

def krait_source() -> str:
    """The checkout the krait we run comes from: its commit and whether it has changes."""
    p = subprocess.run([sys.executable, "-c", "import krait, os; "
                        "print(os.path.dirname(os.path.dirname(krait.__file__)))"],
                       capture_output=True, text=True, timeout=60, cwd="/")
    src = p.stdout.strip()
    if p.returncode != 0 or not src:
        return "unknown"
    head = common.command_version(["git", "-C", src, "rev-parse", "HEAD"])
    changed = common.command_version(["sh", "-c", f"git -C '{src}' --no-optional-locks status "
                                      "--porcelain --untracked-files=no | wc -l"])
    return f"{src} at {head} + {changed} modified files"


def has_loops_option() -> bool:
    p = subprocess.run([sys.executable, "-m", "krait", "--help"], capture_output=True,
                       text=True, timeout=60, cwd="/")
    return "--loops" in p.stdout


def krait_server(name: str, loops: int, root: Path, port: int, tmp: Path, version: str,
                 tls_ca: str | None) -> Server:
    port_arg = f"/{port}" if tls_ca else str(port)
    slug = name.replace(" ", "").replace("-", "")
    return Server(
        name, [sys.executable, "-m", "krait", str(root), "--host", HOST, "--port", port_arg,
               "--loops", str(loops), "--workers", "1", "--access-log", "off"],
        port, cwd=str(tmp), log_path=str(tmp / f"{slug}{'-tls' if tls_ca else ''}.log"),
        version=version, tls_ca=tls_ca,
        notes=f"--loops {loops} --workers 1: {loops} loop thread(s) in the master")


def nginx_server(root: Path, port: int, tmp: Path, version: str,
                 tls: tuple[Path, Path] | None, ca: str | None) -> Server:
    prefix = tmp / ("nginx-tls" if tls else "nginx")
    prefix.mkdir()
    conf_text = static.nginx_conf(prefix, port, root, tls)
    assert conf_text.count("worker_processes 1;") == 1
    conf_text = conf_text.replace("worker_processes 1;", "worker_processes 2;")
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    return Server(NG, [static.NGINX, "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"],
                  port, cwd=str(tmp), log_path=str(prefix / "stderr.log"), version=version,
                  stop_signal=15, tls_ca=ca, notes="bench/static.py's nginx.conf, "
                  "worker_processes 2")


def make_site(root: Path) -> dict[str, bytes]:
    """bench/static.py's site (1k.bin, 1m.bin) and small.txt, 512 bytes of text."""
    contents = static.make_site(root)
    small = (b"krait benchmark: a small text file, one per new TLS connection.\n" * 8)[:512]
    (root / SMALL.lstrip("/")).write_bytes(small)
    os.chmod(root / SMALL.lstrip("/"), 0o644)
    contents["small"] = small
    return contents


def stop_and_split(server: Server, splits: dict[str, dict[str, dict[str, str]]], part: str,
                   offset: int) -> None:
    """Stop a server; record krait's per-loop line and the log's error lines after
    ``offset``."""
    server.stop()
    line = exit_split(server)
    if line:
        splits["exit lines"].setdefault(part, {})[server.name] = line
    problems = log_problems(server, offset)
    if problems:
        splits["log lines"].setdefault(part, {})[server.name] = "\n".join(problems)


# --------------------------------------------------------------------------- static part

@dataclass
class StaticRun:
    result: common.WrkResult
    threads: list[dict] = field(default_factory=list)


def static_run(server: Server, test: str, path: str, conns: int, rnd: int,
               args: argparse.Namespace, quiet: common.Quiet) -> StaticRun:
    def run(attempt: int) -> StaticRun:
        t0 = thread_cpu(server.pid)
        s0 = time.monotonic()
        res = common.run_wrk(server, test, path, conns, args.threads, args.duration, rnd)
        elapsed = time.monotonic() - s0
        assert res is not None
        res.attempt = attempt
        threads = (thread_split(server.pid, t0, thread_cpu(server.pid), elapsed)
                   if server.name.startswith("krait") else [])
        common.log_result(res)
        if threads:
            log(f"      master threads (cores): {fmt_threads(threads)}")
        return StaticRun(res, threads)

    return common.run_quietly(run, quiet, lambda r: r.result.other_cores)


def static_part(servers: list[Server], args: argparse.Namespace,
                quiet: common.Quiet) -> list[StaticRun]:
    runs = []
    for test in args.sizes:
        path = static.FILES[test][0]
        for conns in args.connections:
            log(f"  == static {test}, {conns} connections ==")
            if args.warmup > 0:
                for server in servers:
                    common.run_wrk(server, test, path, conns, args.threads, args.warmup, 0,
                                   warmup=True)
            for rnd in range(1, args.rounds + 1):
                for server in servers:
                    runs.append(static_run(server, test, path, conns, rnd, args, quiet))
    return runs


# --------------------------------------------------------------------------- TLS part

@dataclass
class TlsResult:
    server: str
    round: int
    connections: int
    count: int
    duration_s: float
    server_cpu_s: float
    client_cpu_s: float
    other_cpu_s: float
    lat_p50_ms: float
    lat_p99_ms: float
    errors: dict[str, int]
    negotiated: str = ""
    first_errors: dict[str, str] = field(default_factory=dict)
    threads: list[dict] = field(default_factory=list)
    attempt: int = 1

    @property
    def rate(self) -> float:
        return self.count / self.duration_s

    @property
    def other_cores(self) -> float:
        return self.other_cpu_s / self.duration_s

    @property
    def cpu_us(self) -> float:
        return 1e6 * self.server_cpu_s / max(1, self.count)


def build_tlsload(tmp: Path) -> Path:
    out = tmp / "tlsload"
    cmd = [GCC, *CFLAGS, "-o", str(out), str(TLSLOAD_C), "-lssl", "-lcrypto", "-lpthread"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return out


def run_tlsload(tlsload: Path, server: Server, body: Path, rnd: int, duration: int,
                warmup: int, args: argparse.Namespace) -> TlsResult:
    cmd = [str(tlsload), "--host", HOST, "--port", str(server.port), "--path", SMALL,
           "--body", str(body), "--connections", str(args.tls_connections),
           "--threads", str(args.tls_threads), "--duration", str(duration),
           "--warmup", str(warmup)]
    pids = server.pids()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = after = None
    t0: dict[int, float] = {}
    t1: dict[int, float] = {}
    data = None
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        line = line.strip()
        if line == "TLSLOAD_T0":
            before = common.CpuSample.take(pids)
            t0 = thread_cpu(server.pid)
        elif line == "TLSLOAD_T1":
            after = common.CpuSample.take(pids)
            t1 = thread_cpu(server.pid)
        elif line.startswith("TLSLOAD_JSON "):
            data = json.loads(line.split(" ", 1)[1])
    err = proc.stderr.read()
    rc = proc.wait(timeout=60)
    if data is None or before is None or after is None:
        raise RuntimeError(f"tlsload against {server.name} failed (status {rc}): "
                           f"{err.strip() or 'no result'}; server log {server.log_path}")
    per_pid, busy = before.until(after)
    server_cpu = sum(per_pid.values())
    client_cpu = data["client_cpu_s"]
    dur = data["duration_s"]
    return TlsResult(
        server=server.name, round=rnd, connections=args.tls_connections,
        count=data["connections_done"], duration_s=dur, server_cpu_s=server_cpu,
        client_cpu_s=client_cpu, other_cpu_s=max(0.0, busy - server_cpu - client_cpu),
        lat_p50_ms=data["lat_p50_ms"], lat_p99_ms=data["lat_p99_ms"], errors=data["errors"],
        negotiated=data["negotiated"], first_errors=data["first_errors"],
        threads=(thread_split(server.pid, t0, t1, dur) if server.name.startswith("krait")
                 else []))


def log_tls(res: TlsResult) -> None:
    d = res.duration_s
    err = sum(res.errors.values())
    log(f"    tls c={res.connections:<3} round {res.round} {res.server:<16} {res.rate:>8,.0f} "
        f"conn/s  p50 {res.lat_p50_ms:6.2f} p99 {res.lat_p99_ms:6.2f} ms  CPU server "
        f"{res.server_cpu_s / d:4.2f} ({res.cpu_us:,.0f} µs/conn) tlsload "
        f"{res.client_cpu_s / d:4.2f} other {res.other_cores:4.2f}"
        + (f"  threads {fmt_threads(res.threads)}" if res.threads else "")
        + (f"  ERRORS {res.errors} {res.first_errors}" if err else ""))


def tls_part(servers: list[Server], tlsload: Path, body: Path, args: argparse.Namespace,
             quiet: common.Quiet) -> list[TlsResult]:
    log(f"  == tls: new connections, {args.tls_connections} in flight ==")
    if args.warmup > 0:
        for server in servers:
            run_tlsload(tlsload, server, body, 0, args.warmup, 1, args)
    results = []
    for rnd in range(1, args.rounds + 1):
        for server in servers:
            def run(attempt: int, server: Server = server, rnd: int = rnd) -> TlsResult:
                res = run_tlsload(tlsload, server, body, rnd, args.duration, 1, args)
                res.attempt = attempt
                log_tls(res)
                return res

            results.append(common.run_quietly(run, quiet, lambda r: r.other_cores))
    return results


# --------------------------------------------------------------------------- reporting

def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "–"


def thread_columns(runs: list[list[dict]]) -> str:
    """Mean cores of the busiest, second busiest and third busiest thread over some runs."""
    width = min(3, max((len(t) for t in runs), default=0))
    return " + ".join(f"{mean([t[i]['cores'] for t in runs if len(t) > i]):.2f}"
                      for i in range(width)) or "–"


def static_report(runs: list[StaticRun], args: argparse.Namespace) -> str:
    results = [r.result for r in runs]
    summaries = common.summarize(results, args.max_other)
    by_key = {(s.test, s.connections, s.server): s for s in summaries}
    rows = []
    for s in summaries:
        ng = by_key.get((s.test, s.connections, NG))
        k1 = by_key.get((s.test, s.connections, K1))
        us = mean(s.cpu_us)
        threads = [r.threads for r in runs if r.result.server == s.server
                   and r.result.test == s.test and r.result.connections == s.connections
                   and (r.result.other_cores <= args.max_other or not s.clean)]
        rows.append([
            s.test, str(s.connections), s.server, common.fmt_range(s.rps, ",.0f"),
            common.fmt_range(s.mib_s, ",.1f"), f"{mean(s.cpu):.2f}", thread_columns(threads),
            f"{us:.1f}",
            ratio(s.rps_mean, ng.rps_mean) if ng and s.server != NG else "–",
            ratio(s.rps_mean, k1.rps_mean) if k1 and s.server != K1 else "–",
            ratio(us, mean(k1.cpu_us)) if k1 and s.server != K1 else "–",
            s.runs_used, f"{max(s.other):.2f}", f"{mean(s.p99):.2f}", str(s.errors)])
    header = ["file", "conns", "server", "requests/s mean (min–max)", "MiB/s",
              "server CPU cores", "krait master threads (cores)", "server CPU µs/req",
              "req/s ÷ nginx 2", "req/s ÷ krait 1 loop", "µs/req ÷ krait 1 loop",
              "clean runs", "others' CPU max", "p99 ms", "errors"]
    title = (f"Static files: wrk -t{args.threads}, {args.duration:g} s per run, {args.rounds} "
             f"round(s) alternating servers, keep-alive")
    return f"\n{title}\n\n" + common.markdown_table(header, rows) + "\n"


def tls_report(results: list[TlsResult], args: argparse.Namespace) -> str:
    groups: dict[str, list[TlsResult]] = {}
    for r in results:
        groups.setdefault(r.server, []).append(r)
    used: dict[str, list[TlsResult]] = {}
    for name, runs in groups.items():
        used[name] = [r for r in runs if r.other_cores <= args.max_other] or runs
    rate = {name: mean([r.rate for r in runs]) for name, runs in used.items()}
    rows = []
    for name, runs in used.items():
        clean = sum(1 for r in groups[name] if r.other_cores <= args.max_other)
        rows.append([
            name, common.fmt_range([r.rate for r in runs], ",.0f"),
            f"{mean([r.server_cpu_s / r.duration_s for r in runs]):.2f}",
            thread_columns([r.threads for r in runs]),
            f"{mean([r.cpu_us for r in runs]):,.0f}",
            f"{mean([r.client_cpu_s / r.duration_s for r in runs]):.2f}",
            f"{mean([1e6 * r.client_cpu_s / max(1, r.count) for r in runs]):,.0f}",
            ratio(rate[name], rate[K1]) if K1 in rate and name != K1 else "–",
            ratio(rate[name], rate[NG]) if NG in rate and name != NG else "–",
            f"{clean}/{len(groups[name])}" if clean else f"0/{len(groups[name])} (all used)",
            f"{max(r.other_cores for r in runs):.2f}",
            f"{mean([r.lat_p50_ms for r in runs]):.1f}",
            f"{mean([r.lat_p99_ms for r in runs]):.1f}",
            str(sum(sum(r.errors.values()) for r in runs))])
    header = ["server", "new connections/s mean (min–max)", "server CPU cores",
              "krait master threads (cores)", "server CPU µs/conn", "tlsload cores",
              "tlsload µs/conn", "÷ krait 1 loop", "÷ nginx 2", "clean runs",
              "others' CPU max", "p50 ms", "p99 ms", "errors"]
    negotiated = sorted({r.negotiated for r in results if r.negotiated})
    title = (f"New TLS connections: tlsload, {args.tls_connections} connections in flight on "
             f"{args.tls_threads} thread(s), {args.duration:g} s per run, {args.rounds} round(s) "
             f"alternating servers; full handshake + GET {SMALL} + close each; negotiated "
             f"{'; '.join(negotiated) or '?'}")
    out = f"\n{title}\n\n" + common.markdown_table(header, rows) + "\n"
    if K2 in rate and K1 in rate:
        out += (f"\nTargets: krait --loops 2 ÷ krait --loops 1 = {rate[K2] / rate[K1]:.2f} "
                f"(≥ 1.7 asked)")
        if NG in rate:
            out += f"; krait --loops 2 ÷ nginx 2 workers = {rate[K2] / rate[NG]:.2f} (≥ 1.0 asked)"
        out += "\n"
    return out


def report(payload: dict, args: argparse.Namespace) -> str:
    out = ""
    if payload.get("static"):
        runs = [StaticRun(common.WrkResult(**{k: v for k, v in r["result"].items()
                                              if k in common.WrkResult.__dataclass_fields__}),
                          r["threads"]) for r in payload["static"]]
        out += static_report(runs, args)
    if payload.get("tls"):
        names = set(TlsResult.__dataclass_fields__)
        out += tls_report([TlsResult(**{k: v for k, v in r.items() if k in names})
                           for r in payload["tls"]], args)
    for part, lines in payload.get("exit lines", {}).items():
        for name, line in lines.items():
            out += f"\n{part}: {name}: {line}"
    for part, lines in payload.get("log lines", {}).items():
        for name, text in lines.items():
            out += f"\n{part}: {name} logged:\n    " + text.replace("\n", "\n    ")
    return out + "\n"


# --------------------------------------------------------------------------- main

def make_payload(info: dict[str, str], argv: list[str], args: argparse.Namespace,
                 servers: list[Server], static_runs: list[StaticRun],
                 tls_results: list[TlsResult], splits: dict) -> dict:
    return {
        "machine": info,
        "command": " ".join(["python", "bench/loops.py", *argv]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("report", "json")},
        "servers": [{"name": s.name, "cmd": s.cmd, "version": s.version, "notes": s.notes,
                     "keepalive": s.keepalive} for s in servers],
        "static": [{"result": dict(r.result.__dict__, rps=r.result.rps, mib_s=r.result.mib_s),
                    "threads": r.threads} for r in static_runs],
        "tls": [dict(r.__dict__, rate=r.rate, cpu_us=r.cpu_us) for r in tls_results],
        **splits,
    }


def main(argv: list[str]) -> int:
    p = common.driver_parser(__doc__)
    p.add_argument("--parts", default=",".join(PARTS), help="static,tls (both)")
    p.add_argument("--duration", type=int, default=10, help="measured seconds per run (10)")
    p.add_argument("--rounds", type=int, default=3,
                   help="runs per server and configuration, alternating servers (3)")
    p.add_argument("--warmup", type=int, default=2,
                   help="seconds of unmeasured load per server before each configuration (2)")
    p.add_argument("--connections", type=common.positive_ints, default=[50, 256],
                   help="static: comma-separated wrk connection counts (50,256)")
    p.add_argument("--threads", type=int, default=2, help="static: wrk threads (2)")
    p.add_argument("--sizes", default="1KiB,1MiB", help="static: files to load (1KiB,1MiB)")
    p.add_argument("--tls-connections", type=int, default=32,
                   help="tls: connections in flight (32)")
    p.add_argument("--tls-threads", type=int, default=1, help="tls: tlsload threads (1)")
    p.add_argument("--json", type=Path, default=common.BENCH_DIR / "results" / "loops.json",
                   help="where to write every run (bench/results/loops.json)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--report", type=Path, metavar="JSON",
                   help="only print the tables of an earlier run's results file")
    common.add_quiet_arguments(p)
    args = p.parse_args(argv)
    if args.report:
        payload = json.loads(args.report.read_text())
        for k, v in payload.get("settings", {}).items():
            setattr(args, k, v)
        common.print_machine(payload["machine"])
        print(report(payload, args))
        return 0
    parts = [x for x in args.parts.split(",") if x]
    args.sizes = [s for s in args.sizes.split(",") if s] if isinstance(args.sizes, str) \
        else args.sizes
    if any(x not in PARTS for x in parts) or any(s not in static.FILES for s in args.sizes):
        p.error("unknown part or size")
    if args.rounds < 1 or args.tls_connections < args.tls_threads or args.tls_threads < 1:
        p.error("--rounds and --tls-threads at least 1, --tls-connections at least "
                "--tls-threads")
    common.require(common.WRK, "apt-get install wrk")
    common.require(static.NGINX, "apt-get install nginx")
    common.require(GCC, "apt-get install gcc")
    common.require(common.OPENSSL, "apt-get install openssl")
    if not has_loops_option():
        raise SystemExit(f"{sys.executable} -m krait has no --loops option: run this with the "
                         "Python of a checkout that has it")

    info = common.machine_info()
    info["krait source"] = krait_source()
    info["nginx"] = common.command_version([static.NGINX, "-v"], r"nginx version: (\S+)")
    info["openssl"] = common.command_version([common.OPENSSL, "version"])
    info["kernel TLS"] = common.ktls_kernel()
    for k, v in info.items():
        log(f"{k:>12}: {v}")
    quiet = common.quiet_from_args(args)

    tmp = Path(tempfile.mkdtemp(prefix="krait-bench-loops-"))
    root = tmp / "site"
    contents = make_site(root)
    splits: dict[str, dict[str, dict[str, str]]] = {"exit lines": {}, "log lines": {}}
    static_runs: list[StaticRun] = []
    tls_results: list[TlsResult] = []
    all_servers: list[Server] = []
    started = time.monotonic()
    try:
        if "static" in parts:
            log("static files over HTTP")
            servers = [krait_server(K2, 2, root, common.free_port(), tmp, info["krait"], None),
                       nginx_server(root, common.free_port(), tmp, info["nginx"], None, None),
                       krait_server(K1, 1, root, common.free_port(), tmp, info["krait"], None)]
            all_servers += servers
            with Servers() as running:
                for server in servers:
                    running.start(server, SMALL)
                    for name, (path, _) in static.FILES.items():
                        common.check_response(server, path, contents[name])
                offsets = [log_size(server) for server in servers]
                static_runs = static_part(servers, args, quiet)
                for server, offset in zip(servers, offsets, strict=True):
                    stop_and_split(server, splits, "static", offset)
            # Saved now: a failure in the TLS part must not lose them.
            common.write_json(args.json, make_payload(info, argv, args, all_servers,
                                                      static_runs, [], splits))
        if "tls" in parts:
            log("new TLS connections")
            tlsload = build_tlsload(tmp)
            ca_path, cert, key = common.make_certificates(tmp / "tls", "rsa")
            ca = str(ca_path)
            info["certificate"] = common.certificate_summary(cert)
            log(f"certificate: {info['certificate']}")
            # krait takes the certificate from the site's .py/init.py: a copy of the site.
            troot = tmp / "site-tls"
            shutil.copytree(root, troot)
            (troot / ".py").mkdir()
            (troot / ".py" / "init.py").write_text(static.KRAIT_INIT.format(cert=str(cert),
                                                                            key=str(key)))
            os.chmod(troot, 0o755)
            servers = [krait_server(K2, 2, troot, common.free_port(), tmp, info["krait"], ca),
                       nginx_server(troot, common.free_port(), tmp, info["nginx"],
                                    (cert, key), ca),
                       krait_server(K1, 1, troot, common.free_port(), tmp, info["krait"], ca)]
            all_servers += servers
            body = troot / SMALL.lstrip("/")
            with Servers() as running:
                for server in servers:
                    running.start(server, SMALL)
                    common.check_response(server, SMALL, contents["small"])
                static.check_tls(servers, info)
                offsets = [log_size(server) for server in servers]
                tls_results = tls_part(servers, tlsload, body, args, quiet)
                for server, offset in zip(servers, offsets, strict=True):
                    stop_and_split(server, splits, "tls", offset)
    finally:
        common.remove_tmp(tmp, args.keep)
    common.runs_done(info, started)
    info["krait source after"] = krait_source()

    payload = make_payload(info, argv, args, all_servers, static_runs, tls_results, splits)
    common.write_json(args.json, payload)
    common.print_machine({k: v for k, v in info.items()
                          if k in ("krait source", "cpu", "nproc", "date", "certificate")})
    print(report(payload, args))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)
