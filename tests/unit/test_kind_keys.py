"""Kind keys: a kind's identity is (API group, kind), spelled so that old rows stay valid."""

from __future__ import annotations

import pytest

from tcpmesh.api import kinds
from tcpmesh.store import group_of, kind_key, object_kind_key, split_kind_key


def test_groups_stored_before_group_keys_keep_the_bare_kind() -> None:
    assert kind_key("", "Service") == "Service"
    assert kind_key("apps", "Deployment") == "Deployment"
    assert kind_key("networking.istio.io", "Gateway") == "Gateway"
    assert kind_key("rollouts.tcpmesh.io", "Rollout") == "Rollout"


def test_other_groups_are_qualified_as_group_kind_strings() -> None:
    assert kind_key("gateway.networking.k8s.io", "Gateway") == "Gateway.gateway.networking.k8s.io"
    assert split_kind_key("Gateway.gateway.networking.k8s.io") == (
        "gateway.networking.k8s.io",
        "Gateway",
    )
    assert split_kind_key("VirtualService") == ("", "VirtualService")


def test_the_group_comes_from_the_api_version() -> None:
    assert group_of("networking.istio.io/v1beta1") == "networking.istio.io"
    assert group_of("v1") == ""
    assert group_of(None) == ""
    obj = {"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute"}
    assert object_kind_key(obj) == "TCPRoute.gateway.networking.k8s.io"


def test_every_registered_kind_has_its_own_key_and_is_found_by_it() -> None:
    keys = [info.key for info in kinds.KINDS]
    assert len(set(keys)) == len(keys)
    for info in kinds.KINDS:
        assert kinds.by_key(info.key) is info
        obj = {"apiVersion": info.api_version(info.versions[-1]), "kind": info.kind}
        assert kinds.for_object(obj) is info
        assert kinds.resolve(info.key) is info
        assert kinds.resolve(info.qualified_plural) is info


def test_an_unregistered_group_is_an_unknown_kind() -> None:
    with pytest.raises(kinds.UnknownKind):
        kinds.for_object({"apiVersion": "example.com/v1", "kind": "Gateway"})
    with pytest.raises(kinds.UnknownKind):
        kinds.by_key("Gateway.example.com")
