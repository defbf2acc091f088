"""Start-up configuration of the example site: routes and cache rules (see docs/)."""

import krait
from krait import config

config.routes = [
    config.Route("GET", regex=r"/hello/(?P<name>\w+)", target="hello.py"),
    config.Route("POST", url="/hello"),
    config.Route(),
]
config.cache_public = [r"css/.*"]
config.cache_long_term = [r"css/.*"]

site_name = "krait example site"
print(f"init.py loaded for {krait.site_root}")
