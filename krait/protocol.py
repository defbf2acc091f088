"""Worker protocol: the length-prefixed binary frames between the core and a worker.

This module mirrors ``native/src/ipc.h`` / ``ipc.c`` byte for byte; both are checked against the
golden vectors in ``tests/ipc_vectors.json``. Wire format (integers little-endian)::

    frame := u32 len | u8 type | u32 id | payload     (len counts type + id + payload)
    str   := u32 n | n bytes
    pairs := u16 count | (str name, str value) * count

    REQUEST  (1, core -> worker): u8 flags | i32 route | str method | str path | str query
             | str version | str file | str remote_addr | u16 remote_port
             | str server_addr | u16 server_port | pairs params | pairs headers | str body
    RESPONSE (2, worker -> core): u16 status | u8 body_kind | pairs headers | str body
    CHUNK    (3, worker -> core): str data
    END      (4, worker -> core): empty

A frame is at most :data:`MAX_FRAME` bytes including its 4-byte length; a larger body goes out
as a ``BODY_STREAM`` response followed by CHUNK frames and an END frame
(:func:`encode_response_stream`, :func:`stream_frames`).

Text: every string field is decoded as UTF-8 with ``errors="surrogateescape"``. Bytes that are
not valid UTF-8 (a ``%FF`` in the path, a Latin-1 header value) become lone surrogates instead
of failing, and ``s.encode("utf-8", "surrogateescape")`` gives the exact wire bytes back; for
``file`` that is what :func:`os.fsencode` does on a UTF-8 system. The encoders accept ``str``
(encoded the same way) or bytes-like values. Bodies stay ``bytes``.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "BODY_FILE", "BODY_INLINE", "BODY_STREAM", "CHUNK", "CORE_HEADERS", "END", "HEADER_SIZE",
    "MAX_FRAME", "REQUEST", "REQ_BODY_FILE", "REQ_PROXIED", "REQ_ROUTE", "REQ_TLS",
    "REQ_WEBSOCKET", "RESPONSE",
    "ROUTE_ANSWER", "encode_route_answer", "CACHE_ANSWER", "REQ_CACHE", "encode_cache_answer",
    "cache_flags_valid", "PUBLISH", "WS_SUBSCRIBE", "WS_UNSUBSCRIBE",
    "encode_publish", "encode_subscribe",
    "FrameReader", "FrameTooLarge", "RequestFrame", "ResponseFrame", "decode_request",
    "decode_response", "decode_responses", "encode_chunk", "encode_end", "encode_request",
    "encode_response", "encode_response_stream", "frame_size", "stream_frames", "write_frames",
]

#: Largest frame, including its 4-byte length prefix (``KRAIT__IPC_MAX_FRAME``).
MAX_FRAME = 64 * 1024 * 1024
#: Bytes before a frame's payload: u32 len + u8 type + u32 id (``KRAIT__IPC_HEADER``).
HEADER_SIZE = 9

# Frame types (KRAIT__IPC_*).
REQUEST = 1
RESPONSE = 2
CHUNK = 3
END = 4
WS_MESSAGE = 5  #: both ways: u8 kind (1 text, 2 binary) | str data
WS_CLOSE = 6  #: both ways: u16 code | str reason
ROUTE_ANSWER = 7  #: worker -> core: i32 route | u32 allow | str target | str params (pairs)
WS_SUBSCRIBE = 8  #: worker -> core, id = a WebSocket it accepted: str channel
WS_UNSUBSCRIBE = 9  #: worker -> core, id = a WebSocket it accepted: str channel
PUBLISH = 10  #: worker -> core, id 0: u8 kind (1 text, 2 binary) | str channel | str data
CACHE_ANSWER = 11  #: worker -> core: u32 flags (KRAIT_CACHE_*), the answer to a REQ_CACHE

# WS_MESSAGE kinds.
WS_TEXT = 1
WS_BINARY = 2

# REQUEST flags (KRAIT__REQ_*).
REQ_BODY_FILE = 1  #: ``body`` is the path of the spooled body file, not the body itself.
REQ_WEBSOCKET = 2  #: the request is a WebSocket handshake (verb ``WEBSOCKET``).
REQ_TLS = 4  #: the request arrived over TLS.
#: Not a request: the core asks which route takes (verb, path) — ``route`` holds the verb bits,
#: ``method`` is empty. Answered with :func:`encode_route_answer`.
REQ_ROUTE = 8
#: Not a request: the core asks which cache rules (``krait.config.cache_*``) apply to the file
#: ``path`` (relative to the site root, no leading ``/``); ``method`` is empty, ``route`` 0.
#: Answered with :func:`encode_cache_answer`.
REQ_CACHE = 16
#: A trusted proxy relayed the connection with a PROXY protocol header (``--proxy-protocol``):
#: ``remote_addr`` is the client it named (or the proxy's, when it named none), and the
#: request's ``X-Forwarded-*`` and ``X-Request-ID`` headers are the client's, not a proxy's word.
REQ_PROXIED = 32

# RESPONSE body kinds (KRAIT__BODY_*).
BODY_INLINE = 0  #: ``body`` is the response body.
BODY_FILE = 1  #: ``body`` is the path of a file the core sends with sendfile.
BODY_STREAM = 2  #: ``body`` is empty; CHUNK frames follow, then END.

#: Header names the core owns (framing and connection management); a worker never sends them,
#: and :func:`encode_response` drops them.
CORE_HEADERS = frozenset({b"date", b"server", b"content-length", b"transfer-encoding",
                          b"connection"})

_U16_MAX = 0xFFFF
_WORKER_TYPES = (RESPONSE, CHUNK, END, WS_MESSAGE, WS_CLOSE, ROUTE_ANSWER, WS_SUBSCRIBE,
                 WS_UNSUBSCRIBE, PUBLISH, CACHE_ANSWER)
_BODY_KINDS = (BODY_INLINE, BODY_FILE, BODY_STREAM)
_ENC = "utf-8"
_ERRORS = "surrogateescape"
_LEN = struct.Struct("<I")
_HEAD = struct.Struct("<IBI")  # len, type, id
_U16 = struct.Struct("<H")
_REQ_FIXED = struct.Struct("<Bi")  # flags, route
_WS_HEAD = struct.Struct("<IBIBI")  # WS_MESSAGE: len, type, id, kind, data length
_RESP_FIXED = struct.Struct("<HBH")  # status, body_kind, header count
_CHUNK_OVERHEAD = HEADER_SIZE + 4  # frame header + the data string's length
# RFC 9110 §5.5: a field value holds no control character but HTAB (CR, LF and NUL would split
# or end the header block; the others are rejected by the core as well).
_BAD_HEADER_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search

Text = str | bytes | bytearray | memoryview
Pairs = Iterable[tuple[Text, Text]]


class RequestFrame:
    """A decoded REQUEST frame (core -> worker). Strings use UTF-8 with surrogateescape.

    Built once per request, so it is a plain slotted class, and its headers are decoded only
    when first read (most pages never look at them). Treat it as read-only.
    """

    # The fields, in frame order (compared by __eq__, shown by __repr__); headers is a property
    # over _headers/_raw.
    _FIELDS = ("id", "flags", "route", "method", "path", "query", "version", "file",
               "remote_addr", "remote_port", "server_addr", "server_port", "params", "headers",
               "body")
    __slots__ = tuple(f for f in _FIELDS if f != "headers") + ("_headers", "_raw")

    id: int
    flags: int
    route: int  #: index in ``krait.config.routes``; -1 for none / the default route
    method: str
    path: str  #: percent-decoded
    query: str  #: raw, without the ``?``
    version: str
    file: str  #: absolute path of the resolved target file, or ``""``
    remote_addr: str
    remote_port: int
    #: The connection's own end: the address the client reached (``"unix"`` on a Unix socket)
    server_addr: str
    server_port: int  #: ... and its port (0 on a Unix socket)
    params: list[tuple[str, str]]  #: URL parameters of a regex route
    body: bytes  #: the body, or with ``REQ_BODY_FILE`` the spooled file's path

    def __init__(self, id: int, flags: int, route: int, method: str, path: str, query: str,
                 version: str, file: str, remote_addr: str, remote_port: int,
                 server_addr: str, server_port: int,
                 params: list[tuple[str, str]], headers: list[tuple[str, str]] | None,
                 body: bytes, _raw: tuple[bytes, int] | None = None) -> None:
        self.id = id
        self.flags = flags
        self.route = route
        self.method = method
        self.path = path
        self.query = query
        self.version = version
        self.file = file
        self.remote_addr = remote_addr
        self.remote_port = remote_port
        self.server_addr = server_addr
        self.server_port = server_port
        self.params = params
        self.body = body
        self._headers = headers
        self._raw = _raw  # (frame, offset of the header pairs) while not yet decoded

    @property
    def headers(self) -> list[tuple[str, str]]:
        """``(name, value)`` pairs: names lower-cased, arrival order, repeats kept."""
        if self._headers is None:
            buf, pos = self._raw  # type: ignore[misc]
            self._headers = _decode_pairs(buf, pos)[0]
            self._raw = None
        return self._headers

    def __eq__(self, other: object) -> bool:
        if type(other) is not RequestFrame:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._FIELDS)
        return f"RequestFrame({fields})"

    @property
    def body_file(self) -> str | None:
        """The spooled body file's path when ``REQ_BODY_FILE`` is set, else ``None``."""
        if self.flags & REQ_BODY_FILE:
            return self.body.decode(_ENC, _ERRORS)
        return None

    def encode(self) -> bytes:
        """Encode this request back into a frame (see :func:`encode_request`)."""
        return encode_request(
            self.id, self.method, self.path, flags=self.flags, route=self.route,
            query=self.query, version=self.version, file=self.file,
            remote_addr=self.remote_addr, remote_port=self.remote_port,
            server_addr=self.server_addr, server_port=self.server_port, params=self.params,
            headers=self.headers, body=self.body)


