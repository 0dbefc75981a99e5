"""The tcpmesh command line."""

from tcpmesh.cli.main import main

__all__ = ["main"]
