"""The module-level helpers of the ``krait`` package: ``get_full_path`` and ``set_content_type``.

``krait`` itself is imported inside the functions: ``krait/__init__.py`` imports this module while
it is still being initialised.
"""

from __future__ import annotations

import os

__all__ = ["get_full_path", "set_content_type"]

# Where Python's table disagrees with the Apache mime.types the original used:
# None means "no entry there", i.e. application/octet-stream.
_MIME_OVERRIDES: dict[str, str | None] = {
    ".js": "application/javascript",
    ".mjs": "application/javascript",
    ".py": None,
    ".pyml": None,
}
_DEFAULT_MIME = "application/octet-stream"


def _mime_for_extension(ext: str) -> str:
    """The MIME type for a file extension, as ``set_content_type(ext=...)`` gives it.

    :param ext: the extension with or without the leading dot (``"json"``, ``".json"``),
        compared case-insensitively.
    :return: the MIME type, or ``application/octet-stream`` when it is unknown.
    """
    ext = ext.lower()
    if not ext.startswith("."):
        ext = "." + ext
    from krait._mime import type_for_extension

    if ext in _MIME_OVERRIDES:
        return _MIME_OVERRIDES[ext] or _DEFAULT_MIME
    return type_for_extension(ext) or _DEFAULT_MIME


def get_full_path(path: str | os.PathLike[str]) -> str:
    """Join ``path`` to the site root, refusing what the server itself would never serve.

    The path obeys the same rule as URLs, controller views and ``@import`` (see
    :mod:`krait.paths`): no ``..``, no segment starting with ``.`` except a leading view
    directory (``krait.config.view_dirs``, ``.view`` by default), no editor backup
    (``krait.config.never_serve``), and no symbolic link leading out of the root or to such a
    path. Absolute paths are refused: ``get_full_path("/etc/passwd")`` would otherwise be
    ``/etc/passwd``. For the site's private data (``.private/site.db``), join the root
    yourself: ``os.path.join(krait.site_root, ".private", "site.db")``.

    :param path: a path relative to the site root, e.g. ``"views/index.pyml"``.
    :return: the path joined to ``krait.site_root`` and normalised; the root itself for ``""``
        or ``"."``.
    :raises ValueError: (:class:`krait.paths.PathRefused`, a 404 when uncaught) when ``path``
        is absolute, contains a NUL byte, or breaks the rule above.
    :raises TypeError: when ``path`` is not a ``str`` (or an ``os.PathLike`` of one).
    """
    import krait
    from krait.paths import PathRefused, site_file

    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"path must be a str, not {type(path).__name__}")
    if "\0" in path:
        raise PathRefused("path contains a NUL byte")
    if os.path.isabs(path):
        raise PathRefused(f"absolute paths are not allowed: {path!r}")
    root = krait.site_root
    site_file(root or os.curdir, path, views=True)
    normal = os.path.normpath(path)
    if normal == os.curdir:
        return root or os.curdir
    return os.path.join(root, normal)


def set_content_type(raw: str | None = None, ext: str | None = None) -> None:
    """Choose the ``Content-Type`` of the current dynamic response.

    ``set_content_type(raw="application/json; charset=utf-8")`` sends that exact value;
    ``set_content_type(ext="html")`` sends the MIME type of that extension, with
    ``; charset=utf-8`` for text types (``text/html; charset=utf-8``; unknown extensions give
    ``application/octet-stream``); ``set_content_type()`` goes back to the automatic choice:
    the extension of the file (or of the URL, for a controller's route), and
    ``text/html; charset=utf-8`` for a ``.py`` script or a name without an extension.
    Only honoured for dynamic responses; a custom ``krait.response`` with its own
    ``Content-Type`` header wins.

    :param raw: the exact header value, parameters included.
    :param ext: a file extension, with or without the dot (``"json"`` or ``".json"``).
    :raises ValueError: when both are given, or ``raw`` is empty or contains CR, LF or NUL.
    """
    from krait._state import current

    if raw is not None and ext is not None:
        raise ValueError("give raw or ext, not both")
    if raw is not None:
        if not isinstance(raw, str):
            raise TypeError(f"raw must be a str, not {type(raw).__name__}")
        if not raw.strip() or "\r" in raw or "\n" in raw or "\0" in raw:
            raise ValueError(f"invalid content type: {raw!r}")
        current().content_type = raw
    elif ext is not None:
        if not isinstance(ext, str):
            raise TypeError(f"ext must be a str, not {type(ext).__name__}")
        from krait._mime import with_charset

        current().content_type = with_charset(_mime_for_extension(ext))
    else:
        current().content_type = None
