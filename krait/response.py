"""Responses a site can send instead of the generated one.

Set ``krait.response`` to one of these (or return one from a ``.py`` script) and whatever the
script or its view rendered is discarded. The server adds ``krait.extra_headers`` and its standard
headers (``Date``, ``Content-Length``, ``Content-Type`` when absent, ...).

A body is one of three things:

* ``str`` (sent UTF-8 encoded) or ``bytes``: sent with a ``Content-Length``;
* any other iterable of ``str``/``bytes`` (a list, a generator): a stream, sent chunked;
* a file on disk (:class:`FileResponse`): the core sends it with ``sendfile``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from krait._errorpages import page_html

__all__ = [
    "REASONS", "ErrorResponse", "FileResponse", "JsonResponse", "Response", "ResponseBadRequest",
    "ResponseNotFound", "ResponseRedirect", "iri_to_uri", "validate_header",
]

#: Standard reason phrases: RFC 9110 §15, plus 103 (RFC 8297), 428/429/431/511 (RFC 6585) and
#: 451 (RFC 7725).
REASONS: dict[int, str] = {
    100: "Continue",
    101: "Switching Protocols",
    103: "Early Hints",
    200: "OK",
    201: "Created",
    202: "Accepted",
    203: "Non-Authoritative Information",
    204: "No Content",
    205: "Reset Content",
    206: "Partial Content",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    421: "Misdirected Request",
    422: "Unprocessable Content",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    511: "Network Authentication Required",
}

_HTTP_VERSIONS = ("HTTP/1.1", "HTTP/1.0")
# RFC 9110 §5.6.2: token = 1*tchar.
# Control characters but HTAB (RFC 9110 §5.5); DEL included.
_BAD_VALUE_CHAR = re.compile("[\x00-\x08\x0a-\x1f\x7f]").search
_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

#: What a response body may be: text, bytes, or an iterable of either (a stream).
Body = str | bytes | bytearray | memoryview | Iterable[str | bytes]
#: Response headers: a list of ``(name, value)`` pairs, or a mapping of names to values.
HeadersArg = Iterable[tuple[str, str]] | Mapping[str, str] | None


def validate_header(name: str, value: str) -> None:
    """Check that a response header can be sent as is.

    The name must be an RFC 9110 token; the value may not contain a control character other
    than HTAB (RFC 9110 §5.5): CR, LF or NUL would let a value smuggle in extra headers or end
    the header block early, and the others are refused by clients and proxies.

    :param name: the header name, e.g. ``"Content-Type"``.
    :param value: the header value.
    :raises TypeError: when name or value is not a ``str``.
    :raises ValueError: when either would break the header block.
    """
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(f"header name and value must be str, got {name!r}: {value!r}")
    if not name or not _TCHARS.issuperset(name):
        raise ValueError(f"invalid header name: {name!r}")
    if not value.isprintable() and _BAD_VALUE_CHAR(value):
        raise ValueError(f"invalid character in the value of header {name!r}: {value!r}")


def _header_list(headers: HeadersArg) -> list[tuple[str, str]]:
    """Copy headers into a new, validated list of pairs (the caller's object is never kept)."""
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    result = []
    for pair in items:
        name, value = pair
        validate_header(name, value)
        result.append((name, value))
    return result


def _has_header(headers: list[tuple[str, str]], name: str) -> bool:
    name = name.lower()
    return any(n.lower() == name for n, _ in headers)


class Response:
    """A complete HTTP response that replaces the generated one.

    The attributes ``http_version``, ``status_code``, ``headers`` and ``body`` may be changed
    after construction; the worker checks the headers again before sending them.

    :param http_version: ``"HTTP/1.1"`` or ``"HTTP/1.0"``.
    :param status_code: the status, 100-599 (see :data:`REASONS`).
    :param headers: ``(name, value)`` pairs (or a mapping); the list is copied, never modified.
    :param body: ``str`` (sent UTF-8 encoded), ``bytes``, or an iterable of ``str``/``bytes``
        chunks, which is streamed (sent chunked). ``None`` means empty.
    :raises ValueError: for an unknown HTTP version, a status outside 100-599, or a header that
        cannot be sent (see :func:`validate_header`).
    :raises TypeError: for a body of any other type.
    """

    #: The file the core sends as the body (only set by :class:`FileResponse`).
    file_path: str | None = None

    def __init__(self, http_version: str = "HTTP/1.1", status_code: int = 200,
                 headers: HeadersArg = None, body: Body | None = b"") -> None:
        if http_version not in _HTTP_VERSIONS:
            raise ValueError(f"http_version must be 'HTTP/1.1' or 'HTTP/1.0', not {http_version!r}")
        if (type(status_code) is not int and (isinstance(status_code, bool) or
                                              not isinstance(status_code, int))) \
                or not 100 <= status_code <= 599:
            raise ValueError(f"status_code must be an int in 100-599, not {status_code!r}")
        if body is None:
            body = b""
        # (bytes and str, the usual bodies, skip the slower abstract-class checks)
        if type(body) is not bytes and type(body) is not str and (isinstance(body, Mapping) or
                not isinstance(body, (str, bytes, bytearray, memoryview, Iterable))):
            # A dict would otherwise "stream" its keys; JsonResponse is what was meant.
            raise TypeError(f"a response body must be str, bytes or an iterable of them, not "
                            f"{type(body).__name__} (use JsonResponse for JSON)")
        self.http_version: str = http_version
        self.status_code: int = status_code
        self.headers: list[tuple[str, str]] = _header_list(headers)
        self.body: Any = body

    @property
    def reason(self) -> str:
        """The reason phrase sent with :attr:`status_code` (``"Unknown"`` when not standard)."""
        return REASONS.get(self.status_code, "Unknown")

    @property
    def is_stream(self) -> bool:
        """True when :attr:`body` is an iterable of chunks, sent with chunked encoding."""
        return not isinstance(self.body, (str, bytes, bytearray, memoryview))

    def body_bytes(self) -> bytes:
        """The body as bytes (``str`` is UTF-8 encoded).

        :raises TypeError: when the body is a stream; use :meth:`iter_body`.
        """
        body = self.body
        if isinstance(body, str):
            return body.encode("utf-8")
        if isinstance(body, (bytes, bytearray, memoryview)):
            return bytes(body)
        raise TypeError("the body is a stream; use iter_body()")

    def iter_body(self) -> Iterator[bytes]:
        """Yield the body as non-empty ``bytes`` chunks (for any kind of body but a file).

        :raises TypeError: when a stream yields something other than ``str`` or ``bytes``.
        """
        if not self.is_stream:
            data = self.body_bytes()
            if data:
                yield data
            return
        for chunk in self.body:
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8")
            elif isinstance(chunk, (bytes, bytearray, memoryview)):
                chunk = bytes(chunk)
            else:
                raise TypeError(f"a streamed body yielded {type(chunk)}, not str or bytes")
            if chunk:
                yield chunk

    def _body_text(self) -> str:
        if self.file_path is not None:
            return f"<file {self.file_path}>"
        if self.is_stream:
            return "<stream>"
        if isinstance(self.body, str):
            return self.body
        return self.body_bytes().decode("utf-8", "replace")

    def __str__(self) -> str:
        """The response as HTTP text: status line, headers, blank line, body.

        The body of a stream or a file is shown as a placeholder, never consumed.
        """
        lines = [f"{self.http_version} {self.status_code} {self.reason}"]
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        return "\r\n".join(lines) + "\r\n\r\n" + self._body_text()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status_code} {self.reason}>"


