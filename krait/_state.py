"""Per-request state: what ``krait.request``, ``krait.response``, ``krait.extra_headers``,
``krait.url_params``, the cookie functions, ``krait.mvc``'s controller stack and
``krait.websockets.request``/``response`` read and write.

All of it lives in one :class:`RequestState` object, and the current one is held by a single
:class:`contextvars.ContextVar`. So each thread (and each asyncio task) reads its own: a
worker's main thread sees the HTTP request it is running, a WebSocket controller's thread the
handshake request of its own connection, whatever HTTP requests the main thread runs
meanwhile (architecture invariant 8). The module attributes keep their names: the modules
``krait``, ``krait.mvc`` and ``krait.websockets`` get a subclass of :class:`types.ModuleType`
whose properties read and write the current state (:func:`install`), so ``krait.request``,
``krait.response = ...`` and ``from krait import request`` work as they always did.

The worker makes one :class:`RequestState` per request and sets it with :func:`activate` (one
``ContextVar.set``); it then uses the object directly, never the module properties.

Extensions (sessions, CSRF tokens, flash messages) keep their per-request objects in
:attr:`RequestState.extras` under a key of their own (``"krait.session"``), through an accessor
of their module: they are then per context as well, and a WebSocket controller's thread starts
with the extras of its handshake.
"""

from __future__ import annotations

import contextvars
import operator
import types
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["RequestState", "activate", "current", "install", "run_with"]

T = TypeVar("T")


class RequestState:
    """Everything that belongs to one request (or one WebSocket controller's context).

    :param request: the :class:`krait.Request` (``krait.request``).
    :param url_params: named groups of the regex route (``krait.url_params``).
    :param ws_request: ``krait.websockets.request`` (a handshake) or ``None``.
    :param request_id: the request's id (``X-Request-ID``), or ``None``.
    """

    __slots__ = ("request", "response", "extra_headers", "url_params", "content_type",
                 "init_ctrl", "curr_ctrl", "ctrl_stack", "ws_request", "ws_response",
                 "cookies", "request_id", "extras")

    def __init__(self, request: Any = None, url_params: dict[str, str] | None = None,
                 ws_request: Any = None, request_id: str | None = None) -> None:
        self.request = request
        #: ``krait.response``: replaces the generated response when set.
        self.response: Any = None
        #: ``krait.extra_headers``.
        self.extra_headers: list[tuple[str, str]] = []
        self.url_params: dict[str, str] = {} if url_params is None else url_params
        #: The ``set_content_type`` override, or ``None`` (automatic).
        self.content_type: str | None = None
        self.init_ctrl: Any = None
        self.curr_ctrl: Any = None
        self.ctrl_stack: list[Any] = []
        self.ws_request = ws_request
        self.ws_response: Any = None
        #: ``(request, cookies)``: the cookies ``krait.cookie.get_cookies`` parsed, and from
        #: which request object (site code may replace ``krait.request``).
        self.cookies: tuple[Any, list[Any]] | None = None
        self.request_id = request_id
        #: Per-request objects of extensions, by a key of their own (``"krait.session"``).
        self.extras: dict[str, Any] = {}

    def for_websocket(self) -> RequestState:
        """The state a WebSocket controller runs with: the handshake's request, URL
        parameters, ``krait.websockets.request``/``response``, request id, cookies and extras
        (a shallow copy: the same session object), with a fresh ``krait.response`` and
        ``krait.extra_headers`` (the handshake's answer has gone; what a controller sets
        there is never sent)."""
        other = RequestState(self.request, dict(self.url_params), self.ws_request,
                             self.request_id)
        other.ws_response = self.ws_response
        other.cookies = self.cookies
        other.extras = dict(self.extras)
        return other

    def __repr__(self) -> str:
        return f"<RequestState request={self.request!r} id={self.request_id!r}>"


_var: contextvars.ContextVar[RequestState] = contextvars.ContextVar("krait_request_state")
_get = _var.get


def current() -> RequestState:
    """The state of the code that runs (created, empty, on first use in a new context: a
    thread the site starts itself sees no request, as outside any request)."""
    try:
        return _get()
    except LookupError:
        state = RequestState()
        _var.set(state)
        return state


def activate(state: RequestState) -> contextvars.Token[RequestState]:
    """Make ``state`` current in this context; returns the token that :func:`ContextVar.reset
    <contextvars.ContextVar.reset>` takes to go back."""
    return _var.set(state)


def reset(token: contextvars.Token[RequestState]) -> None:
    """Undo an :func:`activate`."""
    _var.reset(token)


def run_with(state: RequestState, fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(*args)`` with ``state`` current, then restore the previous state."""
    token = _var.set(state)
    try:
        return fn(*args)
    finally:
        _var.reset(token)


def _property(slot: str, doc: str) -> property:
    read = operator.attrgetter(slot)

    def fget(_module: Any) -> Any:
        try:
            return read(_get())
        except LookupError:
            return read(current())

    def fset(_module: Any, value: Any) -> None:
        try:
            state = _get()
        except LookupError:
            state = current()
        setattr(state, slot, value)

    return property(fget, fset, None, doc)


def install(module: types.ModuleType, names: dict[str, tuple[str, str]]) -> None:
    """Make ``module.<name>`` read and write the current state's ``<slot>`` for each
    ``name: (slot, doc)``: the module's class becomes a subclass of ModuleType with one
    property per name (and the names leave its ``__dict__``)."""
    attrs: dict[str, Any] = {name: _property(slot, doc) for name, (slot, doc) in names.items()}
    attrs["__slots__"] = ()
    cls = type(f"{module.__name__}.module", (types.ModuleType,), attrs)
    for name in names:
        module.__dict__.pop(name, None)
    module.__class__ = cls
