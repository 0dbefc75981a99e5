"""Kubernetes label selectors: the one home of their matching rule.

Deployments (validation at apply, and the runtime's replica controller) use the full
``LabelSelector`` (matchLabels plus matchExpressions, ANDed); Istio's equality-only
selectors are ``control.labels_match``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from tcpmesh.api import models


def selector_matches(selector: models.LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes' ``LabelSelectorAsSelector(...).Matches``: every requirement holds."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        if requirement.operator == "In" and value not in requirement.values:
            return False
        if requirement.operator == "NotIn" and present and value in requirement.values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
    return True


def stored_selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """The same rule for a selector as stored (JSON); an empty one matches everything.

    Stored objects were validated at apply, so a selector that no longer parses (written
    by an older version) matches nothing rather than everything."""
    if not selector:
        return True
    try:
        parsed = models.LabelSelector.model_validate(selector)
    except ValidationError:
        return False
    return selector_matches(parsed, labels)
