"""Deployment controller: keep ``spec.replicas`` pods of the current template.

It plays Deployment + ReplicaSet controller without ReplicaSet objects: pods are owned
by the Deployment directly and carry the ``pod-template-hash`` label, so pods of the
current template and pods of older ones are told apart the same way. A template change
is rolled out like Kubernetes' RollingUpdate with maxSurge=1, maxUnavailable=0 (whatever
numbers the manifest gives): one new pod is added, and an old ready pod goes only once a
new one is ready. ``strategy.type: Recreate`` deletes the old pods first.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tcpmesh.api import stored_selector_matches
from tcpmesh.runtime.events import NORMAL, EventRecorder, Happening
from tcpmesh.runtime.objects import (
    Obj,
    condition,
    key_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
    pod_is_ready,
)
from tcpmesh.runtime.podcap import DEFAULT_MAX_PODS, over_cap_message
from tcpmesh.runtime.storeapi import StoreLike

log = logging.getLogger(__name__)

HASH_LABEL = "pod-template-hash"
# Kubernetes' alphabet for generated names: no vowels (no words), no look-alike 0/1/3.
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: Mapping[str, Any]) -> str:
    """Ten characters that change whenever the pod template changes."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:10])


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_pod(deploy: Mapping[str, Any], pod_hash: str, suffix: str) -> Obj:
    """A Pod of the Deployment's template, named like a ReplicaSet's pods."""
    template = deploy["spec"]["template"]
    tmeta = template.get("metadata") or {}
    deploy_name = name_of(deploy)
    metadata: Obj = {
        "name": f"{deploy_name}-{pod_hash}-{suffix}",
        "generateName": f"{deploy_name}-{pod_hash}-",
        "namespace": namespace_of(deploy),
        "labels": {**(tmeta.get("labels") or {}), HASH_LABEL: pod_hash},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deploy_name,
                "uid": meta(deploy).get("uid") or "",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if tmeta.get("annotations"):
        metadata["annotations"] = dict(tmeta["annotations"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": copy.deepcopy(template["spec"]),
    }


def controller_ref(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs: list[Mapping[str, Any]] = meta(pod).get("ownerReferences") or []
    return next((r for r in refs if r.get("controller")), None)


def is_owned_by(pod: Mapping[str, Any], deploy: Mapping[str, Any]) -> bool:
    ref = controller_ref(pod)
    if ref is None or ref.get("kind") != "Deployment" or ref.get("name") != name_of(deploy):
        return False
    if namespace_of(pod) != namespace_of(deploy):
        return False
    uid = ref.get("uid")
    return not uid or uid == meta(deploy).get("uid")


def orphaned_pods(deployments: Iterable[Mapping[str, Any]], pods: Iterable[Obj]) -> list[Obj]:
    """Pods whose owning Deployment is gone (deleted, or deleted and created anew)."""
    alive = list(deployments)
    return [
        pod
        for pod in pods
        if (ref := controller_ref(pod)) is not None
        and ref.get("kind") == "Deployment"
        and not any(is_owned_by(pod, d) for d in alive)
    ]


def _restarts(pod: Mapping[str, Any]) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses)


def deletion_order(pods: Iterable[Obj]) -> list[Obj]:
    """Pods least worth keeping first: not ready, not running, most restarts, newest."""
    newest_first = sorted(
        pods, key=lambda p: str(meta(p).get("creationTimestamp") or ""), reverse=True
    )
    return sorted(
        newest_first,
        key=lambda p: (
            pod_is_ready(p),
            (p.get("status") or {}).get("phase") == "Running",
            -_restarts(p),
        ),
    )


@dataclass(frozen=True)
class Plan:
    create: int = 0
    delete: tuple[Obj, ...] = field(default_factory=tuple)


def plan_rollout(
    replicas: int, new: Sequence[Obj], old: Sequence[Obj], *, recreate: bool = False
) -> Plan:
    """What to do next, given the pods of the current template and of older ones.

    RollingUpdate with maxSurge=1, maxUnavailable=0: at most ``replicas + 1`` pods
    exist, and ready pods never drop below ``replicas`` because of the rollout (a crash
    still can). ``recreate`` (strategy Recreate): every old pod goes before new ones come.
    """
    if len(new) > replicas:
        return Plan(delete=tuple(deletion_order(new)[: len(new) - replicas]))
    if recreate and old:
        return Plan(delete=tuple(old))
    if not old:
        return Plan(create=replicas - len(new))
    create = max(0, min(replicas - len(new), replicas + 1 - len(new) - len(old)))
    new_unavailable = sum(1 for p in new if not pod_is_ready(p))
    budget = len(new) + len(old) - replicas - new_unavailable
    if budget <= 0:
        return Plan(create=create)
    # Old pods that are not ready serve nothing: they go first, like Kubernetes'
    # cleanupUnhealthyReplicas; ready ones only while enough ready pods remain.
    unready_old = [p for p in deletion_order(old) if not pod_is_ready(p)][:budget]
    ready_old = [p for p in deletion_order(old) if pod_is_ready(p)]
    available = sum(1 for p in (*new, *old) if pod_is_ready(p))
    scale_down = min(max(0, available - replicas), budget - len(unready_old))
    return Plan(create=create, delete=(*unready_old, *ready_old[:scale_down]))


def deployment_status(
    deploy: Mapping[str, Any],
    pods: Sequence[Obj],
    pod_hash: str,
    failure: str | None = None,
) -> Obj:
    """The Deployment's status in Kubernetes shape, from the pods it owns."""
    previous = deploy.get("status") or {}
    before = previous.get("conditions") or []
    desired = int(deploy["spec"].get("replicas", 1))
    ready = sum(1 for p in pods if pod_is_ready(p))
    updated = sum(1 for p in pods if labels_of(p).get(HASH_LABEL) == pod_hash)
    replica_set = f"{name_of(deploy)}-{pod_hash}"
    complete = updated == desired == len(pods) == ready
    conditions = [
        condition(
            "Available",
            ready >= desired,
            before,
            "MinimumReplicasAvailable" if ready >= desired else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if ready >= desired
            else "Deployment does not have minimum availability.",
        ),
        condition(
            "Progressing",
            True,
            before,
            "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
            f'ReplicaSet "{replica_set}" has successfully progressed.'
            if complete
            else f'ReplicaSet "{replica_set}" is progressing.',
        ),
    ]
    if failure:
        conditions.append(condition("ReplicaFailure", True, before, "FailedCreate", failure))
    return {
        "observedGeneration": meta(deploy).get("generation", 1),
        "replicas": len(pods),
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(0, max(desired, len(pods)) - ready),
        "conditions": conditions,
    }


def _create_pod(store: StoreLike, deploy: Mapping[str, Any], pod_hash: str) -> Obj:
    # A name collision is astronomically rare but cheap to avoid.
    for _ in range(10):
        pod = new_pod(deploy, pod_hash, random_suffix())
        if store.get("Pod", namespace_of(pod), name_of(pod)) is None:
            created = store.create(pod)
            log.info("deployment %s/%s: created pod %s", *key_of(deploy), name_of(created))
            return created
    raise RuntimeError(f"no free pod name for deployment {name_of(deploy)}")


def scaling_happenings(
    deploy: Mapping[str, Any],
    owned: Sequence[Obj],
    deleted: Sequence[Obj],
    created: int,
    pod_hash: str,
) -> list[Happening]:
    """``ScalingReplicaSet`` events, one per replica set (pod template hash) that changed size."""
    sizes: dict[str, int] = {}
    for pod in owned:
        replica_hash = str(labels_of(pod).get(HASH_LABEL, ""))
        sizes[replica_hash] = sizes.get(replica_hash, 0) + 1
    found = []
    if created:
        before = sizes.get(pod_hash, 0)
        replica_set = f"{name_of(deploy)}-{pod_hash}"
        found.append(
            Happening(
                NORMAL,
                "ScalingReplicaSet",
                f"Scaled up replica set {replica_set} from {before} to {before + created}",
            )
        )
    gone: dict[str, int] = {}
    for pod in deleted:
        replica_hash = str(labels_of(pod).get(HASH_LABEL, ""))
        gone[replica_hash] = gone.get(replica_hash, 0) + 1
    for replica_hash, count in sorted(gone.items()):
        before = sizes.get(replica_hash, 0)
        found.append(
            Happening(
                NORMAL,
                "ScalingReplicaSet",
                f"Scaled down replica set {name_of(deploy)}-{replica_hash} from {before} to "
                f"{before - count}",
            )
        )
    return found


@dataclass
class PodBudget:
    """How many more pods the mesh may run (:mod:`tcpmesh.runtime.podcap`)."""

    used: int
    limit: int = DEFAULT_MAX_PODS

    def take(self, wanted: int) -> int:
        granted = max(0, min(wanted, self.limit - self.used))
        self.used += granted
        return granted


def sync_deployment(
    store: StoreLike,
    deploy: Mapping[str, Any],
    pods: Sequence[Obj],
    budget: PodBudget | None = None,
    events: EventRecorder | None = None,
) -> None:
    """One reconciliation step for one Deployment; ``pods`` are its namespace's pods.

    ``budget`` bounds the pods created; a Deployment it leaves short says so in a
    ``ReplicaFailure`` condition. ``events`` records the scaling it does.
    """
    spec = deploy["spec"]
    template = spec["template"]
    pod_hash = template_hash(template)
    owned = [p for p in pods if is_owned_by(p, deploy)]
    template_labels = (template.get("metadata") or {}).get("labels") or {}
    failure = None
    if not stored_selector_matches(spec.get("selector"), template_labels):
        # The API server of Kubernetes rejects this; creating pods that the selector
        # cannot count would create them forever.
        failure = "`selector` does not match template `labels`"
        plan = Plan()
    else:
        new = [p for p in owned if labels_of(p).get(HASH_LABEL) == pod_hash]
        old = [p for p in owned if labels_of(p).get(HASH_LABEL) != pod_hash]
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        plan = plan_rollout(int(spec.get("replicas", 1)), new, old, recreate=recreate)
    deleted = {key_of(p) for p in plan.delete}
    for pod in plan.delete:
        if store.get("Pod", *key_of(pod)) is not None:
            store.delete("Pod", *key_of(pod))
            log.info("deployment %s/%s: deleted pod %s", *key_of(deploy), name_of(pod))
    if budget is not None:
        budget.used -= len(plan.delete)
        granted = budget.take(plan.create)
        if granted < plan.create:
            generate_name = f"{name_of(deploy)}-{pod_hash}-"
            failure = over_cap_message(generate_name, budget.used, budget.limit)
            plan = Plan(create=granted, delete=plan.delete)
    current = [p for p in owned if key_of(p) not in deleted]
    current += [_create_pod(store, deploy, pod_hash) for _ in range(plan.create)]
    if events is not None:
        for happening in scaling_happenings(deploy, owned, plan.delete, plan.create, pod_hash):
            events.record(deploy, happening)
    status = deployment_status(deploy, current, pod_hash, failure)
    if status != deploy.get("status"):
        store.update_status("Deployment", *key_of(deploy), status)


def sync_deployments(
    store: StoreLike, max_pods: int = DEFAULT_MAX_PODS, events: EventRecorder | None = None
) -> None:
    """Reconcile every Deployment, then delete the pods of Deployments that are gone.

    No more than ``max_pods`` pods exist afterwards (pods already above it are left to
    scale-downs and deletions, never killed to make room).
    """
    deployments = store.list("Deployment")
    pods = store.list("Pod")
    budget = PodBudget(used=len(pods), limit=max_pods)
    by_namespace: dict[str, list[Obj]] = {}
    for pod in pods:
        by_namespace.setdefault(namespace_of(pod), []).append(pod)
    for deploy in deployments:
        try:
            sync_deployment(
                store, deploy, by_namespace.get(namespace_of(deploy), []), budget, events
            )
        except Exception:
            log.exception("deployment %s/%s: reconcile failed", *key_of(deploy))
    for pod in orphaned_pods(deployments, pods):
        try:
            if store.get("Pod", *key_of(pod)) is not None:
                store.delete("Pod", *key_of(pod))
                log.info("deleted pod %s/%s: its deployment is gone", *key_of(pod))
        except Exception:
            log.exception("pod %s/%s: garbage collection failed", *key_of(pod))
