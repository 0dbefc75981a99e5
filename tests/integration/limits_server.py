"""An API server in a process of its own, for measuring what hostile bodies cost it.

Run as ``python -m tests.integration.limits_server STATE_DIR``: prints the port, then
for every line read on stdin one JSON line ``{"maxrss_kib", "cpu_seconds"}`` of its own
resource usage, and stops when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from tcpmesh.api import validate_object
from tcpmesh.apiserver import create_app
from tcpmesh.store import Store

TOKEN = "limits-token"


class NoSnapshots:
    def current(self, node: str) -> str | None:
        return None

    async def watch(self, node: str) -> AsyncIterator[str]:
        await asyncio.Event().wait()
        yield ""


def admit(objects: list[dict[str, object]]) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    for obj in objects:
        errors += validate_object(obj)[0]
    return errors, []


def usage() -> str:
    self = resource.getrusage(resource.RUSAGE_SELF)
    return json.dumps({"maxrss_kib": self.ru_maxrss, "cpu_seconds": self.ru_utime + self.ru_stime})


async def main(state_dir: Path) -> None:
    store = Store(state_dir / "store.db")
    app = create_app(
        store,
        TOKEN,
        admit=admit,
        snapshots=NoSnapshots(),
        status=dict,
        pod_log=lambda namespace, name: None,
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        print(usage(), flush=True)
    await runner.cleanup()
    store.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
