"""The request a dynamic page is answering: ``krait.request``.

The worker builds a :class:`Request` from the request frame the core sends and stores it in
``krait.request`` before running the page. Nothing here touches the network.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, BinaryIO
from urllib.parse import quote, unquote_plus

import multipart

from krait.errors import BadRequest, PayloadTooLarge

__all__ = ["Headers", "MultipartFormData", "Request", "safe_filename"]

_log = logging.getLogger("krait")

# Multipart parsing reads the body in chunks of this size, so a spooled upload is never loaded
# whole. Plain fields are kept in memory (config.max_form_memory_size bytes at most, all
# together); a file part stays in memory up to _FILE_PART_MEMORY bytes while the form's
# in-memory file parts total at most _FILE_PARTS_MEMORY, else it goes to a temporary file.
_MULTIPART_CHUNK = 64 * 1024
_FILE_PART_MEMORY = 64 * 1024
_FILE_PARTS_MEMORY = 1024 * 1024
_MULTIPART_MAX_PARTS = 1000
_MULTIPART_MAX_PART_HEADERS = 16
_MULTIPART_MAX_HEADER_LINE = 8 * 1024

#: Header values as the constructor accepts them: ``(name, value)`` pairs or a mapping.
HeadersArg = Iterable[tuple[str | bytes, str | bytes]] | Mapping[str, str] | None


def _text(value: str | bytes) -> str:
    # RFC 9110 §5.5: field values are octets; ISO-8859-1 maps each one to a character losslessly.
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else value


class Headers(dict):
    """Request headers: a ``dict`` whose keys are lower-cased header names.

    Lookups are case-insensitive (``headers["Content-Type"]`` and ``headers["content-type"]``
    are the same entry). Built from a list of pairs, repeated headers are joined with ``","``
    (RFC 9110 §5.3), except ``Cookie``, whose repeats are joined with ``"; "`` (RFC 6265 §5.4).

    :param headers: ``(name, value)`` pairs (``str`` or ``bytes``; bytes are decoded as
        ISO-8859-1) or a mapping. Surrounding whitespace is stripped from values.
    """

    def __init__(self, headers: HeadersArg = None) -> None:
        super().__init__()
        if headers is None:
            return
        # Built for every dynamic request: plain dict operations, no per-item method lookups.
        items = headers if type(headers) is list else \
            headers.items() if isinstance(headers, Mapping) else headers
        get = dict.get
        put = dict.__setitem__
        for name, value in items:
            if type(name) is not str:
                name = _text(name)
            if type(value) is not str:
                value = _text(value)
            key = name.lower()
            value = value.strip()
            previous = get(self, key)
            if previous is not None:
                value = previous + ("; " if key == "cookie" else ",") + value
            put(self, key, value)

    @staticmethod
    def _key(key: Any) -> Any:
        return key.lower() if isinstance(key, str) else key

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(self._key(key))

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(self._key(key), value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(self._key(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._key(key))

    def get(self, key: str, default: Any = None) -> Any:
        """The value of header ``key`` (any case), or ``default``.

        :param key: the header name.
        :param default: returned when the header is absent.
        """
        return super().get(self._key(key), default)

    def pop(self, key: str, *default: Any) -> Any:
        """Remove header ``key`` (any case) and return its value (or ``default``).

        :param key: the header name.
        :param default: returned when the header is absent (else ``KeyError``).
        """
        return super().pop(self._key(key), *default)

    def setdefault(self, key: str, default: str = "") -> str:
        """Return header ``key`` (any case), setting it to ``default`` when absent.

        :param key: the header name.
        :param default: the value to store when the header is absent.
        """
        return super().setdefault(self._key(key), default)

    def update(self, *args: Any, **kwargs: str) -> None:
        """Set several headers (replacing, not joining, existing values).

        :param args: a mapping or ``(name, value)`` pairs.
        :param kwargs: more headers by name.
        """
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def copy(self) -> Headers:
        """A shallow copy that is still a :class:`Headers`."""
        return Headers(self)


class MultipartFormData:
    """One part of a ``multipart/form-data`` body (see :meth:`Request.get_multipart_form`).

    It behaves as the four-field named tuple ``(data, name, filename, content_type)`` of
    Krait's API: it unpacks, indexes and compares like one. A file part (one sent with a
    file name) is kept in a temporary file once it is larger than a few dozen KiB, so an
    upload of any size costs the worker little memory: read it through :attr:`file` or
    :meth:`save` it; :attr:`data` reads all of it into memory.

    :param data: the part's content, for a part held in memory; ``None`` with ``file``.
    :param name: the form field's name, or ``None``.
    :param filename: the file name the client sent, or ``None`` for a plain field.
    :param content_type: the part's ``Content-Type``.
    :param file: instead of ``data``: a readable, seekable binary file holding the content
        (the part takes it over: :meth:`close` closes it).
    """

    __slots__ = ("_data", "content_type", "file", "filename", "name", "size")
    #: The field names, in the order the part unpacks in (as a named tuple's).
    _fields = ("data", "name", "filename", "content_type")

    def __init__(self, data: bytes | None, name: str | None, filename: str | None,
                 content_type: str, *, file: BinaryIO | None = None) -> None:
        if (data is None) == (file is None):
            raise TypeError("MultipartFormData takes data or file=, one of them")
        #: The form field name, or ``None`` when the part has none.
        self.name = name
        #: The uploaded file's name exactly as the client sent it, or ``None`` for a plain
        #: field. It is the visitor's text, not a safe name: it may be ``../../etc/passwd``, an
        #: absolute path, ``.htaccess``, ``shell.py`` or hold control characters. Never join it
        #: to a directory; use :attr:`safe_filename`, or better a name of your own.
        self.filename = filename
        #: The part's ``Content-Type`` header as sent (``"text/plain"`` when absent).
        self.content_type = content_type
        self._data = data
        if file is None:
            file = io.BytesIO(data)  # shares data's buffer: no copy
            size = len(data)  # type: ignore[arg-type]
        else:
            size = file.seek(0, io.SEEK_END)
            file.seek(0)
        #: The content as a binary file object, at its start when the part is made (it is the
        #: same object every time: ``seek(0)`` to read it again).
        self.file: BinaryIO = file
        #: The content's length in bytes.
        self.size: int = size

    @property
    def data(self) -> bytes:
        """The part's content (the bytes between its headers and the next boundary), read
        into memory in full; for a large upload prefer :attr:`file` or :meth:`save`."""
        if self._data is not None:
            return self._data
        pos = self.file.tell()
        try:
            self.file.seek(0)
            return self.file.read()
        finally:
            self.file.seek(pos)

    @property
    def safe_filename(self) -> str | None:
        """:attr:`filename` made safe to use as a file name on this server (see
        :func:`safe_filename`), or ``None`` for a plain field."""
        return None if self.filename is None else safe_filename(self.filename)

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the part's content to a file (created or replaced), copied in chunks.

        :param path: the file to write; an existing directory means "in that directory, under
            :attr:`safe_filename`" (``"upload"`` for a part without a file name).
        :return: the path written.
        """
        target = os.fspath(path)
        if os.path.isdir(target):
            target = os.path.join(target, self.safe_filename or "upload")
        pos = self.file.tell()
        try:
            self.file.seek(0)
            with open(target, "wb") as f:
                shutil.copyfileobj(self.file, f, _MULTIPART_CHUNK)
        finally:
            self.file.seek(pos)
        return target

    def close(self) -> None:
        """Release the part's temporary file (the server does it when the request is
        answered); :attr:`data` and :attr:`file` are unusable afterwards."""
        self.file.close()

    def _asdict(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))

    def __iter__(self) -> Iterator[Any]:
        return iter((self.data, self.name, self.filename, self.content_type))

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: Any) -> Any:
        return tuple(self)[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MultipartFormData):
            if (self.name, self.filename, self.content_type, self.size) != \
                    (other.name, other.filename, other.content_type, other.size):
                return False
            return self.data == other.data
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.name, self.filename, self.content_type, self.size))

    def __repr__(self) -> str:
        data = repr(self._data) if self._data is not None and self.size <= 64 else \
            f"<{self.size} bytes>"
        return (f"MultipartFormData(data={data}, name={self.name!r}, "
                f"filename={self.filename!r}, content_type={self.content_type!r})")


