"""Property: the core's X-Forwarded-For walk for the access log (native/src/xff.c, reached
through ``krait_xff_client``) gives the address ``TrustedProxies.resolve`` gives the page as
``krait.request.remote_addr``, on random chains of valid, trusted, mapped, bracketed, padded
and broken hops. The header bytes reach Python as the worker decodes them (UTF-8 with
surrogateescape) and joined as the worker joins several lines."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from krait._core import ffi, lib
from krait._proxy import TrustedProxies

SPECS = ["10.0.0.0/8", "127.0.0.1", "::1", "2001:db8::/32", "unix", "192.168.0.0/16",
         "::ffff:0:0/96", "0.0.0.0/0"]
PEERS = ["127.0.0.1", "10.1.2.3", "192.0.2.1", "::1", "2001:db8::5", "unix",
         "::ffff:10.0.0.1", "192.168.7.7"]
HOPS = [
    "203.0.113.9", "10.0.0.7", "127.0.0.1", "192.168.1.1", "::1", "2001:db8::1",
    "2001:DB8::0001", "[2001:db8::1]", "[10.0.0.1]", "::ffff:10.0.0.9", "::ffff:1.2.3.4",
    "::FFFF:203.0.113.9", "::1.2.3.4", "1.2.3.4:80", "[::1]:80", "fe80::1%eth0", "unix",
    "01.2.3.4", "1.2.3.04", "256.1.1.1", "1.2.3", "1.2.3.4.5", "::", ":::", "1::2::3",
    "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1::2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7:8:9", "0:0:0:0:0:0:0:0", "0000:0:0:1:0:0:0:0", "1:0:0:2:0:0:0:3",
    "00001::", "a:b:c:d:e:f:1.2.3.4", "::ffff:0.0.0.0", "1.2.3.4/32", "[", "]", "[]",
    "not-an-ip", "", " ", "\t10.0.0.1\t", "\u00a01.2.3.4\u3000", "\u20001.2.3.4\u2029",
    "\u0085::1", "1.2.3.\u0664", "\udcff1.2.3.4", "１.2.3.4", "fe80::1%", "%",
]


def _ip_text(raw: bytes, style: int) -> str:
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    ip = ipaddress.IPv6Address(raw)
    return [ip.compressed, ip.exploded, ip.exploded.upper(), f"[{ip.compressed}]"][style]


hop = st.one_of(
    st.sampled_from(HOPS),
    st.builds(_ip_text, st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16),
              st.integers(0, 3)),
    st.text(alphabet="0123456789abcdefABCDEF:.[]% \t,", max_size=12),
    st.binary(max_size=8).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
line = st.lists(st.tuples(hop, st.sampled_from([",", ", ", " ,", ",,"])), max_size=6).map(
    lambda hs: "".join(h + sep for h, sep in hs)[:-1] if hs else "")


def c_resolve(specs: list[str], peer: str, lines: list[bytes]) -> str:
    """What the access log writes as remote."""
    c_specs = [ffi.new("char[]", s.encode()) for s in specs]
    c_lines = [ffi.new("char[]", v) for v in lines]
    out = ffi.new("char[48]")
    rc = lib.krait_xff_client(c_specs, len(specs), peer.encode(), c_lines,
                              [len(v) for v in lines], len(lines), out)
    assert rc in (0, 1)
    text = ffi.string(out).decode()
    assert (rc == 1) == (text != peer)
    return text


def py_resolve(specs: list[str], peer: str, lines: list[bytes]) -> str:
    """What the worker sets as remote_addr (krait/worker.py ``client``)."""
    fwd_for = None
    for v in lines:
        value = v.decode("utf-8", "surrogateescape")
        fwd_for = value if fwd_for is None else f"{fwd_for},{value}"
    proxies = TrustedProxies(specs)
    if not proxies:
        return peer
    return proxies.resolve(peer, fwd_for, None, "http")[0]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(SPECS), max_size=4, unique=True), st.sampled_from(PEERS),
       st.lists(line, max_size=3))
@example(["127.0.0.1", "10.0.0.0/8"], "127.0.0.1", ["6.6.6.6, 203.0.113.9, 10.1.2.3"])
@example(["127.0.0.1"], "127.0.0.1", ["::ffff:1.2.3.4"])
@example(["127.0.0.1"], "127.0.0.1", ["", ""])
def test_core_and_worker_agree(specs: list[str], peer: str, lines: list[str]) -> None:
    raw = [v.encode("utf-8", "surrogateescape") for v in lines]
    assert c_resolve(specs, peer, raw) == py_resolve(specs, peer, raw)


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=60))
def test_any_bytes_agree(value: bytes) -> None:
    specs = ["0.0.0.0/0", "::/0"]
    assert c_resolve(specs, "10.0.0.1", [value]) == py_resolve(specs, "10.0.0.1", [value])
    specs = ["127.0.0.1"]
    assert c_resolve(specs, "127.0.0.1", [value]) == py_resolve(specs, "127.0.0.1", [value])
