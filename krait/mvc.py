"""krait.mvc: controllers and views.

A controller is an object whose attributes a view reads through ``ctrl``; its ``get_view()``
names the view file relative to the site root. Routes with ``ctrl_class`` create one per
request; a ``.py`` script can hand one over with :func:`set_init_ctrl`.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from krait._state import current, install

__all__ = [
    "CtrlBase", "SimpleCtrl", "ctrl_stack", "curr_ctrl", "import_ctrls_from", "init_ctrl",
    "pop_ctrl", "push_ctrl", "route_ctrl_decorator", "set_init_ctrl",
]

# Per context (properties installed at the end of this file; see krait._state):
#: The controller a ``.py`` script registered with :func:`set_init_ctrl` (reset per request).
init_ctrl: Any
#: The controller whose view is rendering; templates see it as ``ctrl``.
curr_ctrl: Any
#: Controllers saved by :func:`push_ctrl`.
ctrl_stack: list[Any]


class CtrlBase:
    """Base class of controllers: set attributes in ``__init__``, name the view in
    :meth:`get_view`."""

    def get_view(self) -> str:
        """The view's path relative to the site root, e.g. ``".view/page.html"``."""
        raise NotImplementedError(f"{type(self).__name__}.get_view() is not implemented")


class SimpleCtrl(CtrlBase):
    """A ready-made controller: ``view`` is the view path, ``members`` become attributes.

    :param view: the view's path relative to the site root.
    :param members: names and values the view reads as ``ctrl.<name>``.
    """

    def __init__(self, view: str, members: dict[str, Any]) -> None:
        #: The view's path relative to the site root (what :meth:`get_view` returns).
        self.view: str = view
        for name, value in members.items():
            setattr(self, name, value)

    def get_view(self) -> str:
        """The view given to the constructor (:attr:`view`)."""
        return self.view


def set_init_ctrl(ctrl: Any) -> None:
    """Render ``ctrl``'s view after the current ``.py`` script."""
    current().init_ctrl = ctrl


def push_ctrl(ctrl: Any) -> Any:
    """Make ``ctrl`` current, saving the current one; returns ``ctrl``."""
    state = current()
    if state.curr_ctrl is not None:
        state.ctrl_stack.append(state.curr_ctrl)
    state.curr_ctrl = ctrl
    return ctrl


def pop_ctrl() -> Any:
    """Restore the last saved controller and return it (``None`` when none was saved)."""
    state = current()
    stack = state.ctrl_stack
    state.curr_ctrl = stack.pop() if stack else None
    return state.curr_ctrl


T = TypeVar("T")


def route_ctrl_decorator(verb: str = "GET", url: str | None = None,
                         regex: str | None = None) -> Callable[[T], T]:
    """A class decorator that appends ``Route(verb, url, regex, ctrl_class=cls)`` to
    ``krait.config.routes``.

    :param verb: the route's verb.
    :param url: exact URL to match.
    :param regex: regular expression the whole path must match.
    """
    from krait import config

    def decorate(cls: T) -> T:
        if config.routes is None:
            config.routes = []
        config.routes.append(config.Route(verb, url=url, regex=regex, ctrl_class=cls))  # type: ignore[arg-type]
        return cls

    return decorate


def import_ctrls_from(package_name: str) -> None:
    """Import a package and every module in it, sub-packages included, so the routes their
    decorators declare exist. With ``__all__``, only the names listed there.

    :param package_name: a package on ``sys.path`` (the site's ``.py`` folder is on it).
    :raises ImportError: when the package itself cannot be imported.
    """
    package = importlib.import_module(package_name)
    names = getattr(package, "__all__", None)
    if names is not None:
        subs = [f"{package_name}.{name}" for name in names]
    else:
        path = getattr(package, "__path__", None)
        if path is None:
            return
        subs = sorted(f"{package_name}.{m.name}" for m in pkgutil.iter_modules(path))
    for sub in subs:
        try:
            module = importlib.import_module(sub)
        except ImportError as exc:
            if exc.name == sub:
                continue  # a listed name that is not a module
            raise
        if hasattr(module, "__path__") and os.path.isdir(module.__path__[0]):
            import_ctrls_from(sub)


install(sys.modules[__name__], {
    "init_ctrl": ("init_ctrl", "The controller set_init_ctrl registered (per request)."),
    "curr_ctrl": ("curr_ctrl", "The controller whose view is rendering."),
    "ctrl_stack": ("ctrl_stack", "Controllers saved by push_ctrl."),
})
