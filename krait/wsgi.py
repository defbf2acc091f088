"""krait.wsgi: WSGI applications (PEP 3333) on krait.

A site mounts an application with ``config.Route(prefix="/app", wsgi="package.module:app")``
(see docs/wsgi.md); ``krait --wsgi package.module:app`` serves one alone. Each worker imports
the application once and calls it for every request of its route, one request at a time, in
the worker process (process isolation, time limits, reloads and crash handling are krait's
usual ones).

This module holds what the worker needs: :func:`load_app`, the ``environ`` builder and
:class:`Exchange`, which implements ``start_response``, ``write()`` and the iteration of the
application's result into worker frames (inline, streamed, or a file the core sends with
``sendfile``).
"""

from __future__ import annotations

import importlib
import io
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable
from typing import Any

from krait import protocol

__all__ = ["FileWrapper", "WSGIProtocolError", "load_app"]

#: Hop-by-hop headers (RFC 9110 §7.6.1): an application may not set them (PEP 3333).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade"})
_STATUS = re.compile(r"([2-5]\d\d) [^\x00-\x1f\x7f]*\Z")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Bytes of body a CHUNK frame carries at most.
_STEP = 1024 * 1024


class WSGIProtocolError(Exception):
    """The application broke a rule of PEP 3333 (a bad status line, a hop-by-hop header,
    ``start_response`` called twice, a body item that is not bytes, ...). It is raised into
    the application; unhandled, the client gets a 500 and the error log the traceback."""


def load_app(spec: str | Callable[..., Any]) -> Callable[..., Any]:
    """The application a ``wsgi=`` names: a callable as it is, or ``"package.module:name"``
    imported (``name`` may be dotted, ``"module:create_app()"`` calls a factory with no
    arguments, as gunicorn does).

    :raises ImportError: the module cannot be imported.
    :raises AttributeError: the module has no such name.
    :raises TypeError: what it names is not callable.
    """
    if not isinstance(spec, str):
        app = spec
    else:
        module_name, _, name = spec.partition(":")
        module = importlib.import_module(module_name)
        call = name.endswith("()")
        if call:
            name = name[:-2]
        obj: Any = module
        for part in name.split("."):
            obj = getattr(obj, part)
        app = obj() if call else obj
    if not callable(app):
        raise TypeError(f"the WSGI application {spec!r} is not callable "
                        f"({type(app).__name__})")
    return app