@dataclass(frozen=True, slots=True)
class ResponseFrame:
    """A decoded worker -> core frame: RESPONSE, CHUNK or END (mirror of ``krait__ipc_frame``).

    For CHUNK, ``body`` holds the data and the other fields are zero/empty; for END everything
    but ``type`` and ``id`` is zero/empty.
    """

    type: int
    id: int
    status: int = 0
    body_kind: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


# ---- encoding ----

def _b(value: Text) -> bytes:
    if isinstance(value, str):
        return value.encode(_ENC, _ERRORS)
    return bytes(value)


def _put_str(parts: list[bytes], value: Text) -> None:
    data = _b(value)
    parts.append(_LEN.pack(len(data)))
    parts.append(data)


def _encode_pairs(pairs: Pairs, lower_names: bool) -> list[tuple[bytes, bytes]]:
    """Encode (name, value) pairs to bytes; names lower-cased (ASCII only) if asked."""
    out = []
    for name, value in pairs:
        raw = _b(name)
        out.append((raw.lower() if lower_names else raw, _b(value)))
    if len(out) > _U16_MAX:
        raise ValueError(f"{len(out)} pairs; a frame holds at most {_U16_MAX}")
    return out


def _put_pairs(parts: list[bytes], pairs: list[tuple[bytes, bytes]]) -> None:
    parts.append(_U16.pack(len(pairs)))
    for name, value in pairs:
        parts += (_LEN.pack(len(name)), name, _LEN.pack(len(value)), value)


class FrameTooLarge(ValueError):
    """The frame would exceed the size limit (a body that big must be streamed)."""