_UNSAFE_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                 *(f"LPT{i}" for i in range(1, 10))}


def safe_filename(filename: str, default: str = "upload") -> str:
    """A file name a visitor sent (an upload's), made safe to store under: the last component
    of either kind of path (``C:\\Users\\ann\\cv.pdf`` → ``cv.pdf``); letters and digits of any
    script, ``.``, ``-`` and ``_`` kept, white space turned into ``_``, anything else dropped;
    no leading dot (no hidden file, no ``..``); Windows' reserved device names avoided; at
    most 200 bytes of UTF-8, the extension kept. Two uploads may still get the same name, and
    the extension is still the visitor's choice: save uploads in a ``krait.config.static_only``
    directory, never where ``.py`` or ``.html`` files run.

    :param filename: the name as sent.
    :param default: what to return when nothing is left.
    :return: e.g. ``safe_filename("../../etc/passwd") == "passwd"``,
        ``safe_filename("holiday photo.jpg") == "holiday_photo.jpg"``.
    """
    import unicodedata

    name = unicodedata.normalize("NFC", filename).replace("\\", "/").rsplit("/", 1)[-1]
    out = []
    for ch in name:
        if ch.isalnum() or ch in ".-_":
            out.append(ch)
        elif ch.isspace():
            out.append("_")
    name = "".join(out).lstrip("._")
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if stem.upper() in _UNSAFE_NAMES:
        name = f"_{name}"
    while len(name.encode("utf-8")) > 200:
        stem = stem[:-1]
        name = f"{stem}.{ext}" if ext and stem else stem or ext[:100]
    return name or default


