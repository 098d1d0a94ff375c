"""Local mode: the interceptor plus an autoscaler that runs each app as OS processes.

`policy` decides (pure), `replica` and `supervisor` run processes, `autoscaler` connects them to
the interceptor, `runner` orders start and shutdown, `cli` holds `httpscale local`/`status`.
"""
