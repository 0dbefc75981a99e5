"""What one store operation costs, SQLite against etcd, as the controllers call them.

``python benchmarks/store_ops.py [--store etcd://HOST:PORT] [--objects N] [--rounds R]``

Each backend gets a fresh space (a temporary SQLite file; a fresh etcd prefix), N Service
objects, then R rounds of: ``get`` one object, ``list`` all N (what the runtime's
level-triggered sync does on every event), ``apply`` one changed object, ``apply`` 50
objects in one call (one etcd transaction), and ``update_status``. Prints per-operation
medians and p90s; asserts nothing. Without ``--store`` only SQLite is measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcpmesh.store import StoreBackend, open_store


def service(name: str, note: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "labels": {"app": name}}
    if note:
        meta["annotations"] = {"note": note}
    ports = [{"name": "tcp", "port": 9000, "targetPort": 9000, "protocol": "TCP"}]
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"ports": ports}}


def timed(samples: dict[str, list[float]], name: str, call: Callable[[], object]) -> None:
    start = time.perf_counter()
    call()
    samples.setdefault(name, []).append(time.perf_counter() - start)


def measure(store: StoreBackend, objects: int, rounds: int) -> dict[str, list[float]]:
    for start in range(0, objects, 100):
        store.apply([service(f"s{i}") for i in range(start, min(objects, start + 100))])
    samples: dict[str, list[float]] = {}
    for r in range(rounds):
        timed(samples, "get one", lambda: store.get("Service", "default", "s0"))
        timed(samples, f"list {objects}", lambda: store.list("Service"))
        timed(samples, "apply 1 (changed)", lambda r=r: store.apply([service("s1", str(r))]))
        batch = [service(f"s{i}", str(r)) for i in range(50)]
        timed(samples, "apply 50 (one call)", lambda b=batch: store.apply(b))
        timed(
            samples,
            "update_status",
            lambda r=r: store.update_status("Service", "default", "s2", {"round": r}),
        )
    return samples


def report(name: str, samples: dict[str, list[float]]) -> None:
    for op, values in samples.items():
        ms = sorted(v * 1000 for v in values)
        p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
        print(f"{name:>7}  {op:<20} median {statistics.median(ms):8.2f} ms   p90 {p90:8.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=None, help="an etcd://... URL to compare with")
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tcpmesh-store-ops-") as tmp:
        backends = [("sqlite", None)]
        if args.store:
            base = args.store.split("?")[0].rstrip("/")
            query = args.store[len(args.store.split("?")[0]) :]
            backends.append(("etcd", f"{base}/bench-{uuid.uuid4().hex[:8]}{query}"))
        for name, spec in backends:
            store = open_store(spec, Path(tmp))
            try:
                report(name, measure(store, args.objects, args.rounds))
            finally:
                store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
