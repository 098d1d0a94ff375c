"""httpscale: HTTP scale-to-zero for Kubernetes.

Subpackages, by layer (imports go downward only):
  cli                       -> command line, builds settings, starts components
  local, interceptor, scaler, operator   -> the components
  routing, model, config, scaling        -> the shared core (imports no component)
"""

__version__ = "0.1.0"

# Which build of the proxy's hot path to import (mypyc's or the source) is decided when the
# first of its modules is imported, and before that import finds a file: see
# httpscale/dataplane.py. Until then, nothing is checked (the scaler never imports one).
from httpscale import dataplane as _dataplane

_dataplane.install_gate()
