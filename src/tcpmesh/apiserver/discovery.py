"""Kubernetes API discovery documents, derived from the kind registry and nothing else.

kubectl resolves ``vs`` or ``deploy`` to a REST path by reading these documents, so
every kind in :data:`tcpmesh.api.kinds.KINDS` appears here by construction: a kind added
to the registry is discoverable without touching this module. Two encodings are served,
as the Kubernetes API server does: the legacy one (``/api``, ``/apis``, one
``APIResourceList`` per group version) and the aggregated one (``apidiscovery.k8s.io``
``v2`` and ``v2beta1``, one request for everything) that kubectl 1.26+ asks for first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tcpmesh.api import kinds
from tcpmesh.api.kinds import ISTIO_NETWORKING, KindInfo

Obj = dict[str, Any]

# The Kubernetes release whose API (and kubectl) tcpmesh's API matches; /version says so,
# and the image's kubectl dispatcher picks its client by it.
KUBERNETES_VERSION = (1, 32, 0)

READ_VERBS = ["get", "list", "watch"]
WRITE_VERBS = ["create", "delete", "deletecollection", "patch", "update"]
# Pods and Endpoints are written by tcpmesh; users may read and delete them (a deleted
# pod is replaced, as under a ReplicaSet).
SYSTEM_VERBS = ["delete", "deletecollection"]

AGGREGATED_VERSIONS = ("v2", "v2beta1")
AGGREGATED_GROUP = "apidiscovery.k8s.io"


def version_info(tcpmesh_version: str) -> Obj:
    """``/version``: a Kubernetes version, with tcpmesh's own in the build metadata."""
    major, minor, patch = KUBERNETES_VERSION
    return {
        "major": str(major),
        "minor": str(minor),
        "gitVersion": f"v{major}.{minor}.{patch}+tcpmesh-{tcpmesh_version}",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "python",
        "compiler": "tcpmesh",
        "platform": "linux/amd64",
    }


def verbs(info: KindInfo) -> list[str]:
    extra = WRITE_VERBS if info.user_writable else SYSTEM_VERBS
    return sorted({*READ_VERBS, *extra})


def categories(info: KindInfo) -> list[str]:
    """As the real API server and Istio's CRDs declare them (``kubectl get all``, ``istio-io``)."""
    if info.group == ISTIO_NETWORKING:
        return ["istio-io", "networking-istio-io"]
    if info.kind in ("Pod", "Service", "Deployment"):
        return ["all"]
    return []


def subresources(info: KindInfo) -> list[tuple[str, list[str]]]:
    """(name, verbs) of each subresource the server routes for this kind."""
    found: list[tuple[str, list[str]]] = [("status", ["get", "patch", "update"])]
    if info.kind == "Deployment":
        found.append(("scale", ["get", "patch", "update"]))
    if info.kind == "Pod":
        found.append(("log", ["get"]))
    return found


def _scale_kind(info: KindInfo, version: str, sub: str) -> Obj:
    if sub == "scale":
        return {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    return {"group": info.group, "version": version, "kind": info.kind}


def groups() -> dict[str, list[str]]:
    """Group name -> versions, preferred first; "" is the core group."""
    found: dict[str, list[str]] = {}
    for info in kinds.KINDS:
        versions = found.setdefault(info.group, [])
        versions.extend(v for v in info.versions if v not in versions)
    return found


def kinds_in(group: str, version: str) -> list[KindInfo]:
    return [i for i in kinds.KINDS if i.group == group and version in i.versions]


# ---------------------------------------------------------------- legacy discovery


def api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": groups().get("", []),
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def api_group(group: str) -> Obj | None:
    versions = groups().get(group)
    if not group or not versions:
        return None
    listed = [{"groupVersion": _group_version(group, v), "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": listed,
        "preferredVersion": listed[0],
    }


def api_group_list() -> Obj:
    found = (api_group(g) for g in groups() if g)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [g for g in found if g]}


def api_resource_list(group: str, version: str) -> Obj | None:
    members = kinds_in(group, version)
    if not members:
        return None
    resources: list[Obj] = []
    for info in members:
        resources.append(
            {
                "name": info.plural,
                "singularName": info.singular,
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": verbs(info),
                "shortNames": list(info.short_names),
                "categories": categories(info),
            }
        )
        for sub, sub_verbs in subresources(info):
            scale = _scale_kind(info, version, sub)
            entry: Obj = {
                "name": f"{info.plural}/{sub}",
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": scale["kind"],
                "verbs": sub_verbs,
            }
            if sub == "scale":
                entry.update(group=scale["group"], version=scale["version"])
            resources.append(entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": _group_version(group, version),
        "resources": resources,
    }


# ---------------------------------------------------------------- aggregated discovery


def _discovery_resource(info: KindInfo, version: str) -> Obj:
    return {
        "resource": info.plural,
        "responseKind": {"group": info.group, "version": version, "kind": info.kind},
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular,
        "verbs": verbs(info),
        "shortNames": list(info.short_names),
        "categories": categories(info),
        "subresources": [
            {
                "subresource": sub,
                "responseKind": _scale_kind(info, version, sub),
                "verbs": sub_verbs,
            }
            for sub, sub_verbs in subresources(info)
        ],
    }


def _discovery_group(group: str, versions: Iterable[str]) -> Obj:
    return {
        "metadata": {"name": group, "creationTimestamp": None},
        "versions": [
            {
                "version": v,
                "resources": [_discovery_resource(i, v) for i in kinds_in(group, v)],
                "freshness": "Current",
            }
            for v in versions
        ],
    }


def aggregated(core: bool, version: str) -> Obj:
    """``APIGroupDiscoveryList`` for ``/api`` (core) or ``/apis`` (every named group)."""
    items = [_discovery_group(g, vs) for g, vs in groups().items() if (g == "") == core]
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"{AGGREGATED_GROUP}/{version}",
        "metadata": {},
        "items": items,
    }


def aggregated_media_type(accept: str) -> str | None:
    """The aggregated discovery version the Accept header asks for first, if any.

    kubectl sends ``application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList``
    (and v2beta1 in older releases) ahead of plain ``application/json``; a client that
    does not list it gets the legacy documents.
    """
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media not in ("application/json", "*/*"):
            continue
        values = dict(p.partition("=")[::2] for p in params)
        if values.get("g") == AGGREGATED_GROUP and values.get("as") == "APIGroupDiscoveryList":
            if values.get("v") in AGGREGATED_VERSIONS:
                return values["v"]
            continue
        if media == "application/json" and not values.get("as"):
            return None
    return None
