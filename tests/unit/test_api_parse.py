"""Parsing manifests: documents, Lists, namespaces, shape errors, YAML errors, durations.

The reference manifests are the YAML blocks of the seed scenario (Istio's TCP traffic
shifting task as run on ASM), copied verbatim and dedented; a test checks the copies
against the seed file when it is available.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tcpmesh.api import (
    InvalidInput,
    from_dict,
    load_documents,
    load_documents_with_warnings,
    models,
    parse_duration,
    to_dict,
    validate_object,
)

# The brief lives beside the repository: ../shared relative to its root.
SEED_FILE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "seeds" / "000_550e7f6ef1bf1826.txt"
)

SEED_DEPLOYMENTS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tcp-echo-v1
spec:
  replicas: 1
  selector:
    matchLabels:
      app: tcp-echo
      version: v1
  template:
    metadata:
      labels:
        app: tcp-echo
        version: v1
    spec:
      containers:
      - name: tcp-echo
        image: docker.io/istio/tcp-echo-server:1.1
        imagePullPolicy: IfNotPresent
        args: [ "9000", "one" ]
        ports:
        - containerPort: 9000
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tcp-echo-v2
spec:
  replicas: 1
  selector:
    matchLabels:
      app: tcp-echo
      version: v2
  template:
    metadata:
      labels:
        app: tcp-echo
        version: v2
    spec:
      containers:
      - name: tcp-echo
        image: docker.io/istio/tcp-echo-server:1.1
        imagePullPolicy: IfNotPresent
        args: [ "9000", "two" ]
        ports:
        - containerPort: 9000
"""
SEED_GATEWAY = """\
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: tcp-echo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 31400
      name: tcp
      protocol: TCP
    hosts:
    - "*"
"""
SEED_VS_ALL_V1 = """\
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: tcp-echo
spec:
  hosts:
  - "*"
  gateways:
  - tcp-echo-gateway
  tcp:
  - match:
    - port: 31400
    route:
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v1
"""
SEED_DESTINATION_RULE = """\
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: tcp-echo-destination
spec:
  host: tcp-echo
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"""
SEED_VS_80_20 = """\
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: tcp-echo
spec:
  hosts:
  - "*"
  gateways:
  - tcp-echo-gateway
  tcp:
  - match:
    - port: 31400
    route:
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v1
      weight: 80
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v2
      weight: 20
"""


SEED_BLOCKS = [
    SEED_DEPLOYMENTS,
    SEED_GATEWAY,
    SEED_VS_ALL_V1,
    SEED_DESTINATION_RULE,
    SEED_VS_80_20,
]


def seed_yaml_blocks(text: str) -> list[str]:
    """The YAML blocks of the seed page: from an indented ``apiVersion:`` to the prose."""
    lines = text.splitlines()
    blocks: list[str] = []
    i = 0
    while i < len(lines):
        start = re.match(r"( *)apiVersion:", lines[i])
        if start is None:
            i += 1
            continue
        indent, block = len(start.group(1)), []
        while i < len(lines):
            line = lines[i]
            lead = len(line) - len(line.lstrip(" "))
            yaml_line = re.match(r"(---|[A-Za-z]+:)", line.strip()) is not None
            if line.strip() and (lead < indent or (lead == indent and not yaml_line)):
                break
            block.append(line)
            i += 1
        blocks.append(textwrap.dedent("\n".join(block)) + "\n")
    return blocks


def test_embedded_blocks_are_the_seed_blocks() -> None:
    if not SEED_FILE.exists():
        pytest.skip("seed file not present")
    assert seed_yaml_blocks(SEED_FILE.read_text()) == SEED_BLOCKS


@pytest.mark.parametrize(
    ("block", "kinds"),
    [
        (SEED_DEPLOYMENTS, ["Deployment", "Deployment"]),
        (SEED_GATEWAY, ["Gateway"]),
        (SEED_VS_ALL_V1, ["VirtualService"]),
        (SEED_DESTINATION_RULE, ["DestinationRule"]),
        (SEED_VS_80_20, ["VirtualService"]),
    ],
    ids=["deployments", "gateway", "vs-all-v1", "destination-rule", "vs-80-20"],
)
def test_seed_block_parses_without_errors_or_warnings(block: str, kinds: list[str]) -> None:
    objects, warnings = load_documents_with_warnings(block, "seed.yaml")
    assert warnings == []
    assert [o["kind"] for o in objects] == kinds
    assert all(o["metadata"]["namespace"] == "default" for o in objects)


