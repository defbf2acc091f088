"""Shared helpers of the benchmark drivers (bench/static.py, bench/dynamic.py).

Run by hand only, never from CI or the tests. Everything listens on 127.0.0.1. Every process
started here is started in its own session and stopped by PID: first the PID we started, then any
process left in its process group (found in /proc), SIGTERM first and SIGKILL after a grace time.

A server with ``Server.tls_ca`` set is reached over HTTPS (checks verify its certificate against
that CA; wrk gets an ``https://`` URL). ``make_certificates``, ``tls_probe``, ``tls_accepted``
and the ``ktls_*`` helpers serve the HTTPS benchmark (``bench/static.py --https``).
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
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
WRK = "/usr/bin/wrk"
OPENSSL = "/usr/bin/openssl"
WRK_LUA = BENCH_DIR / "wrk_report.lua"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
R = TypeVar("R")


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


def cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds used so far by each of these processes (0 once gone)."""
    out = {}
    for pid in pids:
        st = _proc_stat(pid)
        out[pid] = (int(st[11]) + int(st[12])) / CLK_TCK if st is not None else 0.0
    return out


@dataclass
class CpuSample:
    """The CPU times of some processes and of the whole machine at one moment: two samples
    around a measured window give each process's CPU and the machine's (see :meth:`until`)."""

    at: float
    per_pid: dict[int, float]
    busy: float

    @classmethod
    def take(cls, pids: Iterable[int]) -> CpuSample:
        return cls(time.monotonic(), cpu_by_pid(pids), machine_cpu()[0])

    def until(self, later: CpuSample) -> tuple[dict[int, float], float]:
        """CPU seconds used between this sample and ``later``: per process, and by the
        whole machine."""
        return ({pid: later.per_pid.get(pid, cpu) - cpu for pid, cpu in self.per_pid.items()},
                later.busy - self.busy)


def established_per_pid(pids: Iterable[int], port: int) -> dict[int, int]:
    """How many ESTABLISHED TCP connections to local ``port`` (IPv4) each process holds open,
    from /proc/net/tcp and the processes' file descriptors: where a multi-process server's
    connections landed."""
    inodes = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    out = {}
    for pid in pids:
        n = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        n += 1
        out[pid] = n
    return out


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
    #: the CA (PEM file) that signed the server's certificate: set when it speaks HTTPS only
    tls_ca: str | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_ca else "http"

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
                status, _, _ = http_get(self.port, path, timeout=2.0, tls_ca=self.tls_ca)
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


def connect(port: int, timeout: float, tls_ca: str | None = None) -> socket.socket:
    """A connection to 127.0.0.1:port; with ``tls_ca``, a TLS one whose certificate (for the
    address 127.0.0.1) must be signed by that CA."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    if tls_ca is None:
        return sock
    try:
        return ssl.create_default_context(cafile=tls_ca).wrap_socket(sock, server_hostname=HOST)
    except BaseException:
        sock.close()
        raise


def http_get(port: int, path: str, timeout: float = 5.0,
             tls_ca: str | None = None) -> tuple[int, dict[str, str], bytes]:
    with connect(port, timeout, tls_ca) as sock:
        sock.sendall(_request(path))
        return _read_response(sock)


def check_response(server: Server, path: str, expected: bytes) -> None:
    """The body must be exactly ``expected``; also records whether a second request on the same
    connection is answered (keep-alive), which decides how wrk's connections behave."""
    tls = ""
    with connect(server.port, 5.0, server.tls_ca) as sock:
        if isinstance(sock, ssl.SSLSocket):
            tls = f"; over {sock.version()} {sock.cipher()[0]}"  # type: ignore[index]
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
        f"{'yes' if keepalive else 'NO'}{tls}; headers: {', '.join(sorted(headers))}")


# --------------------------------------------------------------------------- TLS

TLS13_SUITES = ("TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256",
                "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256")


