"""The Snapshot: the whole routing table of one proxy, immutable and versioned.

It is the one contract between the control plane and every data plane. Its shape
mirrors Envoy's (listeners → tcp_proxy routes → weighted clusters → endpoints) so that
the xDS translation is mechanical and the built-in proxy consults the same objects per
connection. Every Istio semantic question is answered while building it; a data plane
only looks names up.

Durations are float seconds; ``None`` means "not set / disabled" as documented per field.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeVar

from tcpmesh.api import MAX_BANDWIDTH_MBPS

# What a data plane does inside a cluster. Istio's PASSTHROUGH is not among them: the
# builder maps it (see control.policy), so no data plane has to.
LbPolicy = Literal["LEAST_REQUEST", "ROUND_ROBIN", "RANDOM", "RING_HASH", "MAGLEV"]
# The ring and Maglev balancers hash the route's hash key; without one they draw at random.
HASH_POLICIES = ("RING_HASH", "MAGLEV")

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 3600.0


def cluster_name(port: int, subset: str, fqdn: str) -> str:
    """Istio's outbound cluster name, ``outbound|<port>|<subset>|<fqdn>``.

    Made from the fields a Cluster and a WeightedCluster carry; nothing takes it apart."""
    return f"outbound|{port}|{subset}|{fqdn}"


class SnapshotError(ValueError):
    """A Snapshot broke an invariant of :meth:`Snapshot.check`: a control-plane bug."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ResponseFlag(StrEnum):
    """Envoy's response flags, the ones a tcpmesh TCP connection can end with.

    Declared once for both data planes: Envoy sets them itself, the built-in proxy sets
    the same ones for the same outcomes, and access logs, metrics (``response_flags``)
    and tests compare against these members. A ``StrEnum``, so a member *is* its code
    (``ResponseFlag.NO_CLUSTER == "NC"``) on the wire and in log lines.
    """

    NO_ROUTE = "NR"  # no filter chain (route) matched the connection
    NO_CLUSTER = "NC"  # the picked destination names no cluster
    NO_HEALTHY_UPSTREAM = "UH"  # the cluster has no ready endpoint
    UPSTREAM_OVERFLOW = "UO"  # the cluster's max_connections circuit breaker is open
    UPSTREAM_CONNECT_FAILURE = "UF"  # connecting to the endpoint failed or timed out
    DURATION_TIMEOUT = "DT"  # max_connection_duration ended the connection


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    labels: tuple[tuple[str, str], ...] = ()
    ready: bool = True
    # "namespace/pod-name" of the workload behind the address, for stats and describe.
    workload: str = ""

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class TcpKeepalive:
    probes: int | None = None
    time: float | None = None
    interval: float | None = None


@dataclass(frozen=True)
class OutlierDetection:
    consecutive_errors: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    min_health_percent: int = 0


@dataclass(frozen=True)
class SlowStart:
    """Envoy's slow_start_config (Istio's loadBalancer.warmup / warmupDurationSecs)."""

    window: float
    aggression: float = 1.0
    min_weight_percent: float = 10.0


@dataclass(frozen=True)
class Cluster:
    """``outbound|<port>|<subset>|<fqdn>``; no endpoints → connections close with UH."""

    name: str
    service: str
    port: int
    subset: str = ""
    lb_policy: LbPolicy = "LEAST_REQUEST"
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    # None: unlimited (Istio's default thresholds are MaxUint32).
    max_connections: int | None = None
    outlier_detection: OutlierDetection | None = None
    tcp_keepalive: TcpKeepalive | None = None
    endpoints: tuple[Endpoint, ...] = ()
    # RING_HASH: the ring's minimum size; MAGLEV: the table size (None: Envoy's default).
    ring_hash_minimum_size: int | None = None
    maglev_table_size: int | None = None
    # LEAST_REQUEST and ROUND_ROBIN: new endpoints ramp up over this window.
    slow_start: SlowStart | None = None

    @property
    def ready_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.ready)