class FileWrapper:
    """``environ["wsgi.file_wrapper"]``: an iterable over a file's blocks (PEP 3333). When the
    application returns one over a regular file read from its start, the core sends the file
    itself (``sendfile``) and no byte of it passes through Python."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Any:
        read = self.filelike.read
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data

    def sendfile_path(self) -> tuple[str, int] | None:
        """(absolute path, size) when the core can send the whole file by its name: a regular
        file, at offset 0, whose name still leads to the same file; else ``None``."""
        f = self.filelike
        try:
            fd = f.fileno()
            name = f.name
            if not isinstance(name, (str, bytes)) or f.tell() != 0:
                return None
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            path = os.path.abspath(os.fsdecode(name))
            named = os.stat(path)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None
        if (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino) or "\0" in path:
            return None
        return path, st.st_size


def _native(text: str) -> str:
    """A frame string (UTF-8, undecodable bytes as surrogates) as a PEP 3333 native string:
    the original bytes, one character each (latin-1)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def build_environ(frame: protocol.RequestFrame, prefix: str, remote_addr: str, scheme: str,
                  body: Any, body_len: int) -> dict[str, Any]:
    """The PEP 3333 ``environ`` of a request frame for an application mounted at ``prefix``.

    ``body`` is the file object ``wsgi.input`` reads (the body in memory, or the spooled body
    file, read as a stream); ``body_len`` its length (the core has read the whole body and
    undone any chunked coding, so ``CONTENT_LENGTH`` is always known).
    """
    path = _native(frame.path)
    if prefix == "/":
        script, info = "", path
    else:
        script = _native(prefix)
        info = path[len(script):]
    env: dict[str, Any] = {
        "REQUEST_METHOD": frame.method,
        "SCRIPT_NAME": script,
        "PATH_INFO": info,
        "QUERY_STRING": _native(frame.query),
        "SERVER_PROTOCOL": frame.version or "HTTP/1.1",
        "REMOTE_ADDR": remote_addr,
        "REMOTE_PORT": str(frame.remote_port),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
        "SERVER_SOFTWARE": "krait",
    }
    if body_len or frame.method in ("POST", "PUT", "PATCH"):
        env["CONTENT_LENGTH"] = str(body_len)
    for name, value in frame.headers:
        if name == "content-type":
            env["CONTENT_TYPE"] = _native(value)
            continue
        if name in ("content-length", "transfer-encoding") or "_" in name:
            # The core has read the body and undone its framing (CONTENT_LENGTH says how long
            # it is); a name with "_" would be indistinguishable from one with "-" (header
            # smuggling past a proxy), so it is dropped, as nginx and gunicorn do.
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        value = _native(value)
        if key in env:
            value = env[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        env[key] = value
    # RFC 3875 §4.1.14-15 (CGI, which PEP 3333 follows): SERVER_NAME is the host the client
    # asked for, SERVER_PORT the port the request came in on. So the name is the Host header's
    # when there is one (as Apache's UseCanonicalName Off), else the address the connection
    # reached; the port is always the connection's (as gunicorn, uWSGI behind nginx's
    # $server_port, waitress and wsgiref give it), never guessed from the scheme. PEP 3333's
    # URL reconstruction takes HTTP_HOST first, so these matter for a request without Host.
    host = env.get("HTTP_HOST", "")
    if host.startswith("["):
        end = host.find("]")
        name, port = host[:end + 1], host[end + 2:] if host[end + 1:end + 2] == ":" else ""
    else:
        name, _, port = host.partition(":")
    if frame.server_port:
        addr = frame.server_addr
        env["SERVER_NAME"] = name or (f"[{addr}]" if ":" in addr else addr)
        env["SERVER_PORT"] = str(frame.server_port)
    else:
        # A Unix socket has no port, and its path is no host name: the Host header's (as
        # gunicorn does there), else localhost and the scheme's port (PEP 3333 wants both
        # non-empty).
        env["SERVER_NAME"] = name or "localhost"
        env["SERVER_PORT"] = port if port.isdigit() else ("443" if scheme == "https" else "80")
    return env


def _check_status(status: Any) -> int:
    if not isinstance(status, str):
        raise WSGIProtocolError(f"the status must be a str like '200 OK', not {status!r}")
    m = _STATUS.match(status)
    if m is None:
        raise WSGIProtocolError(f"bad status line {status!r}: three digits (200-599), a space, "
                                "then the reason phrase")
    return int(m.group(1))


def _check_headers(headers: Any) -> list[tuple[str, str | bytes]]:
    if type(headers) is not list:
        raise WSGIProtocolError(f"response headers must be a list, not "
                                f"{type(headers).__name__}")
    out: list[tuple[str, str | bytes]] = []
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise WSGIProtocolError(f"a response header must be a (name, value) tuple, not "
                                    f"{item!r}")
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise WSGIProtocolError(f"header name and value must be str: {item!r}")
        if not _TOKEN.match(name) or _BAD_VALUE.search(value):
            raise WSGIProtocolError(f"bad header {item!r} (a token name, a value without "
                                    "control characters)")
        if name.lower() in HOP_BY_HOP:
            raise WSGIProtocolError(f"hop-by-hop header {name!r}: the server's, not the "
                                    "application's (PEP 3333)")
        if not value.isascii():
            try:
                out.append((name, value.encode("latin-1")))
            except UnicodeEncodeError:
                raise WSGIProtocolError(f"header value {value!r} is not latin-1") from None
            continue
        out.append((name, value))
    return out


class Exchange:
    """One request's response side: ``start_response``, ``write()`` and the result's
    iteration, turned into worker frames sent with ``send``."""

    __slots__ = ("fid", "send", "status", "headers", "sent", "length", "left")

    def __init__(self, fid: int, send: Callable[..., None]) -> None:
        self.fid = fid
        self.send = send
        self.status: int | None = None
        self.headers: list[tuple[str, str | bytes]] = []
        self.sent = False  # the status line has gone to the core
        self.length: int | None = None  # the application's Content-Length
        self.left: int | None = None  # bytes it may still send (PEP 3333: never more)

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        """PEP 3333 ``start_response``: check the status and headers, keep them until the
        first body bytes; with ``exc_info`` replace them if nothing was sent yet, or re-raise
        the error if it was."""
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise WSGIProtocolError("start_response() called a second time without exc_info")
        code = _check_status(status)
        checked = _check_headers(headers)
        length = None
        for name, value in checked:
            if name.lower() == "content-length":
                text = value.decode("latin-1") if isinstance(value, bytes) else value
                if not text.isdigit():
                    raise WSGIProtocolError(f"bad Content-Length {text!r}")
                length = int(text)
        self.status, self.headers, self.length, self.left = code, checked, length, length
        return self.write

    def _head(self, kind: int) -> None:
        if self.status is None:
            raise WSGIProtocolError("the body started before start_response() was called")
        self.send(protocol.encode_response(self.fid, self.status, self.headers, b"", kind))
        self.sent = True

    def write(self, data: bytes) -> None:
        """The ``write()`` callable start_response returns: the bytes go out at once (the
        response is streamed from then on)."""
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise WSGIProtocolError(f"write() takes bytes, not {type(data).__name__}")
            data = bytes(data)
        if not self.sent:
            self._head(protocol.BODY_STREAM)
        self._chunk(data)

    def _chunk(self, data: bytes) -> None:
        if self.left is not None:
            if self.left <= 0:
                return
            if len(data) > self.left:
                data = data[:self.left]
            self.left -= len(data)
        view = memoryview(data)
        for at in range(0, len(view), _STEP):
            self.send(protocol.encode_chunk(self.fid, view[at:at + _STEP]))

    def finish(self, result: Iterable[bytes]) -> None:
        """Send the application's result (closing it is the caller's): a whole file by name,
        a list at once, anything else as its items come."""
        if not self.sent:
            if type(result) is FileWrapper and self.status is not None:
                found = result.sendfile_path()
                if found is not None and self.length in (None, found[1]):
                    self.send(protocol.encode_response(self.fid, self.status, self.headers,
                                                       found[0], protocol.BODY_FILE))
                    self.sent = True
                    return
            if type(result) in (list, tuple):
                for item in result:  # type: ignore[union-attr]
                    if type(item) is not bytes:
                        raise WSGIProtocolError(f"the body must be bytes items, not "
                                                f"{type(item).__name__}")
                self._whole(b"".join(result))
                return
        items = iter(result)
        for data in items:
            if type(data) is not bytes:
                if not isinstance(data, (bytearray, memoryview)):
                    raise WSGIProtocolError(f"the body must be bytes items, not "
                                            f"{type(data).__name__}")
                data = bytes(data)
            if not data:
                continue
            if not self.sent:
                if self.length is not None and len(data) >= self.length:
                    # The whole body, as its Content-Length says: one frame, no chunking
                    # (a framework's ordinary page). The rest must be empty.
                    self._whole(data)
                    for _ in items:
                        pass
                    return
                self._head(protocol.BODY_STREAM)
            self._chunk(data)
        if self.sent:
            self.send(protocol.encode_end(self.fid))
        else:
            self._whole(b"")

    def _whole(self, body: bytes) -> None:
        if self.status is None:
            raise WSGIProtocolError("the application returned without calling "
                                    "start_response()")
        if self.length is not None and len(body) > self.length:
            body = body[:self.length]
        frames = protocol.encode_response_stream(self.fid, self.status, self.headers, body)
        self.send(*frames)
        self.sent = True
