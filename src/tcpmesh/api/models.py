"""Typed models of the resources tcpmesh understands.

Field names follow the Kubernetes and Istio JSON/YAML spelling (camelCase) through
aliases; Python code uses snake_case. Unknown fields are rejected (``extra="forbid"``)
so that a typo such as ``wieght`` is an error naming its path instead of a silently
ignored setting. Fields that tcpmesh carries but does not act on (HTTP routes, TLS,
resource requests...) are typed loosely as ``Any`` so real-world manifests still load.

Semantic checks with Istio's messages live in :mod:`tcpmesh.api.validation`, not here:
these models only check shape and types.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        strict=False,
    )


# ---------------------------------------------------------------- metadata


class OwnerReference(Model):
    api_version: str
    kind: str
    name: str
    uid: str = ""
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(Model):
    name: str = ""
    generate_name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    owner_references: list[OwnerReference] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)
    # Written by real API servers; accepted so that `kubectl get -o yaml` output applies.
    deletion_grace_period_seconds: int | None = None
    self_link: str | None = None
    managed_fields: Any = None


class LabelSelectorRequirement(Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(Model):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)


# ---------------------------------------------------------------- core/v1 + apps/v1


class ContainerPort(Model):
    container_port: int
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    host_port: int | None = None
    host_ip: str | None = Field(default=None, alias="hostIP")


class EnvVar(Model):
    name: str
    value: str | None = None
    value_from: Any = None


class VolumeMount(Model):
    name: str = ""
    mount_path: str = ""
    read_only: bool | None = None
    sub_path: str | None = None
    sub_path_expr: str | None = None
    mount_propagation: str | None = None
    recursive_read_only: str | None = None


class KeyToPath(Model):
    key: str = ""
    path: str = ""
    mode: int | None = None


class SecretVolumeSource(Model):
    secret_name: str = ""
    items: list[KeyToPath] = Field(default_factory=list)
    default_mode: int | None = None
    optional: bool | None = None


class ConfigMapVolumeSource(Model):
    name: str = ""
    items: list[KeyToPath] = Field(default_factory=list)
    default_mode: int | None = None
    optional: bool | None = None


class Volume(Model):
    """A pod volume: ``secret``, ``configMap``, ``emptyDir`` and ``hostPath`` are run by the
    kubelet (:mod:`tcpmesh.runtime.volumes`); the other sources of core/v1 are accepted as
    Kubernetes accepts them and reported by validation as not provided here."""

    name: str = ""
    # In the order validateVolumeSource takes them: the first set is the source, each
    # later one is "may not specify more than 1 volume type".
    empty_dir: Any = None
    host_path: Any = None
    git_repo: Any = None
    gce_persistent_disk: Any = None
    aws_elastic_block_store: Any = None
    secret: SecretVolumeSource | None = None
    nfs: Any = None
    iscsi: Any = None
    glusterfs: Any = None
    flocker: Any = None
    persistent_volume_claim: Any = None
    rbd: Any = None
    cinder: Any = None
    cephfs: Any = None
    quobyte: Any = None
    downward_api: Any = Field(default=None, alias="downwardAPI")
    fc: Any = None
    flex_volume: Any = None
    config_map: ConfigMapVolumeSource | None = None
    azure_file: Any = None
    vsphere_volume: Any = None
    photon_persistent_disk: Any = None
    portworx_volume: Any = None
    azure_disk: Any = None
    storageos: Any = None
    projected: Any = None
    scale_io: Any = Field(default=None, alias="scaleIO")
    csi: Any = None
    ephemeral: Any = None
    image: Any = None


class Container(Model):
    name: str
    image: str = ""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    ports: list[ContainerPort] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    env_from: Any = None
    resources: Any = None
    readiness_probe: Any = None
    liveness_probe: Any = None
    startup_probe: Any = None
    lifecycle: Any = None
    security_context: Any = None
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    stdin: bool | None = None
    tty: bool | None = None
    termination_message_path: str | None = None
    termination_message_policy: str | None = None


class PodSpec(Model):
    containers: list[Container]
    init_containers: list[Container] = Field(default_factory=list)
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    host_network: bool = False
    enable_service_links: bool | None = None
    termination_grace_period_seconds: int | None = None
    service_account_name: str | None = None
    service_account: str | None = None
    node_selector: dict[str, str] | None = None
    node_name: str | None = None
    affinity: Any = None
    tolerations: Any = None
    volumes: list[Volume] = Field(default_factory=list)
    security_context: Any = None
    image_pull_secrets: Any = None
    dns_policy: str | None = None
    hostname: str | None = None
    priority_class_name: str | None = None
    scheduler_name: str | None = None
    topology_spread_constraints: Any = None


class PodTemplateSpec(Model):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec


class DeploymentSpec(Model):
    replicas: int = 1
    selector: LabelSelector
    template: PodTemplateSpec
    strategy: Any = None
    min_ready_seconds: int | None = None
    revision_history_limit: int | None = None
    progress_deadline_seconds: int | None = None
    paused: bool | None = None


class ServicePort(Model):
    port: int
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    target_port: int | str | None = None
    node_port: int | None = None
    app_protocol: str | None = None


class ServiceSpec(Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    selector: dict[str, str] | None = None
    ports: list[ServicePort] = Field(default_factory=list)
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    cluster_ips: list[str] | None = Field(default=None, alias="clusterIPs")
    external_ips: list[str] | None = Field(default=None, alias="externalIPs")
    external_name: str | None = None
    external_traffic_policy: Literal["Cluster", "Local"] | None = None
    internal_traffic_policy: Literal["Cluster", "Local"] | None = None
    load_balancer_ip: str | None = Field(default=None, alias="loadBalancerIP")
    load_balancer_source_ranges: list[str] | None = None
    session_affinity: Literal["None", "ClientIP"] | None = None
    ip_families: list[str] | None = None
    ip_family_policy: str | None = None
    publish_not_ready_addresses: bool | None = None
    allocate_load_balancer_node_ports: bool | None = None


class ObjectReference(Model):
    kind: str = "Pod"
    name: str
    namespace: str | None = None
    uid: str | None = None
    api_version: str | None = None
    resource_version: str | None = None
    field_path: str | None = None


class EndpointAddress(Model):
    ip: str
    target_ref: ObjectReference | None = None
    hostname: str | None = None
    node_name: str | None = None


class EndpointPort(Model):
    port: int
    name: str | None = None
    protocol: str = "TCP"
    app_protocol: str | None = None


class EndpointSubset(Model):
    addresses: list[EndpointAddress] = Field(default_factory=list)
    not_ready_addresses: list[EndpointAddress] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)


# ---------------------------------------------------------------- networking.istio.io


class PortSelector(Model):
    number: int = 0


class Destination(Model):
    host: str = ""
    subset: str | None = None
    port: PortSelector | None = None


class RouteDestination(Model):
    destination: Destination | None = None
    weight: int = 0


class L4MatchAttributes(Model):
    destination_subnets: list[str] = Field(default_factory=list)
    port: int = 0
    source_subnet: str | None = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    source_namespace: str | None = None


class TCPRoute(Model):
    match: list[L4MatchAttributes | None] = Field(default_factory=list)
    route: list[RouteDestination | None] = Field(default_factory=list)


class TLSMatchAttributes(Model):
    sni_hosts: list[str] = Field(default_factory=list)
    destination_subnets: list[str] = Field(default_factory=list)
    port: int = 0
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    source_namespace: str | None = None


class TLSRoute(Model):
    """Istio's ``tls:`` rule: routed by the ClientHello's SNI, the bytes relayed untouched."""

    match: list[TLSMatchAttributes | None] = Field(default_factory=list)
    route: list[RouteDestination | None] = Field(default_factory=list)


class VirtualServiceSpec(Model):
    hosts: list[str] = Field(default_factory=list)
    gateways: list[str] = Field(default_factory=list)
    http: list[Any] = Field(default_factory=list)
    tls: list[TLSRoute | None] = Field(default_factory=list)
    tcp: list[TCPRoute] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)


class GatewayPort(Model):
    number: int = 0
    protocol: str = ""
    name: str = ""
    target_port: int | None = None


TLSMode = Literal[
    "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
]
TLSProtocol = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]


class TLSCertificate(Model):
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""


class ServerTLSSettings(Model):
    """A Gateway server's ``tls`` (istio/api ``ServerTLSSettings``); PASSTHROUGH by default."""

    https_redirect: bool = False
    mode: TLSMode = "PASSTHROUGH"
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    ca_crl: str = ""
    credential_name: str = ""
    credential_names: list[str] = Field(default_factory=list)
    tls_certificates: list[TLSCertificate] = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)
    verify_certificate_spki: list[str] = Field(default_factory=list)
    verify_certificate_hash: list[str] = Field(default_factory=list)
    min_protocol_version: TLSProtocol = "TLS_AUTO"
    max_protocol_version: TLSProtocol = "TLS_AUTO"
    cipher_suites: list[str] = Field(default_factory=list)


