"""``tcpmesh up``: the composition root that starts every component of a local mesh.

One process owns the store and runs the API server, the runtime (pods) and the control
plane; the gateway proxy runs as a pod of its own, so it keeps serving its last snapshot
when this process goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import ipaddress
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tcpmesh.api import (
    REBALANCE_ANNOTATION,
    REBALANCE_REQUEST_ANNOTATION,
    VERSION_AFFINITY_ANNOTATION,
    namespaces,
    rebalance_settings,
    validate_object,
)
from tcpmesh.apiserver import create_app, mount
from tcpmesh.apiserver.credentials import (
    client_ssl_context,
    new_token,
    remove_credentials,
    write_credentials,
)
from tcpmesh.apiserver.kubeconfig import write_kubeconfig
from tcpmesh.apiserver.peers import PeerAuthority, PeerRefused
from tcpmesh.apiserver.pki import ensure_ca, issue_certificate, server_ssl_context, share_ca
from tcpmesh.console import CONSOLE_PREFIX, create_console, traffic_source
from tcpmesh.control import (
    INGRESS_GATEWAY_SELECTOR,
    NODE_PROXY_LABELS,
    NODE_PROXY_NAME,
    NODE_PROXY_NAMESPACE,
    ControlPlane,
    builtin_gateway_classes,
)
from tcpmesh.controllers import Event as RolloutEvent
from tcpmesh.controllers import GatewayApiController, NamespaceController, RolloutController
from tcpmesh.registry import ServiceRegistry
from tcpmesh.replica import RUNTIME_ELECTION, LeaderGate
from tcpmesh.runtime import (
    DEFAULT_MAX_PODS,
    EventRecorder,
    Happening,
    Runtime,
    pod_is_ready,
    replica_cap_errors,
)
from tcpmesh.statedir import make_private, private_umask
from tcpmesh.store import (
    AlreadyExists,
    StoreBackend,
    leader_election,
    object_kind_key,
    open_store,
)
from tcpmesh.telemetry import PROMETHEUS_PATH, PROMETHEUS_PORT
from tcpmesh.xds import (
    read_xds_address,
    remove_xds_address,
    write_xds_address,
    xds_libraries_installed,
)

if TYPE_CHECKING:
    from tcpmesh.xds import RemoteListener, XdsServer

log = logging.getLogger("tcpmesh.mesh")

GATEWAY_NAMESPACE = "istio-system"
GATEWAY_NAME = "istio-ingressgateway"
GATEWAY_LABELS = {"app": "istio-ingressgateway", **INGRESS_GATEWAY_SELECTOR}
GATEWAY_IMAGE = "docker.io/istio/proxyv2:1.24.0"
# `--dataplane envoy`: the image tcpmesh runs as Envoy fed by its xDS server.
ENVOY_GATEWAY_IMAGE = "docker.io/envoyproxy/envoy:v1.40.0"
# Test hook: clusters whose name contains this text are served in a form Envoy rejects.
STATUS_PORT = 15021
# The node proxy shares the host's network with the gateway, so its status and metrics
# ports differ from the gateway's 15021 and 15020 (and from the SLB's 15031).
NODE_PROXY_STATUS_PORT = 15041
NODE_PROXY_PROMETHEUS_PORT = 15040
# Istio's pod annotations for scraping the merged metrics port.
PROMETHEUS_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(PROMETHEUS_PORT),
    "prometheus.io/path": PROMETHEUS_PATH,
}
# The API (HTTPS, bearer token) listens here; its certificate names this address.
API_HOST = "127.0.0.1"
GATEWAY_READY_TIMEOUT = 60.0
# The ports of Istio's demo profile ingress gateway Service.
GATEWAY_PORTS = (
    ("status-port", 15021, 15021),
    ("http2", 80, 8080),
    ("https", 443, 8443),
    ("tcp", 31400, 31400),
    ("tls", 15443, 15443),
)


DEFAULT_XDS_PORT = 15012
# How often an open ADS stream of another host's Envoy checks that its peer is still
# allowed (a deleted bootstrap token ends it within this long).
REVOCATION_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class MeshConfig:
    state_dir: Path
    address: str = "127.0.0.1"
    workers: int | None = None
    dataplane: str = "python"
    # `--relay`: how the built-in data plane moves bytes (dataplane.splice.RelayMode).
    relay: str = "auto"
    # `--engine`: the C engine or the Python relay (dataplane.native.EngineMode).
    engine: str = "auto"
    max_pods: int = DEFAULT_MAX_PODS
    # `--store`: None (SQLite in the state directory) or an etcd://... URL.
    store: str | None = None
    # `--bind-address`/`--secure-port`: the API for other hosts (remote gateways and
    # workloads join there); None: loopback only.
    bind_address: str | None = None
    secure_port: int = 0
    # `--advertise-address`: where other hosts reach the API (kube-apiserver's flag): the
    # serving certificate names it and joins are told it. None: --bind-address itself.
    advertise_address: str | None = None
    # `--gateway-replicas`: local replicas of the default ingress gateway (0: joined
    # hosts only).
    gateway_replicas: int = 1
    # `--cluster-signing-duration`: the life of a joined peer's client certificate.
    signing_seconds: float = 3600.0
    # `--xds-port`: ADS (mTLS) on --bind-address for Envoy gateways of other hosts
    # (istiod's secure xDS port; 0 picks a free one).
    xds_port: int = DEFAULT_XDS_PORT

    @property
    def effective_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


class AlreadyRunning(RuntimeError):
    pass


def default_gateway_objects(config: MeshConfig) -> list[dict[str, Any]]:
    """The ``istio-system/istio-ingressgateway`` Service and workload that ``up`` creates."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": GATEWAY_NAME,
            "namespace": GATEWAY_NAMESPACE,
            "labels": dict(GATEWAY_LABELS),
        },
        "spec": {
            "type": "LoadBalancer",
            "selector": dict(GATEWAY_LABELS),
            "ports": [
                {"name": name, "port": port, "targetPort": target, "protocol": "TCP"}
                for name, port, target in GATEWAY_PORTS
            ],
        },
    }
    deployment = gateway_deployment(
        config, GATEWAY_NAME, GATEWAY_NAMESPACE, GATEWAY_LABELS, replicas=config.gateway_replicas
    )
    return [service, deployment]


