"""The original Krait API, name by name (every name krait-behaviour.md describes), and the API
additions of issue 15: repeated query and form fields, multipart parts by name, saving an upload,
redirect statuses, ``py.typed``, docstrings that cite no document a user does not have."""

from __future__ import annotations

import datetime
import importlib
import inspect
import os
from pathlib import Path

import pytest

import krait
from krait import cookie, mvc, websockets
from krait.request import Request, safe_filename
from krait.response import ResponseRedirect, iri_to_uri

#: Every name of the original API (krait-behaviour.md §1-§12): "module:dotted.name".
ORIGINAL_NAMES = """
krait:request krait:response krait:extra_headers krait:url_params krait:site_root
krait:get_full_path krait:set_content_type krait:config krait:mvc krait:cookie krait:websockets
krait:Request krait:Response krait:ResponseNotFound krait:ResponseBadRequest
krait:ResponseRedirect
krait:Request.get_post_form krait:Request.get_multipart_form krait:Request.MultipartFormData
krait.config:Route krait.config:Route.route_verbs krait.config:routes krait.config:cache_no_store
krait.config:cache_private krait.config:cache_public krait.config:cache_long_term
krait.config:cache_max_age_default krait.config:cache_max_age_long_term
krait.config:ssl_certificate_path krait.config:ssl_private_key_path
krait.config:ssl_key_passphrase krait.config:ConfigError
krait.mvc:CtrlBase krait.mvc:CtrlBase.get_view krait.mvc:SimpleCtrl krait.mvc:init_ctrl
krait.mvc:curr_ctrl krait.mvc:ctrl_stack krait.mvc:push_ctrl krait.mvc:pop_ctrl
krait.mvc:set_init_ctrl krait.mvc:route_ctrl_decorator krait.mvc:import_ctrls_from
krait.cookie:Cookie krait.cookie:Cookie.set_expires krait.cookie:Cookie.set_max_age
krait.cookie:Cookie.set_path krait.cookie:Cookie.set_domain krait.cookie:Cookie.set_secure
krait.cookie:Cookie.set_http_only krait.cookie:Cookie.add_attribute
krait.cookie:Cookie.remove_attribute krait.cookie:CookieAttribute
krait.cookie:CookieExpiresAttribute krait.cookie:CookieMaxAgeAttribute
krait.cookie:CookiePathAttribute krait.cookie:CookieDomainAttribute
krait.cookie:CookieSecureAttribute krait.cookie:CookieHttpOnlyAttribute
krait.cookie:get_cookies krait.cookie:get_cookie krait.cookie:set_cookie
krait.cookie:get_response_cookies
krait.websockets:request krait.websockets:response krait.websockets:WebsocketsRequest
krait.websockets:WebsocketsRequest.extract_protocols krait.websockets:WebsocketsResponse
krait.websockets:WebsocketsCtrlBase krait.websockets:WebsocketsCtrlBase.on_start
krait.websockets:WebsocketsCtrlBase.on_thread_start
krait.websockets:WebsocketsCtrlBase.on_in_message
krait.websockets:WebsocketsCtrlBase.on_in_message_internal
krait.websockets:WebsocketsCtrlBase.pop_in_message
krait.websockets:WebsocketsCtrlBase.push_out_message
krait.websockets:WebsocketsCtrlBase.pop_out_message
krait.websockets:WebsocketsCtrlBase.should_stop krait.websockets:WebsocketsCtrlBase.on_stop
krait.websockets:WebsocketsCtrlBase.wait_stopped
""".split()


@pytest.mark.parametrize("spec", ORIGINAL_NAMES)
def test_every_original_name_exists(spec: str) -> None:
    module_name, _, dotted = spec.partition(":")
    obj = importlib.import_module(module_name)
    for part in dotted.split("."):
        assert hasattr(obj, part), f"{spec}: no {part!r} on {obj!r}"
        obj = getattr(obj, part)


def test_instance_attributes_of_the_original() -> None:
    assert mvc.SimpleCtrl(".view/p.html", {"title": "T"}).view == ".view/p.html"
    assert mvc.SimpleCtrl(".view/p.html", {}).get_view() == ".view/p.html"
    assert cookie.CookieMaxAgeAttribute(60).max_age == 60
    assert cookie.CookiePathAttribute("/a").path == "/a"
    assert cookie.CookieDomainAttribute("example.org").domain == "example.org"
    moment = datetime.datetime(2030, 1, 2, 3, 4, 5)
    attr = cookie.CookieExpiresAttribute(moment)
    assert attr.expire_datetime == moment and str(attr) == "expires=Wed, 02 Jan 2030 03:04:05 GMT"
    request = Request("GET", "/ws", "", "HTTP/1.1", [
        ("Upgrade", "websocket"), ("Sec-WebSocket-Protocol", "chat, superchat")], b"")
    assert websockets.WebsocketsRequest.extract_protocols(request) == ["chat", "superchat"]
    assert websockets.WebsocketsRequest(request).protocols == ["chat", "superchat"]
    plain = Request("GET", "/", "", "HTTP/1.1", [], b"")
    assert websockets.WebsocketsRequest.extract_protocols(plain) is None

    class Echo(websockets.WebsocketsCtrlBase):
        def __init__(self) -> None:
            super().__init__(use_in_message_queue=False)
            self.got: list[object] = []

        def on_in_message(self, message: websockets.Message) -> None:
            self.got.append(message)

    ctrl = Echo()
    ctrl.on_in_message_internal("hi")
    assert ctrl.got == ["hi"] and ctrl.pop_out_message() is None


