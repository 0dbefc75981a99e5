"""Controllers that write resources back through the store, like any other client.

The Rollout controller (progressive delivery with TCP gates) is the first: its step
machine (``steps``) and gates (``gates``) are pure and tested without sockets; the
controller (``rollouts``) and the metrics reader (``scrape``) are the I/O around them.
"""

from tcpmesh.controllers.gates import (
    CONNECT_FAILURE_FLAGS,
    GateResult,
    Report,
    Sample,
    Tally,
    VersionSelector,
    evaluate,
    parse_samples,
    quantile,
    tally,
)
from tcpmesh.controllers.gatewayapi import GatewayApiController
from tcpmesh.controllers.namespaces import NamespaceController
from tcpmesh.controllers.rollouts import RolloutController
from tcpmesh.controllers.scrape import MetricsSource, pod_metrics, query_number, scrape_targets
from tcpmesh.controllers.steps import (
    Event,
    Measurement,
    Outcome,
    Phase,
    State,
    Tick,
    Verdict,
    advance,
    effective_analysis,
    measuring,
)
from tcpmesh.controllers.traffic import RouteProblem, current_weight, version_selector, weighted

__all__ = [
    "CONNECT_FAILURE_FLAGS",
    "Event",
    "GateResult",
    "GatewayApiController",
    "Measurement",
    "MetricsSource",
    "NamespaceController",
    "Outcome",
    "Phase",
    "Report",
    "RolloutController",
    "RouteProblem",
    "Sample",
    "State",
    "Tally",
    "Tick",
    "Verdict",
    "VersionSelector",
    "advance",
    "current_weight",
    "effective_analysis",
    "evaluate",
    "measuring",
    "parse_samples",
    "pod_metrics",
    "quantile",
    "query_number",
    "scrape_targets",
    "tally",
    "version_selector",
    "weighted",
]
