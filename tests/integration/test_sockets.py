"""Operations (issue 14) through a real krait: SIGUSR1 reopens the access log (logrotate
without copytruncate) while every loop is serving; listening on a Unix socket (a real AF_UNIX
client: keep-alive, a Python page, the peer shown as "unix"); systemd socket activation
(LISTEN_FDS/LISTEN_PID) from a small launcher and from systemd-socket-activate.

Run with KRAIT_LOOPS=3 and KRAIT_LOOPS=1 (the loop count comes from the environment unless a
test sets --loops)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HttpReader, KraitProcess, write_site
from tests.integration.test_tls import _site as tls_site
from tests.integration.test_tls import pki  # noqa: F401 - the fixture, for the HTTPS test

PAGE = ("import krait, os\n"
        "krait.response = krait.Response('HTTP/1.1', 200, [('Content-Type', 'text/plain')], "
        "'python from %s; listen=%s' % (krait.request.remote_addr, "
        "os.environ.get('LISTEN_FDS')))\n")

#: One whole access-log line, as the core writes it (peer, date, request, status, bytes,
#: referer, user agent, seconds).
LINE = re.compile(r'^(\S+) - - \[[^\]]+\] "GET (\S+) HTTP/1\.1" (\d{3}) \d+ "[^"]*" "[^"]*" '
                  r'\d+\.\d{6}$')


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site", {"index.html": "hello\n", "page.py": PAGE})


def wait_for(cond, timeout: float = 20.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def get(sock: socket.socket, reader: HttpReader, path: str, close: bool = False,
        headers: str = "") -> tuple[int, dict[str, str], bytes]:
    conn = "Connection: close\r\n" if close else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}{conn}\r\n".encode())
    return reader.read()


# ---- SIGUSR1: reopen the access log --------------------------------------------------------


def traffic(port: int, tag: str, conns: int, each: int, errors: list[str]) -> list[str]:
    """``conns`` keep-alive connections, ``each`` requests on each (static and Python pages
    alternating), every path unique; returns the paths sent (all answered 200)."""
    sent: list[str] = []
    for c in range(conns):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                reader = HttpReader(s, timeout=10)
                for i in range(each):
                    target = "/page.py" if i % 3 == 2 else "/index.html"
                    path = f"{target}?t={tag}-{c}-{i}"
                    status, _, _ = get(s, reader, path)
                    if status != 200:
                        errors.append(f"{path}: {status}")
                    sent.append(path)
        except OSError as exc:
            errors.append(f"{tag}-{c}: {exc!r}")
    return sent


def in_parallel(port: int, tag: str, threads: int, conns: int, each: int,
                errors: list[str]) -> list[str]:
    results: list[list[str]] = [[] for _ in range(threads)]

    def run(k: int) -> None:
        results[k] = traffic(port, f"{tag}{k}", conns, each, errors)

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return [p for r in results for p in r]


def log_paths(path: Path) -> list[str]:
    """The request paths of a log file, asserting every line is whole."""
    out = []
    for line in path.read_text().splitlines():
        m = LINE.match(line)
        assert m, f"a broken line in {path.name}: {line!r}"
        assert m.group(1) == "127.0.0.1" and m.group(3) == "200", line
        out.append(m.group(2))
    return out


def test_sigusr1_reopens_the_access_log_on_every_loop(site: Path, krait_server) -> None:
    server: KraitProcess = krait_server(site, "--loops", "3", "--workers", "1")
    log = server.access_path
    errors: list[str] = []
    before = in_parallel(server.port, "a", threads=6, conns=4, each=6, errors=errors)
    # Each loop writes its lines at the end of the turn that answered them: all of them are
    # in the file before it is renamed.
    wait_for(lambda: len(log.read_text().splitlines()) == len(before), what="the first lines")
    rotated = log.with_name(log.name + ".1")
    log.rename(rotated)  # logrotate's move; krait goes on writing to the renamed file

    # Traffic goes on while the signal arrives: those lines may land in either file, once.
    stop = threading.Event()
    during: list[str] = []

    def busy() -> None:
        n = 0
        while not stop.is_set():
            during.extend(traffic(server.port, f"m{n}", 1, 5, errors))
            n += 1

    bg = [threading.Thread(target=busy) for _ in range(3)]
    for t in bg:
        t.start()
    time.sleep(0.2)
    server.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "reopened the access log" in server.log(), what="the reopen")
    assert log.exists()
    after = in_parallel(server.port, "b", threads=6, conns=4, each=6, errors=errors)
    stop.set()
    for t in bg:
        t.join()
    assert server.stop() == 0
    assert not errors, errors[:5]

    old, new = log_paths(rotated), log_paths(log)
    assert sorted(old + new) == sorted(before + during + after), "a line lost or doubled"
    assert set(before) <= set(old) and not set(before) & set(new)
    assert set(after) <= set(new) and not set(after) & set(old)
    assert during, "no traffic while the signal arrived"
    assert "reopened the access log" in server.log() and "Traceback" not in server.log()


def test_sigusr1_without_a_log_file_changes_nothing(site: Path, tmp_path: Path) -> None:
    proc, banner, out = start(site, tmp_path / "log", "--port", "0", "--access-log", "off")
    try:
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", banner).group(1))  # type: ignore[union-attr]
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: "nothing to reopen" in out.read_text(), what="the message")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert get(s, HttpReader(s), "/index.html")[0] == 200
        assert proc.poll() is None
    finally:
        stop(proc)


# ---- a Unix socket -------------------------------------------------------------------------


def start(site: Path, log: Path, *args: str, env: dict[str, str] | None = None,
          pass_fds: tuple[int, ...] = (), cmd: list[str] | None = None,
          ) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start krait and wait for its banner; returns the process, the banner and the log."""
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    argv = cmd or [sys.executable, "-m", "krait", str(site), "--workers", "1", *args]
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, pass_fds=pass_fds)
    out.close()
    try:
        wait_for(lambda: re.search(r"krait: serving .*", log.read_text()) is not None
                 or proc.poll() is not None, what="the banner")
    except AssertionError:
        proc.kill()
        raise
    m = re.search(r"krait: serving .*", log.read_text())
    if not m:
        raise AssertionError(f"krait did not start:\n{log.read_text()}")
    return proc, m.group(0), log


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def unix_client(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(path))
    return s


