"""The one MIME map of krait: Python's built-in ``mimetypes`` table (not the machine's
``/etc/mime.types``, so a site answers the same everywhere), handed to the C core at start-up
and used by workers for dynamic pages."""

from __future__ import annotations

import mimetypes

_TABLE = mimetypes.MimeTypes(filenames=())

#: Behaviour §6: no entry for .py and .pyml (they fall back to application/octet-stream).
_NO_TYPE = {".py", ".pyml"}

#: Types that are text even though they are not text/* (they get ``charset=utf-8``).
_TEXT_LIKE = {"application/javascript", "application/json", "application/xml", "image/svg+xml"}


def table() -> dict[str, str]:
    """Every extension (with its dot) → MIME type, as the core gets it."""
    merged = dict(_TABLE.types_map[False])
    merged.update(_TABLE.types_map[True])
    for ext in _NO_TYPE:
        merged.pop(ext, None)
    return merged


_MAP = table()


def type_for_extension(ext: str) -> str | None:
    """The MIME type of an extension (``"json"`` or ``".json"``, any case), or None."""
    ext = ext.lower()
    if not ext.startswith("."):
        ext = "." + ext
    return _MAP.get(ext)


def with_charset(mime: str) -> str:
    """``mime`` plus ``; charset=utf-8`` for text types (RFC 9110 §8.3.1)."""
    if mime.startswith("text/") or mime in _TEXT_LIKE:
        return mime + "; charset=utf-8"
    return mime
