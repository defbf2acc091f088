"""GET /docs/<page>.md (a regex route in init.py): krait's documentation, as plain text.

The docs are not part of the site: they are the docs/ folder beside site-example/ in the krait
repository. The regex only lets through names like "tutorial.md", so no URL can reach any other
file. FileResponse hands the file to the C core, which sends it with sendfile().
"""

import os

import krait
from krait.errors import NotFound
from krait.response import FileResponse

docs = os.path.join(os.path.dirname(os.path.abspath(krait.site_root)), "docs")
path = os.path.join(docs, krait.url_params["page"])
if not os.path.isfile(path):
    raise NotFound("That page is not here: the docs are in the docs/ folder of the krait "
                   "repository, next to site-example/.")
krait.response = FileResponse(path, content_type="text/plain; charset=utf-8")
