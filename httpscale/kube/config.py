"""Where the Kubernetes API is and who we are to it: in-cluster, or a kubeconfig file.

The order is controller-runtime's, so httpscale finds a cluster wherever KEDA's add-on would:
`--kubeconfig` when given; else `$KUBECONFIG`; else the pod's ServiceAccount (in-cluster);
else `~/.kube/config`. In-cluster tokens are re-read from their file as the kubelet rotates
them (kubernetes_asyncio's refresh hook).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from kubernetes_asyncio import client, config

from httpscale.kube.api import Kube

__all__ = ["KubeConfigError", "KubeSettings", "connect"]

_INCLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class KubeConfigError(RuntimeError):
    """No usable cluster configuration: the message says which sources were tried."""


@dataclass(frozen=True, slots=True)
class KubeSettings:
    kubeconfig: Path | None = None  # None: $KUBECONFIG, in-cluster, then ~/.kube/config
    context: str | None = None  # kubeconfig context; None: its current-context
    request_timeout: float = 30.0  # seconds, one ordinary API request end to end
    connect_timeout: float = 10.0  # seconds, TCP + TLS connect to the API server


def _kubeconfig_file(settings: KubeSettings) -> Path | None:
    """The kubeconfig to read, or None for in-cluster; KubeConfigError if there is none."""
    if settings.kubeconfig is not None:
        return settings.kubeconfig
    env = os.environ.get("KUBECONFIG")
    if env:
        return Path(env)  # kubernetes_asyncio also merges a ':'-separated list
    if os.environ.get("KUBERNETES_SERVICE_HOST") and _INCLUSTER_TOKEN.is_file():
        return None
    default = Path("~/.kube/config").expanduser()
    if not default.is_file():
        raise KubeConfigError(
            "no cluster configuration: pass --kubeconfig, set KUBECONFIG, or run in a pod "
            f"with a ServiceAccount token (tried {default})"
        )
    return default


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                    "all_proxy", "NO_PROXY", "no_proxy")


def _skip_env_lookups(api: client.ApiClient) -> None:
    """kubernetes_asyncio opens its session with `trust_env=True`, so aiohttp looks for proxy
    variables and reads ~/.netrc, in worker threads, on every request: measured 0.5 ms of 1.1
    per API call. Without proxy variables there is nothing to find (API auth is a token or a
    client certificate, never .netrc), so the session is reopened on the same connector
    without the lookups. With proxy variables set, it is left as it is."""
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return
    rest = api.rest_client
    old: aiohttp.ClientSession = rest.pool_manager
    connector = old.connector
    old.detach()  # the new session takes the connector over; the old one is closed
    # read_bufsize as kubernetes_asyncio sets it: one watch line may hold a large object.
    rest.pool_manager = aiohttp.ClientSession(
        connector=connector, trust_env=False, read_bufsize=2**21
    )


async def connect(settings: KubeSettings) -> Kube:
    """A `Kube` client for the configured cluster; `KubeConfigError` if none is usable."""
    cfg = client.Configuration()
    path = _kubeconfig_file(settings)
    try:
        if path is None:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            source = "in-cluster ServiceAccount"
        else:
            await config.load_kube_config(
                config_file=str(path),
                context=settings.context,
                client_configuration=cfg,
                persist_config=False,
            )
            source = f"kubeconfig {path}"
    except config.ConfigException as exc:
        raise KubeConfigError(f"cannot load the cluster configuration: {exc}") from exc
    except OSError as exc:
        raise KubeConfigError(f"cannot read the cluster configuration: {exc}") from exc
    api = client.ApiClient(cfg)
    _skip_env_lookups(api)
    return Kube(
        api,
        request_timeout=settings.request_timeout,
        connect_timeout=settings.connect_timeout,
        source=source,
    )
