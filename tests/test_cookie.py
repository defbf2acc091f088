"""Tests for krait.cookie (behaviour §11 with the §16.6 fixes)."""

from __future__ import annotations

import datetime

import pytest

import krait
from krait import cookie
from krait.cookie import (
    Cookie,
    CookieAttribute,
    CookieDomainAttribute,
    CookieExpiresAttribute,
    CookieHttpOnlyAttribute,
    CookieMaxAgeAttribute,
    CookiePathAttribute,
    CookieSameSiteAttribute,
    CookieSecureAttribute,
)
from krait.request import Request


@pytest.fixture(autouse=True)
def request_globals(monkeypatch):
    """Each test starts with no request and empty extra headers, as the worker leaves them."""
    monkeypatch.setattr(krait, "request", None)
    monkeypatch.setattr(krait, "extra_headers", [])


def with_cookie_header(*values: str) -> Request:
    req = Request("GET", "/", "", "HTTP/1.1", [("Cookie", v) for v in values], b"")
    krait.request = req
    return req


# --- building Set-Cookie strings ------------------------------------------------------------

def test_spec_example():
    c = Cookie("count", "3")
    c.set_max_age(3600)
    c.set_path("/")
    c.set_http_only(True)
    assert str(c) == "count=3; max-age=3600; path=/; HttpOnly"


def test_plain_cookie_and_empty_value():
    assert str(Cookie("a", "b")) == "a=b"
    assert str(Cookie("a", "")) == "a="


def test_every_attribute_in_insertion_order():
    c = Cookie("sid", "abc123")
    c.set_domain("example.com")
    c.set_path("/app")
    c.set_expires(datetime.datetime(2030, 1, 2, 3, 4, 5))
    c.set_max_age(0)
    c.set_secure(True)
    c.set_http_only(True)
    c.set_same_site("lax")
    assert str(c) == ("sid=abc123; domain=example.com; path=/app; "
                      "expires=Wed, 02 Jan 2030 03:04:05 GMT; max-age=0; Secure; HttpOnly; "
                      "SameSite=Lax")


def test_setting_again_replaces_and_moves_to_the_end():
    c = Cookie("a", "1")
    c.set_path("/")
    c.set_max_age(10)
    c.set_path("/x")
    assert str(c) == "a=1; max-age=10; path=/x"
    c.add_attribute(CookieAttribute("PATH", "/y"))
    c.set_path("/z")                                   # removes "PATH" too (case-insensitive)
    assert str(c) == "a=1; max-age=10; path=/z"


def test_none_and_false_remove():
    c = Cookie("a", "1")
    c.set_expires(datetime.datetime(2030, 1, 1))
    c.set_max_age(5)
    c.set_path("/")
    c.set_domain("d.example")
    c.set_secure(True)
    c.set_http_only(True)
    c.set_same_site("Strict")
    c.set_expires(None)
    c.set_max_age(None)
    c.set_path(None)
    c.set_domain(None)
    c.set_secure(False)
    c.set_http_only(None)
    c.set_same_site(None)
    assert str(c) == "a=1"
    assert c.attributes == []


def test_add_get_remove_attribute():
    c = Cookie("a", "1", [CookiePathAttribute("/")])
    c.add_attribute(CookieAttribute("Partitioned"))
    c.add_attribute(CookieAttribute("priority", "High"))
    assert str(c) == "a=1; path=/; Partitioned; priority=High"
    assert c.get_attribute("PRIORITY") == CookieAttribute("priority", "High")
    assert c.get_attribute("missing") is None
    c.remove_attribute("partitioned")
    assert str(c) == "a=1; path=/; priority=High"
    with pytest.raises(TypeError):
        c.add_attribute("path=/")


@pytest.mark.parametrize("moment, text", [
    (datetime.datetime(2030, 1, 2, 3, 4, 5), "Wed, 02 Jan 2030 03:04:05 GMT"),
    (datetime.datetime(1994, 11, 6, 8, 49, 37), "Sun, 06 Nov 1994 08:49:37 GMT"),  # RFC 9110
    (datetime.datetime(2024, 12, 31, 23, 59, 59, 999999), "Tue, 31 Dec 2024 23:59:59 GMT"),
    (datetime.datetime(2030, 1, 2, 5, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
     "Wed, 02 Jan 2030 03:04:05 GMT"),
    (datetime.datetime(2030, 1, 1, 1, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=5))),
     "Mon, 31 Dec 2029 20:00:00 GMT"),
    (datetime.datetime(2030, 6, 9, 0, 0, tzinfo=datetime.UTC), "Sun, 09 Jun 2030 00:00:00 GMT"),
])
def test_expires_is_imf_fixdate(moment, text):
    assert str(CookieExpiresAttribute(moment)) == "expires=" + text


