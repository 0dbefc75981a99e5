"""The mesh's cap on pods: every pod is a process on this machine, so their number is
bounded before they are started, never by running out of memory or pids.

The default is the kubelet's ``maxPods`` (110); ``tcpmesh up --max-pods N`` changes it.
The cap is enforced twice, as Kubernetes enforces a ResourceQuota: apply refuses a
Deployment that alone or with the others would ask for more pods than the cap, and the
Deployment controller creates no pod beyond it (the Deployment then carries a
``ReplicaFailure`` condition saying so), which covers rollout surges and races.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tcpmesh.runtime.objects import key_of

DEFAULT_MAX_PODS = 110
HOW_TO_RAISE = "start the mesh with `tcpmesh up --max-pods N` to raise it"


def _replicas(deploy: Mapping[str, Any]) -> int:
    value = (deploy.get("spec") or {}).get("replicas", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _label(deploy: Mapping[str, Any]) -> str:
    namespace, name = key_of(deploy)
    return f'Deployment "{name if namespace == "default" else f"{namespace}/{name}"}"'


def replica_cap_errors(
    applied: Iterable[Mapping[str, Any]], stored: Iterable[Mapping[str, Any]], max_pods: int
) -> list[str]:
    """Errors for the applied Deployments that would take the mesh past ``max_pods``.

    The total counts every Deployment as it will be after the apply (the applied ones
    replace stored ones of the same name); only Deployments that ask for more pods than
    they had are blamed, so a mesh already over its cap can still scale down.
    """
    deployments = [d for d in applied if d.get("kind") == "Deployment"]
    before = {key_of(d): _replicas(d) for d in stored}
    after = dict(before)
    after.update({key_of(d): _replicas(d) for d in deployments})
    total = sum(after.values())
    errors = []
    for deploy in deployments:
        replicas = _replicas(deploy)
        if replicas > max_pods:
            reason = f"more than the mesh's limit of {max_pods} pods"
        elif total > max_pods and replicas > before.get(key_of(deploy), 0):
            reason = (
                f"with the {total - replicas} pods of the other Deployments, more than the "
                f"mesh's limit of {max_pods} pods"
            )
        else:
            continue
        errors.append(
            f"{_label(deploy)} is invalid: spec.replicas: Invalid value: {replicas}: "
            f"{reason}; {HOW_TO_RAISE}"
        )
    return errors


def over_cap_message(generate_name: str, used: int, max_pods: int) -> str:
    """The ``ReplicaFailure`` message, shaped like Kubernetes' exceeded-quota refusal."""
    return (
        f'pods "{generate_name}" is forbidden: exceeded the mesh\'s pod limit: requested: '
        f"pods=1, used: pods={used}, limited: pods={max_pods}; {HOW_TO_RAISE}"
    )
