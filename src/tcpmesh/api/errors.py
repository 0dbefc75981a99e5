"""The one exception the API layer raises for bad input."""

from __future__ import annotations

from collections.abc import Iterable


class InvalidInput(ValueError):
    """Input that cannot be accepted.

    ``messages`` holds one self-contained line per problem (file, resource, field path,
    reason), so callers can print them as they are or ship them as a list.
    """

    def __init__(self, messages: Iterable[str]) -> None:
        self.messages: list[str] = list(messages)
        super().__init__("\n".join(self.messages))

    def __str__(self) -> str:
        return "\n".join(self.messages)
