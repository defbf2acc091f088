"""Tests for krait.response and krait.errors."""

from __future__ import annotations

import json
import pickle

import pytest

import krait
from krait.errors import (
    BadRequest,
    ConfigError,
    Forbidden,
    HTTPError,
    InternalServerError,
    KraitError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from krait.response import (
    REASONS,
    ErrorResponse,
    FileResponse,
    JsonResponse,
    Response,
    ResponseBadRequest,
    ResponseNotFound,
    ResponseRedirect,
    validate_header,
)


def is_page(body: str, title: str, text: str) -> bool:
    """The default error page (issue 15): a whole HTML document whose title and heading say
    the status, then one paragraph."""
    return (body.startswith("<!doctype html><html lang=\"en\">") and body.endswith("</html>")
            and f"<title>{title}</title>" in body
            and f"<body><main><h1>{title}</h1><p>{text}</p></main></body>" in body)


NOT_FOUND = ("404 Not Found", "There is no page at this address.")
BAD_REQUEST = ("400 Bad Request", "The request could not be understood.")


# --- Response -------------------------------------------------------------------------------

def test_defaults():
    r = Response()
    assert (r.http_version, r.status_code, r.headers, r.body) == ("HTTP/1.1", 200, [], b"")
    assert r.reason == "OK"
    assert not r.is_stream
    assert r.file_path is None


def test_positional_signature():
    r = Response("HTTP/1.1", 201, [("X-A", "1")], "created")
    assert (r.http_version, r.status_code, r.headers, r.body) == (
        "HTTP/1.1", 201, [("X-A", "1")], "created")
    assert Response("HTTP/1.0").http_version == "HTTP/1.0"


@pytest.mark.parametrize("version", ["HTTP/2", "HTTP/1.2", "http/1.1", "", None])
def test_bad_http_version(version):
    with pytest.raises(ValueError):
        Response(version)


@pytest.mark.parametrize("status", [99, 600, 0, -1, "200", 200.0, True, None])
def test_bad_status(status):
    with pytest.raises(ValueError):
        Response("HTTP/1.1", status)


def test_headers_are_copied_and_accept_mappings():
    headers = [("X-A", "1")]
    r = Response("HTTP/1.1", 200, headers)
    r.headers.append(("X-B", "2"))
    assert headers == [("X-A", "1")]
    assert Response(headers={"X-A": "1", "X-B": "2"}).headers == [("X-A", "1"), ("X-B", "2")]


@pytest.mark.parametrize("name, value, error", [
    ("X-A", "a\r\nSet-Cookie: evil=1", ValueError),
    ("X-A", "a\nb", ValueError),
    ("X-A", "a\0b", ValueError),
    ("Bad Name", "v", ValueError),
    ("Bad:Name", "v", ValueError),
    ("", "v", ValueError),
    ("X-A", 5, TypeError),
    (b"X-A", "v", TypeError),
])
def test_header_injection_is_refused(name, value, error):
    with pytest.raises(error):
        Response(headers=[(name, value)])
    with pytest.raises(error):
        validate_header(name, value)


def test_validate_header_accepts_normal_headers():
    validate_header("Content-Type", "text/html; charset=utf-8")
    validate_header("X-Empty", "")
    validate_header("X-Latin", "café")


def test_body_kinds():
    assert Response(body="é").body_bytes() == "é".encode()
    assert Response(body=b"\x00\xff").body_bytes() == b"\x00\xff"
    assert Response(body=bytearray(b"ab")).body_bytes() == b"ab"
    assert Response(body=None).body_bytes() == b""
    assert list(Response(body="").iter_body()) == []
    assert list(Response(body="x").iter_body()) == [b"x"]
    with pytest.raises(TypeError):
        Response(body=5)
    with pytest.raises(TypeError):
        Response(body={"a": 1})


def test_stream_body():
    def gen():
        yield "é"
        yield b""
        yield b"\x01"
    r = Response(body=gen())
    assert r.is_stream
    with pytest.raises(TypeError):
        r.body_bytes()
    assert str(r).endswith("\r\n\r\n<stream>")         # str() does not consume the stream
    assert list(r.iter_body()) == ["é".encode(), b"\x01"]
    assert list(Response(body=["a", b"b"]).iter_body()) == [b"a", b"b"]
    with pytest.raises(TypeError):
        list(Response(body=[1]).iter_body())


def test_str_rendering():
    r = Response("HTTP/1.1", 200, [("Content-Type", "text/plain"), ("X-A", "1")], "hello")
    assert str(r) == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\nhello"
    assert str(Response("HTTP/1.0", 302)) == "HTTP/1.0 302 Found\r\n\r\n"
    assert str(Response(status_code=299)) == "HTTP/1.1 299 Unknown\r\n\r\n"
    assert str(Response(body=b"\xff")) == "HTTP/1.1 200 OK\r\n\r\n\ufffd"
    assert repr(Response(status_code=404)) == "<Response 404 Not Found>"


def test_reasons_table():
    expected = {100: "Continue", 101: "Switching Protocols", 200: "OK", 204: "No Content",
                206: "Partial Content", 301: "Moved Permanently", 302: "Found",
                303: "See Other", 304: "Not Modified", 307: "Temporary Redirect",
                308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized",
                403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
                416: "Range Not Satisfiable", 422: "Unprocessable Content",
                431: "Request Header Fields Too Large", 500: "Internal Server Error",
                502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
                505: "HTTP Version Not Supported"}
    for code, reason in expected.items():
        assert REASONS[code] == reason
    assert all(100 <= code <= 599 for code in REASONS)


# --- subclasses -----------------------------------------------------------------------------

def test_not_found():
    r = ResponseNotFound()
    assert r.status_code == 404
    assert is_page(r.body, *NOT_FOUND)
    assert r.headers == [("Content-Type", "text/html; charset=utf-8")]
    assert isinstance(r, Response)


def test_bad_request_says_400():
    r = ResponseBadRequest([("X-A", "1")])
    assert r.status_code == 400
    assert is_page(r.body, *BAD_REQUEST)
    assert r.headers == [("X-A", "1"), ("Content-Type", "text/html; charset=utf-8")]


def test_error_page_keeps_a_given_content_type():
    r = ResponseNotFound([("content-type", "text/plain")])
    assert r.headers == [("content-type", "text/plain")]


def test_error_response():
    r = ErrorResponse(503)
    assert r.status_code == 503
    assert is_page(r.body, "503 Service Unavailable", "The server is busy: try again in a moment.")
    r = ErrorResponse(418, "No <coffee> & no tea")
    assert is_page(r.body, "418 Unknown", "No &lt;coffee&gt; &amp; no tea")
    assert r.message == "No <coffee> & no tea"
    assert is_page(ErrorResponse(404).body, *NOT_FOUND)
    for status in (101, 204, 304):
        r = ErrorResponse(status)
        assert r.body == b"" and r.headers == []
    with pytest.raises(ValueError):
        ErrorResponse(700)


def test_redirect_does_not_mutate_the_callers_list():
    headers = [("X-A", "1")]
    r = ResponseRedirect("/login?next=/a", headers)
    assert r.status_code == 302
    assert r.body == b""
    assert r.headers == [("X-A", "1"), ("Location", "/login?next=/a")]
    assert headers == [("X-A", "1")]
    assert ResponseRedirect("https://example.com/").headers == [
        ("Location", "https://example.com/")]
    assert str(ResponseRedirect("/x")) == "HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n"
    with pytest.raises(ValueError):
        ResponseRedirect("/x\r\nSet-Cookie: a=b")


def test_json_response():
    r = JsonResponse({"a": [1, "é"], "b": None})
    assert r.status_code == 200
    assert r.headers == [("Content-Type", "application/json")]
    assert isinstance(r.body, bytes)
    assert json.loads(r.body.decode("utf-8")) == {"a": [1, "é"], "b": None}
    assert "é".encode() in r.body
    r = JsonResponse([1], 201, [("Content-Type", "application/problem+json")])
    assert r.status_code == 201
    assert r.headers == [("Content-Type", "application/problem+json")]
    with pytest.raises(TypeError):
        JsonResponse({"s": {1, 2}})


def test_file_response(tmp_path, monkeypatch):
    monkeypatch.setattr(krait, "site_root", str(tmp_path))
    r = FileResponse("static/report.pdf")
    assert r.file_path == str(tmp_path / "static" / "report.pdf")
    assert r.status_code == 200
    assert r.body == b""
    assert r.headers == [("Content-Type", "application/pdf")]
    assert str(r).endswith(f"<file {r.file_path}>")
    assert FileResponse("/var/data/x.json").file_path == "/var/data/x.json"
    assert FileResponse("/var/data/x.json").headers == [("Content-Type", "application/json")]
    assert FileResponse("/d/README").headers == [("Content-Type", "application/octet-stream")]
    # Only the last extension counts: a .tar.gz is not sent as a tarball (whose bytes it isn't).
    assert FileResponse("/d/x.tar.gz").headers[0][1] in ("application/gzip",
                                                        "application/octet-stream")
    assert FileResponse(tmp_path / "a.txt", "text/plain; charset=utf-8").headers == [
        ("Content-Type", "text/plain; charset=utf-8")]
    assert FileResponse("/a.txt", headers=[("Content-Type", "x/y")]).headers == [
        ("Content-Type", "x/y")]
    with pytest.raises(ValueError):
        FileResponse("../outside.txt")
    with pytest.raises(ValueError):
        FileResponse("/a\0b")
    with pytest.raises(ValueError):
        FileResponse("/a.txt", "text/plain\r\nX: y")


def test_krait_exports():
    assert krait.Response is Response
    assert krait.ResponseNotFound is ResponseNotFound
    assert krait.ResponseBadRequest is ResponseBadRequest
    assert krait.ResponseRedirect is ResponseRedirect
    assert krait.JsonResponse is JsonResponse


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, status, builtin", [
    (BadRequest, 400, ValueError),
    (Unauthorized, 401, None),
    (Forbidden, 403, None),
    (NotFound, 404, LookupError),
    (PayloadTooLarge, 413, None),
    (UnsupportedMediaType, 415, None),
    (InternalServerError, 500, None),
])
def test_http_error_subclasses(cls, status, builtin):
    e = cls()
    assert e.status == status
    assert isinstance(e, HTTPError) and isinstance(e, KraitError)
    if builtin is not None:
        assert isinstance(e, builtin)
    assert str(e) == f"{status} {REASONS[status]}"
    assert str(cls("why")) == f"{status} {REASONS[status]}: why"
    response = cls("why", headers=[("X-A", "1")]).to_response()
    assert isinstance(response, ErrorResponse)
    assert response.status_code == status
    assert "<p>why</p>" in response.body
    assert ("X-A", "1") in response.headers