def _parse_urlencoded(text: str) -> dict[str, str]:
    """Parse ``a=1&b=x+y`` into a dict (query strings and url-encoded forms).

    Parts are split on ``&``, then at the first ``=`` (so ``a=b=c`` gives ``"b=c"``); both sides
    are decoded with "unquote plus" as UTF-8, invalid sequences becoming U+FFFD. A part without
    ``=`` maps to ``""``; empty parts are skipped; for a repeated key the last one wins.
    """
    result: dict[str, str] = {}
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        result[unquote_plus(name, errors="replace")] = unquote_plus(value, errors="replace")
    return result


def _urlencoded_values(text: str, name: str) -> list[str]:
    """Every value of ``name`` in ``a=1&a=2`` text, in order (decoded as
    :func:`_parse_urlencoded` decodes)."""
    values = []
    for part in text.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if unquote_plus(key, errors="replace") == name:
            values.append(unquote_plus(value, errors="replace"))
    return values


def _parse_cookie_header(header: str) -> list[tuple[str, str]]:
    """Split a ``Cookie`` header into ``(name, value)`` pairs, in order.

    Items are split on ``;`` and stripped; each is split at its first ``=`` (an item without one
    has the name ``""``). Values are kept verbatim (quotes included, RFC 6265 §5.4). Never raises.
    """
    pairs = []
    for item in header.split(";"):
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            name, _, value = item.partition("=")
            pairs.append((name.strip(), value.strip()))
        else:
            pairs.append(("", item))
    return pairs


