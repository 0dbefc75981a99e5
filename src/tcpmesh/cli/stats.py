"""Is an observed split of connections consistent with the split a route promises?

``tcpmesh send --expect v1=80,v2=20`` counts replies by their first word and asks
whether the counts could come from 80/20 weighted picks. Weighted routing is a random
draw per connection, so the answer is a goodness-of-fit test, not an equality:

- two outcomes with a nonzero share: exact two-sided binomial test;
- more: Pearson's chi-square test (an exact multinomial test costs too much as the
  count grows), reported as such;
- an outcome whose expected share is zero (a reply word the expectation does not
  name, a failed connection when ``failed=`` is not listed, a group at ``=0``) cannot
  happen under the expectation: seeing it once makes the split inconsistent, p = 0.
  This is also what makes ``v1=100`` demand that every reply be ``one``.

The verdict is "consistent" unless p < alpha; alpha defaults to 1e-6 so that a test
run flags real routing errors, not the one-in-a-thousand bad luck of a fair draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import stats as _scipy_stats

__all__ = [
    "DEFAULT_ALPHA",
    "FAILED",
    "Expectation",
    "ExpectationError",
    "Fit",
    "fit",
    "group_for_key",
    "parse_expectation",
]

DEFAULT_ALPHA = 1e-6
# The expectation key (and category) for connections that got no reply.
FAILED = "failed"

# tcp-echo's prefixes in the Istio samples are the version numbers spelled out.
_NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]


class ExpectationError(ValueError):
    """An ``--expect`` value that does not parse; the message says why."""


@dataclass(frozen=True)
class Expectation:
    """Expected shares: group (a reply's first word, or ``failed``) → weight."""

    weights: Mapping[str, float]
    # The key each group was written as (``v1`` for ``one``), for messages.
    labels: Mapping[str, str]
    text: str

    @property
    def total(self) -> float:
        return sum(self.weights.values())

    def percent(self, group: str) -> float:
        return 100.0 * self.weights.get(group, 0.0) / self.total

    def label(self, group: str) -> str:
        return self.labels.get(group, group)


def group_for_key(key: str) -> str:
    """``v1`` → ``one``, ``v2`` → ``two`` …; anything else names a reply word as is."""
    if len(key) > 1 and key[0] in "vV" and key[1:].isdigit():
        n = int(key[1:])
        if 0 < n < len(_NUMBER_WORDS):
            return _NUMBER_WORDS[n]
    return key


def parse_expectation(text: str) -> Expectation:
    """Parse ``v1=80,v2=20`` (relative weights, like a route's; they need not sum to 100)."""
    weights: dict[str, float] = {}
    labels: dict[str, str] = {}
    entries = [e.strip() for e in text.split(",")]
    if not text.strip():
        raise ExpectationError("--expect is empty; write it like v1=80,v2=20")
    for entry in entries:
        key, sep, value = entry.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ExpectationError(
                f"--expect entry {entry!r} is not NAME=WEIGHT (write it like v1=80,v2=20)"
            )
        try:
            weight = float(value)
        except ValueError:
            raise ExpectationError(
                f"--expect entry {entry!r}: weight {value!r} is not a number"
            ) from None
        if not math.isfinite(weight) or weight < 0:
            raise ExpectationError(f"--expect entry {entry!r}: weight must be a finite number >= 0")
        group = FAILED if key.lower() == FAILED else group_for_key(key)
        if group in weights:
            raise ExpectationError(
                f"--expect names {labels[group]!r} and {key!r}, which are the same group "
                f"({group!r})"
            )
        weights[group] = weight
        labels[group] = key
    if sum(weights.values()) <= 0:
        raise ExpectationError("--expect weights add up to 0; at least one must be positive")
    return Expectation(weights=weights, labels=labels, text=text)


@dataclass(frozen=True)
class Fit:
    """The verdict of one goodness-of-fit test."""

    p_value: float
    alpha: float
    test: str  # "binomial" | "chi-square" | "exact"
    note: str

    @property
    def consistent(self) -> bool:
        return self.p_value >= self.alpha


def fit(
    groups: Mapping[str, int],
    failures: int,
    expectation: Expectation,
    alpha: float = DEFAULT_ALPHA,
) -> Fit:
    """Test observed reply counts per group (plus failed connections) against shares."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], not {alpha}")
    observed: dict[str, int] = {group: 0 for group in expectation.weights}
    unexpected: dict[str, int] = {}
    outcomes = dict(groups)
    if failures:
        outcomes[FAILED] = outcomes.get(FAILED, 0) + failures
    for group, count in outcomes.items():
        if count <= 0:
            continue
        if expectation.weights.get(group, 0.0) > 0:
            observed[group] += count
        else:
            unexpected[group] = unexpected.get(group, 0) + count

    if unexpected:
        listed = ", ".join(
            f"{count} {'failed connection(s)' if g == FAILED else repr(g)}"
            for g, count in sorted(unexpected.items())
        )
        return Fit(0.0, alpha, "exact", f"outcomes the expectation rules out: {listed}")

    positive = [g for g, w in expectation.weights.items() if w > 0]
    n = sum(observed[g] for g in positive)
    if n == 0:
        return Fit(0.0, alpha, "exact", "no outcomes to test")
    if len(positive) == 1:
        return Fit(1.0, alpha, "exact", f"every outcome was {expectation.label(positive[0])!r}")
    if len(positive) == 2:
        first, second = positive
        share = expectation.weights[first] / (
            expectation.weights[first] + expectation.weights[second]
        )
        result = _scipy_stats.binomtest(observed[first], n, share, alternative="two-sided")
        return Fit(float(result.pvalue), alpha, "binomial", "exact two-sided binomial test")
    total_weight = sum(expectation.weights[g] for g in positive)
    expected_counts = [n * expectation.weights[g] / total_weight for g in positive]
    statistic = _scipy_stats.chisquare([observed[g] for g in positive], expected_counts)
    note = (
        f"Pearson chi-square test over {len(positive)} groups "
        "(an exact multinomial test costs too much)"
    )
    if min(expected_counts) < 5:
        note += "; some expected counts are below 5, so the p-value is only a rough guide"
    return Fit(float(statistic.pvalue), alpha, "chi-square", note)