@dataclass(frozen=True)
class WeightedCluster:
    """A share of a route. ``cluster_name`` may name no cluster: such a share closes with NC.

    ``service``, ``subset`` and ``port`` say what the share was meant for (the parts the
    cluster name is made of), so that stats and views of an NC share need not take the
    name apart.
    """

    cluster_name: str
    weight: int
    service: str = ""
    subset: str = ""
    port: int = 0


class WeightedPick(StrEnum):
    """How a route's new connections are split between its weighted destinations.

    Decided by the control plane (the VirtualService's ``tcpmesh.io/weighted-pick``),
    never by a data plane's environment. Envoy's tcp_proxy can only draw at random: the
    xDS translation states that limitation once (``xds.translate.envoy_differences``).
    """

    # nginx's smooth weighted round robin: each worker splits every sum(weights)
    # consecutive connections exactly by weight.
    SMOOTH = "smooth"
    # Envoy's weighted cluster pick: every connection draws independently.
    RANDOM = "random"


class VersionAffinity(StrEnum):
    """Which client keeps its version across a route's weighted split (opt-in).

    ``SOURCE_IP``: the weighted pick is a consistent hash of the client address, so one
    address always gets one version while the weights stand, and a weight change moves
    only the addresses that must move (``dataplane.affinity``). It replaces the route's
    ``weighted_pick``; the DestinationRule's load balancer still picks the endpoint."""

    NONE = "none"
    SOURCE_IP = "source-ip"


@dataclass(frozen=True)
class Rebalance:
    """Move a route's open connections toward its weights (opt-in; ``api.rebalance``).

    The request is state, not a command: a data plane closes the fewest open
    connections that bring each destination's share of the route's open connections to
    its weight, once per new ``request`` (an id the user's request wrote, joined by the
    digest of the weights when the route asks for it after every weight change), spread
    over ``over`` seconds, never more than ``max_share`` of the route's open connections.
    """

    request: str
    over: float
    max_share: float


@dataclass(frozen=True)
class L4Match:
    """Match criteria decided per connection (everything else was decided at build time).

    An empty tuple matches every destination address. ``server_names`` are the SNI names
    (lowercase; exact, or ``*.suffix`` for any name under the suffix) of Envoy's
    ``filter_chain_match.server_names``: empty matches every connection, TLS or not.
    ``source_prefixes`` are Envoy's ``source_prefix_ranges`` (CIDRs of the client's
    address; empty matches every client): how a node proxy shared by many pods tells
    them apart, since every pod connects from its own address (``control.outbound``).
    A connection takes the route Envoy's filter-chain match would pick: the most
    specific destination subnet, then server name, then source prefix.
    """

    destination_subnets: tuple[str, ...] = ()
    server_names: tuple[str, ...] = ()
    source_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DownstreamTls:
    """TLS the gateway terminates before the route relays plaintext (Istio SIMPLE, MUTUAL,
    OPTIONAL_MUTUAL).

    Certificate material travels in the Snapshot, so a replaced Secret is a new Snapshot:
    new handshakes get the new certificate, sessions already open keep theirs.
    ``ca_certificates`` set means client certificates are checked against it: required
    (MUTUAL), or only when the client sends one (OPTIONAL_MUTUAL: ``client_optional``).
    Protocol versions use Envoy's names (``TLSv1_2``); empty means the data plane's default.
    """

    secret: str  # "namespace/name" of the kubernetes.io/tls Secret; Envoy's SDS name
    certificate_chain: str = field(repr=False)
    private_key: str = field(repr=False)
    ca_certificates: str = field(default="", repr=False)
    client_optional: bool = False
    min_protocol_version: str = ""
    max_protocol_version: str = ""
    cipher_suites: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouteOrigin:
    """The rule a route was built from: ``spec.tcp[rule]`` of ``kind`` ``namespace/name``.

    Structured, so that ``describe`` and ``analyze`` find a resource's routes by field
    rather than by reading the display text back.
    """

    kind: str
    namespace: str
    name: str
    rule: int
    # The list the rule is in: "tcp", or "tls" for a VirtualService's SNI rules.
    section: str = "tcp"

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} {self.section}[{self.rule}]"


