"""Each analyzer of ``tcpmesh analyze`` on small hand-built meshes."""

from __future__ import annotations

from typing import Any

from tcpmesh.analysis import Message, analyze, format_message
from tests.unit.test_build_snapshot import (
    destination_rule,
    echo_service,
    gateway,
    meta,
    route,
    seed,
    virtual_service,
)


def gateway_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **meta("istio-ingressgateway-x", "istio-system"),
            "labels": {"app": "istio-ingressgateway", "istio": "ingressgateway"},
        },
        "spec": {"containers": [{"name": "istio-proxy", "image": "istio/proxyv2"}]},
    }


def mesh(*routing: dict[str, Any]) -> list[dict[str, Any]]:
    return [*seed(*routing), gateway_pod()]


def codes(messages: list[Message]) -> list[tuple[str, str, str]]:
    return [(m.level, m.code, m.text) for m in messages]


def test_the_seed_mesh_is_clean() -> None:
    assert analyze(mesh(virtual_service([route("v1", 80), route("v2", 20)]))) == []


def test_missing_subset_is_ist0101() -> None:
    messages = analyze(mesh(virtual_service([route("v3")])))
    assert codes(messages) == [
        ("Error", "IST0101", 'Referenced host+subset in destinationrule not found: "tcp-echo+v3"')
    ]
    assert (
        format_message(messages[0])
        == "Error [IST0101] (VirtualService default/tcp-echo) Referenced host+subset in "
        'destinationrule not found: "tcp-echo+v3"'
    )


def test_missing_host_and_port_are_ist0101() -> None:
    messages = analyze(mesh(virtual_service([route("v1", host="nope"), route(None, port=9002)])))
    texts = [m.text for m in messages if m.code == "IST0101"]
    assert 'Referenced host not found: "nope"' in texts
    assert 'Referenced host:port not found: "tcp-echo:9002"' in texts


def test_missing_gateway_is_ist0101_but_mesh_is_exempt() -> None:
    bound = virtual_service([route("v1")], gateways=["ghost", "mesh"])
    bound["spec"]["hosts"] = ["tcp-echo"]
    texts = [m.text for m in analyze(mesh(bound)) if m.code == "IST0101"]
    assert texts == ['Referenced gateway not found: "default/ghost"']


def test_multi_port_service_without_destination_port_is_ist0112() -> None:
    objects = mesh(virtual_service([route("v1", port=None)]))
    objects[1] = echo_service((9000, 9001))
    (message,) = [m for m in analyze(objects) if m.code == "IST0112"]
    assert message.text == (
        'This VirtualService routes to a service "tcp-echo" that exposes multiple ports '
        "[9000 9001]. Specifying a port in the destination is required to disambiguate."
    )


def test_subset_that_selects_no_pod_is_ist0173() -> None:
    objects = mesh(virtual_service([route("v1")]))
    objects[6] = destination_rule(subsets=[{"name": "v9", "labels": {"version": "v9"}}])
    assert (
        codes(analyze(objects))
        == [
            (
                "Error",
                "IST0173",
                "The Subset v9 defined in the DestinationRule does not select any pods. Which may "
                "lead to 503 UH (NoHealthyUpstream).",
            ),
            (
                "Error",
                "IST0101",
                'Referenced host+subset in destinationrule not found: "tcp-echo+v1"',
            ),
        ][::-1]
    )


def test_deployment_templates_count_as_workloads_before_pods_exist() -> None:
    objects = [o for o in mesh(virtual_service([route("v1")])) if o["kind"] != "Pod"]
    objects += [gateway_pod()]
    for version in ("v1", "v2"):
        labels = {"app": "tcp-echo", "version": version}
        objects.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta(f"tcp-echo-{version}"),
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "c", "image": "istio/tcp-echo-server"}]},
                    },
                },
            }
        )
    assert analyze(objects) == []


def test_destination_rule_for_unknown_host_is_ist0174() -> None:
    objects = mesh(virtual_service([route("v1")]))
    objects[6]["spec"]["host"] = "ghost"
    messages = [m for m in analyze(objects) if m.code == "IST0174"]
    assert [m.text for m in messages] == [
        "The host ghost.default.svc.cluster.local defined in the DestinationRule does not "
        "match any services in the mesh."
    ]


def test_gateway_selecting_no_workload_is_ist0101() -> None:
    objects = mesh(virtual_service([route("v1")]))
    objects[5] = gateway(selector={"istio": "egressgateway"})
    assert ('Referenced selector not found: "istio=egressgateway"') in [
        m.text for m in analyze(objects)
    ]


def test_gateway_port_missing_from_the_gateway_service_is_ist0162() -> None:
    objects = mesh(virtual_service([route("v1")], match=[{"port": 31401}]))
    objects[5] = gateway(port=31401)
    (message,) = [m for m in analyze(objects) if m.code == "IST0162"]
    assert message.level == "Warning"
    assert "(port 31401)" in message.text
    assert "Pod selector istio=ingressgateway" in message.text


def test_two_gateways_on_one_port_conflict_ist0145() -> None:
    second = gateway(name="second")
    messages = [
        m for m in analyze(mesh(virtual_service([route("v1")]), second)) if m.code == "IST0145"
    ]
    assert {m.name for m in messages} == {"tcp-echo-gateway", "second"}
    assert "port 31400" in messages[0].text


