"""Hostile input (architecture invariant 5, issue 2) through real sockets against a real krait
process: a battery of malformed and ambiguous requests, each with its exact status line and
whether the connection closes; header, body and keep-alive timeouts; slow clients;
Expect: 100-continue; pipelining; clients that vanish. After every hostile request the server
must still be alive and answer a normal GET.

The battery shares one server per module (restarted if a request ever kills it, so a crash
fails only the request that caused it); every other test starts its own with `krait_server`."""

from __future__ import annotations

import select
import socket
import struct
import time
from pathlib import Path

import pytest

from tests.conftest import HttpReader, KraitProcess, write_site

ECHO_INIT = (
    "from krait import config\n"
    'config.routes = [config.Route("POST", url="/echo"), config.Route()]\n'
)
ECHO_PY = (
    "import krait\n"
    'krait.response = krait.Response("HTTP/1.1", 200, '
    '[("Content-Type", "application/octet-stream")], krait.request.body)\n'
)
HOME = b"<p>home</p>\n"
ROBOTS = b"User-agent: *\n"
BIG = bytes(range(256)) * 800  # 200 KiB: its response cannot leave in one write

# RFC 9110 §15 reason phrases, so every answer's status line is checked byte for byte.
REASONS = {
    100: "Continue", 200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    414: "URI Too Long", 417: "Expectation Failed", 431: "Request Header Fields Too Large",
    501: "Not Implemented", 505: "HTTP Version Not Supported",
}

GET_ROBOTS = b"GET /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n"
BATTERY_MAX_BODY = 100
BATTERY_ARGS = ("--workers", "1", "--max-body-size", str(BATTERY_MAX_BODY))


def echo_site(root: Path, extra_init: str = "") -> Path:
    return write_site(root, {
        ".py/init.py": ECHO_INIT + extra_init,
        "echo.py": ECHO_PY,
        "index.html": HOME,
        "robots.txt": ROBOTS,
        "big.bin": BIG,
    })


