"""Test a site from its own tests: ``krait.testing.Client``.

::

    from krait.testing import Client

    def test_home():
        with Client("mysite") as client:
            page = client.get("/")
            assert page.status == 200 and "Welcome" in page.text

The client starts a real krait on a free port of 127.0.0.1 (``python -m krait SITE --port 0``)
and stops it at the end of the ``with`` block (or on :meth:`Client.stop`). Your site therefore
runs exactly as it will in production: the C core routes and serves static files, your pages
run in a worker process, ``init.py`` runs at start-up (a mistake in it fails
:meth:`Client.start` with krait's message), and sessions, cookies, redirects, uploads and
WebSockets behave as in a browser. Starting takes a fraction of a second; share one client
between tests with a pytest fixture when a file has many::

    import pytest
    from krait.testing import Client

    @pytest.fixture(scope="module")
    def client():
        with Client("mysite") as c:
            yield c

Cookies the site sets are kept between calls (a cookie jar with a browser's rules: ``Secure``
cookies only go over HTTPS, so a session is kept as long as it runs on plain HTTP), redirects
are returned as they are unless ``follow_redirects=True``. ``client.websocket(path)`` needs the
``websocket-client`` package (``pip install websocket-client``).
"""

from __future__ import annotations

import atexit
import http.cookiejar
import json as _json
import mimetypes
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from krait.errors import KraitError
from krait.request import Headers

__all__ = ["Client", "ClientResponse", "ClientWebSocket", "SiteStartError"]

#: What ``files=`` takes per field: the content, ``(filename, content)`` or
#: ``(filename, content, content_type)``; content is ``bytes``, ``str``, a path or a binary file.
FileArg = Any

_running: set[Client] = set()


@atexit.register
def _stop_all() -> None:
    # A test that forgot stop() (or died) leaves no server behind.
    for client in list(_running):
        client.stop()


class SiteStartError(KraitError, RuntimeError):
    """The site's server did not start (a mistake in ``init.py``, say); the message holds
    krait's own output."""


class ClientResponse:
    """The answer to one request of a :class:`Client`."""

    def __init__(self, status: int, reason: str, header_list: list[tuple[str, str]],
                 body: bytes, url: str) -> None:
        #: The status code, e.g. ``200``.
        self.status: int = status
        #: The reason phrase, e.g. ``"OK"``.
        self.reason: str = reason
        #: Every header as sent, in order (repeated ``Set-Cookie`` headers included).
        self.header_list: list[tuple[str, str]] = header_list
        #: The headers by lower-cased name (repeats joined with ``","``; see :meth:`get_all`).
        self.headers: Headers = Headers(header_list)
        #: The body, as bytes.
        self.body: bytes = body
        #: The URL that answered (after redirects, when they were followed).
        self.url: str = url

    @property
    def text(self) -> str:
        """The body decoded with the ``Content-Type`` charset (UTF-8 when there is none)."""
        match = re.search(r"charset=([\w-]+)", self.headers.get("content-type", ""))
        try:
            return self.body.decode(match.group(1) if match else "utf-8", "replace")
        except LookupError:
            return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return _json.loads(self.body)

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in order; ``[]`` when absent."""
        name = name.lower()
        return [v for k, v in self.header_list if k.lower() == name]

    @property
    def location(self) -> str | None:
        """The ``Location`` header of a redirect, or ``None``."""
        return self.headers.get("location")

    @property
    def csrf_token(self) -> str | None:
        """The value of the page's first ``csrf_token`` field (``krait.csrf_token()``), to
        send back with a form: ``client.post(url, data={..., "csrf_token":
        page.csrf_token})``. ``None`` when the page has none."""
        for tag in re.findall(r"<input\b[^>]*>", self.text, re.I):
            if re.search(r"""\bname\s*=\s*["']?csrf_token\b""", tag):
                value = re.search(r"""\bvalue\s*=\s*["']([^"']*)""", tag)
                if value:
                    return value.group(1)
        return None

    def __repr__(self) -> str:
        return f"<ClientResponse {self.status} {self.url}>"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx comes back as the response


