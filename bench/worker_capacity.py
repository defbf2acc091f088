#!/usr/bin/env python3
"""How fast is one krait Python worker on its own, with requests queued ahead of it?

Starts ``python -m krait.worker SITE --fd N`` on one end of a socketpair (as the core does),
writes request frames for a page (bench/apps/krait_site/hello.py by default) and reads the
response frames, in two modes:

- ping-pong: one request, wait for its response, then the next (what the core does when a
  worker takes one request at a time: every request pays two process wake-ups);
- queued: keep ``--depth`` requests written ahead of the worker, so it never waits.

It prints requests/s and the worker's CPU time per request for each mode. The difference is the
cost of the wake-ups, the number a "keep workers fed" design decision needs. No HTTP, no C core.
Run by hand: ``python bench/worker_capacity.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import log  # noqa: E402

from krait import protocol  # noqa: E402


def read_responses(sock: socket.socket, buf: bytearray, count: int) -> bytearray:
    """Read ``count`` whole RESPONSE frames; returns the bytes left over."""
    got = 0
    while True:
        while True:
            size = protocol.frame_size(buf)
            if size is None or len(buf) < size:
                break
            if buf[4] != protocol.RESPONSE:
                raise RuntimeError(f"unexpected frame type {buf[4]}")
            del buf[:size]
            got += 1
            if got == count:
                return buf
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("worker closed the socket")
        buf += chunk


def run(sock: socket.socket, frames: list[bytes], depth: int) -> float:
    """Send every frame, keeping at most ``depth`` unanswered; returns the elapsed seconds."""
    buf = bytearray()
    t0 = time.perf_counter()
    sent = answered = 0
    n = len(frames)
    while answered < n:
        batch = min(depth - (sent - answered), n - sent)
        if batch > 0:
            sock.sendall(b"".join(frames[sent:sent + batch]))
            sent += batch
        # Wait for at least one answer (depth 1: exactly the one outstanding request).
        want = 1 if depth == 1 else max(1, (sent - answered) // 2)
        buf = read_responses(sock, buf, want)
        answered += want
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--script", default=str(common.BENCH_DIR / "apps" / "krait_site" / "hello.py"),
                   help="the .py page to run (bench/apps/krait_site/hello.py)")
    p.add_argument("--requests", type=int, default=20000, help="requests per mode (20000)")
    p.add_argument("--depth", type=int, default=16, help="requests queued ahead (16)")
    p.add_argument("--cprofile", type=Path, metavar="FILE",
                   help="run the worker under cProfile, write its stats to FILE and print the "
                   "top functions (slows the worker down: timings are then not comparable)")
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="krait-bench-worker-"))
    site = tmp / "site"
    shutil.copytree(Path(args.script).parent, site)
    target = site / Path(args.script).name
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    profile = ["-m", "cProfile", "-o", str(args.cprofile.resolve())] if args.cprofile else []
    proc = subprocess.Popen([sys.executable, *profile, "-m", "krait.worker", str(site),
                             "--fd", str(theirs.fileno())], pass_fds=[theirs.fileno()],
                            cwd=str(tmp), stdin=subprocess.DEVNULL, start_new_session=True)
    theirs.close()
    try:
        url = "/" + target.stem
        frames = [protocol.encode_request(
            i + 1, "GET", url, file=str(target), remote_addr="127.0.0.1", remote_port=40000,
            headers=[("host", "127.0.0.1:8080"), ("user-agent", "worker_capacity")])
            for i in range(args.requests)]
        run(ours, frames[:2000], 1)  # warm-up: imports, code cache
        print(f"one krait worker, {target.name}, {args.requests} requests per mode "
              f"(Python {sys.version.split()[0]})")
        for label, depth in (("ping-pong (depth 1)", 1), (f"queued (depth {args.depth})",
                                                          args.depth)):
            common.wait_quiet(0.15, 120)
            cpu0 = common.cpu_seconds([proc.pid])
            elapsed = run(ours, frames, depth)
            cpu = common.cpu_seconds([proc.pid]) - cpu0
            print(f"  {label:<22} {args.requests / elapsed:>8.0f} req/s  "
                  f"{1e6 * elapsed / args.requests:6.1f} us wall/request  "
                  f"worker CPU {1e6 * cpu / args.requests:6.1f} us/request "
                  f"({cpu / elapsed:.0%} busy)")
    finally:
        ours.close()  # the worker sees EOF and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log(f"worker {proc.pid} did not exit; SIGKILL")
            os.kill(proc.pid, 9)
            proc.wait(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.cprofile:
        import pstats
        stats = pstats.Stats(str(args.cprofile))
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
