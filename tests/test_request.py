"""Tests for krait.request: Request, Headers, query/form parsing, multipart, cookies, JSON."""

from __future__ import annotations

import io
import logging
import os

import pytest

import krait
from krait.errors import BadRequest, HTTPError, PayloadTooLarge
from krait.request import Headers, MultipartFormData, Request

BOUNDARY = "----kraitBoundary7MA4YWxkTrZu0gW"


def make_request(query_string="", headers=None, body=b"", **kwargs) -> Request:
    return Request("GET", "/", query_string, "HTTP/1.1", headers or [], body, **kwargs)


def multipart_body(parts, boundary=BOUNDARY) -> bytes:
    """Build a multipart/form-data body from (disposition, content_type or None, data)."""
    out = bytearray()
    for disposition, content_type, data in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        out += b"Content-Disposition: " + disposition.encode() + b"\r\n"
        if content_type is not None:
            out += b"Content-Type: " + content_type.encode() + b"\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return bytes(out)


def multipart_request(body, content_type=None, **kwargs) -> Request:
    if content_type is None:
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
    return Request("POST", "/upload", "", "HTTP/1.1", [("Content-Type", content_type)], body,
                   **kwargs)


# --- attributes -----------------------------------------------------------------------------

def test_basic_attributes():
    req = Request("HEAD", "/a b/ü", "x=1", "HTTP/1.1", [("Host", "example.com")], b"hi",
                  remote_addr="203.0.113.7", server_addr="192.0.2.10", server_port=8443,
                  scheme="https")
    assert req.http_method == "HEAD"
    assert req.url == "/a b/ü"
    assert req.query_string == "x=1"
    assert req.query == {"x": "1"}
    assert req.http_version == "HTTP/1.1"
    assert req.headers == {"host": "example.com"}
    assert req.body == b"hi"
    assert req.remote_addr == "203.0.113.7"
    assert (req.server_addr, req.server_port) == ("192.0.2.10", 8443)
    assert req.scheme == "https"
    assert req.body_file is None


def test_defaults():
    req = Request("GET", "/", None, "HTTP/1.0", None, None)
    assert req.query_string == ""
    assert req.query == {}
    assert req.headers == {}
    assert req.body == b""
    assert req.remote_addr == ""
    assert (req.server_addr, req.server_port) == ("", 0)
    assert req.scheme == "http"


def test_multipart_form_data_is_reachable_from_request_and_krait():
    assert Request.MultipartFormData is MultipartFormData
    assert krait.MultipartFormData is MultipartFormData
    part = MultipartFormData(b"x", "n", None, "text/plain")
    assert part.data == b"x" and part.name == "n" and part.filename is None
    assert part.content_type == "text/plain"


# --- headers --------------------------------------------------------------------------------

def test_headers_lower_cased_and_case_insensitive():
    req = make_request(headers=[("Content-Type", "text/html"), ("X-Thing", "1")])
    assert list(req.headers) == ["content-type", "x-thing"]
    assert req.headers["content-type"] == "text/html"
    assert req.headers["Content-Type"] == "text/html"
    assert req.headers.get("CONTENT-TYPE") == "text/html"
    assert "X-THING" in req.headers
    assert "missing" not in req.headers
    assert req.headers.get("missing", "d") == "d"
    assert isinstance(req.headers, dict)


def test_headers_repeats_joined_with_comma():
    h = Headers([("Accept", "text/html"), ("accept", "application/json"), ("ACCEPT", "*/*")])
    assert h == {"accept": "text/html,application/json,*/*"}


def test_cookie_header_repeats_joined_with_semicolon():
    h = Headers([("Cookie", "a=1"), ("Cookie", "b=2")])
    assert h["cookie"] == "a=1; b=2"


def test_headers_from_dict_and_bytes():
    assert Headers({"Host": "x"}) == {"host": "x"}
    h = Headers([(b"X-Raw", b"caf\xe9 ")])
    assert h["x-raw"] == "café"