@dataclass(frozen=True)
class TcpRoute:
    destinations: tuple[WeightedCluster, ...]
    origin: RouteOrigin
    stat_prefix: str
    match: L4Match = L4Match()
    # None disables the idle timeout (Istio/Envoy "0s").
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    max_connection_duration: float | None = None
    hash_policy: Literal["source_ip"] | None = None
    weighted_pick: WeightedPick = WeightedPick.SMOOTH
    # Set: the gateway terminates TLS and the route relays the plaintext.
    tls: DownstreamTls | None = None
    version_affinity: VersionAffinity = VersionAffinity.NONE
    rebalance: Rebalance | None = None
    # Envoy's tcp_proxy max_connect_attempts: a failed connect tries another endpoint of
    # the same cluster, each attempt with the cluster's connect timeout; UF after the last.
    max_connect_attempts: int = 1

    @property
    def source(self) -> str:
        """The origin as people read it: ``VirtualService default/tcp-echo tcp[0]``."""
        return str(self.origin)


@dataclass(frozen=True)
class BandwidthLimit:
    """A load balancer's bandwidth cap: ``mbps`` Mbit/s in each direction, aggregated.

    Every listener naming the same ``bucket`` (the Service, "namespace/name") draws from
    the same two token buckets, one per direction, whatever port or connection the bytes
    take: the cap is the Service's load balancer's, not a connection's.
    """

    bucket: str
    mbps: int


@dataclass(frozen=True)
class Listener:
    name: str
    address: str
    port: int
    routes: tuple[TcpRoute, ...]
    # "namespace/name" of the Gateway whose server opened this port.
    gateway: str = ""
    # Set only in a load balancer's Snapshot (control.loadbalancer): shape this port.
    bandwidth: BandwidthLimit | None = None

    @property
    def reads_client_hello(self) -> bool:
        """Whether a connection's route depends on its ClientHello (Envoy's tls_inspector)."""
        return any(r.match.server_names or r.tls is not None for r in self.routes)


