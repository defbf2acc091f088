"""Tests for krait.protocol: golden vectors shared with the C tests, round trips, validation,
FrameReader and write_frames over real socket pairs, and splitting large bodies into chunks."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "ipc_vectors.json").read_text())


def _load_protocol():
    """Import krait.protocol; if the package itself cannot be imported yet (krait/__init__.py
    pulls in modules still being written), load the file alone: it imports nothing from krait."""
    try:
        from krait import protocol
        return protocol
    except ImportError:
        spec = importlib.util.spec_from_file_location("krait_protocol_standalone",
                                                      ROOT / "krait" / "protocol.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


P = _load_protocol()


def raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def lower_ascii(text: str) -> str:
    return raw(text).lower().decode("utf-8", "surrogateescape")


def pairs(items: list[list[str]]) -> list[tuple[str, str]]:
    return [(n, v) for n, v in items]


# ---- the Python constants mirror ipc.h ----

def test_constants_mirror_ipc_h():
    header = (ROOT / "native" / "src" / "ipc.h").read_text()
    consts = {m[1]: int(m[2]) for m in re.finditer(r"\bKRAIT__(\w+) = (\d+)", header)}
    expected = {
        "IPC_REQUEST": P.REQUEST, "IPC_RESPONSE": P.RESPONSE, "IPC_CHUNK": P.CHUNK,
        "IPC_END": P.END, "REQ_BODY_FILE": P.REQ_BODY_FILE, "REQ_WEBSOCKET": P.REQ_WEBSOCKET,
        "REQ_TLS": P.REQ_TLS, "BODY_INLINE": P.BODY_INLINE, "BODY_FILE": P.BODY_FILE,
        "BODY_STREAM": P.BODY_STREAM, "IPC_WS_MESSAGE": P.WS_MESSAGE,
        "IPC_WS_CLOSE": P.WS_CLOSE, "IPC_ROUTE_ANSWER": P.ROUTE_ANSWER,
        "IPC_WS_SUBSCRIBE": P.WS_SUBSCRIBE, "IPC_WS_UNSUBSCRIBE": P.WS_UNSUBSCRIBE,
        "IPC_PUBLISH": P.PUBLISH, "REQ_ROUTE": P.REQ_ROUTE,
        "IPC_CACHE_ANSWER": P.CACHE_ANSWER, "REQ_CACHE": P.REQ_CACHE,
        "REQ_PROXIED": P.REQ_PROXIED,
    }
    assert consts == expected
    m = re.search(r"#define KRAIT__IPC_MAX_FRAME \((\d+)u \* (\d+)u \* (\d+)u\)", header)
    assert m and int(m[1]) * int(m[2]) * int(m[3]) == P.MAX_FRAME == VECTORS["max_frame"]
    m = re.search(r"#define KRAIT__IPC_HEADER (\d+)u", header)
    assert m and int(m[1]) == P.HEADER_SIZE


# ---- golden vectors ----

@pytest.mark.parametrize("v", VECTORS["requests"], ids=lambda v: v["name"])
def test_golden_request(v):
    frame = bytes.fromhex(v["frame"])
    encoded = P.encode_request(
        v["id"], v["method"], v["path"], flags=v["flags"], route=v["route"], query=v["query"],
        version=v["version"], file=v["file"], remote_addr=v["remote_addr"],
        remote_port=v["remote_port"], server_addr=v["server_addr"],
        server_port=v["server_port"], params=pairs(v["params"]), headers=pairs(v["headers"]),
        body=bytes.fromhex(v["body_hex"]))
    assert encoded == frame
    r = P.decode_request(frame)
    assert (r.id, r.flags, r.route, r.method, r.path, r.query, r.version, r.file,
            r.remote_addr, r.remote_port, r.server_addr, r.server_port) == (
        v["id"], v["flags"], v["route"], v["method"], v["path"], v["query"], v["version"],
        v["file"], v["remote_addr"], v["remote_port"], v["server_addr"], v["server_port"])
    assert r.params == pairs(v["params"])
    assert r.headers == [(lower_ascii(n), val) for n, val in v["headers"]]
    assert r.body == bytes.fromhex(v["body_hex"])
    assert r.encode() == frame


@pytest.mark.parametrize("v", VECTORS["responses"], ids=lambda v: v["name"])
def test_golden_response(v):
    frame = bytes.fromhex(v["frame"])
    body = bytes.fromhex(v["body_hex"])
    if v["type"] == "response":
        encoded = P.encode_response(v["id"], v["status"], pairs(v["headers"]), body,
                                    v["body_kind"])
    elif v["type"] == "chunk":
        encoded = P.encode_chunk(v["id"], body)
    else:
        encoded = P.encode_end(v["id"])
    assert encoded == frame
    f = P.decode_response(frame)
    ftype = {"response": P.RESPONSE, "chunk": P.CHUNK, "end": P.END}[v["type"]]
    assert f == P.ResponseFrame(ftype, v["id"], v["status"], v["body_kind"],
                                pairs(v["headers"]), body)


@pytest.mark.parametrize("v", VECTORS["streams"], ids=lambda v: v["name"])
def test_golden_stream(v):
    body = bytes.fromhex(v["body_hex"])
    frames = P.encode_response_stream(v["id"], v["status"], pairs(v["headers"]), body,
                                      max_frame=v["max_frame"])
    assert [f.hex() for f in frames] == v["frames"]
    assert all(len(f) <= v["max_frame"] for f in frames)
    decoded = P.decode_responses(b"".join(frames))
    assert decoded[0].status == v["status"] and decoded[0].headers == pairs(v["headers"])
    if len(decoded) == 1:
        assert decoded[0].body == body
    else:
        assert decoded[0].body_kind == P.BODY_STREAM and decoded[-1].type == P.END
        assert b"".join(f.body for f in decoded[1:-1]) == body


@pytest.mark.parametrize("v", VECTORS["malformed"], ids=lambda v: v["name"])
def test_golden_malformed(v):
    with pytest.raises(ValueError):
        P.decode_response(bytes.fromhex(v["frame"]))


def test_c_tests_embed_the_same_vectors():
    """tests/native/test_ipc.c carries a generated copy of the vectors; it must not drift."""
    source = (ROOT / "tests" / "native" / "test_ipc.c").read_text()
    embedded = {}
    for m in re.finditer(r'\.name = "([^"]+)",.*?\.hex = ((?:\s*"[0-9a-f]*")+)', source, re.S):
        embedded[m[1]] = "".join(re.findall(r'"([0-9a-f]*)"', m[2]))
    expected = {}
    for kind in ("requests", "responses", "malformed"):
        for v in VECTORS[kind]:
            expected[f"{kind.rstrip('s')}/{v['name']}"] = v["frame"]
    for v in VECTORS["streams"]:
        expected[f"stream/{v['name']}"] = "".join(v["frames"])
    assert embedded == expected


# ---- round trips ----

def _random_text(rng: random.Random, max_len: int = 12) -> str:
    alphabet = ["a", "Z", "-", " ", "é", "日", "\U0001f40d", "\x00", "\udcff", "%", "\r"]
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(max_len)))


def test_request_round_trip_random():
    rng = random.Random(1234)
    for _ in range(300):
        fields = dict(
            flags=rng.randrange(256), route=rng.randrange(-2**31, 2**31),
            query=_random_text(rng), version=_random_text(rng), file=_random_text(rng),
            remote_addr=_random_text(rng), remote_port=rng.randrange(65536),
            server_addr=_random_text(rng), server_port=rng.randrange(65536),
            params=[(_random_text(rng), _random_text(rng)) for _ in range(rng.randrange(4))],
            headers=[(_random_text(rng).lower(), _random_text(rng))
                     for _ in range(rng.randrange(6))],
            body=rng.randbytes(rng.randrange(40)))
        rid, method, path = rng.randrange(2**32), _random_text(rng), _random_text(rng)
        frame = P.encode_request(rid, method, path, **fields)
        r = P.decode_request(frame)
        assert (r.id, r.method, r.path) == (rid, method, path)
        for name, value in fields.items():
            if name == "headers":
                value = [(lower_ascii(n), v) for n, v in value]
            assert getattr(r, name) == value, name
        assert r.encode() == frame


def test_response_round_trip_random():
    rng = random.Random(99)
    for _ in range(300):
        headers = [("X-" + _random_text(rng).replace("\r", "").replace("\x00", ""),
                    _random_text(rng).replace("\r", "").replace("\x00", ""))
                   for _ in range(rng.randrange(5))]
        kind = rng.choice([P.BODY_INLINE, P.BODY_FILE, P.BODY_STREAM])
        body = {P.BODY_INLINE: rng.randbytes(rng.randrange(50)), P.BODY_FILE: b"/srv/f",
                P.BODY_STREAM: b""}[kind]
        status, rid = rng.randrange(100, 1000), rng.randrange(2**32)
        f = P.decode_response(P.encode_response(rid, status, headers, body, kind))
        assert f == P.ResponseFrame(P.RESPONSE, rid, status, kind, headers, body)


def test_surrogateescape_is_lossless():
    frame = P.encode_request(1, "GET", b"/\xff\xfe/caf\xc3\xa9", query=b"a=\x80",
                             headers=[(b"X-Raw", b"\xe9t\xe9")])
    r = P.decode_request(frame)
    assert r.path == "/\udcff\udcfe/café"
    assert raw(r.path) == b"/\xff\xfe/caf\xc3\xa9"
    assert raw(r.query) == b"a=\x80"
    assert r.headers == [("x-raw", "\udce9t\udce9")]
    assert r.encode() == frame


def test_header_names_lower_cased_ascii_only():
    r = P.decode_request(P.encode_request(1, "GET", "/", headers=[("X-ÄÖ-Foo", "V")]))
    assert r.headers == [("x-ÄÖ-foo", "V")]  # like ipc.c: only A-Z change


def test_body_file_property():
    r = P.decode_request(P.encode_request(1, "POST", "/", flags=P.REQ_BODY_FILE | P.REQ_TLS,
                                          body="/tmp/spool/\udcff"))
    assert r.body_file == "/tmp/spool/\udcff" and r.body == b"/tmp/spool/\xff"
    assert P.decode_request(P.encode_request(1, "POST", "/", body=b"x")).body_file is None


# ---- validation ----

@pytest.mark.parametrize("kwargs", [
    dict(flags=256), dict(flags=-1), dict(route=2**31), dict(route=-2**31 - 1),
    dict(remote_port=65536), dict(remote_port=-1), dict(server_port=65536),
    dict(server_port=-1), dict(headers=[("a", "b")] * 65536),
    dict(params=[("a", "b")] * 65536),
])
def test_encode_request_rejects(kwargs):
    with pytest.raises(ValueError):
        P.encode_request(1, "GET", "/", **kwargs)


def test_encode_request_limits():
    P.encode_request(1, "GET", "/", headers=[("", "")] * 65535)
    with pytest.raises(ValueError):
        P.encode_request(2**32, "GET", "/")
    base = len(P.encode_request(1, "", "", version=""))
    assert len(P.encode_request(1, "", "", version="", body=bytes(P.MAX_FRAME - base))) \
        == P.MAX_FRAME
    with pytest.raises(P.FrameTooLarge):
        P.encode_request(1, "", "", version="", body=bytes(P.MAX_FRAME - base + 1))


@pytest.mark.parametrize("args, kwargs", [
    ((99,), {}), ((1000,), {}), ((200, [], b"", 3), {}),
    ((200, [], b"x", P.BODY_STREAM), {}), ((200, [], b"", P.BODY_FILE), {}),
    ((200, [], "/a\x00b", P.BODY_FILE), {}), ((200, [("", "v")]), {}),
    ((200, [("X", "a\r\nSet-Cookie: x=1")]), {}), ((200, [("X", "a\nb")]), {}),
    ((200, [("X\r", "v")]), {}), ((200, [("X", "\x00")]), {}),
    ((200, [("Content-Length", "3\r\n")]), {}), ((200, [("a", "b")] * 65536), {}),
])
def test_encode_response_rejects(args, kwargs):
    with pytest.raises(ValueError):
        P.encode_response(1, *args, **kwargs)


def test_encode_response_drops_core_headers():
    headers = [("Content-Length", "3"), ("X-A", "1"), ("transfer-ENCODING", "chunked"),
               ("Connection", "close"), ("Date", "x"), ("SERVER", "x"), ("X-B", "2")]
    f = P.decode_response(P.encode_response(1, 200, headers, b"abc"))
    assert f.headers == [("X-A", "1"), ("X-B", "2")]


def test_encode_response_too_large():
    with pytest.raises(P.FrameTooLarge):
        P.encode_response(1, 200, [], b"x" * 100, max_frame=100)
    with pytest.raises(P.FrameTooLarge):
        P.encode_chunk(1, b"x" * 100, max_frame=100)
    assert len(P.encode_chunk(1, b"x" * 87, max_frame=100)) == 100


def test_decode_request_rejects_every_truncation_and_extension():
    frame = bytes.fromhex(VECTORS["requests"][2]["frame"])
    for k in range(len(frame)):
        with pytest.raises(ValueError):
            P.decode_request(frame[:k])
    with pytest.raises(ValueError):
        P.decode_request(frame + b"\x00")
    # Trailing byte inside the frame: the length prefix agrees, the fields do not fill it.
    longer = struct.pack("<I", len(frame) - 3) + frame[4:] + b"\x00"
    with pytest.raises(ValueError, match="trailing"):
        P.decode_request(longer)
    with pytest.raises(ValueError):
        P.decode_request(bytes([*frame[:4], P.RESPONSE, *frame[5:]]))


def test_decode_request_string_past_end():
    frame = bytearray(bytes.fromhex(VECTORS["requests"][1]["frame"]))
    frame[14:18] = struct.pack("<I", 0xFFFFFFFF)  # the method's length
    with pytest.raises(ValueError):
        P.decode_request(bytes(frame))


def test_decode_response_rejects_truncations():
    for v in VECTORS["responses"]:
        frame = bytes.fromhex(v["frame"])
        for k in range(len(frame)):
            with pytest.raises(ValueError):
                P.decode_response(frame[:k])


def test_frame_size():
    assert P.frame_size(b"\x05\x00\x00") is None
    assert P.frame_size(b"\x05\x00\x00\x00") == 9
    for bad in (b"\x04\x00\x00\x00", struct.pack("<I", P.MAX_FRAME - 3)):
        with pytest.raises(ValueError):
            P.frame_size(bad)
    assert P.frame_size(struct.pack("<I", P.MAX_FRAME - 4)) == P.MAX_FRAME


# ---- chunk splitting ----

def test_stream_splitting_properties():
    for max_frame in (18, 19, 20, 64, 1000):
        for n in (0, 1, 4, 5, 6, 17, 100, 999, 2500):
            body = bytes(i % 251 for i in range(n))
            frames = P.encode_response_stream(3, 200, [], body, max_frame=max_frame)
            assert all(len(f) <= max_frame for f in frames)
            decoded = P.decode_responses(b"".join(frames))
            if len(frames) == 1:
                assert decoded[0].body == body and decoded[0].body_kind == P.BODY_INLINE
            else:
                assert decoded[0].body_kind == P.BODY_STREAM and decoded[-1].type == P.END
                chunks = [f.body for f in decoded[1:-1]]
                assert all(chunks) and b"".join(chunks) == body
                # Every chunk but the last is full.
                assert all(len(c) == max_frame - 13 for c in chunks[:-1])


def test_stream_frames_from_pieces():
    pieces = [b"", b"abc", bytearray(b"defghij"), memoryview(b"k"), b""]
    frames = list(P.stream_frames(4, 200, [], pieces, max_frame=13 + 5))
    decoded = P.decode_responses(b"".join(frames))
    assert [f.type for f in decoded] == [P.RESPONSE] + [P.CHUNK] * 4 + [P.END]
    assert [f.body for f in decoded[1:-1]] == [b"abc", b"defgh", b"ij", b"k"]
    assert all(len(f) <= 18 for f in frames)
    with pytest.raises(ValueError):
        list(P.stream_frames(4, 200, [], [b"x"], max_frame=13))


def test_large_body_split_at_max_frame():
    body = bytes(range(256)) * ((P.MAX_FRAME + 300) // 256)
    frames = P.encode_response_stream(7, 200, [("Content-Type", "video/mp4")], body)
    assert len(frames) == 4 and all(len(f) <= P.MAX_FRAME for f in frames)
    assert len(frames[1]) == P.MAX_FRAME
    decoded = [P.decode_response(f) for f in frames]
    assert decoded[0].body_kind == P.BODY_STREAM and decoded[3].type == P.END
    assert decoded[1].body + decoded[2].body == body


# ---- FrameReader and write_frames over socket pairs ----

def _pair():
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    return a, b


def _in_thread(fn: Callable[[], None]) -> threading.Thread:
    errors: list[BaseException] = []

    def run():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - surfaced by the join below
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.errors = errors  # type: ignore[attr-defined]
    t.start()
    return t


def _join(t: threading.Thread) -> None:
    t.join(10)
    assert not t.is_alive()
    assert not t.errors  # type: ignore[attr-defined]


def _all_golden_frames() -> list[bytes]:
    frames = [bytes.fromhex(v["frame"]) for v in VECTORS["requests"] + VECTORS["responses"]]
    return frames + [bytes.fromhex(f) for v in VECTORS["streams"] for f in v["frames"]]


def test_reader_one_byte_at_a_time():
    frames = _all_golden_frames()
    data = b"".join(frames)
    a, b = _pair()

    def writer():
        for i in range(len(data)):
            a.sendall(data[i:i + 1])
        a.close()

    t = _in_thread(writer)
    reader = P.FrameReader(b, bufsize=16)
    got = [reader.read_frame() for _ in frames]
    with pytest.raises(EOFError):
        reader.read_frame()
    _join(t)
    b.close()
    assert got == frames
    req = P.decode_request(got[1])
    assert req.method == "GET" and req.headers == [("host", "example.com")]


def test_reader_many_frames_in_one_send_and_read_request():
    frames = [bytes.fromhex(v["frame"]) for v in VECTORS["requests"]] * 50
    a, b = _pair()
    t = _in_thread(lambda: (a.sendall(b"".join(frames)), a.close()))
    reader = P.FrameReader(b)
    got = [reader.read_request() for _ in frames]
    _join(t)
    assert [r.encode() for r in got] == frames
    with pytest.raises(EOFError):
        reader.read_frame()
    b.close()


def test_write_frames_large_and_many():
    big = P.encode_chunk(1, bytes(range(256)) * 40000)  # ~10 MiB, forces partial sendmsg
    small = [P.encode_chunk(i, b"x" * (i % 7)) for i in range(3000)]  # more than IOV_MAX
    frames = [P.encode_end(0), big, *small, b"", P.encode_end(1)]
    expected = [f for f in frames if f]
    a, b = _pair()
    t = _in_thread(lambda: (P.write_frames(a, *frames), P.write_frames(a, big), a.close()))
    reader = P.FrameReader(b, bufsize=4096)
    got = [reader.read_frame() for _ in range(len(expected) + 1)]
    _join(t)
    assert got == expected + [big]
    assert len(reader._buf) == 4096  # grew for the big frame, shrank back after it
    with pytest.raises(EOFError):
        reader.read_frame()
    b.close()


def test_reader_eof_between_frames_and_inside_one():
    a, b = _pair()
    a.close()
    with pytest.raises(EOFError):
        P.FrameReader(b).read_frame()
    b.close()

    frame = P.encode_chunk(2, b"hello")
    for cut in (1, 4, 5, 9, len(frame) - 1):
        a, b = _pair()
        a.sendall(P.encode_end(1) + frame[:cut])
        a.close()
        reader = P.FrameReader(b)
        assert reader.read_frame() == P.encode_end(1)
        with pytest.raises(ValueError, match="closed inside a frame"):
            reader.read_frame()
        b.close()


@pytest.mark.parametrize("data, max_frame", [
    (struct.pack("<I", 4) + b"\x04" + bytes(4), P.MAX_FRAME),
    (struct.pack("<I", P.MAX_FRAME - 3), P.MAX_FRAME),
    (b"\xff\xff\xff\xff", P.MAX_FRAME),
    (struct.pack("<IBI", 1000, P.CHUNK, 1), 1000),
    (struct.pack("<IBI", 5, 0, 1), P.MAX_FRAME),
    (struct.pack("<IBI", 5, 9, 1), P.MAX_FRAME),
])
def test_reader_rejects_bad_headers(data, max_frame):
    a, b = _pair()
    a.sendall(data)  # the peer stays open: the reader must not wait for the announced bytes
    with pytest.raises(ValueError):
        P.FrameReader(b, max_frame=max_frame).read_frame()
    a.close()
    b.close()


def test_write_frames_then_decode_responses():
    frames = P.encode_response_stream(5, 200, [("X", "y")], b"z" * 1000, max_frame=100)
    a, b = _pair()
    P.write_frames(a, *frames)
    a.close()
    reader = P.FrameReader(b)
    got = []
    while True:
        try:
            got.append(P.decode_response(reader.read_frame()))
        except EOFError:
            break
    b.close()
    assert b"".join(f.body for f in got[1:-1]) == b"z" * 1000


# ---- property tests: arbitrary bytes, and ipc.c against this module ----

_GOLDEN_RESPONSES = [bytes.fromhex(v["frame"]) for v in VECTORS["responses"]] + [
    bytes.fromhex(v["frame"]) for v in VECTORS["malformed"]] + [
    P.encode_route_answer(7, 2, 3, "page.py",
                          b"\x01\x00\x02\x00\x00\x00id\x02\x00\x00\x0042"),
    P.encode_route_answer(8, -1, 0),
    P.encode_cache_answer(11, 0), P.encode_cache_answer(12, 12), P.encode_cache_answer(13, 1),
    P.encode_subscribe(9, "room:1"), P.encode_subscribe(10, "room:1", subscribe=False),
    P.encode_publish("room:1", "hello"), P.encode_publish("c", b"\x00\x01")]


@st.composite
def _mutated_frames(draw: st.DrawFn) -> bytes:
    """A golden worker frame with a few bytes flipped, inserted or cut off."""
    data = bytearray(draw(st.sampled_from(_GOLDEN_RESPONSES)))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "insert", "cut"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[at:]
    return bytes(data)


_ANY_FRAME = st.one_of(st.binary(max_size=80), _mutated_frames())


@settings(max_examples=500, deadline=None)
@given(_ANY_FRAME)
def test_decoders_only_raise_value_error(data):
    for decode in (P.decode_response, P.decode_request, P.decode_responses):
        try:
            decode(data)
        except ValueError:
            pass


class _Slice(ctypes.Structure):
    _fields_ = [("p", ctypes.c_void_p), ("n", ctypes.c_size_t)]


class _Frame(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint8), ("id", ctypes.c_uint32), ("status", ctypes.c_uint16),
                ("body_kind", ctypes.c_uint8), ("nheaders", ctypes.c_size_t),
                ("headers_at", ctypes.c_void_p), ("body", _Slice), ("route", ctypes.c_int32),
                ("allow", ctypes.c_uint32), ("params", _Slice)]


class _Request(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("flags", ctypes.c_uint8), ("route", ctypes.c_int32),
                ("method", _Slice), ("path", _Slice), ("query", _Slice), ("version", _Slice),
                ("file", _Slice), ("remote_addr", _Slice), ("remote_port", ctypes.c_uint16),
                ("server_addr", _Slice), ("server_port", ctypes.c_uint16),
                ("params", ctypes.POINTER(_Slice)), ("nparams", ctypes.c_size_t),
                ("headers", ctypes.POINTER(_Slice)), ("nheaders", ctypes.c_size_t),
                ("body", _Slice)]


@pytest.fixture(scope="module")
def libipc(tmp_path_factory):
    """native/src/ipc.c compiled alone into a shared library, to call it through ctypes."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("ipc") / "libipc.so"
    subprocess.run([cc, "-std=gnu11", "-O1", "-shared", "-fPIC", "-o", str(out),
                    str(ROOT / "native" / "src" / "ipc.c")], check=True)
    lib = ctypes.CDLL(str(out))
    lib.krait__ipc_parse.restype = ctypes.c_long
    lib.krait__ipc_parse.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(_Frame)]
    lib.krait__ipc_next_pair.restype = None
    lib.krait__ipc_next_pair.argtypes = [ctypes.POINTER(ctypes.c_void_p),
                                         ctypes.POINTER(_Slice), ctypes.POINTER(_Slice)]
    lib.krait__ipc_request_size.restype = ctypes.c_size_t
    lib.krait__ipc_request_size.argtypes = [ctypes.POINTER(_Request)]
    lib.krait__ipc_encode_request.restype = ctypes.c_long
    lib.krait__ipc_encode_request.argtypes = [ctypes.POINTER(_Request), ctypes.c_char_p,
                                              ctypes.c_size_t]
    return lib