def gateway_deployment(
    config: MeshConfig,
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    *,
    host_network: bool = True,
    replicas: int = 1,
) -> dict[str, Any]:
    """A gateway proxy Deployment on the mesh's data plane: the default ingress gateway's, and
    each Gateway API Gateway's (controllers.gatewayapi), made the same way."""
    envoy = config.dataplane == "envoy"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": dict(PROMETHEUS_ANNOTATIONS),
                },
                "spec": {
                    # The default gateway listens on this machine's address (the load
                    # balancer's); a Gateway API Gateway's proxy on its own pod IP.
                    "hostNetwork": host_network,
                    "containers": [
                        {
                            "name": "istio-proxy",
                            "image": ENVOY_GATEWAY_IMAGE if envoy else GATEWAY_IMAGE,
                            "args": [] if envoy else ["proxy", "router"],
                            "env": [
                                {"name": "TCPMESH_WORKERS", "value": str(config.effective_workers)},
                                {"name": "TCPMESH_RELAY", "value": config.relay},
                                {"name": "TCPMESH_ENGINE", "value": config.engine},
                                {"name": "TCPMESH_STATUS_PORT", "value": str(STATUS_PORT)},
                                {"name": "TCPMESH_PROMETHEUS_PORT", "value": str(PROMETHEUS_PORT)},
                                {"name": "ISTIO_META_WORKLOAD_NAME", "value": name},
                                _label_env("TCPMESH_POD_APP", "app"),
                                _label_env("TCPMESH_POD_VERSION", "version"),
                            ],
                            "ports": [
                                {"name": "status-port", "containerPort": STATUS_PORT},
                            ],
                        }
                    ],
                },
            },
        },
    }


