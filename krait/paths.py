"""The one rule for turning a path from a site into a file under the site root.

Every way a path reaches a file in Python goes through :func:`site_file`: controller views,
``@import``, :class:`krait.FileResponse` with a relative path, :func:`krait.get_full_path`, and
route targets whose ``{name}`` was filled from the URL. The rule is the one the core applies to
the URLs it serves:

* the path is relative to the site root (a leading ``/`` is ignored); NUL bytes are refused;
* no segment may start with ``.``: not ``..``, not ``.private``, not ``.git``. The only
  exception is the start of the path when it names one of ``krait.config.view_dirs``
  (``.view`` by default), so controllers and templates can read their views there;
* no segment may look like an editor's backup or swap file (``krait.config.never_serve``:
  ``name~``, ``#name#``, ``*.swp``, ``*.bak``, ``*.orig`` ...);
* symbolic links may be followed only when the file they lead to is still inside the root
  and its path there obeys the same two rules (as the core's ``RESOLVE_BENEATH`` open does).

A path that breaks the rule raises :class:`PathRefused`, which is both a ``ValueError`` and a
404 :class:`krait.errors.NotFound`: uncaught, the visitor gets the same 404 the core gives.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from krait.errors import NotFound

if TYPE_CHECKING:
    from krait.response import Response

__all__ = ["DEFAULT_NEVER_SERVE", "PathRefused", "is_refused_name", "site_file"]

#: Names never served nor read, whatever their directory (shell-style patterns, compared
#: without regard to case): editors' backups, swap files and merge leftovers.
DEFAULT_NEVER_SERVE = ("*~", "#*#", "*.swp", "*.swo", "*.swx", "*.bak", "*.orig", "*.rej")


class PathRefused(NotFound, ValueError):
    """A path from the site breaks the path rule (hidden segment, ``..``, outside the root,
    a backup file, NUL). Answers 404 when a page does not catch it; the page does not show
    the message (it names the path), the error log does."""

    def to_response(self) -> Response:
        """A plain 404 page, without the message."""
        from krait.response import ErrorResponse

        return ErrorResponse(404)


def is_refused_name(name: str, never_serve: Iterable[str] | None = None) -> bool:
    """True when one path segment matches a ``never_serve`` pattern.

    :param name: a single file or directory name, e.g. ``"index.html~"``.
    :param never_serve: the patterns; ``None`` reads ``krait.config.never_serve``.
    """
    if never_serve is None:
        never_serve = _config_list("never_serve", DEFAULT_NEVER_SERVE)
    lower = name.lower()
    return any(fnmatch.fnmatchcase(lower, pattern.lower()) for pattern in never_serve)


def _config_list(name: str, default: Iterable[str]) -> Iterable[str]:
    from krait import config

    value = getattr(config, name, None)
    return default if value is None else value


def _split(text: str) -> list[str]:
    return [s for s in text.replace(os.sep, "/").split("/") if s and s != "."]


def _check(segments: list[str], shown: str, view_dirs: list[list[str]],
           never_serve: Iterable[str]) -> None:
    """Apply the hidden and backup rules to root-relative segments."""
    start = 0
    for allowed in view_dirs:
        if allowed and segments[:len(allowed)] == allowed and len(segments) > len(allowed):
            start = len(allowed)
            break
    for i, segment in enumerate(segments):
        if segment.startswith(".") and i >= start:
            raise PathRefused(f"path {shown!r} has a hidden segment {segment!r}")
        if is_refused_name(segment, never_serve):
            raise PathRefused(f"path {shown!r} names a backup or swap file ({segment!r})")


def site_file(root: str, path: str | os.PathLike[str], *, views: bool = False,
              view_dirs: Iterable[str] | None = None,
              never_serve: Iterable[str] | None = None) -> str:
    """The absolute filename of ``path`` under ``root``, if the path rule allows it.

    The file need not exist (a missing file is for the caller to report), but every symbolic
    link on the way that does exist is resolved and the result checked again.

    :param root: the site root.
    :param path: relative to the root; a leading ``/`` is allowed and means the root.
    :param views: allow the path to start with one of the view directories (controller views,
        ``@import``, :func:`krait.get_full_path`).
    :param view_dirs: those directories; ``None`` reads ``krait.config.view_dirs``.
    :param never_serve: refused name patterns; ``None`` reads ``krait.config.never_serve``.
    :returns: the resolved filename (symbolic links followed), inside the root.
    :raises PathRefused: when the path breaks the rule.
    :raises TypeError: when ``path`` is not a ``str`` or an ``os.PathLike``.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not isinstance(text, str):
        raise TypeError(f"path must be a str, not {type(text).__name__}")
    if "\0" in text:
        raise PathRefused(f"path contains a NUL byte: {text!r}")
    if never_serve is None:
        never_serve = tuple(_config_list("never_serve", DEFAULT_NEVER_SERVE))
    allowed: list[list[str]] = []
    if views:
        allowed = [_split(d) for d in (_config_list("view_dirs", (".view",))
                                       if view_dirs is None else view_dirs)]
    segments = _split(text)
    _check(segments, text, allowed, never_serve)
    root_abs = os.path.abspath(root)
    full = os.path.join(root_abs, *segments)
    real_root = os.path.realpath(root_abs)
    real = os.path.realpath(full)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise PathRefused(f"path {text!r} leads outside the site root")
    if real != full:
        # A symbolic link on the way: where it leads must obey the rule as well.
        _check(_split(os.path.relpath(real, real_root)), text, allowed, never_serve)
    return real