def _finish(parts: list[bytes], ftype: int, frame_id: int, max_frame: int = MAX_FRAME) -> bytes:
    """Prepend the frame header to parts[1:] (parts[0] is reserved for it) and join."""
    payload = sum(map(len, parts))
    total = HEADER_SIZE + payload
    if total > max_frame:
        raise FrameTooLarge(f"frame of {total} bytes exceeds the {max_frame}-byte limit")
    parts[0] = _HEAD.pack(total - 4, ftype, frame_id)
    return b"".join(parts)


def encode_request(id: int, method: Text, path: Text, *, flags: int = 0, route: int = -1,
                   query: Text = "", version: Text = "HTTP/1.1", file: Text = "",
                   remote_addr: Text = "", remote_port: int = 0, server_addr: Text = "",
                   server_port: int = 0, params: Pairs = (), headers: Pairs = (),
                   body: Text = b"") -> bytes:
    """Encode a REQUEST frame, as ``krait__ipc_encode_request`` does.

    Header names are lower-cased (ASCII letters only). Workers never send requests; this
    exists for tests and tools.

    :param id: request id (u32).
    :param method: request method, e.g. ``"GET"`` (or ``"WEBSOCKET"``).
    :param path: percent-decoded path.
    :param flags: ``REQ_*`` bits (u8).
    :param route: route index, -1 for none (i32).
    :param remote_addr: the client's address; ``remote_port`` its port (u16).
    :param server_addr: the connection's own address (``"unix"`` on a Unix socket);
        ``server_port`` its port (u16, 0 on a Unix socket).
    :param params: URL parameters as ``(name, value)`` pairs.
    :param headers: request headers as ``(name, value)`` pairs.
    :param body: the body, or the spooled file's path with ``REQ_BODY_FILE``.
    :raises ValueError: a number out of range, over 65535 pairs, or a frame over MAX_FRAME.
    """
    if not 0 <= flags <= 0xFF:
        raise ValueError(f"flags {flags} is not a u8")
    if not 0 <= remote_port <= _U16_MAX:
        raise ValueError(f"remote_port {remote_port} is not a u16")
    if not 0 <= server_port <= _U16_MAX:
        raise ValueError(f"server_port {server_port} is not a u16")
    try:
        fixed = _REQ_FIXED.pack(flags, route)
    except struct.error:
        raise ValueError(f"route {route} is not an i32") from None
    _check_id(id)
    parts: list[bytes] = [b"", fixed]
    for text in (method, path, query, version, file, remote_addr):
        _put_str(parts, text)
    parts.append(_U16.pack(remote_port))
    _put_str(parts, server_addr)
    parts.append(_U16.pack(server_port))
    _put_pairs(parts, _encode_pairs(params, lower_names=False))
    _put_pairs(parts, _encode_pairs(headers, lower_names=True))
    _put_str(parts, body)
    return _finish(parts, REQUEST, id)


def _check_id(frame_id: int) -> None:
    if not 0 <= frame_id <= 0xFFFFFFFF:
        raise ValueError(f"id {frame_id} is not a u32")


def _reject_header(name: bytes, value: bytes) -> None:
    """Raise the precise error for a response header that failed the quick check."""
    if not name:
        raise ValueError("empty response header name")
    # CR or LF would let a value inject a second header line; NUL ends a C string.
    raise ValueError(f"CR, LF or NUL in response header {name!r}: {value!r}")


# Encoded header pairs by (name, value): most responses repeat the same few headers
# (Content-Type, Cache-Control), so each is checked and encoded once. b"" marks a header the
# core owns (dropped). Cleared when full.
_PAIR_MEMO: dict[tuple[Text, Text], bytes] = {}
_PAIR_MEMO_MAX = 1024


def _encode_header(name: Text, value: Text) -> bytes:
    """One response header as ``str name, str value`` bytes, or b"" for a core header."""
    n = name.encode(_ENC, _ERRORS) if type(name) is str else _b(name)
    v = value.encode(_ENC, _ERRORS) if type(value) is str else _b(value)
    if not n or _BAD_HEADER_BYTE(n) or _BAD_HEADER_BYTE(v):
        _reject_header(n, v)
    if n.lower() in CORE_HEADERS:
        return b""
    return b"".join((_LEN.pack(len(n)), n, _LEN.pack(len(v)), v))


def header_encoder(name: str) -> Callable[[str], bytes]:
    """An encoder of one header's values, for the ``encoded`` argument of
    :func:`encode_response`: for a header the worker adds to every response (``X-Request-ID``),
    whose values it makes itself or has checked, so that they cost neither the per-pair check
    nor a memo entry each.

    :param name: the header name (checked here, once).
    :return: ``encode(value) -> bytes``; the value must hold no CR, LF or NUL (not checked).
    :raises ValueError: an invalid name, or a header the core owns.
    """
    head = _encode_header(name, "")
    if not head:
        raise ValueError(f"{name!r} is the core's header")
    head = head[:-_LEN.size]  # the name part: (u32 len, name)
    pack = _LEN.pack

    def encode(value: str) -> bytes:
        v = value.encode(_ENC, _ERRORS)
        return b"".join((head, pack(len(v)), v))

    return encode