def _c_parse(lib, data: bytes):
    """Run krait__ipc_parse; returns its code, or (length, ResponseFrame) on success."""
    buf = ctypes.create_string_buffer(data, len(data))
    f = _Frame()
    rc = lib.krait__ipc_parse(buf, len(data), ctypes.byref(f))
    if rc < 0:
        return rc
    base = ctypes.addressof(buf)

    def text(s: _Slice) -> str:
        assert s.n == 0 or base <= s.p and s.p + s.n <= base + rc  # inside the frame
        return ctypes.string_at(s.p, s.n).decode("utf-8", "surrogateescape") if s.n else ""

    if f.type == P.PUBLISH:
        return rc, P.ResponseFrame(f.type, f.id, body_kind=f.body_kind,
                                   headers=[("channel", text(f.params))],
                                   body=raw(text(f.body)))
    if f.type == P.CACHE_ANSWER:
        return rc, P.ResponseFrame(f.type, f.id, headers=[("flags", str(f.allow))])
    if f.type == P.ROUTE_ANSWER:
        return rc, P.ResponseFrame(f.type, f.id, headers=[
            ("route", str(f.route)), ("allow", str(f.allow)), ("target", text(f.body))],
            body=ctypes.string_at(f.params.p, f.params.n) if f.params.n else b"")
    headers = []
    at = ctypes.c_void_p(f.headers_at)
    for _ in range(f.nheaders):
        name, value = _Slice(), _Slice()
        lib.krait__ipc_next_pair(ctypes.byref(at), ctypes.byref(name), ctypes.byref(value))
        headers.append((text(name), text(value)))
    body = raw(text(f.body))
    return rc, P.ResponseFrame(f.type, f.id, f.status, f.body_kind, headers, body)


