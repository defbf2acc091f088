"""krait: a web server for Python sites, with a C networking core.

The module globals below are the per-request API of the original Krait. They are reset by the
worker before every dynamic request (a worker runs one request at a time, so they are safe).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from krait._globals import get_full_path, set_content_type  # noqa: E402
from krait.request import MultipartFormData, Request  # noqa: E402
from krait.response import (  # noqa: E402
    ErrorResponse,
    FileResponse,
    JsonResponse,
    Response,
    ResponseBadRequest,
    ResponseNotFound,
    ResponseRedirect,
)
from krait.sessions import (  # noqa: E402
    check_csrf,
    csrf_input,
    csrf_token,
    flash,
    get_flashed_messages,
    session,
)

#: The site root exactly as given on the command line (set by the server at start-up).
site_root: str = ""
#: The current request (a :class:`Request`), set before each dynamic request.
request: Request | None = None
#: Set to a :class:`Response` to replace the generated response.
response: Response | None = None
#: ``(name, value)`` pairs added to the response, generated or custom.
extra_headers: list[tuple[str, str]] = []
#: Named groups of the matching regex route (``{}`` for other routes).
url_params: dict[str, str] = {}

__all__ = [
    "ErrorResponse", "FileResponse", "JsonResponse", "MultipartFormData", "Request", "Response",
    "ResponseBadRequest", "ResponseNotFound", "ResponseRedirect", "check_csrf", "config",
    "cookie", "csrf_input", "csrf_token", "extra_headers", "flash", "get_flashed_messages",
    "get_full_path", "mvc", "request", "response", "session", "set_content_type", "site_root",
    "url_params", "websockets",
]

_content_type: Any = None
# The current request's session once loaded (krait.sessions.current() reads it; the worker
# resets it with the other per-request state). ``krait.session`` itself never changes: it is
# a view of this.
_session: Any = None

from krait import config, cookie, mvc, websockets  # noqa: E402,F401  (sites use krait.config etc.)