def test_all_seed_blocks_in_one_stream() -> None:
    objects = load_documents("---\n".join(SEED_BLOCKS), "seed.yaml", namespace="shop")
    names = [(o["kind"], o["metadata"]["name"], o["metadata"]["namespace"]) for o in objects]
    assert names == [
        ("Deployment", "tcp-echo-v1", "shop"),
        ("Deployment", "tcp-echo-v2", "shop"),
        ("Gateway", "tcp-echo-gateway", "shop"),
        ("VirtualService", "tcp-echo", "shop"),
        ("DestinationRule", "tcp-echo-destination", "shop"),
        ("VirtualService", "tcp-echo", "shop"),
    ]


def test_weights_not_adding_to_100_warn_with_the_effective_split() -> None:
    text = SEED_VS_80_20.replace("weight: 20", "weight: 10")
    objects, warnings = load_documents_with_warnings(text, "samples/vs.yaml")
    assert [o["spec"]["tcp"][0]["route"][1]["weight"] for o in objects] == [10]
    assert warnings == [
        'samples/vs.yaml: VirtualService "tcp-echo": spec.tcp[0].route: total destination '
        "weight 90 != 100; effective split: tcp-echo/v1:9000 88.9%, tcp-echo/v2:9000 11.1%"
    ]


def test_normalized_output_keeps_what_was_written() -> None:
    (vs,) = load_documents(SEED_VS_80_20, "seed.yaml")
    assert vs == {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "VirtualService",
        "metadata": {"name": "tcp-echo", "namespace": "default"},
        "spec": {
            "hosts": ["*"],
            "gateways": ["tcp-echo-gateway"],
            "tcp": [
                {
                    "match": [{"port": 31400}],
                    "route": [
                        {
                            "destination": {
                                "host": "tcp-echo",
                                "subset": "v1",
                                "port": {"number": 9000},
                            },
                            "weight": 80,
                        },
                        {
                            "destination": {
                                "host": "tcp-echo",
                                "subset": "v2",
                                "port": {"number": 9000},
                            },
                            "weight": 20,
                        },
                    ],
                }
            ],
        },
    }


@pytest.mark.parametrize("version", ["v1alpha3", "v1beta1", "v1"])
def test_istio_versions_are_accepted_and_kept(version: str) -> None:
    text = SEED_GATEWAY.replace("networking.istio.io/v1alpha3", f"networking.istio.io/{version}")
    (gateway,) = load_documents(text, "gw.yaml")
    assert gateway["apiVersion"] == f"networking.istio.io/{version}"


def test_empty_documents_are_skipped() -> None:
    text = "---\n---\n# only a comment\n---\n" + SEED_GATEWAY + "---\n...\n"
    assert [o["kind"] for o in load_documents(text, "gw.yaml")] == ["Gateway"]
    assert load_documents("", "empty.yaml") == []


def test_list_items_are_flattened_recursively() -> None:
    inner = textwrap.indent(SEED_DESTINATION_RULE, "    ")
    text = (
        "apiVersion: v1\nkind: List\nitems:\n"
        + "- apiVersion: v1\n  kind: List\n  items:\n  -\n"
        + inner
        + "- "
        + textwrap.indent(SEED_GATEWAY, "  ").lstrip()
    )
    objects = load_documents(text, "list.yaml", namespace="shop")
    assert [(o["kind"], o["metadata"]["namespace"]) for o in objects] == [
        ("DestinationRule", "shop"),
        ("Gateway", "shop"),
    ]


def test_list_without_item_list() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_documents("apiVersion: v1\nkind: List\nitems: 3\n", "list.yaml")
    assert caught.value.messages == ["list.yaml: document 1: kind List: items must be a list"]


def error_lines(text: str, source: str = "x.yaml", namespace: str | None = None) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        load_documents(text, source, namespace)
    return caught.value.messages


def test_unknown_kind() -> None:
    text = "apiVersion: example.com/v1\nkind: Foo\nmetadata:\n  name: foo\n"
    assert error_lines(text, "samples/x.yaml") == [
        'samples/x.yaml: no matches for kind "Foo" in version "example.com/v1"'
    ]