def encode_response(id: int, status: int, headers: Pairs = (), body: Text = b"",
                    body_kind: int = BODY_INLINE, *, max_frame: int = MAX_FRAME,
                    encoded: tuple[bytes, ...] = ()) -> bytes:
    """Encode a RESPONSE frame.

    Beyond what the core's parser requires (status 100..999, a known body kind, an empty body
    for ``BODY_STREAM``, a non-empty NUL-free path for ``BODY_FILE``), this refuses empty
    header names and CR/LF/NUL in names or values, so that a mistake in user code is reported
    in the worker with a traceback. Headers the core owns (:data:`CORE_HEADERS`, any case) are
    dropped: the core writes its own ``Content-Length``, ``Date``, ... and a user script that
    sets one of them (which the original Krait allowed) keeps working.

    :param id: the id of the request being answered.
    :param status: HTTP status code.
    :param headers: ``(name, value)`` pairs, sent as given (case kept).
    :param body: inline bytes, the file path for ``BODY_FILE``, empty for ``BODY_STREAM``.
    :param body_kind: one of ``BODY_INLINE``, ``BODY_FILE``, ``BODY_STREAM``.
    :param max_frame: frame size limit (tests use small ones).
    :param encoded: further headers, each encoded by a :func:`header_encoder`, sent after
        ``headers``.
    :raises FrameTooLarge: (a ValueError) the frame would exceed ``max_frame``; stream the
        body instead (:func:`encode_response_stream`).
    :raises ValueError: any other violation listed above.
    """
    # This runs once per request in every worker, so it is written for speed: one pass over
    # the headers (each seen before is one dict lookup), one join.
    _check_id(id)
    if not 100 <= status <= 999:
        raise ValueError(f"status {status} outside 100..999")
    if body_kind not in _BODY_KINDS:
        raise ValueError(f"unknown body kind {body_kind}")
    raw_body = body if type(body) is bytes else _b(body)
    if body_kind == BODY_STREAM and raw_body:
        raise ValueError("a BODY_STREAM response carries its body in CHUNK frames")
    if body_kind == BODY_FILE and (not raw_body or b"\0" in raw_body):
        raise ValueError(f"bad file path {raw_body!r}")
    parts: list[bytes] = [b"", b""]
    append = parts.append
    memo = _PAIR_MEMO
    for pair in headers:
        name, value = pair
        try:
            chunk = memo.get(pair)  # type: ignore[call-overload]
        except TypeError:  # unhashable (a list pair, a bytearray): no memo
            chunk = _encode_header(name, value)
        else:
            if chunk is None:
                chunk = _encode_header(name, value)
                if len(memo) >= _PAIR_MEMO_MAX:
                    memo.clear()
                memo[pair] = chunk  # type: ignore[index]
        if chunk:
            append(chunk)
    if encoded:
        parts += encoded
    count = len(parts) - 2
    if count > _U16_MAX:
        raise ValueError(f"{count} headers; a frame holds at most {_U16_MAX}")
    parts[1] = _RESP_FIXED.pack(status, body_kind, count)
    append(_LEN.pack(len(raw_body)))
    append(raw_body)
    return _finish(parts, RESPONSE, id, max_frame)


def encode_chunk(id: int, data: bytes | bytearray | memoryview, *,
                 max_frame: int = MAX_FRAME) -> bytes:
    """Encode one CHUNK frame holding ``data``.

    :raises FrameTooLarge: when the frame would exceed ``max_frame`` (:func:`stream_frames`
        splits big pieces).
    """
    _check_id(id)
    total = _CHUNK_OVERHEAD + len(data)
    if total > max_frame:
        raise FrameTooLarge(f"chunk frame of {total} bytes exceeds the {max_frame}-byte limit")
    return b"".join((_HEAD.pack(total - 4, CHUNK, id), _LEN.pack(len(data)), data))


def encode_end(id: int) -> bytes:
    """Encode the END frame that closes a streamed body."""
    _check_id(id)
    return _HEAD.pack(HEADER_SIZE - 4, END, id)


def stream_frames(id: int, status: int, headers: Pairs,
                  chunks: Iterable[bytes | bytearray | memoryview], *,
                  max_frame: int = MAX_FRAME, encoded: tuple[bytes, ...] = ()
                  ) -> Iterator[bytes]:
    """Yield a streamed response: RESPONSE (``BODY_STREAM``), CHUNK frames, END.

    Pieces larger than a frame are split; empty pieces are skipped, so the core never sees an
    empty CHUNK (which an HTTP chunked encoder could mistake for the last-chunk marker).
    """
    if max_frame <= _CHUNK_OVERHEAD:
        raise ValueError(f"max_frame {max_frame} leaves no room for chunk data")
    yield encode_response(id, status, headers, b"", BODY_STREAM, max_frame=max_frame,
                          encoded=encoded)
    step = max_frame - _CHUNK_OVERHEAD
    for piece in chunks:
        view = memoryview(piece).cast("B")
        for at in range(0, len(view), step):
            yield encode_chunk(id, view[at:at + step], max_frame=max_frame)
    yield encode_end(id)


def encode_response_stream(id: int, status: int, headers: Pairs, body: bytes | bytearray
                           | memoryview, *, max_frame: int = MAX_FRAME,
                           encoded: tuple[bytes, ...] = ()) -> list[bytes]:
    """Frames for an inline body of any size.

    One RESPONSE frame when it fits in ``max_frame``; otherwise a ``BODY_STREAM`` RESPONSE,
    the body split into CHUNK frames of at most ``max_frame`` bytes each, and END.
    """
    headers = list(headers)
    try:
        return [encode_response(id, status, headers, body, BODY_INLINE, max_frame=max_frame,
                                encoded=encoded)]
    except FrameTooLarge:
        return list(stream_frames(id, status, headers, (body,), max_frame=max_frame,
                                  encoded=encoded))


def _ws_payload(data: str | bytes | bytearray | memoryview) -> tuple[int, bytes]:
    """The kind (text for ``str``, binary for bytes) and the bytes of a WebSocket message that
    must fit in one WS_MESSAGE frame."""
    if isinstance(data, str):
        kind, raw = WS_TEXT, data.encode("utf-8")
    else:
        kind, raw = WS_BINARY, data if type(data) is bytes else bytes(memoryview(data))
    if len(raw) > MAX_FRAME - HEADER_SIZE - 5:
        raise FrameTooLarge(f"WebSocket message of {len(raw)} bytes exceeds a frame")
    return kind, raw


