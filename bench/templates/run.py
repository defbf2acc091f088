#!/usr/bin/env python3
"""Template benchmark: a page rendering a layout and a 100-row table through a controller.

The page (about 10 KiB, every name, e-mail and city HTML-escaped; data in ``data.py``) is
served by:

- krait --workers 2: a ``ctrl_class`` route, ``.pyml`` views ``@extends``-ing a layout
  (``krait_site/``),
- gunicorn (2 sync workers) + Flask + Jinja2 (``apps/flask_app.py``),
- gunicorn (2 sync workers) + Bottle + SimpleTemplate (``apps/bottle_app.py``),
- uWSGI (--processes 2, HTTP/1.1 keep-alive socket) + Flask + Jinja2,
- Tornado's web framework and templates, 2 processes (``apps/tornado_app.py``).

The competitors run from their own virtualenv under /tmp (``--setup`` creates it; default
``/tmp/krait-tpl-bench-venv``), never from the project's dependencies. Each round starts every
server in turn (krait, gunicorn+flask, ..., then krait again), checks that it answers the
page with the escaped rows, warms it up, and measures it with ``wrk -t2 -c50`` on 127.0.0.1.
Prints a Markdown table of requests/s (median of the rounds, and the range) with krait's ratio
to each competitor; ``--json`` keeps every run.

Run by hand, never from CI or the tests::

    python bench/templates/run.py --setup          # about 5 minutes with the defaults

wrk runs on the same machine and shares its CPUs with the servers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
APPS = HERE / "apps"
HOST = "127.0.0.1"
DEFAULT_VENV = Path("/tmp/krait-tpl-bench-venv")
PACKAGES = ["flask", "gunicorn", "uwsgi", "tornado", "bottle"]
ALL_SERVERS = ["krait", "gunicorn+flask", "gunicorn+bottle", "uwsgi+flask", "tornado"]
PATH = "/table"
WORKERS = 2


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def fetch(port: int, timeout: float = 2.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://{HOST}:{port}{PATH}", timeout=timeout) as r:
        return r.status, r.read()


@dataclass
class Server:
    name: str
    cmd: list[str]
    version: str
    notes: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    proc: subprocess.Popen | None = None
    port: int = 0

    def start(self, log_dir: Path) -> None:
        self.port = free_port()
        cmd = [part.replace("{port}", str(self.port)) for part in self.cmd]
        out = open(log_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - kept for the child
        log(f"  start {self.name}: {' '.join(cmd)}")
        # A session of its own: its process group holds the server and the workers it forks
        # (krait's workers have sessions of their own; krait stops them itself on SIGTERM).
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env={**os.environ, **self.env},
                                     stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see "
                                   f"{log_dir / (self.name + '.log')}")
            try:
                status, body = fetch(self.port)
                if status == 200:
                    check_page(self.name, body)
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer on port {self.port}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM to the process group we started (by its id), SIGKILL after 10 s."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; give its group (forked workers) a moment, then move on.
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                continue
            break
        self.proc = None


def check_page(name: str, body: bytes) -> None:
    """Every server must send the same page: the 100 rows, escaped."""
    text = body.decode("utf-8")
    rows = text.count("<tr><td>")
    if rows != 100 or "Bob Smith &amp; Sons" not in text or "&lt;Rome&gt;" not in text \
            or "<Lee>" in text or "People &amp; Places" not in text:
        raise RuntimeError(f"{name} sent an unexpected page ({len(body)} bytes, {rows} rows)")


def wrk(port: int, duration: float, connections: int, threads: int) -> dict[str, float]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s",
           f"http://{HOST}:{port}{PATH}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60,
                         check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = 0
    m_err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      out)
    if m_err:
        # gunicorn's sync workers close every connection: wrk counts those as read errors
        # whenever it had already sent the next request. Only connect/timeout are failures.
        errors += int(m_err.group(1)) + int(m_err.group(4))
    m_non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m_non2xx:
        errors += int(m_non2xx.group(1))
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {"rps": float(m.group(1)), "errors": errors,
            "latency_ms": float(lat.group(1)) * scale[lat.group(2)] if lat else float("nan")}


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()     # fields from the 3rd (state) on


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (krait's workers run in sessions of their own, so the
    process group is not enough)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                parents[int(entry)] = int(st[1])
    found = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return sorted(found)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by these processes."""
    total = 0
    for pid in pids:
        st = _stat(pid)
        if st is not None:
            total += int(st[11]) + int(st[12])
    return total / CLK_TCK


def venv_version(venv: Path, dist: str) -> str | None:
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          f"import importlib.metadata as m; print(m.version({dist!r}))"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def setup_venv(venv: Path) -> None:
    if not (venv / "bin" / "python").exists():
        log(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log(f"installing {' '.join(PACKAGES)} into {venv} (uWSGI compiles: needs gcc)")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *PACKAGES], check=True)


