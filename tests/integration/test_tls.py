"""HTTPS in the core: a test CA and server certificate made with the openssl command, requests
verifying against the CA, openssl s_client for versions and ALPN, hostile TLS input, and a
client over memory BIOs that sees the server's TLS records (how responses are packed)."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import HttpReader, write_site


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=krait test CA",
             cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    _openssl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:sesame",
             "-out", "server-enc.key", cwd=d)
    return d


def _site(root: Path, pki: Path, extra: str = "", key: str = "server.key",
          passphrase: str | None = None) -> Path:
    init = (f"from krait import config\n"
            f"config.ssl_certificate_path = {str(pki / 'server.pem')!r}\n"
            f"config.ssl_private_key_path = {str(pki / key)!r}\n")
    if passphrase is not None:
        init += f"config.ssl_key_passphrase = {passphrase!r}\n"
    init += extra
    return write_site(root, {
        ".py/init.py": init,
        "index.html": "<p>secure</p>\n",
        "big.bin": bytes(range(256)) * 4096,
        "kb.bin": KB,
        "hello.py": "import krait\nkrait.response = krait.Response('HTTP/1.1', 200, "
                    "[('Content-Type', 'text/plain')], 'dynamic ' + krait.request.scheme)\n",
        "file.py": "import krait\nfrom krait.response import FileResponse\n"
                   "krait.response = FileResponse('kb.bin')\n",
        "stream.py": "import krait\nn = int(krait.request.query.get('n', '3'))\n"
                     "krait.response = krait.Response('HTTP/1.1', 200, [], "
                     "(('%06d;' % i) * 100 for i in range(n)))\n",
    })


KB = bytes((i * 7) % 256 for i in range(1024))
BIG = bytes(range(256)) * 4096


def _https_port(server) -> int:
    m = re.search(r"https://127\.0\.0\.1:(\d+)/", server.log())
    assert m, server.log()
    return int(m.group(1))


def test_https_static_dynamic_and_keepalive(tmp_path, pki, krait_server):
    server = krait_server(_site(tmp_path / "s", pki), "--https-port", "0")
    port = _https_port(server)
    s = requests.Session()
    base = f"https://localhost:{port}"
    r = s.get(base + "/", verify=str(pki / "ca.pem"))
    assert r.status_code == 200 and r.text == "<p>secure</p>\n"
    r = s.get(base + "/big.bin", verify=str(pki / "ca.pem"))
    assert r.content == bytes(range(256)) * 4096
    r = s.get(base + "/hello", verify=str(pki / "ca.pem"))
    assert r.text == "dynamic https"
    r = s.get(base + "/big.bin", headers={"Range": "bytes=10-19"}, verify=str(pki / "ca.pem"))
    assert r.status_code == 206 and r.content == (bytes(range(256)) * 4096)[10:20]
    # Plain HTTP still works on its own port.
    assert requests.get(server.url + "/hello").text == "dynamic http"


def test_pipelining_over_tls(tmp_path, pki, krait_server):
    server = krait_server(_site(tmp_path / "s", pki), "--https-port", "0")
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with socket.create_connection(("127.0.0.1", _https_port(server)), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
            reader = HttpReader(s)
            for _ in range(20):
                status, _, body = reader.read()
                assert (status, body) == (200, b"<p>secure</p>\n")


def test_protocol_versions_and_alpn(tmp_path, pki, krait_server):
    server = krait_server(_site(tmp_path / "s", pki), "--https-port", "0")
    port = _https_port(server)

    def s_client(*args: str) -> str:
        p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                            "-CAfile", str(pki / "ca.pem"), *args], input=b"",
                           capture_output=True, timeout=30)
        return (p.stdout + p.stderr).decode(errors="replace")

    out = s_client("-tls1_3", "-alpn", "http/1.1")
    assert "TLSv1.3" in out and "ALPN protocol: http/1.1" in out
    assert "TLSv1.2" in s_client("-tls1_2")
    for old in ("-tls1", "-tls1_1"):
        out = s_client(old)
        assert "Cipher is (NONE)" in out or "alert" in out or "no protocols" in out, out
    out = s_client("-alpn", "h2")
    assert "No ALPN negotiated" in out


def test_session_resumption(tmp_path, pki, krait_server):
    server = krait_server(_site(tmp_path / "s", pki), "--https-port", "0")
    port = _https_port(server)
    sess = tmp_path / "sess.pem"
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
            str(pki / "ca.pem"), "-tls1_2"]
    subprocess.run([*base, "-sess_out", str(sess)], input=b"", capture_output=True, timeout=30)
    p = subprocess.run([*base, "-sess_in", str(sess)], input=b"", capture_output=True,
                       timeout=30)
    assert b"Reused, TLSv1.2" in p.stdout


def test_hostile_tls_input_costs_one_connection(tmp_path, pki, krait_server):
    server = krait_server(_site(tmp_path / "s", pki), "--https-port", "0")
    port = _https_port(server)
    # Plain HTTP to the TLS port: a readable 400, then close.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(4096)
        assert data.startswith(b"HTTP/1.1 400 ")
    # A garbage ClientHello and a truncated one.
    for junk in (b"\x16\x03\x01\x00\x05hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                 bytes(range(256))):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            try:  # the server may already have dropped the connection: that is the point
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                s.recv(4096)
            except OSError:
                pass
    r = requests.get(f"https://localhost:{port}/", verify=str(pki / "ca.pem"))
    assert r.status_code == 200
    assert "TLS handshake" in server.log()


def test_key_with_passphrase(tmp_path, pki, krait_server):
    server = krait_server(_site(tmp_path / "s", pki, key="server-enc.key", passphrase="sesame"),
                          "--https-port", "0")
    r = requests.get(f"https://localhost:{_https_port(server)}/", verify=str(pki / "ca.pem"))
    assert r.status_code == 200


@pytest.mark.parametrize("key,passphrase,needle", [
    ("server-enc.key", "wrong", "server-enc.key"),
    ("missing.key", None, "missing.key"),
    ("ca.key", None, "does not match"),
])
def test_bad_key_stops_startup(tmp_path, pki, key, passphrase, needle):
    site = _site(tmp_path / "s", pki, key=key, passphrase=passphrase)
    p = subprocess.run([sys.executable, "-m", "krait", str(site), "--host", "127.0.0.1",
                        "--port", "0", "--https-port", "0"], capture_output=True, timeout=60)
    assert p.returncode != 0
    err = p.stderr.decode()
    assert needle in err and "Traceback" not in err


def test_https_redirect_and_hsts(tmp_path, pki, krait_server):
    site = _site(tmp_path / "s", pki, extra="config.https_redirect = True\n"
                                            "config.hsts = 'max-age=600'\n")
    server = krait_server(site, "--https-port", "0")
    port = _https_port(server)
    r = requests.get(server.url + "/index.html?x=1", allow_redirects=False,
                     headers={"Host": "localhost:1234"})
    assert r.status_code == 301
    assert r.headers["Location"] == f"https://localhost:{port}/index.html?x=1"
    r = requests.get(f"https://localhost:{port}/", verify=str(pki / "ca.pem"))
    assert r.headers["Strict-Transport-Security"] == "max-age=600"


def test_sighup_reloads_certificate(tmp_path, pki, krait_server):
    site = _site(tmp_path / "s", pki)
    server = krait_server(site, "--https-port", "0")
    port = _https_port(server)
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))

    def serial() -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return int(s.getpeercert()["serialNumber"], 16)

    before = serial()
    (pki / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "3", "-extfile", "ext.cnf",
             cwd=pki)
    server.proc.send_signal(1)  # SIGHUP
    deadline = time.monotonic() + 10
    while serial() == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert serial() != before


# -- how responses are packed into TLS records ------------------------------------------------


class RecordClient:
    """TLS over a plain socket through memory BIOs: the test sees each record the server sends
    and which plaintext it carried (records without application data, such as TLS 1.3 session
    tickets, are left out)."""

    def __init__(self, port: int, ca: Path, version: ssl.TLSVersion | None = None) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        if version is not None:
            ctx.minimum_version = ctx.maximum_version = version
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")
        self.raw = b""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                assert data, "the server closed during the handshake"
                self.inc.write(data)
        self._flush()
        self.plain = b""     # received plaintext not yet returned by response()

    def _flush(self) -> None:
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def send(self, *requests: bytes) -> None:
        """Each request in its own record(s), all in one TCP write."""
        for r in requests:
            self.tls.write(r)
        self._flush()

    def record(self) -> bytes:
        """The plaintext of the next record that carries application data."""
        while True:
            while len(self.raw) < 5 or len(self.raw) < 5 + int.from_bytes(self.raw[3:5], "big"):
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError("connection closed")
                self.raw += data
            n = 5 + int.from_bytes(self.raw[3:5], "big")
            self.inc.write(self.raw[:n])
            self.raw = self.raw[n:]
            out = b""
            try:
                while True:
                    out += self.tls.read(65536)
            except ssl.SSLWantReadError:
                pass
            if out:
                return out

    def response(self, head_only: bool = False) -> tuple[bytes, bytes, list[int]]:
        """(head, body, the plaintext size of every record the response came in). A record
        may end with the start of the next response: the sizes count it in full."""
        sizes: list[int] = []

        def more() -> None:
            rec = self.record()
            sizes.append(len(rec))
            self.plain += rec

        while b"\r\n\r\n" not in self.plain:
            more()
        head, _, rest = self.plain.partition(b"\r\n\r\n")
        m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
        if head_only or b" 304 " in head.split(b"\r\n")[0]:
            n = 0
        elif m:
            n = int(m.group(1))
        else:
            assert b"chunked" in head.lower(), head
            while b"\r\n0\r\n\r\n" not in b"\r\n" + rest:
                more()
                rest = self.plain.partition(b"\r\n\r\n")[2]
            n = (b"\r\n" + rest).index(b"\r\n0\r\n\r\n") + 3
        while len(rest) < n:
            more()
            rest = self.plain.partition(b"\r\n\r\n")[2]
        self.plain = rest[n:]
        return head, rest[:n], sizes

    def close(self) -> None:
        self.sock.close()


def _dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, body = out + body[:size], body[size + 2:]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_small_responses_leave_in_one_record(tmp_path, pki, krait_server, version):
    """Head and body in one SSL_write: one record, one write, one TCP segment (as nginx)."""
    server = krait_server(_site(tmp_path / "s", pki), "--https-port", "0")
    c = RecordClient(_https_port(server), pki / "ca.pem", version)
    try:
        c.send(b"GET /kb.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body, sizes = c.response()
        assert head.startswith(b"HTTP/1.1 200 ") and body == KB
        assert sizes == [len(head) + 4 + 1024]
        etag = re.search(rb"\r\netag: *([^\r]+)", head, re.I).group(1)

        c.send(b"HEAD /kb.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body, sizes = c.response(head_only=True)
        assert re.search(rb"\r\nContent-Length: 1024(\r\n|$)", head) and sizes == [len(head) + 4]

        c.send(b"GET /kb.bin HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + b"\r\n\r\n")
        head, body, sizes = c.response()
        assert head.startswith(b"HTTP/1.1 304 ") and body == b"" and sizes == [len(head) + 4]

        c.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n")
        head, body, sizes = c.response()
        assert head.startswith(b"HTTP/1.1 206 ") and body == BIG[10:20]
        assert sizes == [len(head) + 4 + 10]

        # multipart/byteranges: head, part heads and file ranges, all in one record.
        c.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99,5000-5099,-100\r\n\r\n")
        head, body, sizes = c.response()
        assert head.startswith(b"HTTP/1.1 206 ") and b"multipart/byteranges" in head
        for part in (BIG[:100], BIG[5000:5100], BIG[-100:]):
            assert b"\r\n\r\n" + part + b"\r\n--" in body
        assert sizes == [len(head) + 4 + len(body)]

        # Worker answers: an inline body, a file sent by the core.
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body, sizes = c.response()
        assert body == b"dynamic https" and sizes == [len(head) + 4 + len(body)]
        c.send(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body, sizes = c.response()
        assert body == KB and sizes == [len(head) + 4 + 1024]
    finally:
        c.close()


def test_large_bodies_leave_in_full_records(tmp_path, pki, krait_server):
    server = krait_server(_site(tmp_path / "s", pki), "--https-port", "0")
    c = RecordClient(_https_port(server), pki / "ca.pem")
    try:
        c.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body, sizes = c.response()
        assert body == BIG
        # The head shares the first record with the start of the file; every record but the
        # last is full.
        assert sum(sizes) == len(head) + 4 + len(BIG)
        assert all(n == 16384 for n in sizes[:-1]) and 0 < sizes[-1] <= 16384
        c.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=100000-199999\r\n\r\n")
        head, body, sizes = c.response()
        assert body == BIG[100000:200000] and all(n == 16384 for n in sizes[:-1])
    finally:
        c.close()


def test_pipelined_records_are_all_answered(tmp_path, pki, krait_server):
    """Requests in separate records of one TCP write: OpenSSL reads them all ahead, so the
    server must come back for them itself (epoll no longer sees them), also after a worker
    answered one of them."""
    server = krait_server(_site(tmp_path / "s", pki), "--https-port", "0")
    c = RecordClient(_https_port(server), pki / "ca.pem")
    try:
        paths = [b"/hello", b"/kb.bin", b"/hello", b"/", b"/stream?n=50", b"/kb.bin", b"/file"]
        for _ in range(2):
            c.send(*(b"GET " + p + b" HTTP/1.1\r\nHost: x\r\n\r\n" for p in paths))
            bodies = [c.response()[1] for _ in paths]
            assert bodies[0] == bodies[2] == b"dynamic https"
            assert bodies[1] == bodies[5] == bodies[6] == KB
            assert bodies[3] == b"<p>secure</p>\n"
            assert _dechunk(bodies[4]) == b"".join(b"%06d;" % i * 100 for i in range(50))
    finally:
        c.close()


def test_slow_reader_gets_every_byte(tmp_path, pki, krait_server):
    """A client that does not read fills the socket (the server's send buffer grows to 4 MiB
    at most): the server retries its pending record (OpenSSL's rule) from a file, and while a
    stream keeps adding chunks behind it."""
    server = krait_server(_site(tmp_path / "s", pki), "--https-port", "0")
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with socket.create_connection(("127.0.0.1", _https_port(server)), timeout=10) as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n" * 6 +
                      b"GET /stream?n=10000 HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /kb.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(1)
            reader = HttpReader(s, timeout=10)
            for _ in range(6):
                assert reader.read()[2] == BIG
            time.sleep(1)
            status, headers, body = reader.read()
            assert headers["transfer-encoding"] == "chunked"
            assert body == b"".join(b"%06d;" % i * 100 for i in range(10000))
            assert reader.read()[2] == KB


def test_close_without_close_notify_logs_nothing(tmp_path, pki, krait_server):
    """Python's ssl (as many clients) closes without close_notify: that is an EOF, not a
    failed handshake, and no alert goes to the closed socket."""
    server = krait_server(_site(tmp_path / "s", pki), "--https-port", "0")
    port = _https_port(server)
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    for request in (b"GET /kb.bin HTTP/1.1\r\nHost: x\r\n\r\n", b""):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            if request:
                s.sendall(request)
                assert HttpReader(s).read()[2] == KB
            s.close()   # no unwrap(): no close_notify
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        c = RecordClient(port, pki / "ca.pem", version)
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[1] == b"dynamic https"
        c.close()
    # A connection that closes before its handshake is over is not worth a line either.
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    r = requests.get(f"https://localhost:{port}/kb.bin", verify=str(pki / "ca.pem"))
    assert r.content == KB
    time.sleep(0.5)
    log = server.log()
    assert "TLS handshake" not in log and "unexpected eof" not in log, log
    # A real handshake failure is still reported.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\x05hello")
        assert s.recv(4096)[:1] == b"\x15"   # an alert
    deadline = time.monotonic() + 5
    while "TLS handshake" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "TLS handshake with 127.0.0.1 failed" in server.log()


def test_stream_to_a_stalled_tls_client_is_held_back(tmp_path, pki, krait_server):
    """Backpressure through TLS: 140 MB of chunks to a client that reads nothing for a while
    leave the core's memory alone (the worker waits), then every byte arrives."""
    server = krait_server(_site(tmp_path / "s", pki), "--https-port", "0", "--workers", "1")
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    n = 200_000
    with socket.create_connection(("127.0.0.1", _https_port(server)), timeout=30) as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(f"GET /stream?n={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(2)  # the worker produces the 140 MB in well under that, unless held back
            rss = [int(line.split()[1]) for line in
                   Path(f"/proc/{server.proc.pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:")][0]
            assert rss < 64 * 1024, f"master RSS {rss} KiB"
            status, headers, body = HttpReader(s, timeout=30).read()
            assert status == 200 and headers["transfer-encoding"] == "chunked"
            assert len(body) == n * 700 and body[-700:] == b"%06d;" % (n - 1) * 100
