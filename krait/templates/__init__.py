"""Templates: ``.pyml`` (Krait syntax) translated to Mako, and ``.mako`` views.

:mod:`krait.templates.pyml` translates; :mod:`krait.templates.lookup` loads, caches and renders.
"""
