"""kubectl-style output for ``tcpmesh get``: tables, YAML and JSON.

Tables follow kubectl's printers column for column (and Istio's CRD printer columns
for the networking kinds), laid out as kubectl's tabwriter does: plain text, three
spaces between columns, nothing after the last one, so that scripts can split on
whitespace exactly as they do with kubectl.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from tcpmesh.api import pod_ready
from tcpmesh.api.kinds import KindInfo
from tcpmesh.cli.jsonpath import go_json

__all__ = [
    "age",
    "format_columns",
    "human_duration",
    "no_resources_message",
    "print_table",
    "table_cells",
    "table_columns",
    "table_has_name",
    "to_json",
    "to_yaml",
]

# kubectl's tabwriter: minimum cell width 6 including 3 spaces of padding.
_MIN_WIDTH = 6
_PADDING = 3
# kubectl truncates a load balancer's address list to this width unless -o wide.
_LOAD_BALANCER_WIDTH = 16
_NONE = "<none>"


# ---------------------------------------------------------------- layout


def format_columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Align ``headers`` and ``rows`` like kubectl (no trailing newline)."""
    lines = [list(headers), *(list(r) for r in rows)]
    columns = max(len(line) for line in lines)
    widths = [0] * columns
    for line in lines:
        for i, cell in enumerate(line[:-1]):
            widths[i] = max(widths[i], len(cell) + _PADDING, _MIN_WIDTH)
    out = []
    for line in lines:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        cells.append(line[-1] if line else "")
        out.append("".join(cells))
    return "\n".join(out)


def no_resources_message(namespace: str | None) -> str:
    """What kubectl prints on stderr for an empty list (``None``: all namespaces)."""
    if namespace is None:
        return "No resources found"
    return f"No resources found in {namespace} namespace."


# ---------------------------------------------------------------- age


def human_duration(seconds: float) -> str:
    """kubectl's ``duration.HumanDuration``: two significant units at most."""
    whole = int(seconds)  # truncates toward zero, as Go's int(d.Seconds()) does
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 60 * 2:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        s = whole % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if dy == 0 else f"{years}y{dy}d"
    return f"{hours // 24 // 365}y"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(timestamp: Any, now: datetime) -> str:
    """The AGE cell for an RFC 3339 timestamp; ``<unknown>`` when there is none."""
    then = _parse_time(timestamp)
    if then is None:
        return "<unknown>"
    return human_duration((now - then).total_seconds())