class Request:
    """An HTTP request, as seen by a dynamic page.

    :param http_method: the method as sent, e.g. ``"GET"``, ``"HEAD"``, ``"POST"``.
    :param url: the percent-decoded path, without the query string.
    :param query_string: the raw query string (after ``?``, still encoded); ``""`` when none.
        Bytes are decoded as UTF-8 (invalid sequences become U+FFFD).
    :param http_version: ``"HTTP/1.1"`` or ``"HTTP/1.0"``.
    :param headers: ``(name, value)`` pairs or a mapping (see :class:`Headers`), or a
        function of no arguments returning them, called when :attr:`headers` is first read.
    :param body: the body, ``b""`` when there is none. Ignored (pass ``b""``) when ``body_file``
        is given.
    :param remote_addr: the client's address, e.g. ``"203.0.113.7"``.
    :param server_addr: the address the client reached, this end of the connection, e.g.
        ``"192.0.2.10"``; ``"unix"`` on a Unix socket.
    :param server_port: the port the client reached; 0 on a Unix socket.
    :param scheme: ``"http"`` or ``"https"``.
    :param body_file: the path of the file a large body was spooled to by the server; the body is
        then read from it lazily, on first access to :attr:`body`.
    :param request_id: the request's id (see :attr:`request_id`).
    """

    #: The type of the items :meth:`get_multipart_form` returns (also ``krait.MultipartFormData``).
    MultipartFormData = MultipartFormData

    def __init__(self, http_method: str, url: str, query_string: str | bytes | None,
                 http_version: str, headers: HeadersArg | Callable[[], HeadersArg],
                 body: bytes | str | None, *,
                 remote_addr: str = "", server_addr: str = "", server_port: int = 0,
                 scheme: str = "http",
                 body_file: str | os.PathLike[str] | None = None,
                 request_id: str | None = None) -> None:
        #: The method as sent (``"HEAD"`` stays ``"HEAD"`` although it is routed as GET).
        self.http_method: str = http_method
        #: The percent-decoded path, without the query string.
        self.url: str = url
        #: The raw query string, still percent-encoded.
        if isinstance(query_string, (bytes, bytearray)):
            query_string = query_string.decode("utf-8", "replace")
        self.query_string: str = query_string or ""
        self._query: dict[str, str] | None = None
        #: ``"HTTP/1.1"`` or ``"HTTP/1.0"``.
        self.http_version: str = http_version
        self._headers: Headers | None = None
        self._header_source: Any = headers
        #: The client's address.
        self.remote_addr: str = remote_addr
        #: The address the client connected to: this end of the connection (the server's
        #: own, from ``getsockname``), e.g. ``"192.0.2.10"`` or ``"::1"`` (no brackets). On a
        #: server listening on every address (``0.0.0.0``) it is the one the client used.
        #: ``"unix"`` on a Unix socket. A proxy in front (``X-Forwarded-*``, a PROXY protocol
        #: header) never changes it: behind one it is the address the proxy connected to.
        #: ``""`` outside the server.
        self.server_addr: str = server_addr
        #: The port the client connected to (the listener's, e.g. ``8080``), whatever the
        #: ``Host`` header says; 0 on a Unix socket and outside the server.
        self.server_port: int = server_port
        #: ``"http"`` or ``"https"``.
        self.scheme: str = scheme
        #: The request's id, also sent back in the ``X-Request-ID`` response header: the
        #: ``X-Request-ID`` a trusted proxy (``--trusted-proxy``) sent, else one the worker
        #: made up (unique per server run). Put it in your log lines to find a request's.
        #: ``None`` outside the server.
        self.request_id: str | None = request_id
        #: The file the body was spooled to, or ``None`` when it is in memory.
        self.body_file: str | None = os.fspath(body_file) if body_file is not None else None
        if isinstance(body, str):
            body = body.encode("utf-8")
        if self.body_file is not None:
            if body:
                raise ValueError("give the body or body_file, not both")
            self._body: bytes | None = None
        else:
            self._body = bytes(body or b"")
        self._cookies: dict[str, str] | None = None
        self._parts: list[MultipartFormData] | None = None

    @property
    def query(self) -> dict[str, str]:
        """The query string parsed into a dict (see :meth:`get_post_form` for the rules).

        Parsed on first access and kept; assigning a dict replaces it.
        """
        if self._query is None:
            self._query = _parse_urlencoded(self.query_string)
        return self._query

    @query.setter
    def query(self, value: dict[str, str]) -> None:
        self._query = value

    @property
    def headers(self) -> Headers:
        """The headers, with lower-cased names (lookups are case-insensitive); see
        :class:`Headers`. Built on first access."""
        if self._headers is None:
            source = self._header_source
            self._headers = Headers(source() if callable(source) else source)
            self._header_source = None
        return self._headers

    @headers.setter
    def headers(self, value: HeadersArg) -> None:
        self._headers = value if isinstance(value, Headers) else Headers(value)
        self._header_source = None

    @property
    def body(self) -> bytes:
        """The raw body (``b""`` when there is none).

        A spooled body is read from :attr:`body_file` on first access and kept; prefer
        :meth:`open_body` for large uploads.
        """
        if self._body is None:
            with open(self.body_file, "rb") as f:  # type: ignore[arg-type]
                self._body = f.read()
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:
        self._body = bytes(value)

    def open_body(self) -> BinaryIO:
        """Open the body as a binary file object, without loading a spooled body into memory.

        :return: a readable binary stream; close it when done (``with req.open_body() as f:``).
        """
        if self._body is None:
            return open(self.body_file, "rb")  # type: ignore[arg-type]
        return io.BytesIO(self._body)

    @property
    def cookies(self) -> dict[str, str]:
        """The request's cookies by name (from the ``Cookie`` header).

        The header is split on ``;``; each item is stripped and split at its first ``=``. When a
        name repeats, the first value wins (as :func:`krait.cookie.get_cookie` does); use
        :func:`krait.cookie.get_cookies` to see every one. Computed once, on first access.
        """
        if self._cookies is None:
            cookies: dict[str, str] = {}
            for name, value in _parse_cookie_header(self.headers.get("cookie", "")):
                cookies.setdefault(name, value)
            self._cookies = cookies
        return self._cookies

    def get_post_form(self) -> dict[str, str]:
        """Parse the body as an ``application/x-www-form-urlencoded`` form.

        Parsed like the query string: split on ``&`` and at the first ``=``, both sides decoded
        with "unquote plus" as UTF-8 (invalid sequences become U+FFFD); a field without ``=``
        maps to ``""``; for a repeated field the last one wins. The ``Content-Type`` header is
        not checked.

        :return: a dict of field names to values.
        :raises krait.errors.PayloadTooLarge: (413) when the body has more fields than
            ``krait.config.max_form_fields`` (1000 by default).
        """
        from krait import config

        text = self.body.decode("utf-8", "replace")
        limit = config.max_form_fields
        # Counted before anything is decoded: a 15 MB body of "&a" must not cost seconds.
        if text.count("&") >= limit and sum(1 for p in text.split("&") if p) > limit:
            raise PayloadTooLarge(f"the form has more than {limit} fields")
        return _parse_urlencoded(text)

    def json(self) -> Any:
        """Parse the body as JSON (UTF-8, -16 or -32, RFC 8259).

        :return: the decoded value.
        :raises krait.errors.BadRequest: when the body is empty or not valid JSON.
        """
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            raise BadRequest(f"invalid JSON body: {e}") from e

    def _multipart_boundary(self) -> str | None:
        content_type = self.headers.get("content-type")
        if content_type is None:
            _log.error("get_multipart_form: the request has no Content-Type")
            return None
        mime, options = multipart.parse_options_header(content_type)
        boundary = options.get("boundary")
        if mime != "multipart/form-data" or not boundary:
            _log.error("get_multipart_form: Content-Type %r is not multipart/form-data with a "
                       "boundary", content_type)
            return None
        # RFC 2046 §5.1.1: 1 to 70 characters, printable ASCII, not ending in a space.
        if len(boundary) > 70 or boundary.endswith(" ") or not all(
                " " <= c <= "~" for c in boundary):
            _log.error("get_multipart_form: invalid multipart boundary %r", boundary)
            return None
        return boundary

    def get_multipart_form(self) -> list[MultipartFormData] | None:
        """Parse a ``multipart/form-data`` body (RFC 7578), e.g. a form with file uploads.

        The body is parsed as a stream, in chunks, also when the server spooled it to a file:
        a file part (one sent with a file name) larger than a few dozen KiB goes to a temporary
        file, never whole into memory (read it through :attr:`MultipartFormData.file` or
        :meth:`MultipartFormData.save`); plain fields are kept in memory, at most
        ``krait.config.max_form_memory_size`` bytes of them. Quoted names and file names may
        contain ``;``; the ``Content-Type`` may carry more parameters than ``boundary`` (e.g.
        ``charset``). The body is parsed once: later calls return the same parts (their files
        are removed when the request has been answered).

        :return: one :class:`MultipartFormData` per part, in order; ``None`` (and an error in
            the log) when the ``Content-Type`` is not ``multipart/form-data`` with a valid
            boundary.
        :raises krait.errors.BadRequest: when the body is not valid multipart data.
        :raises krait.errors.PayloadTooLarge: when it has too many parts, too long part
            headers or more plain-field bytes than ``krait.config.max_form_memory_size``.
        """
        if self._parts is not None:
            return list(self._parts)
        boundary = self._multipart_boundary()
        if boundary is None:
            return None
        from krait import config

        parts: list[MultipartFormData] = []
        try:
            with self.open_body() as stream:
                parts.extend(_parse_multipart(stream, boundary,
                                              field_memory=config.max_form_memory_size))
        except BaseException as e:
            for part in parts:
                part.close()
            if isinstance(e, multipart.ParserLimitReached):
                raise PayloadTooLarge(f"multipart body: {e}") from e
            if isinstance(e, multipart.ParserError):
                raise BadRequest(f"malformed multipart body: {e}") from e
            raise
        self._parts = parts
        return list(parts)

    def _close(self) -> None:
        """The request has been answered: the temporary files of its multipart parts go."""
        for part in self._parts or ():
            part.close()

    def query_list(self, name: str) -> list[str]:
        """Every value of a query parameter, in order: ``?a=1&a=2`` gives ``["1", "2"]`` for
        ``"a"`` (where :attr:`query` keeps only the last). Decoded as :attr:`query` is.

        :param name: the parameter's name.
        :return: the values; ``[]`` when the parameter is absent.
        """
        return _urlencoded_values(self.query_string, name)

    def form_list(self, name: str) -> list[str]:
        """Every value of a form field, in order (checkboxes and multiple selects send one per
        choice; :meth:`get_post_form` keeps only the last). For a ``multipart/form-data`` body
        the plain fields of that name, decoded as UTF-8; otherwise the body parsed as
        ``application/x-www-form-urlencoded``.

        :param name: the field's name.
        :return: the values; ``[]`` when the field is absent.
        :raises krait.errors.BadRequest: for a malformed multipart body.
        """
        content_type = self.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() == "multipart/form-data":
            return [part.data.decode("utf-8", "replace")
                    for part in self.get_multipart_parts(name) if part.filename is None]
        return _urlencoded_values(self.body.decode("utf-8", "replace"), name)

    def get_multipart_parts(self, name: str) -> list[MultipartFormData]:
        """The parts of a ``multipart/form-data`` body sent under the field ``name``, in order
        (several for ``<input type="file" multiple>``); ``[]`` when there is none or the body is
        not multipart.

        :param name: the field's name.
        """
        return [part for part in self.get_multipart_form() or () if part.name == name]

    def get_multipart_part(self, name: str) -> MultipartFormData | None:
        """The first part sent under the field ``name``, or ``None``.

        :param name: the field's name, e.g. ``"file"`` for ``<input type="file" name="file">``.
        """
        parts = self.get_multipart_parts(name)
        return parts[0] if parts else None

    def __str__(self) -> str:
        """An approximation of the request's HTTP text (for logs and debugging).

        Method, re-quoted path, ``?`` and the query rebuilt from :attr:`query` (not re-encoded),
        version, headers, blank line, body (decoded as UTF-8 with replacement). A spooled body
        that has not been read is shown as a placeholder instead of being loaded.
        """
        # The worker decodes the path with surrogateescape; quote the original bytes back.
        target = quote(self.url, errors="surrogateescape")
        if self.query:
            target += "?" + "&".join(f"{k}={v}" for k, v in self.query.items())
        lines = [f"{self.http_method} {target} {self.http_version}"]
        lines.extend(f"{name}: {value}" for name, value in self.headers.items())
        if self._body is None:
            body = f"<body spooled to {self.body_file}>"
        else:
            body = self._body.decode("utf-8", "replace")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def __repr__(self) -> str:
        return f"<Request {self.http_method} {self.url!r}>"


