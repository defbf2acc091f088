"""Reading the request's cookies and setting response cookies: ``krait.cookie``.

Example::

    c = krait.cookie.Cookie("count", "3")
    c.set_max_age(3600)
    c.set_path("/")
    c.set_http_only(True)
    krait.cookie.set_cookie(c)   # Set-Cookie: count=3; max-age=3600; path=/; HttpOnly

Names and values are checked when a cookie is built (RFC 6265 §4.1.1), so a value can never
inject attributes or headers. Cookies parsed from requests are taken as they come, unchecked.
"""

from __future__ import annotations

import datetime
from typing import Any

from krait._state import current
from krait.request import _parse_cookie_header

__all__ = [
    "Cookie", "CookieAttribute", "CookieDomainAttribute", "CookieExpiresAttribute",
    "CookieHttpOnlyAttribute", "CookieMaxAgeAttribute", "CookiePathAttribute",
    "CookieSameSiteAttribute", "CookieSecureAttribute", "get_cookie", "get_cookies",
    "get_response_cookies", "set_cookie",
]

# RFC 6265 §4.1.1 cookie-name = token (RFC 2616 §2.2; the same characters as RFC 9110 tchar).
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# RFC 6265 §4.1.1 cookie-octet: visible ASCII except '"', ',', ';' and '\'.
_COOKIE_OCTETS = frozenset(chr(c) for c in range(0x21, 0x7F)) - set('",;\\')
# Inside double quotes we also allow space and ',' (browsers keep them; neither ends a cookie).
_QUOTED_OCTETS = _COOKIE_OCTETS | {" ", ","}
_SAME_SITE = {"strict": "Strict", "lax": "Lax", "none": "None"}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    if not name or not _TOKEN_CHARS.issuperset(name):
        raise ValueError(f"invalid {what} (must be an RFC 6265 token): {name!r}")
    return name