def test_headers_mutation_is_case_insensitive():
    h = Headers()
    h["X-A"] = "1"
    assert h == {"x-a": "1"}
    h.update({"X-B": "2"}, **{"X_C": "3"})
    assert h["x-b"] == "2" and h["x_c"] == "3"
    assert h.setdefault("X-A", "zzz") == "1"
    assert h.pop("X-B") == "2"
    assert h.pop("X-B", None) is None
    del h["X-A"]
    assert "x-a" not in h
    copy = h.copy()
    assert isinstance(copy, Headers) and copy == h
    assert 5 not in h


# --- query and form -------------------------------------------------------------------------

@pytest.mark.parametrize("qs, expected", [
    ("", {}),
    ("a=1", {"a": "1"}),
    ("a=1&b=2", {"a": "1", "b": "2"}),
    ("a", {"a": ""}),
    ("a=", {"a": ""}),
    ("=x", {"": "x"}),
    ("a=1&a=2", {"a": "2"}),                      # the last duplicate wins
    ("a=b=c", {"a": "b=c"}),                      # fixed: the original gave "b"
    ("a=x+y", {"a": "x y"}),
    ("a%2Bb=c%2Bd", {"a+b": "c+d"}),
    ("x=%41%42%43", {"x": "ABC"}),
    ("name=%C3%A9t%C3%A9", {"name": "été"}),
    ("bad=%FF%FE", {"bad": "\ufffd\ufffd"}),       # invalid UTF-8 becomes U+FFFD
    ("pct=%ZZ&half=%4", {"pct": "%ZZ", "half": "%4"}),  # invalid escapes stay literal
    ("a=1&&b=2&", {"a": "1", "b": "2"}),          # empty parts are skipped
    ("k+ey=v%20al", {"k ey": "v al"}),
    ("semi=a;b", {"semi": "a;b"}),                # only '&' separates
])
def test_query_parsing(qs, expected):
    assert make_request(qs).query == expected


def test_query_from_bytes():
    assert make_request(b"a=%C3%A9").query == {"a": "é"}
    req = make_request("b=é".encode() + b"\xff")
    assert req.query == {"b": "é\ufffd"}
    assert req.query_string == "b=é\ufffd"


def test_query_is_parsed_lazily_once_and_assignable():
    req = make_request("a=1&b=2")
    assert req._query is None                   # nothing parsed until asked
    first = req.query
    assert first == {"a": "1", "b": "2"} and req.query is first
    req.query = {"x": "y"}
    assert req.query == {"x": "y"}
    assert req.query_string == "a=1&b=2"


def test_headers_from_frame_pairs_mixed_types():
    headers = Headers([("Host", "a"), (b"X-B", b"\xe9"), ("x-b", " two "), ("COOKIE", "a=1"),
                       ("cookie", "b=2")])
    assert dict(headers) == {"host": "a", "x-b": "\xe9,two", "cookie": "a=1; b=2"}
    assert Headers(iter([("A", "1")])) == {"a": "1"}


def test_get_post_form_parses_body_like_query():
    req = make_request(body=b"user=j+doe&pw=a%26b%3Dc&x=1=2&flag&bad=%FF")
    assert req.get_post_form() == {"user": "j doe", "pw": "a&b=c", "x": "1=2", "flag": "",
                                   "bad": "\ufffd"}


def test_get_post_form_ignores_content_type_and_handles_empty():
    req = make_request(headers=[("Content-Type", "application/json")], body=b"a=1")
    assert req.get_post_form() == {"a": "1"}
    assert make_request().get_post_form() == {}


def test_get_post_form_raw_utf8_and_invalid_bytes():
    req = make_request(body="ville=Zürich".encode() + b"&b=\xff")
    assert req.get_post_form() == {"ville": "Zürich", "b": "\ufffd"}


# --- cookies --------------------------------------------------------------------------------

def test_cookies_property():
    req = make_request(headers=[("Cookie", "a=1; b = two ;c=x=y; flag; a=dup;;")])
    assert req.cookies == {"a": "1", "b": "two", "c": "x=y", "": "flag"}


