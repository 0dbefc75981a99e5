"""The part of `tcpmesh.store.Store` the runtime uses, as a protocol (tests pass fakes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any, Protocol


class WatchEventLike(Protocol):
    @property
    def type(self) -> str: ...

    @property
    def object(self) -> dict[str, Any]: ...

    @property
    def revision(self) -> int: ...


class StoreLike(Protocol):
    @property
    def revision(self) -> int: ...

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]: ...

    def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    def replace(
        self, obj: dict[str, Any], *, expected_resource_version: str | None = None
    ) -> dict[str, Any]: ...

    def update_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        expected_resource_version: str | None = None,
    ) -> dict[str, Any]: ...

    def delete(self, kind: str, namespace: str, name: str) -> dict[str, Any]: ...

    def watch(
        self, kinds: Collection[str] | None = None, since: int | None = None
    ) -> AsyncIterator[WatchEventLike]: ...