@dataclass(frozen=True)
class Snapshot:
    version: str
    listeners: tuple[Listener, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    _by_name: dict[str, Cluster] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        by_name = _of_clusters(self.clusters, "by_name", lambda: {c.name: c for c in self.clusters})
        object.__setattr__(self, "_by_name", by_name)

    def cluster(self, name: str) -> Cluster | None:
        return self._by_name.get(name)

    def check(self) -> Snapshot:
        """Raise :class:`SnapshotError` unless every invariant of the contract holds.

        The role of go-control-plane's ``Consistent()``: ``build_snapshot`` calls it, so
        no data plane ever sees a table that two of them could read differently. What a
        user's resources can cause (two servers on one port) is resolved while building,
        by a stated rule; a failure here is a bug in the builder. Returns ``self``.

        What one listener or cluster can break on its own is worked out once per object
        (``_own_problems``): a part the builder reused from an earlier Snapshot is not
        checked again, only its relations to the others are.
        """
        clusters = self.clusters
        problems = [
            *_listener_problems(self.listeners),
            *_of_clusters(clusters, "problems", lambda: _all_cluster_problems(clusters)),
            *(p for lst in self.listeners for p in _own_problems(lst)),
            *(p for lst in self.listeners for p in _destination_problems(lst, self)),
        ]
        # A Snapshot ``build`` made carries the digest it computed of these very parts.
        digest = self.__dict__.get("_tcpmesh_content_digest")
        if digest is None:
            digest = _digest(self.listeners, self.clusters)
        if self.version != digest:
            problems.append(f"version {self.version!r} is not the digest of the content")
        if problems:
            raise SnapshotError(problems)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "listeners": [_plain(lst) for lst in self.listeners],
            "clusters": [_plain(c) for c in self.clusters],
        }

    def to_json(self) -> str:
        """The JSON of ``to_dict()`` (compact, keys sorted), made of each part's text,
        which a part reused from an earlier Snapshot already has.

        Every part is framed by a tab on each side (JSON whitespace, which the compact
        text never holds elsewhere: a tab inside a string is written ``\\t``), so that
        ``from_json`` can cut the text into its parts without parsing it and parse only
        the parts it has not seen (``PartReader``). Made once per Snapshot: the API
        server writes it on the stream of every worker of the proxy."""
        return derived(self, "_tcpmesh_json", self._text)

    def _text(self) -> str:
        clusters = _of_clusters(self.clusters, "json", lambda: _framed(self.clusters))
        listeners = _framed(self.listeners)
        version = json.dumps(self.version)
        return f'{{"clusters":[{clusters}],"listeners":[{listeners}],"version":{version}}}'

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            version=data["version"],
            listeners=tuple(_listener_from_dict(d) for d in data["listeners"]),
            clusters=tuple(_cluster_from_dict(d) for d in data["clusters"]),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Snapshot:
        """The Snapshot of a JSON text; ``to_json``'s parts seen in the last text read
        are not parsed again (``PartReader``). Any other JSON of a Snapshot reads too."""
        raw = text.encode() if isinstance(text, str) else text
        framed = _READER.read(raw)
        if framed is not None:
            version, listeners, clusters = framed
            return cls(version, listeners, clusters)
        return cls.from_dict(json.loads(raw))

    @classmethod
    def build(cls, listeners: tuple[Listener, ...], clusters: tuple[Cluster, ...]) -> Snapshot:
        """A snapshot whose version is a digest of its content: equal tables, equal versions."""
        version = _digest(listeners, clusters)
        snapshot = cls(version, listeners, clusters)
        snapshot.__dict__["_tcpmesh_content_digest"] = version
        return snapshot


T = TypeVar("T")
P = TypeVar("P", "Listener", "Cluster")


def derived(part: object, name: str, compute: Callable[[], T]) -> T:
    """A value worked out from a Snapshot part (Listener, TcpRoute, Cluster, ...), kept on
    the part itself under ``name``.

    Parts are frozen, so what was derived from one stays true of it; and a rebuild that
    reused the part (``control.buildcache``) hands it on with the part: its JSON, its
    digest, its checks here, and a data plane's translation of it (``xds``), are worked
    out once per part, not once per Snapshot. Kept outside the fields, so equality,
    hashing, ``replace`` and the JSON ignore it."""
    cache = part.__dict__
    if name in cache:
        found: T = cache[name]
        return found
    value = cache[name] = compute()
    return value


def part_json(part: Listener | Cluster) -> str:
    """The part's compact, key-sorted JSON, worked out once per object."""
    return derived(
        part,
        "_tcpmesh_json",
        lambda: json.dumps(_plain(part), sort_keys=True, separators=(",", ":")),
    )


def _framed(parts: tuple[Listener, ...] | tuple[Cluster, ...]) -> str:
    return ",".join(f"\t{part_json(part)}\t" for part in parts)


