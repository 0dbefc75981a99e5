"""One resource as a plain dict: typed conversion, complete checking, normalization.

Every message names the resource the way kubectl does (``VirtualService "tcp-echo"``,
with the namespace when it is not ``default``) followed by the field path, so each line
stands on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tcpmesh.api import gatewayapi, kinds, models
from tcpmesh.api.errors import InvalidInput
from tcpmesh.api.shape import shape_findings
from tcpmesh.api.validation import validate

_SYSTEM_OWNED = {
    "Pod": "Pods are created by tcpmesh from Deployments; apply a Deployment instead",
    "Endpoints": "Endpoints are maintained by tcpmesh from Services and the Pods they select",
}


@dataclass
class Checked:
    """The outcome of checking one object; ``object`` is set only when it is valid."""

    object: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def describe(kind: str, name: str | None, namespace: str | None, where: str | None = None) -> str:
    """``VirtualService "tcp-echo"``, ``Gateway "istio-system/gw"``, ``Service (document 2)``."""
    if name:
        ns = namespace or "default"
        return f'{kind} "{name if ns == "default" else f"{ns}/{name}"}"'
    return f"{kind} ({where or 'unnamed'})"


def check_object(obj: Any, where: str | None = None) -> Checked:
    """Shape and semantic checks of one object, and its normalized form when valid.

    ``where`` ("document 2") locates objects that cannot be named; messages carry no
    file name, callers add it.
    """
    lead = f"{where}: " if where else ""
    if not isinstance(obj, Mapping):
        return Checked(errors=[f"{lead}expected an object, got {_kind_of(obj)}"])
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    unset = [key for key, value in (("apiVersion", api_version), ("kind", kind)) if not value]
    if unset:
        return Checked(errors=[f"{lead}{key} not set" for key in unset])
    try:
        info = kinds.for_object(obj)
        if not info.accepts_api_version(str(api_version)):
            raise kinds.UnknownKind(kind)
    except kinds.UnknownKind:
        # Kind and version identify the document well enough; kubectl says no more.
        return Checked(errors=[f'no matches for kind "{kind}" in version "{api_version}"'])

    metadata = obj.get("metadata")
    name = namespace = None
    if isinstance(metadata, Mapping):
        name = metadata.get("name") if isinstance(metadata.get("name"), str) else None
        ns = metadata.get("namespace")
        namespace = ns if isinstance(ns, str) else None
    label = describe(info.kind, name, namespace, where)
    if not info.user_writable:
        reason = _SYSTEM_OWNED.get(info.kind, f"{info.kind} objects are written by tcpmesh only")
        return Checked(errors=[f"{label}: {reason}"])

    try:
        # Strict: Kubernetes rejects "80" for an integer field, and so do we.
        resource = info.model.model_validate(obj, strict=True)
    except ValidationError as exc:
        findings = shape_findings(info.model, exc)
        return Checked(errors=[f"{label} is invalid: {f.path}: {f.message}" for f in findings])

    checked = Checked()
    for finding in validate(resource):
        if finding.warning:
            checked.warnings.append(f"{label}: {finding.path}: {finding.message}")
        else:
            checked.errors.append(f"{label} is invalid: {finding.path}: {finding.message}")
    if not checked.errors:
        checked.object = to_dict(resource)
    return checked


def validate_object(obj: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(errors, warnings) for an object arriving over the API; valid when errors is empty."""
    checked = check_object(obj)
    return checked.errors, checked.warnings


def update_errors(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What an update of the stored ``old`` to ``new`` may not do (the CRDs' transition
    rules, ``self == oldSelf``); both are admitted objects of one kind."""
    before, after = from_dict(old), from_dict(new)
    label = describe(after.kind, after.metadata.name, after.metadata.namespace)
    findings = gatewayapi.changed_immutably(before, after)
    return [f"{label} is invalid: {f.path}: {f.message}" for f in findings]


def from_dict(obj: Mapping[str, Any]) -> models.Resource:
    """The typed model of an object dict (shape checks only; raises ``InvalidInput``).

    Meant for objects already admitted or written by tcpmesh itself, so unlike the
    checks on user input it tolerates lossless coercions (``"80"`` for 80).
    """
    kind = obj.get("kind")
    try:
        info = kinds.for_object(obj)
    except kinds.UnknownKind:
        raise InvalidInput([f'no matches for kind "{kind}"']) from None
    try:
        return info.model.model_validate(obj)
    except ValidationError as exc:
        metadata = obj.get("metadata")
        meta = metadata if isinstance(metadata, Mapping) else {}
        label = describe(info.kind, meta.get("name"), meta.get("namespace"))
        findings = shape_findings(info.model, exc)
        raise InvalidInput(f"{label} is invalid: {f.path}: {f.message}" for f in findings) from None


def to_dict(resource: models.Resource) -> dict[str, Any]:
    """The JSON-shaped dict of a model, keeping only the fields that were set."""
    return resource.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def pod_ready(status: Mapping[str, Any] | None) -> bool:
    """Whether a pod status has the condition ``Ready=True`` (Kubernetes' IsPodReady).

    The one home of the rule: endpoints (runtime), pod listings (cli) and ServiceEntry
    workload selection (control) all ask here."""
    conditions = (status or {}).get("conditions") or []
    return any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions
    )
