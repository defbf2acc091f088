"""The JSON access log's ``remote`` behind trusted HTTP proxies: the client X-Forwarded-For
names, resolved in the core (native/src/xff.c) exactly as the worker resolves
``krait.request.remote_addr``, for static files and Python pages alike; ``peer`` holds the
connection's own address when it differs. From an untrusted peer, and on a connection that
began with a PROXY protocol header, the header changes nothing.

Run with KRAIT_LOOPS=3 and KRAIT_LOOPS=1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import HttpReader, KraitProcess, write_site
from tests.integration.test_access_log_json import wait_lines

WHO = ("import krait\n"
       "krait.response = krait.Response('HTTP/1.1', 200, [('Content-Type', 'text/plain')],\n"
       "    krait.request.remote_addr)\n")

#: X-Forwarded-For lines (several lines are one list), behind --trusted-proxy 127.0.0.1 and
#: 10.0.0.0/8.
CHAINS = [
    [],
    ["6.6.6.6, 203.0.113.9, 10.1.2.3"],     # from the right: 10.1.2.3 trusted, the client next
    ["10.0.0.2, 10.0.0.3"],                 # all trusted: the leftmost
    ["203.0.113.9:8080"],                   # a port: no address, the peer
    ["fe80::1%eth0"],                       # a zone id: the peer
    ["[2001:DB8::0001]"],                   # brackets, written canonically
    ["::ffff:198.51.100.4"],                # IPv4-mapped
    ["not-an-ip, 198.51.100.5"],
    ["198.51.100.6", "10.0.0.5"],           # two lines
    ["198.51.100.7, 10.0.0.4", " , 10.0.0.5"],
    [""],
]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site", {"who.py": WHO, "a.txt": "static a\n"})


def ask(server: KraitProcess, chains: list[list[str]]) -> list[str]:
    """For each chain: GET /a.txt, then GET /who on one connection; what the page said."""
    said = []
    with server.connect() as s:
        r = HttpReader(s)
        for i, chain in enumerate(chains):
            fwd = "".join(f"X-Forwarded-For: {v}\r\n" for v in chain)
            for target in (f"/a.txt?c={i}", f"/who?c={i}"):
                s.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n{fwd}\r\n".encode())
                status, _, body = r.read()
                assert status == 200
            said.append(body.decode())
    return said


def test_trusted_proxy_chains(site: Path, krait_server) -> None:  # noqa: ANN001
    server = krait_server(site, "--access-log-format", "json", "--trusted-proxy", "127.0.0.1",
                          "--trusted-proxy", "10.0.0.0/8")
    said = ask(server, CHAINS)
    recs = wait_lines(server, 2 * len(CHAINS))
    expected = ["127.0.0.1", "203.0.113.9", "10.0.0.2", "127.0.0.1", "127.0.0.1",
                "2001:db8::1", "::ffff:198.51.100.4", "198.51.100.5", "198.51.100.6",
                "198.51.100.7", "127.0.0.1"]
    assert said == expected
    for i, remote in enumerate(said):
        for path in (f"/a.txt?c={i}", f"/who?c={i}"):
            (rec,) = [r for r in recs if r["path"] == path]
            assert rec["remote"] == remote, (CHAINS[i], rec)
            assert rec["peer"] == (None if remote == "127.0.0.1" else "127.0.0.1"), rec


def test_untrusted_peer_header_ignored(site: Path, krait_server) -> None:  # noqa: ANN001
    server = krait_server(site, "--access-log-format", "json", "--trusted-proxy", "10.0.0.0/8")
    said = ask(server, [["203.0.113.9"], ["10.0.0.1, 203.0.113.9"]])
    assert said == ["127.0.0.1", "127.0.0.1"]
    for rec in wait_lines(server, 4):
        assert rec["remote"] == "127.0.0.1" and rec["peer"] is None, rec


def test_after_a_proxy_header_the_client_is_final(site: Path, krait_server) -> None:  # noqa: ANN001
    server = krait_server(site, "--access-log-format", "json", "--proxy-protocol",
                          "--trusted-proxy", "127.0.0.1")
    with server.connect() as s:
        r = HttpReader(s)
        s.sendall(b"PROXY TCP4 198.51.100.1 127.0.0.1 1234 80\r\n")
        for target in ("/a.txt", "/who"):
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n"
                      "X-Forwarded-For: 203.0.113.9\r\n\r\n".encode())
            status, _, body = r.read()
            assert status == 200
    assert body == b"198.51.100.1"
    for rec in wait_lines(server, 2):
        assert rec["remote"] == "198.51.100.1" and rec["peer"] is None, rec