def test_http_error_generic():
    e = HTTPError(429, "slow down", headers=[("Retry-After", "5")])
    assert (e.status, e.message, e.headers) == (429, "slow down", [("Retry-After", "5")])
    assert e.reason == "Too Many Requests"
    assert HTTPError().status == 500
    with pytest.raises(ValueError):
        HTTPError(1000)
    r = HTTPError(404).to_response()
    assert is_page(r.body, *NOT_FOUND)


def test_method_not_allowed_has_allow_header():
    e = MethodNotAllowed(["GET", "HEAD"])
    assert e.status == 405
    assert e.headers == [("Allow", "GET, HEAD")]
    assert ("Allow", "GET, HEAD") in e.to_response().headers


def test_errors_pickle():
    for e in (BadRequest("x"), HTTPError(418, "tea"), MethodNotAllowed(["GET"], "no"),
              ConfigError("bad", "init.py", 3)):
        copy = pickle.loads(pickle.dumps(e))
        assert type(copy) is type(e) and str(copy) == str(e)


def test_config_error():
    e = ConfigError("bad route", "init.py", 12)
    assert isinstance(e, KraitError) and isinstance(e, ValueError)
    assert (e.message, e.filename, e.lineno) == ("bad route", "init.py", 12)
    assert str(e) == "init.py:12: bad route"
    assert str(ConfigError("bad", "init.py")) == "init.py: bad"
    assert str(ConfigError("bad")) == "bad"