class Client:
    """A krait serving ``site_root`` on a free port of 127.0.0.1, and a browser for it.

    :param site_root: the site's folder.
    :param workers: worker processes (1 keeps tests light; 2 or more shows what a state kept
        in one worker's memory does).
    :param args: more command-line options for krait, e.g. ``["--debug"]`` (tracebacks on
        error pages).
    :param env: environment variables for the server (added to this process's).
    :param follow_redirects: the default of every call's ``follow_redirects``.
    :param timeout: seconds to wait for an answer (and for the server to start).
    """

    def __init__(self, site_root: str | os.PathLike[str], *, workers: int = 1,
                 args: Iterable[str] = (), env: Mapping[str, str] | None = None,
                 follow_redirects: bool = False, timeout: float = 30.0) -> None:
        self.site_root: str = os.fspath(site_root)
        self.workers = workers
        self.args = list(args)
        self.env = dict(env or {})
        self.follow_redirects = follow_redirects
        self.timeout = timeout
        #: The cookies kept between calls (a standard :class:`http.cookiejar.CookieJar`).
        self.cookie_jar: http.cookiejar.CookieJar = http.cookiejar.CookieJar()
        #: The port the server listens on (set by :meth:`start`).
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: str | None = None
        cookies = urllib.request.HTTPCookieProcessor(self.cookie_jar)
        self._open_follow = urllib.request.build_opener(cookies)
        self._open_once = urllib.request.build_opener(cookies, _NoRedirect())

    # -- the server -----------------------------------------------------------------------------

    def start(self) -> Client:
        """Start the server and wait until it answers (done by ``with Client(...)``).

        :return: the client itself.
        :raises SiteStartError: when krait exits or does not start within ``timeout``.
        """
        if self._proc is not None:
            return self
        fd, self._log_path = tempfile.mkstemp(prefix="krait-test-", suffix=".log")
        env = {**os.environ, **self.env}
        cmd = [sys.executable, "-m", "krait", self.site_root, "--host", "127.0.0.1",
               "--port", "0", "--workers", str(self.workers), *self.args]
        with os.fdopen(fd, "wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=env)
        _running.add(self)
        deadline = time.monotonic() + self.timeout
        while True:
            found = re.search(r"serving .* at http://127\.0\.0\.1:(\d+)/", self.log())
            if found:
                self.port = int(found.group(1))
                return self
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise SiteStartError(f"krait could not serve {self.site_root} (exit status "
                                     f"{code}):\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise SiteStartError(f"krait did not start within {self.timeout} s:\n"
                                     f"{self.log()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (SIGTERM: requests in progress finish); the log stays readable."""
        proc, self._proc = self._proc, None
        _running.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self) -> str:
        """What the server printed so far: start-up lines, errors and tracebacks of the
        site's pages, the access log. Print it when a test fails."""
        if self._log_path is None:
            return ""
        try:
            return Path(self._log_path).read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Client:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if self._log_path is not None:
            try:
                os.unlink(self._log_path)
            except OSError:
                pass
            self._log_path = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise RuntimeError("the client's server is not started: use `with Client(...)` "
                               "or call start()")
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        """The full URL of ``path`` (``"/guestbook"``; non-ASCII characters are encoded).

        :param path: the path, with a query string or not.
        :param query: more query parameters.
        """
        if not path.startswith("/"):
            path = "/" + path
        url = self.base_url + urllib.parse.quote(path, safe="/?&=%:@;+,!$'()*~#[]")
        if query:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(query, doseq=True)
        return url

    # -- HTTP -----------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                data: Mapping[str, Any] | bytes | str | None = None, json: Any = None,
                files: Mapping[str, FileArg] | None = None,
                headers: Mapping[str, str] | None = None,
                follow_redirects: bool | None = None) -> ClientResponse:
        """Send one request; every status (404, 500 ...) is returned, never raised.

        :param method: ``"GET"``, ``"POST"``, ...
        :param path: the path, e.g. ``"/guestbook"`` or ``"/search?q=krait"``.
        :param query: query parameters to add (a value may be a list: one parameter each).
        :param data: a form as a dict (sent ``application/x-www-form-urlencoded``, or
            ``multipart/form-data`` with ``files``), or a raw body (``bytes``/``str``; give its
            ``Content-Type`` in ``headers``).
        :param json: a value sent as a JSON body (``application/json``).
        :param files: uploads by field name: the content (``bytes``, ``str``, a path or an
            open binary file), ``(filename, content)`` or ``(filename, content,
            content_type)``.
        :param headers: more request headers.
        :param follow_redirects: follow 3xx answers (default: the client's setting).
        :return: the response.
        """
        body, content_type = _encode_body(data, json, files)
        request = urllib.request.Request(self.url(path, query), data=body, method=method.upper())
        if content_type is not None:
            request.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        follow = self.follow_redirects if follow_redirects is None else follow_redirects
        opener = self._open_follow if follow else self._open_once
        try:
            answer = opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            answer = error  # 4xx, 5xx and redirects not followed: still a response
        with answer:
            return ClientResponse(answer.status, answer.reason, list(answer.headers.items()),
                                  answer.read(), answer.url)

    def get(self, path: str, **kwargs: Any) -> ClientResponse:
        """``GET path`` (see :meth:`request` for the options)."""
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> ClientResponse:
        """``HEAD path``."""
        return self.request("HEAD", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> ClientResponse:
        """``POST path``: ``data=`` a form, ``json=`` a value, ``files=`` uploads."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> ClientResponse:
        """``PUT path`` (same body options as :meth:`post`)."""
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> ClientResponse:
        """``PATCH path`` (same body options as :meth:`post`)."""
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> ClientResponse:
        """``DELETE path``."""
        return self.request("DELETE", path, **kwargs)

    @property
    def cookies(self) -> dict[str, str]:
        """The cookies kept so far, name → value (a copy)."""
        return {c.name: c.value or "" for c in self.cookie_jar}

    def _cookie_header(self, url: str) -> str | None:
        probe = urllib.request.Request(url)
        self.cookie_jar.add_cookie_header(probe)
        return probe.get_header("Cookie")

    # -- WebSocket ------------------------------------------------------------------------------

    def websocket(self, path: str, *, subprotocols: list[str] | None = None,
                  headers: Mapping[str, str] | None = None) -> ClientWebSocket:
        """Open a WebSocket to ``path`` (a ``WEBSOCKET`` route), with this client's cookies::

            with client.websocket("/echo/socket") as ws:
                ws.send("hello")
                assert ws.receive() == "HELLO"

        :param path: the path.
        :param subprotocols: ``Sec-WebSocket-Protocol`` values to offer.
        :param headers: more handshake headers.
        :raises websocket.WebSocketBadStatusException: when the site refuses the handshake
            (its ``status_code`` says how).
        """
        url = self.url(path)
        cookie = self._cookie_header(url)
        return ClientWebSocket("ws" + url[4:], origin=self.base_url, cookie=cookie,
                               subprotocols=subprotocols, headers=headers,
                               timeout=self.timeout)


class ClientWebSocket:
    """An open WebSocket of a :class:`Client` (made by :meth:`Client.websocket`)."""

    def __init__(self, url: str, *, origin: str, cookie: str | None,
                 subprotocols: list[str] | None, headers: Mapping[str, str] | None,
                 timeout: float) -> None:
        try:
            import websocket
        except ImportError:
            raise ImportError("Client.websocket() needs the websocket-client package "
                              "(pip install websocket-client)") from None
        self._ws = websocket.create_connection(
            url, timeout=timeout, origin=origin, cookie=cookie, subprotocols=subprotocols,
            header=[f"{k}: {v}" for k, v in (headers or {}).items()])

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the site chose, or ``None``."""
        return self._ws.getsubprotocol()

    def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message."""
        if isinstance(message, str):
            self._ws.send(message)
        else:
            self._ws.send_binary(bytes(message))

    def receive(self, timeout: float | None = None) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary.

        :param timeout: seconds to wait (default: the client's timeout).
        :raises TimeoutError: when none came in time.
        :raises ConnectionError: when the site closed the connection.
        """
        import websocket

        if timeout is not None:
            self._ws.settimeout(timeout)
        try:
            return self._ws.recv()
        except websocket.WebSocketTimeoutException:
            raise TimeoutError("no WebSocket message in time") from None
        except websocket.WebSocketConnectionClosedException:
            raise ConnectionError("the site closed the WebSocket") from None

    def close(self, code: int = 1000) -> None:
        """Close the connection (with ``code``, 1000 = normal)."""
        self._ws.close(status=code)

    def __enter__(self) -> ClientWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _content(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, os.PathLike):
        return Path(value).read_bytes()
    if hasattr(value, "read"):
        data = value.read()
        return data.encode("utf-8") if isinstance(data, str) else data
    raise TypeError(f"an upload's content must be bytes, str, a path or a file, not "
                    f"{type(value).__name__}")


def _file_part(value: FileArg) -> tuple[str, bytes, str]:
    if isinstance(value, tuple):
        filename, content, *rest = value
        content_type = rest[0] if rest else None
    else:
        filename = os.path.basename(os.fspath(value)) if isinstance(value, os.PathLike) else \
            os.path.basename(getattr(value, "name", "") or "") or "upload"
        content, content_type = value, None
    if content_type is None:
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return str(filename), _content(content), content_type


def _encode_body(data: Mapping[str, Any] | bytes | str | None, json: Any,
                 files: Mapping[str, FileArg] | None) -> tuple[bytes | None, str | None]:
    if json is not None:
        if data is not None or files:
            raise ValueError("give json, or data and files, not both")
        return _json.dumps(json).encode("utf-8"), "application/json"
    if files:
        if data is not None and not isinstance(data, Mapping):
            raise ValueError("with files, data must be a dict of form fields")
        boundary = "krait-" + secrets.token_hex(12)
        out: list[bytes] = []

        def quoted(text: str) -> str:
            return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D") \
                .replace("\n", "%0A")

        for name, value in _pairs(data or {}):
            out.append(f'--{boundary}\r\nContent-Disposition: form-data; '
                       f'name="{quoted(name)}"\r\n\r\n'.encode() + _content(str(value))
                       + b"\r\n")
        for name, value in files.items():
            filename, content, content_type = _file_part(value)
            out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted(name)}"; '
                       f'filename="{quoted(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'
                       .encode() + content + b"\r\n")
        out.append(f"--{boundary}--\r\n".encode())
        return b"".join(out), f"multipart/form-data; boundary={boundary}"
    if data is None:
        return None, None
    if isinstance(data, Mapping):
        return urllib.parse.urlencode(list(_pairs(data))).encode("ascii"), \
            "application/x-www-form-urlencoded"
    return _content(data), None


def _pairs(form: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Form fields as pairs; a list value is one field per item (checkboxes)."""
    out = []
    for name, value in form.items():
        if isinstance(value, (list, tuple)):
            out.extend((name, v) for v in value)
        else:
            out.append((name, value))
    return out