def test_attribute_classes():
    assert str(CookieMaxAgeAttribute(3600)) == "max-age=3600"
    assert str(CookieMaxAgeAttribute(-1)) == "max-age=-1"
    assert str(CookiePathAttribute("/")) == "path=/"
    assert str(CookieDomainAttribute("example.com")) == "domain=example.com"
    assert str(CookieSecureAttribute()) == "Secure"
    assert str(CookieHttpOnlyAttribute()) == "HttpOnly"
    assert str(CookieSameSiteAttribute("NONE")) == "SameSite=None"
    assert str(CookieAttribute("flag")) == "flag"
    assert repr(CookieAttribute("path", "/")) == "CookieAttribute('path', '/')"
    assert repr(CookieSecureAttribute()) == "CookieSecureAttribute('Secure', None)"
    assert CookieAttribute("a", "b") == CookieAttribute("a", "b")
    assert CookieAttribute("a", "b") != CookieAttribute("a", "c")


@pytest.mark.parametrize("make", [
    lambda: CookieMaxAgeAttribute("10"),
    lambda: CookieMaxAgeAttribute(1.5),
    lambda: CookieMaxAgeAttribute(True),
    lambda: CookieExpiresAttribute("tomorrow"),
    lambda: CookieExpiresAttribute(datetime.date(2030, 1, 1)),
])
def test_attribute_type_errors(make):
    with pytest.raises(TypeError):
        make()


