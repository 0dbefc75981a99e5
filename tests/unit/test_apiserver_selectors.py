from __future__ import annotations

from typing import Any

import pytest

from tcpmesh.apiserver.selectors import SelectorError, field_selector, label_selector


def obj(**labels: str) -> dict[str, Any]:
    return {"metadata": {"name": "a", "namespace": "ns", "labels": labels}}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        ("app=echo", {"app": "echo"}, True),
        ("app==echo", {"app": "other"}, False),
        ("app!=echo", {}, True),
        ("app!=echo", {"app": "echo"}, False),
        ("version in (v1, v2)", {"version": "v2"}, True),
        ("version in (v1,v2)", {"version": "v3"}, False),
        ("version notin (v1,v2)", {}, True),
        ("version notin (v1,v2)", {"version": "v1"}, False),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("!app", {}, True),
        ("app=echo,!version", {"app": "echo"}, True),
        ("app=echo, version=v1", {"app": "echo", "version": "v2"}, False),
        ("app=", {"app": ""}, True),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert label_selector(selector)(obj(**labels)) is expected


@pytest.mark.parametrize("selector", ["app in v1", "version in (v1", "=x", "a=b c", "a=b=c"])
def test_label_selector_refuses_what_kubernetes_refuses(selector: str) -> None:
    with pytest.raises(SelectorError):
        label_selector(selector)


def test_field_selector() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Running"}}
    assert field_selector("Pod", "status.phase=Running")(pod)
    assert not field_selector("Pod", "status.phase!=Running")(pod)
    assert field_selector("Pod", "metadata.name==p,metadata.namespace=ns")(pod)
    assert not field_selector("Pod", "metadata.name=q")(pod)
    event = {"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"}}
    assert field_selector("Event", "involvedObject.kind=Pod,involvedObject.name=p")(event)


def test_field_selector_refuses_fields_the_kind_does_not_support() -> None:
    with pytest.raises(SelectorError, match=r'field label not supported: "status\.phase"'):
        field_selector("Service", "status.phase=Running")
