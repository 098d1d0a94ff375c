"""The interceptor: httpscale's reverse proxy (walkthrough: docs/interceptor.md)."""
