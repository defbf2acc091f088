"""GET /api/entries: the guestbook as JSON. ``?limit=N`` (1-100, default 20) picks how many.

    $ curl -s http://127.0.0.1:8080/api/entries?limit=2
    {"count": 2, "entries": [{"id": 7, "name": "Ada", "message": "Hi!", "created": ...}, ...]}
"""

import storage

import krait
from krait.errors import BadRequest

try:
    limit = int(krait.request.query.get("limit", "20"))
except ValueError:
    raise BadRequest("limit must be a whole number") from None
if not 1 <= limit <= 100:
    raise BadRequest("limit must be between 1 and 100")

entries = storage.entries(limit)
krait.response = krait.JsonResponse({"count": len(entries), "entries": entries})