class Reader(HttpReader):
    """HttpReader that also returns the raw status line."""

    def response(self, head_request: bool = False) -> tuple[bytes, int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        line = self.buf.split(b"\r\n", 1)[0]
        status, headers, body = self.read(head_request)
        return line, status, headers, body


def status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {REASONS[status]}".encode()


def assert_closes(sock: socket.socket, reader: HttpReader, within: float = 2.0) -> None:
    """Nothing follows the last response and the server closes the connection promptly."""
    assert reader.buf == b"", f"bytes after the final response: {reader.buf[:200]!r}"
    sock.settimeout(within)
    try:
        rest = sock.recv(65536)
    except ConnectionResetError:
        rest = b""  # closed with our unread bytes in its buffer: a reset is a close too
    except TimeoutError:
        pytest.fail(f"the connection is still open {within} s after the response")
    assert rest == b"", f"bytes after the final response: {rest[:200]!r}"


def assert_alive(server: KraitProcess) -> None:
    """The process is running and a fresh connection gets a normal answer."""
    assert server.proc.poll() is None, f"krait exited with {server.proc.returncode}"
    with server.connect(timeout=5) as s:
        s.sendall(GET_ROBOTS)
        line, _, _, body = Reader(s).response()
    assert (line, body) == (status_line(200), ROBOTS)
    assert "Traceback" not in server.log()


def wait_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Read until the peer closes; returns (bytes read, seconds it took). Fails after `limit`."""
    start = time.monotonic()
    data = b""
    sock.settimeout(limit)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"not closed within {limit} s; got {data[:200]!r}")
    return data, time.monotonic() - start


def post(body: bytes, extra: bytes = b"", target: bytes = b"/echo") -> bytes:
    return (b"POST " + target + b" HTTP/1.1\r\nHost: x\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def chunked(raw_body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST /echo HTTP/1.1\r\nHost: x\r\n" + extra
            + b"Transfer-Encoding: chunked\r\n\r\n" + raw_body)


def get(target: bytes = b"/", extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return b"GET " + target + b" " + version + b"\r\nHost: x\r\n" + extra + b"\r\n"


# ---- the battery ---------------------------------------------------------------------------
# (id, request bytes, expected status, connection closes afterwards, expected body or None)

CLOSE, KEEP = True, False

BATTERY = [
    # Message framing (RFC 9112 §6): the server must never guess where a body ends.
    ("cl-and-te", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, CLOSE, None),
    ("te-and-cl", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 5\r\n\r\nhello", 400, CLOSE, None),
    ("cl-duplicate-differing", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                               b"Content-Length: 6\r\n\r\nhello!", 400, CLOSE, None),
    ("cl-list-differing", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n"
                          b"hello!", 400, CLOSE, None),
    ("cl-list-equal", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
     200, KEEP, b"hello"),
    ("cl-duplicate-equal", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                           b"Content-Length: 5\r\n\r\nhello", 200, KEEP, b"hello"),
    ("cl-negative", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nhello",
     400, CLOSE, None),
    ("cl-garbage", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nhello",
     400, CLOSE, None),
    ("cl-plus-sign", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
     400, CLOSE, None),
    ("cl-hex", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
     400, CLOSE, None),
    ("cl-empty", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\nhello",
     400, CLOSE, None),
    ("cl-space-inside", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5 5\r\n\r\nhello",
     400, CLOSE, None),
    ("cl-trailing-comma", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5,\r\n\r\nhello",
     400, CLOSE, None),
    ("cl-overflow", b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 99999999999999999999999\r\n\r\nhello", 400, CLOSE, None),
    ("cl-leading-zeros", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\nhello",
     200, KEEP, b"hello"),
    # Chunked bodies (RFC 9112 §7.1).
    ("chunked-ext-and-trailers",
     chunked(b"5;name=value\r\nhello\r\n6 ; q=\"a \\\" b\"\r\n world\r\n0\r\n"
             b"X-Trailer: yes\r\nX-Other: 2\r\n\r\n"), 200, KEEP, b"hello world"),
    ("chunked-coding-any-case", b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                                b"Transfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     200, KEEP, b"abc"),
    ("chunked-empty-body", chunked(b"0\r\n\r\n"), 200, KEEP, b""),
    ("chunk-size-not-hex", chunked(b"zz\r\nhello\r\n0\r\n\r\n"), 400, CLOSE, None),
    ("chunk-size-negative", chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400, CLOSE, None),
    ("chunk-size-0x-prefix", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, CLOSE, None),
    ("chunk-size-empty", chunked(b"\r\nhello\r\n0\r\n\r\n"), 400, CLOSE, None),
    ("chunk-size-leading-space", chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400, CLOSE, None),
    ("chunk-size-overflow", chunked(b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), 400, CLOSE,
     None),
    ("chunk-missing-crlf-after-data", chunked(b"5\r\nhelloXX0\r\n\r\n"), 400, CLOSE, None),
    ("chunk-size-line-oversized", chunked(b"5;x=" + b"a" * 2000 + b"\r\nhello\r\n0\r\n\r\n"),
     400, CLOSE, None),
    ("chunk-ext-empty-name", chunked(b"5;\r\nhello\r\n0\r\n\r\n"), 400, CLOSE, None),
    ("chunk-size-bare-cr", chunked(b"5\rhello\r\n0\r\n\r\n"), 400, CLOSE, None),
    ("chunk-trailer-no-colon", chunked(b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n"), 400, CLOSE,
     None),
    ("chunk-trailer-obs-fold", chunked(b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n"), 400, CLOSE,
     None),
    # Transfer codings we do not implement (RFC 9112 §6.1) and TE in HTTP/1.0 (§6.1, §6.3).
    ("te-gzip", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, CLOSE,
     None),
    ("te-gzip-chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
                        b"\r\n0\r\n\r\n", 501, CLOSE, None),
    ("te-identity", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
     501, CLOSE, None),
    ("te-chunked-twice", b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 501, CLOSE,
     None),
    ("te-in-http10", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     CLOSE, None),
    # Field syntax (RFC 9112 §5, RFC 9110 §5.5).
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400, CLOSE, None),
    ("obs-fold-first-field", b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400, CLOSE, None),
    ("bare-cr-in-field-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400, CLOSE,
     None),
    ("bare-cr-ends-request-line", b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400, CLOSE, None),
    ("nul-in-request-line", b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400, CLOSE, None),
    ("nul-in-method", b"G\x00ET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, CLOSE, None),
    ("nul-in-field-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, CLOSE, None),
    ("nul-in-field-name", b"GET / HTTP/1.1\r\nHo\x00st: x\r\n\r\n", 400, CLOSE, None),
    ("ctl-in-field-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \x01\r\n\r\n", 400, CLOSE, None),
    ("del-in-field-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7f\r\n\r\n", 400, CLOSE, None),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A : y\r\n\r\n", 400, CLOSE, None),
    ("space-before-colon-host", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, CLOSE, None),
    ("tab-before-colon", b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 400, CLOSE, None),
    ("empty-field-name", b"GET / HTTP/1.1\r\n: x\r\nHost: x\r\n\r\n", 400, CLOSE, None),
    ("field-line-without-colon", b"GET / HTTP/1.1\r\nX\r\nHost: x\r\n\r\n", 400, CLOSE, None),
    ("non-token-field-name", b"GET / HTTP/1.1\r\nHost: x\r\nX-\xff: y\r\n\r\n", 400, CLOSE,
     None),
    ("htab-in-field-value", get(extra=b"X-A: a\tb\r\n"), 200, KEEP, HOME),
    ("obs-text-in-field-value", get(extra=b"X-A: \xff\xfe\r\n"), 200, KEEP, HOME),
    # Host (RFC 9112 §3.2).
    ("no-host-http11", b"GET / HTTP/1.1\r\n\r\n", 400, CLOSE, None),
    ("two-hosts-differing", b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, CLOSE, None),
    ("two-hosts-equal", b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n", 400, CLOSE, None),
    ("host-with-space", b"GET / HTTP/1.1\r\nHost: x y\r\n\r\n", 400, CLOSE, None),
    ("host-with-slash", b"GET / HTTP/1.1\r\nHost: x/y\r\n\r\n", 400, CLOSE, None),
    ("host-with-userinfo", b"GET / HTTP/1.1\r\nHost: u@x\r\n\r\n", 400, CLOSE, None),
    ("host-empty", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 200, KEEP, HOME),
    ("host-ipv6-port", b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 200, KEEP, HOME),
    # Size limits (architecture.md: 8 KiB line, 64 KiB / 100 fields head; body from the args).
    ("request-line-over-limit", b"GET /?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     414, CLOSE, None),
    ("request-line-over-limit-unterminated", b"GET /?" + b"a" * 9000, 414, CLOSE, None),
    ("header-block-over-limit", get(extra=b"X-A: " + b"a" * 70000 + b"\r\n"), 431, CLOSE, None),
    ("header-block-over-limit-unterminated", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 70000,
     431, CLOSE, None),
    ("leading-empty-lines-over-limit", b"\r\n" * 40000 + get(), 431, CLOSE, None),
    ("too-many-fields", get(extra=b"".join(b"X-%d: 1\r\n" % i for i in range(100))), 431, CLOSE,
     None),
    ("body-over-limit-content-length", post(b"a" * (BATTERY_MAX_BODY + 1)), 413, CLOSE, None),
    ("body-over-limit-head-only", b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 1000000\r\n\r\n", 413, CLOSE, None),
    ("body-over-limit-chunked-one-chunk",
     chunked(b"%x\r\n" % (BATTERY_MAX_BODY + 1) + b"a" * (BATTERY_MAX_BODY + 1) + b"\r\n0\r\n\r\n"),
     413, CLOSE, None),
    ("body-over-limit-chunked-sum",
     chunked(b"32\r\n" + b"a" * 50 + b"\r\n33\r\n" + b"a" * 51 + b"\r\n0\r\n\r\n"), 413, CLOSE,
     None),
    ("body-at-limit", post(b"b" * BATTERY_MAX_BODY), 200, KEEP, b"b" * BATTERY_MAX_BODY),
    # Versions (RFC 9112 §2.3).
    ("http-2.0", get(version=b"HTTP/2.0"), 505, CLOSE, None),
    ("http-0.9", get(version=b"HTTP/0.9"), 505, CLOSE, None),
    ("http-3.0", get(version=b"HTTP/3.0"), 505, CLOSE, None),
    ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, CLOSE, None),
    ("http-0.9-simple-request", b"GET /\r\n\r\n", 400, CLOSE, None),
    ("lowercase-http", get(version=b"http/1.1"), 400, CLOSE, None),
    ("version-two-digit-minor", get(version=b"HTTP/1.10"), 400, CLOSE, None),
    ("version-two-digit-major", get(version=b"HTTP/12.1"), 400, CLOSE, None),
    ("space-after-version", b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400, CLOSE, None),
    ("two-spaces-after-method", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, CLOSE, None),
    ("tls-client-hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 32, 400,
     CLOSE, None),
    # Expect (RFC 9110 §10.1.1).
    ("expect-unknown", get(extra=b"Expect: something-else\r\n"), 417, CLOSE, None),
    ("expect-100-continue-any-case-body-sent",
     post(b"hello", b"Expect: 100-Continue\r\n"), 200, KEEP, b"hello"),
    # Methods (RFC 9110 §9): tokens, case-sensitive.
    ("unknown-method", b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501, KEEP, None),
    ("lowercase-method", b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 501, KEEP, None),
    ("delete-static-file", b"DELETE /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n", 405, KEEP, None),
    ("post-static-file-no-body", post(b"", target=b"/robots.txt"), 405, KEEP, None),
    # The body is not read, so the connection must close, and the 405 must say so.
    ("post-static-file-with-body", post(b"hello", target=b"/robots.txt"), 405, CLOSE, None),
    ("post-missing-file-with-body", post(b"hello", target=b"/nope"), 405, CLOSE, None),
    # CONNECT: krait is no proxy and does not take authority-form. 400 and close is a sane
    # answer: after a CONNECT a client may start sending tunnel bytes at once, so the stream
    # cannot be trusted to hold a next request.
    ("connect-authority-form", b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 400, CLOSE, None),
    # Request targets (RFC 9112 §3.2; path rules of behaviour §16.3).
    ("target-not-origin-form", get(b"foo"), 400, CLOSE, None),
    ("target-pct-00", get(b"/%00"), 400, CLOSE, None),
    ("target-pct-00-in-name", get(b"/robots.txt%00.html"), 400, CLOSE, None),
    ("target-pct-not-hex", get(b"/%zz"), 400, CLOSE, None),
    ("target-pct-one-digit", get(b"/a%4"), 400, CLOSE, None),
    ("target-pct-at-end", get(b"/a%"), 400, CLOSE, None),
    ("target-pct-g0", get(b"/a%G0"), 400, CLOSE, None),
    ("target-fragment", get(b"/index.html#frag"), 400, CLOSE, None),
    ("target-ctl", get(b"/a\x01b"), 400, CLOSE, None),
    ("target-del", get(b"/a\x7fb"), 400, CLOSE, None),
    ("target-htab", get(b"/a\tb"), 400, CLOSE, None),
    ("target-dot-dot-encoded", get(b"/%2e%2e/%2e%2e/etc/passwd"), 404, KEEP, None),
    ("absolute-form-with-path", get(b"http://x/index.html"), 200, KEEP, HOME),
    ("absolute-form-no-path", get(b"http://x"), 200, KEEP, HOME),
    ("absolute-form-upper-scheme", get(b"HTTP://X/robots.txt"), 200, KEEP, ROBOTS),
    ("absolute-form-dot-dot", get(b"http://x/../../etc/passwd"), 404, KEEP, None),
    ("absolute-form-pct-00", get(b"http://x/%00"), 400, CLOSE, None),
    ("absolute-form-other-scheme", get(b"ftp://x/robots.txt"), 400, CLOSE, None),
    ("absolute-form-empty-host", get(b"http:///index.html"), 400, CLOSE, None),
    ("absolute-form-userinfo", get(b"http://u@x/index.html"), 400, CLOSE, None),
    ("absolute-form-bad-port", get(b"http://x:abc/index.html"), 400, CLOSE, None),
    ("absolute-form-fragment-in-authority", get(b"http://x#/index.html"), 400, CLOSE, None),
    ("target-fragment-after-query", get(b"/index.html?a#b"), 400, CLOSE, None),
    ("target-query-not-decoded-by-the-core", get(b"/robots.txt?%zz%00"), 200, KEEP, ROBOTS),
    ("options-asterisk", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 204, KEEP, b""),
    ("options-asterisk-with-body", b"OPTIONS * HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"
                                   b"abc", 204, CLOSE, b""),
    ("get-asterisk", get(b"*"), 400, CLOSE, None),
    # Tolerated per RFC 9112 §2.2.
    ("leading-crlfs", b"\r\n\r\n" + get(), 200, KEEP, HOME),
    ("bare-lf-line-ends", b"GET / HTTP/1.1\nHost: x\n\n", 200, KEEP, HOME),
    # A body on a static GET: answered, then closed rather than reading and discarding the
    # body (allowed by RFC 9112 §9.6; the framing is known, so either is correct).
    ("get-static-with-body", b"GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"
                             b"abc", 200, CLOSE, HOME),
    ("get-content-length-zero", get(extra=b"Content-Length: 0\r\n"), 200, KEEP, HOME),
    ("post-no-body-framing", b"POST /echo HTTP/1.1\r\nHost: x\r\n\r\n", 200, KEEP, b""),
]


# Entries where krait answers wrongly today (see the reasons); kept with the right expectation.
#: Entries expected to fail, with the reason (none at the moment).
XFAIL: dict[str, str] = {}


def battery_params() -> list:
    params = []
    for name, *rest in BATTERY:
        marks = [pytest.mark.xfail(reason=XFAIL[name], strict=True)] if name in XFAIL else []
        params.append(pytest.param(*rest, id=name, marks=marks))
    return params


@pytest.fixture(scope="module")
def battery_pool(tmp_path_factory):
    """One server for the whole battery; replaced if a request ever kills it."""
    base = tmp_path_factory.mktemp("hostile")
    site = echo_site(base / "site")
    current: list[KraitProcess] = []

    def get_server() -> KraitProcess:
        if current and current[-1].proc.poll() is not None:
            current[-1].stop()
            current.clear()
        if not current:
            current.append(KraitProcess(site, list(BATTERY_ARGS), base))
        return current[-1]

    yield get_server
    for p in current:
        p.stop()


@pytest.fixture
def battery_server(battery_pool) -> KraitProcess:
    return battery_pool()


def test_battery_has_at_least_40_entries():
    assert len(BATTERY) >= 40
    assert len({entry[0] for entry in BATTERY}) == len(BATTERY)
    assert set(XFAIL) <= {entry[0] for entry in BATTERY}


@pytest.mark.parametrize("request_bytes,status,closes,body", battery_params())
def test_battery(battery_server, request_bytes, status, closes, body):
    with battery_server.connect(timeout=5) as s:
        s.sendall(request_bytes)
        reader = Reader(s, timeout=5)
        line, got, headers, got_body = reader.response()
        assert line == status_line(status), f"expected {status}, got {line!r}"
        if body is not None:
            assert got_body == body
        if closes:
            assert headers.get("connection") == "close"
            assert_closes(s, reader)
        else:
            assert headers.get("connection") != "close"
            s.sendall(GET_ROBOTS)
            line, _, _, got_body = reader.response()
            assert (line, got_body) == (status_line(200), ROBOTS)
    assert_alive(battery_server)


# ---- request smuggling: nothing after an ambiguous request is ever answered ----------------


SMUGGLED = b"GET /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("first,status", [
    # Read by Content-Length, the body is "0\r\n\r"; read as chunked, it ends after "0\r\n\r\n".
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, id="cl-te"),
    # First Content-Length: no body, and SMUGGLED is a second request; the second: it is the body.
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(SMUGGLED), 400, id="cl-cl"),
    # A front end that unfolds obs-fold sees "chunked identity", one that drops it sees chunked.
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX: a\r\n"
                 b" Transfer-Encoding: identity\r\n\r\n0\r\n\r\n", 400, id="obs-fold-te"),
    # Two Transfer-Encoding fields: together they are the list "chunked, x".
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked \r\n"
                 b"Transfer-Encoding: x\r\n\r\n0\r\n\r\n", 501, id="te-te"),
])
def test_smuggled_request_is_never_answered(battery_server, first, status):
    with battery_server.connect(timeout=5) as s:
        s.sendall(first + SMUGGLED)
        reader = Reader(s)
        line, _, headers, _ = reader.response()
        assert line == status_line(status)
        assert headers["connection"] == "close"
        assert_closes(s, reader)
    assert_alive(battery_server)


INNER = b"GET /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n"
INNER_CL = b"Content-Length: %d\r\n\r\n" % len(INNER) + INNER
INNER_CHUNKED = (b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(INNER) + INNER
                 + b"\r\n0\r\n\r\n")


@pytest.mark.parametrize("head,status", [
    pytest.param(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n" + INNER_CL, 204, id="options-asterisk-cl"),
    pytest.param(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n" + INNER_CHUNKED, 204,
                 id="options-asterisk-chunked"),
    pytest.param(b"OPTIONS /robots.txt HTTP/1.1\r\nHost: x\r\n" + INNER_CL, 204,
                 id="options-file"),
    pytest.param(b"TRACE /robots.txt HTTP/1.1\r\nHost: x\r\n" + INNER_CL, 405, id="trace-file"),
    pytest.param(b"DELETE /echo HTTP/1.1\r\nHost: x\r\n" + INNER_CHUNKED, 405,
                 id="delete-script"),
    pytest.param(b"GET /robots.txt HTTP/1.1\r\nHost: x\r\n" + INNER_CL, 200, id="get-file"),
    pytest.param(b"GET /nope HTTP/1.1\r\nHost: x\r\n" + INNER_CL, 404, id="get-missing"),
    pytest.param(b"GET /.hidden HTTP/1.1\r\nHost: x\r\n" + INNER_CHUNKED, 404, id="get-hidden"),
    pytest.param(b"BREW / HTTP/1.1\r\nHost: x\r\n" + INNER_CL, 501, id="unknown-method"),
    pytest.param(b"GET * HTTP/1.1\r\nHost: x\r\n" + INNER_CL, 400, id="get-asterisk"),
    pytest.param(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n" + INNER_CL, 414,
                 id="path-too-long"),
])
def test_unread_body_is_never_parsed_as_a_request(battery_server, head, status):
    """A request answered without reading its body: either the connection closes (and the
    response says so) or the body is skipped. Its bytes must never be answered as a request."""
    with battery_server.connect() as s:
        s.sendall(head)
        reader = Reader(s)
        line, _, headers, _ = reader.response()
        assert line == status_line(status)
        if headers.get("connection") == "close":
            assert_closes(s, reader)
        else:
            s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
            line, _, _, body = reader.response()
            assert (line, body) == (status_line(200), HOME), "the body was answered as a request"
    assert_alive(battery_server)


def test_error_mid_pipeline_closes_and_drops_the_rest(battery_server):
    with battery_server.connect(timeout=5) as s:
        s.sendall(GET_ROBOTS + b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n" + GET_ROBOTS)
        reader = Reader(s)
        line, _, _, body = reader.response()
        assert (line, body) == (status_line(200), ROBOTS)
        line, _, headers, _ = reader.response()
        assert line == status_line(400)
        assert headers["connection"] == "close"
        assert_closes(s, reader)  # the third request is never answered
    assert_alive(battery_server)


# ---- timeouts ------------------------------------------------------------------------------


@pytest.fixture
def timeout_server(tmp_path, krait_server):
    site = echo_site(tmp_path / "site")
    return krait_server(site, "--workers", "1", "--header-timeout", "1",
                        "--keepalive-timeout", "1")


def test_partial_head_gets_408_and_close(timeout_server):
    with timeout_server.connect() as s:
        start = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        reader = Reader(s, timeout=3)
        line, _, headers, _ = reader.response()
        elapsed = time.monotonic() - start
        assert line == status_line(408)
        assert headers["connection"] == "close"
        assert 0.5 <= elapsed <= 3
        assert_closes(s, reader)
    assert_alive(timeout_server)


def test_silent_connection_closed_without_a_response(timeout_server):
    with timeout_server.connect() as s:
        data, elapsed = wait_closed(s, 3)
    assert data == b""  # no 408 for a client that never said anything
    assert 0.5 <= elapsed <= 3
    assert_alive(timeout_server)


def test_keepalive_idle_timeout_closes_silently(timeout_server):
    with timeout_server.connect() as s:
        s.sendall(GET_ROBOTS)
        reader = Reader(s)
        assert reader.response()[3] == ROBOTS
        assert reader.buf == b""
        data, elapsed = wait_closed(s, 3)
    assert data == b""
    assert 0.5 <= elapsed <= 3
    assert_alive(timeout_server)


def test_partial_second_request_gets_408(timeout_server):
    with timeout_server.connect() as s:
        s.sendall(GET_ROBOTS + b"GET /robots.txt HTTP/1.1\r\n")
        reader = Reader(s, timeout=3)
        assert reader.response()[3] == ROBOTS
        line, _, headers, _ = reader.response()
        assert line == status_line(408)
        assert headers["connection"] == "close"
        assert_closes(s, reader)


def test_slowloris_drip_past_the_header_timeout_gets_408(timeout_server):
    """The header timer runs from the first byte; a byte every 100 ms does not reset it."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200  # 20 s of dripping: never done
    with timeout_server.connect() as s:
        start = time.monotonic()
        sent = 0
        while not select.select([s], [], [], 0.1)[0]:
            assert time.monotonic() - start < 4, "no 408 after 4 s of dripping"
            try:
                s.sendall(head[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
        reader = Reader(s, timeout=3)
        line, _, headers, _ = reader.response()
        elapsed = time.monotonic() - start
        assert line == status_line(408)
        assert headers["connection"] == "close"
        assert sent >= 5 and 0.5 <= elapsed <= 3
        assert_closes(s, reader)
    assert_alive(timeout_server)


def test_one_byte_at_a_time_within_the_header_timeout(tmp_path, krait_server):
    site = echo_site(tmp_path / "site")
    server = krait_server(site, "--workers", "1", "--header-timeout", "5")
    req = b"GET /robots.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: slowloris-ish\r\n\r\n"
    with server.connect() as s:
        start = time.monotonic()
        for i in range(len(req)):
            s.sendall(req[i:i + 1])
            time.sleep(0.02)
        assert time.monotonic() - start < 4
        line, _, _, body = Reader(s).response()
    assert (line, body) == (status_line(200), ROBOTS)
    # A chunked POST, one byte at a time too.
    req = chunked(b"3;e=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n")
    with server.connect() as s:
        for i in range(len(req)):
            s.sendall(req[i:i + 1])
            time.sleep(0.01)
        line, _, _, body = Reader(s).response()
    assert (line, body) == (status_line(200), b"abcde")
    assert_alive(server)


def test_slow_body_completes(timeout_server):
    """The header timeout covers the head only: a body trickling in over longer still arrives."""
    body = b"0123456789"
    with timeout_server.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 2):
            time.sleep(0.3)  # 1.5 s in all, more than --header-timeout 1
            s.sendall(body[i:i + 2])
        line, _, _, got = Reader(s, timeout=5).response()
    assert (line, got) == (status_line(200), body)


def test_stalled_body_gets_408(tmp_path, krait_server):
    site = echo_site(tmp_path / "site", "config.body_timeout = 1\n")
    server = krait_server(site, "--workers", "1")
    with server.connect() as s:
        start = time.monotonic()
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        reader = Reader(s, timeout=3)
        line, _, headers, _ = reader.response()
        assert line == status_line(408)
        assert headers["connection"] == "close"
        assert 0.5 <= time.monotonic() - start <= 3
        assert_closes(s, reader)
    assert_alive(server)


# ---- Expect: 100-continue ------------------------------------------------------------------


def test_expect_100_continue(battery_server):
    with battery_server.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5\r\n\r\n")
        reader = Reader(s)
        line, status, _, _ = reader.response()
        assert line == status_line(100)
        assert reader.buf == b""
        s.sendall(b"hello")
        line, _, _, body = reader.response()
        assert (line, body) == (status_line(200), b"hello")
        # The same connection, chunked this time.
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        assert reader.response()[0] == status_line(100)
        s.sendall(b"2\r\nhi\r\n0\r\n\r\n")
        line, _, headers, body = reader.response()
        assert (line, body) == (status_line(200), b"hi")
        assert headers.get("connection") != "close"


@pytest.mark.parametrize("req,status", [
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 1000\r\n\r\n", 413, id="413"),
    pytest.param(b"POST /robots.txt HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 10\r\n\r\n", 405, id="405"),
    pytest.param(b"POST /nope.txt HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 10\r\n\r\n", 405, id="405-missing-file"),
])
def test_expect_100_continue_not_sent_for_a_refused_body(battery_server, req, status):
    """413 and 405 are decided on the head: no 100 invites a body that will be refused, and
    as the body is never read the connection closes, saying so."""
    with battery_server.connect() as s:
        s.sendall(req)
        reader = Reader(s)
        line, _, headers, _ = reader.response()
        assert line == status_line(status)
        assert headers.get("connection") == "close"
        assert_closes(s, reader)


def test_expect_100_continue_ignored_in_http10(battery_server):
    with battery_server.connect() as s:
        s.sendall(b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert select.select([s], [], [], 0.5)[0] == []  # no 100 for a 1.0 client
        s.sendall(b"hello")
        reader = Reader(s)
        line, _, _, body = reader.response()
        assert (line, body) == (status_line(200), b"hello")
        assert_closes(s, reader)


def test_100_continue_waits_for_the_previous_response(battery_server):
    """Pipelined after a large response, the 100 must not land inside that response's body."""
    with battery_server.connect() as s:
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5\r\n\r\n")
        reader = Reader(s)
        line, _, _, body = reader.response()
        assert (line, body) == (status_line(200), BIG)
        assert reader.response()[0] == status_line(100)
        s.sendall(b"hello")
        line, _, _, body = reader.response()
        assert (line, body) == (status_line(200), b"hello")


# ---- pipelining ----------------------------------------------------------------------------


def test_100_pipelined_requests_in_one_write(battery_server):
    plan = [(b"/robots.txt", 200, ROBOTS), (b"/nope", 404, None), (b"/", 200, HOME),
            (b"/echo", 200, b""), (b"/missing/file.txt", 404, None)] * 20
    plan[-1] = (b"/index.html", 200, HOME)
    reqs = [get(target) for target, _, _ in plan[:-1]]
    reqs.append(get(plan[-1][0], b"Connection: close\r\n"))
    assert len(reqs) == 100
    with battery_server.connect(timeout=10) as s:
        s.sendall(b"".join(reqs))
        reader = Reader(s, timeout=10)
        for i, (target, status, body) in enumerate(plan):
            line, _, headers, got = reader.response()
            assert line == status_line(status), (i, target)
            if body is not None:
                assert got == body, (i, target)
        assert headers["connection"] == "close"
        assert_closes(s, reader)
    assert_alive(battery_server)


def test_pipelining_with_bodies_in_the_middle(tmp_path, krait_server):
    server = krait_server(echo_site(tmp_path / "site"), "--workers", "1")
    large = bytes(range(256)) * 200  # 50 KiB: more than one read of the core
    steps = [
        (get(b"/robots.txt"), 200, ROBOTS),
        (post(b"first body"), 200, b"first body"),
        (get(b"/"), 200, HOME),
        (chunked(b"4;x=y\r\nchun\r\n3\r\nked\r\n0\r\nX-T: 1\r\n\r\n"), 200, b"chunked"),
        (get(b"/nope"), 404, None),
        (post(large), 200, large),
        (b"HEAD /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n", 200, b""),
        (chunked(b"%x\r\n" % len(large) + large + b"\r\n0\r\n\r\n"), 200, large),
        (post(b""), 200, b""),
        (get(b"/robots.txt", b"Connection: close\r\n"), 200, ROBOTS),
    ]
    with server.connect(timeout=10) as s:
        s.sendall(b"".join(req for req, _, _ in steps))
        reader = Reader(s, timeout=10)
        for i, (req, status, body) in enumerate(steps):
            line, _, _, got = reader.response(head_request=req.startswith(b"HEAD"))
            assert line == status_line(status), (i, req[:40])
            if body is not None:
                assert got == body, (i, req[:40])
        assert_closes(s, reader)
    assert_alive(server)


# ---- clients that vanish -------------------------------------------------------------------


@pytest.mark.parametrize("partial", [
    b"GET / HTTP/1.1\r\nHo",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
    chunked(b"10\r\nabc"),
    chunked(b"3\r\nabc\r\n0\r\nX-Trailer: "),
    b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    get(b"/big.bin") * 20,
], ids=["mid-head", "mid-body", "mid-chunk", "mid-trailers", "after-100-continue",
        "mid-response"])
def test_client_vanishing_does_not_hurt_the_server(battery_server, partial):
    for linger in (False, True):
        s = battery_server.connect()
        if linger:  # close with a reset instead of a FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(partial)
        time.sleep(0.05)
        s.close()
    assert_alive(battery_server)
