"""kubectl's JSONPath templates, as ``tcpmesh get -o jsonpath=`` renders them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tcpmesh.cli.jsonpath import JsonPathError, compile_template, format_value, go_json, render

# The seed's step 4, verbatim.
SEED_HOST = "{.status.loadBalancer.ingress[0].ip}"
SEED_PORT = '{.spec.ports[?(@.name=="tcp")].port}'


def gateway_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "istio-ingressgateway",
            "namespace": "istio-system",
            "labels": {"istio": "ingressgateway", "app.kubernetes.io/name": "gateway"},
            "creationTimestamp": "2026-11-26T00:28:42Z",
        },
        "spec": {
            "type": "LoadBalancer",
            "selector": {"istio": "ingressgateway"},
            "ports": [
                {"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
                {"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
                {"name": "tcp", "port": 31400, "targetPort": 31400, "protocol": "TCP"},
                {"name": "tls", "port": 15443, "targetPort": 15443, "protocol": "TCP"},
            ],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}},
    }


def echo_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "tcp-echo", "namespace": "default"},
        "spec": {"ports": [{"name": "tcp", "port": 9000}], "selector": {"app": "tcp-echo"}},
        "status": {"loadBalancer": {}},
    }


def service_list() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [gateway_service(), echo_service()],
    }


# ---------------------------------------------------------------- the seed


def test_seed_ingress_host() -> None:
    assert render(SEED_HOST, gateway_service()) == "127.0.0.1"


def test_seed_ingress_port() -> None:
    assert render(SEED_PORT, gateway_service()) == "31400"


def test_seed_host_is_empty_while_the_load_balancer_is_pending() -> None:
    svc = gateway_service()
    svc["status"] = {"loadBalancer": {}}
    assert render(SEED_HOST, svc) == ""


def test_seed_port_is_empty_when_no_port_is_named_tcp() -> None:
    svc = gateway_service()
    svc["spec"]["ports"] = [p for p in svc["spec"]["ports"] if p["name"] != "tcp"]
    assert render(SEED_PORT, svc) == ""


def test_filter_with_single_quotes_and_spaces() -> None:
    assert render("{.spec.ports[?(@.name == 'tcp')].port}", gateway_service()) == "31400"


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{.metadata.name}", "istio-ingressgateway"),
        ("{.spec.ports[0].name}", "status-port"),
        ("{.spec.ports[-1].name}", "tls"),
        ("{.spec.ports[*].port}", "15021 80 443 31400 15443"),
        ("{.spec.ports[1:3].port}", "80 443"),
        ("{.spec.ports[::2].port}", "15021 443 15443"),
        ("{.spec.ports[-2:].name}", "tcp tls"),
        ("{.spec.ports[0,3].name}", "status-port tcp"),
        ("{.spec.ports[?(@.port > 1000)].name}", "status-port tcp tls"),
        ("{.spec.ports[?(@.port<=443)].name}", "http2 https"),
        ("{.spec.ports[?(@.name!='tcp')].port}", "15021 80 443 15443"),
        ('{.spec.ports[?(@.name=~"^http")].port}', "80 443"),
        ("{.spec.ports[?(@.targetPort==@.port)].name}", "status-port tcp tls"),
        ("{.spec.ports[?(@.nodePort)].name}", ""),
        ("{.metadata.labels.app\\.kubernetes\\.io/name}", "gateway"),
        ("{.metadata['name']}", "istio-ingressgateway"),
        ("{$.metadata.namespace}", "istio-system"),
        ("{@.spec.type}", "LoadBalancer"),
        ("{..ip}", "127.0.0.1"),
        ("{.status..ip}", "127.0.0.1"),
    ],
)
def test_paths(template: str, expected: str) -> None:
    assert render(template, gateway_service()) == expected


def test_missing_fields_print_nothing() -> None:
    svc = gateway_service()
    assert render("{.status.foo}", svc) == ""
    assert render("{.no.such.path}", svc) == ""
    assert render("[{.spec.ports[42].port}]", svc) == "[]"
    assert render("a{.status.foo}b", svc) == "ab"


def test_text_outside_braces_is_literal() -> None:
    # No escape processing outside actions: a backslash-n stays two characters.
    assert render("ip=\\n{.status.loadBalancer.ingress[0].ip}}", gateway_service()) == (
        "ip=\\n127.0.0.1}"
    )
    assert render("no actions at all", {}) == "no actions at all"


def test_string_literals() -> None:
    assert render('{"\\n"}', {}) == "\n"
    assert render("{'\\t'}", {}) == "\t"
    assert render('{"a\\"b"}', {}) == 'a"b'
    assert render('{"\\u00e9\\x41"}', {}) == "éA"
    assert render('{"plain"}{.x}', {"x": 1}) == "plain1"


def test_literals_numbers_and_booleans() -> None:
    assert render("{true}/{false}/{42}/{-1.5}", {}) == "true/false/42/-1.5"


# ---------------------------------------------------------------- lists and range


def test_list_items_joined_by_space() -> None:
    assert render("{.items[*].metadata.name}", service_list()) == "istio-ingressgateway tcp-echo"
    assert render("{.items[0].metadata.name}", service_list()) == "istio-ingressgateway"
    assert render("{.items[*].spec.ports[*].port}", service_list()) == (
        "15021 80 443 31400 15443 9000"
    )


def test_range_over_items() -> None:
    template = '{range .items[*]}{.metadata.name}{"\\t"}{.spec.type}{"\\n"}{end}'
    assert render(template, service_list()) == "istio-ingressgateway\tLoadBalancer\ntcp-echo\t\n"


def test_range_root_means_the_current_item() -> None:
    # As in kubectl, "$" inside a range is the item, not the whole list.
    template = "{range .items[*]}[{$.metadata.name}]{end}"
    assert render(template, service_list()) == "[istio-ingressgateway][tcp-echo]"


def test_nested_range_and_text_after_end() -> None:
    template = "{range .items[*]}{.metadata.name}:{range .spec.ports[*]} {.port}{end};{end} done"
    assert render(template, service_list()) == (
        "istio-ingressgateway: 15021 80 443 31400 15443;tcp-echo: 9000; done"
    )


def test_range_with_no_items_prints_nothing() -> None:
    empty = {"kind": "List", "items": []}
    assert render("before{range .items[*]}{.metadata.name}{end}after", empty) == "beforeafter"


def test_unclosed_range_runs_to_the_end() -> None:
    assert render("{range .items[*]}<{.metadata.name}>", service_list()) == (
        "<istio-ingressgateway><tcp-echo>"
    )


def test_union_applies_each_member_to_all_values() -> None:
    # kubectl: all names first, then all ports.
    svc = echo_service()
    svc["spec"]["ports"].append({"name": "admin", "port": 9001})
    assert render("{.spec.ports[*]['name','port']}", svc) == "tcp admin 9000 9001"


def test_wildcard_field() -> None:
    assert render("{.spec.selector.*}", gateway_service()) == "ingressgateway"


# ---------------------------------------------------------------- output of values


def test_maps_and_lists_print_as_compact_sorted_json() -> None:
    svc = gateway_service()
    assert render("{.spec.selector}", svc) == '{"istio":"ingressgateway"}'
    assert render("{.status.loadBalancer.ingress}", svc) == '[{"ip":"127.0.0.1"}]'
    assert render("{.spec.ports[3]}", svc) == (
        '{"name":"tcp","port":31400,"protocol":"TCP","targetPort":31400}'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("raw string", "raw string"),
        (True, "true"),
        (False, "false"),
        (None, "<nil>"),
        (31400, "31400"),
        (1.5, "1.5"),
        (3.0, "3"),
        (1e6, "1e+06"),
        (123456.0, "123456"),
        (0.0001, "0.0001"),
        (2.5e-07, "2.5e-07"),
        ({"b": 1, "a": "<&>"}, '{"a":"\\u003c\\u0026\\u003e","b":1}'),
        ([1, 2.0, "x"], '[1,2,"x"]'),
    ],
)
def test_format_value_like_kubectl(value: Any, text: str) -> None:
    assert format_value(value) == text


def test_go_json_indent() -> None:
    assert go_json({"b": [1], "a": True}, indent=4) == (
        '{\n    "a": true,\n    "b": [\n        1\n    ]\n}'
    )


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("template", "detail"),
    [
        ("{.spec..[", "unterminated array"),
        ("{.spec.ports[0].name", "unclosed action"),
        ('{.spec.ports[?(@.name=="tcp"]}', "unterminated filter"),
        ("{.spec.ports[x]}", "invalid array index x"),
        ('{"abc}', "unterminated quoted string"),
        ("{.a....b}", "invalid multiple recursive descent"),
        ("{!}", "unrecognized character in action: U+0021 '!'"),
        ("{.a[?(@.x=<1)]}", "unrecognized filter operator =<"),
        ("{.a[::0]}", "step must be > 0"),
    ],
)
def test_malformed_templates_raise_like_kubectl(template: str, detail: str) -> None:
    with pytest.raises(JsonPathError) as info:
        render(template, gateway_service())
    assert str(info.value) == f"error parsing jsonpath {template}, {detail}"


def test_errors_surface_before_any_data_is_needed() -> None:
    with pytest.raises(JsonPathError, match=r"^error parsing jsonpath \{\.spec\.\.\["):
        compile_template("{.spec..[")


@pytest.mark.parametrize(
    ("template", "detail"),
    [("{end}", "not in range, nothing to end"), ("{foo}", "unrecognized identifier foo")],
)
def test_execution_errors(template: str, detail: str) -> None:
    compiled = compile_template(template)
    with pytest.raises(JsonPathError) as info:
        compiled.render({})
    assert str(info.value) == (
        f'error executing jsonpath "{template}": Error executing template: {detail}'
    )


def test_compiled_template_is_reusable_and_does_not_touch_the_data() -> None:
    compiled = compile_template(SEED_PORT)
    svc = gateway_service()
    before = copy.deepcopy(svc)
    assert compiled.render(svc) == "31400"
    assert compiled.render(echo_service()) == "9000"
    assert svc == before
