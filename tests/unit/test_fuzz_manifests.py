"""Manifests derived from the seed's, mutated by hypothesis: each is accepted or refused
with one clear line per problem, never a traceback, a hang or a partial write.

Every example starts from the seed's documents (the tcp-echo samples, verbatim from the
walkthrough), then deletes, replaces or adds fields anywhere in them (values of every
JSON type, out-of-range numbers, odd strings), or garbles the YAML text itself. The
checks: ``load_documents`` returns objects or raises ``InvalidInput`` whose lines each
name the file; accepted objects are all written to a SQLite store, and the snapshot builder takes
whatever was stored.
Bounded: a fixed number of examples, each with a deadline.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpmesh.api import InvalidInput, load_documents
from tcpmesh.control import MeshResources, ProxyNode, build_snapshot
from tcpmesh.store import Store

SAMPLES = Path(__file__).resolve().parents[2] / "src" / "tcpmesh" / "samples" / "tcp-echo"
SOURCE = "fuzz.yaml"
SEED_DOCUMENTS: list[dict[str, Any]] = [
    doc
    for path in sorted(SAMPLES.glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if doc
]
NODE = ProxyNode(
    namespace="istio-system",
    name="istio-ingressgateway-0",
    labels=(("istio", "ingressgateway"),),
    address="127.0.0.1",
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "0s", "-1s", "1h", "*", "v1", "tcp", "TCP", "9000", "a/b", "\x00"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _containers(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every dict and list inside ``node``."""
    found: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        found.append(path)
        for key, value in node.items():
            found += _containers(value, (*path, key))
    elif isinstance(node, list):
        found.append(path)
        for i, value in enumerate(node):
            found += _containers(value, (*path, i))
    return found


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


@st.composite
def mutated_manifests(draw: st.DrawFn) -> str:
    docs = copy.deepcopy(draw(st.lists(st.sampled_from(SEED_DOCUMENTS), min_size=1, max_size=4)))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        doc = draw(st.sampled_from(docs))
        # Inner fields mostly: the kind and its API version stay, so validation goes deep.
        path = draw(st.sampled_from(_containers(doc)[1:] or [()]))
        target = _at(doc, path)
        keys = list(target.keys()) if isinstance(target, dict) else list(range(len(target)))
        action = draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "add" or not keys:
            if isinstance(target, dict):
                target[draw(st.text(max_size=10))] = draw(VALUES)
            else:
                target.append(draw(VALUES))
        elif action == "delete":
            del target[draw(st.sampled_from(keys))]
        else:
            target[draw(st.sampled_from(keys))] = draw(VALUES)
    text = yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True)
    if draw(st.integers(min_value=0, max_value=4)) == 0 and text:
        # Garble the text itself: a run of characters replaced at some offset.
        at = draw(st.integers(min_value=0, max_value=len(text) - 1))
        text = text[:at] + draw(st.text(max_size=5)) + text[at + draw(st.integers(0, 5)) :]
    return text


@settings(
    max_examples=150,
    deadline=3000,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=mutated_manifests())
def test_a_mutated_manifest_is_accepted_or_refused_clearly(tmp_path: Path, text: str) -> None:
    try:
        objects = load_documents(text, SOURCE)
    except InvalidInput as exc:
        assert exc.messages, "a refusal names at least one problem"
        for line in exc.messages:
            assert line.startswith(SOURCE), line
            assert "Traceback" not in line, line
        return
    store = Store(tmp_path / f"store-{abs(hash(text))}.db")
    try:
        store.apply(objects)
        kinds = {o["kind"] for o in objects}
        stored = [o for kind in kinds for o in store.list(kind)]
        keys = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in stored}
        # All of it was written (nothing half-applied), and the builder takes it.
        for obj in objects:
            meta = obj["metadata"]
            assert (obj["kind"], meta["namespace"], meta["name"]) in keys
        build_snapshot(MeshResources.from_objects(stored), NODE)
    finally:
        store.close()
