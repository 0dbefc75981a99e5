"""Objects of remote peers (joined gateway hosts, auto-registered workloads): never run
here, and deleted once their lease runs out.

The leader's runtime does this, as Kubernetes' node lifecycle controller acts on node
leases and istiod removes an auto-registered WorkloadEntry whose proxy went away: a peer
that stopped without saying goodbye (killed, powered off, cut off for longer than its
lease) stops receiving traffic within a lease and a resync.
"""

from __future__ import annotations

import datetime
import logging

from tcpmesh.join import expired, is_joined
from tcpmesh.runtime.objects import Obj, key_of
from tcpmesh.runtime.storeapi import StoreLike

log = logging.getLogger(__name__)

JOINED_KINDS = ("Pod", "WorkloadEntry")


def local_pods(pods: list[Obj]) -> list[Obj]:
    """The pods this machine's kubelet runs: every pod but those of joined hosts."""
    return [p for p in pods if not is_joined(p)]


def expire_joined(store: StoreLike, now: datetime.datetime | None = None) -> list[Obj]:
    """Delete the joined objects whose lease has expired; the deleted ones."""
    moment = now or datetime.datetime.now(datetime.UTC)
    gone = []
    for kind in JOINED_KINDS:
        for obj in store.list(kind):
            if is_joined(obj) and expired(obj, moment):
                try:
                    store.delete(kind, *key_of(obj))
                except Exception:
                    log.exception("%s %s/%s: deleting after its lease failed", kind, *key_of(obj))
                    continue
                log.info("%s %s/%s: lease expired; deleted", kind, *key_of(obj))
                gone.append(obj)
    return gone