class PartReader:
    """Reads ``to_json``'s framed text, parsing only the parts it did not see last time.

    A proxy is sent its whole Snapshot on every change, and one change alters a part or
    two: at a thousand VirtualServices the text is 2.6 MB, and parsing all of it took a
    worker 60-200 ms per apply, more than everything the control plane did for it. Split
    at the tabs, the text is its parts (odd pieces) between pieces of the frame; the
    frame, with a 0 in each part's place, is a small JSON document that says how many
    parts are clusters and which is the version. A part's text is its content, so the
    same text is the same (frozen) part: kept from the last text read, by text."""

    def __init__(self) -> None:
        self._last: dict[bytes, Listener | Cluster] = {}

    def read(self, text: bytes) -> tuple[str, tuple[Listener, ...], tuple[Cluster, ...]] | None:
        """(version, listeners, clusters), or None when ``text`` is not framed so."""
        if not text.startswith(b'{"clusters":[') or b"\t" not in text:
            return None  # not to_json's text (or a Snapshot without parts)
        pieces = text.split(b"\t")
        try:
            frame = json.loads(b"0".join(pieces[0::2]))
        except ValueError:
            return None
        parts = pieces[1::2]
        if not _is_frame(frame, len(parts)):
            return None
        seen, self._last = self._last, {}
        count = len(frame["clusters"])
        clusters = tuple(self._part(seen, t, Cluster, _cluster_from_dict) for t in parts[:count])
        listeners = tuple(self._part(seen, t, Listener, _listener_from_dict) for t in parts[count:])
        return frame["version"], listeners, clusters

    def _part(
        self,
        seen: dict[bytes, Listener | Cluster],
        text: bytes,
        kind: type[P],
        parse: Callable[[dict[str, Any]], P],
    ) -> P:
        part = seen.get(text)
        if not isinstance(part, kind):  # unseen, or seen as the other kind of part
            part = parse(json.loads(text))
        self._last[text] = part
        return part


def _is_frame(frame: Any, parts: int) -> bool:
    """Whether ``frame`` is a Snapshot's skeleton with a 0 for each of ``parts`` parts."""
    return (
        isinstance(frame, dict)
        and frame.keys() == {"clusters", "listeners", "version"}
        and isinstance(frame["version"], str)
        and isinstance(frame["clusters"], list)
        and isinstance(frame["listeners"], list)
        and len(frame["clusters"]) + len(frame["listeners"]) == parts
        and all(x == 0 for x in (*frame["clusters"], *frame["listeners"]))
    )


def _part_digest(part: Listener | Cluster) -> str:
    return derived(
        part, "_tcpmesh_digest", lambda: hashlib.sha256(part_json(part).encode()).hexdigest()
    )


def _digest(listeners: tuple[Listener, ...], clusters: tuple[Cluster, ...]) -> str:
    """The digest of the parts' digests, in order: equal content, equal digest (a part's
    JSON is a function of its fields), and a rebuild that reuses most parts hashes only
    the new ones."""
    of_clusters = _of_clusters(
        clusters, "digests", lambda: "\n".join(_part_digest(c) for c in clusters)
    )
    body = "\n".join(("L", *(_part_digest(lst) for lst in listeners), "C", of_clusters))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


# The last few clusters tuples and what was worked out from each (by identity): a rebuild
# that changed no cluster hands the Snapshot the very tuple of the last one (the build
# cache's "clusters" step), and a proxy's Snapshot has thousands of clusters.
_CLUSTER_TUPLES_KEPT = 8
_by_clusters: dict[int, tuple[tuple[Cluster, ...], dict[str, Any]]] = {}


def _of_clusters(clusters: tuple[Cluster, ...], name: str, compute: Callable[[], T]) -> T:
    """``compute()``, worked out once per clusters tuple (and kept while it is recent)."""
    entry = _by_clusters.get(id(clusters))
    if entry is None or entry[0] is not clusters:
        if len(_by_clusters) >= _CLUSTER_TUPLES_KEPT:
            del _by_clusters[next(iter(_by_clusters))]
        entry = _by_clusters[id(clusters)] = (clusters, {})
    found = entry[1]
    if name not in found:
        found[name] = compute()
    value: T = found[name]
    return value


def _all_cluster_problems(clusters: tuple[Cluster, ...]) -> list[str]:
    return [*_cluster_problems(clusters), *(p for c in clusters for p in _own_problems(c))]