def encode_ws_message(id: int, data: str | bytes | bytearray | memoryview) -> bytes:
    """A WS_MESSAGE frame: ``str`` is sent as a text message, bytes as a binary one."""
    return ws_message_encoder(id)(data)


def ws_message_encoder(id: int) -> Callable[[str | bytes | bytearray | memoryview], bytes]:
    """:func:`encode_ws_message` for one connection id, checked once: the per-message path
    of an open WebSocket."""
    _check_id(id)
    pack = _WS_HEAD.pack
    payload = _ws_payload

    def encode(data: str | bytes | bytearray | memoryview) -> bytes:
        kind, raw = payload(data)
        n = len(raw)
        return pack(_WS_HEAD.size - 4 + n, WS_MESSAGE, id, kind, n) + raw

    return encode


def encode_ws_broadcast(ids: Iterable[int], data: str | bytes) -> list[bytes]:
    """WS_MESSAGE frames carrying the same message to each connection id, as a list of
    buffers to write in order (each frame's header, then the payload shared by all)."""
    kind, raw = _ws_payload(data)
    n = len(raw)
    # After each frame's own header (length, type, id) come kind, data length and data: the
    # same bytes for every frame, so one buffer serves them all.
    shared = bytes((kind,)) + _LEN.pack(n) + raw
    head = _HEAD.pack
    out = []
    append = out.append
    try:
        for frame_id in ids:
            append(head(HEADER_SIZE + 1 + n, WS_MESSAGE, frame_id))
            append(shared)
    except struct.error:
        raise ValueError("a connection id is not a u32") from None
    return out


def encode_ws_close(id: int, code: int, reason: str = "") -> bytes:
    """A WS_CLOSE frame with a close code (RFC 6455 §7.4) and a reason."""
    _check_id(id)
    if not 0 <= code <= _U16_MAX:
        raise ValueError(f"close code {code} out of range")
    raw = reason.encode("utf-8")
    total = HEADER_SIZE + 2 + 4 + len(raw)
    return b"".join((_HEAD.pack(total - 4, WS_CLOSE, id), _U16.pack(code), _LEN.pack(len(raw)),
                     raw))


def encode_route_answer(id: int, route: int, allow: int, target: Text = b"",
                        params: bytes = b"") -> bytes:
    """A ROUTE_ANSWER frame: which route (index, -1 for none) takes the (verb, path) of a
    REQ_ROUTE question, the verbs the path would take (``allow``, for 405), the target with its
    ``{name}`` parts filled in, and the URL parameters in the pairs encoding."""
    _check_id(id)
    if route < -1 or not 0 <= allow <= 0xFFFFFFFF:
        raise ValueError(f"route answer out of range: {route}, {allow}")
    parts: list[bytes] = [b"", struct.pack("<iI", route, allow)]
    _put_str(parts, target)
    _put_str(parts, params)
    return _finish(parts, ROUTE_ANSWER, id)


def cache_flags_valid(flags: int) -> bool:
    """Flags the cache lists can give a file (``KRAIT_CACHE_*``): ``NO_STORE`` (1) alone, or
    at most one of ``PRIVATE`` (2) and ``PUBLIC`` (4), with or without ``LONG`` (8). The core
    refuses any other value (``cache_flags_ok`` in ipc.c)."""
    if not 0 <= flags <= 15:
        return False
    if flags & 1:
        return flags == 1
    return flags & 6 != 6


def encode_cache_answer(id: int, flags: int) -> bytes:
    """A CACHE_ANSWER frame: the ``KRAIT_CACHE_*`` flags of the file a REQ_CACHE question
    names."""
    _check_id(id)
    if not cache_flags_valid(flags):
        raise ValueError(f"cache flags {flags} are no combination the cache rules give")
    return _HEAD.pack(HEADER_SIZE + 4 - 4, CACHE_ANSWER, id) + _LEN.pack(flags)


#: Bytes of a channel name at most (the core ignores longer ones).
CHANNEL_NAME_MAX = 256


def _channel(name: str) -> bytes:
    raw = name.encode(_ENC) if isinstance(name, str) else None
    if raw is None or not raw or len(raw) > CHANNEL_NAME_MAX or b"\0" in raw:
        raise ValueError(f"a channel name is a non-empty str of at most {CHANNEL_NAME_MAX} "
                         f"bytes without NUL, not {name!r}")
    return raw


def encode_subscribe(id: int, channel: str, subscribe: bool = True) -> bytes:
    """A WS_SUBSCRIBE (or WS_UNSUBSCRIBE) frame for the WebSocket connection ``id``."""
    _check_id(id)
    raw = _channel(channel)
    return _HEAD.pack(HEADER_SIZE - 4 + 4 + len(raw), WS_SUBSCRIBE if subscribe else
                      WS_UNSUBSCRIBE, id) + _LEN.pack(len(raw)) + raw


def encode_publish(channel: str, data: str | bytes | bytearray | memoryview) -> bytes:
    """A PUBLISH frame: ``str`` data goes out as a text message, bytes as a binary one."""
    raw = _channel(channel)
    kind, payload = _ws_payload(data)
    total = HEADER_SIZE + 1 + 4 + len(raw) + 4 + len(payload)
    if total > MAX_FRAME:
        raise FrameTooLarge(f"a {len(payload)}-byte message does not fit in one frame")
    return b"".join((_HEAD.pack(total - 4, PUBLISH, 0), bytes((kind,)), _LEN.pack(len(raw)),
                     raw, _LEN.pack(len(payload)), payload))


