"""httpscale: HTTP scale-to-zero for Kubernetes (version 0.1.0, not yet released).

What runs today: the interceptor (an HTTP/1.1 and HTTP/2 reverse proxy, gRPC included, clear
text or TLS, one worker process per CPU it is given), the KEDA external scaler, the operator,
local mode, OpenTelemetry tracing (off by default), and the capacity, report cost and doctor
commands. Not yet (planned): applying InterceptorRoute `sessionPersistence`. See README.md.

Subpackages, by layer (imports go downward only; pyproject.toml's [tool.importlinter]
contracts, run by scripts/test, enforce it):
  cli                            -> command line, builds settings, starts a command
  capacity, report, doctor       -> the answer commands (they reuse components' pure parts)
  local                          -> local mode, built on the interceptor
  interceptor, scaler, operator  -> the components, independent of each other
  kube, config                   -> the Kubernetes client layer; the local-mode file
  model, scaling                 -> HTTPScaledObject / InterceptorRoute models; rate arithmetic
  routing                        -> the route table (imports nothing else of httpscale)
runtime, clikit, adminsite and dataplane are process plumbing, importing nothing of the above.
"""

__version__ = "0.1.0"

# Which build of the proxy's hot path to import (mypyc's or the source) is decided when the
# first of its modules is imported, and before that import finds a file: see
# httpscale/dataplane.py. Until then, nothing is checked (the scaler never imports one).
from httpscale import dataplane as _dataplane

_dataplane.install_gate()
