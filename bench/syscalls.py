#!/usr/bin/env python3
"""Where the time goes, per request: syscalls (strace -c) and CPU time, per process.

Starts, on 127.0.0.1: krait --workers 1 and nginx (the configuration of bench/static.py) on a
1 KiB and a 1 MiB file, and krait --workers 2 on bench/apps/krait_site (hello.py, 8k.py). For
each case it runs wrk twice (-t2, --connections, --duration seconds):

1. without tracing, reading every server process's CPU time (utime + stime from /proc) before
   and after: CPU microseconds per request, for the master and for each worker;
   (all workers together: a worker row is the workers' CPU time divided by all requests);
2. with one ``strace -c`` attached to each server process (stopped with SIGINT, by PID):
   system calls per request by name. strace slows the server down a lot; the counts per request
   stay meaningful, the times do not.

Run by hand (never from CI): ``python bench/syscalls.py`` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import static  # noqa: E402
from common import HOST, Server, Servers, log  # noqa: E402

STRACE = "/usr/bin/strace"


def wrk_requests(port: int, path: str, conns: int, duration: int) -> int:
    out = subprocess.run([common.WRK, "-t2", f"-c{conns}", f"-d{duration}s", "-s",
                          str(common.WRK_LUA), f"http://{HOST}:{port}{path}"],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r'"requests":(\d+)', out)
    if m is None:
        raise RuntimeError(f"wrk output without a summary:\n{out}")
    return int(m.group(1))


def role(server: Server, pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return str(pid)
    if "krait.worker" in cmd:
        return "worker"
    if server.name.startswith("nginx"):
        return "nginx worker" if pid != server.pid else "nginx master"
    return "master" if pid == server.pid else "other"


def cpu_per_request(server: Server, path: str, conns: int, duration: int) -> dict[str, float]:
    pids = server.pids()
    before = {pid: common.cpu_seconds([pid]) for pid in pids}
    n = wrk_requests(server.port, path, conns, duration)
    out: dict[str, float] = {}
    for pid in pids:
        r = role(server, pid)
        out[r] = out.get(r, 0.0) + 1e6 * (common.cpu_seconds([pid]) - before[pid]) / n
    out["requests/s"] = n / duration
    return out


def parse_strace(text: str) -> dict[str, int]:
    calls = {}
    for line in text.splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] not in ("total",):
            try:
                calls[parts[-1]] = int(parts[3])
            except ValueError:
                continue
    return calls


def syscalls_per_request(server: Server, path: str, conns: int, duration: int,
                         tmp: Path) -> dict[str, dict[str, float]]:
    tracers = []
    for pid in server.pids():
        out = tmp / f"strace-{pid}.txt"
        tracers.append((pid, out, subprocess.Popen(
            [STRACE, "-c", "-o", str(out), "-p", str(pid)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    time.sleep(1.0)  # attached
    try:
        n = wrk_requests(server.port, path, conns, duration)
    finally:
        for _, _, tracer in tracers:
            tracer.send_signal(signal.SIGINT)
        for _, _, tracer in tracers:
            try:
                tracer.wait(timeout=20)
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait(timeout=5)
    result: dict[str, dict[str, float]] = {}
    for pid, out, _ in tracers:
        r = role(server, pid)
        calls = parse_strace(out.read_text()) if out.exists() else {}
        per = result.setdefault(r, {})
        for name, count in calls.items():
            per[name] = per.get(name, 0.0) + count / n
    return result


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (5)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    args = p.parse_args(argv)
    common.require(STRACE, "apt-get install strace")
    tmp = Path(tempfile.mkdtemp(prefix="krait-bench-syscalls-"))
    root = tmp / "site"
    static.make_site(root)
    dsite = tmp / "dsite"
    shutil.copytree(common.BENCH_DIR / "apps" / "krait_site", dsite)
    ks, ng, kd = common.free_port(), common.free_port(), common.free_port()
    prefix = tmp / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(static.NGINX_CONF.format(prefix=prefix, host=HOST, port=ng, root=root))
    py = sys.executable
    servers = {
        "krait static": Server("krait", [py, "-m", "krait", str(root), "--host", HOST, "--port",
                                         str(ks), "--workers", "1", "--access-log", "off"], ks,
                               cwd=str(tmp), log_path=str(tmp / "ks.log")),
        "nginx": Server("nginx", [static.NGINX, "-c", str(conf), "-p", str(prefix), "-g",
                                  "daemon off;"], ng, cwd=str(tmp),
                        log_path=str(prefix / "out.log")),
        "krait dynamic": Server("krait", [py, "-m", "krait", str(dsite), "--host", HOST,
                                          "--port", str(kd), "--workers", "2", "--access-log",
                                          "off"], kd, cwd=str(tmp), log_path=str(tmp / "kd.log")),
    }
    cases = [("krait static", "/1k.bin"), ("nginx", "/1k.bin"), ("krait static", "/1m.bin"),
             ("nginx", "/1m.bin"), ("krait dynamic", "/hello"), ("krait dynamic", "/hello.py"),
             ("krait dynamic", "/8k")]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"{when}, krait build: {common.krait_build()}"]
    try:
        with Servers() as running:
            for key, server in servers.items():
                running.start(server, "/hello.py" if key == "krait dynamic" else "/1k.bin")
            for key, path in cases:
                server = servers[key]
                common.wait_quiet(0.15, 120)
                wrk_requests(server.port, path, args.connections, 1)  # warm-up
                cpu = cpu_per_request(server, path, args.connections, args.duration)
                calls = syscalls_per_request(server, path, args.connections, args.duration, tmp)
                rps = cpu.pop("requests/s")
                block = [f"\n{key} {path}: {rps:,.0f} req/s untraced (wrk -t2 "
                         f"-c{args.connections}, {args.duration} s)"]
                for r in sorted(set(cpu) | set(calls)):
                    per = calls.get(r, {})
                    total = sum(per.values())
                    if total < 0.01 and cpu.get(r, 0.0) < 0.5:
                        continue  # idle: nginx's master, the static krait's worker
                    top = ", ".join(f"{name} {count:.2f}" for name, count in
                                    sorted(per.items(), key=lambda kv: -kv[1]) if count >= 0.01)
                    block.append(f"  {r:<13} CPU {cpu.get(r, 0.0):6.1f} us/req   "
                                 f"syscalls {total:5.2f}/req: {top}")
                log("\n".join(block))
                lines += block
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)
