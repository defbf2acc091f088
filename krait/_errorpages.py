"""The default error pages (HTML and JSON) and the choice between them.

The same page is used for an :class:`krait.errors.HTTPError`, a script's uncaught exception and
an :class:`krait.response.ErrorResponse`, unless the site names its own page for the status in
``krait.config.error_pages``.
"""

from __future__ import annotations

import html
import json

#: What the default page says under its heading when the error carries no message.
EXPLANATIONS: dict[int, str] = {
    400: "The request could not be understood.",
    401: "This page needs you to sign in.",
    403: "You may not see this page.",
    404: "There is no page at this address.",
    405: "This address does not take that kind of request.",
    408: "The request took too long to arrive.",
    409: "The request conflicts with the current state of the page.",
    410: "This page is gone.",
    413: "The request is larger than this server accepts.",
    414: "The address is longer than this server accepts.",
    415: "The server does not take that kind of content here.",
    429: "Too many requests: wait a moment, then try again.",
    431: "The request's headers are larger than this server accepts.",
    500: "Something went wrong on the server. The error has been logged.",
    501: "The server does not support this request.",
    502: "The server could not complete the request.",
    503: "The server is busy: try again in a moment.",
    504: "The server took too long to answer.",
}

_STYLE = ("body{margin:0;background:#f6f7f9;color:#1d2330;"
          "font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}"
          "main{max-width:36rem;margin:12vh auto;padding:0 1.5rem}"
          "h1{font-size:1.6rem;margin:0 0 .5rem}p{margin:.5rem 0;color:#4a5163}")


def page_html(status: int, reason: str, message: str | None = None) -> str:
    """A small, self-contained HTML page: ``<title>`` and ``<h1>`` say ``"404 Not Found"``,
    then ``message`` (HTML-escaped) or a sentence for the status."""
    title = f"{status} {reason}"
    text = message if message else EXPLANATIONS.get(status, "")
    para = f"<p>{html.escape(text)}</p>" if text else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title><style>{_STYLE}</style></head>"
            f"<body><main><h1>{title}</h1>{para}</main></body></html>")


def json_body(status: int, reason: str, message: str | None = None) -> bytes:
    """``{"status": 404, "reason": "Not Found", "message": null}``, UTF-8."""
    return json.dumps({"status": status, "reason": reason, "message": message},
                      ensure_ascii=False).encode("utf-8")


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 0.0
    return 1.0


def wants_json(accept: str | None) -> bool:
    """True when an ``Accept`` header prefers JSON to HTML (RFC 9110 §12.5.1): a JSON type
    (``application/json``, ``application/*+json``) with a quality above zero and at least that
    of every HTML type. ``*/*`` alone, and a browser's usual header, mean HTML."""
    if not accept:
        return False
    best_json = best_html = 0.0
    for item in accept.split(","):
        mime, *params = item.split(";")
        mime = mime.strip().lower()
        q = _quality(params)
        if mime == "application/json" or (mime.startswith("application/")
                                          and mime.endswith("+json")):
            best_json = max(best_json, q)
        elif mime in ("text/html", "application/xhtml+xml", "text/*"):
            best_html = max(best_html, q)
    return best_json > 0 and best_json >= best_html


class PageError:
    """What a site's error page (``krait.config.error_pages``) sees as ``error``.

    :param status: the status code, e.g. ``404``.
    :param reason: its reason phrase, e.g. ``"Not Found"``.
    :param message: the explanation the error carried (``""`` when none); plain text, which
        ``@error.message@`` escapes.
    """

    __slots__ = ("message", "reason", "status")

    def __init__(self, status: int, reason: str, message: str | None) -> None:
        self.status = status
        self.reason = reason
        self.message = message or ""

    def __repr__(self) -> str:
        return f"PageError({self.status}, {self.reason!r}, {self.message!r})"