def decode_ws(buf: bytes) -> tuple[int, int, int, bytes]:
    """Decode a whole WS_MESSAGE or WS_CLOSE frame: ``(kind, code, data)`` — kind 1/2 and
    code 0 for a message, kind 0 and the close code for a close (data is the reason)."""
    ftype = buf[4]
    pos = HEADER_SIZE
    if ftype == WS_MESSAGE:
        if pos + 1 > len(buf) or buf[pos] not in (WS_TEXT, WS_BINARY):
            raise ValueError("bad WebSocket message kind")
        kind, code = buf[pos], 0
        pos += 1
    elif ftype == WS_CLOSE:
        if pos + 2 > len(buf):
            raise ValueError("WS_CLOSE frame too short")
        kind, code = 0, _U16.unpack_from(buf, pos)[0]
        pos += 2
    else:
        raise ValueError(f"frame type {ftype} is not a WebSocket frame")
    data, pos = _str(buf, pos)
    if pos != len(buf):
        raise ValueError("trailing bytes in a WebSocket frame")
    return kind, code, data


# ---- decoding ----

def frame_size(buf: bytes | bytearray | memoryview, max_frame: int = MAX_FRAME) -> int | None:
    """Total length of the frame starting at ``buf``, or ``None`` if fewer than 4 bytes.

    :raises ValueError: when the length field is under 5 or the frame exceeds ``max_frame``,
        like the first check of ``krait__ipc_parse``.
    """
    if len(buf) < 4:
        return None
    (flen,) = _LEN.unpack_from(buf, 0)
    if flen < HEADER_SIZE - 4 or flen > max_frame - 4:
        raise ValueError(f"bad frame length {flen}")
    return flen + 4


def _header(buf: bytes, expect: tuple[int, ...]) -> tuple[int, int]:
    if len(buf) < HEADER_SIZE:
        raise ValueError(f"frame of {len(buf)} bytes is shorter than its header")
    flen, ftype, frame_id = _HEAD.unpack_from(buf, 0)
    if flen < HEADER_SIZE - 4 or flen > MAX_FRAME - 4:
        raise ValueError(f"bad frame length {flen}")
    if flen + 4 != len(buf):
        raise ValueError(f"frame length {flen + 4} but {len(buf)} bytes given")
    if ftype not in expect:
        raise ValueError(f"unexpected frame type {ftype}")
    return ftype, frame_id