class _PartSink:
    """Collects one part's content: in memory, or for a file part past its share of memory,
    in an anonymous temporary file (gone when closed, or when the process ends)."""

    def __init__(self, is_file: bool, budget: list[int]) -> None:
        self.is_file = is_file
        self.budget = budget  # [in-memory bytes still allowed for file parts, for fields]
        self.chunks: list[bytes] = []
        self.size = 0
        self.file: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.file is not None:
            self.file.write(data)
            return
        if not self.is_file:
            self.budget[1] -= len(data)
            if self.budget[1] < 0:
                raise multipart.ParserLimitReached(
                    "the form's plain fields are larger than krait.config.max_form_memory_size")
            self.chunks.append(data)
            return
        if self.size <= min(_FILE_PART_MEMORY, self.budget[0]):
            self.chunks.append(data)
            return
        self.file = tempfile.TemporaryFile(prefix="krait-part-")  # noqa: SIM115 - the part's
        for chunk in self.chunks:
            self.file.write(chunk)
        self.chunks = []
        self.file.write(data)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def part(self, segment: multipart.MultipartSegment) -> MultipartFormData:
        name = segment.name
        if not name:
            # The parser turns a missing name into ""; Krait's API reports None.
            _, options = multipart.parse_options_header(segment.header("Content-Disposition"))
            name = options.get("name")
        content_type = (segment.header("Content-Type") or "").strip() or "text/plain"
        if self.file is not None:
            self.file.flush()
            return MultipartFormData(None, name, segment.filename, content_type, file=self.file)
        if self.is_file:
            self.budget[0] -= self.size
        return MultipartFormData(b"".join(self.chunks), name, segment.filename, content_type)


