"""Fixtures shared by the data plane's integration tests."""

from __future__ import annotations

import pytest

from tcpmesh.dataplane.splice import splice_available

RELAY_PATHS = ["copy", "splice"]


@pytest.fixture(params=RELAY_PATHS)
def relay_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per relay path: copying through user space, and splice(2) from
    the first byte (``TCPMESH_RELAY``, read by every Proxy and worker started after)."""
    path = str(request.param)
    if path == "splice" and not splice_available():
        pytest.skip("splice(2) is not available here")
    monkeypatch.setenv("TCPMESH_RELAY", path)
    return path