def _own_problems(part: Listener | Cluster) -> list[str]:
    """What the part breaks on its own, worked out once per object."""
    if isinstance(part, Listener):
        return derived(
            part, "_tcpmesh_problems", lambda: _one_listener_problems(part) + _route_problems(part)
        )
    return derived(part, "_tcpmesh_problems", lambda: _one_cluster_problems(part))


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _plain(value: Any) -> Any:
    """``dataclasses.asdict`` for the Snapshot's frozen types, without its deep copies.

    The same JSON (tuples become lists, enums stay their str/int values), several times
    faster: the version digest serialises every Snapshot built, twice with ``check()``,
    and asdict's copying was most of a build at a thousand listeners."""
    cls = type(value)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        # Learnt once per type; () for the types that are not dataclasses.
        is_dc = dataclasses.is_dataclass(cls)
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls)) if is_dc else ()
    if names:
        return {name: _plain(getattr(value, name)) for name in names}
    if cls is tuple or cls is list:
        return [_plain(v) for v in value]
    if cls is dict:
        return {k: _plain(v) for k, v in value.items()}
    return value


class SnapshotSource(Protocol):
    """Where every consumer inside the mesh process gets a node's Snapshots: typed.

    The control plane implements it; the xDS server and the API server consume it.
    JSON exists only where a Snapshot leaves the process (the API server's snapshot
    endpoint, which the built-in proxy's workers read)."""

    def current(self, node_id: str) -> Snapshot | None:
        """The node's Snapshot now; None when the node is unknown."""
        ...

    def watch(self, node_id: str) -> AsyncIterator[Snapshot]:
        """Every distinct Snapshot of the node, the current one first."""
        ...


_SERVER_NAME = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@functools.lru_cache(maxsize=1 << 16)
def _server_name_ok(name: str) -> bool:
    return _SERVER_NAME.fullmatch(name) is not None


def _port_ok(port: int) -> bool:
    return 1 <= port <= 65535


@functools.lru_cache(maxsize=1 << 16)
def _ip_ok(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1 << 16)
def _cidr_ok(cidr: str) -> bool:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    return True


def _listener_problems(listeners: tuple[Listener, ...]) -> list[str]:
    """Names and address:port pairs are unique."""
    problems: list[str] = []
    names: set[str] = set()
    bound: dict[tuple[str, int], str] = {}
    for lst in listeners:
        if lst.name in names:
            problems.append(f"listener name {lst.name} is used twice")
        names.add(lst.name)
        key = (lst.address, lst.port)
        if key in bound:
            problems.append(
                f"listeners {bound[key]} and {lst.name} both bind {lst.address}:{lst.port}"
            )
        bound.setdefault(key, lst.name)
    return problems + _bandwidth_problems(listeners)


def _one_listener_problems(lst: Listener) -> list[str]:
    """The listener binds an IP:port and has a route."""
    problems: list[str] = []
    if not _ip_ok(lst.address) or not _port_ok(lst.port):
        problems.append(f"listener {lst.name} binds {lst.address}:{lst.port}, not an IP:port")
    if not lst.routes:
        problems.append(f"listener {lst.name} has no route")
    return problems


def _bandwidth_problems(listeners: tuple[Listener, ...]) -> list[str]:
    """Caps are 1..MAX_BANDWIDTH_MBPS, and listeners sharing a bucket agree on it."""
    problems: list[str] = []
    rates: dict[str, int] = {}
    for lst in listeners:
        limit = lst.bandwidth
        if limit is None:
            continue
        if not limit.bucket or not 1 <= limit.mbps <= MAX_BANDWIDTH_MBPS:
            problems.append(f"listener {lst.name} has bandwidth {limit}, not 1..5000 Mbit/s")
        if rates.setdefault(limit.bucket, limit.mbps) != limit.mbps:
            problems.append(f"listener {lst.name} disagrees on bucket {limit.bucket}'s rate")
    return problems


