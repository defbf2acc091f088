"""POST /guestbook (routed in init.py): store the message, then redirect back to the page.

Answering a POST with a redirect (the "Post/Redirect/Get" pattern) means that reloading the
page the browser lands on does not send the form again.
"""

import storage

import krait
from krait.errors import BadRequest, MethodNotAllowed

# Any .py file can also be fetched by its own URL (/sign.py): refuse what is not a POST.
if krait.request.http_method != "POST":
    raise MethodNotAllowed(["POST"])

form = krait.request.get_post_form()
name = storage.clean(form.get("name"), storage.MAX_NAME)
message = storage.clean(form.get("message"), storage.MAX_MESSAGE)
if not name or not message:
    raise BadRequest("Please give a name and a message.")

storage.add_entry(name, message)
krait.response = krait.ResponseRedirect("/guestbook?thanks=1")