def test_unix_socket_http_keepalive_and_python(site: Path, tmp_path: Path,
                                               krait_server) -> None:
    path = tmp_path / "krait.sock"
    server: KraitProcess = krait_server(site, "--unix", str(path), "--workers", "1")
    assert f"unix:{path}" in server.log()
    st = path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    with unix_client(path) as s:
        reader = HttpReader(s)
        for _ in range(3):  # keep-alive: one connection, several requests
            status, headers, body = get(s, reader, "/index.html")
            assert (status, body) == (200, b"hello\n"), headers
        status, _, body = get(s, reader, "/page.py")
        assert (status, body) == (200, b"python from unix; listen=None")
        status, _, body = get(s, reader, "/index.html?last", close=True)
        assert (status, body) == (200, b"hello\n")
        assert s.recv(1) == b""
    # The TCP port (given with --port) serves too.
    with server.connect() as s:
        assert get(s, HttpReader(s), "/index.html")[0] == 200
    assert server.stop() == 0
    lines = server.access_log().splitlines()
    assert len(lines) == 6, lines
    assert [ln.split(" ", 1)[0] for ln in lines] == ["unix"] * 5 + ["127.0.0.1"]
    assert all(LINE.match(ln) for ln in lines), lines
    assert not path.exists(), "the socket file is removed at exit"


def test_unix_socket_alone_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "run" / "site.sock"
    path.parent.mkdir()
    site = write_site(tmp_path / "site", {
        "index.html": "hello\n", "page.py": PAGE,
        ".py/init.py": f"from krait import config\nconfig.unix_socket = {str(path)!r}\n"
                       "config.unix_socket_mode = 0o600\n"})
    # A stale socket from a krait that was killed is replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    proc, banner, _ = start(site, tmp_path / "log", "--access-log", "off")
    try:
        assert banner.split(" at ")[1].startswith(f"unix:{path} "), banner
        assert "http://" not in banner, "no --port: no TCP listener"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with unix_client(path) as s:
            assert get(s, HttpReader(s), "/page.py")[2] == b"python from unix; listen=None"
    finally:
        assert stop(proc) == 0
    assert not path.exists()