def test_cookies_keep_quotes_and_handle_absence():
    assert make_request(headers=[("Cookie", 'q="x y"')]).cookies == {"q": '"x y"'}
    assert make_request().cookies == {}


# --- body, json, str ------------------------------------------------------------------------

def test_str_body_is_encoded():
    assert make_request(body="é").body == "é".encode()


def test_spooled_body_is_read_lazily(tmp_path):
    path = tmp_path / "body"
    path.write_bytes(b"a=1&b=2")
    req = make_request(body=b"", body_file=str(path))
    assert req.body_file == str(path)
    assert req._body is None
    assert "<body spooled to" in str(req)
    assert req._body is None                          # str() does not load it
    assert req.get_post_form() == {"a": "1", "b": "2"}
    assert req.body == b"a=1&b=2"
    path.unlink()
    assert req.body == b"a=1&b=2"                     # cached after the first access


def test_body_file_accepts_pathlike_and_rejects_both(tmp_path):
    path = tmp_path / "body"
    path.write_bytes(b"x")
    assert make_request(body_file=path).body == b"x"
    with pytest.raises(ValueError):
        make_request(body=b"y", body_file=path)


def test_open_body(tmp_path):
    with make_request(body=b"abc").open_body() as f:
        assert f.read() == b"abc"
    path = tmp_path / "body"
    path.write_bytes(b"def")
    req = make_request(body_file=str(path))
    with req.open_body() as f:
        assert f.read() == b"def"
    assert req._body is None


def test_json():
    assert make_request(body=b'{"a": [1, 2, "\xc3\xa9"]}').json() == {"a": [1, 2, "é"]}
    assert make_request(body='"x"'.encode("utf-16")).json() == "x"


@pytest.mark.parametrize("body", [b"", b"{", b"{'a': 1}", b"\xff\xfe\x00", b"nan",
                                  b"\xc3(", b"[" * 100000])
def test_json_invalid_is_bad_request(body):
    with pytest.raises(BadRequest) as info:
        make_request(body=body).json()
    assert info.value.status == 400
    assert isinstance(info.value, HTTPError)


def test_str():
    req = Request("POST", "/a b/c", "x=1&y=a+b", "HTTP/1.1",
                  [("Host", "h"), ("Content-Type", "text/plain")], b"body\xff")
    assert str(req) == ("POST /a%20b/c?x=1&y=a b HTTP/1.1\r\n"
                        "host: h\r\ncontent-type: text/plain\r\n\r\nbody\ufffd")
    assert str(make_request()) == "GET / HTTP/1.1\r\n\r\n"
    odd = Request("GET", b"/caf\xe9".decode("utf-8", "surrogateescape"), "", "HTTP/1.1", [], b"")
    assert str(odd).startswith("GET /caf%E9 HTTP/1.1")


# --- multipart ------------------------------------------------------------------------------

def test_multipart_fields_and_files():
    body = multipart_body([
        ('form-data; name="title"', None, b"Hello"),
        ('form-data; name="file"; filename="a.bin"', "application/octet-stream",
         bytes(range(256))),
        ('form-data; name="empty"', None, b""),
        ('form-data; name="text"', "text/html; charset=utf-8", "é\r\n\r\nx".encode()),
    ])
    form = multipart_request(body).get_multipart_form()
    assert form == [
        MultipartFormData(b"Hello", "title", None, "text/plain"),
        MultipartFormData(bytes(range(256)), "file", "a.bin", "application/octet-stream"),
        MultipartFormData(b"", "empty", None, "text/plain"),
        MultipartFormData("é\r\n\r\nx".encode(), "text", None, "text/html; charset=utf-8"),
    ]
    assert all(isinstance(p, MultipartFormData) for p in form)


def test_multipart_all_byte_values_in_a_file_including_boundary_like_data():
    data = bytes(range(256)) * 64 + b"\r\n--" + BOUNDARY[:-1].encode() + b"\r\n-" + bytes(
        range(255, -1, -1))
    body = multipart_body([('form-data; name="f"; filename="all.bin"', "image/png", data)])
    (part,) = multipart_request(body).get_multipart_form()
    assert part.data == data
    assert part.content_type == "image/png"


