"""Kubernetes resource quantities ("500m", "1.5", "256Mi", "1G", "2e3") and a pod's requests.

A pod reserves the sum of its containers' requests, or more while an init container runs
that asks for more than that sum (the scheduler takes the larger): that is what a replica
costs on a cluster, whatever it actually uses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["GIB", "parse_quantity", "pod_requests"]

GIB = float(2**30)

_SUFFIX = {
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0,
    "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
}
_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$"
)


def parse_quantity(text: str | int | float) -> float:
    """The quantity in base units (cores, bytes); ValueError when it is not one."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def _container_requests(container: Mapping[str, Any]) -> tuple[float, float]:
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    # A limit without a request makes the request equal to the limit (API defaulting).
    cpu = requests.get("cpu", limits.get("cpu"))
    mem = requests.get("memory", limits.get("memory"))
    return (
        parse_quantity(cpu) if cpu is not None else 0.0,
        parse_quantity(mem) if mem is not None else 0.0,
    )


def pod_requests(pod_spec: Mapping[str, Any]) -> tuple[float, float] | None:
    """(CPU cores, bytes) one pod of this spec requests; None when no container asks for
    anything (the cost is then unknown, not zero)."""
    cpu = mem = 0.0
    for container in pod_spec.get("containers") or ():
        c, m = _container_requests(container)
        cpu, mem = cpu + c, mem + m
    init_cpu = init_mem = 0.0
    for container in pod_spec.get("initContainers") or ():
        c, m = _container_requests(container)
        if container.get("restartPolicy") == "Always":
            # A sidecar runs for the pod's whole life: it adds to the containers.
            cpu, mem = cpu + c, mem + m
        else:
            init_cpu, init_mem = max(init_cpu, c), max(init_mem, m)
    overhead = pod_spec.get("overhead") or {}
    cpu = max(cpu, init_cpu) + parse_quantity(overhead.get("cpu", 0))
    mem = max(mem, init_mem) + parse_quantity(overhead.get("memory", 0))
    if cpu == 0.0 and mem == 0.0:
        return None
    return cpu, mem
