"""`httpscale doctor`: checks a cluster (or a local-mode file) and explains each failure.

A sans-IO core of checks over plain data (`snapshot.ClusterSnapshot` -> `findings.Finding`s:
`keda`, `components`, `apps`, `traffic`, `live`, combined by `cluster.check_cluster`), a
gatherer that reads that data with httpscale's own client (`gather`), local mode's checks
(`local`), and the output (`output`) and command (`cli`). docs/doctor.md describes each check.

It reuses what the components decide rather than deciding again: the model parses objects,
the operator's `RouteClaims` finds hosts claimed twice and `desired_scaled_object` says what a
ScaledObject should hold, and the interceptor's `RouteTable` matches hosts and paths.
"""

from httpscale.doctor.findings import Finding, Status, exit_code

__all__ = ["Finding", "Status", "exit_code"]
