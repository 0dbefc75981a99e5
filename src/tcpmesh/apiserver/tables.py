"""``Table`` responses (``Accept: application/json;as=Table;g=meta.k8s.io;v=v1``).

kubectl asks the server to lay out ``kubectl get``: the server names the columns and
fills the cells, kubectl only aligns them. The columns are the ones kubectl prints for
the core kinds and Istio's CRD printer columns for the networking kinds, the same
layout ``tcpmesh get`` prints (:mod:`tcpmesh.cli.printers` owns it, so both agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tcpmesh.api.kinds import KindInfo
from tcpmesh.cli.printers import table_cells, table_columns, table_has_name

Obj = dict[str, Any]

TABLE_API_VERSIONS = ("v1", "v1beta1")


def table_version(accept: str) -> str | None:
    """The meta.k8s.io Table version an Accept header asks for, if any (first wins)."""
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        values = dict(p.partition("=")[::2] for p in params)
        if media == "application/json" and values.get("as") == "Table":
            if values.get("g") == "meta.k8s.io" and values.get("v") in TABLE_API_VERSIONS:
                return values["v"]
            continue
        if media in ("application/json", "*/*"):
            return None
    return None


def _title(header: str) -> str:
    return header.title() if header not in ("IP", "CLUSTER-IP", "EXTERNAL-IP") else header


def column_definitions(info: KindInfo) -> list[Obj]:
    columns, wide = table_columns(info.key)
    found: list[Obj] = []
    if table_has_name(info.key):
        found.append(
            {
                "name": "Name",
                "type": "string",
                "format": "name",
                "description": "Name must be unique within a namespace.",
                "priority": 0,
            }
        )
    for priority, headers in ((0, columns), (1, wide)):
        found.extend(
            {
                "name": _title(h),
                "type": "date" if h == "AGE" else "string",
                "format": "",
                "description": "",
                "priority": priority,
            }
            for h in headers
        )
    return found


def _row_object(obj: Obj, include: str, table_api: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": f"meta.k8s.io/{table_api}",
        "metadata": obj.get("metadata") or {},
    }


def table(
    info: KindInfo,
    objects: Sequence[Obj],
    *,
    table_api: str,
    resource_version: str | None,
    include_object: str = "Metadata",
    with_columns: bool = True,
    now: datetime | None = None,
) -> Obj:
    """A ``meta.k8s.io`` Table of ``objects``; ``with_columns=False`` for later watch events."""
    now = now or datetime.now(UTC)
    rows = []
    for obj in objects:
        name = str((obj.get("metadata") or {}).get("name") or "")
        named = [name] if table_has_name(info.key) else []
        row: Obj = {"cells": [*named, *table_cells(info.key, obj, wide=True, now=now)]}
        embedded = _row_object(obj, include_object, table_api)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    metadata: Obj = {}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{table_api}",
        "metadata": metadata,
        "columnDefinitions": column_definitions(info) if with_columns else [],
        "rows": rows,
    }
