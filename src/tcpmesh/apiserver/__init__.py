"""The Kubernetes API of a running mesh (HTTPS with its CA), its kubeconfig and the CLI client.

The server is imported lazily: the CLI only needs the client, and aiohttp alone would
add a fifth of a second to every command. ``mount`` adds a sub-application (the web
console) to the API's listener.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tcpmesh.apiserver.server import Admit, create_app, mount

__all__ = ["Admit", "create_app", "mount"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tcpmesh.apiserver import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