class Server(Model):
    port: GatewayPort | None = None
    bind: str | None = None
    hosts: list[str] = Field(default_factory=list)
    tls: ServerTLSSettings | None = None
    default_endpoint: str | None = None
    name: str | None = None


class GatewaySpec(Model):
    selector: dict[str, str] = Field(default_factory=dict)
    servers: list[Server | None] = Field(default_factory=list)


class RingHash(Model):
    minimum_ring_size: int | None = None


class MagLev(Model):
    table_size: int | None = None


class HTTPCookieAttribute(Model):
    name: str = ""
    value: str | None = None


class HTTPCookie(Model):
    name: str = ""
    path: str | None = None
    ttl: str | None = None
    attributes: list[HTTPCookieAttribute] = Field(default_factory=list)


class ConsistentHashLB(Model):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    # Deprecated in Istio in favour of ringHash.minimumRingSize; still honoured there.
    minimum_ring_size: int | None = None


class WarmupConfiguration(Model):
    duration: str | None = None
    minimum_percent: float | None = None
    aggression: float | None = None


class BackendUtilization(Model):
    """ORCA-weighted balancing (HTTP/gRPC load reports); accepted, meaningless for raw TCP."""

    error_utilization_penalty_percent: int | None = None
    metric_names_for_computing_utilization: list[str] = Field(default_factory=list)
    weight_expiration_period: str | None = None
    weight_stabilization_period: str | None = None
    weight_update_period: str | None = None


