"""Start-up of the example site: krait runs this file once in the master and once in every
worker, before the first request. It opens the database, sets the routes and the cache rules.

Everything it defines at the top level (``site_name`` below) is visible to the site's
scripts and templates. See docs/configuration.md for every setting.
"""

import storage

import krait
from krait import config, mvc

site_name = "krait example"

# The guestbook, the chat and the counter live in one SQLite file in .private/, which is never
# served (any path component starting with "." answers 404).
storage.open_database(krait.site_root)

# Controllers declare their own routes with @mvc.route_ctrl_decorator; importing the package
# runs those decorators, which append to config.routes. Import them first: the first matching
# route wins, so the catch-all Route() must stay last.
mvc.import_ctrls_from("ctrl")

config.routes.extend([
    # A regex route: the named group becomes krait.url_params["name"] in hello.html.
    config.Route("GET", regex=r"/hello/(?P<name>[^/]{1,40})", target="hello.html"),
    # Forms post to the URL of their page; a script does the work.
    config.Route("POST", url="/guestbook", target="sign.py"),
    config.Route("POST", url="/upload", target="upload.py"),
    # The chat page is /chat; its WebSocket is /chat/socket.
    config.Route("WEBSOCKET", url="/chat/socket", target="chat-socket.py"),
    # The live counter: /counter is the page, a POST to it adds one, /counter/socket is the
    # WebSocket that hears every new value.
    config.Route("POST", url="/counter", target="counter-post.py"),
    config.Route("WEBSOCKET", url="/counter/socket", target="counter-socket.py"),
    # krait's documentation, built into docs/ (see docs.py): /docs and /docs/ answer its index
    # page (or say how to build it), /docs/<page>.md (the Markdown sources' names) redirects
    # to the page. Every other /docs/... URL is a file of docs/, served by the catch-all.
    config.Route("GET", regex=r"/docs/?|/docs/(?P<page>[a-z0-9-]+)\.md", target="docs.py"),
    # Everything else: GET and HEAD serve the file the URL names (/about → about.html).
    config.Route(),
])

# CSS and JavaScript may be kept by any cache ("public") for cache_max_age_long_term seconds
# (ten days). Change the file name (site.css → site.2.css) to make browsers fetch a new one.
# The icon may be kept by any cache too, for cache_max_age_default seconds (five minutes).
config.cache_public = [r"css/.*", r"js/.*", r"favicon\.ico"]
config.cache_long_term = [r"css/.*", r"js/.*"]

# docs/ holds the documentation as Sphinx built it: HTML, CSS and JavaScript sent as they are,
# never run as scripts or templates (its pages show "@" and Python code as text).
config.static_only = ["docs/"]

# Uploads are read whole by the core before upload.py runs: cap the request body.
config.max_body_size = 8 * 1024 * 1024