def test_vs_hosts_not_in_gateway_is_ist0132() -> None:
    objects = mesh(virtual_service([route("v1")]))
    objects[5]["spec"]["servers"][0]["hosts"] = ["*.example.com"]
    objects[-2]["spec"]["hosts"] = ["tcp.other.org"]
    (message,) = [m for m in analyze(objects) if m.code == "IST0132"]
    assert message.text == (
        "one or more host [tcp.other.org] defined in VirtualService default/tcp-echo not "
        "found in Gateway default/tcp-echo-gateway."
    )


def test_two_mesh_virtual_services_for_one_host_are_ist0109() -> None:
    a = virtual_service([route("v1")], name="a", gateways=[])
    b = virtual_service([route("v2")], name="b", gateways=[])
    for vs in (a, b):
        vs["spec"]["hosts"] = ["tcp-echo"]
    messages = [m for m in analyze(mesh(a, b)) if m.code == "IST0109"]
    assert {m.name for m in messages} == {"a", "b"}


def test_weights_not_adding_to_100_warn_with_effective_split() -> None:
    messages = analyze(mesh(virtual_service([route("v1", 60), route("v2", 30)])))
    (warning,) = [m for m in messages if m.code == "IST0133"]
    assert warning.level == "Warning"
    assert "total destination weight 90 != 100" in warning.text
    assert "66.7%" in warning.text and "33.3%" in warning.text


def test_errors_come_before_warnings_and_carry_their_file() -> None:
    objects = mesh(virtual_service([route("v3", 60), route("v2", 30)]))
    messages = analyze(objects, {("VirtualService", "default", "tcp-echo"): "vs.yaml"})
    assert [m.level for m in messages] == ["Error", "Warning"]
    assert format_message(messages[0]).startswith(
        "Error [IST0101] (VirtualService default/tcp-echo vs.yaml) "
    )


def test_service_entry_hosts_are_known_destinations() -> None:
    entry = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": meta("vms"),
        "spec": {
            "hosts": ["legacy.example.com"],
            "ports": [{"number": 7000, "name": "tcp", "protocol": "TCP"}],
            "resolution": "STATIC",
            "endpoints": [{"address": "127.0.0.8", "labels": {"version": "v1"}}],
        },
    }
    good = virtual_service([route(None, host="legacy.example.com", port=7000)], name="good")
    bad = virtual_service([route(None, host="legacy.example.com", port=7001)], name="bad")
    messages = analyze([*mesh(good, bad), entry])
    assert codes(messages) == [
        ("Error", "IST0101", 'Referenced host:port not found: "legacy.example.com:7001"')
    ]
    assert messages[0].name == "bad"


def test_servers_sharing_a_listen_port_through_target_port_conflict_ist0145() -> None:
    from tests.unit.test_build_snapshot import port_80_and_8080

    messages = [m for m in analyze([*port_80_and_8080(), gateway_pod()]) if m.code == "IST0145"]
    assert [(m.level, m.name) for m in messages] == [("Error", "on-8080")]
    assert "ports 80 and 8080 are both served on port 80" in messages[0].text
    assert "default/on-80" in messages[0].text


def test_a_smooth_split_on_an_envoy_gateway_is_reported_as_a_difference() -> None:
    pod = gateway_pod()
    pod["spec"]["containers"][0]["image"] = "docker.io/envoyproxy/envoy:v1.40.0"
    split = virtual_service([route("v1", 80), route("v2", 20)])
    messages = [m for m in analyze([*seed(split), pod]) if m.code == "TCM0001"]
    assert [(m.level, m.kind, m.name) for m in messages] == [("Info", "VirtualService", "tcp-echo")]
    assert "weighted pick smooth is not available on Envoy" in messages[0].text
    # The built-in proxy honours it: nothing to say; nor on Envoy with the random pick.
    assert not [m for m in analyze(mesh(split)) if m.code == "TCM0001"]
    split["metadata"]["annotations"] = {"tcpmesh.io/weighted-pick": "random"}
    assert not [m for m in analyze([*seed(split), pod]) if m.code == "TCM0001"]


def test_version_affinity_on_an_envoy_gateway_is_reported() -> None:
    pod = gateway_pod()
    pod["spec"]["containers"][0]["image"] = "docker.io/envoyproxy/envoy:v1.40.0"
    split = virtual_service([route("v1", 80), route("v2", 20)])
    split["metadata"]["annotations"] = {"traffic.tcpmesh.io/version-affinity": "source-ip"}
    messages = [m for m in analyze([*seed(split), pod]) if m.code == "TCM0001"]
    assert len(messages) == 1
    assert "version affinity source-ip is not available on Envoy" in messages[0].text
    assert not [m for m in analyze(mesh(split)) if m.code == "TCM0001"]


def test_a_rollout_over_a_missing_route_is_reported_tcm0002() -> None:
    rollout = {
        "apiVersion": "rollouts.tcpmesh.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "tcp-echo", "namespace": "default"},
        "spec": {
            "virtualService": {"name": "tcp-echo", "port": 9999},
            "stable": {"host": "tcp-echo", "subset": "v1"},
            "canary": {"host": "tcp-echo", "subset": "v2"},
            "steps": [{"setWeight": 20}],
        },
    }
    split = virtual_service([route("v1", 80), route("v2", 20)])
    messages = [m for m in analyze([*seed(split), rollout]) if m.code == "TCM0002"]
    assert [(m.level, m.kind, m.name) for m in messages] == [("Error", "Rollout", "tcp-echo")]
    assert "has no tcp route matching port 9999" in messages[0].text
    rollout["spec"]["virtualService"] = {"name": "tcp-echo", "route": 0}
    assert not [m for m in analyze([*seed(split), rollout]) if m.code == "TCM0002"]
