"""Tests for krait._globals: get_full_path and set_content_type."""

from __future__ import annotations

import os
import pathlib

import pytest

import krait
from krait._globals import _mime_for_extension, get_full_path, set_content_type


@pytest.fixture(autouse=True)
def fresh_globals(monkeypatch):
    monkeypatch.setattr(krait, "site_root", "/srv/site")
    monkeypatch.setattr(krait, "_content_type", None)


# --- get_full_path --------------------------------------------------------------------------

@pytest.mark.parametrize("path, expected", [
    ("index.html", "/srv/site/index.html"),
    ("views/page.pyml", "/srv/site/views/page.pyml"),
    ("a/./b//c/", "/srv/site/a/b/c"),
    ("", "/srv/site"),
    (".", "/srv/site"),
    (pathlib.PurePosixPath("x/y.py"), "/srv/site/x/y.py"),
])
def test_get_full_path(path, expected):
    assert get_full_path(path) == expected


@pytest.mark.parametrize("path", [
    "/etc/passwd",
    "//etc/passwd",
    "..",
    "../x",
    "a/../../x",
    "a/b/../../../site/x",                           # leaves the root, even if it comes back
    "./../x",
    "a/\0/b",
    # The path rule (krait.paths): no segment starting with "." (even one that comes back),
    # no editor backups.
    "a/../b",
    "a/b/../../c",
    "..a/b",
    "a/..",
    ".private/db",
    "a/b.txt~",
])
def test_get_full_path_refuses_escapes(path):
    with pytest.raises(ValueError):
        get_full_path(path)


def test_get_full_path_type_errors():
    with pytest.raises(TypeError):
        get_full_path(b"x")
    with pytest.raises(TypeError):
        get_full_path(None)


def test_get_full_path_with_relative_and_empty_roots(monkeypatch):
    monkeypatch.setattr(krait, "site_root", "site")
    assert get_full_path("a/b") == os.path.join("site", "a", "b")
    assert get_full_path("") == "site"
    monkeypatch.setattr(krait, "site_root", "")
    assert get_full_path("a/b") == os.path.join("a", "b")
    assert get_full_path("") == "."
    with pytest.raises(ValueError):
        get_full_path("../b")


def test_get_full_path_with_trailing_slash_root(monkeypatch):
    monkeypatch.setattr(krait, "site_root", "/srv/site/")
    assert get_full_path("x") == "/srv/site/x"


def test_exported_from_krait():
    assert krait.get_full_path is get_full_path
    assert krait.set_content_type is set_content_type


# --- set_content_type -----------------------------------------------------------------------

def test_raw_is_verbatim():
    set_content_type(raw="application/json; charset=UTF-8")
    assert krait._content_type == "application/json; charset=UTF-8"
    set_content_type("text/x-custom")
    assert krait._content_type == "text/x-custom"


@pytest.mark.parametrize("ext, expected", [
    ("html", "text/html"),
    (".html", "text/html"),
    ("HTML", "text/html"),
    ("htm", "text/html"),
    ("json", "application/json"),
    ("css", "text/css"),
    ("js", "application/javascript"),
    ("txt", "text/plain"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("jpg", "image/jpeg"),
    ("pdf", "application/pdf"),
    ("py", "application/octet-stream"),               # no .py in the original's mime.types
    ("pyml", "application/octet-stream"),
    ("no-such-extension", "application/octet-stream"),
    ("", "application/octet-stream"),
])
def test_ext(ext, expected):
    set_content_type(ext=ext)
    # Text types get the charset (issue 15): a UTF-8 page must not be read as windows-1252.
    text = expected.startswith("text/") or expected in (
        "application/json", "application/javascript", "image/svg+xml")
    assert krait._content_type == (expected + "; charset=utf-8" if text else expected)
    assert _mime_for_extension(ext) == expected


def test_neither_resets_to_automatic():
    set_content_type(ext="json")
    set_content_type()
    assert krait._content_type is None


@pytest.mark.parametrize("kwargs, error", [
    ({"raw": "text/html", "ext": "html"}, ValueError),
    ({"raw": ""}, ValueError),
    ({"raw": "   "}, ValueError),
    ({"raw": "text/html\r\nSet-Cookie: a=b"}, ValueError),
    ({"raw": "text/html\n"}, ValueError),
    ({"raw": "text/\0html"}, ValueError),
    ({"raw": b"text/html"}, TypeError),
    ({"ext": 5}, TypeError),
])
def test_set_content_type_errors(kwargs, error):
    set_content_type(ext="json")
    with pytest.raises(error):
        set_content_type(**kwargs)
    assert krait._content_type == "application/json; charset=utf-8"  # unchanged after an error
