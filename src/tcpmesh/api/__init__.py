"""The resource API: parsing, defaulting and validation of Kubernetes and Istio objects.

Objects travel as plain dicts in Kubernetes JSON shape; :func:`from_dict` gives the typed
model (:mod:`tcpmesh.api.models`) when code wants attributes instead of keys.
"""

from tcpmesh.api.durations import parse_duration
from tcpmesh.api.errors import InvalidInput
from tcpmesh.api.labels import selector_matches, stored_selector_matches
from tcpmesh.api.limits import (
    MAX_DOCUMENT_BYTES,
    MAX_INPUT_BYTES,
    LimitExceeded,
    load_json_body,
    size_problem,
)
from tcpmesh.api.names import hosts_overlap, is_ip
from tcpmesh.api.objects import (
    describe,
    from_dict,
    pod_ready,
    to_dict,
    update_errors,
    validate_object,
)
from tcpmesh.api.parse import load_documents, load_documents_with_warnings, load_yaml_body
from tcpmesh.api.rebalance import (
    REBALANCE_ANNOTATION,
    REBALANCE_MAX_SHARE_ANNOTATION,
    REBALANCE_OVER_ANNOTATION,
    REBALANCE_REQUEST_ANNOTATION,
    RebalanceSettings,
    new_request_id,
    parse_over,
    parse_share,
    rebalance_settings,
    with_request,
)
from tcpmesh.api.rollouts import Rollout
from tcpmesh.api.tls import (
    CA_CERT_KEY,
    TLS_CERT_KEY,
    TLS_PRIVATE_KEY_KEY,
    is_valid_cipher_suite,
    secret_bytes,
)
from tcpmesh.api.validation import (
    BANDWIDTH_ANNOTATIONS,
    MAX_BANDWIDTH_MBPS,
    MAX_CONNECT_ATTEMPTS_ANNOTATION,
    VERSION_AFFINITIES,
    VERSION_AFFINITY_ANNOTATION,
    WEIGHTED_PICK_ANNOTATION,
    WEIGHTED_PICKS,
    load_balancer_bandwidth,
)

__all__ = [
    "BANDWIDTH_ANNOTATIONS",
    "CA_CERT_KEY",
    "MAX_BANDWIDTH_MBPS",
    "MAX_CONNECT_ATTEMPTS_ANNOTATION",
    "MAX_DOCUMENT_BYTES",
    "MAX_INPUT_BYTES",
    "REBALANCE_ANNOTATION",
    "REBALANCE_MAX_SHARE_ANNOTATION",
    "REBALANCE_OVER_ANNOTATION",
    "REBALANCE_REQUEST_ANNOTATION",
    "TLS_CERT_KEY",
    "TLS_PRIVATE_KEY_KEY",
    "VERSION_AFFINITIES",
    "VERSION_AFFINITY_ANNOTATION",
    "WEIGHTED_PICKS",
    "WEIGHTED_PICK_ANNOTATION",
    "InvalidInput",
    "LimitExceeded",
    "RebalanceSettings",
    "Rollout",
    "describe",
    "from_dict",
    "hosts_overlap",
    "is_ip",
    "is_valid_cipher_suite",
    "load_balancer_bandwidth",
    "load_documents",
    "load_documents_with_warnings",
    "load_json_body",
    "load_yaml_body",
    "new_request_id",
    "parse_duration",
    "parse_over",
    "parse_share",
    "pod_ready",
    "rebalance_settings",
    "secret_bytes",
    "selector_matches",
    "size_problem",
    "stored_selector_matches",
    "to_dict",
    "update_errors",
    "validate_object",
    "with_request",
]
