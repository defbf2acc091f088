"""GET /docs, /docs/ and /docs/<page>.md (a regex route in init.py): krait's documentation.

The documentation is a Sphinx site built from the docs/ folder of the krait repository into
site-example/docs/, which init.py declares static_only: its files are sent as they are. The
README's command builds it before it starts this site:

    .venv/bin/python -m sphinx -q docs site-example/docs

This script answers the URLs that name no file there: /docs and /docs/ get the index page,
/docs/<page>.md (the name of a page's Markdown source) redirects to /docs/<page>.html, and when
the documentation has not been built, a page says how to build it.
"""

import html
import os

import krait
from krait.response import FileResponse, Response, ResponseRedirect

# FileResponse takes a relative path relative to the site root; get_full_path makes the same.
index = "docs/index.html"
page = krait.url_params.get("page")

if krait.request.url == "/docs":
    krait.response = ResponseRedirect("/docs/", status_code=301)
elif page is not None:
    krait.response = ResponseRedirect(f"/docs/{page}.html", status_code=301)
elif os.path.isfile(krait.get_full_path(index)):
    krait.response = FileResponse(index, content_type="text/html; charset=utf-8")
else:
    command = ".venv/bin/python -m sphinx -q docs site-example/docs"
    krait.response = Response(status_code=404, headers=[
        ("Content-Type", "text/html; charset=utf-8")], body=f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Documentation not built · krait example</title>
<link rel="stylesheet" href="/css/site.css"></head>
<body><main>
<h1>The documentation has not been built</h1>
<p>krait's documentation is a Sphinx site made from the <code>docs/</code> folder of the krait
repository. Build it into <code>site-example/docs/</code>, from the repository's folder:</p>
<pre>.venv/bin/pip install '.[docs]'
{html.escape(command)}</pre>
<p>then reload this page. Until then, read the Markdown files of <code>docs/</code>.</p>
<p><a href="/">Back to the example site</a></p>
</main></body></html>
""")
