"""The web console, served on the API's listener under ``/console/``.

A page and its script (in ``static/``, shipped in the package: no CDN, no build step),
a session login that trades the mesh's token for an HttpOnly cookie, and a thin layer
over the mesh's own API and metrics (``create_console``).
"""

from tcpmesh.console.app import LISTED_KINDS, create_console
from tcpmesh.console.traffic import traffic_source

CONSOLE_PREFIX = "/console"


def console_url(api_url: str) -> str:
    return api_url.rstrip("/") + CONSOLE_PREFIX + "/"


__all__ = ["CONSOLE_PREFIX", "LISTED_KINDS", "console_url", "create_console", "traffic_source"]
