"""``python -m tcpmesh.xds.gateway [ENVOY-ARGS...]``: the ingress gateway pod as Envoy.

What the built-in image ``envoyproxy/envoy`` runs. It writes the pod's bootstrap (node id
``$POD_NAMESPACE/$POD_NAME``, the mesh's ADS address from ``$TCPMESH_STATE_DIR/xds.json``,
the status port ``$TCPMESH_STATUS_PORT`` on ``$POD_IP``), then runs Envoy as its child and
passes SIGTERM/SIGINT/SIGHUP on; it exits with Envoy's status. It stays the parent, rather
than exec'ing Envoy, so the runtime still recognises the pod's process after a crash.

Environment besides the pod's: TCPMESH_WORKERS (Envoy's ``--concurrency``, default: one
per core), TCPMESH_ENVOY_DRAIN_TIME (``--drain-time-s``, default Istio's 45; weight
changes never drain, see tcpmesh.xds.translate), TCPMESH_ENVOY_LOG_LEVEL (default
``warning``), TCPMESH_PROMETHEUS_PORT (Istio's 15020 on ``$POD_IP``: Envoy's stats as
Istio's TCP metrics, see tcpmesh.xds.metrics). Extra arguments are passed to Envoy.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from tcpmesh.telemetry import MetricsThread, Source
from tcpmesh.xds.bootstrap import bootstrap
from tcpmesh.xds.envoyfiles import (
    INSTALL_HINT,
    admin_address_file,
    envoy_binary,
    pod_dir,
    read_xds_address,
)
from tcpmesh.xds.metrics import EnvoyMetrics

XDS_WAIT = 30.0
DEFAULT_DRAIN_TIME = "45"
# Access log lines reach the pod log within this many milliseconds.
FILE_FLUSH_MS = "200"
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Envoy must not outlive this process, even if it is killed with SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def envoy_argv(
    binary: Path, config: Path, admin_path: Path, extra: list[str], workers: int | None = None
) -> list[str]:
    """Envoy's command line; ``workers`` (else $TCPMESH_WORKERS, else one per core)."""
    env = os.environ
    concurrency = env.get("TCPMESH_WORKERS", "").strip() or str(os.cpu_count() or 1)
    workers_text = str(workers) if workers is not None else concurrency
    return [
        str(binary),
        "-c",
        str(config),
        "--admin-address-path",
        str(admin_path),
        "--drain-time-s",
        env.get("TCPMESH_ENVOY_DRAIN_TIME", "").strip() or DEFAULT_DRAIN_TIME,
        "--drain-strategy",
        "immediate",
        "--disable-hot-restart",
        "--concurrency",
        workers_text,
        "--file-flush-interval-msec",
        FILE_FLUSH_MS,
        "-l",
        env.get("TCPMESH_ENVOY_LOG_LEVEL", "").strip() or "warning",
        *extra,
    ]


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    env = os.environ
    namespace = env.get("POD_NAMESPACE", "default")
    pod = env.get("POD_NAME", "envoy")
    state_dir = Path(env.get("TCPMESH_STATE_DIR") or ".")
    status_port = env.get("TCPMESH_STATUS_PORT", "").strip()
    binary = envoy_binary()
    if binary is None:
        print(f"envoy gateway: no Envoy binary found; {INSTALL_HINT}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + XDS_WAIT
    while (xds := read_xds_address(state_dir)) is None:
        if time.monotonic() > deadline:
            print(f"envoy gateway: no xDS server recorded in {state_dir}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    directory = pod_dir(state_dir, namespace, pod)
    directory.mkdir(parents=True, exist_ok=True)
    admin_path = admin_address_file(state_dir, namespace, pod)
    admin_path.unlink(missing_ok=True)
    config_path = directory / "bootstrap.json"
    config = bootstrap(
        node_id=f"{namespace}/{pod}",
        node_cluster=pod.rsplit("-", 2)[0] if pod.count("-") >= 2 else pod,
        xds_address=xds.address,
        xds_port=xds.port,
        status_address=env.get("POD_IP") or "127.0.0.1",
        status_port=int(status_port) if status_port else None,
    )
    config_path.write_text(json.dumps(config, indent=1))
    command = envoy_argv(binary, config_path, admin_path, extra)
    print(f"envoy gateway: node {namespace}/{pod}, xDS {xds.address}:{xds.port}", flush=True)
    proc = subprocess.Popen(command, preexec_fn=die_with_parent)
    prometheus_port = env.get("TCPMESH_PROMETHEUS_PORT", "").strip()
    if prometheus_port:
        metrics = EnvoyMetrics(admin_path, f"{namespace}/{pod}", state_dir)
        host = env.get("POD_IP") or "127.0.0.1"
        source = Source.from_env(env)
        MetricsThread(host, int(prometheus_port), metrics.collect, source, metrics.follow).start()

    def forward(signum: int, _frame: FrameType | None) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        return proc.wait()
    finally:
        admin_path.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
