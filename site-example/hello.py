import html

import krait

name = krait.url_params.get("name") or krait.request.get_post_form().get("name") or "there"
krait.set_content_type("text/html; charset=utf-8")
krait.response = krait.Response(
    "HTTP/1.1", 200, [],
    f"<!doctype html><p>Hello, {html.escape(name)}! ({site_name})</p><p><a href='/'>back</a></p>",
)
