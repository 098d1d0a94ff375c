"""httpscale: HTTP scale-to-zero for Kubernetes (version 0.1.0, not yet released).

What runs today: the interceptor (an HTTP/1.1 reverse proxy, clear text, one process on one
core), the KEDA external scaler, the operator, local mode, and the capacity, report cost and
doctor commands. Not yet (planned): TLS, HTTP/2, gRPC proxying, tracing, more than one core
per interceptor process. See README.md.

Subpackages, by layer (imports go downward only):
  cli                       -> command line, builds settings, starts components
  local, interceptor, scaler, operator   -> the components
  capacity, report, doctor               -> the answer commands, on the components and core
  kube, routing, model, config, scaling  -> the shared core (imports no component)
"""

__version__ = "0.1.0"

# Which build of the proxy's hot path to import (mypyc's or the source) is decided when the
# first of its modules is imported, and before that import finds a file: see
# httpscale/dataplane.py. Until then, nothing is checked (the scaler never imports one).
from httpscale import dataplane as _dataplane

_dataplane.install_gate()