def _cluster_problems(clusters: tuple[Cluster, ...]) -> list[str]:
    """Names are unique."""
    problems: list[str] = []
    names: set[str] = set()
    for c in clusters:
        if c.name in names:
            problems.append(f"cluster {c.name} is defined twice")
        names.add(c.name)
    return problems


def _one_cluster_problems(c: Cluster) -> list[str]:
    """The name is made of the fields; endpoints are IP:port; timeouts positive."""
    problems: list[str] = []
    if c.name != cluster_name(c.port, c.subset, c.service):
        problems.append(f"cluster {c.name} does not match its service, subset and port")
    if not _port_ok(c.port):
        problems.append(f"cluster {c.name} has port {c.port} outside 1..65535")
    if c.connect_timeout <= 0:
        problems.append(f"cluster {c.name} has connect timeout {c.connect_timeout} <= 0")
    if c.max_connections is not None and c.max_connections < 1:
        problems.append(f"cluster {c.name} allows {c.max_connections} connections")
    problems += [
        f"cluster {c.name} has endpoint {e.address}:{e.port}, not an IP:port"
        for e in c.endpoints
        if not _ip_ok(e.address) or not _port_ok(e.port)
    ]
    return problems


def _rebalance_problems(where: str, rebalance: Rebalance | None) -> list[str]:
    if rebalance is None:
        return []
    problems = [] if rebalance.request else [f"{where} has a rebalance without a request id"]
    if rebalance.over < 0:
        problems.append(f"{where} rebalances over a negative duration {rebalance.over}")
    if not 0 < rebalance.max_share <= 1:
        problems.append(f"{where} rebalances a share {rebalance.max_share} outside (0, 1]")
    return problems


def _where(lst: Listener, index: int, route: TcpRoute) -> str:
    return f"listener {lst.name} route {index} ({route.origin})"


def _route_problems(lst: Listener) -> list[str]:
    """Routes have distinct matches, valid names and subnets, and positive weights."""
    problems: list[str] = []
    matchers: dict[tuple[frozenset[str], frozenset[str], frozenset[str]], int] = {}
    for index, route in enumerate(lst.routes):
        where = _where(lst, index, route)
        # Envoy rejects a listener whose filter chains share a matcher; so must we.
        matcher = (
            frozenset(route.match.destination_subnets),
            frozenset(route.match.server_names),
            frozenset(route.match.source_prefixes),
        )
        if matcher in matchers:
            problems.append(f"{where} has the same match as route {matchers[matcher]}")
        matchers.setdefault(matcher, index)
        problems += _one_route_problems(where, route)
    return problems


def _one_route_problems(where: str, route: TcpRoute) -> list[str]:
    problems: list[str] = []
    if route.max_connect_attempts < 1:
        problems.append(f"{where} makes {route.max_connect_attempts} connect attempts")
    problems += [
        f"{where} has server name {name!r}, not a lowercase (wildcard) DNS name"
        for name in route.match.server_names
        if not _server_name_ok(name)
    ]
    problems += [
        f"{where} has subnet {cidr!r}, not a CIDR"
        for cidr in (*route.match.destination_subnets, *route.match.source_prefixes)
        if not _cidr_ok(cidr)
    ]
    if route.tls is not None and not (route.tls.certificate_chain and route.tls.private_key):
        problems.append(f"{where} terminates TLS without a certificate and key")
    if not route.destinations:
        problems.append(f"{where} has no destination")
    if not route.stat_prefix:
        problems.append(f"{where} has no stat prefix")
    for limit in (route.idle_timeout, route.max_connection_duration):
        if limit is not None and limit < 0:
            problems.append(f"{where} has a negative timeout {limit}")
    problems += _rebalance_problems(where, route.rebalance)
    problems += [
        f"{where}: {d.cluster_name} has weight {d.weight} <= 0"
        for d in route.destinations
        if d.weight <= 0
    ]
    return problems


