"""krait.wsgi.build_environ's SERVER_NAME and SERVER_PORT for each kind of connection, from
REQUEST frames encoded and decoded as a worker receives them (no server needed)."""

from __future__ import annotations

import io

import pytest

from krait import protocol, wsgi


def _environ(server_addr: str, server_port: int, host: str | None,
             scheme: str = "http") -> dict:
    headers = [("Host", host)] if host is not None else []
    frame = protocol.decode_request(protocol.encode_request(
        1, "GET", "/x", version="HTTP/1.0" if host is None else "HTTP/1.1",
        remote_addr="203.0.113.7", remote_port=40000, server_addr=server_addr,
        server_port=server_port, headers=headers))
    return wsgi.build_environ(frame, "/", frame.remote_addr, scheme, io.BytesIO(), 0)


@pytest.mark.parametrize("addr, port, host, scheme, name, want_port", [
    # No Host: the connection's own address and port (an IPv6 address in brackets, as RFC
    # 3875's server-name and a URL want it).
    ("192.0.2.10", 8080, None, "http", "192.0.2.10", "8080"),
    ("::1", 8443, None, "https", "[::1]", "8443"),
    ("2001:db8::1", 80, None, "http", "[2001:db8::1]", "80"),
    # An empty Host names no host either.
    ("192.0.2.10", 8080, "", "http", "192.0.2.10", "8080"),
    # Host: its name; the port stays the connection's, whatever Host and the scheme say.
    ("192.0.2.10", 8080, "example.com", "https", "example.com", "8080"),
    ("192.0.2.10", 8080, "example.com:9999", "http", "example.com", "8080"),
    ("::1", 8080, "[::1]:81", "http", "[::1]", "8080"),
    # A Unix socket: no port, no host name of its own.
    ("unix", 0, None, "http", "localhost", "80"),
    ("unix", 0, None, "https", "localhost", "443"),
    ("unix", 0, "example.com:81", "http", "example.com", "81"),
    ("unix", 0, "[2001:db8::2]:8443", "https", "[2001:db8::2]", "8443"),
    ("unix", 0, "example.com", "https", "example.com", "443"),
])
def test_server_name_and_port(addr: str, port: int, host: str | None, scheme: str, name: str,
                              want_port: str) -> None:
    env = _environ(addr, port, host, scheme)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (name, want_port)
