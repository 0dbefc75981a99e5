"""Pod processes connect to loopback addresses from their own pod IP (runtime.podsource)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tcpmesh.runtime.podsource import source_library, with_pod_source

CLIENT = """
import socket, sys
c = socket.socket()
if len(sys.argv) > 2:
    c.bind((sys.argv[2], 0))
c.connect(("127.240.7.7", int(sys.argv[1])))
print(c.getsockname()[0])
"""


def _source_seen(tmp_path: Path, env: dict[str, str], *bind: str) -> tuple[str, str]:
    with socket.socket() as server:
        server.bind(("127.240.7.7", 0))
        server.listen()
        port = server.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, str(port), *bind],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        conn, peer = server.accept()
        conn.close()
    return out.stdout.strip(), peer[0]


def test_a_pod_process_connects_from_its_pod_ip(tmp_path: Path) -> None:
    library = source_library(tmp_path)
    assert library is not None and library.is_file()
    env = with_pod_source({"PATH": "/usr/bin:/bin"}, "127.1.0.42", library)
    assert _source_seen(tmp_path, env) == ("127.1.0.42", "127.1.0.42")
    # A socket the program bound itself keeps its address.
    assert _source_seen(tmp_path, env, "127.1.0.43") == ("127.1.0.43", "127.1.0.43")
    # Without the library, Linux picks 127.0.0.1: what the library is for.
    assert _source_seen(tmp_path, {"PATH": "/usr/bin:/bin"})[1] == "127.0.0.1"


def test_the_library_is_built_once_per_state_directory(tmp_path: Path) -> None:
    first = source_library(tmp_path)
    source_library.cache_clear()
    assert first is not None
    mtime = first.stat().st_mtime_ns
    assert source_library(tmp_path) == first
    assert first.stat().st_mtime_ns == mtime
