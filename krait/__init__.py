"""krait: a web server for Python sites, with a C networking core.

``krait.request``, ``krait.response``, ``krait.extra_headers`` and ``krait.url_params`` are the
per-request API of the original Krait. They look like module globals, but each context has its
own: the worker's main thread reads the HTTP request it is running, a WebSocket controller's
thread the handshake of its own connection (see :mod:`krait._state`). A thread the site starts
itself sees no request; run it in ``contextvars.copy_context()`` to give it the current one.
"""

from __future__ import annotations

import sys
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
# Per context (properties installed at the end of this file; see krait._state):
#: The current request (a :class:`Request`), set before each dynamic request.
request: Request | None
#: Set to a :class:`Response` to replace the generated response.
response: Response | None
#: ``(name, value)`` pairs added to the response, generated or custom.
extra_headers: list[tuple[str, str]]
#: Named groups of the matching regex route (``{}`` for other routes).
url_params: dict[str, str]

__all__ = [
    "ErrorResponse", "FileResponse", "JsonResponse", "MultipartFormData", "Request", "Response",
    "ResponseBadRequest", "ResponseNotFound", "ResponseRedirect", "check_csrf", "config",
    "cookie", "csrf_input", "csrf_token", "extra_headers", "flash", "get_flashed_messages",
    "get_full_path", "mvc", "request", "response", "session", "set_content_type", "site_root",
    "url_params", "websockets",
]

_content_type: Any  # the set_content_type override (per context)

from krait import _state, config, cookie, mvc, websockets  # noqa: E402,F401  (krait.config etc.)

# Last: importing the submodules krait.request and krait.response set those names to modules.
_state.install(sys.modules[__name__], {
    "request": ("request", "The current request (a krait.Request), or None."),
    "response": ("response", "Set to a krait.Response to replace the generated response."),
    "extra_headers": ("extra_headers", "(name, value) pairs added to the response."),
    "url_params": ("url_params", "Named groups of the matching regex route."),
    "_content_type": ("content_type", "The set_content_type override, or None."),
})
