"""POST /counter (routed in init.py): add one to the counter and tell every open counter page.

The new value is published on the channel ``counter``; every WebSocket of the counter page is
subscribed to it (counter-socket.py), so the server sends it to each of them, in whichever
worker process (or, with ``--pubsub``, on whichever machine) it is. The page's script posts with
``Accept: application/json`` and gets the value back; a plain form post is redirected to the page
(Post/Redirect/Get).
"""

import json

import storage

import krait
from krait import websockets
from krait.errors import MethodNotAllowed

# Any .py file can also be fetched by its own URL (/counter-post.py): refuse what is not a POST.
if krait.request.http_method != "POST":
    raise MethodNotAllowed(["POST"])

value = storage.increment("clicks")
websockets.publish("counter", json.dumps({"count": value}))
if "application/json" in krait.request.headers.get("accept", ""):
    krait.response = krait.JsonResponse({"count": value})
else:
    krait.response = krait.ResponseRedirect("/counter")
