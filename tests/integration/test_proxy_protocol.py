"""--proxy-protocol: a trusted proxy's connection starts with a PROXY protocol header (v1 text or
v2 binary), and the client it names is the connection's address: in the access log and in
``krait.request.remote_addr``. Raw sockets send the headers whole, split and malformed, from a
trusted and an untrusted peer, before plain HTTP and before a TLS handshake; a real HAProxy in
TCP mode sends them with ``send-proxy`` and ``send-proxy-v2``."""

from __future__ import annotations

import re
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HttpReader, KraitProcess, recv_all, write_site
from tests.integration.haproxy import HAProxy, free_port, haproxy_binary
from tests.integration.test_server_addr import cert

# Fixtures of this module's tests: HAProxy's, and the certificate for 127.0.0.1.
__all__ = ["cert", "haproxy_binary"]

WHO = ("import krait\n"
       "krait.response = krait.Response('HTTP/1.1', 200, [('Content-Type', 'text/plain')],\n"
       "    krait.request.remote_addr + ' ' + krait.request.scheme)\n")

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src: str, dst: str = "127.0.0.1", sport: int = 56324, dport: int = 8080) -> bytes:
    """A version 1 header for a TCP client at src."""
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: str | None, dst: str = "127.0.0.1", sport: int = 56324, dport: int = 8080,
       tlvs: bytes = b"", local: bool = False) -> bytes:
    """A version 2 header (PROXY, or LOCAL without an address) with optional TLVs."""
    if local or src is None:
        return V2_SIG + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    if ":" in src:
        dst = dst if ":" in dst else "::1"
        block = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
                 + struct.pack("!HH", sport, dport))
        fam = 0x21
    else:
        block = (socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport))
        fam = 0x11
    body = block + tlvs
    return V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def get(path: str, close: bool = True) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n"
            f"{'Connection: close' if close else 'X-A: b'}\r\n\r\n").encode()


def ask(server: KraitProcess, data: bytes | list[bytes], pause: float = 0.0) -> bytes:
    """Send data (several sends, with a pause between them) on a new connection; return all
    that comes back until the server closes."""
    parts = data if isinstance(data, list) else [data]
    with server.connect() as s:
        for part in parts:
            s.sendall(part)
            if pause:
                time.sleep(pause)
        return recv_all(s)


def closed_silently(s: socket.socket) -> bool:
    """The server closed the connection without sending a byte (a reset counts: it closed
    with the refused bytes unread)."""
    try:
        return recv_all(s) == b""
    except ConnectionResetError:
        return True


def body_of(response: bytes) -> str:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response[:300]
    return body.decode()


def access_lines(server: KraitProcess, path: str, want: int = 1) -> list[str]:
    """The access-log lines of requests for path, once at least ``want`` are written."""
    deadline = time.monotonic() + 5
    while True:
        lines = [ln for ln in server.access_log().splitlines() if f'"GET {path} ' in ln]
        if len(lines) >= want or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site", {"who.py": WHO, "index.html": "hello\n"})


@pytest.fixture
def trusted(site: Path, krait_server) -> KraitProcess:  # noqa: ANN001
    """krait trusting the test's own address (127.0.0.1) as a PROXY protocol sender."""
    return krait_server(site, "--proxy-protocol", "--trusted-proxy", "127.0.0.1/32",
                        "--header-timeout", "2")


# ---- from a trusted proxy -------------------------------------------------------------------

@pytest.mark.parametrize("header, client", [
    (v1("203.0.113.9"), "203.0.113.9"),
    (v1("2001:db8::9", "2001:db8::1"), "2001:db8::9"),
    (v2("203.0.113.10"), "203.0.113.10"),
    (v2("2001:db8::10"), "2001:db8::10"),
    # TLVs (ALPN, authority, a NOOP) are skipped.
    (v2("198.51.100.4", tlvs=b"\x01\x00\x08http/1.1\x02\x00\x01x\x04\x00\x00"), "198.51.100.4"),
], ids=["v1-tcp4", "v1-tcp6", "v2-ipv4", "v2-ipv6", "v2-tlvs"])
def test_the_header_names_the_client(trusted: KraitProcess, header: bytes, client: str) -> None:
    assert body_of(ask(trusted, header + get("/who"))) == f"{client} http"
    lines = access_lines(trusted, "/who")
    assert len(lines) == 1 and lines[0].startswith(f"{client} - - ["), lines


