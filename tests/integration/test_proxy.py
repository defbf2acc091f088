"""--trusted-proxy: X-Forwarded-For/-Proto change krait.request only from a trusted peer."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from krait._proxy import TrustedProxies
from tests.conftest import write_site

WHO = ("import krait\n"
       "krait.response = krait.Response('HTTP/1.1', 200, [('Content-Type', 'text/plain')],\n"
       "    krait.request.remote_addr + ' ' + krait.request.scheme)\n")


@pytest.fixture
def site(tmp_path):
    return write_site(tmp_path / "site", {"who.py": WHO})


def test_untrusted_peer_headers_ignored(site, krait_server):
    server = krait_server(site, "--trusted-proxy", "10.0.0.0/8")
    r = requests.get(server.url + "/who", headers={"X-Forwarded-For": "1.2.3.4",
                                                  "X-Forwarded-Proto": "https"})
    assert r.text == "127.0.0.1 http"


def test_trusted_peer_sets_client_and_scheme(site, krait_server):
    server = krait_server(site, "--trusted-proxy", "127.0.0.1", "--trusted-proxy", "10.0.0.0/8")
    r = requests.get(server.url + "/who", headers={
        "X-Forwarded-For": "6.6.6.6, 203.0.113.9, 10.1.2.3", "X-Forwarded-Proto": "https"})
    # Read from the right: 10.1.2.3 is a trusted hop, 203.0.113.9 the client; 6.6.6.6 is what
    # the client claimed and is never believed.
    assert r.text == "203.0.113.9 https"
    assert requests.get(server.url + "/who").text == "127.0.0.1 http"
    r = requests.get(server.url + "/who", headers={"X-Forwarded-For": "not-an-ip"})
    assert r.text == "127.0.0.1 http"


@pytest.mark.parametrize("xff,expected", [
    ("fe80::1%<img src=x onerror=alert(1)>", "127.0.0.1"),   # a zone id carries any text
    ("fe80::1%eth0", "127.0.0.1"),
    ("203.0.113.9:8080", "127.0.0.1"),                       # a port is not an address
    ("[2001:DB8::0001]", "2001:db8::1"),                     # parsed, then written canonically
    ("<script>", "127.0.0.1"),
])
def test_trusted_forwarded_for_is_a_parsed_address(site, krait_server, xff, expected):
    server = krait_server(site, "--trusted-proxy", "127.0.0.1")
    r = requests.get(server.url + "/who", headers={"X-Forwarded-For": xff})
    assert r.text == f"{expected} http"


def test_bad_trusted_proxy_is_a_one_line_error(site):
    p = subprocess.run([sys.executable, "-m", "krait", str(site), "--trusted-proxy", "nope"],
                       capture_output=True, timeout=30)
    assert p.returncode != 0
    assert b"--trusted-proxy" in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("peer,xff,proto,expected", [
    ("192.0.2.1", "1.1.1.1", "https", ("192.0.2.1", "http")),
    ("10.0.0.1", "1.1.1.1", "https", ("1.1.1.1", "https")),
    ("10.0.0.1", "10.0.0.2, 10.0.0.3", None, ("10.0.0.2", "http")),
    ("10.0.0.1", None, "HTTPS", ("10.0.0.1", "https")),
    ("10.0.0.1", None, "ftp", ("10.0.0.1", "http")),
    ("10.0.0.1", "2001:db8::1", None, ("2001:db8::1", "http")),
    ("::ffff:10.0.0.1", "1.1.1.1", None, ("1.1.1.1", "http")),
])
def test_resolve(peer, xff, proto, expected):
    assert TrustedProxies(["10.0.0.0/8"]).resolve(peer, xff, proto, "http") == expected
