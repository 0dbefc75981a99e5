"""ServiceEntry and WorkloadEntry as API objects: kinds, shape, Istio's messages, tables.

Validation cases start from a valid entry, break one thing, and expect the lines Istio's
webhook (``pkg/config/validation``: ValidateServiceEntry, validateWorkloadEntry,
validateExportTo) prints, in tcpmesh's ``<resource> is invalid: <path>: <reason>`` form.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tcpmesh.api import InvalidInput, from_dict, kinds, load_documents_with_warnings, models
from tcpmesh.api import validate_object as validate
from tcpmesh.cli import printers

Obj = dict[str, Any]
SE_LABEL = 'ServiceEntry "vm-echo"'
WE_LABEL = 'WorkloadEntry "vm-1"'


def service_entry(**spec: Any) -> Obj:
    base: Obj = {
        "hosts": ["vm-echo.example.internal"],
        "location": "MESH_INTERNAL",
        "resolution": "STATIC",
        "ports": [{"number": 9000, "name": "tcp", "protocol": "TCP"}],
        "endpoints": [
            {"address": "10.0.0.1", "labels": {"version": "v1"}},
            {"address": "10.0.0.2", "ports": {"tcp": 9001}, "labels": {"version": "v2"}},
        ],
    }
    base.update(spec)
    for key in [k for k, v in base.items() if v is None]:
        del base[key]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "vm-echo", "namespace": "default"},
        "spec": base,
    }


def workload_entry(**spec: Any) -> Obj:
    base: Obj = {"address": "10.0.0.7", "labels": {"app": "vm"}, "ports": {"tcp": 9000}}
    base.update(spec)
    for key in [k for k, v in base.items() if v is None]:
        del base[key]
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "WorkloadEntry",
        "metadata": {"name": "vm-1", "namespace": "default"},
        "spec": base,
    }


def errors_of(obj: Obj) -> list[str]:
    return validate(obj)[0]


def warnings_of(obj: Obj) -> list[str]:
    return validate(obj)[1]


def se_error(path: str, message: str) -> str:
    return f"{SE_LABEL} is invalid: {path}: {message}"


def se_warning(path: str, message: str) -> str:
    return f"{SE_LABEL}: {path}: {message}"


# ---------------------------------------------------------------- kinds and shape


@pytest.mark.parametrize(
    ("typed", "kind", "plural"),
    [
        ("se", "ServiceEntry", "serviceentries"),
        ("serviceentries", "ServiceEntry", "serviceentries"),
        ("ServiceEntry", "ServiceEntry", "serviceentries"),
        ("serviceentries.networking.istio.io", "ServiceEntry", "serviceentries"),
        ("we", "WorkloadEntry", "workloadentries"),
        ("workloadentry", "WorkloadEntry", "workloadentries"),
    ],
)
def test_kinds_resolve_by_short_name_plural_and_kind(typed: str, kind: str, plural: str) -> None:
    info = kinds.resolve(typed)
    assert (info.kind, info.plural, info.group) == (kind, plural, "networking.istio.io")
    assert (
        info.api_path("default", "x")
        == f"/apis/networking.istio.io/v1/namespaces/default/{plural}/x"
    )


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_every_istio_version_is_accepted(version: str) -> None:
    se = service_entry()
    se["apiVersion"] = f"networking.istio.io/{version}"
    we = workload_entry()
    we["apiVersion"] = f"networking.istio.io/{version}"
    assert validate(se) == ([], [])
    assert validate(we) == ([], [])


def test_typed_model_carries_every_field() -> None:
    se = service_entry(
        addresses=["240.0.0.1"],
        exportTo=["*"],
        subjectAltNames=["spiffe://cluster.local/ns/default/sa/vm"],
        endpoints=[
            {
                "address": "10.0.0.1",
                "ports": {"tcp": 9001},
                "labels": {"version": "v1"},
                "network": "vm-net",
                "locality": "us-east1/b",
                "weight": 3,
                "serviceAccount": "vm",
            }
        ],
    )
    typed = from_dict(se)
    assert isinstance(typed, models.ServiceEntry)
    spec = typed.spec
    assert spec.hosts == ["vm-echo.example.internal"]
    assert spec.location == "MESH_INTERNAL"
    assert spec.resolution == "STATIC"
    assert spec.ports[0] == models.ServiceEntryPort(number=9000, name="tcp", protocol="TCP")
    endpoint = spec.endpoints[0]
    assert endpoint is not None
    assert (endpoint.address, endpoint.ports, endpoint.weight) == ("10.0.0.1", {"tcp": 9001}, 3)
    assert (endpoint.network, endpoint.locality, endpoint.service_account) == (
        "vm-net",
        "us-east1/b",
        "vm",
    )
    assert spec.subject_alt_names == ["spiffe://cluster.local/ns/default/sa/vm"]
    assert spec.export_to == ["*"]


def test_defaults_are_istios_enum_zero_values() -> None:
    typed = from_dict(service_entry(location=None, resolution=None, endpoints=None))
    assert isinstance(typed, models.ServiceEntry)
    assert (typed.spec.location, typed.spec.resolution) == ("MESH_EXTERNAL", "NONE")


def test_workload_selector_uses_plain_labels() -> None:
    typed = from_dict(service_entry(endpoints=None, workloadSelector={"labels": {"app": "vm"}}))
    assert isinstance(typed, models.ServiceEntry)
    assert typed.spec.workload_selector == models.EntryWorkloadSelector(labels={"app": "vm"})
    errors = errors_of(service_entry(endpoints=None, workloadSelector={"matchLabels": {"a": "b"}}))
    assert errors == [se_error("spec.workloadSelector.matchLabels", "unknown field")]


def test_spec_is_required() -> None:
    se = service_entry()
    del se["spec"]
    we = workload_entry()
    del we["spec"]
    assert errors_of(se) == [se_error("spec", "Required value")]
    assert errors_of(we) == [f"{WE_LABEL} is invalid: spec: Required value"]


def test_unknown_resolution_and_location_name_the_supported_values() -> None:
    errors = errors_of(service_entry(resolution="DNS_RR", location="EXTERNAL"))
    assert errors == [
        se_error(
            "spec.location",
            'Unsupported value: "EXTERNAL": supported values: "MESH_EXTERNAL", "MESH_INTERNAL"',
        ),
        se_error(
            "spec.resolution",
            'Unsupported value: "DNS_RR": supported values: "NONE", "STATIC", "DNS", '
            '"DNS_ROUND_ROBIN", "DYNAMIC_DNS"',
        ),
    ]


def test_typo_in_an_endpoint_field_is_an_unknown_field() -> None:
    errors = errors_of(service_entry(endpoints=[{"address": "10.0.0.1", "lables": {}}]))
    assert errors == [se_error("spec.endpoints[0].lables", "unknown field")]


def test_port_number_must_be_an_integer() -> None:
    errors = errors_of(service_entry(ports=[{"number": "9000", "name": "tcp"}]))
    assert errors == [se_error("spec.ports[0].number", 'must be an integer, got "9000"')]


def test_manifest_loads_with_namespace_defaulted() -> None:
    text = """
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: vm-echo
spec:
  hosts: [vm-echo.example.internal]
  resolution: STATIC
  ports:
  - {number: 9000, name: tcp, protocol: TCP}
  endpoints:
  - address: 10.0.0.1
    labels: {version: v1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: vm-1
spec:
  address: 10.0.0.7
  labels: {app: vm}
"""
    objects, warnings = load_documents_with_warnings(text, "vm.yaml", "prod")
    assert [(o["kind"], o["metadata"]["namespace"]) for o in objects] == [
        ("ServiceEntry", "prod"),
        ("WorkloadEntry", "prod"),
    ]
    assert warnings == []
    assert objects[0]["spec"]["endpoints"] == [{"address": "10.0.0.1", "labels": {"version": "v1"}}]


def test_bad_manifest_names_file_resource_and_field() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm-echo}
spec:
  hosts: [vm-echo.example.internal]
  resolution: STATIC
  ports: [{number: 9000, name: tcp}]
  endpoints: [{address: vm.example.internal}]
"""
    with pytest.raises(InvalidInput) as caught:
        load_documents_with_warnings(text, "vm.yaml")
    assert caught.value.messages == [
        "vm.yaml: "
        + se_error(
            "spec.endpoints[0].address",
            'endpoint address "vm.example.internal" is not a valid IP address',
        )
    ]


# ---------------------------------------------------------------- ServiceEntry: valid forms


def test_reference_entry_is_valid_without_warnings() -> None:
    assert validate(service_entry()) == ([], [])


@pytest.mark.parametrize(
    "spec",
    [
        {"resolution": "DNS", "endpoints": None},
        {"resolution": "DNS_ROUND_ROBIN", "endpoints": [{"address": "vm.example.internal"}]},
        {
            "resolution": "DNS",
            "endpoints": [{"address": "vm.example.internal"}, {"address": "10.0.0.3"}],
        },
        {"resolution": "NONE", "endpoints": None, "addresses": ["10.0.0.0/24"]},
        {"resolution": "STATIC", "endpoints": None, "workloadSelector": {"labels": {"app": "vm"}}},
        {"hosts": ["*.example.internal"]},
        {"exportTo": [".", "prod"]},
        {"exportTo": ["~"]},
        {"endpoints": [{"address": "unix:///var/run/echo.sock"}]},
        {"endpoints": [{"address": "unix://@echo"}]},
    ],
)
def test_valid_entries(spec: Obj) -> None:
    assert errors_of(service_entry(**spec)) == []


# ---------------------------------------------------------------- ServiceEntry: messages


def test_no_hosts() -> None:
    assert errors_of(service_entry(hosts=[])) == [
        se_error("spec.hosts", "service entry must have at least one host")
    ]


def test_full_wildcard_host() -> None:
    assert errors_of(service_entry(hosts=["*"])) == [se_error("spec.hosts[0]", "invalid host *")]


def test_bad_host_name() -> None:
    assert errors_of(service_entry(hosts=["vm_echo.example"])) == [
        se_error("spec.hosts[0]", 'domain name "vm_echo.example" invalid (label "vm_echo" invalid)')
    ]


def test_partial_wildcard_host_is_a_warning() -> None:
    errors, warnings = validate(service_entry(hosts=["*x.example.internal"]))
    assert errors == []
    assert warnings == [
        se_warning("spec.hosts[0]", 'partial wildcard "*x.example.internal" not allowed')
    ]


def test_bad_address_and_cidr() -> None:
    errors = errors_of(service_entry(addresses=["10.0.0.300", "10.0.0.0/99"]))
    assert errors == [
        se_error("spec.addresses[0]", "10.0.0.300 is not a valid IP"),
        se_error("spec.addresses[1]", "10.0.0.0/99 is not a valid CIDR block"),
    ]


def test_cidr_addresses_only_for_none_and_static() -> None:
    errors = errors_of(service_entry(resolution="DNS", endpoints=None, addresses=["10.0.0.0/24"]))
    assert errors == [
        se_error(
            "spec.addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types"
        )
    ]


def test_selector_and_endpoints_together() -> None:
    errors = errors_of(service_entry(workloadSelector={"labels": {"app": "vm"}}))
    assert errors == [
        se_error("spec", "only one of WorkloadSelector or Endpoints is allowed in Service Entry")
    ]


def test_selector_with_wildcard_or_empty_key_is_reported_alone() -> None:
    errors = errors_of(
        service_entry(
            hosts=["*"], endpoints=None, workloadSelector={"labels": {"": "x", "a": "v*"}}
        )
    )
    assert errors == [
        se_error("spec.workloadSelector.labels", 'empty key is not supported in selector: "=x"'),
        se_error("spec.workloadSelector.labels", 'wildcard is not supported in selector: "a=v*"'),
    ]


def test_selector_without_labels_is_a_warning() -> None:
    errors, warnings = validate(service_entry(endpoints=None, workloadSelector={}))
    assert errors == []
    assert warnings == [
        se_warning(
            "spec.workloadSelector",
            "service entry: workload selector specified without labels, will be applied to all "
            "services in namespace",
        )
    ]


def test_null_port() -> None:
    errors = errors_of(service_entry(ports=[None], endpoints=None))
    assert errors == [se_error("spec.ports[0]", "service entry port may not be null")]


def test_duplicate_port_name_and_number() -> None:
    ports = [
        {"number": 9000, "name": "tcp", "protocol": "TCP"},
        {"number": 9000, "name": "tcp", "protocol": "TCP"},
    ]
    assert errors_of(service_entry(ports=ports)) == [
        se_error("spec.ports[1].name", 'service entry port name "tcp" already defined'),
        se_error("spec.ports[1].number", "service entry port 9000 already defined"),
    ]


def test_bad_port_number_target_port_name_and_protocol() -> None:
    ports = [{"number": 70000, "name": "tcp_x", "protocol": "QUIC", "targetPort": 0}]
    assert errors_of(service_entry(ports=ports, endpoints=None)) == [
        se_error("spec.ports[0].name", "invalid port name: tcp_x"),
        se_error("spec.ports[0].protocol", "unsupported protocol: QUIC"),
        se_error("spec.ports[0].number", "port number 70000 must be in the range 1..65535"),
    ]
    ports = [{"number": 9000, "name": "tcp", "targetPort": 65536}]
    assert errors_of(service_entry(ports=ports, endpoints=None)) == [
        se_error("spec.ports[0].targetPort", "port number 65536 must be in the range 1..65535")
    ]


def test_protocol_names_are_case_insensitive() -> None:
    ports = [{"number": 9000, "name": "tcp", "protocol": "mongo"}]
    assert errors_of(service_entry(ports=ports)) == []


def test_tcp_port_without_addresses_warns_only_without_auto_allocation() -> None:
    message = (
        "addresses are required for ports serving TCP (or unset) protocol when IP "
        "Autoallocation is not enabled"
    )
    # NONE resolution gets no automatic address.
    warnings = warnings_of(service_entry(resolution="NONE", endpoints=None))
    assert warnings == [se_warning("spec.ports[0]", message)]
    opted_out = service_entry()
    opted_out["metadata"]["labels"] = {"networking.istio.io/enable-autoallocate-ip": "False"}
    assert warnings_of(opted_out) == [se_warning("spec.ports[0]", message)]
    assert warnings_of(service_entry()) == []
    assert (
        warnings_of(service_entry(resolution="NONE", endpoints=None, addresses=["240.0.0.1"])) == []
    )


def test_none_resolution_with_endpoints_or_selector() -> None:
    assert errors_of(service_entry(resolution="NONE", addresses=["240.0.0.1"])) == [
        se_error("spec.endpoints", "no endpoints should be provided for resolution type none")
    ]
    warnings = warnings_of(
        service_entry(
            resolution="NONE",
            endpoints=None,
            addresses=["240.0.0.1"],
            workloadSelector={"labels": {"app": "vm"}},
        )
    )
    assert warnings == [
        se_warning(
            "spec.workloadSelector",
            "workloadSelector should not be set when resolution mode is NONE",
        )
    ]


def test_static_endpoint_checks() -> None:
    endpoints = [
        None,
        {"labels": {"version": "v1"}},
        {"address": "vm.example.internal"},
        {"address": "10.0.0.1", "ports": {"http": 80, "Tcp_": 70000}, "labels": {"a b": "c"}},
    ]
    assert errors_of(service_entry(endpoints=endpoints)) == [
        se_error("spec.endpoints[0]", "endpoint cannot be nil"),
        se_error("spec.endpoints[1].address", "address is required"),
        se_error(
            "spec.endpoints[2].address",
            'endpoint address "vm.example.internal" is not a valid IP address',
        ),
        se_error(
            "spec.endpoints[3].ports[Tcp_]",
            "endpoint port 70000 is not defined by the service entry",
        ),
        se_error("spec.endpoints[3].ports[Tcp_]", "invalid port name: Tcp_"),
        se_error(
            "spec.endpoints[3].ports[Tcp_]", "port number 70000 must be in the range 1..65535"
        ),
        se_error(
            "spec.endpoints[3].ports[http]", "endpoint port 80 is not defined by the service entry"
        ),
        se_error("spec.endpoints[3].labels", 'invalid tag key: "a b"'),
    ]


def test_endpoint_without_address_but_with_network_is_a_warning() -> None:
    errors, warnings = validate(service_entry(endpoints=[{"network": "vm-net"}]))
    assert errors == []
    assert warnings == [
        se_warning("spec.endpoints[0].address", 'address is unset with network "vm-net"')
    ]


def test_unix_endpoints() -> None:
    endpoints = [
        {"address": "unix://relative.sock"},
        {"address": "unix:///run/", "ports": {"tcp": 9000}},
        {"address": "unix://"},
    ]
    ports = [{"number": 9000, "name": "tcp"}, {"number": 9001, "name": "tcp-2"}]
    assert errors_of(service_entry(endpoints=endpoints, ports=ports)) == [
        se_error("spec.endpoints[0].address", "relative.sock is not an absolute path to a file"),
        se_error("spec.endpoints[0]", "exactly 1 service port required for unix endpoints"),
        se_error("spec.endpoints[1].address", "/run/ is not an absolute path to a file"),
        se_error("spec.endpoints[1].ports", "unix endpoint unix:///run/ must not include ports"),
        se_error("spec.endpoints[1]", "exactly 1 service port required for unix endpoints"),
        se_error("spec.endpoints[2].address", "unix address must not be empty"),
        se_error("spec.endpoints[2]", "exactly 1 service port required for unix endpoints"),
    ]


def test_negative_weight() -> None:
    errors = errors_of(service_entry(endpoints=[{"address": "10.0.0.1", "weight": -1}]))
    assert errors == [
        se_error(
            "spec.endpoints[0].weight",
            "Invalid value: -1: spec.endpoints[0].weight in body should be greater than or "
            "equal to 0",
        )
    ]


def test_dns_without_endpoints_needs_fqdn_hosts() -> None:
    errors = errors_of(
        service_entry(resolution="DNS", endpoints=None, hosts=["*.example.internal"])
    )
    assert errors == [
        se_error(
            "spec.hosts[0]",
            "hosts must be FQDN or contain only prefix wildcards if no endpoints are provided "
            'for resolution mode DNS, domain name "*.example.internal" invalid (label "*" invalid)',
        )
    ]


def test_dns_round_robin_takes_at_most_one_endpoint() -> None:
    endpoints = [{"address": "a.example.internal"}, {"address": "b.example.internal"}]
    assert errors_of(service_entry(resolution="DNS_ROUND_ROBIN", endpoints=endpoints)) == [
        se_error(
            "spec.endpoints",
            "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
        )
    ]


def test_dns_endpoint_checks() -> None:
    endpoints = [
        None,
        {"address": "bad_name.example", "ports": {"tcp": 0, "udp": 53}, "labels": {"k": "v v"}},
    ]
    assert errors_of(service_entry(resolution="DNS", endpoints=endpoints)) == [
        se_error("spec.endpoints[0]", "endpoint cannot be nil"),
        se_error(
            "spec.endpoints[1].address",
            'endpoint address "bad_name.example" is not a valid FQDN or an IP address',
        ),
        se_error("spec.endpoints[1].labels", 'invalid tag value: "v v"'),
        se_error("spec.endpoints[1].ports[tcp]", "port number 0 must be in the range 1..65535"),
        se_error(
            "spec.endpoints[1].ports[udp]", "endpoint port 53 is not defined by the service entry"
        ),
    ]


def test_several_hosts_need_http_or_tls_ports() -> None:
    hosts = ["a.example.internal", "b.example.internal"]
    assert errors_of(service_entry(hosts=hosts)) == [
        se_error("spec.ports", "multiple hosts provided with non-HTTP, non-TLS ports")
    ]
    tls = [{"number": 443, "name": "tls", "protocol": "TLS"}]
    assert errors_of(service_entry(hosts=hosts, ports=tls, endpoints=None)) == []
    # NONE ignores the hosts, so several are fine.
    assert errors_of(service_entry(hosts=hosts, resolution="NONE", endpoints=None)) == []


def test_dns_with_address_and_tcp_port_and_several_hosts_warns() -> None:
    ports = [{"number": 443, "name": "tls", "protocol": "TLS"}]
    hosts = ["a.example.internal", "b.example.internal"]
    errors, warnings = validate(
        service_entry(
            resolution="DNS", endpoints=None, hosts=hosts, ports=ports, addresses=["240.0.0.1"]
        )
    )
    assert errors == []
    assert warnings == [
        se_warning(
            "spec.hosts",
            "service entry can not have more than one host specified simultaneously with "
            "address and tcp port",
        )
    ]


@pytest.mark.parametrize(
    ("export_to", "path", "message"),
    [
        (
            ["bad_ns"],
            "spec.exportTo[0]",
            "only .,*, or a valid DNS 1123 label is allowed as exportTo entry",
        ),
        ([".", "default"], "spec.exportTo[1]", "duplicate entries in exportTo for entry default"),
        (
            ["default", "."],
            "spec.exportTo[1]",
            "duplicate entries in exportTo: . and current namespace default",
        ),
        (
            ["*", "prod"],
            "spec.exportTo",
            "cannot have both public (*) and non-public exportTo values for a resource",
        ),
        (["~", "prod"], "spec.exportTo", "cannot export service entry to no one (~) and someone"),
    ],
)
def test_export_to(export_to: list[str], path: str, message: str) -> None:
    assert errors_of(service_entry(exportTo=export_to)) == [se_error(path, message)]


# ---------------------------------------------------------------- WorkloadEntry


def test_workload_entry_valid_forms() -> None:
    assert validate(workload_entry()) == ([], [])
    assert errors_of(workload_entry(address="vm-1.example.internal")) == []
    assert errors_of(workload_entry(address="unix:///run/echo.sock", ports=None)) == []
    full = workload_entry(network="vm-net", locality="us-east1/b", weight=2, serviceAccount="vm")
    typed = from_dict(full)
    assert isinstance(typed, models.WorkloadEntry)
    assert (typed.spec.weight, typed.spec.service_account) == (2, "vm")


def test_workload_entry_messages() -> None:
    def we_error(path: str, message: str) -> str:
        return f"{WE_LABEL} is invalid: {path}: {message}"

    assert errors_of(workload_entry(address=None)) == [
        we_error("spec.address", "address is required")
    ]
    assert validate(workload_entry(address=None, network="vm-net")) == (
        [],
        [f'{WE_LABEL}: spec.address: address is unset with network "vm-net"'],
    )
    assert errors_of(workload_entry(address="not_a_host")) == [
        we_error(
            "spec.address", 'endpoint address "not_a_host" is not a valid FQDN or an IP address'
        )
    ]
    assert errors_of(workload_entry(address="unix://@sock")) == [
        we_error("spec.ports", "unix endpoint unix://@sock must not include ports")
    ]
    # Without a ServiceEntry, any valid port name is fine.
    assert errors_of(workload_entry(ports={"anything": 9000, "-x": 0})) == [
        we_error("spec.ports[-x]", "invalid port name: -x"),
        we_error("spec.ports[-x]", "port number 0 must be in the range 1..65535"),
    ]
    assert errors_of(workload_entry(labels={"version": "v 1"})) == [
        we_error("spec.labels", 'invalid tag value: "v 1"')
    ]


# ---------------------------------------------------------------- tables

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def _stamped(obj: Obj, ago: timedelta) -> Obj:
    out = copy.deepcopy(obj)
    out["metadata"]["creationTimestamp"] = (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def test_service_entry_table_has_istios_printer_columns() -> None:
    objects = [
        _stamped(service_entry(), timedelta(minutes=5)),
        _stamped(service_entry(location=None, resolution=None, endpoints=None), timedelta(hours=4)),
    ]
    objects[1]["metadata"]["name"] = "external"
    text = printers.print_table(kinds.by_key("ServiceEntry"), objects, now=NOW)
    assert text.splitlines() == [
        "NAME       HOSTS                          LOCATION        RESOLUTION   AGE",
        'vm-echo    ["vm-echo.example.internal"]   MESH_INTERNAL   STATIC       5m',
        'external   ["vm-echo.example.internal"]                                4h',
    ]


def test_workload_entry_table_has_age_then_address() -> None:
    objects = [_stamped(workload_entry(), timedelta(seconds=42))]
    text = printers.print_table(
        kinds.by_key("WorkloadEntry"), objects, now=NOW, all_namespaces=True
    )
    assert text.splitlines() == [
        "NAMESPACE   NAME   AGE   ADDRESS",
        "default     vm-1   42s   10.0.0.7",
    ]