def test_multipart_semicolons_in_quoted_names():
    body = multipart_body([
        ('form-data; name="a;b"; filename="x; y;z.txt"', "text/plain", b"1"),
        ('form-data;name="c;d";filename="odd;name.txt"', None, b"2"),   # slow path, no spaces
    ])
    form = multipart_request(body).get_multipart_form()
    assert [(p.name, p.filename, p.data) for p in form] == [
        ("a;b", "x; y;z.txt", b"1"), ("c;d", "odd;name.txt", b"2")]


def test_multipart_extra_content_type_parameters():
    body = multipart_body([('form-data; name="a"', None, b"1")])
    for content_type in (f"multipart/form-data; boundary={BOUNDARY}; charset=utf-8",
                         f"multipart/form-data; charset=utf-8; boundary={BOUNDARY}",
                         f'Multipart/Form-Data;boundary="{BOUNDARY}"'):
        form = multipart_request(body, content_type).get_multipart_form()
        assert form == [MultipartFormData(b"1", "a", None, "text/plain")]


def test_multipart_quoted_boundary_with_special_characters():
    boundary = "a'()+_,-./:=? b"
    body = multipart_body([('form-data; name="a"', None, b"1")], boundary)
    req = multipart_request(body, f'multipart/form-data; boundary="{boundary}"')
    assert req.get_multipart_form() == [MultipartFormData(b"1", "a", None, "text/plain")]


def test_multipart_missing_name_is_none_and_utf8_filename():
    body = multipart_body([
        ('form-data; filename="résumé.pdf"', "application/pdf", b"%PDF"),
        ('form-data; name=""', None, b"x"),
    ])
    form = multipart_request(body).get_multipart_form()
    assert form[0] == MultipartFormData(b"%PDF", None, "résumé.pdf", "application/pdf")
    assert form[1].name == ""


def test_multipart_preamble_and_epilogue_are_ignored():
    body = b"preamble\r\n" + multipart_body([('form-data; name="a"', None, b"1")]) + b"epi"
    assert multipart_request(body).get_multipart_form() == [
        MultipartFormData(b"1", "a", None, "text/plain")]


def test_multipart_empty_form():
    body = b"--" + BOUNDARY.encode() + b"--\r\n"
    assert multipart_request(body).get_multipart_form() == []


@pytest.mark.parametrize("content_type", [
    None,
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; charset=utf-8",
    "multipart/form-data; boundary=",
    'multipart/form-data; boundary=""',
    "multipart/mixed; boundary=abc",
    "text/plain; boundary=abc",
    "multipart/form-data; boundary=" + "x" * 71,
    'multipart/form-data; boundary="bad\x01char"',
])
def test_multipart_without_usable_boundary_is_none(content_type, caplog):
    headers = [] if content_type is None else [("Content-Type", content_type)]
    req = Request("POST", "/", "", "HTTP/1.1", headers, b"--abc--\r\n")
    with caplog.at_level(logging.ERROR, logger="krait"):
        assert req.get_multipart_form() is None
    assert "get_multipart_form" in caplog.text


def test_multipart_none_is_logged_to_stderr_without_logging_config(capsys):
    # With no handler configured, logging's last-resort handler writes errors to stderr.
    logger = logging.getLogger("krait")
    saved = logger.handlers, logger.propagate
    root_handlers = logging.getLogger().handlers
    logging.getLogger().handlers = []
    logger.handlers, logger.propagate = [], True
    try:
        assert make_request(body=b"x").get_multipart_form() is None
    finally:
        logger.handlers, logger.propagate = saved
        logging.getLogger().handlers = root_handlers
    assert "get_multipart_form" in capsys.readouterr().err


