"""Every cluster check over one snapshot, in the order the output reads (pure)."""

from __future__ import annotations

from httpscale.doctor.apps import AppIndex, app_checks, index_apps
from httpscale.doctor.components import component_checks
from httpscale.doctor.findings import Finding, Status
from httpscale.doctor.keda import keda_checks
from httpscale.doctor.snapshot import ClusterSnapshot
from httpscale.doctor.traffic import traffic_checks

__all__ = ["check_cluster"]


def check_cluster(snap: ClusterSnapshot) -> tuple[list[Finding], AppIndex]:
    """The findings, and the objects' index (the live requests are planned from it)."""
    index = index_apps(snap)
    findings = [*keda_checks(snap), *component_checks(snap), *app_checks(snap, index),
                *traffic_checks(snap, index)]
    if not index.apps:
        where = f"namespace {snap.app_namespace}" if snap.app_namespace else "the cluster"
        findings.append(Finding("apps.none", "HTTPScaledObjects", Status.INFO,
                                f"none in {where}: nothing to route or scale yet"))
    return findings, index
