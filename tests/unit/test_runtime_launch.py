"""A container's environment: tcpmesh's variables, env values, fieldRefs, $(VAR)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tcpmesh.runtime.launch import expand, pod_variables, process_environment

POD: dict[str, Any] = {
    "metadata": {
        "name": "tcp-echo-v1-abc",
        "namespace": "demo",
        "uid": "u-1",
        "labels": {"app": "tcp-echo", "version": "v1"},
    },
    "spec": {"containers": []},
}


def test_expand_replaces_defined_names_and_keeps_the_rest() -> None:
    variables = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", variables) == "1-two"
    assert expand("$(UNDEFINED) $A", variables) == "$(UNDEFINED) $A"
    assert expand("$$(A) costs $$5", variables) == "$(A) costs $5"


def test_every_pod_gets_its_name_namespace_ip_and_the_state_dir() -> None:
    variables = pod_variables(POD, {"name": "c"}, "127.1.0.7", "127.0.0.1", Path("/s"))
    assert variables == {
        "POD_NAME": "tcp-echo-v1-abc",
        "POD_NAMESPACE": "demo",
        "POD_IP": "127.1.0.7",
        "TCPMESH_STATE_DIR": "/s",
    }


def test_container_env_values_field_refs_and_references_to_earlier_vars() -> None:
    container = {
        "name": "c",
        "env": [
            {"name": "GREETING", "value": "hi $(POD_NAME)"},
            {
                "name": "VERSION",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['version']"}},
            },
            {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "BOTH", "value": "$(VERSION)@$(MY_IP)"},
            {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "EMPTY"},
        ],
    }
    variables = pod_variables(POD, container, "127.1.0.7", "127.0.0.1", Path("/s"))
    assert variables["GREETING"] == "hi tcp-echo-v1-abc"
    assert variables["VERSION"] == "v1"
    assert variables["MY_IP"] == "127.1.0.7"
    assert variables["NODE"] == "127.0.0.1"
    assert variables["BOTH"] == "v1@127.1.0.7"
    assert variables["EMPTY"] == ""
    assert "SECRET" not in variables


def test_container_env_overrides_the_mesh_environment() -> None:
    env = process_environment({"PATH": "/pod/bin", "POD_IP": "127.1.0.9"})
    assert env["PATH"] == "/pod/bin"
    assert env["POD_IP"] == "127.1.0.9"
    assert env["PYTHONUNBUFFERED"] == "1"
