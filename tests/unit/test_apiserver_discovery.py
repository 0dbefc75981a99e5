"""Discovery pins every served kind: a kind added to the registry must be listed here too."""

from __future__ import annotations

from tcpmesh.api import kinds
from tcpmesh.apiserver import discovery

# (group/version, plural, kind, short names) of every resource tcpmesh serves.
SERVED = {
    ("v1", "pods", "Pod", ("po",)),
    ("v1", "services", "Service", ("svc",)),
    ("v1", "endpoints", "Endpoints", ("ep",)),
    ("v1", "events", "Event", ("ev",)),
    ("v1", "secrets", "Secret", ()),
    ("v1", "configmaps", "ConfigMap", ("cm",)),
    ("v1", "namespaces", "Namespace", ("ns",)),
    ("apps/v1", "deployments", "Deployment", ("deploy",)),
    ("rollouts.tcpmesh.io/v1alpha1", "rollouts", "Rollout", ("ro",)),
    *(
        (f"networking.istio.io/{v}", plural, kind, short)
        for v in ("v1", "v1beta1", "v1alpha3")
        for plural, kind, short in (
            ("gateways", "Gateway", ("gw",)),
            ("virtualservices", "VirtualService", ("vs",)),
            ("destinationrules", "DestinationRule", ("dr",)),
            ("serviceentries", "ServiceEntry", ("se",)),
            ("workloadentries", "WorkloadEntry", ("we",)),
            ("workloadgroups", "WorkloadGroup", ("wg",)),
        )
    ),
    ("gateway.networking.k8s.io/v1", "gatewayclasses", "GatewayClass", ("gc",)),
    ("gateway.networking.k8s.io/v1beta1", "gatewayclasses", "GatewayClass", ("gc",)),
    ("gateway.networking.k8s.io/v1", "gateways", "Gateway", ("gtw",)),
    ("gateway.networking.k8s.io/v1", "referencegrants", "ReferenceGrant", ("refgrant",)),
    ("gateway.networking.k8s.io/v1beta1", "referencegrants", "ReferenceGrant", ("refgrant",)),
    *(
        (f"gateway.networking.k8s.io/{v}", plural, kind, ())
        for v in ("v1", "v1alpha2")
        for plural, kind in (("tcproutes", "TCPRoute"), ("tlsroutes", "TLSRoute"))
    ),
}


def legacy_resources() -> set[tuple[str, str, str, tuple[str, ...]]]:
    found = set()
    versions = [("", v) for v in discovery.api_versions("h:1")["versions"]]
    for group in discovery.api_group_list()["groups"]:
        versions += [(group["name"], v["version"]) for v in group["versions"]]
    for group, version in versions:
        listing = discovery.api_resource_list(group, version)
        assert listing is not None
        for r in listing["resources"]:
            if "/" not in r["name"]:
                found.add((listing["groupVersion"], r["name"], r["kind"], tuple(r["shortNames"])))
    return found


def aggregated_resources(version: str) -> set[tuple[str, str, str, tuple[str, ...]]]:
    found = set()
    for core in (True, False):
        doc = discovery.aggregated(core, version)
        assert doc["apiVersion"] == f"apidiscovery.k8s.io/{version}"
        for group in doc["items"]:
            for v in group["versions"]:
                gv = f"{group['metadata']['name']}/{v['version']}".lstrip("/")
                for r in v["resources"]:
                    kind = r["responseKind"]["kind"]
                    found.add((gv, r["resource"], kind, tuple(r["shortNames"])))
    return found


def test_legacy_discovery_lists_exactly_the_served_kinds() -> None:
    assert legacy_resources() == SERVED


def test_aggregated_discovery_lists_exactly_the_served_kinds() -> None:
    assert aggregated_resources("v2") == SERVED
    assert aggregated_resources("v2beta1") == SERVED


def test_every_registered_kind_is_served() -> None:
    registered = {(i.api_version(v), i.plural) for i in kinds.KINDS for v in i.versions}
    assert registered == {(gv, plural) for gv, plural, _, _ in SERVED}


CLUSTER_SCOPED = {"namespaces", "gatewayclasses"}


def test_cluster_scoped_kinds_say_so_in_both_discoveries() -> None:
    for group, version in (("", "v1"), ("gateway.networking.k8s.io", "v1")):
        listing = discovery.api_resource_list(group, version)
        assert listing is not None
        for r in listing["resources"]:
            assert r["namespaced"] is (r["name"].split("/")[0] not in CLUSTER_SCOPED), r
    for core in (True, False):
        for group in discovery.aggregated(core, "v2")["items"]:
            for v in group["versions"]:
                for r in v["resources"]:
                    expected = "Cluster" if r["resource"] in CLUSTER_SCOPED else "Namespaced"
                    assert r["scope"] == expected, r


def test_subresources_and_verbs() -> None:
    apps = discovery.api_resource_list("apps", "v1")
    assert apps is not None
    by_name = {r["name"]: r for r in apps["resources"]}
    assert by_name["deployments/scale"]["kind"] == "Scale"
    assert by_name["deployments/scale"]["group"] == "autoscaling"
    assert "patch" in by_name["deployments"]["verbs"]
    core = discovery.api_resource_list("", "v1")
    assert core is not None
    pods = {r["name"]: r for r in core["resources"]}
    assert pods["pods/log"]["verbs"] == ["get"]
    # Pods are written by tcpmesh: users may read and delete them, not create them.
    assert "create" not in pods["pods"]["verbs"] and "delete" in pods["pods"]["verbs"]
    assert pods["pods"]["categories"] == ["all"]
    istio = discovery.api_resource_list("networking.istio.io", "v1")
    assert istio is not None
    assert istio["resources"][0]["categories"] == ["istio-io", "networking-istio-io"]


def test_aggregated_media_type_follows_the_accept_header() -> None:
    kubectl_132 = (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
        "application/json"
    )
    assert discovery.aggregated_media_type(kubectl_132) == "v2"
    kubectl_127 = (
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
    )
    assert discovery.aggregated_media_type(kubectl_127) == "v2beta1"
    assert discovery.aggregated_media_type("application/json, */*") is None
    assert discovery.aggregated_media_type("") is None


def test_version_is_a_kubernetes_version_with_tcpmesh_in_the_build_metadata() -> None:
    info = discovery.version_info("0.1.0")
    assert (info["major"], info["minor"]) == ("1", "32")
    assert info["gitVersion"] == "v1.32.0+tcpmesh-0.1.0"