class LoadBalancerSettings(Model):
    simple: (
        Literal[
            "UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"
        ]
        | None
    ) = None
    consistent_hash: ConsistentHashLB | None = None
    backend_utilization: BackendUtilization | None = None
    locality_lb_setting: Any = None
    zone_aware_lb_setting: Any = None
    warmup_duration_secs: str | None = None
    warmup: WarmupConfiguration | None = None


class ClientTLSSettings(Model):
    """Upstream TLS of a DestinationRule; tcpmesh's data planes originate no TLS yet."""

    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] = "DISABLE"
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    credential_name: str = ""
    subject_alt_names: list[str] | None = None
    sni: str = ""
    insecure_skip_verify: bool | None = None
    ca_crl: str = ""


class TcpKeepalive(Model):
    probes: int | None = None
    time: str | None = None
    interval: str | None = None


class TCPSettings(Model):
    max_connections: int | None = None
    connect_timeout: str | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: str | None = None
    idle_timeout: str | None = None


class ConnectionPoolSettings(Model):
    tcp: TCPSettings | None = None
    http: Any = None


class OutlierDetection(Model):
    split_external_local_origin_errors: bool | None = None
    consecutive_local_origin_failures: int | None = None
    consecutive_gateway_errors: int | None = None
    consecutive_5xx_errors: int | None = Field(default=None, alias="consecutive5xxErrors")
    consecutive_errors: int | None = None
    interval: str | None = None
    base_ejection_time: str | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None
    outlier_detection_http_error_codes: list[int] = Field(default_factory=list)


class PortTrafficPolicy(Model):
    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TrafficPolicy(Model):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list)
    tunnel: Any = None
    proxy_protocol: Any = None
    retry_budget: Any = None


class Subset(Model):
    name: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class WorkloadSelector(Model):
    match_labels: dict[str, str] = Field(default_factory=dict)


class DestinationRuleSpec(Model):
    host: str = ""
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset | None] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)
    workload_selector: WorkloadSelector | None = None


class ServiceEntryPort(Model):
    """Istio's ``ServicePort``: a port of a ServiceEntry (not a Kubernetes ServicePort)."""

    number: int = 0
    protocol: str = ""
    name: str = ""
    target_port: int = 0


class WorkloadEntrySpec(Model):
    """A workload outside Kubernetes; also the shape of a ServiceEntry's ``endpoints``."""

    address: str = ""
    ports: dict[str, int] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    network: str = ""
    locality: str = ""
    weight: int = 0
    service_account: str = ""


class WorkloadGroupMeta(Model):
    """The labels and annotations every WorkloadEntry of a group gets."""

    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class TcpHealthCheck(Model):
    host: str = ""
    port: int = 0


class HttpHeader(Model):
    name: str = ""
    value: str = ""


class HttpHealthCheck(Model):
    path: str = ""
    port: int = 0
    host: str = ""
    scheme: str = ""
    http_headers: list[HttpHeader | None] = Field(default_factory=list)


