"""The protobuf OpenAPI v2 document decodes to the same definitions as the JSON one."""

from __future__ import annotations

from tcpmesh.api import openapi
from tcpmesh.apiserver import openapi_pb


def test_protobuf_document_carries_every_definition_and_its_extensions() -> None:
    document = openapi.openapi_v2()
    data = openapi_pb.encode(document)
    decoded = openapi_pb.decode(data)
    named = {n.name: n.value for n in decoded.definitions.additional_properties}
    assert set(named) == set(document["definitions"])
    vs = named["io.istio.networking.v1.VirtualService"]
    extensions = {e.name: e.value.yaml for e in vs.vendor_extension}
    assert "kind: VirtualService" in extensions["x-kubernetes-group-version-kind"]
    props = {p.name: p.value for p in vs.properties.additional_properties}
    assert props["spec"]._ref == "#/definitions/dev.tcpmesh.api.VirtualServiceSpec"
    route = named["dev.tcpmesh.api.RouteDestination"]
    weight = {p.name: p.value for p in route.properties.additional_properties}["weight"]
    assert list(weight.type.value) == ["integer"]