def _py_parse(data: bytes):
    """The same contract as krait__ipc_parse, built from this module's pieces."""
    try:
        size = P.frame_size(data)
        if size is not None and len(data) >= 5 and data[4] not in P._WORKER_TYPES:
            return -1
        if size is None or len(data) < size:
            return -2
        return size, P.decode_response(data[:size])
    except ValueError:
        return -1


def test_route_answer_round_trip(libipc):
    frame = P.encode_route_answer(9, 1, 3, "t/{x}.py", b"ab")
    assert _c_parse(libipc, frame) == _py_parse(frame)
    assert P.decode_response(frame).headers == [("route", "1"), ("allow", "3"),
                                                ("target", "t/{x}.py")]


def test_cache_answer_round_trip(libipc):
    for flags in (0, 1, 2, 4, 8, 10, 12):
        frame = P.encode_cache_answer(9, flags)
        assert frame.hex() == f"090000000b09000000{flags:02x}000000"
        assert _c_parse(libipc, frame) == _py_parse(frame)
        assert P.decode_response(frame).headers == [("flags", str(flags))]


@pytest.mark.parametrize("flags", [3, 5, 6, 7, 9, 11, 13, 14, 15, 16, 0x80000002])
def test_cache_answer_impossible_flags_refused(libipc, flags):
    """Flags no cache list can give (NO_STORE with another, PRIVATE with PUBLIC, unknown
    bits) are malformed on both sides: the core then kills the worker."""
    with pytest.raises(ValueError):
        P.encode_cache_answer(9, flags)
    frame = bytes.fromhex("090000000b09000000") + flags.to_bytes(4, "little")
    assert _c_parse(libipc, frame) == _py_parse(frame) == -1