def _parse_multipart(stream: BinaryIO, boundary: str, chunk_size: int = _MULTIPART_CHUNK,
                     field_memory: int = 1024 * 1024) -> Iterator[MultipartFormData]:
    """Feed ``stream`` to a push parser chunk by chunk and yield the parts as they complete.

    File parts past a small size go to temporary files (the caller closes the parts); plain
    fields may hold ``field_memory`` bytes together, more raises ParserLimitReached.

    The preamble is skipped here, not by the parser: RFC 2046 §5.1.1 makes the first
    delimiter ``--boundary`` at the very start of the body or right after a CRLF, and the
    parser would also take one at the start of any chunk it is given, so that the parts of a
    body whose "boundary" follows other bytes depended on where the reads fell (400, no parts,
    or the parts). Such a body is refused here (ParserError, a 400) however it is read.
    """
    parser = multipart.PushMultipartParser(
        boundary,
        max_header_size=_MULTIPART_MAX_HEADER_LINE,
        max_header_count=_MULTIPART_MAX_PART_HEADERS,
        max_segment_count=_MULTIPART_MAX_PARTS,
    )
    delimiter = b"--" + boundary.encode("latin-1")
    # Find the first delimiter, keeping only the bytes that may still be the start of one.
    pending = b""
    at_start = True
    while True:
        data = stream.read(chunk_size)
        pending += data
        if at_start:
            if len(pending) < len(delimiter) and data:
                continue
            if pending.startswith(delimiter):
                break
            at_start = False
        found = pending.find(b"\r\n" + delimiter)
        if delimiter in (pending if found < 0 else pending[:found]):
            # "--boundary" after other bytes: not a delimiter for RFC 2046, one for careless
            # parsers. Ambiguous, so refused (400), as the core refuses ambiguous framing.
            raise multipart.ParserError("the multipart boundary follows other bytes")
        if found >= 0:
            pending = pending[found + 2:]
            break
        if not data:
            pending = b""  # no delimiter at all: the parser reports the body as incomplete
            break
        # What may still begin a delimiter: CRLF and all of "--boundary" but its last byte.
        pending = pending[-(len(delimiter) + 1):]
    budget = [_FILE_PARTS_MEMORY, field_memory]
    segment: multipart.MultipartSegment | None = None
    sink: _PartSink | None = None
    data = pending
    try:
        while True:
            # An empty chunk tells the parser the input ended; it raises if it is incomplete.
            for event in parser.parse(data):
                if isinstance(event, multipart.MultipartSegment):
                    segment, sink = event, _PartSink(event.filename is not None, budget)
                elif event is not None:
                    assert sink is not None
                    sink.write(event)
                else:
                    assert segment is not None and sink is not None
                    part, sink = sink.part(segment), None
                    yield part
            if not data or parser.closed:
                break
            data = stream.read(chunk_size)
    finally:
        if sink is not None:
            sink.close()  # a part left unfinished by an error
    parser.close()
