"""Exceptions raised by krait and by site code.

:class:`KraitError` is the root of everything krait raises on purpose. :class:`HTTPError` and its
subclasses carry an HTTP status: raise one from a script, a controller or a template and the worker
answers with that status (see :meth:`HTTPError.to_response`) instead of a 500. Where an error is
also a plain programming error it subclasses the matching builtin as well, so
``except ValueError`` keeps working (``BadRequest`` is a ``ValueError``, ``NotFound`` a
``LookupError``, ``ConfigError`` a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from krait.response import Response

__all__ = [
    "BadRequest", "ConfigError", "Forbidden", "HTTPError", "InternalServerError", "KraitError",
    "MethodNotAllowed", "NotFound", "PayloadTooLarge", "Unauthorized", "UnsupportedMediaType",
]


class KraitError(Exception):
    """The root of every exception krait raises on purpose."""


class HTTPError(KraitError):
    """An error that the worker turns into an HTTP response with :attr:`status`.

    :param status: the HTTP status code (400-599 for errors; any 100-599 is accepted).
    :param message: an optional human-readable explanation. It is shown, HTML-escaped, on the
        error page; do not put secrets or internal details in it. ``None`` means the reason phrase
        alone.
    :param headers: extra ``(name, value)`` response headers, e.g. ``("Allow", "GET, HEAD")``
        for a 405 or ``("WWW-Authenticate", ...)`` for a 401.
    """

    #: The default status of this class (subclasses override it).
    default_status: int = 500

    def __init__(self, status: int | None = None, message: str | None = None, *,
                 headers: Iterable[tuple[str, str]] | None = None) -> None:
        if status is None:
            status = self.default_status
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"invalid HTTP status: {status!r}")
        self.status: int = status
        self.message: str | None = message
        self.headers: list[tuple[str, str]] = list(headers or ())
        super().__init__(status, message)

    @property
    def reason(self) -> str:
        """The standard reason phrase of :attr:`status` (``"Unknown"`` when there is none)."""
        from krait.response import REASONS

        return REASONS.get(self.status, "Unknown")

    def __str__(self) -> str:
        text = f"{self.status} {self.reason}"
        return f"{text}: {self.message}" if self.message else text

    def to_response(self) -> Response:
        """Build the error page sent for this error.

        :return: an :class:`krait.response.ErrorResponse` with :attr:`status`, :attr:`message`
            and :attr:`headers`.
        """
        from krait.response import ErrorResponse

        return ErrorResponse(self.status, self.message, headers=self.headers)


class _FixedStatusError(HTTPError):
    """An :class:`HTTPError` whose status is fixed by its class (the base of the named errors)."""

    def __init__(self, message: str | None = None, *,
                 headers: Iterable[tuple[str, str]] | None = None) -> None:
        super().__init__(self.default_status, message, headers=headers)
        self.args = (message,)  # what pickle passes back to __init__


class BadRequest(_FixedStatusError, ValueError):
    """400 Bad Request: the request (its body, form, JSON, ...) is malformed.

    :param message: an optional explanation shown on the error page.
    :param headers: extra ``(name, value)`` response headers.
    """

    default_status = 400


class Unauthorized(_FixedStatusError):
    """401 Unauthorized. Pass a ``WWW-Authenticate`` header in ``headers`` (RFC 9110 §15.5.2).

    :param message: an optional explanation shown on the error page.
    :param headers: extra ``(name, value)`` response headers.
    """

    default_status = 401


class Forbidden(_FixedStatusError):
    """403 Forbidden.

    :param message: an optional explanation shown on the error page.
    :param headers: extra ``(name, value)`` response headers.
    """

    default_status = 403


class NotFound(_FixedStatusError, LookupError):
    """404 Not Found.

    :param message: an optional explanation shown on the error page.
    :param headers: extra ``(name, value)`` response headers.
    """

    default_status = 404


class MethodNotAllowed(_FixedStatusError):
    """405 Method Not Allowed, with the ``Allow`` header RFC 9110 §15.5.6 requires.

    :param allowed: the methods the resource supports, e.g. ``["GET", "HEAD"]``.
    :param message: an optional explanation shown on the error page.
    :param headers: extra ``(name, value)`` response headers.
    """

    default_status = 405

    def __init__(self, allowed: Iterable[str] = (), message: str | None = None, *,
                 headers: Iterable[tuple[str, str]] | None = None) -> None:
        self.allowed: list[str] = list(allowed)
        all_headers = [("Allow", ", ".join(self.allowed))]
        all_headers.extend(headers or ())
        super().__init__(message, headers=all_headers)
        self.args = (self.allowed, message)


class PayloadTooLarge(_FixedStatusError):
    """413 Content Too Large: a body, form or upload exceeds a limit.

    :param message: an optional explanation shown on the error page.
    :param headers: extra ``(name, value)`` response headers.
    """

    default_status = 413


class UnsupportedMediaType(_FixedStatusError):
    """415 Unsupported Media Type.

    :param message: an optional explanation shown on the error page.
    :param headers: extra ``(name, value)`` response headers.
    """

    default_status = 415


class InternalServerError(_FixedStatusError):
    """500 Internal Server Error.

    :param message: an optional explanation shown on the error page.
    :param headers: extra ``(name, value)`` response headers.
    """

    default_status = 500


class ConfigError(KraitError, ValueError):
    """A site's configuration (``init.py``, routes, TLS, limits) is invalid.

    :param message: what is wrong.
    :param filename: the file that holds the mistake, when known.
    :param lineno: its 1-based line number in ``filename``, when known.
    """

    def __init__(self, message: str, filename: str | None = None,
                 lineno: int | None = None) -> None:
        self.message: str = message
        self.filename: str | None = filename
        self.lineno: int | None = lineno
        super().__init__(message, filename, lineno)

    def __str__(self) -> str:
        if self.filename is None:
            return self.message
        if self.lineno is None:
            return f"{self.filename}: {self.message}"
        return f"{self.filename}:{self.lineno}: {self.message}"