def test_unix_socket_never_replaces_a_file(site: Path, tmp_path: Path) -> None:
    path = tmp_path / "important"
    path.write_text("data\n")
    proc = subprocess.run([sys.executable, "-m", "krait", str(site), "--unix", str(path),
                           "--workers", "1", "--access-log", "off"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "not a socket" in proc.stderr, proc.stderr
    assert path.read_text() == "data\n"


def test_a_live_unix_socket_is_not_taken_over(site: Path, tmp_path: Path) -> None:
    path = tmp_path / "busy.sock"
    proc, _, _ = start(site, tmp_path / "log1", "--unix", str(path), "--unix-mode", "0o666",
                       "--access-log", "off")
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666
        second = subprocess.run([sys.executable, "-m", "krait", str(site), "--unix", str(path),
                                 "--workers", "1", "--access-log", "off"],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "another server is listening" in second.stderr, second.stderr
        with unix_client(path) as s:  # the first one still answers
            assert get(s, HttpReader(s), "/index.html")[0] == 200
    finally:
        stop(proc)


def test_trusted_proxy_unix(site: Path, tmp_path: Path) -> None:
    path = tmp_path / "proxy.sock"
    fwd = "X-Forwarded-For: 203.0.113.9\r\n"
    for trust, want in (([], b"unix"), (["--trusted-proxy", "unix"], b"203.0.113.9")):
        proc, _, _ = start(site, tmp_path / f"log{len(trust)}", "--unix", str(path),
                           "--access-log", "off", *trust)
        try:
            with unix_client(path) as s:
                body = get(s, HttpReader(s), "/page.py", headers=fwd)[2]
                assert body == b"python from " + want + b"; listen=None"
        finally:
            stop(proc)


def test_bad_unix_options_are_refused(site: Path) -> None:
    for args, needle in ((["--unix-mode", "999"], "invalid mode"),
                         (["--unix", ""], "--unix needs a path"),
                         (["--trusted-proxy", "unixx"], "not an address")):
        r = subprocess.run([sys.executable, "-m", "krait", str(site), *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and needle in r.stderr, (args, r.stderr)


# ---- socket activation ---------------------------------------------------------------------

#: The exec wrapper a service manager would be: the inherited socket is put at descriptor 3
#: (SD_LISTEN_FDS_START), LISTEN_PID is the pid krait will have (exec keeps it).
LAUNCHER = ("import os, sys\n"
            "fds = [int(f) for f in sys.argv[1].split(',')]\n"
            "for i, fd in enumerate(fds):\n"
            "    os.dup2(fd, 100 + i)\n"
            "for i, fd in enumerate(fds):\n"
            "    os.dup2(100 + i, 3 + i)\n"
            "    os.close(100 + i)\n"
            "os.environ['LISTEN_PID'] = sys.argv[2] or str(os.getpid())\n"
            "os.execv(sys.executable, [sys.executable, *sys.argv[3:]])\n")


def activate(site: Path, log: Path, socks: list[socket.socket], *args: str,
             listen_pid: str = "", names: str | None = None,
             ) -> tuple[subprocess.Popen[bytes], str, Path]:
    env = dict(os.environ, LISTEN_FDS=str(len(socks)))
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    fds = [s.fileno() for s in socks]
    cmd = [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), listen_pid,
           "-m", "krait", str(site), "--workers", "1", "--access-log", "off", *args]
    return start(site, log, env=env, pass_fds=tuple(fds), cmd=cmd)


def listener(family: int = socket.AF_INET, addr: object = ("127.0.0.1", 0)) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind(addr)
    s.listen(64)
    return s


def test_socket_activation_takes_the_inherited_socket(site: Path, tmp_path: Path) -> None:
    tcp = listener()
    port = tcp.getsockname()[1]
    unix_path = tmp_path / "activated.sock"
    unix = listener(socket.AF_UNIX, str(unix_path))
    proc, banner, log = activate(site, tmp_path / "log", [tcp, unix], "--port", "0")
    tcp.close()  # only krait holds them now: if it had not taken them, nothing would answer
    unix.close()
    try:
        assert f"http://127.0.0.1:{port}/ unix:{unix_path} " in banner, banner
        assert "socket activation: 2 inherited sockets" in log.read_text()
        # --port 0 was not bound: the banner shows the inherited sockets only.
        assert len(re.findall(r"http://", banner)) == 1
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            reader = HttpReader(s)
            assert get(s, reader, "/index.html")[2] == b"hello\n"
            # The workers never see the variables (nor the descriptors).
            assert get(s, reader, "/page.py")[2] == b"python from 127.0.0.1; listen=None"
        with unix_client(unix_path) as s:
            assert get(s, HttpReader(s), "/page.py")[2] == b"python from unix; listen=None"
    finally:
        assert stop(proc) == 0
    assert unix_path.exists(), "a socket krait did not make is not krait's to remove"


def test_listen_pid_of_another_process_is_ignored(site: Path, tmp_path: Path) -> None:
    tcp = listener()
    try:
        proc, banner, log = activate(site, tmp_path / "log", [tcp], "--port", "0",
                                     listen_pid="1")
        try:
            port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", banner).group(1))  # type: ignore[union-attr]
            assert port != tcp.getsockname()[1]
            assert "socket activation" not in log.read_text()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                assert get(s, HttpReader(s), "/page.py")[2] == b"python from 127.0.0.1; " \
                                                              b"listen=1"
        finally:
            stop(proc)
    finally:
        tcp.close()


def test_socket_activation_with_a_socket_that_does_not_listen(site: Path,
                                                               tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    log = tmp_path / "log"
    with pytest.raises(AssertionError, match="did not start"):
        activate(site, log, [s])
    s.close()
    assert "not a listening stream socket" in log.read_text()


def test_socket_activation_https_by_name(site: Path, tmp_path: Path, pki: Path) -> None:  # noqa: F811
    root = tls_site(tmp_path / "tls", pki)
    plain, secure = listener(), listener()
    ports = plain.getsockname()[1], secure.getsockname()[1]
    proc, banner, _ = activate(root, tmp_path / "log", [plain, secure], names="http:https")
    plain.close()
    secure.close()
    try:
        assert f"http://127.0.0.1:{ports[0]}/ https://127.0.0.1:{ports[1]}/" in banner, banner
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with socket.create_connection(("127.0.0.1", ports[1]), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert HttpReader(s).read()[2] == b"dynamic https"
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=10) as s:
            assert get(s, HttpReader(s), "/hello")[2] == b"dynamic http"
    finally:
        stop(proc)


@pytest.fixture
def free_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    yield port


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is not installed")
def test_systemd_socket_activate(site: Path, tmp_path: Path, free_port: int) -> None:
    # systemd-socket-activate listens, and starts krait at the first connection with
    # LISTEN_FDS=1 and LISTEN_PID set, as a .socket unit would.
    log = tmp_path / "log"
    out = open(log, "wb")  # noqa: SIM115
    proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{free_port}",
                             "-E", "PYTHONPATH", "-E", "KRAIT_LOOPS",
                             sys.executable, "-m", "krait", str(site), "--workers", "1",
                             "--access-log", "off"],
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    out.close()
    try:
        wait_for(lambda: "Listening on" in log.read_text(), what="the socket")
        with socket.create_connection(("127.0.0.1", free_port), timeout=30) as s:
            reader = HttpReader(s, timeout=30)
            assert get(s, reader, "/index.html")[2] == b"hello\n"
            assert get(s, reader, "/page.py")[2] == b"python from 127.0.0.1; listen=None"
        assert "socket activation: 1 inherited socket" in log.read_text()
        assert f"http://127.0.0.1:{free_port}/" in log.read_text()
    finally:
        stop(proc)