def _destination_problems(lst: Listener, snapshot: Snapshot) -> list[str]:
    """Destinations agree with the cluster they name, if any (worked out once per listener
    and clusters tuple: a reused listener among reused clusters is not looked at again).

    A destination naming no cluster is deliberate (its share closes with NC); it still
    says which service, subset and port it was meant for."""
    last = lst.__dict__.get("_tcpmesh_destinations")
    if last is not None and last[0] is snapshot.clusters:
        found: list[str] = last[1]
        return found
    found = _destination_problems_in(lst, snapshot._by_name)
    lst.__dict__["_tcpmesh_destinations"] = (snapshot.clusters, found)
    return found


def _destination_problems_in(lst: Listener, clusters: dict[str, Cluster]) -> list[str]:
    problems: list[str] = []
    for index, route in enumerate(lst.routes):
        for d in route.destinations:
            cluster = clusters.get(d.cluster_name)
            if cluster is not None and (d.service, d.subset, d.port) != (
                cluster.service,
                cluster.subset,
                cluster.port,
            ):
                problems.append(
                    f"{_where(lst, index, route)}: {d.cluster_name} disagrees with its cluster"
                )
    return problems


def _listener_from_dict(d: dict[str, Any]) -> Listener:
    routes = tuple(
        TcpRoute(
            destinations=tuple(WeightedCluster(**w) for w in r["destinations"]),
            origin=RouteOrigin(**r["origin"]),
            stat_prefix=r["stat_prefix"],
            match=L4Match(
                destination_subnets=tuple(r["match"]["destination_subnets"]),
                server_names=tuple(r["match"].get("server_names", ())),
                source_prefixes=tuple(r["match"].get("source_prefixes", ())),
            ),
            idle_timeout=r["idle_timeout"],
            max_connection_duration=r["max_connection_duration"],
            hash_policy=r["hash_policy"],
            weighted_pick=WeightedPick(r["weighted_pick"]),
            tls=_tls_from_dict(r.get("tls")),
            version_affinity=VersionAffinity(r.get("version_affinity", VersionAffinity.NONE)),
            rebalance=Rebalance(**r["rebalance"]) if r.get("rebalance") else None,
            max_connect_attempts=r.get("max_connect_attempts", 1),
        )
        for r in d["routes"]
    )
    bandwidth = d.get("bandwidth")
    return Listener(
        name=d["name"],
        address=d["address"],
        port=d["port"],
        routes=routes,
        gateway=d["gateway"],
        bandwidth=BandwidthLimit(**bandwidth) if bandwidth is not None else None,
    )


def _tls_from_dict(d: dict[str, Any] | None) -> DownstreamTls | None:
    if d is None:
        return None
    return DownstreamTls(**{**d, "cipher_suites": tuple(d["cipher_suites"])})


def _cluster_from_dict(d: dict[str, Any]) -> Cluster:
    od = d["outlier_detection"]
    ka = d["tcp_keepalive"]
    slow = d.get("slow_start")
    return Cluster(
        name=d["name"],
        service=d["service"],
        port=d["port"],
        subset=d["subset"],
        lb_policy=d["lb_policy"],
        connect_timeout=d["connect_timeout"],
        max_connections=d["max_connections"],
        outlier_detection=OutlierDetection(**od) if od is not None else None,
        tcp_keepalive=TcpKeepalive(**ka) if ka is not None else None,
        ring_hash_minimum_size=d.get("ring_hash_minimum_size"),
        maglev_table_size=d.get("maglev_table_size"),
        slow_start=SlowStart(**slow) if slow is not None else None,
        endpoints=tuple(
            Endpoint(
                address=e["address"],
                port=e["port"],
                labels=tuple((k, v) for k, v in e["labels"]),
                ready=e["ready"],
                workload=e["workload"],
            )
            for e in d["endpoints"]
        ),
    )


# A data plane reads one proxy's Snapshots, each mostly the last one's parts.
_READER = PartReader()
