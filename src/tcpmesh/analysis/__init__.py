"""``tcpmesh analyze``: istioctl-analyze-style checks across resources (pure functions)."""

from tcpmesh.analysis.analyzers import Message, analyze, format_message

__all__ = ["Message", "analyze", "format_message"]