@pytest.mark.parametrize("header", [v2(None, local=True), b"PROXY UNKNOWN\r\n",
                                    b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n"],
                         ids=["v2-local", "v1-unknown", "v1-unknown-with-addresses"])
def test_local_and_unknown_keep_the_socket_address(trusted: KraitProcess, header: bytes) -> None:
    assert body_of(ask(trusted, header + get("/who"))) == "127.0.0.1 http"


@pytest.mark.parametrize("header", [v1("203.0.113.77"), v2("203.0.113.77"),
                                    v2("2001:db8::77")], ids=["v1", "v2-ipv4", "v2-ipv6"])
def test_split_across_sends(trusted: KraitProcess, header: bytes) -> None:
    client = "2001:db8::77" if b"\x21\x21" in header else "203.0.113.77"
    data = header + get("/who")
    # Byte by byte through the header, then the request.
    parts = [header[i:i + 1] for i in range(len(header))] + [get("/who")]
    assert body_of(ask(trusted, parts, pause=0.005)) == f"{client} http"
    # Cut at a few places, one of them inside the request.
    for cut in (1, 5, 12, 13, 15, 16, len(header) - 1, len(header) + 3):
        parts = [data[:cut], data[cut:]]
        assert body_of(ask(trusted, parts, pause=0.05)) == f"{client} http", cut


def test_keep_alive_static_and_python_keep_the_address(trusted: KraitProcess) -> None:
    # One connection: a static file (any loop), a Python page (moved to the hub with
    # --loops > 1), static again (back home), Python again: the address goes with it.
    with trusted.connect() as s:
        s.sendall(v2("192.0.2.33"))
        reader = HttpReader(s)
        for path in ("/index.html", "/who", "/index.html", "/who"):
            s.sendall(get(path, close=False))
            status, _, body = reader.read()
            assert status == 200
            if path == "/who":
                assert body == b"192.0.2.33 http"
    lines = access_lines(trusted, "/index.html", 2) + access_lines(trusted, "/who", 2)
    assert len(lines) == 4 and all(ln.startswith("192.0.2.33 - - [") for ln in lines), lines


def test_many_connections_each_their_own_client(trusted: KraitProcess) -> None:
    for i in range(1, 25):
        header = v1(f"10.9.8.{i}") if i % 2 else v2(f"10.9.8.{i}")
        assert body_of(ask(trusted, header + get("/who"))) == f"10.9.8.{i} http"
        assert ask(trusted, header + get("/index.html")).endswith(b"hello\n")
    clients = {ln.split(" ")[0] for ln in access_lines(trusted, "/index.html", 24)}
    assert clients == {f"10.9.8.{i}" for i in range(1, 25)}


def test_forwarded_headers_after_a_proxy_header_are_the_clients(site: Path,
                                                                 krait_server) -> None:  # noqa: ANN001
    # The client a PROXY header names is trusted too (127.0.0.0/8), yet what it writes in
    # X-Forwarded-For / -Proto is its own claim, not a proxy's: the header's address stands.
    server = krait_server(site, "--proxy-protocol", "--trusted-proxy", "127.0.0.0/8")
    fwd = (b"GET /who HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.7\r\n"
           b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n")
    assert body_of(ask(server, v1("127.0.0.5") + fwd)) == "127.0.0.5 http"
    # UNKNOWN keeps the proxy's address, but the bytes are still a relayed client's.
    assert body_of(ask(server, b"PROXY UNKNOWN\r\n" + fwd)) == "127.0.0.1 http"
    # LOCAL too: HAProxy sends it for a relayed client whose address is not IP (a unix@ or
    # abns@ frontend), so its X-Forwarded-* are never the proxy's word.
    assert body_of(ask(server, v2(None, local=True) + fwd)) == "127.0.0.1 http"


@pytest.mark.parametrize("data", [
    get("/who"),                                           # no header at all
    b"PROXY TCP4 203.0.113.9 127.0.0.1 1 2\n" + get("/who"),   # bare LF
    b"PROXY TCP4 203.0.113.999 127.0.0.1 1 2\r\n" + get("/who"),
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n" + get("/who"),
    b"PROXY UNKNOWN " + b"f" * 200 + b"\r\n" + get("/who"),  # past 107 bytes
    V2_SIG + b"\x21\x11\xff\xff" + b"\x00" * 64,           # length over the bound
    V2_SIG + b"\x22\x11\x00\x0c" + b"\x00" * 12,           # command 2
    V2_SIG + b"\x21\x12\x00\x0c" + b"\x00" * 12,           # UDP
    V2_SIG + b"\x21\x11\x00\x0b" + b"\x00" * 11,           # address block too short
    V2_SIG + b"\x21\x11\x00\x10" + b"\x00" * 12 + b"\x01\x00\x09x",  # TLV past the end
], ids=["none", "bare-lf", "bad-address", "tcp5", "too-long", "v2-too-long", "v2-cmd",
        "v2-udp", "v2-short", "v2-tlv"])
def test_malformed_from_a_trusted_peer_is_400_and_close(trusted: KraitProcess,
                                                       data: bytes) -> None:
    answer = ask(trusted, data)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"Connection: close" in answer
    # The server goes on serving.
    assert body_of(ask(trusted, v1("203.0.113.1") + get("/who"))) == "203.0.113.1 http"


def test_a_header_that_never_completes_is_closed_at_the_header_timeout(
        trusted: KraitProcess) -> None:
    with trusted.connect(timeout=10) as s:
        s.sendall(b"PROXY TCP4 203.0.113.9 ")
        start = time.monotonic()
        assert recv_all(s, timeout=8) == b""  # closed, nothing sent: no HTTP was spoken
        assert 1.0 < time.monotonic() - start < 6
    with trusted.connect(timeout=10) as s:
        s.sendall(v2("203.0.113.9")[:20])
        assert recv_all(s, timeout=8) == b""


# ---- from an untrusted peer -------------------------------------------------------------------

def test_untrusted_peer_is_served_and_cannot_send_a_header(site: Path,
                                                           krait_server) -> None:  # noqa: ANN001
    server = krait_server(site, "--proxy-protocol", "--trusted-proxy", "10.0.0.0/8")
    # No header: served as ever, with its socket address.
    assert body_of(ask(server, get("/who"))) == "127.0.0.1 http"
    # A header from it is not a proxy's: a bad request, and the connection closes.
    for header in (v1("203.0.113.9"), v2("203.0.113.9")):
        answer = ask(server, header + get("/who"))
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    deadline = time.monotonic() + 5
    while len(server.access_log().splitlines()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = server.access_log().splitlines()
    assert len(lines) == 3 and all(ln.startswith("127.0.0.1 - - [") for ln in lines), lines
    assert " 400 " in lines[1] and " 400 " in lines[2], lines


def test_the_option_needs_trusted_proxies(site: Path) -> None:
    import sys

    p = subprocess.run([sys.executable, "-m", "krait", str(site), "--proxy-protocol"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--proxy-protocol needs --trusted-proxy" in p.stderr


def test_unix_socket_peers(site: Path, tmp_path: Path, krait_server) -> None:  # noqa: ANN001
    path = tmp_path / "k.sock"
    krait_server(site, "--unix", str(path), "--proxy-protocol", "--trusted-proxy", "unix")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(v2("203.0.113.50") + get("/who"))
        assert body_of(recv_all(s)) == "203.0.113.50 http"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(get("/who"))
        assert recv_all(s).startswith(b"HTTP/1.1 400 ")


# ---- TLS: the header comes before the handshake ------------------------------------------------

def tls_site(root: Path, cert: tuple[Path, Path]) -> Path:
    return write_site(root, {
        ".py/init.py": (f"from krait import config\n"
                        f"config.ssl_certificate_path = {str(cert[0])!r}\n"
                        f"config.ssl_private_key_path = {str(cert[1])!r}\n"),
        "who.py": WHO,
        "index.html": "hello\n",
    })


def https_port(server: KraitProcess) -> int:
    m = re.search(r"https://127\.0\.0\.1:(\d+)/", server.log())
    assert m, server.log()
    return int(m.group(1))


def test_tls_header_before_the_handshake(tmp_path: Path, cert: tuple[Path, Path],
                                         krait_server) -> None:  # noqa: ANN001
    server = krait_server(tls_site(tmp_path / "s", cert), "--https-port", "0",
                          "--proxy-protocol", "--trusted-proxy", "127.0.0.1")
    port = https_port(server)
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    for header, client in ((v1("203.0.113.9"), "203.0.113.9"),
                           (v2("2001:db8::5"), "2001:db8::5"),
                           (v2(None, local=True), "127.0.0.1")):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            # Split: part of the header, a pause, the rest; then the handshake.
            raw.sendall(header[:7])
            time.sleep(0.05)
            raw.sendall(header[7:])
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(get("/who"))
                assert body_of(recv_all(s)) == f"{client} https"
    # Malformed, or a handshake without a header: closed, nothing sent back.
    for data in (b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n", b"\x16\x03\x01\x00\x05hello"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(data)
            assert closed_silently(raw)
    assert "203.0.113.9 - - [" in server.access_log()
    assert "2001:db8::5 - - [" in server.access_log()


# ---- a real HAProxy in TCP mode ---------------------------------------------------------------

def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def behind_haproxy(tmp_path: Path, cert: tuple[Path, Path], krait_server,  # noqa: ANN001
                   haproxy_binary: str) -> Iterator[tuple[dict[str, int], KraitProcess]]:
    """krait (HTTP and HTTPS) behind HAProxy in TCP mode: frontends that send v1 and v2
    headers to each port; IPv6 frontends too when ::1 works."""
    server = krait_server(tls_site(tmp_path / "s", cert), "--https-port", "0",
                          "--proxy-protocol", "--trusted-proxy", "127.0.0.1")
    kport, kport_tls = server.port, https_port(server)
    fronts = {"v1": free_port(), "v2": free_port(), "v2tls": free_port(), "v1tls": free_port()}
    binds = {name: f"127.0.0.1:{port}" for name, port in fronts.items()}
    if ipv6_loopback():
        fronts["v2six"] = free_port("::1")
        binds["v2six"] = f"[::1]:{fronts['v2six']}"
    config = ["global", "    maxconn 200", "", "defaults", "    mode tcp",
              "    timeout connect 5s", "    timeout client 30s", "    timeout server 30s", ""]
    for name in fronts:
        send = "send-proxy-v2" if name.startswith("v2") else "send-proxy"
        target = kport_tls if name.endswith("tls") else kport
        config += [f"frontend f_{name}", f"    bind {binds[name]}", f"    default_backend b_{name}",
                   "", f"backend b_{name}", f"    server k 127.0.0.1:{target} {send}", ""]
    # Health checks over the PROXY protocol (HAProxy sends them with its own address, or a
    # LOCAL header): they must be answered, or HAProxy would mark krait down.
    for name, send in (("chk1", "send-proxy"), ("chk2", "send-proxy-v2")):
        config += [f"backend b_{name}", f"    option httpchk GET /index.html?{name}",
                   "    http-check expect status 200",
                   f"    server k 127.0.0.1:{kport} {send} check inter 200", ""]
    path = tmp_path / "haproxy.cfg"
    path.write_text("\n".join(config))
    proxy = HAProxy(haproxy_binary, path, fronts["v1"])
    try:
        yield fronts, server
    finally:
        proxy.stop()


def through(port: int, data: bytes, source: str = "127.0.0.2", host: str = "127.0.0.1",
            tls_ca: Path | None = None) -> bytes:
    """Connect to HAProxy from ``source`` and send data (over TLS, end to end with krait, when
    tls_ca is given)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam) as raw:
        raw.settimeout(5)
        raw.bind((source, 0))
        raw.connect((host, port))
        if tls_ca is None:
            raw.sendall(data)
            return recv_all(raw)
        ctx = ssl.create_default_context(cafile=str(tls_ca))
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(data)
            return recv_all(s)


def test_haproxy_send_proxy_v1_and_v2(behind_haproxy, cert: tuple[Path, Path]) -> None:  # noqa: ANN001
    fronts, server = behind_haproxy
    # The client connects to HAProxy from 127.0.0.2; HAProxy connects to krait from
    # 127.0.0.1 (the trusted proxy) and names 127.0.0.2 in its header.
    for name in ("v1", "v2"):
        assert body_of(through(fronts[name], get("/who"))) == "127.0.0.2 http", name
        keep = through(fronts[name], get("/index.html", close=False) + get("/who"))
        assert keep.endswith(b"127.0.0.2 http"), keep[-200:]
    for name in ("v1tls", "v2tls"):
        answer = through(fronts[name], get("/who"), tls_ca=cert[0])
        assert body_of(answer) == "127.0.0.2 https", name
    lines = access_lines(server, "/who", 6)
    assert len(lines) == 6 and all(ln.startswith("127.0.0.2 - - [") for ln in lines), lines
    # The client itself (127.0.0.1 is trusted) must send a header: without one, 400.
    assert ask(server, get("/who")).startswith(b"HTTP/1.1 400 ")


def test_haproxy_send_proxy_v2_ipv6_client(behind_haproxy) -> None:  # noqa: ANN001
    fronts, _ = behind_haproxy
    if "v2six" not in fronts:
        pytest.skip("no IPv6 loopback")
    answer = through(fronts["v2six"], get("/who"), source="::1", host="::1")
    assert body_of(answer) == "::1 http"


def test_haproxy_health_checks_pass(behind_haproxy) -> None:  # noqa: ANN001
    _, server = behind_haproxy
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = server.access_log()
        if all(re.search(rf'^127\.0\.0\.1 - - \[.*"GET /index\.html\?{name} HTTP/1\.\d" 200 ',
                         log, re.M) for name in ("chk1", "chk2")):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"no answered health check:\n{server.access_log()}")
    assert '" 400 ' not in server.access_log()