@pytest.mark.parametrize("body", [
    b"",                                                          # no boundary at all
    b"just some text",
    b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1",
    b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; name=\"a\"\r\n",
    b"--" + BOUNDARY.encode() + b"\r\nNo-Colon-Here\r\n\r\nx\r\n--" + BOUNDARY.encode() + b"--",
    b"--" + BOUNDARY.encode() + b"\r\nContent-Type: text/plain\r\n\r\nx\r\n--"
    + BOUNDARY.encode() + b"--",                                   # no Content-Disposition
    b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: attachment\r\n\r\nx\r\n--"
    + BOUNDARY.encode() + b"--",
    b"--" + BOUNDARY.encode() + b"\nContent-Disposition: form-data; name=\"a\"\n\nx\n--"
    + BOUNDARY.encode() + b"--",                                   # bare LF line ends
    b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; name=\"\xff\"\r\n\r\n"
    b"x\r\n--" + BOUNDARY.encode() + b"--",                        # header not UTF-8
    b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n"
    b"x\r\n--" + BOUNDARY.encode() + b"XX",                        # junk after a boundary
])
def test_malformed_multipart_is_bad_request(body):
    with pytest.raises(BadRequest) as info:
        multipart_request(body).get_multipart_form()
    assert info.value.status == 400


def test_multipart_limits_give_payload_too_large():
    parts = [('form-data; name="p"', None, b"x")] * 1001
    with pytest.raises(PayloadTooLarge) as info:
        multipart_request(multipart_body(parts)).get_multipart_form()
    assert info.value.status == 413
    long_header = ('form-data; name="' + "n" * 9000 + '"', None, b"x")
    with pytest.raises(PayloadTooLarge):
        multipart_request(multipart_body([long_header])).get_multipart_form()


class _RecordingReader(io.RawIOBase):
    """A file wrapper that records the size of every read."""

    def __init__(self, path):
        self._f = open(path, "rb")
        self.sizes = []

    def readable(self):
        return True

    def read(self, size=-1):
        self.sizes.append(size)
        return self._f.read(size)

    def close(self):
        self._f.close()
        super().close()


def test_spooled_5_mib_upload_is_parsed_as_a_stream(tmp_path, monkeypatch):
    big = os.urandom(5 * 1024 * 1024)
    body = multipart_body([
        ('form-data; name="comment"', None, b"a big one"),
        ('form-data; name="upload"; filename="big;file.bin"', "application/octet-stream", big),
        ('form-data; name="after"', None, b"tail"),
    ])
    path = tmp_path / "spooled-body"
    path.write_bytes(body)
    req = multipart_request(b"", body_file=str(path))

    readers = []

    def open_body():
        readers.append(_RecordingReader(req.body_file))
        return readers[-1]

    monkeypatch.setattr(req, "open_body", open_body)
    form = req.get_multipart_form()
    assert [(p.name, p.filename, p.content_type) for p in form] == [
        ("comment", None, "text/plain"),
        ("upload", "big;file.bin", "application/octet-stream"),
        ("after", None, "text/plain")]
    assert form[0].data == b"a big one"
    assert form[1].data == big
    assert form[2].data == b"tail"
    # Streamed: many bounded reads, and the whole body was never loaded.
    (reader,) = readers
    assert len(reader.sizes) > 10
    assert all(0 < size <= 64 * 1024 for size in reader.sizes)
    assert req._body is None
    assert reader.closed


def test_spooled_upload_without_mocks(tmp_path):
    data = bytes(range(256)) * 4096
    path = tmp_path / "b"
    path.write_bytes(multipart_body([('form-data; name="f"; filename="x"', None, data)]))
    (part,) = multipart_request(b"", body_file=path).get_multipart_form()
    assert part == MultipartFormData(data, "f", "x", "text/plain")


