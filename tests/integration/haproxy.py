"""A real HAProxy for the integration tests (test_deployment.py, test_proxy_protocol.py): the
``haproxy_binary`` fixture (skips when HAProxy is not installed), free ports to bind its
frontends to, and ``HAProxy``, which checks a configuration, starts ``haproxy -db`` on it and
waits until one of its ports answers."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip("haproxy is not installed (Debian package haproxy; scripts/test installs it)")
    return found


class HAProxy:
    """haproxy -db with a configuration, up once 127.0.0.1:wait_port accepts; stopped by
    stop()."""

    def __init__(self, binary: str, config: Path, wait_port: int) -> None:
        check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log_path = config.with_suffix(".log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", wait_port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, f"haproxy exited:\n{self.log()}"
                assert time.monotonic() < deadline, f"haproxy did not listen:\n{self.log()}"
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # haproxy -db: hard stop
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
