"""POST /upload (routed in init.py): read a multipart/form-data upload, show what arrived.

The script hands its results to a controller (krait.mvc.SimpleCtrl) whose view,
.view/upload-result.html, renders the page.
"""

import hashlib

import krait
from krait import mvc
from krait.errors import BadRequest, MethodNotAllowed

if krait.request.http_method != "POST":
    raise MethodNotAllowed(["POST"])

parts = krait.request.get_multipart_form()
if parts is None:
    raise BadRequest("The form must be sent as multipart/form-data.")

files = [p for p in parts if p.name == "file" and p.filename]
notes = [p for p in parts if p.name == "note" and p.filename is None]
if not files:
    raise BadRequest("No file was chosen.")

upload = files[0]
# A large upload lives in a temporary file: hash it from there, never whole in memory.
upload.file.seek(0)
mvc.set_init_ctrl(mvc.SimpleCtrl(".view/upload-result.html", {
    "filename": upload.filename,
    "size": upload.size,
    "sha256": hashlib.file_digest(upload.file, "sha256").hexdigest(),
    "content_type": upload.content_type,
    "note": notes[0].data.decode("utf-8", "replace") if notes else "",
}))