@settings(max_examples=1500, deadline=None)
@given(_ANY_FRAME, st.binary(max_size=6))
def test_c_parser_agrees_with_python(libipc, data, tail):
    assert _c_parse(libipc, data) == _py_parse(data)
    if isinstance(_py_parse(data), tuple):  # a following frame's bytes are not consumed
        assert _c_parse(libipc, data + tail) == _py_parse(data)


def _c_slice(value: bytes, keep: list) -> _Slice:
    buf = ctypes.create_string_buffer(value, len(value))
    keep.append(buf)
    return _Slice(ctypes.addressof(buf), len(value))


def _c_pairs(items: list[tuple[bytes, bytes]], keep: list):
    arr = (_Slice * max(1, 2 * len(items)))()
    keep.append(arr)
    for i, (n, v) in enumerate(items):
        arr[2 * i], arr[2 * i + 1] = _c_slice(n, keep), _c_slice(v, keep)
    return arr, len(items)


_BYTES = st.binary(max_size=12)
_PAIRS = st.lists(st.tuples(_BYTES, _BYTES), max_size=5)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(-2**31, 2**31 - 1),
       st.lists(_BYTES, min_size=7, max_size=7), st.integers(0, 65535), st.integers(0, 65535),
       _PAIRS, _PAIRS, st.binary(max_size=64))