def _check_value(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a cookie value must be a str, not {type(value).__name__}")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        ok = _QUOTED_OCTETS.issuperset(value[1:-1])
    else:
        ok = _COOKIE_OCTETS.issuperset(value)
    if not ok:
        raise ValueError(
            f"invalid cookie value {value!r}: ';', ',', '\"', '\\', whitespace, control and "
            "non-ASCII characters are not allowed (space and ',' only inside double quotes); "
            "encode the value first, e.g. with urllib.parse.quote")
    return value


def _check_attribute_value(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"the value of cookie attribute {name!r} must be a str")
    # RFC 6265 §4.1.1: av-octets are any CHAR (US-ASCII) except CTLs or ";".
    if ";" in value or any(c < " " or c >= "\x7f" for c in value):
        raise ValueError(f"invalid value for cookie attribute {name!r}: {value!r}")
    return value


def _imf_fixdate(moment: datetime.datetime) -> str:
    """Format a datetime as an IMF-fixdate (RFC 9110 §5.6.7), e.g. ``Wed, 02 Jan 2030 03:04:05
    GMT``. Naive datetimes are taken as UTC; aware ones are converted."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return (f"{_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} "
            f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} GMT")


class CookieAttribute:
    """One attribute of a ``Set-Cookie`` header: ``name=value``, or just ``name``.

    :param name: the attribute name (an RFC 6265 token), e.g. ``"path"``.
    :param value: its value, or ``None`` for a flag such as ``Secure``.
    :raises ValueError: for a bad name, or a value with ``;`` or control characters.
    """

    def __init__(self, name: str, value: str | None = None) -> None:
        self.name: str = _check_name(name, "cookie attribute name")
        self.value: str | None = None if value is None else _check_attribute_value(value, name)

    @classmethod
    def _unchecked(cls, name: str, value: str | None) -> CookieAttribute:
        # For attributes parsed from header text: taken as they are, never raising.
        attribute = cls.__new__(cls)
        attribute.name, attribute.value = name, value
        return attribute

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}={self.value}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.value!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CookieAttribute):
            return NotImplemented
        return (self.name, self.value) == (other.name, other.value)

    def __hash__(self) -> int:
        return hash((self.name, self.value))


class CookieExpiresAttribute(CookieAttribute):
    """``expires=<IMF-fixdate>``, e.g. ``expires=Wed, 02 Jan 2030 03:04:05 GMT``.

    :param expire_datetime: when the cookie expires; a naive datetime is taken as UTC, an
        aware one is converted to UTC.
    """

    def __init__(self, expire_datetime: datetime.datetime) -> None:
        if not isinstance(expire_datetime, datetime.datetime):
            raise TypeError("expires must be a datetime.datetime")
        try:
            text = _imf_fixdate(expire_datetime)
        except OverflowError:  # an aware datetime near year 1 or 9999 has no UTC equivalent
            raise ValueError(f"expires out of range: {expire_datetime!r}") from None
        super().__init__("expires", text)
        #: The datetime given to the constructor.
        self.expire_datetime: datetime.datetime = expire_datetime


class CookieMaxAgeAttribute(CookieAttribute):
    """``max-age=<seconds>``; zero or a negative number expires the cookie at once.

    :param max_age: the lifetime in seconds.
    """

    def __init__(self, max_age: int) -> None:
        if isinstance(max_age, bool) or not isinstance(max_age, int):
            raise TypeError("max-age must be an int (seconds)")
        super().__init__("max-age", str(max_age))
        #: The lifetime in seconds.
        self.max_age: int = max_age


class CookiePathAttribute(CookieAttribute):
    """``path=<path>``: the URL path prefix the cookie is sent to.

    :param path: e.g. ``"/"``.
    """

    def __init__(self, path: str) -> None:
        super().__init__("path", path)
        #: The path prefix.
        self.path: str = path


class CookieDomainAttribute(CookieAttribute):
    """``domain=<domain>``: the cookie is also sent to subdomains of this domain.

    :param domain: e.g. ``"example.com"``.
    """

    def __init__(self, domain: str) -> None:
        super().__init__("domain", domain)
        #: The domain.
        self.domain: str = domain


class CookieSecureAttribute(CookieAttribute):
    """``Secure``: the cookie is only sent over HTTPS."""

    def __init__(self) -> None:
        super().__init__("Secure")


class CookieHttpOnlyAttribute(CookieAttribute):
    """``HttpOnly``: the cookie is hidden from JavaScript."""

    def __init__(self) -> None:
        super().__init__("HttpOnly")


class CookieSameSiteAttribute(CookieAttribute):
    """``SameSite=Strict|Lax|None``: whether cross-site requests carry the cookie.

    Browsers ignore ``SameSite=None`` on a cookie that is not also ``Secure``.

    :param value: ``"Strict"``, ``"Lax"`` or ``"None"`` (any case).
    :raises ValueError: for any other value.
    """

    def __init__(self, value: str) -> None:
        canonical = _SAME_SITE.get(value.lower()) if isinstance(value, str) else None
        if canonical is None:
            raise ValueError(f"SameSite must be 'Strict', 'Lax' or 'None', not {value!r}")
        super().__init__("SameSite", canonical)


class Cookie:
    """A cookie: a name, a value and ``Set-Cookie`` attributes.

    ``str(cookie)`` is the ``Set-Cookie`` value: ``name=value`` then ``"; "`` and each attribute
    in the order they were set (e.g. ``count=3; max-age=3600; path=/; HttpOnly``).

    :param name: the cookie name, an RFC 6265 token (no separators, spaces or controls).
    :param value: the value: visible ASCII except ``"``, ``,``, ``;`` and ``\\``, or such a
        text in double quotes, where space and ``,`` are also allowed. Encode anything else
        first (``urllib.parse.quote``). May be empty.
    :param attributes: the initial list of :class:`CookieAttribute`.
    :raises ValueError: for an invalid name or value.
    :raises TypeError: when name or value is not a ``str``.
    """

    # Opt-outs of the attributes set_cookie() adds by default (set_http_only(False),
    # set_same_site(False)).
    _no_http_only = False
    _no_same_site = False

    def __init__(self, name: str, value: str,
                 attributes: list[CookieAttribute] | None = None) -> None:
        self._name = _check_name(name, "cookie name")
        self._value = _check_value(value)
        self.attributes: list[CookieAttribute] = list(attributes or [])

    @classmethod
    def _unchecked(cls, name: str, value: str,
                   attributes: list[CookieAttribute] | None = None) -> Cookie:
        # For cookies parsed from headers: they are whatever the client sent (an item without
        # '=' even has the name ""), and reading them must never raise.
        cookie = cls.__new__(cls)
        cookie._name, cookie._value = name, value
        cookie.attributes = list(attributes or [])
        return cookie

    @property
    def name(self) -> str:
        """The cookie name (``""`` for a nameless cookie read from a request)."""
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        self._name = _check_name(name, "cookie name")

    @property
    def value(self) -> str:
        """The cookie value, verbatim (quotes included)."""
        return self._value

    @value.setter
    def value(self, value: str) -> None:
        self._value = _check_value(value)

    def add_attribute(self, attribute: CookieAttribute) -> None:
        """Append an attribute (even if one with that name exists; see the ``set_*`` methods).

        :param attribute: the attribute to append.
        """
        if not isinstance(attribute, CookieAttribute):
            raise TypeError("attribute must be a CookieAttribute")
        self.attributes.append(attribute)

    def remove_attribute(self, name: str) -> None:
        """Remove every attribute called ``name`` (compared case-insensitively).

        :param name: the attribute name, e.g. ``"path"``.
        """
        name = name.lower()
        self.attributes = [a for a in self.attributes if a.name.lower() != name]

    def get_attribute(self, name: str) -> CookieAttribute | None:
        """The first attribute called ``name`` (case-insensitively), or ``None``.

        :param name: the attribute name, e.g. ``"max-age"``.
        """
        name = name.lower()
        return next((a for a in self.attributes if a.name.lower() == name), None)

    def _replace(self, name: str, attribute: CookieAttribute | None) -> None:
        self.remove_attribute(name)
        if attribute is not None:
            self.attributes.append(attribute)

    def set_expires(self, expires: datetime.datetime | None) -> None:
        """Set (or with ``None`` remove) ``expires=``; it moves to the end of the attributes.

        :param expires: the expiry time; naive datetimes are UTC, aware ones are converted.
        """
        self._replace("expires", None if expires is None else CookieExpiresAttribute(expires))

    def set_max_age(self, max_age: int | None) -> None:
        """Set (or with ``None`` remove) ``max-age=``; it moves to the end of the attributes.

        :param max_age: the lifetime in seconds.
        """
        self._replace("max-age", None if max_age is None else CookieMaxAgeAttribute(max_age))

    def set_path(self, path: str | None) -> None:
        """Set (or with ``None`` remove) ``path=``; it moves to the end of the attributes.

        :param path: the URL path prefix, e.g. ``"/"``.
        """
        self._replace("path", None if path is None else CookiePathAttribute(path))

    def set_domain(self, domain: str | None) -> None:
        """Set (or with ``None`` remove) ``domain=``; it moves to the end of the attributes.

        :param domain: e.g. ``"example.com"``.
        """
        self._replace("domain", None if domain is None else CookieDomainAttribute(domain))

    def set_secure(self, secure: bool | None) -> None:
        """Add (true) or remove (false/``None``) the ``Secure`` flag.

        :param secure: whether the cookie is only sent over HTTPS.
        """
        self._replace("Secure", CookieSecureAttribute() if secure else None)

    def set_http_only(self, http_only: bool | None) -> None:
        """Add (true) or remove the ``HttpOnly`` flag.

        :func:`set_cookie` adds ``HttpOnly`` to a cookie that has none, unless you opted out:
        ``set_http_only(False)`` sends the cookie without it (scripts in the page can read
        it); ``None`` removes the flag and goes back to that default.

        :param http_only: whether the cookie is hidden from JavaScript.
        """
        self._no_http_only = http_only is False
        self._replace("HttpOnly", CookieHttpOnlyAttribute() if http_only else None)

    def set_same_site(self, same_site: str | bool | None) -> None:
        """Set (or with ``None`` remove) ``SameSite=``; it moves to the end of the attributes.

        :func:`set_cookie` adds ``SameSite=Lax`` to a cookie that has none, unless you opted
        out with ``set_same_site(False)`` (no ``SameSite`` attribute at all; browsers then
        apply their own default).

        :param same_site: ``"Strict"``, ``"Lax"`` or ``"None"`` (any case); ``False`` to send
            none; ``None`` to remove it and go back to the default.
        :raises ValueError: for any other value.
        """
        self._no_same_site = same_site is False
        self._replace("SameSite", None if same_site is None or same_site is False
                      else CookieSameSiteAttribute(same_site))

    def __str__(self) -> str:
        text = f"{self._name}={self._value}" if self._name else self._value
        return "; ".join([text, *(str(a) for a in self.attributes)])

    def __repr__(self) -> str:
        return f"Cookie({self._name!r}, {self._value!r}, {self.attributes!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cookie):
            return NotImplemented
        return (self._name, self._value, self.attributes) == (
            other._name, other._value, other.attributes)

    __hash__ = None  # type: ignore[assignment]  # mutable


def get_cookies() -> list[Cookie]:
    """The cookies the client sent with the current request, in order (duplicates included).

    The ``Cookie`` header is split on ``;``; each item is stripped and split at its first ``=``
    (an item without one gets the name ``""``). The result is computed once per request.

    :return: a new list of :class:`Cookie` (empty outside a request).
    """
    state = current()
    request = state.request
    if request is None:
        return []
    cached = state.cookies  # (request, cookies), read once: another thread may replace it
    if cached is not None and cached[0] is request:
        return list(cached[1])
    header = request.headers.get("cookie") or ""
    cookies = [Cookie._unchecked(name, value) for name, value in _parse_cookie_header(header)]
    state.cookies = (request, cookies)
    return list(cookies)


def get_cookie(name: str, default: str | None = None) -> str | None:
    """The value of the first request cookie called ``name``.

    :param name: the cookie name (case-sensitive, RFC 6265 §5.3).
    :param default: returned when there is no such cookie.
    """
    for cookie in get_cookies():
        if cookie.name == name:
            return cookie.value
    return default


def set_cookie(cookie: Cookie) -> None:
    """Send a cookie with the response: appends ``("set-cookie", str(cookie))`` to
    ``krait.extra_headers``. Call it once per cookie; several cookies are several headers.

    Safe attributes are the default: ``HttpOnly`` (page scripts cannot read the cookie) and
    ``SameSite=Lax`` (other sites' forms and scripts do not send it) are added at the end when
    the cookie has no such attribute. Opt out per cookie with ``cookie.set_http_only(False)``
    or ``cookie.set_same_site(False)``. The cookie object itself is not changed.

    :param cookie: the cookie to set.
    """
    if not isinstance(cookie, Cookie):
        raise TypeError("set_cookie() takes a krait.cookie.Cookie")
    text = str(cookie)
    if not cookie._no_http_only and cookie.get_attribute("HttpOnly") is None:
        text += "; HttpOnly"
    if not cookie._no_same_site and cookie.get_attribute("SameSite") is None:
        text += "; SameSite=Lax"
    current().extra_headers.append(("set-cookie", text))


def get_response_cookies() -> list[Cookie]:
    """The cookies already queued with :func:`set_cookie` (``set-cookie`` entries of
    ``krait.extra_headers``, any case), parsed back.

    Each header is split on ``;`` (so ``expires`` dates survive); the first item is the cookie,
    split at its first ``=``; the others become plain :class:`CookieAttribute` objects, so
    ``str()`` of a parsed cookie gives back the header text.

    :return: a new list of :class:`Cookie`, in the order they were queued.
    """
    cookies = []
    for header_name, header_value in current().extra_headers:
        if header_name.lower() != "set-cookie":
            continue
        first, *rest = [item.strip() for item in header_value.split(";")]
        name, has_equals, value = first.partition("=")
        if not has_equals:
            name, value = "", first
        attributes = []
        for item in rest:
            if not item:
                continue
            attr_name, has_equals, attr_value = item.partition("=")
            attributes.append(
                CookieAttribute._unchecked(attr_name, attr_value if has_equals else None))
        cookies.append(Cookie._unchecked(name, value, attributes))
    return cookies
