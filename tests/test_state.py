"""krait._state: the per-context state behind krait.request, krait.response, ... (issue 14)."""

from __future__ import annotations

import contextvars
import threading

import krait
from krait import _state, cookie, mvc, websockets
from krait.request import Request


def _request(url: str, cookie_header: str = "") -> Request:
    headers = [("cookie", cookie_header)] if cookie_header else []
    return Request("GET", url, "", "HTTP/1.1", headers, b"")


def _in_thread(fn):  # -> the result of fn() in a new thread
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(5)
    return out[0]


def test_module_attributes_read_and_write_the_current_state() -> None:
    state = _state.RequestState(_request("/a"), {"x": "1"})
    token = _state.activate(state)
    try:
        assert krait.request is state.request
        assert krait.url_params == {"x": "1"}
        krait.response = krait.Response(body="b")
        assert state.response is krait.response
        krait.extra_headers.append(("X-A", "1"))
        assert state.extra_headers == [("X-A", "1")]
        krait.extra_headers = [("X-B", "2")]
        assert state.extra_headers == [("X-B", "2")]
        krait.set_content_type(ext="json")
        assert state.content_type == "application/json; charset=utf-8"
        from krait import request  # a snapshot of the current value, as before

        assert request is state.request
        assert "request" not in vars(krait)
    finally:
        _state.reset(token)


def test_a_new_thread_sees_no_request() -> None:
    token = _state.activate(_state.RequestState(_request("/main")))
    try:
        assert _in_thread(lambda: krait.request) is None
        assert _in_thread(lambda: krait.extra_headers) == []
        # ...unless the site carries its context into it.
        ctx = contextvars.copy_context()
        assert _in_thread(lambda: ctx.run(lambda: krait.request.url)) == "/main"
    finally:
        _state.reset(token)


def test_threads_do_not_see_each_other() -> None:
    barrier = threading.Barrier(2, timeout=5)

    def run(url: str, user: str) -> tuple[str, str | None, list]:
        _state.activate(_state.RequestState(_request(url, f"user={user}")))
        cookie.set_cookie(cookie.Cookie("who", user))
        barrier.wait()  # both are set before either reads
        return krait.request.url, cookie.get_cookie("user"), \
            [c.value for c in cookie.get_response_cookies()]

    out: dict[str, tuple] = {}
    threads = [threading.Thread(target=lambda u=u: out.__setitem__(u, run("/" + u, u)))
               for u in ("alice", "mallory")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert out == {"alice": ("/alice", "alice", ["alice"]),
                   "mallory": ("/mallory", "mallory", ["mallory"])}


def test_mvc_and_websockets_attributes_are_per_context() -> None:
    ws_req = websockets.WebsocketsRequest(_request("/ws"))
    state = _state.RequestState(_request("/ws"), ws_request=ws_req)
    token = _state.activate(state)
    try:
        assert websockets.request is ws_req
        websockets.response = "accept"
        assert state.ws_response == "accept"
        mvc.push_ctrl("a")
        mvc.push_ctrl("b")
        assert (mvc.curr_ctrl, mvc.ctrl_stack) == ("b", ["a"])
        mvc.set_init_ctrl("i")
        assert mvc.init_ctrl == "i" and state.init_ctrl == "i"
        assert _in_thread(lambda: (mvc.curr_ctrl, websockets.request)) == (None, None)
        assert mvc.pop_ctrl() == "a" and mvc.pop_ctrl() is None
    finally:
        _state.reset(token)


def test_for_websocket_keeps_the_handshake_and_starts_a_fresh_answer() -> None:
    state = _state.RequestState(_request("/ws", "user=alice"), {"room": "r"}, "wsreq", "id-1")
    state.extra_headers.append(("set-cookie", "a=b"))
    state.response = "handshake answer"
    state.ws_response = "accept"
    state.extras["krait.session"] = session = object()
    ctrl = state.for_websocket()
    assert ctrl.request is state.request and ctrl.ws_request == "wsreq"
    assert ctrl.url_params == {"room": "r"} and ctrl.request_id == "id-1"
    assert ctrl.ws_response == "accept" and ctrl.extras["krait.session"] is session
    assert ctrl.response is None and ctrl.extra_headers == []
    ctrl.extras["other"] = 1
    assert "other" not in state.extras


def test_run_with_restores_the_previous_state() -> None:
    outer = _state.RequestState(_request("/outer"))
    inner = _state.RequestState(_request("/inner"))
    token = _state.activate(outer)
    try:
        assert _state.run_with(inner, lambda: krait.request.url) == "/inner"
        assert krait.request.url == "/outer"
    finally:
        _state.reset(token)
