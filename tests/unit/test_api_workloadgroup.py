"""WorkloadGroup (networking.istio.io), validated as Istio's ValidateWorkloadGroup does:
the template required but not checked as a WorkloadEntry, metadata labels, the probe."""

from __future__ import annotations

from typing import Any

import pytest

from tcpmesh.api import validate_object


def _workload_group(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadGroup",
        "metadata": {"name": "g", "namespace": "default"},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "spec.template: template is required"),
        ({"template": {}, "probe": {}}, "spec.probe: unknown health check method <nil>"),
        (
            {"template": {}, "probe": {"periodSeconds": -1, "tcpSocket": {"port": 9000}}},
            "spec.probe.periodSeconds: periodSeconds must be non-negative",
        ),
        (
            {"template": {}, "probe": {"tcpSocket": {"port": 0}}},
            "spec.probe.tcpSocket.port: port number 0 must be in the range 1..65535",
        ),
        (
            {"template": {}, "probe": {"httpGet": {"port": 80, "scheme": "FTP"}}},
            'spec.probe.httpGet.scheme: httpGet.scheme must be one of "HTTPS", "HTTP"',
        ),
        (
            {"template": {}, "probe": {"exec": {}}},
            "spec.probe.exec.command: exec.command is required",
        ),
        (
            {"template": {}, "metadata": {"labels": {"bad key!": "v"}}},
            "spec.metadata.labels: invalid labels:",
        ),
    ],
)
def test_workload_group_validation_as_istio(spec: dict[str, Any], message: str) -> None:
    errors, _ = validate_object(_workload_group(spec))
    assert any(f'WorkloadGroup "g" is invalid: {message}' in e for e in errors), errors


def test_a_valid_workload_group_passes() -> None:
    spec = {
        "metadata": {"labels": {"app": "tcp-echo"}},
        "template": {"ports": {"tcp": 9000}},
        "probe": {"periodSeconds": 1, "tcpSocket": {"port": 9000}},
    }
    assert validate_object(_workload_group(spec)) == ([], [])