def _openssl(args: Sequence[object]) -> subprocess.CompletedProcess:
    """The openssl command, its standard input empty (s_client then closes at once)."""
    return subprocess.run([OPENSSL, *map(str, args)], input="", capture_output=True, text=True,
                          timeout=60)


def make_certificates(directory: Path, key_type: str = "ec") -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (and localhost) signed by it, made
    by the openssl command in ``directory``: ECDSA P-256 keys (``key_type`` "ec") or RSA-2048
    ("rsa"), SHA-256 signatures, valid 7 days. Returns the CA certificate, the server's
    certificate (that one alone: the CA is the client's trust anchor) and the server's key, all
    PEM."""
    newkey = {"ec": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
              "rsa": ["-newkey", "rsa:2048"]}[key_type]
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    usage = "digitalSignature" + (", keyEncipherment" if key_type == "rsa" else "")
    ext.write_text("basicConstraints = critical, CA:FALSE\n"
                   f"keyUsage = critical, {usage}\n"
                   "extendedKeyUsage = serverAuth\n"
                   f"subjectAltName = IP:{HOST}, DNS:localhost\n")
    for args in (
            ["req", "-x509", "-new", *newkey, "-nodes", "-sha256", "-keyout", ca_key, "-out", ca,
             "-days", "7", "-subj", "/CN=krait benchmark throwaway CA"],
            ["req", "-new", *newkey, "-nodes", "-sha256", "-keyout", key, "-out", csr,
             "-subj", f"/CN={HOST}"],
            ["x509", "-req", "-sha256", "-in", csr, "-CA", ca, "-CAkey", ca_key,
             "-CAcreateserial", "-out", cert, "-days", "7", "-extfile", ext]):
        p = _openssl(args)
        if p.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(map(str, args))} failed: {p.stderr}")
    return ca, cert, key


def certificate_summary(cert: Path) -> str:
    """Subject, key and SHA-256 fingerprint of a PEM certificate, for the records."""
    p = _openssl(["x509", "-in", cert, "-noout", "-subject", "-fingerprint", "-sha256", "-text"])
    subject = re.search(r"^subject=\s*(.+)$", p.stdout, re.M)
    fp = re.search(r"Fingerprint=(\S+)", p.stdout)
    key = re.search(r"Public Key Algorithm: (\S+)", p.stdout)
    bits = re.search(r"Public-Key: \((\d+) bit\)", p.stdout)
    curve = re.search(r"NIST CURVE: (\S+)", p.stdout)
    return (f"{subject.group(1) if subject else '?'}, {key.group(1) if key else '?'} "
            f"{curve.group(1) if curve else (bits.group(1) + ' bit' if bits else '')}, "
            f"SHA-256 fingerprint {fp.group(1) if fp else '?'}")


def tls_probe(port: int, ca: str, *options: str) -> dict[str, str]:
    """What ``openssl s_client -brief`` negotiates with 127.0.0.1:port, the certificate verified
    against ``ca`` for the address 127.0.0.1. Without options that is what a client with
    OpenSSL's defaults gets (wrk is one: same libssl, default settings). Returns s_client's
    fields ("Protocol version", "Ciphersuite", "Server Temp Key", "Signature type", "Peer
    certificate", "Verification", ...), or an empty dict when no connection was established."""
    p = _openssl(["s_client", "-connect", f"{HOST}:{port}", "-brief", "-CAfile", ca,
                  "-verify_return_error", "-verify_ip", HOST, *options])
    out = p.stdout + p.stderr
    if p.returncode != 0 or "CONNECTION ESTABLISHED" not in out:
        return {}
    fields = {}
    for line in out.splitlines():
        name, sep, value = line.partition(":")
        if sep and value.strip():
            fields[name.strip()] = value.strip()
    return fields


def tls_accepted(port: int, ca: str) -> dict[str, list[str]]:
    """The protocol versions and cipher suites the server accepts, each offered alone by
    s_client at security level 0 (so that the client itself refuses nothing): every TLS 1.2
    suite this OpenSSL knows and the five TLS 1.3 ones. Two servers with the same protocols and
    cipher lists (and the same certificate) give the same answer."""
    p = _openssl(["ciphers", "-s", "-tls1_2", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"])
    tls12 = [c for c in p.stdout.strip().split(":") if c and not c.startswith("TLS_")]
    accepted: dict[str, list[str]] = {"protocols": [], "TLSv1.2 suites": [],
                                      "TLSv1.3 suites": []}
    for flag, name in (("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1"), ("-tls1_2", "TLSv1.2"),
                       ("-tls1_3", "TLSv1.3")):
        if tls_probe(port, ca, flag, "-cipher", "ALL:@SECLEVEL=0"):
            accepted["protocols"].append(name)
    for suite in tls12:
        if tls_probe(port, ca, "-tls1_2", "-cipher", f"{suite}:@SECLEVEL=0"):
            accepted["TLSv1.2 suites"].append(suite)
    for suite in TLS13_SUITES:
        if tls_probe(port, ca, "-tls1_3", "-ciphersuites", suite):
            accepted["TLSv1.3 suites"].append(suite)
    return accepted


def ktls_counters() -> dict[str, int] | None:
    """The kernel's TLS counters (/proc/net/tls_stat: TlsTxSw counts connections that got
    kernel TLS for sending, TlsRxSw for receiving, ...), or None when the kernel has no TLS
    layer loaded (no kTLS for anyone)."""
    try:
        text = Path("/proc/net/tls_stat").read_text()
    except OSError:
        return None
    counters = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counters[parts[0]] = int(parts[1])
    return counters


def ktls_kernel() -> str:
    """Whether this kernel can do kTLS at all: /proc/net/tls_stat, the ``tls`` module,
    CONFIG_TLS in /proc/config.gz (when the kernel exposes it)."""
    import gzip
    facts = ["/proc/net/tls_stat " + ("present" if ktls_counters() is not None else "absent"),
             "tls module " + ("loaded" if Path("/sys/module/tls").exists() else "not loaded")]
    with contextlib.suppress(OSError):
        config = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
        for name in ("CONFIG_TLS", "CONFIG_MODULES"):
            m = re.search(rf"^(?:{name}=(\S+)|# {name} is not set)$", config, re.M)
            facts.append(f"{name}={m.group(1) or 'n'}" if m else f"{name} unknown")
    return ", ".join(facts)


def ktls_delta(before: dict[str, int] | None, after: dict[str, int] | None) -> str:
    if before is None or after is None:
        return "no kernel TLS counters (/proc/net/tls_stat absent): no connection used kTLS"
    keys = ("TlsTxSw", "TlsRxSw", "TlsTxDevice", "TlsRxDevice", "TlsDecryptError")
    return ", ".join(f"{k} +{after.get(k, 0) - before.get(k, 0)}" for k in keys)


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
    url = f"{server.scheme}://{HOST}:{server.port}{path}"
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


def run_quietly(run: Callable[[int], R], quiet: Quiet, other_cores: Callable[[R], float]) -> R:
    """``run(attempt)`` once the machine is quiet; redone (at most ``quiet.retries`` times)
    while ``other_cores(result)``, the cores other processes used during it, is above
    ``quiet.max_other``. Returns the last attempt's result."""
    for attempt in range(1, quiet.retries + 2):
        wait_quiet(quiet.idle_cores, quiet.max_wait)
        res = run(attempt)
        if other_cores(res) <= quiet.max_other:
            break
        if attempt <= quiet.retries:
            log(f"    other processes used {other_cores(res):.2f} cores during the run: "
                f"discarded, redoing it")
    return res


def measured_run(server: Server, test: str, path: str, connections: int, threads: int,
                 duration: int, rnd: int, quiet: Quiet) -> WrkResult:
    def run(attempt: int) -> WrkResult:
        res = run_wrk(server, test, path, connections, threads, duration, rnd)
        assert res is not None
        res.attempt = attempt
        log_result(res)
        return res

    return run_quietly(run, quiet, lambda res: res.other_cores)


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
                    results: Sequence[object], args: argparse.Namespace) -> dict:
    return {
        "machine": info,
        "command": " ".join(argv),
        "settings": {k: v for k, v in vars(args).items() if k not in ("report", "json")},
        "servers": [{"name": s.name, "cmd": s.cmd, "version": s.version, "notes": s.notes,
                     "keepalive": s.keepalive, "paths": s.paths} for s in servers],
        "runs": [dict(r.__dict__, **{k: getattr(r, k) for k in ("rps", "mib_s", "rate")
                                     if hasattr(r, k)}) for r in results],
    }


_WRK_SETTINGS = ("threads", "duration", "rounds", "workers", "max_other", "https")


def load_results(path: Path, args: argparse.Namespace, result_type: type = WrkResult,
                 settings: Sequence[str] | None = _WRK_SETTINGS) -> tuple[dict, list[Any]]:
    """Read a results file back (for --report): its runs as ``result_type`` (a dataclass;
    fields it does not have are dropped), and its ``settings`` (all when ``None``) set on
    ``args``, overriding the command line's."""
    payload = json.loads(path.read_text())
    names = set(result_type.__dataclass_fields__)
    results = [result_type(**{k: v for k, v in run.items() if k in names})
               for run in payload["runs"]]
    for k, v in payload.get("settings", {}).items():
        if settings is None or k in settings:
            setattr(args, k, v)
    return payload, results


def print_machine(info: dict[str, str]) -> None:
    print("\n".join(f"- {k}: {v}" for k, v in info.items()))


def setup_venv(venv: Path, packages: Sequence[str]) -> None:
    """Create a virtualenv for the competitors (never the project's own) and pip install
    ``packages`` into it one at a time, so that one that does not install does not stop the
    others."""
    if not (venv / "bin" / "python").exists():
        log(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    for pkg in packages:
        log(f"pip install {pkg}")
        p = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", pkg],
                           capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            log(f"  {pkg} did not install:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")


def venv_version(venv: Path, dist: str) -> str | None:
    """The version of distribution ``dist`` in that virtualenv, or None."""
    p = subprocess.run([str(venv / "bin" / "python"), "-c",
                        f"import importlib.metadata as m; print(m.version({dist!r}))"],
                       capture_output=True, text=True, timeout=60)
    return p.stdout.strip() if p.returncode == 0 else None


def require(path: str, hint: str) -> None:
    if shutil.which(path) is None and not os.access(path, os.X_OK):
        raise SystemExit(f"{path} not found: {hint}")


def positive_ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v]
    if not values or min(values) <= 0:
        raise ValueError(text)
    return values


def driver_parser(doc: str | None, venv: Path | None = None) -> argparse.ArgumentParser:
    """The argument parser a load driver starts from: the first paragraph of its docstring,
    the run-by-hand epilog and, given the competitors' default virtualenv, ``--setup`` and
    ``--venv``."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                epilog="Run by hand only. Everything listens on 127.0.0.1; every "
                                "process started is stopped by its PID.")
    if venv is not None:
        p.add_argument("--setup", action="store_true",
                       help="create the virtualenv and pip install the competitors first")
        p.add_argument("--venv", type=Path, default=venv,
                       help=f"the competitors' virtualenv ({venv})")
    return p


def remove_tmp(tmp: Path, keep: bool) -> None:
    """Delete a run's temporary directory, or say where it was kept (``--keep``)."""
    if keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def runs_done(info: dict[str, str], started: float) -> None:
    """Log the run's total time and record the krait build it ended with."""
    log(f"total time {time.monotonic() - started:.0f} s")
    info["krait build after"] = krait_build()