class ExecHealthCheck(Model):
    command: list[str] = Field(default_factory=list)


class ReadinessProbe(Model):
    """Istio's ReadinessProbe: one method (httpGet, tcpSocket, exec) and its timing."""

    initial_delay_seconds: int = 0
    timeout_seconds: int = 0
    period_seconds: int = 0
    success_threshold: int = 0
    failure_threshold: int = 0
    http_get: HttpHealthCheck | None = None
    tcp_socket: TcpHealthCheck | None = None
    exec: ExecHealthCheck | None = None


class WorkloadGroupSpec(Model):
    metadata: WorkloadGroupMeta | None = None
    template: WorkloadEntrySpec | None = None
    probe: ReadinessProbe | None = None


class EntryWorkloadSelector(Model):
    """Istio's networking WorkloadSelector: plain ``labels``, unlike the DR's ``matchLabels``."""

    labels: dict[str, str] = Field(default_factory=dict)


class ServiceEntrySpec(Model):
    hosts: list[str] = Field(default_factory=list)
    addresses: list[str] = Field(default_factory=list)
    ports: list[ServiceEntryPort | None] = Field(default_factory=list)
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"] = "NONE"
    endpoints: list[WorkloadEntrySpec | None] = Field(default_factory=list)
    workload_selector: EntryWorkloadSelector | None = None
    export_to: list[str] = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------- top-level objects


class Resource(Model):
    """Fields common to every top-level object."""

    api_version: str
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    status: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"


class EventSource(Model):
    component: str | None = None
    host: str | None = None


class Event(Resource):
    """A core/v1 Event: something that happened to an object (``kubectl get events``)."""

    involved_object: ObjectReference
    reason: str | None = None
    message: str | None = None
    source: EventSource | None = None
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    count: int | None = None
    type: str | None = None
    event_time: str | None = None
    series: Any = None
    action: str | None = None
    related: ObjectReference | None = None
    reporting_component: str | None = None
    reporting_instance: str | None = None


class Deployment(Resource):
    spec: DeploymentSpec


class Pod(Resource):
    spec: PodSpec


class Service(Resource):
    spec: ServiceSpec = Field(default_factory=ServiceSpec)


class Endpoints(Resource):
    subsets: list[EndpointSubset] = Field(default_factory=list)


class NamespaceSpec(Model):
    finalizers: list[str] = Field(default_factory=list)


class Namespace(Resource):
    """core/v1 Namespace, cluster-scoped. The API server writes its name label and its
    phase (``Active``, ``Terminating`` while its objects are being deleted)."""

    spec: NamespaceSpec | None = None


class Secret(Resource):
    """core/v1 Secret. ``stringData`` is write-only, as in Kubernetes: merged into ``data``."""

    type: str = "Opaque"
    data: dict[str, str] = Field(default_factory=dict)
    string_data: dict[str, str] = Field(default_factory=dict)
    immutable: bool | None = None

    @model_validator(mode="after")
    def _as_stored(self) -> Secret:
        # The API server stores stringData base64-encoded in data (its keys win) and never
        # returns stringData; an empty type is stored as Opaque.
        if self.string_data:
            encoded = {
                k: base64.b64encode(v.encode()).decode() for k, v in self.string_data.items()
            }
            self.data = {**self.data, **encoded}
        self.__pydantic_fields_set__.discard("string_data")
        self.string_data = {}
        self.__pydantic_fields_set__.discard("string_data")
        if not self.type or "type" not in self.model_fields_set:
            self.type = "Opaque"
        return self


class ConfigMap(Resource):
    """core/v1 ConfigMap: text in ``data``, base64 in ``binaryData``."""

    data: dict[str, str] = Field(default_factory=dict)
    binary_data: dict[str, str] = Field(default_factory=dict)
    immutable: bool | None = None


class Gateway(Resource):
    spec: GatewaySpec = Field(default_factory=GatewaySpec)


class VirtualService(Resource):
    spec: VirtualServiceSpec = Field(default_factory=VirtualServiceSpec)


class DestinationRule(Resource):
    spec: DestinationRuleSpec = Field(default_factory=DestinationRuleSpec)


class ServiceEntry(Resource):
    # Required, as in Istio's CRD schema: an entry without a spec describes nothing.
    spec: ServiceEntrySpec


class WorkloadEntry(Resource):
    spec: WorkloadEntrySpec


class WorkloadGroup(Resource):
    spec: WorkloadGroupSpec = Field(default_factory=WorkloadGroupSpec)
