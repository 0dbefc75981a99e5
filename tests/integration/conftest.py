"""Fixtures shared by the data plane's integration tests."""

from __future__ import annotations

import pytest

from tcpmesh.dataplane.native import engine_available
from tcpmesh.dataplane.splice import splice_available

# The Python relay copying and splicing, and the C engine (dataplane.native) likewise.
RELAY_PATHS = ["copy", "splice", "native-copy", "native-splice"]


@pytest.fixture(params=RELAY_PATHS)
def relay_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per relay path: copying through user space and splice(2) from
    the first byte (``TCPMESH_RELAY``), each on the Python relay and on the C engine
    (``TCPMESH_ENGINE``); read by every Proxy and worker started after."""
    path = str(request.param)
    engine, _, relay = path.rpartition("-")
    if relay == "splice" and not splice_available():
        pytest.skip("splice(2) is not available here")
    if engine == "native" and not engine_available():
        pytest.skip("the C extension tcpmesh.dataplane._engine is not built")
    monkeypatch.setenv("TCPMESH_RELAY", relay)
    monkeypatch.setenv("TCPMESH_ENGINE", engine or "python")
    return path


@pytest.fixture(params=["python", "native"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on the Python relay and on the C engine (``TCPMESH_ENGINE``), for
    behaviour that does not depend on how bytes move (connect outcomes, refusals)."""
    name = str(request.param)
    if name == "native" and not engine_available():
        pytest.skip("the C extension tcpmesh.dataplane._engine is not built")
    monkeypatch.setenv("TCPMESH_ENGINE", name)
    return name
