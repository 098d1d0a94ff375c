"""A whole `HTTPScaledObject` as the API server returns it, reduced to what httpscale uses.

`read_object` is the envelope both kinds share (the InterceptorRoute uses it too).

`metadata` beyond name/namespace and `status` belong to the API server and the operator, so
they are accepted and ignored; anything else outside `spec` is refused like any unknown key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from httpscale.model.errors import ConfigError
from httpscale.model.fields import Fields
from httpscale.model.httpso import HTTPScaledObjectSpec, parse_httpso_spec

__all__ = ["HTTPScaledObject", "parse_httpso", "read_object"]


@dataclass(frozen=True, slots=True)
class HTTPScaledObject:
    """A whole object as the API server returns it, reduced to what httpscale uses."""

    namespace: str
    name: str
    spec: HTTPScaledObjectSpec

    @property
    def key(self) -> str:
        """The route key, "<namespace>/<name>"."""
        return f"{self.namespace}/{self.name}"


def parse_httpso(
    obj: Mapping[str, object], *, default_namespace: str = "default"
) -> HTTPScaledObject:
    """Parse a full `HTTPScaledObject` (apiVersion, kind, metadata, spec, status).

    `metadata` beyond name/namespace and `status` are accepted and ignored: they belong to
    the API server and the operator. Errors are attributed to "<namespace>/<name>".
    """
    namespace, name, spec = read_object(
        obj, kind="HTTPScaledObject", default_namespace=default_namespace
    )
    parsed = parse_httpso_spec(spec, source=f"{namespace}/{name}")
    return HTTPScaledObject(namespace=namespace, name=name, spec=parsed)


def read_object(
    obj: Mapping[str, object], *, kind: str, default_namespace: str
) -> tuple[str, str, Mapping[str, object]]:
    """The namespace, name and spec of a whole object of either kind.

    Only `metadata.name`/`namespace` are read; the rest of `metadata` (labels, uid,
    managedFields, ...) and `status` are the server's and the operator's. Any other key
    beside `apiVersion`, `kind`, `metadata`, `spec`, `status` is refused.
    """
    top = Fields(obj, source=f"<{kind}>", key="")
    meta = top.sub("metadata")
    name = namespace = None
    if meta is not None:
        name = meta.get_str("name")
        namespace = meta.get_str("namespace")
        meta.skip(*meta.keys())
    namespace = namespace or default_namespace
    source = f"{namespace}/{name or '<unnamed>'}"
    if not name:
        raise ConfigError(source, "metadata.name", "required")
    top.skip("apiVersion", "kind", "status")
    spec = top.raw("spec")
    try:
        top.finish()
    except ConfigError as exc:
        raise exc.with_source(source) from None
    if spec is None:
        raise ConfigError(source, "spec", "required")
    if not isinstance(spec, Mapping):
        raise ConfigError(source, "spec", "expected a mapping")
    return namespace, name, spec
