"""The HTTP API: Kubernetes-style REST over the store, tcpmesh's apply and snapshots."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from aiohttp import web

from tcpmesh.api import (
    MAX_DOCUMENT_BYTES,
    MAX_INPUT_BYTES,
    LimitExceeded,
    kinds,
    load_json_body,
    load_yaml_body,
    size_problem,
)
from tcpmesh.api.kinds import KindInfo
from tcpmesh.control import SnapshotSource
from tcpmesh.store import (
    AlreadyExists,
    Conflict,
    Expired,
    NotFound,
    StoreBackend,
    StoreError,
)

Obj = dict[str, Any]
Admit = Callable[[list[Obj]], tuple[list[str], list[str]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# How often an idle stream checks whether its client has gone away.
STREAM_POLL_SECONDS = 0.5


class _Fail(Exception):
    """Ends a request with a Kubernetes Status."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body

    def response(self) -> web.Response:
        return web.json_response(self.status(), status=self.code)


def create_app(
    store: StoreBackend,
    token: str,
    *,
    admit: Admit,
    snapshots: SnapshotSource,
    status: Callable[[], Obj],
    pod_log: Callable[[str, str], Path | None],
) -> web.Application:
    api = _Api(store, token, admit, snapshots, status, pod_log)
    # aiohttp stops reading a body at this size; _body applies the per-endpoint limit.
    app = web.Application(middlewares=[api.middleware], client_max_size=MAX_INPUT_BYTES + 1)
    app.on_shutdown.append(api.on_shutdown)
    r = app.router
    r.add_get("/healthz", api.healthz)
    r.add_post("/tcpmesh/v1/apply", api.apply)
    r.add_post("/tcpmesh/v1/delete", api.delete_many)
    r.add_get("/tcpmesh/v1/status", api.status)
    r.add_get("/tcpmesh/v1/snapshots/{namespace}/{pod}", api.snapshot)
    # Before the generic object routes, which would take "log" for a subresource.
    r.add_get("/api/{version}/namespaces/{namespace}/pods/{name}/log", api.pod_log)
    for prefix in ("/api/{version}", "/apis/{group}/{version}"):
        collection = prefix + "/namespaces/{namespace}/{plural}"
        item = collection + "/{name}"
        r.add_get(prefix + "/{plural}", api.list)
        r.add_get(collection, api.list)
        r.add_post(collection, api.create)
        r.add_get(item, api.get)
        r.add_put(item, api.replace)
        r.add_delete(item, api.delete)
        r.add_put(item + "/status", api.replace_status)
    return app


def resource_name(info: KindInfo) -> str:
    """``virtualservices.networking.istio.io``, or ``services`` for the core group."""
    return f"{info.plural}.{info.group}" if info.group else info.plural


def _not_found(info: KindInfo, name: str) -> _Fail:
    details = {"name": name, "group": info.group, "kind": info.plural}
    return _Fail(404, "NotFound", f'{resource_name(info)} "{name}" not found', details)


@contextmanager
def _object_errors(info: KindInfo, name: str) -> Iterator[None]:
    """Store errors about one object, worded as the Kubernetes API server words them."""
    details = {"name": name, "group": info.group, "kind": info.plural}
    try:
        yield
    except NotFound:
        raise _not_found(info, name) from None
    except AlreadyExists:
        message = f'{resource_name(info)} "{name}" already exists'
        raise _Fail(409, "AlreadyExists", message, details) from None
    except Conflict:
        message = (
            f'Operation cannot be fulfilled on {resource_name(info)} "{name}": the object has '
            "been modified; please apply your changes to the latest version and try again"
        )
        raise _Fail(409, "Conflict", message, details) from None


def _store_error(exc: StoreError) -> _Fail:
    if isinstance(exc, NotFound):
        return _Fail(404, "NotFound", str(exc))
    if isinstance(exc, AlreadyExists):
        return _Fail(409, "AlreadyExists", str(exc))
    if isinstance(exc, Conflict):
        return _Fail(409, "Conflict", str(exc))
    if isinstance(exc, Expired):
        return _Fail(410, "Expired", str(exc))
    return _Fail(422, "Invalid", str(exc), {"causes": [{"message": str(exc)}]})


def _invalid(errors: list[str]) -> _Fail:
    return _Fail(422, "Invalid", "\n".join(errors), {"causes": [{"message": e} for e in errors]})


def _with_warnings(resp: web.Response, warnings: list[str]) -> web.Response:
    for text in warnings:
        # Header values are one line of ASCII; quote the text the way Kubernetes does.
        quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
        quoted = quoted.encode("ascii", "backslashreplace").decode("ascii")
        resp.headers.add("Warning", f'299 - "{quoted}"')
    return resp


