import krait

krait.set_content_type("text/plain")
krait.response = krait.Response("HTTP/1.1", 200, [], b"ok\n")