def test_c_encoder_agrees_with_python(libipc, rid, flags, route, text, port, sport, params,
                                      headers, body):
    keep: list = []
    r = _Request(rid, flags, route, *[_c_slice(t, keep) for t in text[:6]], port,
                 _c_slice(text[6], keep), sport)
    r.params, r.nparams = _c_pairs(params, keep)
    r.headers, r.nheaders = _c_pairs(headers, keep)
    r.body = _c_slice(body, keep)
    expected = P.encode_request(rid, text[0], text[1], flags=flags, route=route, query=text[2],
                                version=text[3], file=text[4], remote_addr=text[5],
                                remote_port=port, server_addr=text[6], server_port=sport,
                                params=params, headers=headers, body=body)
    assert libipc.krait__ipc_request_size(ctypes.byref(r)) == len(expected)
    out = ctypes.create_string_buffer(len(expected))
    assert libipc.krait__ipc_encode_request(ctypes.byref(r), out, len(expected)) == len(expected)
    assert out.raw == expected
    assert libipc.krait__ipc_encode_request(ctypes.byref(r), out, len(expected) - 1) == -1


def test_ws_broadcast_frames_are_ws_messages_sharing_one_payload():
    for data in ("héllo", b"\x00\xff", ""):
        bufs = P.encode_ws_broadcast([1, 7, 0xFFFFFFFF], data)
        assert len(bufs) == 6 and bufs[1] is bufs[3] is bufs[5]
        frames = [bufs[i] + bufs[i + 1] for i in range(0, 6, 2)]
        assert frames == [P.encode_ws_message(i, data) for i in (1, 7, 0xFFFFFFFF)]
    assert P.encode_ws_broadcast([], "x") == []
    with pytest.raises(ValueError):
        P.encode_ws_broadcast([-1], "x")