class ErrorResponse(Response):
    """A small HTML error page for any status.

    The page's ``<title>`` and ``<h1>`` say the status and its reason (``404 Not Found``); under
    them comes ``message``, HTML-escaped, or a sentence for the status. A ``Content-Type`` of
    ``text/html; charset=utf-8`` is added unless ``headers`` has one. Statuses that may not carry
    a body (1xx, 204, 304) get an empty one.

    Sent from a worker, the page is replaced by the site's own page for the status when
    ``krait.config.error_pages`` names one, and by a JSON body for a client that asks for JSON
    (``Accept: application/json``), unless ``body`` was changed.

    :param status_code: the status, 100-599.
    :param message: an optional explanation shown to the visitor (plain text).
    :param headers: extra ``(name, value)`` pairs (or a mapping); copied, never modified.
    """

    def __init__(self, status_code: int, message: str | None = None,
                 headers: HeadersArg = None) -> None:
        super().__init__("HTTP/1.1", status_code, headers, b"")
        self.message: str | None = message
        self._default_body: Any = None
        if status_code < 200 or status_code in (204, 304):
            return
        self.body = self._default_body = page_html(status_code, self.reason, message)
        if not _has_header(self.headers, "content-type"):
            self.headers.append(("Content-Type", "text/html; charset=utf-8"))


class ResponseNotFound(ErrorResponse):
    """404 Not Found with the original's HTML page.

    :param headers: extra ``(name, value)`` pairs (or a mapping); copied, never modified.
    """

    def __init__(self, headers: HeadersArg = None) -> None:
        super().__init__(404, headers=headers)


class ResponseBadRequest(ErrorResponse):
    """400 Bad Request with a small HTML page (its heading says "400 Bad Request").

    :param headers: extra ``(name, value)`` pairs (or a mapping); copied, never modified.
    """

    def __init__(self, headers: HeadersArg = None) -> None:
        super().__init__(400, headers=headers)