def _str(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(buf):
        raise ValueError("string length runs past the frame")
    (n,) = _LEN.unpack_from(buf, pos)
    pos += 4
    end = pos + n
    if end > len(buf):
        raise ValueError("string runs past the frame")
    return buf[pos:end], end


def _pairs(buf: bytes, pos: int) -> tuple[list[tuple[str, str]], int]:
    if pos + 2 > len(buf):
        raise ValueError("pair count runs past the frame")
    (count,) = _U16.unpack_from(buf, pos)
    pos += 2
    pairs = []
    for _ in range(count):
        name, pos = _str(buf, pos)
        value, pos = _str(buf, pos)
        pairs.append((name.decode(_ENC, _ERRORS), value.decode(_ENC, _ERRORS)))
    return pairs, pos


def _decode_pairs(buf: bytes, pos: int) -> tuple[list[tuple[str, str]], int]:
    """Pairs at pos, for decode_request: a position past the end is caught by the caller."""
    (count,) = _U16.unpack_from(buf, pos)
    pos += 2
    unpack = _LEN.unpack_from
    pairs = []
    for _ in range(count):
        (n,) = unpack(buf, pos)
        name = buf[pos + 4:pos + 4 + n]
        pos += 4 + n
        (n,) = unpack(buf, pos)
        value = buf[pos + 4:pos + 4 + n]
        pos += 4 + n
        pairs.append((name.decode(_ENC, _ERRORS), value.decode(_ENC, _ERRORS)))
    return pairs, pos


def decode_request(buf: bytes | bytearray | memoryview) -> RequestFrame:
    """Decode one whole REQUEST frame (exactly ``buf``, length prefix included).

    :raises ValueError: wrong type, bad length, a field running past the frame, or bytes
        left over after the body.
    """
    # Per-request hot path. Bounds: a length that runs past the frame moves pos beyond the
    # end, so the next unpack_from raises struct.error, or (for the last field) the final
    # pos == len(buf) test fails. Slices taken on the way are merely short, never unsafe.
    if type(buf) is not bytes:
        buf = bytes(buf)
    _, frame_id = _header(buf, (REQUEST,))
    unpack = _LEN.unpack_from
    try:
        flags, route = _REQ_FIXED.unpack_from(buf, HEADER_SIZE)
        pos = HEADER_SIZE + _REQ_FIXED.size
        text = []
        for _ in range(6):
            (n,) = unpack(buf, pos)
            text.append(buf[pos + 4:pos + 4 + n].decode(_ENC, _ERRORS))
            pos += 4 + n
        (port,) = _U16.unpack_from(buf, pos)
        (n,) = unpack(buf, pos + 2)
        server_addr = buf[pos + 6:pos + 6 + n].decode(_ENC, _ERRORS)
        pos += 6 + n
        (server_port,) = _U16.unpack_from(buf, pos)
        params, pos = _decode_pairs(buf, pos + 2)
        # The headers are decoded on first use (RequestFrame.headers); here they are only
        # stepped over, which checks that they lie within the frame.
        headers_at = pos
        (count,) = _U16.unpack_from(buf, pos)
        pos += 2
        for _ in range(2 * count):
            pos += 4 + unpack(buf, pos)[0]
        (n,) = unpack(buf, pos)
        body = buf[pos + 4:pos + 4 + n]
        pos += 4 + n
    except (struct.error, IndexError):
        raise ValueError("a request field runs past the end of the frame") from None
    if pos > len(buf):
        raise ValueError("a request field runs past the end of the frame")
    if pos < len(buf):
        raise ValueError(f"{len(buf) - pos} trailing bytes after the request body")
    method, path, query, version, file, remote_addr = text
    return RequestFrame(frame_id, flags, route, method, path, query, version, file,
                        remote_addr, port, server_addr, server_port, params, None, body,
                        (buf, headers_at))


def decode_response(buf: bytes | bytearray | memoryview) -> ResponseFrame:
    """Decode one whole worker -> core frame with the same checks as ``krait__ipc_parse``.

    :raises ValueError: in every case where ``krait__ipc_parse`` returns -1, or when ``buf``
        is not exactly one frame.
    """
    buf = bytes(buf)
    ftype, frame_id = _header(buf, _WORKER_TYPES)
    pos = HEADER_SIZE
    if ftype == END:
        if pos != len(buf):
            raise ValueError("END frame with a payload")
        return ResponseFrame(END, frame_id)
    if ftype == CHUNK:
        data, pos = _str(buf, pos)
        if pos != len(buf):
            raise ValueError("trailing bytes in CHUNK frame")
        return ResponseFrame(CHUNK, frame_id, body=data)
    if ftype in (WS_MESSAGE, WS_CLOSE):
        kind, code, data = decode_ws(buf)
        return ResponseFrame(ftype, frame_id, status=code, body_kind=kind, body=data)
    if ftype in (WS_SUBSCRIBE, WS_UNSUBSCRIBE):
        channel, pos = _str(buf, pos)
        if pos != len(buf):
            raise ValueError("trailing bytes in a subscription frame")
        return ResponseFrame(ftype, frame_id, body=channel)
    if ftype == PUBLISH:
        if pos >= len(buf) or buf[pos] not in (WS_TEXT, WS_BINARY):
            raise ValueError("publish frame without a valid kind")
        kind = buf[pos]
        channel, pos = _str(buf, pos + 1)
        data, pos = _str(buf, pos)
        if pos != len(buf):
            raise ValueError("trailing bytes in a PUBLISH frame")
        return ResponseFrame(ftype, frame_id, body_kind=kind,
                             headers=[("channel", channel.decode(_ENC, _ERRORS))], body=data)
    if ftype == ROUTE_ANSWER:
        # Carried as headers route/allow/target and the params' pairs encoding as the body.
        if pos + 8 > len(buf):
            raise ValueError("route answer too short")
        route, allow = struct.unpack_from("<iI", buf, pos)
        if route < -1:
            raise ValueError(f"route {route} below -1")
        target, pos = _str(buf, pos + 8)
        params, pos = _str(buf, pos)
        if pos != len(buf):
            raise ValueError("trailing bytes in ROUTE_ANSWER frame")
        return ResponseFrame(ROUTE_ANSWER, frame_id,
                             headers=[("route", str(route)), ("allow", str(allow)),
                                      ("target", target.decode(_ENC, _ERRORS))], body=params)
    if ftype == CACHE_ANSWER:
        # Carried as a header "flags".
        if pos + 4 != len(buf):
            raise ValueError("CACHE_ANSWER frame is not exactly its u32 flags")
        (flags,) = _LEN.unpack_from(buf, pos)
        if not cache_flags_valid(flags):
            raise ValueError(f"cache flags {flags} are no combination the cache rules give")
        return ResponseFrame(CACHE_ANSWER, frame_id, headers=[("flags", str(flags))])
    if pos + _RESP_FIXED.size > len(buf):
        raise ValueError("response frame too short")
    status, kind, _ = _RESP_FIXED.unpack_from(buf, pos)
    if not 100 <= status <= 999:
        raise ValueError(f"status {status} outside 100..999")
    headers, pos = _pairs(buf, pos + 3)
    body, pos = _str(buf, pos)
    if kind not in _BODY_KINDS:
        raise ValueError(f"unknown body kind {kind}")
    if kind == BODY_STREAM and body:
        raise ValueError("BODY_STREAM response with an inline body")
    if kind == BODY_FILE and (not body or b"\0" in body):
        raise ValueError("BODY_FILE response with an empty path or a NUL in it")
    if pos != len(buf):
        raise ValueError("trailing bytes in RESPONSE frame")
    return ResponseFrame(RESPONSE, frame_id, status, kind, headers, body)


def decode_responses(buf: bytes | bytearray | memoryview) -> list[ResponseFrame]:
    """Decode a byte string made of whole worker -> core frames, back to back."""
    view = memoryview(buf).cast("B")
    frames = []
    pos = 0
    while pos < len(view):
        size = frame_size(view[pos:])
        if size is None or pos + size > len(view):
            raise ValueError("incomplete frame at the end")
        frames.append(decode_response(view[pos:pos + size]))
        pos += size
    return frames


# ---- socket I/O ----

class FrameReader:
    """Reads whole frames from a blocking stream socket.

    One reusable buffer receives whatever the socket has (often several queued frames at
    once), and :meth:`read_frame` hands them out one at a time. The buffer grows to fit a large
    frame and shrinks back once that frame has been consumed.
    """

    def __init__(self, sock: socket.socket, *, max_frame: int = MAX_FRAME,
                 bufsize: int = 256 * 1024) -> None:
        """:param sock: a connected, blocking stream socket.
        :param max_frame: frames announcing more bytes than this are refused.
        :param bufsize: initial (and resting) buffer size.
        """
        self._sock = sock
        self._max_frame = max_frame
        self._bufsize = bufsize
        self._buf = bytearray(bufsize)
        self._start = 0  # first unconsumed byte
        self._end = 0  # end of received bytes
        self._head_size = 0  # size of the frame at _start once _whole has seen it all, else 0

    def read_frame(self) -> bytes:
        """Return the next whole frame (length prefix included).

        :raises EOFError: the peer closed the connection between two frames.
        :raises ValueError: a bad length or type, or the connection closed inside a frame.
        :raises OSError: from the socket (including timeouts, if the socket has one).
        """
        size = self._whole()
        start = self._start
        frame = bytes(memoryview(self._buf)[start:start + size])  # one copy, not two
        self._consumed(start + size)
        return frame

    def next_type(self) -> int:
        """Wait until the next frame is whole in the buffer and return its type (the next
        read then takes it without waiting). Raises as :meth:`read_frame`."""
        self._whole()
        return self._buf[self._start + 4]

    def _whole(self) -> int:
        """Receive until the next frame is whole in the buffer; return its size (checked once
        per frame: next_type and the read that follows it share the work)."""
        if self._head_size:
            return self._head_size
        size = None
        while size is None:
            size = frame_size(memoryview(self._buf)[self._start:self._end], self._max_frame)
            if size is None:
                self._fill(4)
        self._fill(HEADER_SIZE)
        ftype = self._buf[self._start + 4]
        if ftype not in (REQUEST, RESPONSE, CHUNK, END, WS_MESSAGE, WS_CLOSE):
            raise ValueError(f"unknown frame type {ftype}")
        self._fill(size)
        self._head_size = size
        return size

    def _consumed(self, upto: int) -> None:
        """Everything before ``upto`` has been handed out: start over at the buffer's head
        when it is empty (shrinking a buffer that grew for a large frame)."""
        self._start = upto
        self._head_size = 0
        if upto == self._end:
            self._start = self._end = 0
            if len(self._buf) > self._bufsize:
                self._buf = bytearray(self._bufsize)

    def read_request(self) -> RequestFrame:
        """Read and decode the next frame, which must be a REQUEST."""
        return decode_request(self.read_frame())

    def read_core_frame(self) -> RequestFrame | tuple[int, int, int, int, bytes]:
        """Read the next core -> worker frame: a RequestFrame, or for WS_MESSAGE / WS_CLOSE
        a tuple ``(type, id, kind, code, data)`` (see :func:`decode_ws`; an open
        WebSocket's messages are taken faster, in runs, by :meth:`ws_messages`)."""
        buf = self.read_frame()
        if len(buf) > 4 and buf[4] in (WS_MESSAGE, WS_CLOSE):
            ftype, fid = _HEAD.unpack_from(buf)[1:]
            kind, code, data = decode_ws(buf)
            return ftype, fid, kind, code, data
        return decode_request(buf)

    def ws_messages(self, limit: int) -> list[tuple[int, str | bytes]]:
        """Take up to ``limit`` WS_MESSAGE frames that are already whole at the head of the
        buffer, decoded: ``(id, message)``, a ``str`` for text and ``bytes`` for binary. Never
        reads the socket. Stops before a frame of another type, an incomplete frame or one
        that does not decode, and leaves it to :meth:`read_core_frame` (which reports it)."""
        buf = self._buf
        pos, end = self._start, self._end
        out: list[tuple[int, str | bytes]] = []
        unpack = _WS_HEAD.unpack_from
        head = _WS_HEAD.size
        while end - pos >= head and buf[pos + 4] == WS_MESSAGE and len(out) < limit:
            flen, _, fid, kind, n = unpack(buf, pos)
            stop = pos + 4 + flen
            if stop > end or flen != head - 4 + n:
                break
            if kind == WS_TEXT:
                try:
                    message: str | bytes = buf[pos + head:stop].decode()
                except UnicodeDecodeError:
                    break
            elif kind == WS_BINARY:
                message = bytes(memoryview(buf)[pos + head:stop])
            else:
                break
            out.append((fid, message))
            pos = stop
        if out:
            self._consumed(pos)
        return out

    def buffered_type(self) -> int | None:
        """The type of the next frame if it is already whole in the buffer, else ``None``
        (the next :meth:`read_frame` would then wait for the socket)."""
        start, end = self._start, self._end
        if end - start < HEADER_SIZE:
            return None
        (flen,) = _LEN.unpack_from(self._buf, start)
        if end - start < flen + 4:
            return None
        return self._buf[start + 4]

    def _fill(self, need: int) -> None:
        """Receive until at least ``need`` bytes are buffered past ``_start``."""
        while self._end - self._start < need:
            if self._start + need > len(self._buf):
                self._make_room(need)
            n = self._sock.recv_into(memoryview(self._buf)[self._end:])
            if n == 0:
                if self._end == self._start:
                    raise EOFError("peer closed the connection")
                raise ValueError(f"connection closed inside a frame "
                                 f"({self._end - self._start} of {need} bytes)")
            self._end += n

    def _make_room(self, need: int) -> None:
        pending = self._buf[self._start:self._end]
        if need > len(self._buf):
            self._buf = bytearray(max(need, min(2 * len(self._buf), self._max_frame)))
        self._buf[:len(pending)] = pending
        self._start, self._end = 0, len(pending)


_IOV_MAX = 1024
_JOIN_MAX = 256 * 1024


def write_frames(sock: socket.socket, *frames: bytes | bytearray | memoryview) -> None:
    """Send whole frames on a blocking socket, in order, with as few syscalls as possible.

    Buffers that add up to at most 256 KiB (a run of echoes, a broadcast: a header and a
    shared payload per connection) are joined and sent with ``sendall``; larger ones go by one
    ``sendmsg`` over all buffers (up to IOV_MAX at a
    time), resumed after a partial send. A frame is never interleaved with anything else
    written by this thread.
    """
    if len(frames) == 1:
        sock.sendall(frames[0])
        return
    if sum(map(len, frames)) <= _JOIN_MAX:
        sock.sendall(b"".join(frames))  # copying a few KiB beats a memoryview per buffer
        return
    views = [memoryview(f).cast("B") for f in frames if len(f)]
    i = 0
    while i < len(views):
        sent = sock.sendmsg(views[i:i + _IOV_MAX])
        while sent:
            head = views[i]
            if sent >= len(head):
                sent -= len(head)
                i += 1
            else:
                views[i] = head[sent:]
                sent = 0