def test_ws_message_encoder_is_encode_ws_message():
    enc = P.ws_message_encoder(9)
    for data in ("héllo", "", b"\x00\xff", bytearray(b"ab"), memoryview(b"xyz")):
        raw = data.encode() if isinstance(data, str) else bytes(data)
        kind = P.WS_TEXT if isinstance(data, str) else P.WS_BINARY
        frame = struct.pack("<IBIBI", P.HEADER_SIZE + 1 + len(raw), P.WS_MESSAGE, 9, kind,
                            len(raw)) + raw
        assert enc(data) == frame == P.encode_ws_message(9, data)
        assert P.decode_response(frame).body == raw
    with pytest.raises(TypeError):
        enc(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        P.ws_message_encoder(1 << 32)
    with pytest.raises(P.FrameTooLarge):
        enc(b"x" * P.MAX_FRAME)


def test_reader_ws_messages_takes_whole_runs_only():
    texts = ["a", "héllo", "", "z" * 300]
    frames = [P.encode_ws_message(i + 1, t) for i, t in enumerate(texts)]
    frames.append(P.encode_ws_message(7, b"\x00\xff"))
    close = P.encode_ws_close(3, 1000, "bye")
    request = bytes.fromhex(VECTORS["requests"][0]["frame"])
    partial = P.encode_ws_message(5, "later")
    a, b = _pair()
    a.sendall(b"".join(frames) + close + request + partial[:11])
    reader = P.FrameReader(b)  # one recv takes all of it (one send on a socketpair)
    assert reader.next_type() == P.WS_MESSAGE
    assert reader.ws_messages(2) == [(1, "a"), (2, "héllo")]
    assert reader.ws_messages(100) == [(3, ""), (4, "z" * 300), (7, b"\x00\xff")]
    assert reader.ws_messages(100) == []  # a WS_CLOSE is next: left to read_core_frame
    assert reader.buffered_type() == P.WS_CLOSE
    assert reader.read_core_frame() == (P.WS_CLOSE, 3, 0, 1000, b"bye")
    assert reader.next_type() == P.REQUEST
    assert reader.ws_messages(100) == []
    assert reader.read_core_frame().encode() == request
    assert reader.ws_messages(100) == []  # incomplete: never waits for the socket
    assert reader.buffered_type() is None
    a.sendall(partial[11:])
    assert reader.next_type() == P.WS_MESSAGE
    assert reader.ws_messages(100) == [(5, "later")]
    assert reader._start == reader._end == 0
    # Frames a run cannot decode stop it and are reported by read_core_frame.
    bad_kind = struct.pack("<IBIBI", 11, P.WS_MESSAGE, 1, 3, 1) + b"x"
    bad_text = struct.pack("<IBIBI", 11, P.WS_MESSAGE, 1, P.WS_TEXT, 1) + b"\xff"
    for bad in (bad_kind, bad_text):
        a.sendall(P.encode_ws_message(2, "ok") + bad)
        assert reader.next_type() == P.WS_MESSAGE
        assert reader.ws_messages(100) == [(2, "ok")]
        assert reader.buffered_type() == P.WS_MESSAGE
        if bad is bad_kind:
            with pytest.raises(ValueError, match="kind"):
                reader.read_core_frame()
        else:
            assert reader.read_core_frame() == (P.WS_MESSAGE, 1, P.WS_TEXT, 0, b"\xff")
    a.close()
    with pytest.raises(EOFError):
        reader.next_type()
    b.close()


def test_header_encoder_matches_the_checked_path():
    """A header encoded once by header_encoder (X-Request-ID) gives the same frame as the same
    pair passed with the others."""
    enc = P.header_encoder("X-Request-ID")
    base = [("Content-Type", "text/plain")]
    pair = ("X-Request-ID", "3f2b9c1e7a4d-17")
    assert P.encode_response(7, 200, base, b"hi", encoded=(enc(pair[1]),)) == \
        P.encode_response(7, 200, [*base, pair], b"hi")
    assert P.encode_response_stream(7, 200, base, b"x" * 300, max_frame=120,
                                    encoded=(enc(pair[1]),)) == \
        P.encode_response_stream(7, 200, [*base, pair], b"x" * 300, max_frame=120)
    with pytest.raises(ValueError):
        P.header_encoder("Content-Length")
    with pytest.raises(ValueError):
        P.header_encoder("Bad\nName")
