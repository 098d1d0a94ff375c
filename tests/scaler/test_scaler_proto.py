"""The generated gRPC code matches the .proto, and the .proto matches KEDA's wire format."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

from httpscale.scaler.proto import externalscaler_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "httpscale" / "scaler" / "proto"
GENERATED = (
    "externalscaler_pb2.py",
    "externalscaler_pb2.pyi",
    "externalscaler_pb2_grpc.py",
    "externalscaler_pb2_grpc.pyi",
)


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen-proto"), str(tmp_path)], check=True, timeout=60)
    for name in GENERATED:
        assert filecmp.cmp(tmp_path / name, PROTO_DIR / name, shallow=False), (
            f"{name} is stale: run scripts/gen-proto"
        )


# KEDA's pkg/scalers/externalscaler/externalscaler.proto: message -> {field: (number, type)}.
KEDA_FIELDS = {
    "ScaledObjectRef": {
        "name": (1, "string"),
        "namespace": (2, "string"),
        "scalerMetadata": (3, "message"),
    },
    "IsActiveResponse": {"result": (1, "bool")},
    "GetMetricSpecResponse": {"metricSpecs": (1, "message")},
    "MetricSpec": {
        "metricName": (1, "string"),
        "targetSize": (2, "int64"),
        "targetSizeFloat": (3, "double"),
    },
    "GetMetricsRequest": {"scaledObjectRef": (1, "message"), "metricName": (2, "string")},
    "GetMetricsResponse": {"metricValues": (1, "message")},
    "MetricValue": {
        "metricName": (1, "string"),
        "metricValue": (2, "int64"),
        "metricValueFloat": (3, "double"),
    },
}
_TYPES = {9: "string", 8: "bool", 11: "message", 3: "int64", 1: "double"}


def test_wire_format_matches_keda() -> None:
    assert pb.DESCRIPTOR.package == "externalscaler"
    assert pb.DESCRIPTOR.name == "externalscaler.proto"
    for message, fields in KEDA_FIELDS.items():
        descriptor = pb.DESCRIPTOR.message_types_by_name[message]
        got = {f.name: (f.number, _TYPES[f.type]) for f in descriptor.fields}
        assert got == fields, message
    service = pb.DESCRIPTOR.services_by_name["ExternalScaler"]
    methods = {
        m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in service.methods
    }
    assert methods == {
        "IsActive": ("ScaledObjectRef", "IsActiveResponse", False),
        "StreamIsActive": ("ScaledObjectRef", "IsActiveResponse", True),
        "GetMetricSpec": ("ScaledObjectRef", "GetMetricSpecResponse", False),
        "GetMetrics": ("GetMetricsRequest", "GetMetricsResponse", False),
        "StreamMetricSpec": ("ScaledObjectRef", "GetMetricSpecResponse", True),
    }
