"""httpscale: HTTP scale-to-zero for Kubernetes.

Subpackages, by layer (imports go downward only):
  cli                       -> command line, builds settings, starts components
  local, interceptor, scaler, operator   -> the components
  routing, model, config, scaling        -> the shared core (imports no component)
"""

__version__ = "0.1.0"
