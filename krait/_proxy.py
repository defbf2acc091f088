"""Trusted reverse proxies (``--trusted-proxy``): only a request that reaches krait from one of
them may change ``krait.request.remote_addr`` (``X-Forwarded-For``) and ``scheme``
(``X-Forwarded-Proto``). From anyone else those headers are ignored, since a client can send
whatever it likes."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


#: ``--trusted-proxy unix``: trust whoever connects through krait's Unix socket (``--unix``),
#: whose peer address is this word.
UNIX = "unix"


def parse_proxy(spec: str) -> Network | None:
    """An address or a network (``10.0.0.5``, ``10.0.0.0/8``, ``::1``), or None for ``unix``
    (peers on the Unix socket); ValueError otherwise."""
    if spec.strip().lower() == UNIX:
        return None
    return ipaddress.ip_network(spec.strip(), strict=False)


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address from a header (``203.0.113.5``, ``2001:db8::1``, ``[2001:db8::1]``), or
    ``None`` for anything else. IPv6 zone ids (``fe80::1%eth0``) are refused: they mean
    nothing beyond the proxy's own link and may carry any text."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def format_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The address as text: ``str(ip)``, but an IPv4-mapped IPv6 address is ``::ffff:a.b.c.d``
    on every Python version (3.13 writes it so; older ones wrote ``::ffff:a0b:c0d``), as the
    core writes a socket's peer and the JSON access log's ``remote`` (native/src/xff.c)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


class TrustedProxies:
    """The set of trusted proxy networks.

    :param specs: addresses or networks, as given to ``--trusted-proxy``.
    """

    def __init__(self, specs: Iterable[str] = ()) -> None:
        parsed = [parse_proxy(s) for s in specs]
        self.networks: list[Network] = [n for n in parsed if n is not None]
        #: Peers on the Unix socket are trusted (``--trusted-proxy unix``).
        self.unix = any(n is None for n in parsed)

    def __bool__(self) -> bool:
        return bool(self.networks) or self.unix

    def trusts(self, addr: str) -> bool:
        """Is this peer (the socket's address) a trusted proxy?"""
        if addr == UNIX:
            return self.unix
        return self._trusts_ip(addr)

    def _trusts_ip(self, addr: str) -> bool:
        """Is this address (of a socket, or a hop of ``X-Forwarded-For``) trusted? The word
        ``unix`` in a header is never an address."""
        ip = parse_address(addr)
        if ip is None:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def resolve(self, peer: str, forwarded_for: str | None, forwarded_proto: str | None,
                scheme: str) -> tuple[str, str]:
        """The client's address and the scheme it used.

        ``X-Forwarded-For`` is read from the right: each trusted hop is skipped and the first
        untrusted address is the client (an address a client wrote itself further left is never
        believed). ``X-Forwarded-Proto`` counts only its last value, the nearest proxy's.
        """
        if not self.trusts(peer):
            return peer, scheme
        addr = peer
        if forwarded_for:
            hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
            for hop in reversed(hops):
                addr = hop
                if not self._trusts_ip(hop):
                    break
            ip = parse_address(addr)
            # Garbage in the header (a zone id, a port, text): keep what the socket says.
            addr = peer if ip is None else format_address(ip)
        if forwarded_proto:
            proto = forwarded_proto.split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                scheme = proto
        return addr, scheme
