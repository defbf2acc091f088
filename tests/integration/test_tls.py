"""HTTPS in the core: a test CA and server certificate made with the openssl command, requests
verifying against the CA, openssl s_client for versions and ALPN, and hostile TLS input."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
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
        "hello.py": "import krait\nkrait.response = krait.Response('HTTP/1.1', 200, "
                    "[('Content-Type', 'text/plain')], 'dynamic ' + krait.request.scheme)\n",
    })


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
    p = subprocess.run(["python", "-m", "krait", str(site), "--host", "127.0.0.1", "--port", "0",
                        "--https-port", "0"], capture_output=True, timeout=60)
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