def test_multipart_result_is_the_same_for_every_read_size():
    """Issue 18: the parts must not depend on where the body's reads fall."""
    import io

    from krait.request import _parse_multipart

    part = (b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nvalue\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"g\"; filename=\"x\"\r\n\r\n"
            b"a\r\n-b\r\n--b--\r\n")

    def parse(body, size):
        try:
            return [(p.name, p.data) for p in _parse_multipart(io.BytesIO(body), "b", size)]
        except Exception as e:  # noqa: BLE001 - the outcome is what is compared
            return type(e).__name__

    for body, expected in [
            (part, [("f", b"value"), ("g", b"a\r\n-b")]),
            (b"preamble\r\n" + part, [("f", b"value"), ("g", b"a\r\n-b")]),
            (b"\r\n" + part, [("f", b"value"), ("g", b"a\r\n-b")]),
            (b"x" + part, "ParserError"),
            (b"xxxx" + part, "ParserError"),
            (b"pre-b--b\r\n" + part, "ParserError"),
            (part[:-10], "ParserError")]:
        for size in range(1, len(body) + 2):
            assert parse(body, size) == expected, (body, size)


# --- multipart parts: files past a few dozen KiB in temporary files, fields bounded ----------

def test_part_behaves_as_the_four_field_tuple():
    part = MultipartFormData(b"x", "n", "f.txt", "text/plain")
    data, name, filename, content_type = part
    assert (data, name, filename, content_type) == (b"x", "n", "f.txt", "text/plain")
    assert part[0] == b"x" and part[-1] == "text/plain" and len(part) == 4
    assert part == (b"x", "n", "f.txt", "text/plain")
    assert part != (b"y", "n", "f.txt", "text/plain")
    assert part._asdict() == {"data": b"x", "name": "n", "filename": "f.txt",
                              "content_type": "text/plain"}
    assert part.size == 1 and part.file.read() == b"x"
    with pytest.raises(TypeError):
        MultipartFormData(None, "n", None, "text/plain")


def test_large_file_part_goes_to_a_temporary_file_small_ones_stay_in_memory(tmp_path):
    big = os.urandom(300 * 1024)
    small = b"s" * 1000
    body = multipart_body([('form-data; name="big"; filename="b.bin"', None, big),
                           ('form-data; name="small"; filename="s.txt"', None, small),
                           ('form-data; name="field"', None, b"v")])
    req = multipart_request(body)
    big_part, small_part, field = req.get_multipart_form()
    assert big_part._data is None and not isinstance(big_part.file, io.BytesIO)
    assert big_part.size == len(big) and big_part.data == big
    assert big_part == MultipartFormData(big, "big", "b.bin", "text/plain")
    assert small_part._data == small and field._data == b"v"
    # Reading data leaves the file where it was; save() copies all of it whatever the position.
    big_part.file.seek(10)
    assert big_part.data == big and big_part.file.tell() == 10
    saved = big_part.save(tmp_path)
    assert saved == str(tmp_path / "b.bin") and (tmp_path / "b.bin").read_bytes() == big
    # Parsed once: the same parts again; answered, their files are closed.
    assert req.get_multipart_form()[0] is big_part
    req._close()
    assert big_part.file.closed and small_part.file.closed


def test_file_parts_in_memory_are_bounded_together():
    # 40 parts of 60 KiB: each fits the per-part share, but only about 1 MiB of them in all.
    body = multipart_body([(f'form-data; name="f{i}"; filename="f"', None, b"z" * 60 * 1024)
                           for i in range(40)])
    parts = multipart_request(body).get_multipart_form()
    in_memory = sum(p.size for p in parts if p._data is not None)
    assert 0 < in_memory <= 1024 * 1024
    assert all(p.data == b"z" * 60 * 1024 for p in parts)


def test_plain_fields_are_bounded_by_max_form_memory_size(monkeypatch):
    from krait import config

    monkeypatch.setattr(config, "max_form_memory_size", 100)
    fits = multipart_body([('form-data; name="a"', None, b"x" * 60),
                           ('form-data; name="b"', None, b"y" * 40),
                           ('form-data; name="f"; filename="f"', None, b"z" * 5000)])
    assert [p.size for p in multipart_request(fits).get_multipart_form()] == [60, 40, 5000]
    too_much = multipart_body([('form-data; name="a"', None, b"x" * 60),
                               ('form-data; name="b"', None, b"y" * 41)])
    with pytest.raises(PayloadTooLarge) as info:
        multipart_request(too_much).get_multipart_form()
    assert "max_form_memory_size" in info.value.message
