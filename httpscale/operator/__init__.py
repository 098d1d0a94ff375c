"""The operator: HTTPScaledObject -> KEDA ScaledObject, Ready conditions and Events, for
HTTPScaledObjects and InterceptorRoutes; one writer among replicas (Lease). See
docs/operator.md."""
