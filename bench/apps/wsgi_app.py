"""A plain WSGI callable (no framework) for bench/dynamic.py (served by granian)."""


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/hello":
        body = b"Hello world!"
    elif path == "/8k":
        body = b"x" * 8192
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