def _parse_selector(text: str) -> dict[str, str]:
    selector: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = term.partition("==") if "==" in term else term.partition("=")
        if not sep or not key.strip() or key.endswith("!"):
            raise _Fail(
                400, "BadRequest", f'unsupported label selector term "{term}" (use key=value)'
            )
        selector[key.strip()] = value.strip()
    return selector


def _matches(obj: Obj, namespace: str | None, selector: Mapping[str, str]) -> bool:
    meta = obj.get("metadata") or {}
    if namespace is not None and meta.get("namespace") != namespace:
        return False
    labels = meta.get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _line(value: Obj) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


def _is_true(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


async def _next_or_none(iterator: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await anext(iterator)
    except StopAsyncIteration:
        return None


class _Api:
    def __init__(
        self,
        store: StoreBackend,
        token: str,
        admit: Admit,
        snapshots: SnapshotSource,
        status: Callable[[], Obj],
        pod_log: Callable[[str, str], Path | None],
    ) -> None:
        self._store = store
        self._token = token.encode()
        self._admit = admit
        self._snapshots = snapshots
        self._status = status
        self._pod_log = pod_log
        self._stopping = asyncio.Event()

    async def on_shutdown(self, app: web.Application) -> None:
        self._stopping.set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/healthz" and not self._authorized(request):
            return _Fail(401, "Unauthorized", "Unauthorized").response()
        try:
            return await handler(request)
        except _Fail as fail:
            return fail.response()
        except StoreError as exc:
            return _store_error(exc).response()
        except web.HTTPException as exc:
            if exc.status == 404:
                message = "the server could not find the requested resource"
                return _Fail(404, "NotFound", message).response()
            if exc.status == 405:
                message = "the server does not allow this method on the requested resource"
                return _Fail(405, "MethodNotAllowed", message).response()
            raise

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self._token
        )

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _kind(request: web.Request) -> KindInfo:
        info = request.match_info
        try:
            kind = kinds.by_plural(info.get("group", ""), info["plural"])
        except kinds.UnknownKind:
            kind = None
        if kind is None or info["version"] not in kind.versions:
            raise _Fail(404, "NotFound", "the server could not find the requested resource")
        return kind

    @staticmethod
    async def _body(request: web.Request, max_bytes: int = MAX_DOCUMENT_BYTES) -> Obj:
        """The object a JSON (or, as Kubernetes allows, YAML) body holds, within the input
        limits of :mod:`tcpmesh.api`: checked before it is parsed, so no body can exhaust
        the server."""
        if (request.content_length or 0) > max_bytes:  # refused before a byte is read
            problem = size_problem(request.content_length or 0, max_bytes, "the request body")
            raise _Fail(413, "RequestEntityTooLarge", str(problem))
        try:
            raw = await request.read()
            yaml_body = request.content_type in ("application/yaml", "application/x-yaml")
            load = load_yaml_body if yaml_body else load_json_body
            body = load(raw, max_bytes=max_bytes)
        except web.HTTPRequestEntityTooLarge:
            problem = size_problem(MAX_INPUT_BYTES + 1, max_bytes, "the request body")
            raise _Fail(413, "RequestEntityTooLarge", str(problem)) from None
        except LimitExceeded as exc:
            reason = "RequestEntityTooLarge" if exc.too_large else "BadRequest"
            raise _Fail(413 if exc.too_large else 400, reason, str(exc)) from None
        except ValueError as exc:
            message = str(exc) if yaml_body else "the request body is not valid JSON"
            raise _Fail(400, "BadRequest", message) from None
        if not isinstance(body, dict):
            raise _Fail(400, "BadRequest", "the request body must be a JSON object")
        return body

    async def _object(self, request: web.Request, info: KindInfo, name: str | None) -> Obj:
        """The body as an object of the path's kind, namespace and name."""
        obj = await self._body(request)
        version = request.match_info["version"]
        kind = obj.setdefault("kind", info.kind)
        api_version = obj.setdefault("apiVersion", info.api_version(version))
        if kind != info.kind or not info.accepts_api_version(api_version):
            message = f"{api_version}/{kind} does not belong at {resource_name(info)}"
            raise _Fail(400, "BadRequest", message)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _Fail(400, "BadRequest", "metadata must be a JSON object")
        namespace = request.match_info["namespace"]
        if meta.setdefault("namespace", namespace) != namespace:
            message = (
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
            raise _Fail(400, "BadRequest", message)
        if name is not None and meta.setdefault("name", name) != name:
            message = (
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})"
            )
            raise _Fail(400, "BadRequest", message)
        return obj

    def _admitted(self, objects: list[Obj]) -> list[str]:
        """Runs admission; raises 422 with its errors, else returns its warnings."""
        errors, warnings = self._admit(objects)
        if errors:
            raise _invalid(errors)
        return warnings

    async def _stream(
        self, request: web.Request, lines: AsyncIterator[bytes]
    ) -> web.StreamResponse:
        """Sends NDJSON lines until they end, the client goes away or the server stops."""
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        stopping = asyncio.ensure_future(self._stopping.wait())
        pending: asyncio.Future[bytes | None] | None = None
        try:
            while request.transport is not None and not request.transport.is_closing():
                if pending is None:
                    pending = asyncio.ensure_future(_next_or_none(lines))
                waiting: set[asyncio.Future[Any]] = {pending, stopping}
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=STREAM_POLL_SECONDS,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stopping in done:
                    break
                if pending not in done:
                    continue
                line = pending.result()
                pending = None
                if line is None:
                    break
                await resp.write(line)
            with suppress(ConnectionError):
                await resp.write_eof()
        except ConnectionError:
            pass  # the client went away mid-write
        finally:
            stopping.cancel()
            if pending is not None:
                pending.cancel()
                await asyncio.wait({pending})
            await _aclose(lines)
        return resp

    # ------------------------------------------------------------------ Kubernetes REST

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def list(self, request: web.Request) -> web.StreamResponse:
        info = self._kind(request)
        namespace = request.match_info.get("namespace")
        selector = _parse_selector(request.query.get("labelSelector", ""))
        if _is_true(request.query.get("watch")):
            return await self._watch(request, info, namespace, selector)
        items, revision = self._store.list_with_revision(info.kind, namespace, selector)
        return web.json_response(
            {
                "apiVersion": info.api_version(request.match_info["version"]),
                "kind": f"{info.kind}List",
                "metadata": {"resourceVersion": str(revision)},
                "items": items,
            }
        )

    async def _watch(
        self,
        request: web.Request,
        info: KindInfo,
        namespace: str | None,
        selector: dict[str, str],
    ) -> web.StreamResponse:
        text = request.query.get("resourceVersion", "")
        try:
            since = int(text) if text else 0
        except ValueError:
            raise _Fail(400, "BadRequest", f'invalid resourceVersion "{text}"') from None
        initial: list[Obj] = []
        if since == 0:
            # As in Kubernetes: no (or "0") resourceVersion starts with the current objects.
            initial, since = self._store.list_with_revision(info.kind, namespace, selector)

        async def lines() -> AsyncIterator[bytes]:
            for obj in initial:
                yield _line({"type": "ADDED", "object": obj})
            events = self._store.watch([info.kind], since)
            try:
                async for event in events:
                    if _matches(event.object, namespace, selector):
                        yield _line({"type": event.type, "object": event.object})
            except Expired as exc:
                yield _line({"type": "ERROR", "object": _store_error(exc).status()})
            finally:
                await events.aclose()

        return await self._stream(request, lines())

    async def get(self, request: web.Request) -> web.Response:
        info = self._kind(request)
        name = request.match_info["name"]
        obj = self._store.get(info.kind, request.match_info["namespace"], name)
        if obj is None:
            raise _not_found(info, name)
        return web.json_response(obj)

    async def create(self, request: web.Request) -> web.Response:
        info = self._kind(request)
        obj = await self._object(request, info, None)
        warnings = self._admitted([obj])
        with _object_errors(info, str(obj["metadata"].get("name", ""))):
            created = self._store.create(obj)
        return _with_warnings(web.json_response(created, status=201), warnings)

    async def replace(self, request: web.Request) -> web.Response:
        info = self._kind(request)
        name = request.match_info["name"]
        obj = await self._object(request, info, name)
        warnings = self._admitted([obj])
        expected = obj["metadata"].get("resourceVersion") or None
        with _object_errors(info, name):
            replaced = self._store.replace(obj, expected_resource_version=expected)
        return _with_warnings(web.json_response(replaced), warnings)

    async def replace_status(self, request: web.Request) -> web.Response:
        info = self._kind(request)
        name = request.match_info["name"]
        obj = await self._object(request, info, name)
        status = obj.get("status") or {}
        if not isinstance(status, dict):
            raise _Fail(400, "BadRequest", "status must be a JSON object")
        expected = obj["metadata"].get("resourceVersion") or None
        with _object_errors(info, name):
            updated = self._store.update_status(
                info.kind,
                obj["metadata"]["namespace"],
                name,
                status,
                expected_resource_version=expected,
            )
        return web.json_response(updated)

    async def delete(self, request: web.Request) -> web.Response:
        info = self._kind(request)
        name = request.match_info["name"]
        with _object_errors(info, name):
            deleted = self._store.delete(info.kind, request.match_info["namespace"], name)
        return web.json_response(deleted)

    async def pod_log(self, request: web.Request) -> web.Response:
        info = kinds.by_kind("Pod")
        if request.match_info["version"] not in info.versions:
            raise _Fail(404, "NotFound", "the server could not find the requested resource")
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if self._store.get(info.kind, namespace, name) is None:
            raise _not_found(info, name)
        path = self._pod_log(namespace, name)
        # A pod that has not written anything yet has an empty log, not a missing one.
        body = b""
        if path is not None:
            with suppress(FileNotFoundError):
                body = path.read_bytes()
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    # ------------------------------------------------------------------ tcpmesh API

    async def apply(self, request: web.Request) -> web.Response:
        body = await self._body(request, MAX_INPUT_BYTES)
        objects, dry_run = body.get("objects"), body.get("dryRun", False)
        if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
            raise _Fail(400, "BadRequest", "objects must be a list of JSON objects")
        if not isinstance(dry_run, bool):
            raise _Fail(400, "BadRequest", "dryRun must be true or false")
        objects = [_with_namespace(o) for o in objects]
        errors = [e for e in map(_not_appliable, objects) if e]
        if errors:
            raise _invalid(errors)
        warnings = self._admitted(objects)
        results = self._store.apply(objects, dry_run=dry_run)
        summary = [
            {
                "kind": r.object["kind"],
                "namespace": r.object["metadata"]["namespace"],
                "name": r.object["metadata"]["name"],
                "action": r.action,
            }
            for r in results
        ]
        response = web.json_response({"results": summary, "warnings": warnings})
        return _with_warnings(response, warnings)

    async def delete_many(self, request: web.Request) -> web.Response:
        """Deletes each object it can; missing ones are reported, not fatal (kubectl delete -f)."""
        body = await self._body(request, MAX_INPUT_BYTES)
        refs = body.get("objects")
        if not isinstance(refs, list) or not all(
            isinstance(r, dict)
            and isinstance(r.get("kind"), str)
            and isinstance(r.get("name"), str)
            for r in refs
        ):
            raise _Fail(
                400, "BadRequest", 'objects must be a list of {"kind", "namespace", "name"}'
            )
        infos: list[KindInfo] = []
        for ref in refs:
            try:
                infos.append(kinds.by_kind(ref["kind"]))
            except kinds.UnknownKind:
                raise _invalid([f'unknown kind "{ref["kind"]}"']) from None
        results = []
        for ref, info in zip(refs, infos, strict=True):
            namespace = ref.get("namespace") or "default"
            result = {"kind": info.kind, "namespace": namespace, "name": ref["name"]}
            try:
                self._store.delete(info.kind, namespace, ref["name"])
                result["action"] = "deleted"
            except NotFound:
                result["action"] = "not found"
                result["message"] = _not_found(info, ref["name"]).message
            results.append(result)
        return web.json_response({"results": results})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self._status())

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        node = f"{request.match_info['namespace']}/{request.match_info['pod']}"
        if _is_true(request.query.get("watch")):
            snapshots = self._snapshots.watch(node)

            async def lines() -> AsyncIterator[bytes]:
                try:
                    async for snapshot in snapshots:
                        # The process edge: one compact JSON text per line (NDJSON).
                        yield snapshot.to_json().encode() + b"\n"
                finally:
                    await _aclose(snapshots)

            return await self._stream(request, lines())
        snapshot = self._snapshots.current(node)
        if snapshot is None:
            raise _Fail(404, "NotFound", f'no snapshot for proxy "{node}"')
        return web.Response(text=snapshot.to_json(), content_type="application/json")


def _with_namespace(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and not meta.get("namespace"):
        return {**obj, "metadata": {**meta, "namespace": "default"}}
    return obj


def _not_appliable(obj: Obj) -> str | None:
    """Why the registry refuses this object for apply, if it does."""
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    name = (obj.get("metadata") or {}).get("name", "")
    try:
        info = kinds.by_kind(str(kind))
    except kinds.UnknownKind:
        return f'no matches for kind "{kind}" in version "{api_version}"'
    if not info.accepts_api_version(str(api_version)):
        return f'no matches for kind "{kind}" in version "{api_version}"'
    if not info.user_writable:
        return (
            f'{kind} "{name}" cannot be applied: {info.plural} are managed by tcpmesh '
            "(apply the Deployment or Service that produces them)"
        )
    return None