def test_known_kind_in_unknown_version() -> None:
    text = SEED_GATEWAY.replace("v1alpha3", "v2")
    assert error_lines(text) == [
        'x.yaml: no matches for kind "Gateway" in version "networking.istio.io/v2"'
    ]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("Pod", "Pods are created by tcpmesh from Deployments; apply a Deployment instead"),
        ("Endpoints", "Endpoints are maintained by tcpmesh from Services and the Pods they select"),
    ],
)
def test_runtime_owned_kinds_cannot_be_applied(kind: str, reason: str) -> None:
    text = f"apiVersion: v1\nkind: {kind}\nmetadata:\n  name: tcp-echo\n"
    assert error_lines(text) == [f'x.yaml: {kind} "tcp-echo": {reason}']
    errors, _ = validate_object({"apiVersion": "v1", "kind": kind, "metadata": {"name": "a"}})
    assert errors == [f'{kind} "a": {reason}']


def test_missing_kind_and_api_version() -> None:
    assert error_lines("metadata:\n  name: a\n---\napiVersion: v1\n") == [
        "x.yaml: document 1: apiVersion not set",
        "x.yaml: document 1: kind not set",
        "x.yaml: document 2: kind not set",
    ]


def test_document_that_is_not_an_object() -> None:
    assert error_lines("- a\n- b\n---\nhello\n") == [
        "x.yaml: document 1: expected an object, got a list",
        "x.yaml: document 2: expected an object, got a string",
    ]


def test_missing_name() -> None:
    text = SEED_GATEWAY.replace("  name: tcp-echo-gateway\n", "")
    assert error_lines(text) == [
        "x.yaml: Gateway (document 1) is invalid: metadata.name: Required value: name is required"
    ]


def test_unknown_field_names_its_path() -> None:
    text = SEED_VS_80_20.replace("weight: 20", "wieght: 20")
    assert error_lines(text) == [
        'x.yaml: VirtualService "tcp-echo" is invalid: spec.tcp[0].route[1].wieght: unknown field'
    ]


@pytest.mark.parametrize(
    ("value", "got"),
    [('"abc"', '"abc"'), ('"20"', '"20"'), ("2.5", "2.5"), ("true", "true"), ("[20]", "a list")],
)
def test_wrong_type_says_what_was_expected(value: str, got: str) -> None:
    text = SEED_VS_80_20.replace("weight: 20", f"weight: {value}")
    assert error_lines(text) == [
        'x.yaml: VirtualService "tcp-echo" is invalid: spec.tcp[0].route[1].weight: '
        f"must be an integer, got {got}"
    ]


def test_union_and_enum_and_map_errors() -> None:
    text = """\
apiVersion: v1
kind: Service
metadata:
  name: tcp-echo
  namespace: shop
  labels:
    app.kubernetes.io/name: 3
spec:
  ports:
  - port: 9000
    targetPort: 1.5
    protocol: tcp
"""
    assert error_lines(text) == [
        'x.yaml: Service "shop/tcp-echo" is invalid: metadata.labels[app.kubernetes.io/name]: '
        "must be a string, got 3",
        'x.yaml: Service "shop/tcp-echo" is invalid: spec.ports[0].protocol: '
        'Unsupported value: "tcp": supported values: "TCP", "UDP", "SCTP"',
        'x.yaml: Service "shop/tcp-echo" is invalid: spec.ports[0].targetPort: '
        "must be an integer or a string, got 1.5",
    ]


def test_required_field() -> None:
    text = SEED_DEPLOYMENTS.split("---\n")[0].replace("  template:", "  tmpl:")
    assert error_lines(text) == [
        'x.yaml: Deployment "tcp-echo-v1" is invalid: spec.template: Required value',
        'x.yaml: Deployment "tcp-echo-v1" is invalid: spec.tmpl: unknown field',
    ]


def test_malformed_yaml_names_line_and_column() -> None:
    text = SEED_GATEWAY.replace('    - "*"', '    - ["*"')
    assert error_lines(text, "gw.yaml") == [
        "gw.yaml: error parsing YAML: line 15, column 1: expected ',' or ']', but got "
        "'<stream end>'"
    ]


def test_malformed_yaml_after_good_documents_reports_both() -> None:
    text = SEED_VS_80_20.replace("weight: 20", "weight: -1") + "---\nspec: [\n  a: b\n"
    assert error_lines(text) == [
        'x.yaml: VirtualService "tcp-echo" is invalid: spec.tcp[0].route[1].weight: weight -1 < 0',
        "x.yaml: error parsing YAML: line 29, column 1: expected ',' or ']', but got "
        "'<stream end>'",
    ]


def test_duplicate_keys_are_rejected() -> None:
    text = SEED_VS_80_20.replace("weight: 20", "weight: 20\n      weight: 30")
    assert error_lines(text) == [
        'x.yaml: error parsing YAML: line 26, column 7: duplicate key "weight"'
    ]


