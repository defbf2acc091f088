#!/usr/bin/env python3
"""WebSockets: krait against the websockets library (asyncio server) and Tornado (issue 5).

Two tests, both driven by the same C load generator, bench/wsload.c (built here with gcc into a
temporary directory):

- echo: N connections (--connections, 50), each sending a 32-byte text message and waiting for
  its echo before sending the next; round trips per second. Every server runs 2 processes
  (--echo-processes): krait --workers 2; websockets in 2 processes on one SO_REUSEPORT port;
  Tornado fork_processes(2) sharing one socket.
- broadcast: 100 subscribers (--subscribers) and 1 publisher; every 32-byte message the
  publisher sends goes to every subscriber; messages per second, each delivered to all 100,
  and deliveries (frames to subscribers) per second. At most --window (16) messages are in
  flight: message i leaves only once every subscriber has message i-16. Each message carries
  the publisher's send time; wsload reports the latency of every delivery (p50/p99) and of
  each message's completion (its last subscriber). Every server runs 1 process
  (--broadcast-processes): a room of ``krait.websockets.broadcast``, of websockets'
  ``broadcast()`` and of Tornado lives in one process, so with 2 the subscribers would be
  split between rooms. The exception is krait-channels: the channels of the core
  (``self.subscribe``, ``krait.websockets.publish``) reach every worker's connections, so it
  runs --channel-workers (2) workers, the subscribers spread over them.

Servers: krait (event style: on_in_message pushes the echo; broadcast with
krait.websockets.broadcast over a room of the worker's controllers), krait-channels (broadcast
only: /csub controllers subscribe to the core's channel "room", /cpub publishes each message on
it; the core fans it out), krait-master-counted (echo only:
the same with one worker fewer, so that the master and the workers together make the process
count the others run), krait-queue (echo only: the controller's thread pops each message and
pushes it back), websockets, tornado, and
tornado-reuseport (echo only: one SO_REUSEPORT socket per process instead of Tornado's shared
one, whose first awake process accepts a whole burst of connections). The apps are
bench/apps/krait_ws_site/, ws_websockets_app.py and ws_tornado_app.py. No permessage-deflate
anywhere: the client does not offer it, and wsload fails a server that answers with an
extension. wsload checks every frame, every echoed byte and the order of every broadcast
message; any error fails the run.

The competitors run from their own virtualenv (default /tmp/krait-ws-bench-venv; --setup
creates it), never from the project's dependencies. Per configuration the servers take turns
(krait, krait-queue, websockets, tornado, tornado-reuseport, krait, ...). The CPU time of each
server process is sampled from /proc exactly when wsload opens and closes its measured window.
Prints Markdown and writes every run to a JSON file.

Run by hand (never from CI): ``python bench/websocket.py --setup`` (about 7 minutes on a quiet
machine with the defaults). wsload runs on the same machine and by default shares its CPUs
with the servers (its CPU is reported); ``--pin 1:0`` gives it CPU 0 and the servers CPU 1, so
that what it spends does not come out of the server's share.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
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
from common import HOST, Server, Servers, log  # noqa: E402

APPS = common.BENCH_DIR / "apps"
WSLOAD_C = common.BENCH_DIR / "wsload.c"
DEFAULT_VENV = Path("/tmp/krait-ws-bench-venv")
COMPETITOR_PACKAGES = ["websockets", "tornado"]
ALL_SERVERS = ["krait", "krait-channels", "krait-master-counted", "krait-queue", "websockets",
               "tornado", "tornado-reuseport"]
TESTS = ["echo", "broadcast"]
#: test -> URL path of each endpoint (the publisher's is always /pub)
PATHS = {"echo": "/echo", "broadcast": "/sub"}
PUB_PATH = "/pub"
READY_PATH = "/ready"
GCC = "gcc"
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror"]


@dataclass
class WsResult:
    server: str
    test: str
    #: echo: connections; broadcast: subscribers (plus one publisher)
    connections: int
    processes: int
    round: int
    duration_s: float
    #: echo: round trips; broadcast: messages delivered to every subscriber
    count: int
    deliveries: int
    lat_p50_ms: float
    lat_p90_ms: float
    lat_p99_ms: float
    lat_max_ms: float
    server_cpu_s: float
    client_cpu_s: float
    other_cpu_s: float
    #: per server process: {"pid", "role", "cpu_s", "conns"}
    per_process: list[dict] = field(default_factory=list)
    per_conn_min: int = 0
    per_conn_max: int = 0
    attempt: int = 1
    #: broadcast: latency of every delivery, from the publisher's stamp (ms)
    dlat_p50_ms: float = 0.0
    dlat_p99_ms: float = 0.0
    dlat_max_ms: float = 0.0

    @property
    def rate(self) -> float:
        """Round trips per second (echo) or messages per second to all subscribers."""
        return self.count / self.duration_s

    @property
    def other_cores(self) -> float:
        return self.other_cpu_s / self.duration_s

    @property
    def cpu_us(self) -> float:
        """Server CPU µs per round trip (echo) or per message broadcast (broadcast)."""
        return 1e6 * self.server_cpu_s / max(1, self.count)

    @property
    def delivery_rate(self) -> float:
        """Broadcast: frames delivered to subscribers per second."""
        return self.deliveries / self.duration_s

    @property
    def cpu_ns_per_delivery(self) -> float:
        return 1e9 * self.server_cpu_s / max(1, self.deliveries)


def build_wsload(tmp: Path) -> Path:
    out = tmp / "wsload"
    cmd = [GCC, *CFLAGS, "-o", str(out), str(WSLOAD_C)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return out


def build_server(name: str, test: str, processes: int, venv: Path, tmp: Path,
                 info: dict[str, str], channel_workers: int = 2) -> Server | None:
    """One server for one test, or None (not installed; krait-queue has no broadcast,
    krait-channels no echo)."""
    port = common.free_port()
    logf = str(tmp / f"{name}-{test}.log")
    vpy = str(venv / "bin" / "python")
    if name == "krait-channels":
        if test != "broadcast":
            return None
        site = tmp / f"{name}-{test}-site"
        if not site.exists():
            shutil.copytree(APPS / "krait_ws_site", site)
        spread = tmp / f"{name}-spread"
        spread.mkdir(exist_ok=True)
        return Server(
            name, [sys.executable, "-m", "krait", str(site), "--host", HOST, "--port", str(port),
                   "--workers", str(channel_workers), "--access-log", "off"],
            port, cwd=str(tmp), env={"KRAIT_BENCH_SPREAD_DIR": str(spread)}, log_path=logf,
            version=info["krait"],
            notes=f"--workers {channel_workers}: /csub controllers self.subscribe('room'), "
                  "/cpub's on_in_message krait.websockets.publish('room', message); the core "
                  "fans each message out to the subscribers of every worker",
            paths={"broadcast": "/csub", "pub": "/cpub", "spread": str(spread)})
    if name in ("krait", "krait-master-counted", "krait-queue"):
        if name == "krait-queue" and test != "echo":
            return None
        workers = processes
        if name == "krait-master-counted":
            # The master is a busy process too: master + workers = the others' process count.
            if processes < 2:
                return None
            workers = processes - 1
        site = tmp / f"{name}-{test}-site"
        if not site.exists():
            shutil.copytree(APPS / "krait_ws_site", site)
        style = ("queue style: the controller's thread pops and pushes" if name == "krait-queue"
                 else "event style: on_in_message pushes")
        return Server(
            name, [sys.executable, "-m", "krait", str(site), "--host", HOST, "--port", str(port),
                   "--workers", str(workers), "--access-log", "off"],
            port, cwd=str(tmp), log_path=logf, version=info["krait"],
            notes=f"--workers {workers}: C loop in the master + {workers} Python "
                  f"worker(s); {style}",
            paths={"echo": "/echo-queue"} if name == "krait-queue" else {})
    if name == "tornado-reuseport" and test != "echo":
        return None  # one process: the same as tornado
    dist = name.split("-")[0]
    version = common.venv_version(venv, dist)
    if version is None:
        info[name] = "not installed (see --setup)"
        log(f"  {name}: not installed in {venv}; skipped")
        return None
    info[dist] = f"{dist} {version}"
    if name == "websockets":
        return Server(
            name, [vpy, str(APPS / "ws_websockets_app.py"), str(port), str(processes)],
            port, cwd=str(APPS), log_path=logf, version=f"websockets {version}",
            notes=f"{processes} forked processes, each an asyncio loop with "
                  "websockets.asyncio.server.serve(compression=None) on its own SO_REUSEPORT "
                  "socket; broadcast() for the room")
    if name in ("tornado", "tornado-reuseport"):
        reuse = name == "tornado-reuseport"
        return Server(
            name, [vpy, str(APPS / "ws_tornado_app.py"), str(port), str(processes),
                   "reuseport" if reuse else "shared"],
            port, cwd=str(APPS), log_path=logf, version=f"Tornado {version}",
            notes=(f"fork_processes({processes}) after binding {processes} SO_REUSEPORT sockets, "
                   "one per process" if reuse else
                   f"fork_processes({processes}) sharing one listening socket"
                   if processes > 1 else "one process") + "; WebSocketHandler, defaults")
    raise ValueError(name)


def expected_processes(server: Server, processes: int, channel_workers: int = 2) -> int:
    """krait: master + workers; the others: a parent that forks ``processes`` (Tornado with
    one process does not fork)."""
    if server.name == "krait-master-counted":
        return processes
    if server.name == "krait-channels":
        return channel_workers + 1
    if server.name.startswith("krait") or processes > 1 or server.name == "websockets":
        return processes + 1
    return 1


def wait_processes(server: Server, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(server.pids()) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name}: {len(server.pids())} processes, expected {n}")
        time.sleep(0.1)
    time.sleep(0.5)  # the last one forked may still be starting its loop


def roles(server: Server, pids: list[int]) -> dict[int, str]:
    root = server.pid
    if server.name.startswith("krait"):
        return {pid: "master" if pid == root else "worker" for pid in pids}
    if len(pids) == 1:
        return {pid: "process" for pid in pids}
    return {pid: "parent" if pid == root else "process" for pid in pids}


def run_wsload(wsload: Path, server: Server, test: str, conns: int, processes: int, rnd: int,
               args: argparse.Namespace) -> WsResult:
    path = server.paths.get(test, PATHS[test])
    pin = ["taskset", "-c", args.pin[1]] if args.pin else []
    cmd = [*pin, str(wsload), test, "--host", HOST, "--port", str(server.port), "--path", path,
           "--duration", str(args.duration), "--warmup", str(args.warmup),
           "--size", str(args.size)]
    if test == "echo":
        cmd += ["--connections", str(conns)]
    else:
        cmd += ["--pub-path", server.paths.get("pub", PUB_PATH), "--subscribers", str(conns),
                "--window", str(args.window)]
    pids = server.pids()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = after = None
    conns_at = {}
    data = None
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        line = line.strip()
        if line == "WSLOAD_T0":
            before = common.CpuSample.take(pids)
            conns_at = (subscribers_per_worker(server) if "spread" in server.paths
                        else common.established_per_pid(pids, server.port))
        elif line == "WSLOAD_T1":
            after = common.CpuSample.take(pids)
        elif line.startswith("WSLOAD_JSON "):
            data = json.loads(line.split(" ", 1)[1])
    err = proc.stderr.read()
    rc = proc.wait(timeout=60)
    if rc != 0 or data is None or before is None or after is None:
        raise RuntimeError(f"wsload against {server.name} failed (status {rc}): "
                           f"{err.strip() or 'no result'}; server log {server.log_path}")
    per_pid, busy = before.until(after)
    server_cpu = sum(per_pid.values())
    client_cpu = data["client_cpu_s"]
    role = roles(server, pids)
    return WsResult(
        server=server.name, test=test, connections=conns, processes=processes, round=rnd,
        duration_s=data["duration_s"],
        count=data["round_trips"] if test == "echo" else data["messages"],
        deliveries=data.get("deliveries", data.get("round_trips", 0)),
        lat_p50_ms=data["lat_p50_ms"], lat_p90_ms=data["lat_p90_ms"],
        lat_p99_ms=data["lat_p99_ms"], lat_max_ms=data["lat_max_ms"],
        server_cpu_s=server_cpu, client_cpu_s=client_cpu,
        other_cpu_s=max(0.0, busy - server_cpu - client_cpu),
        per_process=[{"pid": pid, "role": role[pid], "cpu_s": round(per_pid[pid], 3),
                      "conns": conns_at.get(pid, 0)} for pid in pids],
        per_conn_min=data.get("per_conn_min", 0), per_conn_max=data.get("per_conn_max", 0),
        dlat_p50_ms=data.get("dlat_p50_ms", 0.0), dlat_p99_ms=data.get("dlat_p99_ms", 0.0),
        dlat_max_ms=data.get("dlat_max_ms", 0.0))


def subscribers_per_worker(server: Server) -> dict[int, int]:
    """krait-channels: the /csub controllers each worker holds (the master holds every
    socket, so /proc cannot tell which worker accepted a connection; the site counts them in
    $KRAIT_BENCH_SPREAD_DIR/<pid>)."""
    out = {}
    for f in Path(server.paths["spread"]).iterdir():
        try:
            out[int(f.name)] = int(f.read_text() or 0)
        except (ValueError, OSError):
            pass
    return out


def attempt_run(wsload: Path, server: Server, test: str, conns: int, processes: int, rnd: int,
                args: argparse.Namespace, attempt: int) -> WsResult:
    res = run_wsload(wsload, server, test, conns, processes, rnd, args)
    res.attempt = attempt
    log_result(res)
    return res


def split(res: WsResult) -> str:
    """CPU cores of each server process, by role: 'master 0.41 + worker 0.52+0.47'."""
    by_role: dict[str, list[str]] = {}
    for p in res.per_process:
        cores = f"{p['cpu_s'] / res.duration_s:.2f}"
        if p["conns"] and (not res.server.startswith("krait") or res.server == "krait-channels"):
            cores += f" ({p['conns']}{'s' if res.server == 'krait-channels' else 'c'})"
        by_role.setdefault(p["role"], []).append(cores)
    return " + ".join(f"{role} {'+'.join(v)}" for role, v in by_role.items())


def log_result(res: WsResult) -> None:
    d = res.duration_s
    unit = "round trips/s" if res.test == "echo" else "messages/s"
    extra = ("" if res.test == "echo" else
             f" ({res.delivery_rate:,.0f} deliveries/s, each p50 {res.dlat_p50_ms:.2f} p99 "
             f"{res.dlat_p99_ms:.2f} ms)")
    log(f"    {res.test:>9} c={res.connections:<3} round {res.round} {res.server:<11} "
        f"{res.rate:>9,.0f} {unit}{extra}  p50 {res.lat_p50_ms:6.2f} p99 "
        f"{res.lat_p99_ms:6.2f} ms  "
        f"CPU server {res.server_cpu_s / d:4.2f} [{split(res)}] wsload "
        f"{res.client_cpu_s / d:4.2f} other {res.other_cores:4.2f}")


def parse_pin(text: str) -> tuple[str, str]:
    server, sep, client = text.partition(":")
    cpus = re.compile(r"^[0-9]+([-,][0-9]+)*$")
    if not sep or not cpus.match(server) or not cpus.match(client):
        raise argparse.ArgumentTypeError("expected SERVER_CPUS:WSLOAD_CPUS, e.g. 1:0")
    return server, client


def main(argv: list[str]) -> int:
    p = common.driver_parser(__doc__, DEFAULT_VENV)
    p.add_argument("--servers", default=",".join(ALL_SERVERS),
                   help=f"comma-separated, from {','.join(ALL_SERVERS)} (all)")
    p.add_argument("--tests", default=",".join(TESTS), help="echo,broadcast (both)")
    p.add_argument("--echo-processes", type=int, default=2,
                   help="processes (krait: workers) per server for echo (2)")
    p.add_argument("--broadcast-processes", type=int, default=1,
                   help="processes per server for broadcast (1: one room)")
    p.add_argument("--channel-workers", type=int, default=2,
                   help="krait-channels workers for broadcast (2: the core's channels reach "
                        "the subscribers of every worker)")
    p.add_argument("--connections", type=common.positive_ints, default=[50],
                   help="comma-separated echo connection counts (50)")
    p.add_argument("--subscribers", type=common.positive_ints, default=[100],
                   help="comma-separated broadcast subscriber counts (100)")
    p.add_argument("--window", type=int, default=16,
                   help="broadcast messages in flight at most (16)")
    p.add_argument("--size", type=int, default=32, help="message size in bytes (32)")
    p.add_argument("--duration", type=float, default=10, help="measured seconds per run (10)")
    p.add_argument("--warmup", type=float, default=2,
                   help="unmeasured seconds at the start of each run, same connections (2)")
    p.add_argument("--rounds", type=int, default=3,
                   help="runs per server and configuration, alternating servers (3)")
    p.add_argument("--json", type=Path, default=common.BENCH_DIR / "results" / "websocket.json",
                   help="where to write every run (bench/results/websocket.json)")
    p.add_argument("--pin", metavar="SERVER_CPUS:WSLOAD_CPUS", type=parse_pin,
                   help="run every server under taskset -c SERVER_CPUS and wsload under "
                        "taskset -c WSLOAD_CPUS (e.g. 1:0: the load generator gets a CPU of "
                        "its own instead of sharing both with the server); default: no pinning")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--report", type=Path, metavar="JSON",
                   help="only print the tables of an earlier run's results file")
    common.add_quiet_arguments(p)
    args = p.parse_args(argv)
    if args.report:
        payload, results = common.load_results(args.report, args, WsResult, settings=None)
        common.print_machine(payload["machine"])
        print(report(results, args))
        return 0
    names = [n for n in args.servers.split(",") if n]
    for n in names:
        if n not in ALL_SERVERS:
            p.error(f"unknown server {n!r}")
    tests = [t for t in args.tests.split(",") if t]
    for t in tests:
        if t not in TESTS:
            p.error(f"unknown test {t!r}")
    if args.rounds < 1 or args.size < 16 or args.window < 1:
        p.error("--rounds and --window must be at least 1, --size at least 16")
    common.require(GCC, "apt-get install gcc")
    if args.pin:
        common.require("taskset", "apt-get install util-linux")
    if args.setup:
        common.setup_venv(args.venv, COMPETITOR_PACKAGES)
    if any(not n.startswith("krait") for n in names) and \
            not (args.venv / "bin" / "python").exists():
        p.error(f"no virtualenv at {args.venv}: run with --setup")

    tmp = Path(tempfile.mkdtemp(prefix="krait-bench-ws-"))
    info = common.machine_info()
    del info["wrk"]
    info["wsload"] = (f"bench/wsload.c, {' '.join([GCC, *CFLAGS])}, "
                      + common.command_version([GCC, "--version"], r"^(.+)$"))
    quiet = common.quiet_from_args(args)
    results: list[WsResult] = []
    servers_seen: dict[str, Server] = {}
    started = time.monotonic()
    try:
        wsload = build_wsload(tmp)
        for test in tests:
            procs = args.echo_processes if test == "echo" else args.broadcast_processes
            servers = [s for n in names
                       if (s := build_server(n, test, procs, args.venv, tmp, info,
                                             args.channel_workers)) is not None]
            if args.pin:
                for s in servers:
                    s.cmd = ["taskset", "-c", args.pin[0], *s.cmd]
                    s.notes += f"; pinned to CPU {args.pin[0]}"
            if test == tests[0]:
                for k, v in info.items():
                    log(f"{k:>17}: {v}")
            log(f"== {test}: {procs} process(es) per server ==")
            with Servers() as running:
                for server in servers:
                    running.start(server, READY_PATH)
                    wait_processes(server, expected_processes(server, procs,
                                                              args.channel_workers))
                    servers_seen[f"{server.name} ({test})"] = server
                for conns in (args.connections if test == "echo" else args.subscribers):
                    log(f"  == {test}, {conns} {'connections' if test == 'echo' else 'subscribers'}"
                        " ==")
                    for rnd in range(1, args.rounds + 1):
                        for server in servers:
                            run = functools.partial(attempt_run, wsload, server, test, conns,
                                                    procs, rnd, args)
                            results.append(common.run_quietly(run, quiet,
                                                              lambda r: r.other_cores))
    finally:
        common.remove_tmp(tmp, args.keep)
    common.runs_done(info, started)
    servers = [dataclasses.replace(s, name=key, proc=None) for key, s in servers_seen.items()]
    payload = common.results_payload(info, ["python", "bench/websocket.py", *argv], servers,
                                     results, args)
    common.write_json(args.json, payload)
    print(report(results, args))
    return 0


def report(results: list[WsResult], args: argparse.Namespace) -> str:
    groups: dict[tuple[str, int], dict[str, list[WsResult]]] = {}
    for r in results:
        groups.setdefault((r.test, r.connections), {}).setdefault(r.server, []).append(r)
    out = []
    verdicts = []
    for (test, conns), by_server in groups.items():
        echo = test == "echo"
        used = {}
        for name, runs in by_server.items():
            clean = [r for r in runs if r.other_cores <= args.max_other]
            used[name] = (clean or runs, len(clean), len(runs))
        # echo: round trips/s; broadcast: deliveries/s (messages × subscribers: the count of a
        # window's completed messages is coarse when a server completes only 20 or 30)
        mean = {name: statistics.fmean(r.rate if echo else r.delivery_rate for r in runs)
                for name, (runs, _, _) in used.items()}
        # The reference row: krait; for broadcast krait-channels where it ran (the fastest)
        ref_name = "krait-channels" if not echo and "krait-channels" in mean else "krait"
        ref = mean.get(ref_name)
        rows = []
        for name in sorted(used, key=lambda n: -mean[n]):
            runs, clean, total = used[name]
            seconds = statistics.fmean(r.duration_s for r in runs)
            row = [name, str(runs[0].processes if name != "krait-channels"
                              else len(runs[0].per_process) - 1),
                   common.fmt_range([r.rate for r in runs], ",.0f")]
            if not echo:
                row.append(f"{statistics.fmean(r.delivery_rate for r in runs):,.0f}")
            row += [f"{statistics.fmean(r.server_cpu_s / r.duration_s for r in runs):.2f}",
                    f"{statistics.fmean(r.cpu_us for r in runs):.1f}"]
            if not echo:
                row.append(f"{statistics.fmean(r.cpu_ns_per_delivery for r in runs):,.0f}")
            row += [split(max(runs, key=lambda r: r.rate)),
                    f"{statistics.fmean(r.client_cpu_s for r in runs) / seconds:.2f}",
                    f"{clean}/{total}" if clean else f"0/{total} (all used)",
                    f"{max(r.other_cores for r in runs):.2f}"]
            if not echo:
                row += [f"{statistics.fmean(r.dlat_p50_ms for r in runs):.2f}",
                        f"{statistics.fmean(r.dlat_p99_ms for r in runs):.2f}",
                        f"{max(r.dlat_max_ms for r in runs):.1f}"]
            row += [f"{statistics.fmean(r.lat_p50_ms for r in runs):.2f}",
                    f"{statistics.fmean(r.lat_p99_ms for r in runs):.2f}"]
            if echo:
                row.append(f"{min(r.per_conn_min for r in runs):,}–"
                           f"{max(r.per_conn_max for r in runs):,}")
            row.append(f"{ref / mean[name]:.2f}" if ref and name != ref_name else "–")
            rows.append(row)
        header = ["server", "processes",
                  "round trips/s mean (min–max)" if echo else "messages/s mean (min–max)"]
        if not echo:
            header.append("deliveries/s (frames to subscribers)")
        header += ["server CPU cores", f"server CPU µs/{'round trip' if echo else 'message'}"]
        if not echo:
            header.append("server CPU ns/delivery")
        header += ["CPU cores per process (fastest run)", "wsload CPU cores", "clean runs",
                   "others' CPU max"]
        if echo:
            header += ["p50 ms", "p99 ms", "round trips per connection (min–max)"]
        else:
            header += ["delivery p50 ms", "delivery p99 ms", "delivery max ms",
                       "completion p50 ms", "completion p99 ms"]
        header.append(f"{ref_name}/this" + ("" if echo else " (deliveries/s)"))
        what = (f"{conns} connections" if echo
                else f"{conns} subscribers + 1 publisher, window {args.window}")
        pinned = (f"; servers pinned to CPU {args.pin[0]}, wsload to CPU {args.pin[1]}"
                  if getattr(args, "pin", None) else "; servers and wsload share every CPU")
        out.append(f"\n{test}, {what}, {args.size}-byte text messages, "
                   f"{args.duration:g} s measured after {args.warmup:g} s warm-up per run"
                   f"{pinned}\n\n"
                   + common.markdown_table(header, rows))
        others = {n: m for n, m in mean.items() if not n.startswith("krait")}
        if others:
            best = max(others, key=lambda n: others[n])
            target = 2 if echo else 5
            unit = "round trips/s" if echo else "deliveries/s (messages × subscribers)"
            for name in ("krait", "krait-channels"):
                if name in mean:
                    verdicts.append(
                        f"- {test}, {what}: {name} {mean[name]:,.0f} {unit}, fastest "
                        f"competitor {best} {others[best]:,.0f}: ratio "
                        f"{mean[name] / others[best]:.2f} (target ≥ {target})")
    return "\n".join(out) + "\n\n" + "\n".join(verdicts) + "\n"

if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)
