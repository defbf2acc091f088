"""Shared helpers of the benchmark drivers (bench/static.py, bench/dynamic.py).

Run by hand only, never from CI or the tests. Everything listens on 127.0.0.1. Every process
started here is started in its own session and stopped by PID: first the PID we started, then any
process left in its process group (found in /proc), SIGTERM first and SIGKILL after a grace time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
WRK = "/usr/bin/wrk"
WRK_LUA = BENCH_DIR / "wrk_report.lua"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- processes

def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2:].split()


def _all_stats() -> dict[int, list[str]]:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            # st[0] is the state (field 3); zombies have exited already.
            if st is not None and st[0] != "Z":
                stats[int(entry)] = st
    return stats


def tree_pids(root: int) -> dict[int, str]:
    """The live processes of a server we started as ``root`` in a new session: its process
    group, plus every descendant (krait's workers, for one, run in sessions of their own).
    Maps PID to start time (field 22), so that a recycled PID is never mistaken for ours."""
    stats = _all_stats()
    # st[1] is the parent (field 4), st[2] the process group (field 5), st[19] the start time.
    found = {pid for pid, st in stats.items() if int(st[2]) == root}
    if root in stats:
        found.add(root)
    grew = True
    while grew:
        grew = False
        for pid, st in stats.items():
            if pid not in found and int(st[1]) in found:
                found.add(pid)
                grew = True
    return {pid: stats[pid][19] for pid in sorted(found)}


def still_alive(procs: dict[int, str]) -> list[int]:
    """Those of ``procs`` (PID → start time) that still run."""
    alive = []
    for pid, start in procs.items():
        st = _proc_stat(pid)
        if st is not None and st[0] != "Z" and st[19] == start:
            alive.append(pid)
    return alive


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    total = sum(fields[:8])
    idle = fields[3] + fields[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK


def wait_quiet(max_busy_cores: float, max_wait: float, sample: float = 1.0) -> float:
    """Wait until the machine is (nearly) idle, so that a run does not share the CPUs with
    someone else's work. Returns the busy cores seen last (may be above the limit after
    ``max_wait`` seconds; the run then goes ahead and its foreign CPU time is recorded)."""
    deadline = time.monotonic() + max_wait
    announced = False
    while True:
        b0, _ = machine_cpu()
        time.sleep(sample)
        b1, _ = machine_cpu()
        busy = (b1 - b0) / sample
        if busy <= max_busy_cores or time.monotonic() >= deadline:
            return busy
        if not announced:
            log(f"    machine busy ({busy:.2f} cores used by other processes); waiting "
                f"up to {max_wait:.0f} s for it to calm down")
            announced = True


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by these processes (utime, stime)."""
    total = 0
    for pid in pids:
        st = _proc_stat(pid)
        if st is not None:
            total += int(st[11]) + int(st[12])  # fields 14 and 15
    return total / CLK_TCK


