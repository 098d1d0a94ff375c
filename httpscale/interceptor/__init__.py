"""The interceptor: httpscale's reverse proxy (walkthrough: docs/interceptor.md)."""

from httpscale.interceptor import dataplane as _dataplane

# Decide before any hot-path module is imported whether the mypyc build or the source runs.
_dataplane.active()