def node_proxy_objects(config: MeshConfig) -> list[dict[str, Any]]:
    """The node proxy (``kube-system/tcpmesh-node-proxy``): kube-proxy's role with Istio's
    sidecar-outbound routing, on the data plane of ``up --dataplane``. It runs with the
    host's network, where node ports and load-balancer addresses are, and binds the
    Services' cluster IPs beside them (all of 127.0.0.0/8 is local)."""
    envoy = config.dataplane == "envoy"
    labels = dict(NODE_PROXY_LABELS)
    annotations = {
        **PROMETHEUS_ANNOTATIONS,
        "prometheus.io/port": str(NODE_PROXY_PROMETHEUS_PORT),
    }
    container = {
        "name": "node-proxy",
        "image": ENVOY_GATEWAY_IMAGE if envoy else GATEWAY_IMAGE,
        "args": [] if envoy else ["proxy", "sidecar"],
        "env": [
            {"name": "TCPMESH_WORKERS", "value": str(config.effective_workers)},
            {"name": "TCPMESH_RELAY", "value": config.relay},
            {"name": "TCPMESH_ENGINE", "value": config.engine},
            {"name": "TCPMESH_STATUS_PORT", "value": str(NODE_PROXY_STATUS_PORT)},
            {"name": "TCPMESH_PROMETHEUS_PORT", "value": str(NODE_PROXY_PROMETHEUS_PORT)},
            {"name": "ISTIO_META_WORKLOAD_NAME", "value": NODE_PROXY_NAME},
        ],
        "ports": [{"name": "status-port", "containerPort": NODE_PROXY_STATUS_PORT}],
    }
    metadata = {"name": NODE_PROXY_NAME, "namespace": NODE_PROXY_NAMESPACE, "labels": labels}
    template = {
        "metadata": {"labels": labels, "annotations": annotations},
        "spec": {"hostNetwork": True, "containers": [container]},
    }
    spec = {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}
    return [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}]


def _label_env(name: str, label: str) -> dict[str, Any]:
    """An env var from a pod label (downward API), as Istio's injector passes labels."""
    path = f"metadata.labels['{label}']"
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