@dataclass
class Server:
    """One server under test. ``cmd`` is started with ``start_new_session=True``."""

    name: str
    cmd: list[str]
    port: int
    cwd: str | None = None
    env: dict[str, str] | None = None
    stop_signal: int = signal.SIGTERM
    log_path: str | None = None
    version: str = ""
    notes: str = ""
    proc: subprocess.Popen | None = field(default=None, repr=False)
    keepalive: bool | None = None
    #: test name -> URL path, where this server's URL differs from the test's default one
    paths: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        log(f"  starting {self.name}: {' '.join(self.cmd)}")
        out = open(self.log_path or os.devnull, "wb")  # noqa: SIM115 - kept for the child
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        """The server's processes: the one we started, its process group and descendants."""
        if self.proc is None:
            return []
        return list(tree_pids(self.pid))

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def wait_ready(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}; "
                                   f"see {self.log_path}")
            try:
                status, _, _ = http_get(self.port, path, timeout=2.0)
                if status == 200:
                    return
                last = RuntimeError(f"status {status}")
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready on port {self.port} after {timeout}s: {last}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (or the server's own stop signal) to the PID we started; then SIGTERM and
        after ``grace`` seconds SIGKILL, by PID, to whatever is left of the processes it had
        (its process group and descendants, listed before the stop signal)."""
        if self.proc is None:
            return
        procs = tree_pids(self.pid)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            deadline = time.monotonic() + (min(grace, 3.0) if sig == signal.SIGTERM else grace)
            while still_alive(procs) and time.monotonic() < deadline:
                self.proc.poll()
                time.sleep(0.05)
            left = still_alive(procs)
            if not left:
                break
            log(f"  {self.name}: sending {sig.name} to leftover PIDs {left}")
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5.0)
        self.proc = None


class Servers:
    """Starts servers and guarantees they are stopped (also on Ctrl-C and SIGTERM)."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def __enter__(self) -> Servers:
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        signal.signal(signal.SIGHUP, _raise_keyboard_interrupt)
        return self

    def start(self, server: Server, ready_path: str) -> Server:
        self.started.append(server)
        server.start()
        server.wait_ready(ready_path)
        log(f"  {server.name} ready on {HOST}:{server.port}, PIDs {server.pids()}")
        return server

    def __exit__(self, *exc: object) -> None:
        for server in reversed(self.started):
            try:
                server.stop()
            except Exception as e:  # keep stopping the others
                log(f"  error stopping {server.name}: {e}")


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------- HTTP checks

def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed inside the body")
            body += chunk
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        raise ConnectionError("chunked response: the benchmark expects Content-Length")
    else:
        while chunk := sock.recv(65536):
            body += chunk
    return status, headers, body


def _request(path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").encode()


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(_request(path))
        return _read_response(sock)


def check_response(server: Server, path: str, expected: bytes) -> None:
    """The body must be exactly ``expected``; also records whether a second request on the same
    connection is answered (keep-alive), which decides how wrk's connections behave."""
    with socket.create_connection((HOST, server.port), timeout=5.0) as sock:
        sock.sendall(_request(path))
        status, headers, body = _read_response(sock)
        if status != 200 or body != expected:
            raise RuntimeError(f"{server.name} {path}: status {status}, {len(body)} bytes, "
                               f"expected 200 and {len(expected)} bytes")
        keepalive = True
        try:
            sock.sendall(_request(path))
            status2, _, body2 = _read_response(sock)
            keepalive = status2 == 200 and body2 == expected
        except OSError:
            keepalive = False
    if server.keepalive is None:
        server.keepalive = keepalive
    log(f"  {server.name} {path}: 200, {len(body)} bytes, keep-alive "
        f"{'yes' if keepalive else 'NO'}; headers: {', '.join(sorted(headers))}")


# --------------------------------------------------------------------------- wrk

@dataclass
class WrkResult:
    server: str
    test: str
    connections: int
    round: int
    requests: int
    bytes: int
    duration_s: float
    errors: dict[str, int]
    lat_mean_ms: float
    lat_p50_ms: float
    lat_p99_ms: float
    server_cpu_s: float
    wrk_cpu_s: float
    other_cpu_s: float
    attempt: int = 1

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def mib_s(self) -> float:
        return self.bytes / self.duration_s / 2**20

    @property
    def other_cores(self) -> float:
        return self.other_cpu_s / self.duration_s


@dataclass
class Quiet:
    """How to keep other work on the machine out of the numbers: before each run, wait up to
    ``max_wait`` s for the machine to use at most ``idle_cores``; after it, redo a run in which
    processes other than the server and wrk used more than ``max_other`` cores on average (at
    most ``retries`` times; the last attempt is kept and its foreign CPU is reported)."""

    idle_cores: float = 0.15
    max_wait: float = 300.0
    max_other: float = 0.10
    retries: int = 3


def run_wrk(server: Server, test: str, path: str, connections: int, threads: int,
            duration: int, rnd: int, warmup: bool = False) -> WrkResult | None:
    url = f"http://{HOST}:{server.port}{path}"
    cmd = [WRK, f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "--timeout", "5s",
           "-s", str(WRK_LUA), url]
    server_pids = server.pids()
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = cpu_seconds(server_pids)
    busy0, _ = machine_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    busy1, _ = machine_cpu()
    cpu1 = cpu_seconds(server_pids)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    m = re.search(r"^KRAIT_BENCH_JSON (\{.*\})$", proc.stdout, re.M)
    if m is None:
        raise RuntimeError(f"no summary in wrk output:\n{proc.stdout}")
    data = json.loads(m.group(1))
    if warmup:
        return None
    wrk_cpu = ((after_children.ru_utime + after_children.ru_stime)
               - (before_children.ru_utime + before_children.ru_stime))
    errors = {k: data[k] for k in ("connect", "read", "write", "status", "timeout")}
    server_cpu = cpu1 - cpu0
    return WrkResult(server=server.name, test=test, connections=connections, round=rnd,
                     requests=data["requests"], bytes=data["bytes"],
                     duration_s=data["duration_us"] / 1e6, errors=errors,
                     lat_mean_ms=data["lat_mean_us"] / 1000,
                     lat_p50_ms=data["lat_p50_us"] / 1000,
                     lat_p99_ms=data["lat_p99_us"] / 1000, server_cpu_s=server_cpu,
                     wrk_cpu_s=wrk_cpu,
                     other_cpu_s=max(0.0, (busy1 - busy0) - server_cpu - wrk_cpu))


def log_result(res: WrkResult) -> None:
    err = sum(res.errors.values())
    d = res.duration_s
    log(f"    {res.test:>6} c={res.connections:<3} round {res.round} {res.server:<16} "
        f"{res.rps:>9.0f} req/s {res.mib_s:>8.1f} MiB/s  p99 {res.lat_p99_ms:7.2f} ms  "
        f"CPU server {res.server_cpu_s / d:4.0%} wrk {res.wrk_cpu_s / d:4.0%} "
        f"other {res.other_cpu_s / d:4.0%}" + (f"  ERRORS {res.errors}" if err else ""))


def measured_run(server: Server, test: str, path: str, connections: int, threads: int,
                 duration: int, rnd: int, quiet: Quiet) -> WrkResult:
    for attempt in range(1, quiet.retries + 2):
        wait_quiet(quiet.idle_cores, quiet.max_wait)
        res = run_wrk(server, test, path, connections, threads, duration, rnd)
        assert res is not None
        res.attempt = attempt
        log_result(res)
        if res.other_cores <= quiet.max_other:
            break
        if attempt <= quiet.retries:
            log(f"    other processes used {res.other_cores:.2f} cores during the run: "
                f"discarded, redoing it")
    return res


def run_matrix(servers: Sequence[Server], tests: Sequence[tuple[str, str]],
               connections: Sequence[int], threads: int, duration: int, rounds: int,
               warmup: int, quiet: Quiet) -> list[WrkResult]:
    """For each (test, connections): a warm-up per server, then ``rounds`` rounds in which the
    servers take turns (A, B, C, A, B, C, ...), so that drift of the machine hits all alike."""
    results = []
    for test, path in tests:
        for conns in connections:
            log(f"  == {test}, {conns} connections ==")
            if warmup > 0:
                for server in servers:
                    run_wrk(server, test, server.paths.get(test, path), conns, threads, warmup,
                            0, warmup=True)
            for rnd in range(1, rounds + 1):
                for server in servers:
                    results.append(measured_run(server, test, server.paths.get(test, path),
                                                conns, threads, duration, rnd, quiet))
    return results


def add_quiet_arguments(p: argparse.ArgumentParser) -> None:
    q = Quiet()
    p.add_argument("--idle-cores", type=float, default=q.idle_cores,
                   help="before each run, wait until the machine uses at most this many cores "
                   f"({q.idle_cores})")
    p.add_argument("--max-wait", type=float, default=q.max_wait,
                   help=f"longest wait for that, in seconds ({q.max_wait:g})")
    p.add_argument("--max-other", type=float, default=q.max_other,
                   help="redo a run in which processes other than the server and wrk used more "
                   f"than this many cores ({q.max_other})")
    p.add_argument("--retries", type=int, default=q.retries,
                   help=f"redo a disturbed run at most this many times ({q.retries})")


def quiet_from_args(args: argparse.Namespace) -> Quiet:
    return Quiet(args.idle_cores, args.max_wait, args.max_other, args.retries)


# --------------------------------------------------------------------------- reporting

@dataclass
class Summary:
    server: str
    test: str
    connections: int
    rps: list[float]
    mib_s: list[float]
    cpu: list[float]
    p99: list[float]
    other: list[float]
    cpu_us: list[float]
    errors: int
    clean: int = 0
    total: int = 0

    @property
    def runs_used(self) -> str:
        return f"{self.clean}/{self.total}" if self.clean else f"0/{self.total} (all used)"

    @property
    def rps_mean(self) -> float:
        return statistics.fmean(self.rps)

    @property
    def mib_mean(self) -> float:
        return statistics.fmean(self.mib_s)


def summarize(results: Sequence[WrkResult], max_other: float) -> list[Summary]:
    """Per (test, connections, server): the runs during which other processes used at most
    ``max_other`` cores ("clean" runs), or all of them when none was clean (then
    ``Summary.clean`` is 0 and the row must be read with care)."""
    groups: dict[tuple[str, int, str], list[WrkResult]] = {}
    for r in results:
        groups.setdefault((r.test, r.connections, r.server), []).append(r)
    out = []
    for (test, conns, server), runs in groups.items():
        clean = [r for r in runs if r.other_cores <= max_other]
        used = clean or runs
        out.append(Summary(
            server, test, conns, rps=[r.rps for r in used], mib_s=[r.mib_s for r in used],
            cpu=[r.server_cpu_s / r.duration_s for r in used], p99=[r.lat_p99_ms for r in used],
            other=[r.other_cores for r in used],
            cpu_us=[1e6 * r.server_cpu_s / max(1, r.requests) for r in used],
            errors=sum(sum(r.errors.values()) for r in used), clean=len(clean), total=len(runs)))
    return out


def fmt_range(values: Sequence[float], spec: str) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return format(mean, spec)
    return f"{format(mean, spec)} ({format(min(values), spec)}–{format(max(values), spec)})"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def command_version(cmd: Sequence[str], pattern: str = r"(.+)") -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    m = re.search(pattern, (p.stdout + p.stderr).strip())
    return m.group(1).strip() if m else (p.stdout + p.stderr).strip().splitlines()[0]


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    krait_version = command_version(
        [sys.executable, "-c", "import importlib.metadata as m; print(m.version('krait'))"])
    return {
        "krait build": krait_build(),
        "date": time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "os": command_version(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "krait": krait_version,
        "wrk": command_version([WRK, "--version"], r"^(wrk \S+)"),
    }


def krait_build() -> str:
    """The commit krait was built from, whether the tree had changes, and a hash of the core
    (others may rebuild it while a benchmark runs: compare this before and after)."""
    import hashlib
    import importlib.util
    commit = command_version(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"])
    changed = command_version(["sh", "-c", f"git -C '{REPO_DIR}' --no-optional-locks status "
                               "--porcelain --untracked-files=no | wc -l"])
    core = "?"
    spec = importlib.util.find_spec("krait")
    if spec is not None and spec.origin:
        for so in sorted(Path(spec.origin).parent.glob("_native*.so")):
            core = f"{so.name} sha256:{hashlib.sha256(so.read_bytes()).hexdigest()[:12]}"
    return f"commit {commit} + {changed} modified files, {core}"


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    log(f"results written to {path}")


def results_payload(info: dict[str, str], argv: Sequence[str], servers: Sequence[Server],
                    results: Sequence[WrkResult], args: argparse.Namespace) -> dict:
    return {
        "machine": info,
        "command": " ".join(argv),
        "settings": {k: v for k, v in vars(args).items() if k not in ("report", "json")},
        "servers": [{"name": s.name, "cmd": s.cmd, "version": s.version, "notes": s.notes,
                     "keepalive": s.keepalive, "paths": s.paths} for s in servers],
        "runs": [dict(r.__dict__, rps=r.rps, mib_s=r.mib_s) for r in results],
    }


def load_results(path: Path, args: argparse.Namespace) -> tuple[dict, list[WrkResult]]:
    """Read a results file back (for --report); its settings override those in ``args``."""
    payload = json.loads(path.read_text())
    names = set(WrkResult.__dataclass_fields__)
    results = [WrkResult(**{k: v for k, v in run.items() if k in names})
               for run in payload["runs"]]
    for k, v in payload.get("settings", {}).items():
        if k in ("threads", "duration", "rounds", "workers", "max_other"):
            setattr(args, k, v)
    return payload, results


def print_machine(info: dict[str, str]) -> None:
    print("\n".join(f"- {k}: {v}" for k, v in info.items()))


def require(path: str, hint: str) -> None:
    if shutil.which(path) is None and not os.access(path, os.X_OK):
        raise SystemExit(f"{path} not found: {hint}")


def positive_ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v]
    if not values or min(values) <= 0:
        raise ValueError(text)
    return values

