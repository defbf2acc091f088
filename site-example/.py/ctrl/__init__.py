"""The site's controllers: init.py calls krait.mvc.import_ctrls_from("ctrl"), which imports
every module of this package, so the routes their decorators declare exist before the first
request."""