def test_unprintable_character() -> None:
    assert error_lines("apiVersion: v1\nkind: \x07\n") == [
        "x.yaml: error parsing YAML: line 2, column 7: unacceptable character #x0007: "
        "special characters are not allowed"
    ]


def test_timestamps_stay_strings() -> None:
    text = SEED_GATEWAY.replace(
        "  name: tcp-echo-gateway\n",
        "  name: tcp-echo-gateway\n  creationTimestamp: 2026-11-26T00:28:42Z\n",
    )
    (gateway,) = load_documents(text, "gw.yaml")
    assert gateway["metadata"]["creationTimestamp"] == "2026-11-26T00:28:42Z"


def test_namespace_defaults() -> None:
    in_doc = SEED_GATEWAY.replace("metadata:\n", "metadata:\n  namespace: istio-system\n")
    assert load_documents(SEED_GATEWAY, "gw.yaml")[0]["metadata"]["namespace"] == "default"
    assert load_documents(SEED_GATEWAY, "gw.yaml", "a")[0]["metadata"]["namespace"] == "a"
    assert load_documents(in_doc, "gw.yaml")[0]["metadata"]["namespace"] == "istio-system"
    same = load_documents(in_doc, "gw.yaml", "istio-system")
    assert same[0]["metadata"]["namespace"] == "istio-system"


def test_namespace_mismatch_is_an_error() -> None:
    text = SEED_GATEWAY.replace("metadata:\n", "metadata:\n  namespace: a\n")
    assert error_lines(text, "gw.yaml", namespace="b") == [
        'gw.yaml: Gateway "a/tcp-echo-gateway": the namespace from the provided object "a" '
        "does not match the namespace \"b\". You must pass '--namespace=a' to perform this "
        "operation."
    ]


def test_all_errors_of_all_documents_are_collected() -> None:
    text = "---\n".join(
        [
            SEED_VS_80_20.replace("weight: 20", "weight: -5"),
            "apiVersion: example.com/v1\nkind: Foo\n",
            SEED_DESTINATION_RULE.replace("name: v2", "name: v1"),
            SEED_GATEWAY,
        ]
    )
    with pytest.raises(InvalidInput) as caught:
        load_documents(text, "all.yaml")
    expected = [
        'all.yaml: VirtualService "tcp-echo" is invalid: spec.tcp[0].route[1].weight: '
        "weight -5 < 0",
        'all.yaml: no matches for kind "Foo" in version "example.com/v1"',
        'all.yaml: DestinationRule "tcp-echo-destination" is invalid: spec.subsets[1].name: '
        "duplicate subset names: v1",
    ]
    assert caught.value.messages == expected
    assert str(caught.value) == "\n".join(expected)
    assert isinstance(caught.value, ValueError)


def test_messages_carry_no_pydantic_internals() -> None:
    text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: x}\n"
    for line in error_lines(text):
        assert "Input should" not in line
        assert "pydantic" not in line
        assert "Traceback" not in line


def test_validate_object_has_no_file_prefix() -> None:
    (vs,) = load_documents(SEED_VS_80_20, "seed.yaml")
    vs["spec"]["tcp"][0]["route"][0]["weight"] = -5
    vs["metadata"]["namespace"] = "shop"
    assert validate_object(vs) == (
        ['VirtualService "shop/tcp-echo" is invalid: spec.tcp[0].route[0].weight: weight -5 < 0'],
        [],
    )


def test_from_dict_and_to_dict_round_trip() -> None:
    (vs,) = load_documents(SEED_VS_80_20, "seed.yaml")
    resource = from_dict(vs)
    assert isinstance(resource, models.VirtualService)
    assert resource.spec.tcp[0].route[1] is not None
    assert resource.spec.tcp[0].route[1].weight == 20
    assert to_dict(resource) == vs


def test_from_dict_rejects_bad_shapes() -> None:
    with pytest.raises(InvalidInput) as caught:
        from_dict({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": 1})
    assert caught.value.messages == ['Service "s" is invalid: spec: must be an object, got 1']
    with pytest.raises(InvalidInput):
        from_dict({"apiVersion": "v1", "kind": "Nope"})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("0.5s", 0.5),
        ("1.5s", 1.5),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("100ns", 1e-7),
        ("1h2m3.5s", 3723.5),
        ("0", 0.0),
        ("0s", 0.0),
        (".5s", 0.5),
        ("-1s", -1.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "abc", "1x", "s", ".s", "1s 2s", "1.2.3s", "-"])
def test_parse_duration_rejects_and_names_the_value(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value).startswith(f'invalid duration "{text}": expected a number')