# ---------------------------------------------------------------- helpers


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _format_labels(labels: Any) -> str:
    if not isinstance(labels, Mapping) or not labels:
        return _NONE
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def _format_label_selector(selector: Any) -> str:
    """metav1.FormatLabelSelector: requirements sorted by key."""
    if not isinstance(selector, Mapping):
        return _NONE
    requirements: list[tuple[str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        requirements.append((key, f"{key}={value}"))
    for expr in _list(selector.get("matchExpressions")):
        key = str(expr.get("key", ""))
        values = ",".join(sorted(str(v) for v in _list(expr.get("values"))))
        operator = expr.get("operator")
        if operator == "In":
            requirements.append((key, f"{key} in ({values})"))
        elif operator == "NotIn":
            requirements.append((key, f"{key} notin ({values})"))
        elif operator == "Exists":
            requirements.append((key, key))
        elif operator == "DoesNotExist":
            requirements.append((key, f"!{key}"))
    if not requirements:
        return _NONE
    return ",".join(text for _, text in sorted(requirements, key=lambda r: r[0]))


def _join_host_port(host: str, port: Any) -> str:
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def _json_cell(value: Any) -> str:
    """A CRD printer column (type string): scalars as text, arrays and maps as JSON."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return go_json(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------- per kind

_Row = list[str]
_Columns = Callable[[Mapping[str, Any], bool, datetime], _Row]


def _deployment(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    spec = _get(obj, "spec") or {}
    status = _get(obj, "status") or {}
    replicas = spec.get("replicas", 1)
    row = [
        f"{status.get('readyReplicas', 0) or 0}/{replicas if replicas is not None else 1}",
        str(status.get("updatedReplicas", 0) or 0),
        str(status.get("availableReplicas", 0) or 0),
        age(_get(obj, "metadata", "creationTimestamp"), now),
    ]
    if wide:
        containers = _list(_get(spec, "template", "spec", "containers"))
        row += [
            ",".join(str(c.get("name", "")) for c in containers),
            ",".join(str(c.get("image", "")) for c in containers),
            _format_label_selector(spec.get("selector")),
        ]
    return row


def _pod_status(obj: Mapping[str, Any], now: datetime) -> tuple[str, str, str]:
    """READY, STATUS and RESTARTS as kubectl's printPod derives them."""
    status = _get(obj, "status") or {}
    total = len(_list(_get(obj, "spec", "containers")))
    reason = str(status.get("reason") or status.get("phase") or "Unknown")
    ready = restarts = 0
    has_running = False
    last_restart: datetime | None = None
    for cs in reversed(_list(status.get("containerStatuses"))):
        restarts += int(cs.get("restartCount", 0) or 0)
        finished = _parse_time(_get(cs, "lastState", "terminated", "finishedAt"))
        if finished is not None and (last_restart is None or finished > last_restart):
            last_restart = finished
        state = cs.get("state") or {}
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if waiting and waiting.get("reason"):
            reason = str(waiting["reason"])
        elif terminated and terminated.get("reason"):
            reason = str(terminated["reason"])
        elif terminated is not None:
            signal = terminated.get("signal", 0)
            reason = f"Signal:{signal}" if signal else f"ExitCode:{terminated.get('exitCode', 0)}"
        elif cs.get("ready") and state.get("running") is not None:
            has_running = True
            ready += 1
    if reason == "Completed" and has_running:
        reason = "Running" if pod_ready(status) else "NotReady"
    if _get(obj, "metadata", "deletionTimestamp"):
        reason = "Terminating"
    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    return f"{ready}/{total}", reason, restarts_text


def _pod(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    ready, reason, restarts = _pod_status(obj, now)
    row = [ready, reason, restarts, age(_get(obj, "metadata", "creationTimestamp"), now)]
    if wide:
        # Every pod runs on this machine; kubectl's NOMINATED NODE and READINESS GATES
        # columns are kept so that scripts counting columns see kubectl's layout.
        row += [
            str(_get(obj, "status", "podIP") or _NONE),
            str(_get(obj, "spec", "nodeName") or "local"),
            _NONE,
            _NONE,
        ]
    return row


def _load_balancer_addresses(obj: Mapping[str, Any], wide: bool) -> str:
    found = set()
    for ingress in _list(_get(obj, "status", "loadBalancer", "ingress")):
        if ingress.get("ip"):
            found.add(str(ingress["ip"]))
        elif ingress.get("hostname"):
            found.add(str(ingress["hostname"]))
    text = ",".join(sorted(found))
    if not wide and len(text) > _LOAD_BALANCER_WIDTH:
        text = text[: _LOAD_BALANCER_WIDTH - 3] + "..."
    return text


def _service_external_ip(obj: Mapping[str, Any], wide: bool) -> str:
    spec = _get(obj, "spec") or {}
    kind = spec.get("type") or "ClusterIP"
    external = [str(ip) for ip in _list(spec.get("externalIPs"))]
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else _NONE
    if kind == "LoadBalancer":
        lb = _load_balancer_addresses(obj, wide)
        if external:
            return ",".join([*(lb.split(",") if lb else []), *external])
        return lb or "<pending>"
    if kind == "ExternalName":
        return str(spec.get("externalName") or "")
    return "<unknown>"


def _service_ports(obj: Mapping[str, Any]) -> str:
    parts = []
    for port in _list(_get(obj, "spec", "ports")):
        protocol = port.get("protocol") or "TCP"
        if port.get("nodePort"):
            parts.append(f"{port.get('port')}:{port['nodePort']}/{protocol}")
        else:
            parts.append(f"{port.get('port')}/{protocol}")
    return ",".join(parts) if parts else _NONE


def _service(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    spec = _get(obj, "spec") or {}
    row = [
        str(spec.get("type") or "ClusterIP"),
        str(spec.get("clusterIP") or _NONE),
        _service_external_ip(obj, wide),
        _service_ports(obj),
        age(_get(obj, "metadata", "creationTimestamp"), now),
    ]
    if wide:
        row.append(_format_labels(spec.get("selector")))
    return row


def _endpoints_cell(obj: Mapping[str, Any]) -> str:
    """kubectl's formatEndpoints: the first three ip:port pairs, then a count."""
    shown: list[str] = []
    limit = 3
    count = 0
    more = False
    for subset in _list(obj.get("subsets")):
        addresses = [str(a.get("ip", "")) for a in _list(subset.get("addresses"))]
        ports = _list(subset.get("ports"))
        targets: list[list[str]] = (
            [[_join_host_port(ip, p.get("port")) for ip in addresses] for p in ports]
            if ports
            else [addresses]
        )
        for group in targets:
            count += len(group)
            for target in group:
                if len(shown) == limit:
                    more = True
                    break
                shown.append(target)
    text = ",".join(shown)
    if more:
        return f"{text} + {count - limit} more..."
    return text or _NONE


def _endpoints(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    return [_endpoints_cell(obj), age(_get(obj, "metadata", "creationTimestamp"), now)]


def _virtual_service(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    return [
        _json_cell(_get(obj, "spec", "gateways")),
        _json_cell(_get(obj, "spec", "hosts")),
        age(_get(obj, "metadata", "creationTimestamp"), now),
    ]


def _destination_rule(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    return [
        _json_cell(_get(obj, "spec", "host")),
        age(_get(obj, "metadata", "creationTimestamp"), now),
    ]


def _service_entry(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    return [
        _json_cell(_get(obj, "spec", "hosts")),
        _json_cell(_get(obj, "spec", "location")),
        _json_cell(_get(obj, "spec", "resolution")),
        age(_get(obj, "metadata", "creationTimestamp"), now),
    ]


def _workload_entry(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    return [
        age(_get(obj, "metadata", "creationTimestamp"), now),
        _json_cell(_get(obj, "spec", "address")),
    ]


def _secret(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    """kubectl's columns: the type and how many keys, never the data itself."""
    data = obj.get("data")
    return [
        str(obj.get("type") or "Opaque"),
        str(len(data) if isinstance(data, Mapping) else 0),
        age(_get(obj, "metadata", "creationTimestamp"), now),
    ]


def _config_map(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    """kubectl's columns: how many keys in ``data`` and ``binaryData`` together."""
    keys = [
        len(bag) for bag in (obj.get("data"), obj.get("binaryData")) if isinstance(bag, Mapping)
    ]
    return [str(sum(keys)), age(_get(obj, "metadata", "creationTimestamp"), now)]


def _event(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    involved = _get(obj, "involvedObject") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or obj.get("firstTimestamp")
    row = [
        age(last, now),
        str(obj.get("type") or ""),
        str(obj.get("reason") or ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        str(obj.get("message") or "").strip(),
    ]
    if wide:
        source = _get(obj, "source") or {}
        parts = [str(source[k]) for k in ("component", "host") if source.get(k)]
        row += [
            str(involved.get("fieldPath") or ""),
            ", ".join(parts),
            age(obj.get("firstTimestamp") or last, now),
            str(obj.get("count") or 1),
            str(_get(obj, "metadata", "name") or ""),
        ]
    return row


def _rollout(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    """Argo's ``kubectl argo rollouts list`` columns, for a canary over one route."""
    status = obj.get("status") or {}
    steps = _get(obj, "spec", "steps") or []
    step = status.get("currentStepIndex")
    row = [
        str(status.get("phase") or "<none>"),
        f"{step}/{len(steps)}" if step is not None else "<none>",
        f"{status.get('stableWeight', 100)}/{status.get('canaryWeight', 0)}",
        age(_get(obj, "metadata", "creationTimestamp"), now),
    ]
    if wide:
        for ref in ("stable", "canary"):
            host, subset = _get(obj, "spec", ref, "host"), _get(obj, "spec", ref, "subset")
            row.append(f"{host}/{subset}")
        row.append(str(status.get("message") or ""))
    return row


def _age_only(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    return [age(_get(obj, "metadata", "creationTimestamp"), now)]


def _kube_gateway(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    """The Gateway API CRD's printer columns: Class, Address, Programmed, Age."""
    status = obj.get("status") or {}
    addresses = [str(a.get("value", "")) for a in status.get("addresses") or []]
    programmed = [
        str(c.get("status", ""))
        for c in status.get("conditions") or []
        if c.get("type") == "Programmed"
    ]
    return [
        str(_get(obj, "spec", "gatewayClassName") or ""),
        ",".join(addresses),
        ",".join(programmed),
        age(_get(obj, "metadata", "creationTimestamp"), now),
    ]


def _condition_status(obj: Mapping[str, Any], kind: str) -> str:
    """``.status.conditions[?(@.type==kind)].status``, as a CRD printer column reads it."""
    conditions = _get(obj, "status", "conditions") or []
    return ",".join(str(c.get("status", "")) for c in conditions if c.get("type") == kind)


def _gateway_class(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    """The GatewayClass CRD's printer columns: Controller, Accepted, Age (Description wide)."""
    row = [
        str(_get(obj, "spec", "controllerName") or ""),
        _condition_status(obj, "Accepted"),
        age(_get(obj, "metadata", "creationTimestamp"), now),
    ]
    if wide:
        row.append(str(_get(obj, "spec", "description") or ""))
    return row


def _namespace(obj: Mapping[str, Any], wide: bool, now: datetime) -> _Row:
    return [
        str(_get(obj, "status", "phase") or ""),
        age(_get(obj, "metadata", "creationTimestamp"), now),
    ]


_TABLES: dict[str, tuple[list[str], list[str], _Columns]] = {
    # kind: (headers after NAME, extra wide headers, row builder)
    "Deployment": (
        ["READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
        _deployment,
    ),
    "Pod": (
        ["READY", "STATUS", "RESTARTS", "AGE"],
        ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
        _pod,
    ),
    "Service": (
        ["TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        ["SELECTOR"],
        _service,
    ),
    "Endpoints": (["ENDPOINTS", "AGE"], [], _endpoints),
    "Secret": (["TYPE", "DATA", "AGE"], [], _secret),
    "ConfigMap": (["DATA", "AGE"], [], _config_map),
    "Namespace": (["STATUS", "AGE"], [], _namespace),
    "Gateway": (["AGE"], [], _age_only),
    "VirtualService": (["GATEWAYS", "HOSTS", "AGE"], [], _virtual_service),
    "DestinationRule": (["HOST", "AGE"], [], _destination_rule),
    "ServiceEntry": (["HOSTS", "LOCATION", "RESOLUTION", "AGE"], [], _service_entry),
    "WorkloadEntry": (["AGE", "ADDRESS"], [], _workload_entry),
    "Event": (
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        ["SUBOBJECT", "SOURCE", "FIRST SEEN", "COUNT", "NAME"],
        _event,
    ),
    "Rollout": (["PHASE", "STEP", "WEIGHTS", "AGE"], ["STABLE", "CANARY", "MESSAGE"], _rollout),
    # Gateway API kinds by kind key; TCPRoute, TLSRoute and ReferenceGrant print AGE only.
    "GatewayClass.gateway.networking.k8s.io": (
        ["CONTROLLER", "ACCEPTED", "AGE"],
        ["DESCRIPTION"],
        _gateway_class,
    ),
    "Gateway.gateway.networking.k8s.io": (
        ["CLASS", "ADDRESS", "PROGRAMMED", "AGE"],
        [],
        _kube_gateway,
    ),
}
# kubectl's event table has no leading NAME column (the name is a wide column).
_NAMELESS = frozenset({"Event"})


def table_has_name(kind: str) -> bool:
    """Whether kubectl's table for ``kind`` starts with a NAME column."""
    return kind not in _NAMELESS


def table_columns(kind: str) -> tuple[list[str], list[str]]:
    """kubectl's column headers for ``kind`` after NAME: (always shown, shown with -o wide)."""
    columns, wide_columns, _ = _TABLES.get(kind, (["AGE"], [], _age_only))
    return list(columns), list(wide_columns)


def table_cells(kind: str, obj: Mapping[str, Any], *, wide: bool, now: datetime) -> list[str]:
    """The cells after NAME of ``obj``'s row, as :func:`table_columns` orders them."""
    _, _, build = _TABLES.get(kind, (["AGE"], [], _age_only))
    return build(obj, wide, now)


def print_table(
    kind_info: KindInfo,
    objects: Sequence[Mapping[str, Any]],
    *,
    wide: bool = False,
    all_namespaces: bool = False,
    now: datetime | None = None,
) -> str:
    """The table ``kubectl get`` prints for ``objects`` of one kind, newline-terminated.

    ``now`` (timezone-aware) is the clock the AGE column is computed against.
    """
    now = now or datetime.now(UTC)
    columns, wide_columns, build = _TABLES.get(kind_info.key, (["AGE"], [], _age_only))
    named = table_has_name(kind_info.key)
    headers = [*(["NAME"] if named else []), *columns, *(wide_columns if wide else [])]
    if all_namespaces and kind_info.namespaced:
        headers.insert(0, "NAMESPACE")
    rows = []
    for obj in objects:
        name = [str(_get(obj, "metadata", "name") or "")] if named else []
        row = [*name, *build(obj, wide, now)]
        if all_namespaces and kind_info.namespaced:
            row.insert(0, str(_get(obj, "metadata", "namespace") or ""))
        rows.append(row)
    return format_columns(headers, rows) + "\n"


# ---------------------------------------------------------------- yaml / json


class _Dumper(yaml.SafeDumper):
    """Block style, sorted keys and no line folding, like kubectl's YAML printer."""


_STR_TAG = "tag:yaml.org,2002:str"
_OTHER_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "timestamp")
)


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        # Multi-line strings read best (and diff best) as literal blocks.
        return dumper.represent_scalar(_STR_TAG, value, style="|")
    # PyYAML's resolver is untyped; it answers which tag a plain scalar would read as.
    resolver: Any = dumper
    if resolver.resolve(yaml.ScalarNode, value, (True, False)) in _OTHER_SCALAR_TAGS:
        # Like kubectl's encoder: a string that would read back as another type
        # ("", "true", "9000", a timestamp) is double-quoted.
        return dumper.represent_scalar(_STR_TAG, value, style='"')
    return dumper.represent_scalar(_STR_TAG, value)


_Dumper.add_representer(str, _str_representer)


def to_yaml(obj: Any) -> str:
    """``kubectl get -o yaml`` for one object or a ``List``; newline-terminated."""
    text: str = yaml.dump(
        obj,
        Dumper=_Dumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 30,
    )
    return text


def to_json(obj: Any) -> str:
    """``kubectl get -o json``: four-space indent, sorted keys (no trailing newline)."""
    return go_json(obj, indent=4)
