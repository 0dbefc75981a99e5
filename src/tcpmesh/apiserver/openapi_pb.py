"""The OpenAPI v2 document in gnostic's protobuf encoding, which older kubectl requires.

kubectl up to 1.26 (Debian's 1.20 among them) downloads ``/openapi/v2`` as
``application/com.github.proto-openapi.spec.v2@v1.0+protobuf`` only, for client-side
validation and ``explain``. The message types are gnostic's ``openapi.v2`` ones
(google/gnostic ``openapiv2/OpenAPIv2.proto``), declared here with the field numbers of
that file for the part of the document tcpmesh fills (info, definitions, their schemas and
vendor extensions); the protobuf library does the encoding.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

# What kubectl asks for has an "@", which Go's media type parser refuses in a response;
# the Kubernetes API server answers with this spelling.
MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

_F = descriptor_pb2.FieldDescriptorProto
# message -> [(field, number, type, message type or None, repeated)]
_MESSAGES: dict[str, list[tuple[str, int, int, str | None, bool]]] = {
    "Any": [("yaml", 2, _F.TYPE_STRING, None, False)],
    "NamedAny": [
        ("name", 1, _F.TYPE_STRING, None, False),
        ("value", 2, _F.TYPE_MESSAGE, "Any", False),
    ],
    "Info": [
        ("title", 1, _F.TYPE_STRING, None, False),
        ("version", 2, _F.TYPE_STRING, None, False),
    ],
    "TypeItem": [("value", 1, _F.TYPE_STRING, None, True)],
    "ItemsItem": [("schema", 1, _F.TYPE_MESSAGE, "Schema", True)],
    "AdditionalPropertiesItem": [
        ("schema", 1, _F.TYPE_MESSAGE, "Schema", False),
        ("boolean", 2, _F.TYPE_BOOL, None, False),
    ],
    "NamedSchema": [
        ("name", 1, _F.TYPE_STRING, None, False),
        ("value", 2, _F.TYPE_MESSAGE, "Schema", False),
    ],
    "Properties": [("additional_properties", 1, _F.TYPE_MESSAGE, "NamedSchema", True)],
    "Definitions": [("additional_properties", 1, _F.TYPE_MESSAGE, "NamedSchema", True)],
    "Schema": [
        ("_ref", 1, _F.TYPE_STRING, None, False),
        ("format", 2, _F.TYPE_STRING, None, False),
        ("description", 4, _F.TYPE_STRING, None, False),
        ("required", 19, _F.TYPE_STRING, None, True),
        ("enum", 20, _F.TYPE_MESSAGE, "Any", True),
        ("additional_properties", 21, _F.TYPE_MESSAGE, "AdditionalPropertiesItem", False),
        ("type", 22, _F.TYPE_MESSAGE, "TypeItem", False),
        ("items", 23, _F.TYPE_MESSAGE, "ItemsItem", False),
        ("properties", 25, _F.TYPE_MESSAGE, "Properties", False),
        ("vendor_extension", 31, _F.TYPE_MESSAGE, "NamedAny", True),
    ],
    "Document": [
        ("swagger", 1, _F.TYPE_STRING, None, False),
        ("info", 2, _F.TYPE_MESSAGE, "Info", False),
        ("definitions", 9, _F.TYPE_MESSAGE, "Definitions", False),
    ],
}


@functools.cache
def _classes() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="tcpmesh/openapiv2.proto", package="openapi.v2", syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field, number, kind, type_name, repeated in fields:
            entry = message.field.add(name=field, number=number, type=kind)
            entry.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if type_name is not None:
                entry.type_name = f".openapi.v2.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"openapi.v2.{name}"))
        for name in _MESSAGES
    }


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip()


def _schema(node: Mapping[str, Any], out: Any) -> None:
    classes = _classes()
    if "$ref" in node:
        out._ref = node["$ref"]
    for key in ("format", "description"):
        if isinstance(node.get(key), str):
            setattr(out, key, node[key])
    out.required.extend(str(r) for r in node.get("required") or [])
    for value in node.get("enum") or []:
        out.enum.add(yaml=_yaml(value))
    if isinstance(node.get("type"), str):
        out.type.value.append(node["type"])
    if isinstance(node.get("items"), Mapping):
        _schema(node["items"], out.items.schema.add())
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping):
        _schema(extra, out.additional_properties.schema)
    elif isinstance(extra, bool):
        out.additional_properties.boolean = extra
    for name, sub in (node.get("properties") or {}).items():
        named = out.properties.additional_properties.add(name=name)
        _schema(sub, named.value)
    for key, value in node.items():
        if key.startswith("x-"):
            out.vendor_extension.append(classes["NamedAny"](name=key, value={"yaml": _yaml(value)}))


def encode(document: Mapping[str, Any]) -> bytes:
    """The protobuf bytes of a Swagger 2.0 ``document`` (its info and definitions)."""
    classes = _classes()
    doc = classes["Document"](swagger=str(document.get("swagger", "2.0")))
    info = document.get("info") or {}
    doc.info.title = str(info.get("title", ""))
    doc.info.version = str(info.get("version", ""))
    for name, schema in (document.get("definitions") or {}).items():
        named = doc.definitions.additional_properties.add(name=name)
        _schema(schema, named.value)
    data: bytes = doc.SerializeToString(deterministic=True)
    return data


def decode(data: bytes) -> Any:
    """The ``openapi.v2.Document`` message of ``data`` (what kubectl reads back)."""
    document = _classes()["Document"]()
    document.ParseFromString(data)
    return document