def servers(venv: Path, cache_dir: str) -> list[Server]:
    vbin = venv / "bin"
    krait_version = subprocess.run([sys.executable, "-c", "import krait; print(krait.__version__)"],
                                   capture_output=True, text=True).stdout.strip()
    flask, jinja = venv_version(venv, "flask"), venv_version(venv, "jinja2")
    found = {
        "krait": Server(
            "krait", [sys.executable, "-m", "krait", str(HERE / "krait_site"), "--host", HOST,
                      "--port", "{port}", "--workers", str(WORKERS), "--access-log", "off"],
            f"krait {krait_version} (Mako {mako_version()})",
            f"--workers {WORKERS}: ctrl_class route, .pyml view @extends a layout",
            env={"KRAIT_TEMPLATE_CACHE": cache_dir}),
        "gunicorn+flask": Server(
            "gunicorn+flask", [str(vbin / "gunicorn"), "--workers", str(WORKERS),
                               "--worker-class", "sync", "--bind", f"{HOST}:{{port}}",
                               "--chdir", str(APPS), "flask_app:app"],
            f"gunicorn {venv_version(venv, 'gunicorn')}, Flask {flask}, Jinja2 {jinja}",
            f"{WORKERS} sync workers (one connection per request)", cwd=str(APPS)),
        "gunicorn+bottle": Server(
            "gunicorn+bottle", [str(vbin / "gunicorn"), "--workers", str(WORKERS),
                                "--worker-class", "sync", "--bind", f"{HOST}:{{port}}",
                                "--chdir", str(APPS), "bottle_app:app"],
            f"gunicorn {venv_version(venv, 'gunicorn')}, Bottle {venv_version(venv, 'bottle')}",
            f"{WORKERS} sync workers, SimpleTemplate", cwd=str(APPS)),
        "uwsgi+flask": Server(
            "uwsgi+flask", [str(vbin / "uwsgi"), "--http11-socket", f"{HOST}:{{port}}",
                            "--master", "--processes", str(WORKERS), "--threads", "1",
                            "--chdir", str(APPS), "--wsgi-file", "flask_app.py",
                            "--callable", "app", "--need-app", "--disable-logging",
                            "--die-on-term", "--listen", "1024", "--virtualenv", str(venv)],
            f"uWSGI {venv_version(venv, 'uWSGI')}, Flask {flask}, Jinja2 {jinja}",
            f"--processes {WORKERS}, --http11-socket (keep-alive)", cwd=str(APPS)),
        "tornado": Server(
            "tornado", [str(vbin / "python"), str(APPS / "tornado_app.py"), "{port}",
                        str(WORKERS)],
            f"Tornado {venv_version(venv, 'tornado')}",
            f"fork_processes({WORKERS}), tornado.template", cwd=str(APPS)),
    }
    return list(found.values())


def mako_version() -> str:
    import mako

    return mako.__version__


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setup", action="store_true", help="create/update the competitors' venv")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--servers", default=",".join(ALL_SERVERS),
                   help=f"comma-separated, from {','.join(ALL_SERVERS)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk before each run")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="write every run to this file")
    args = p.parse_args()
    if shutil.which("wrk") is None:
        log("wrk is missing: apt-get install wrk")
        return 2
    if args.setup:
        setup_venv(args.venv)
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    work = Path(tempfile.mkdtemp(prefix="krait-tpl-bench-"))
    chosen = []
    for server in servers(args.venv, str(work / "template-cache")):
        if server.name not in wanted:
            continue
        if server.name != "krait" and not Path(server.cmd[0]).exists():
            log(f"  {server.name}: not installed in {args.venv} (use --setup); skipped")
            continue
        chosen.append(server)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    runs: dict[str, list[dict[str, float]]] = {s.name: [] for s in chosen}
    try:
        for rnd in range(1, args.rounds + 1):
            log(f"round {rnd}/{args.rounds}")
            for server in chosen:
                server.start(work)
                try:
                    if args.warmup > 0:
                        wrk(server.port, args.warmup, args.connections, args.threads)
                    assert server.proc is not None
                    pids = process_tree(server.proc.pid)
                    cpu0 = cpu_seconds(pids)
                    result = wrk(server.port, args.duration, args.connections, args.threads)
                    # The servers' own CPU time per request: less sensitive than req/s to
                    # whatever else runs on the machine.
                    result["cpu_us"] = ((cpu_seconds(pids) - cpu0) * 1e6
                                        / max(1.0, result["rps"] * args.duration))
                finally:
                    server.stop()
                runs[server.name].append(result)
                log(f"    {server.name:<16} {result['rps']:>9.0f} req/s  "
                    f"server CPU {result['cpu_us']:5.0f} µs/request  "
                    f"mean latency {result['latency_ms']:.2f} ms  errors {result['errors']:.0f}")
    finally:
        for server in chosen:
            server.stop()
    medians = {name: statistics.median(r["rps"] for r in rs) for name, rs in runs.items() if rs}
    best_other = max((v for k, v in medians.items() if k != "krait"), default=None)
    cmd = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    print(f"Template page ({PATH}: layout + 100-row table, every cell escaped), "
          f"`wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s`, "
          f"{args.rounds} rounds, servers alternating; `{cmd}`, {started}; {machine()}.\n")
    cpu = {name: statistics.median(r["cpu_us"] for r in rs) for name, rs in runs.items() if rs}
    print("| server | versions | req/s (median) | range | krait ÷ this | server CPU µs/request "
          "(median) | setup |")
    print("|---|---|---:|---:|---:|---:|---|")
    for server in chosen:
        rs = runs[server.name]
        if not rs:
            continue
        med = medians[server.name]
        ratio = medians.get("krait", 0) / med if med else 0
        lo, hi = min(r["rps"] for r in rs), max(r["rps"] for r in rs)
        errors = sum(r["errors"] for r in rs)
        note = server.notes + (f"; {errors:.0f} failed requests" if errors else "")
        print(f"| {server.name} | {server.version} | {med:,.0f} | {lo:,.0f}–{hi:,.0f} | "
              f"{ratio:.2f}× | {cpu[server.name]:,.0f} | {note} |")
    if best_other and "krait" in medians:
        print(f"\nkrait ÷ fastest competitor: {medians['krait'] / best_other:.2f}× in requests/s")
        leanest = min(v for k, v in cpu.items() if k != "krait")
        print(f"krait's server CPU per request ÷ the leanest competitor's: "
              f"{cpu['krait'] / leanest:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"date": started, "machine": machine(),
                                         "command": cmd, "runs": runs}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