class ResponseRedirect(Response):
    """A redirect to ``destination`` (302 Found by default), with an empty body.

    :param destination: the URL for the ``Location`` header (absolute or relative). An IRI is
        made a URI (RFC 3987 §3.1): characters outside ASCII (and spaces) are percent-encoded as
        UTF-8, a non-ASCII host name is IDNA-encoded; ``%XX`` escapes and reserved characters
        are kept as they are.
    :param headers: extra ``(name, value)`` pairs (or a mapping). The ``Location`` header is added
        to a copy; the caller's list is not modified (the original appended to it).
    :param status_code: 301 (moved permanently), 302 (found, the default), 303 (see other: the
        answer to a form's POST, which the browser follows with a GET), 307 or 308 (temporary or
        permanent, the method and body are kept).
    :raises ValueError: when ``destination`` contains CR, LF or NUL, or ``status_code`` is not a
        redirect status.
    """

    #: The statuses a redirect may have.
    REDIRECT_STATUSES = (301, 302, 303, 307, 308)

    def __init__(self, destination: str, headers: HeadersArg = None,
                 status_code: int = 302) -> None:
        if status_code not in self.REDIRECT_STATUSES:
            raise ValueError(f"a redirect's status is 301, 302, 303, 307 or 308, not "
                             f"{status_code!r}")
        super().__init__("HTTP/1.1", status_code, headers, b"")
        validate_header("Location", destination)
        self.headers.append(("Location", iri_to_uri(destination)))


def iri_to_uri(iri: str) -> str:
    """``iri`` as a URI for a ``Location`` header (RFC 3987 §3.1): non-ASCII characters,
    spaces and other characters a URI may not hold are percent-encoded as UTF-8; a non-ASCII
    host name is IDNA-encoded. ``%XX`` escapes and reserved characters stay as they are, so a
    URI is returned unchanged.

    :param iri: an absolute or relative IRI, e.g. ``"/café?q=crème brûlée"``.
    """
    from urllib.parse import quote, urlsplit, urlunsplit

    safe = "!#$%&'()*+,/:;=?@[]~"
    try:
        parts = urlsplit(iri)
    except ValueError:
        return quote(iri, safe=safe)
    netloc = parts.netloc
    host = parts.hostname or ""
    if host and not host.isascii():
        try:
            netloc = netloc.replace(host, host.encode("idna").decode("ascii"))
        except UnicodeError:
            pass
    return urlunsplit((parts.scheme, quote(netloc, safe=safe), quote(parts.path, safe=safe),
                       quote(parts.query, safe=safe), quote(parts.fragment, safe=safe)))


class JsonResponse(Response):
    """A JSON document (``Content-Type: application/json``, UTF-8).

    :param data: anything :func:`json.dumps` accepts.
    :param status_code: the status, 100-599.
    :param headers: extra ``(name, value)`` pairs (or a mapping); a ``Content-Type`` given here
        wins over ``application/json``.
    :raises TypeError: when ``data`` is not JSON-serialisable.
    """

    def __init__(self, data: Any, status_code: int = 200, headers: HeadersArg = None) -> None:
        body = json.dumps(data, ensure_ascii=False).encode("utf-8")
        super().__init__("HTTP/1.1", status_code, headers, body)
        if not _has_header(self.headers, "content-type"):
            self.headers.append(("Content-Type", "application/json"))


class FileResponse(Response):
    """A file on disk, sent by the core with ``sendfile`` (it never passes through Python).

    The file is opened when the response is sent, not now; it must still exist then.

    :param path: the file. A relative path is taken relative to the site root (and may not leave
        it, see :func:`krait.get_full_path`); an absolute path is used as is, since it comes from
        site code, not from the visitor.
    :param content_type: the ``Content-Type``; ``None`` guesses it from the file's extension
        (unknown: ``application/octet-stream``). Ignored when ``headers`` already has one.
    :param headers: extra ``(name, value)`` pairs (or a mapping); copied, never modified.
    :raises ValueError: when a relative ``path`` leaves the site root, or ``content_type``
        contains CR, LF or NUL.
    """

    def __init__(self, path: str | os.PathLike[str], content_type: str | None = None,
                 headers: HeadersArg = None) -> None:
        super().__init__("HTTP/1.1", 200, headers, b"")
        path = os.fspath(path)
        if not isinstance(path, str):
            raise TypeError("path must be a str or an os.PathLike of str")
        if "\0" in path:
            raise ValueError("path contains a NUL byte")
        from krait._globals import _mime_for_extension, get_full_path

        if not os.path.isabs(path):
            path = get_full_path(path)
        self.file_path = path
        if not _has_header(self.headers, "content-type"):
            if content_type is None:
                content_type = _mime_for_extension(os.path.splitext(path)[1])
            validate_header("Content-Type", content_type)
            self.headers.append(("Content-Type", content_type))