@pytest.mark.parametrize("make", [
    lambda: CookieSameSiteAttribute("sometimes"),
    lambda: Cookie("a", "1").set_same_site(""),
    lambda: CookiePathAttribute("/a;b"),
    lambda: CookiePathAttribute("/a\r\nX: y"),
    lambda: CookieDomainAttribute("ex\x00ample.com"),
    lambda: CookieAttribute("bad name", "v"),
    lambda: CookieAttribute("", "v"),
    lambda: CookieAttribute("x", "a;b"),
])
def test_attribute_value_errors(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("name", [
    "", "a b", "a;b", "a=b", "a,b", "a\tb", "a\x00", "a\x7f", "(a)", "a/b", "a@b", 'a"b',
    "é", "a:b", "a?b", "[a]", "{a}", "a\\b",
])
def test_bad_names(name):
    with pytest.raises(ValueError):
        Cookie(name, "v")


@pytest.mark.parametrize("name", ["a", "session_id", "__Host-sid", "A1!#$%&'*+-.^_`|~"])
def test_good_names(name):
    assert str(Cookie(name, "v")) == f"{name}=v"


@pytest.mark.parametrize("value", [
    "a;b", "a,b", "a b", "a\tb", "a\r\nb", 'a"b', "a\\b", "\x00", "\x7f", "é", '"', '"a"b"',
    '"a;b"', '"a\\b"', '"é"', '"a\x01"',
])
def test_bad_values(value):
    with pytest.raises(ValueError):
        Cookie("a", value)


@pytest.mark.parametrize("value", [
    "", "abc", "a=b", "x/y:z?q", "!#$%&'()*+-./:<=>?@[]^_`{|}~", "JTI1", '""', '"plain"',
    '"with space"', '"a,b"',
])
def test_good_values(value):
    assert str(Cookie("a", value)) == f"a={value}"


def test_type_errors_and_validated_setters():
    with pytest.raises(TypeError):
        Cookie("a", 3)
    with pytest.raises(TypeError):
        Cookie(None, "3")
    c = Cookie("a", "1")
    c.value = "2"
    c.name = "b"
    assert str(c) == "b=2"
    with pytest.raises(ValueError):
        c.value = "x;y"
    with pytest.raises(ValueError):
        c.name = "x y"
    assert str(c) == "b=2"


def test_cookie_equality_and_repr():
    path = [CookiePathAttribute("/")]
    assert Cookie("a", "1", path) == Cookie("a", "1", [CookiePathAttribute("/")])
    assert Cookie("a", "1") != Cookie("a", "2")
    assert repr(Cookie("a", "1")) == "Cookie('a', '1', [])"


def test_attributes_list_is_copied():
    attributes = [CookiePathAttribute("/")]
    c = Cookie("a", "1", attributes)
    c.set_max_age(1)
    assert attributes == [CookiePathAttribute("/")]


# --- reading request cookies ----------------------------------------------------------------

def test_no_request_means_no_cookies():
    assert cookie.get_cookies() == []
    assert cookie.get_cookie("a", "dflt") == "dflt"


def test_get_cookies_parsing():
    with_cookie_header("a=1; b=x=y;c=3 ;  d = 4 ; lonely; e=; a=dup; ;")
    cookies = cookie.get_cookies()
    assert [(c.name, c.value) for c in cookies] == [
        ("a", "1"), ("b", "x=y"), ("c", "3"), ("d", "4"), ("", "lonely"), ("e", ""),
        ("a", "dup")]
    assert str(cookies[4]) == "lonely"                 # a nameless cookie is just its value
    assert cookie.get_cookie("a") == "1"               # the first one wins
    assert cookie.get_cookie("b") == "x=y"
    assert cookie.get_cookie("e") == ""
    assert cookie.get_cookie("missing") is None
    assert cookie.get_cookie("missing", "d") == "d"
    assert cookie.get_cookie("A") is None              # names are case-sensitive


def test_get_cookies_accepts_anything_the_client_sends():
    with_cookie_header('q="a b"; bad name=1; x=é;\x01=\x02')
    assert [(c.name, c.value) for c in cookie.get_cookies()] == [
        ("q", '"a b"'), ("bad name", "1"), ("x", "é"), ("\x01", "\x02")]


def test_get_cookies_with_repeated_cookie_headers():
    with_cookie_header("a=1", "b=2")
    assert [(c.name, c.value) for c in cookie.get_cookies()] == [("a", "1"), ("b", "2")]


def test_get_cookies_without_header():
    with_cookie_header()
    assert cookie.get_cookies() == []


def test_get_cookies_is_cached_per_request_object():
    req = with_cookie_header("a=1")
    first = cookie.get_cookies()
    req.headers["cookie"] = "a=2"                      # not re-read for the same request
    assert cookie.get_cookie("a") == "1"
    first.clear()                                      # callers get copies of the cache
    assert len(cookie.get_cookies()) == 1
    with_cookie_header("a=3")                          # a new request object: parsed again
    assert cookie.get_cookie("a") == "3"
    krait.request = req
    assert cookie.get_cookie("a") == "2"


def test_cache_works_with_objects_without_weakref_support():
    class Plain:
        __slots__ = ("headers",)

    req = Plain()
    req.headers = {"cookie": "z=9"}
    krait.request = req
    assert cookie.get_cookie("z") == "9"
    assert cookie.get_cookie("z") == "9"


# --- setting response cookies ---------------------------------------------------------------

def test_set_cookie_appends_to_extra_headers():
    krait.extra_headers.append(("X-Other", "1"))
    c = Cookie("count", "3")
    c.set_max_age(3600)
    cookie.set_cookie(c)
    cookie.set_cookie(Cookie("b", "2"))
    # HttpOnly and SameSite=Lax are the defaults, added at the end.
    assert krait.extra_headers == [
        ("X-Other", "1"), ("set-cookie", "count=3; max-age=3600; HttpOnly; SameSite=Lax"),
        ("set-cookie", "b=2; HttpOnly; SameSite=Lax")]
    assert str(c) == "count=3; max-age=3600"   # the cookie itself is unchanged
    with pytest.raises(TypeError):
        cookie.set_cookie("a=b")


def test_set_cookie_safe_defaults_and_explicit_opt_outs():
    c = Cookie("a", "1")
    c.set_http_only(False)
    c.set_same_site(False)
    cookie.set_cookie(c)
    c = Cookie("b", "2")
    c.set_same_site("Strict")
    c.set_http_only(True)
    cookie.set_cookie(c)
    c = Cookie("c", "3")
    c.set_http_only(False)
    c.set_http_only(None)     # back to the default
    cookie.set_cookie(c)
    assert [v for _, v in krait.extra_headers] == [
        "a=1", "b=2; SameSite=Strict; HttpOnly", "c=3; HttpOnly; SameSite=Lax"]


def test_attribute_values_are_ascii_and_expires_stays_in_range():
    for bad in ("caf\u00e9", "/p\u00e4th", "\x7f", "a\x85b"):
        with pytest.raises(ValueError):
            CookieAttribute("path", bad)
        with pytest.raises(ValueError):
            Cookie("a", "b").set_path(bad)
    east = datetime.timezone(datetime.timedelta(hours=5))
    with pytest.raises(ValueError):
        Cookie("a", "b").set_expires(datetime.datetime(1, 1, 1, 1, 0, tzinfo=east))
    with pytest.raises(ValueError):
        Cookie("a", "b").set_expires(datetime.datetime.min.replace(tzinfo=east))


def test_get_response_cookies_round_trip():
    c = Cookie("sid", "abc")
    c.set_expires(datetime.datetime(2030, 1, 2, 3, 4, 5))
    c.set_path("/")
    c.set_secure(True)
    c.set_same_site("Strict")
    c.set_http_only(False)
    cookie.set_cookie(c)
    cookie.set_cookie(Cookie("plain", ""))
    krait.extra_headers.append(("Set-Cookie", "manual=1;path=/x"))
    krait.extra_headers.append(("X-Other", "a=b"))
    parsed = cookie.get_response_cookies()
    assert [p.name for p in parsed] == ["sid", "plain", "manual"]
    sid = parsed[0]
    assert sid.value == "abc"
    assert sid.attributes == [
        CookieAttribute("expires", "Wed, 02 Jan 2030 03:04:05 GMT"),   # ", " in the date is fine
        CookieAttribute("path", "/"), CookieAttribute("Secure"),
        CookieAttribute("SameSite", "Strict")]
    assert str(sid) == str(c)
    assert str(parsed[1]) == "plain=; HttpOnly; SameSite=Lax"
    assert parsed[2].value == "1" and parsed[2].attributes == [CookieAttribute("path", "/x")]


def test_get_response_cookies_empty():
    assert cookie.get_response_cookies() == []
