"""Input limits: alias bombs, deep nesting and oversized documents stop with one line.

The memory and CPU bounds of these rejections, through the CLI and the API server, are
measured in separate processes by ``tests/integration/test_input_limits.py``.
"""

from __future__ import annotations

import json

import pytest

from tcpmesh.api import (
    InvalidInput,
    LimitExceeded,
    limits,
    load_documents,
    load_json_body,
    load_yaml_body,
    size_problem,
)

TEMPLATE = (
    "spec:\n  selector: {matchLabels: {app: x}}\n"
    "  template: {metadata: {labels: {app: x}}, spec: {containers: [{name: c, image: i}]}}\n"
)


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A Deployment whose ``metadata.managedFields`` expands to ``width ** (levels + 1)`` values."""
    lines = [
        "apiVersion: apps/v1",
        "kind: Deployment",
        "metadata:",
        "  name: bomb",
        "  managedFields:",
        "  - a0: &a0 [" + ",".join(['"lol"'] * width) + "]",
    ]
    for i in range(1, levels + 1):
        lines.append(f"  - a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n" + TEMPLATE


def nested(levels: int) -> str:
    """A Deployment whose ``managedFields`` holds ``levels`` nested flow sequences."""
    head = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: deep\n  managedFields: "
    return head + "[" * levels + "]" * levels + "\n" + TEMPLATE


def one_error(text: str) -> str:
    with pytest.raises(InvalidInput) as info:
        load_documents(text, "in.yaml")
    assert len(info.value.messages) == 1, info.value.messages
    return info.value.messages[0]


def test_a_nine_level_alias_bomb_is_refused_by_its_expanded_size() -> None:
    message = one_error(alias_bomb())
    assert message.startswith("in.yaml: error parsing YAML: line ")
    assert "more than 250,000 values with aliases expanded" in message


def test_an_alias_bomb_in_a_typed_field_is_refused_too() -> None:
    text = alias_bomb().replace("  managedFields:\n", "  labels:\n", 1)
    assert "aliases expanded" in one_error(text)


def test_aliases_just_under_the_node_limit_load() -> None:
    # 9**5 values through aliases: a lot, and still accepted.
    objects = load_documents(alias_bomb(levels=4), "in.yaml")
    assert len(json.dumps(objects[0]["metadata"]["managedFields"])) > 400_000


def test_ordinary_anchors_and_merge_keys_still_work() -> None:
    text = (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  labels: &l {app: a}\n"
        "  annotations:\n    <<: *l\n    extra: x\nspec:\n  selector: *l\n  ports: [{port: 80}]\n"
    )
    (service,) = load_documents(text, "in.yaml")
    assert service["spec"]["selector"] == {"app": "a"}
    assert service["metadata"]["annotations"] == {"app": "a", "extra": "x"}


def test_a_hundred_levels_of_nesting_are_refused() -> None:
    message = one_error(nested(100))
    assert message.startswith("in.yaml: error parsing YAML: line 5, column ")
    assert message.endswith("document nests deeper than 64 levels")


def test_nesting_is_counted_up_to_the_limit_exactly() -> None:
    # Two levels hold managedFields: the document's mapping and metadata's.
    depth_left = limits.MAX_DEPTH - 2
    load_documents(nested(depth_left), "in.yaml")
    assert "deeper than 64" in one_error(nested(depth_left + 1))


def test_nesting_through_an_alias_counts_the_aliased_depth() -> None:
    inner = "[" * 40 + "]" * 40
    text = (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  managedFields:\n"
        f"  - &deep {inner}\n  - [[[[[[[[[[[[[[[[[[[[[[[[[*deep]]]]]]]]]]]]]]]]]]]]]]]]]\n"
        "spec: {ports: [{port: 80}]}\n"
    )
    assert "deeper than 64" in one_error(text)


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    message = one_error("a: &a [1, *a]\n")
    assert message.endswith("alias *a refers to a node that contains it")


def test_a_document_over_three_mib_is_refused() -> None:
    big = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  annotations:\n"
    big += "".join(f"    k{i}: {'x' * 1000}\n" for i in range(3200))
    big += "spec: {ports: [{port: 80}]}\n"
    assert len(big) > limits.MAX_DOCUMENT_BYTES
    assert one_error(big).endswith("document larger than 3 MiB")


def test_the_input_size_limit_is_checked_before_parsing() -> None:
    text = "#" * (limits.MAX_INPUT_BYTES + 1)
    assert one_error(text) == "in.yaml: the input is 32.0 MiB, more than the limit of 32 MiB"


def test_size_problem_reads_well() -> None:
    assert size_problem(10, 10, "the file") is None
    assert size_problem(3 * 2**20 + 2**19, 3 * 2**20, "the file") == (
        "the file is 3.5 MiB, more than the limit of 3 MiB"
    )


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[[[[[", "b": "\\"[[["}', 1),
        (b'["\\\\", ["x"]]', 2),
        (b"3", 0),
    ],
)
def test_json_depth_ignores_brackets_inside_strings(text: bytes, depth: int) -> None:
    assert limits.json_depth(text) == depth


def test_json_bodies_are_checked_for_size_and_depth_before_parsing() -> None:
    assert load_json_body(b'{"a": 1}') == {"a": 1}
    with pytest.raises(LimitExceeded) as deep:
        load_json_body(b"[" * 100 + b"]" * 100)
    assert not deep.value.too_large
    assert str(deep.value) == "the request body nests deeper than 64 levels"
    with pytest.raises(LimitExceeded) as large:
        load_json_body(b" " * 20 + b"{}", max_bytes=10)
    assert large.value.too_large
    # Deep enough to crash a recursive parser: refused before parsing.
    with pytest.raises(LimitExceeded):
        load_json_body(b"[" * 1_000_000)
    with pytest.raises(ValueError, match="Expecting"):
        load_json_body(b'{"a": }')


def test_yaml_bodies_have_the_file_limits() -> None:
    assert load_yaml_body(b"a: 1\n") == {"a": 1}
    with pytest.raises(ValueError, match="aliases expanded"):
        load_yaml_body(alias_bomb().encode())
    with pytest.raises(ValueError, match="deeper than 64 levels"):
        load_yaml_body(nested(100).encode())
    with pytest.raises(ValueError, match="exactly one YAML document"):
        load_yaml_body(b"a: 1\n---\nb: 2\n")
    with pytest.raises(LimitExceeded):
        load_yaml_body(b"a: 1\n", max_bytes=2)