@contextlib.contextmanager
def single_instance(state_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock so two meshes never share one state directory."""
    private_umask()
    make_private(state_dir)
    lock_path = state_dir / "mesh.lock"
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise AlreadyRunning(
                f"tcpmesh is already running from {state_dir} (pid {owner})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()


class _Writers:
    """The writing controllers, started and stopped together (under the leader gate on
    a shared store): the runtime, then the Rollout controller; stopped in reverse."""

    def __init__(
        self,
        runtime: Runtime,
        rollouts: RolloutController,
        gateways: GatewayApiController,
        namespaces: NamespaceController,
    ) -> None:
        self.runtime = runtime
        self.rollouts = rollouts
        self.gateways = gateways
        self.namespaces = namespaces

    async def start(self) -> None:
        await self.runtime.start()
        await self.rollouts.start()
        await self.gateways.start()
        await self.namespaces.start()

    async def stop(self) -> None:
        await self.namespaces.stop()
        await self.gateways.stop()
        await self.rollouts.stop()
        await self.runtime.stop()


class Mesh:
    def __init__(self, config: MeshConfig) -> None:
        self.config = config
        self.store = open_store(config.store, config.state_dir)
        # On a shared store the runtime writes only while this replica leads.
        identity = f"{socket.gethostname()}/{config.address}/{os.getpid()}"
        elected = leader_election(self.store, RUNTIME_ELECTION, identity)
        writer = self.store if elected is None else elected[1]
        self.runtime = Runtime(writer, config.state_dir, config.address, max_pods=config.max_pods)
        # The Rollout controller writes too: same leadership, same fenced store.
        self.rollouts = RolloutController(writer, record=_rollout_events(writer))
        # Gateway API Gateways: their workloads and every status (same leadership).
        # Its Services get cluster IPs and node ports like any other: through the registry.
        self.gateway_api = GatewayApiController(
            ServiceRegistry(writer),
            lambda name, namespace, labels: gateway_deployment(
                config, name, namespace, labels, host_network=False
            ),
            config.address,
        )
        # Terminating Namespaces: their objects, then themselves (same leadership).
        self.writers = _Writers(
            self.runtime, self.rollouts, self.gateway_api, NamespaceController(writer)
        )
        self.gate = None if elected is None else LeaderGate(elected[0], self.writers)
        # On a shared store a replica that cannot reach it stops vouching for its copy.
        self.control = ControlPlane(self.store, probe_reach=self.shared)
        # Every Service written through the API (and the gateway's) gets its addresses here.
        self.registry = ServiceRegistry(self.store)
        self.started_at = time.time()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.remote_url: str | None = None
        self.xds: XdsServer | None = None
        self.peers: PeerAuthority | None = None

    async def start(self) -> None:
        self.registry.repair()
        system = [*default_gateway_objects(self.config), *node_proxy_objects(self.config)]
        in_use = namespaces.namespaces_in_use(self.store)
        namespaces.ensure_namespaces(self.store, [*namespaces.SYSTEM_NAMESPACES, *in_use])
        _create_missing(self.store, builtin_gateway_classes())
        self.registry.apply(system)
        # Replicas of one etcd store share one CA, so a peer may fail over to any of them.
        if self.shared:
            share_ca(self.store, self.config.state_dir)
        await self.control.start()
        # After share_ca: the peers' CA is the one every replica uses.
        self.peers = self._peer_authority()
        token = new_token()
        app = create_app(
            self.registry,
            token,
            admit=self._admit,
            snapshots=self.control,
            status=self.status,
            pod_log=self.runtime.pod_log_path,
            peers=self.peers,
            currency=self.control if self.shared else None,
        )
        # The console calls this API over HTTPS, trusting only the mesh's CA.
        ca = ensure_ca(self.config.state_dir)
        console = create_console(
            CONSOLE_PREFIX,
            lambda: self.url,
            token,
            traffic_source(self.config.state_dir),
            client_ssl_context(ca.cert_path),
        )
        mount(app, CONSOLE_PREFIX, console, authenticate=False)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await self._listen()
        # Before the pods: an Envoy gateway reads the ADS address when it starts.
        await self._start_xds()
        # Pods first: until the runtime has rewritten their status, a Ready condition in the
        # store may be left over from a mesh that crashed, and `up` must not trust it.
        if self.gate is None:
            await self.writers.start()
        else:
            self.gate.start()
        write_kubeconfig(self.config.state_dir, self.url, token, ca.cert_pem)
        write_credentials(self.config.state_dir, self.url, token, os.getpid(), ca.cert_path)
        log.info("tcpmesh API on %s, gateway address %s", self.url, self.config.address)

    @property
    def shared(self) -> bool:
        return self.config.store is not None and self.config.store != "sqlite"

    def _peer_authority(self) -> PeerAuthority | None:
        """Remote peers may join only where the API listens for other hosts."""
        if self.config.bind_address is None:
            return None
        ttl = datetime.timedelta(seconds=self.config.signing_seconds)
        return PeerAuthority(self.store, ensure_ca(self.config.state_dir), cert_ttl=ttl)

    async def _listen(self) -> None:
        """The API on loopback (this host's clients), and on ``--bind-address`` for others,
        both with one certificate naming every address and the mesh's CA."""
        assert self._runner is not None
        bind = self.config.bind_address
        advertised = self.config.advertise_address or bind
        hosts = serving_names(bind, advertised)
        tls = server_ssl_context(self.config.state_dir, hosts, verify_clients=bind is not None)
        await web.TCPSite(self._runner, API_HOST, 0, ssl_context=tls).start()
        self.url = f"https://{API_HOST}:{self._runner.addresses[0][1]}"
        if bind is not None and bind != API_HOST:
            site = web.TCPSite(self._runner, bind, self.config.secure_port, ssl_context=tls)
            await site.start()
            port = self._runner.addresses[-1][1]
            self.remote_url = f"https://{_url_host(advertised or bind)}:{port}"
        elif bind is not None:
            self.remote_url = self.url

    async def _start_xds(self) -> None:
        """ADS for Envoy gateways (on this machine or others), when the libraries are here."""
        if not xds_libraries_installed():
            log.info("xDS server not started: grpcio and xds-protos are not installed")
            return
        # Pods are forked from this process while gRPC's threads run; they exec at once,
        # so gRPC's fork handlers have nothing to protect (and would only log).
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
        from tcpmesh.xds import XdsServer

        # The port of the mesh before, if it is free: Envoys that outlived a crash have it
        # in their bootstrap, and reconnect to it by themselves (see runtime's adoption).
        previous = read_xds_address(self.config.state_dir)
        remote = self._remote_xds()
        self.xds = XdsServer(self.control, port=previous.port if previous else 0, remote=remote)
        try:
            port = await self.xds.start()
        except RuntimeError as exc:  # grpc could not bind it
            log.warning("xDS port of the previous mesh is taken (%s); using another", exc)
            port = 0
        if port == 0:
            self.xds = XdsServer(self.control, remote=remote)
            port = await self.xds.start()
        write_xds_address(self.config.state_dir, "127.0.0.1", port)

    def _remote_xds(self) -> RemoteListener | None:
        """ADS for other hosts' Envoys, beside the API on ``--bind-address``: mTLS with
        the mesh's CA; a peer's certificate names the one node it may follow."""
        bind, peers = self.config.bind_address, self.peers
        if bind is None or peers is None:
            return None
        from tcpmesh.xds import RemoteListener

        ca = ensure_ca(self.config.state_dir)
        advertised = self.config.advertise_address or bind
        issued = issue_certificate(ca, "tcpmesh-xds", serving_names(bind, advertised))

        def authorize(cert_pem: bytes, node_id: str) -> None:
            try:
                peers.authorize_xds(cert_pem, node_id)
            except PeerRefused as refused:
                raise PermissionError(refused.message) from None

        async def revoked(cert_pem: bytes, node_id: str) -> str:
            """Returns once the peer may no longer follow the node (token deleted)."""
            while True:
                await asyncio.sleep(REVOCATION_CHECK_SECONDS)
                try:
                    peers.authorize_xds(cert_pem, node_id)
                except PeerRefused as refused:
                    return refused.message

        return RemoteListener(
            bind,
            self.config.xds_port,
            issued.cert_pem + ca.cert_pem,
            issued.key_pem,
            ca.cert_pem,
            authorize,
            revoked,
            max_connection_age=self.config.signing_seconds / 3,
        )

    async def stop(self) -> None:
        remove_credentials(self.config.state_dir)
        if self.gate is not None:
            await self.gate.stop()
        await self.writers.stop()
        if self.xds is not None:
            remove_xds_address(self.config.state_dir)
            await self.xds.stop()
        await self.control.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        self.store.close()

    def _admit(self, objects: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
        """Validation, then the pod cap, which needs the Deployments already stored."""
        errors, warnings = _validate(objects)
        if not errors:
            stored = self.store.list("Deployment")
            errors = replica_cap_errors(objects, stored, self.config.max_pods)
        if self.config.dataplane == "envoy":
            warnings += _envoy_warnings(objects)
        return errors, warnings

    def gateway_pods(self) -> list[dict[str, Any]]:
        return self.store.list("Pod", GATEWAY_NAMESPACE, label_selector=INGRESS_GATEWAY_SELECTOR)

    def node_proxy_pods(self) -> list[dict[str, Any]]:
        return self.store.list("Pod", NODE_PROXY_NAMESPACE, label_selector=NODE_PROXY_LABELS)

    def status(self) -> dict[str, Any]:
        pods = self.store.list("Pod")
        gateway_pods = self.gateway_pods()
        listeners: list[dict[str, Any]] = []
        for pod in gateway_pods:
            node = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            snapshot = self.control.snapshot(node)
            if snapshot is None:
                continue
            listeners.extend(
                {"name": lst.name, "address": lst.address, "port": lst.port, "node": node}
                for lst in snapshot.listeners
            )
        return {
            "pid": os.getpid(),
            "api": self.url,
            "listen": self.remote_url,
            "stateDir": str(self.config.state_dir),
            "address": self.config.address,
            "dataplane": self.config.dataplane,
            "workers": self.config.effective_workers,
            "relay": self.config.relay,
            "engine": self.config.engine,
            "maxPods": self.config.max_pods,
            "uptimeSeconds": round(time.time() - self.started_at, 1),
            "store": _store_name(self.config.store),
            "storeRevision": self.store.revision,
            "pods": [_pod_summary(p) for p in pods],
            "gatewayReady": any(pod_is_ready(p) for p in gateway_pods),
            "gatewayReplicas": self.config.gateway_replicas,
            "nodeProxyReady": any(pod_is_ready(p) for p in self.node_proxy_pods()),
            "listeners": listeners,
            "xds": self.xds.status() if self.xds is not None else None,
            "leader": self.gate.status() if self.gate is not None else None,
        }


def _started(status: dict[str, Any]) -> bool:
    """Whether ``up`` is done: the local ingress gateway is ready, unless it has none, and
    the node proxy serves its table."""
    gateway = bool(status["gatewayReady"]) or status.get("gatewayReplicas") == 0
    return gateway and bool(status["nodeProxyReady"])


def serving_names(bind: str | None, advertised: str | None) -> list[str]:
    """What the API's serving certificate names: loopback, the address it is bound to
    unless that is every address (0.0.0.0 or ::, which no client dials), and the
    address it is advertised at (kube-apiserver's certificate names its
    --advertise-address the same way)."""
    names = [API_HOST, "localhost"]
    for address in (bind, advertised):
        if address and not ipaddress.ip_address(address).is_unspecified and address not in names:
            names.append(address)
    return names


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _store_name(spec: str | None) -> str:
    """The store for `status`: its kind and endpoints, never its credentials (the query)."""
    return "sqlite" if spec is None else spec.split("?", 1)[0]


def _create_missing(store: StoreBackend, objects: list[dict[str, Any]]) -> None:
    """Create the objects that do not exist; ones that do are the user's now, kept as
    they are (a built-in GatewayClass a user deleted comes back at the next ``up``)."""
    for obj in objects:
        if store.get(object_kind_key(obj), "", obj["metadata"]["name"]) is None:
            with contextlib.suppress(AlreadyExists):
                store.create(obj)


def _validate(objects: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    warnings: list[str] = []
    for obj in objects:
        obj_errors, obj_warnings = validate_object(obj)
        errors.extend(obj_errors)
        warnings.extend(obj_warnings)
    return errors, warnings


def _rollout_events(store: Any) -> Callable[[Mapping[str, Any], RolloutEvent], None]:
    """The Rollout controller's transitions as core/v1 Events (``kubectl get events``)."""
    recorder = EventRecorder(store, "rollouts-controller")

    def record(obj: Mapping[str, Any], event: RolloutEvent) -> None:
        recorder.record(obj, Happening(event.type, event.reason, event.message))

    return record


def _envoy_warnings(objects: list[dict[str, Any]]) -> list[str]:
    """What this mesh's Envoy data plane will not do of what the objects ask (once each)."""
    from tcpmesh.xds import ENVOY_NO_REBALANCE, ENVOY_NO_VERSION_AFFINITY

    warnings = []
    for obj in objects:
        if obj.get("kind") != "VirtualService":
            continue
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        name = obj["metadata"].get("name")
        value = annotations.get(VERSION_AFFINITY_ANNOTATION)
        if value:
            warnings.append(
                f'VirtualService "{name}": metadata.annotations[{VERSION_AFFINITY_ANNOTATION}]: '
                f"{value} {ENVOY_NO_VERSION_AFFINITY}; the routes split at random"
            )
        asked = rebalance_settings(annotations)
        if asked is not None:
            field = REBALANCE_REQUEST_ANNOTATION if asked.request else REBALANCE_ANNOTATION
            warnings.append(
                f'VirtualService "{name}": metadata.annotations[{field}]: rebalancing '
                f"{ENVOY_NO_REBALANCE}; open connections stay where they are"
            )
    return warnings


def _pod_summary(pod: dict[str, Any]) -> dict[str, Any]:
    status = pod.get("status") or {}
    return {
        "namespace": pod["metadata"]["namespace"],
        "name": pod["metadata"]["name"],
        "phase": status.get("phase", "Pending"),
        "ready": pod_is_ready(pod),
        "podIP": status.get("podIP"),
        "restarts": sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or []),
    }


async def run_mesh(
    config: MeshConfig,
    ready: asyncio.Event | None = None,
    on_ready: Callable[[Mesh], list[str]] | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then stop everything this process started.

    ``on_ready`` runs once the ingress gateway is ready (``up -f`` applies its files there);
    the lines it returns are printed.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with single_instance(config.state_dir):
        await _serve(Mesh(config), config, stop, ready, on_ready)


async def _serve(
    mesh: Mesh,
    config: MeshConfig,
    stop: asyncio.Event,
    ready: asyncio.Event | None,
    on_ready: Callable[[Mesh], list[str]] | None,
) -> None:
    loop = asyncio.get_running_loop()
    try:
        await mesh.start()
        deadline = loop.time() + GATEWAY_READY_TIMEOUT
        while not _started(mesh.status()) and loop.time() < deadline and not stop.is_set():
            await asyncio.sleep(0.05)
        if on_ready is not None:
            for line in on_ready(mesh):
                print(line, flush=True)
        print(f"tcpmesh is up: API {mesh.url}, gateway {config.address}", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await mesh.stop()
