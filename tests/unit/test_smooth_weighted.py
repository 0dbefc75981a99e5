"""The deterministic weighted pick (nginx's smooth weighted round robin) and its use."""

from __future__ import annotations

from collections import Counter

import pytest

from tcpmesh.control.snapshot import WeightedCluster
from tcpmesh.dataplane.balancer import SmoothWeighted


def picks(dests: list[tuple[str, int]], n: int) -> list[str]:
    picker = SmoothWeighted(tuple(WeightedCluster(name, w) for name, w in dests))
    out = []
    for _ in range(n):
        chosen = picker.pick()
        assert chosen is not None
        out.append(chosen.cluster_name)
    return out


def test_80_20_is_exact_in_every_window_of_the_total() -> None:
    seq = picks([("v1", 80), ("v2", 20)], 1000)
    for start in range(0, 1000, 100):
        window = Counter(seq[start : start + 100])
        assert window == {"v1": 80, "v2": 20}


def test_shares_are_interleaved_not_bunched() -> None:
    # nginx's sequence for 4:1 — the minority destination is spread out.
    assert picks([("a", 4), ("b", 1)], 5) == ["a", "a", "b", "a", "a"]
    seq = picks([("v1", 80), ("v2", 20)], 100)
    longest, current = 0, 0
    for name in seq:
        current = current + 1 if name == "v1" else 0
        longest = max(longest, current)
    assert longest == 4


@pytest.mark.parametrize(
    ("weights", "n"),
    [([1, 1, 1], 300), ([50, 30, 20], 1000), ([7, 3], 1000), ([1, 99], 1000)],
)
def test_relative_weights_not_summing_to_100(weights: list[int], n: int) -> None:
    names = [f"c{i}" for i in range(len(weights))]
    counts = Counter(picks(list(zip(names, weights, strict=True)), n))
    total = sum(weights)
    for name, w in zip(names, weights, strict=True):
        # Exact after whole cycles; off by less than one pick per destination otherwise.
        assert abs(counts[name] - n * w / total) < len(weights), counts


def test_zero_weight_entries_get_nothing() -> None:
    assert set(picks([("a", 0), ("b", 30), ("c", 0)], 50)) == {"b"}


def test_empty_picker_returns_none() -> None:
    assert SmoothWeighted(()).pick() is None
    assert SmoothWeighted((WeightedCluster("a", 0), WeightedCluster("b", 0))).pick() is None
