"""Suite-wide guard: where the Envoy half of the suite is required, it may not skip."""

from __future__ import annotations

import os

import pytest

from tcpmesh.xds.envoyfiles import missing_envoy_support


def pytest_sessionstart(session: pytest.Session) -> None:
    # scripts/test.sh installs the envoy extra and sets this, so that a broken install
    # fails the run instead of quietly skipping every Envoy test.
    if os.environ.get("TCPMESH_REQUIRE_ENVOY"):
        missing = missing_envoy_support()
        if missing is not None:
            raise pytest.UsageError(f"TCPMESH_REQUIRE_ENVOY is set but {missing}")