def test_repeated_query_and_form_fields() -> None:
    request = Request("POST", "/f", "a=1&b=x&a=2+3&a=%C3%A9", "HTTP/1.1",
                      [("Content-Type", "application/x-www-form-urlencoded")],
                      b"tag=red&tag=green&one=1&tag=")
    assert request.query["a"] == "é" and request.query_list("a") == ["1", "2 3", "é"]
    assert request.query_list("none") == []
    assert request.form_list("tag") == ["red", "green", ""]
    assert request.get_post_form()["tag"] == ""


BOUNDARY = "b0undary"


def multipart_body(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else "")
        out += (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
                + data + b"\r\n")
    return out + f"--{BOUNDARY}--\r\n".encode()


def test_multipart_fields_by_name_and_saving_an_upload(tmp_path: Path) -> None:
    body = multipart_body(("tag", None, b"red"), ("file", "../../a b.txt", b"one"),
                          ("tag", None, b"vert"), ("file", "C:\\x\\b.txt", b"two"))
    request = Request("POST", "/u", "", "HTTP/1.1", [
        ("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")], body)
    assert request.form_list("tag") == ["red", "vert"]
    assert request.form_list("file") == []  # files are not text fields
    files = request.get_multipart_parts("file")
    assert [p.data for p in files] == [b"one", b"two"]
    first = request.get_multipart_part("file")
    assert first is not None and first.filename == "../../a b.txt"
    assert first.safe_filename == "a_b.txt"
    assert request.get_multipart_part("none") is None
    assert first.save(tmp_path) == str(tmp_path / "a_b.txt")
    assert (tmp_path / "a_b.txt").read_bytes() == b"one"
    assert files[1].save(tmp_path / "named.bin") == str(tmp_path / "named.bin")
    assert (tmp_path / "named.bin").read_bytes() == b"two"
    plain = Request("POST", "/u", "", "HTTP/1.1", [], b"a=1")
    assert plain.get_multipart_parts("a") == []


@pytest.mark.parametrize(("name", "safe"), [
    ("../../etc/passwd", "passwd"), ("holiday photo.jpg", "holiday_photo.jpg"),
    ("C:\\Users\\ann\\cv.pdf", "cv.pdf"), (".htaccess", "htaccess"), ("..", "upload"),
    ("", "upload"), ("CON.txt", "_CON.txt"), ("résumé<1>.pdf", "résumé1.pdf"),
    ("a;rm -rf *.sh", "arm_-rf_.sh"),
])
def test_safe_filename(name: str, safe: str) -> None:
    assert safe_filename(name) == safe


def test_safe_filename_is_short() -> None:
    name = safe_filename("é" * 300 + ".txt")
    assert name.endswith(".txt") and len(name.encode()) <= 200


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_statuses(status: int) -> None:
    r = ResponseRedirect("/next", status_code=status)
    assert r.status_code == status and ("Location", "/next") in r.headers


def test_redirect_default_and_errors() -> None:
    assert ResponseRedirect("/x").status_code == 302
    with pytest.raises(ValueError):
        ResponseRedirect("/x", status_code=200)
    with pytest.raises(ValueError):
        ResponseRedirect("/x\r\nSet-Cookie: a=b")


@pytest.mark.parametrize(("iri", "uri"), [
    ("/café?q=crème brûlée#s", "/caf%C3%A9?q=cr%C3%A8me%20br%C3%BBl%C3%A9e#s"),
    ("https://bücher.example/ü", "https://xn--bcher-kva.example/%C3%BC"),
    ("/already%20encoded?a=1&b=%C3%A9", "/already%20encoded?a=1&b=%C3%A9"),
    ("http://[::1]:8080/a;b=c", "http://[::1]:8080/a;b=c"),
])
def test_location_is_iri_encoded(iri: str, uri: str) -> None:
    assert iri_to_uri(iri) == uri
    assert dict(ResponseRedirect(iri, status_code=303).headers)["Location"] == uri


def test_the_package_is_typed() -> None:
    assert (Path(krait.__file__).parent / "py.typed").is_file()


PUBLIC_MODULES = ["krait", "krait.config", "krait.cookie", "krait.errors", "krait.mvc",
                  "krait.request", "krait.response", "krait.websockets",
                  "krait.templates.lookup", "krait.templates.pyml"]


def _docstrings(module_name: str) -> list[tuple[str, str]]:
    module = importlib.import_module(module_name)
    found = [(module_name, module.__doc__ or "")]
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module_name:
            continue
        found.append((f"{module_name}.{name}", getattr(obj, "__doc__", None) or ""))
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                doc = getattr(member, "__doc__", None) or ""
                if isinstance(member, property | staticmethod | classmethod) or callable(member):
                    found.append((f"{module_name}.{name}.{attr}", doc))
    return found


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_docstrings_cite_no_private_document(module_name: str) -> None:
    for where, doc in _docstrings(module_name):
        for line in doc.splitlines():
            if "§" in line and "RFC" not in line:
                raise AssertionError(f"{where} cites a section a user cannot read: {line!r}")
        assert "krait-behaviour" not in doc, where


def test_public_functions_have_docstrings() -> None:
    missing = []
    for module_name in ("krait.request", "krait.response", "krait.cookie", "krait.mvc",
                        "krait.websockets", "krait.errors"):
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not obj.__doc__:
                missing.append(f"{module_name}.{name}")
    assert missing == []
    assert os.path.basename(krait.__file__) == "__init__.py"
