"""The HTTP API: Kubernetes-style REST over the store, tcpmesh's apply and snapshots."""

from __future__ import annotations

import asyncio
import builtins
import copy
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from tcpmesh import __version__
from tcpmesh.api import (
    MAX_DOCUMENT_BYTES,
    MAX_INPUT_BYTES,
    LimitExceeded,
    gatewayapi,
    kinds,
    load_json_body,
    load_yaml_body,
    namespaces,
    openapi,
    size_problem,
    update_errors,
)
from tcpmesh.api.kinds import KindInfo
from tcpmesh.apiserver import discovery, managed, tables
from tcpmesh.apiserver.patch import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from tcpmesh.apiserver.peers import CA_PATH, JOIN_PATH, PeerAuthority, PeerRefused
from tcpmesh.apiserver.selectors import Predicate, SelectorError, field_selector, label_selector
from tcpmesh.control import SnapshotSource, StoreCurrency
from tcpmesh.registry import ServiceRejected
from tcpmesh.store import (
    CLUSTER_SCOPE,
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
# An idle snapshot stream sends an empty line this often, so that a proxy whose stream
# went silent for three ticks (a cut link sends no FIN) reconnects, to another replica.
SNAPSHOT_TICK_SECONDS = 1.0
# An idle watch that asked for bookmarks gets one this often (Kubernetes: about a minute).
BOOKMARK_SECONDS = 30.0
# How often a followed pod log (``kubectl logs -f``) is checked for new output.
LOG_POLL_SECONDS = 0.2
# A PATCH re-reads and re-applies when another write came in between, this often.
PATCH_RETRIES = 5
FIELD_VALIDATION = ("Strict", "Warn", "Ignore")
# Groups whose kinds take strategic merge patches (Kubernetes' own, not Istio's CRDs).
STRATEGIC_GROUPS = ("", "apps")
_UNSUPPORTED_PATCH = (
    "the body of the request was in an unknown format - accepted media types include: "
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
)
# Paths anyone may read, as with the Kubernetes API server's anonymous defaults.
PUBLIC_PATHS = frozenset({"/healthz", "/version", "/readyz", "/livez"})
# The key under which an application records the path prefixes its mounts authenticate
# themselves (see :func:`mount`).
PUBLIC_PREFIXES = web.AppKey("tcpmesh_public_prefixes", list[str])


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
    peers: PeerAuthority | None = None,
    currency: StoreCurrency | None = None,
) -> web.Application:
    """The API; with ``peers``, remote gateways and workload agents join and authenticate
    with client certificates (apiserver.peers), besides the administrator's bearer token.
    With ``currency`` (a replica of a shared store), snapshot streams end and are refused,
    and ``/readyz`` fails, while this replica's copy of the store cannot be vouched for."""
    api = _Api(store, token, admit, snapshots, status, pod_log, peers, currency)
    # aiohttp stops reading a body at this size; _body applies the per-endpoint limit.
    app = web.Application(middlewares=[api.middleware], client_max_size=MAX_INPUT_BYTES + 1)
    app[PUBLIC_PREFIXES] = []
    app.on_shutdown.append(api.on_shutdown)
    r = app.router
    r.add_get("/healthz", api.healthz)
    r.add_get("/readyz", api.readyz)
    r.add_get("/livez", api.healthz)
    r.add_get("/version", api.version)
    r.add_get("/api", api.discover_core)
    r.add_get("/apis", api.discover_groups)
    r.add_get("/api/{version}", api.discover_resources)
    r.add_get("/apis/{group}", api.discover_group)
    r.add_get("/apis/{group}/{version}", api.discover_resources)
    r.add_get("/openapi/v2", api.openapi_v2)
    r.add_get("/openapi/v3", api.openapi_v3_index)
    r.add_get("/openapi/v3/{gv:.+}", api.openapi_v3)
    r.add_post("/tcpmesh/v1/apply", api.apply)
    r.add_post("/tcpmesh/v1/delete", api.delete_many)
    r.add_get("/tcpmesh/v1/status", api.status)
    r.add_get("/tcpmesh/v1/snapshots/{namespace}/{pod}", api.snapshot)
    if peers is not None:
        peers.routes(app)
    # Before the generic object routes, which would take "log" for a subresource.
    r.add_get("/api/{version}/namespaces/{namespace}/pods/{name}/log", api.pod_log)
    for prefix in ("/api/{version}", "/apis/{group}/{version}"):
        # Cluster-scoped objects first: /api/v1/namespaces/NAME/status is a Namespace's
        # status, not a collection "status" in namespace NAME. _Api._kind refuses a path
        # of the other scope than its kind's, as Kubernetes does (404).
        _object_routes(r, api, prefix + "/{plural}", scale=False)
        _object_routes(r, api, prefix + "/namespaces/{namespace}/{plural}", scale=True)
    return app


def _object_routes(r: web.UrlDispatcher, api: _Api, collection: str, *, scale: bool) -> None:
    item = collection + "/{name}"
    r.add_get(collection, api.list)
    r.add_post(collection, api.create)
    r.add_delete(collection, api.delete_collection)
    r.add_get(item, api.get)
    r.add_put(item, api.replace)
    r.add_patch(item, api.patch)
    r.add_delete(item, api.delete)
    r.add_get(item + "/status", api.get)
    r.add_put(item + "/status", api.replace_status)
    r.add_patch(item + "/status", api.patch_status)
    if scale:
        r.add_get(item + "/scale", api.get_scale)
        r.add_put(item + "/scale", api.replace_scale)
        r.add_patch(item + "/scale", api.patch_scale)


def mount(
    app: web.Application, prefix: str, subapp: web.Application, *, authenticate: bool = True
) -> None:
    """Serve ``subapp`` under ``prefix`` on the API's listener (the web console mounts here).

    With ``authenticate=False`` the API's bearer-token check is skipped below ``prefix``,
    for a sub-application that authenticates its own requests (a browser sends no
    Authorization header); everything else about the listener (TLS, errors) is shared.
    """
    if not authenticate:
        app[PUBLIC_PREFIXES].append(prefix.rstrip("/") + "/")
    app.add_subapp(prefix, subapp)


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


def _unreachable() -> _Fail:
    return _Fail(
        503,
        "ServiceUnavailable",
        "this replica cannot reach its store, so what it knows may be stale: ask another",
    )


def _store_error(exc: StoreError) -> _Fail:
    if isinstance(exc, ServiceRejected):
        if exc.internal:
            return _Fail(500, "InternalError", exc.messages[0])
        return _invalid(exc.messages, kinds.by_key("Service"), exc.name)
    if isinstance(exc, NotFound):
        return _Fail(404, "NotFound", str(exc))
    if isinstance(exc, AlreadyExists):
        return _Fail(409, "AlreadyExists", str(exc))
    if isinstance(exc, Conflict):
        return _Fail(409, "Conflict", str(exc))
    if isinstance(exc, Expired):
        return _Fail(410, "Expired", str(exc))
    return _Fail(422, "Invalid", str(exc), {"causes": [{"message": str(exc)}]})


def _invalid(errors: list[str], info: KindInfo | None = None, name: str = "") -> _Fail:
    """422 with one cause per error; for one object, causes name the field as Kubernetes does.

    kubectl then prints ``The VirtualService "tcp-echo" is invalid: spec.tcp[0]...:
    weight -5 < 0``: Istio's message, with the field it is about.
    """
    details: Obj = {"causes": [{"message": e} for e in errors]}
    if info is not None:
        causes = []
        for error in errors:
            _, marker, rest = error.partition(" is invalid: ")
            field, sep, message = rest.partition(": ")
            if marker and sep:
                causes.append({"reason": "FieldValueInvalid", "field": field, "message": message})
            else:
                causes.append({"reason": "FieldValueInvalid", "message": error})
        details = {"name": name, "group": info.group, "kind": info.kind, "causes": causes}
    return _Fail(422, "Invalid", "\n".join(errors), details)


def _with_warnings(resp: web.Response, warnings: list[str]) -> web.Response:
    for text in warnings:
        # Header values are one line of ASCII; quote the text the way Kubernetes does.
        quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
        quoted = quoted.encode("ascii", "backslashreplace").decode("ascii")
        resp.headers.add("Warning", f'299 - "{quoted}"')
    return resp


def _selector(request: web.Request, info: KindInfo, namespace: str | None) -> Predicate:
    """The request's namespace, labelSelector and fieldSelector as one predicate."""
    try:
        labels = label_selector(request.query.get("labelSelector", ""))
        fields = field_selector(info.kind, request.query.get("fieldSelector", ""))
    except SelectorError as exc:
        raise _Fail(400, "BadRequest", str(exc)) from None

    def matches(obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        if namespace is not None and meta.get("namespace") != namespace:
            return False
        return labels(obj) and fields(obj)

    return matches


def _name_mismatch(given: object, path_name: str) -> str:
    return f"the name of the object ({given}) does not match the name on the URL ({path_name})"


def _line(value: Obj) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


def _is_true(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


async def _first_of(*awaitables: Awaitable[Any] | None) -> None:
    """Returns when the first of them is done (the others are cancelled; None: never)."""
    tasks = {asyncio.ensure_future(a) for a in awaitables if a is not None}
    if not tasks:
        await asyncio.Event().wait()
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


async def _next_or_none(iterator: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await anext(iterator)
    except StopAsyncIteration:
        return None


# An object and the warnings for the client about it.
_Admitted = tuple[Obj, list[str]]


class _Retry(Exception):
    """The object changed between reading and writing it; patch again."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise _Fail(400, "BadRequest", f'Invalid dry run value "{value}": must be "All"')
    return bool(values)


def _field_validation(request: web.Request) -> str:
    """Strict unless the client says otherwise: an unknown field is usually a typo.

    (The Kubernetes API server defaults to Warn; kubectl sends Strict anyway.)
    """
    mode = request.query.get("fieldValidation") or "Strict"
    if mode not in FIELD_VALIDATION:
        message = f"fieldValidation: Invalid value: {mode!r}: must be one of Ignore, Strict, Warn"
        raise _Fail(400, "BadRequest", message)
    return mode


def _field_manager(request: web.Request) -> str:
    """The fieldManager parameter, else the client's name from its User-Agent (as Kubernetes)."""
    given = request.query.get("fieldManager")
    if given:
        return given
    agent = request.headers.get("User-Agent", "").split("/", 1)[0].strip()
    return agent or "unknown"


def _object_conflict(info: KindInfo, name: str) -> _Fail:
    message = (
        f'Operation cannot be fulfilled on {resource_name(info)} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again"
    )
    return _Fail(409, "Conflict", message, {"name": name, "group": info.group, "kind": info.plural})


def _patched(request: web.Request, info: KindInfo, live: Obj, body: Any) -> Obj:
    """``live`` with the request's JSON, merge or strategic merge patch applied."""
    content_type = request.content_type
    try:
        if content_type == JSON_PATCH:
            return json_patch(live, body)
        if content_type == MERGE_PATCH:
            result = merge_patch(live, body)
        elif content_type == STRATEGIC_MERGE_PATCH:
            if info.group not in STRATEGIC_GROUPS:
                # As for custom resources in Kubernetes: Istio's kinds have no patch strategy.
                raise _Fail(415, "UnsupportedMediaType", _UNSUPPORTED_PATCH)
            schema, defs = openapi.kind_schema(info)
            result = strategic_merge_patch(live, body, schema, defs)
        else:
            raise _Fail(415, "UnsupportedMediaType", _UNSUPPORTED_PATCH)
    except PatchError as exc:
        raise _Fail(422, "Invalid", str(exc)) from None
    if not isinstance(result, dict):
        raise _Fail(422, "Invalid", "the patched document is not an object")
    return result


def _scale(deployment: Obj) -> Obj:
    """The ``autoscaling/v1`` Scale of a Deployment."""
    meta = deployment["metadata"]
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    labels = ((spec.get("selector") or {}).get("matchLabels")) or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": spec.get("replicas", 1)},
        "status": {
            "replicas": status.get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        },
    }


@dataclass(frozen=True)
class _LogOptions:
    follow: bool
    tail_lines: int | None
    limit_bytes: int | None


def _log_options(request: web.Request, pod: Obj) -> _LogOptions:
    query = request.query
    name = pod["metadata"]["name"]
    containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    container = query.get("container")
    if container and container not in containers:
        message = f"container {container} is not valid for pod {name}"
        raise _Fail(400, "BadRequest", message)
    if _is_true(query.get("previous")):
        message = (
            f'previous terminated container "{container or containers[0]}" in pod "{name}" '
            "not found (tcpmesh keeps one log per pod across restarts)"
        )
        raise _Fail(400, "BadRequest", message)
    numbers: dict[str, int | None] = {}
    for key in ("tailLines", "limitBytes"):
        text = query.get(key)
        if text is None:
            numbers[key] = None
            continue
        try:
            value = int(text)
        except ValueError:
            raise _Fail(400, "BadRequest", f'invalid {key} "{text}"') from None
        if value < 0:
            raise _Fail(400, "BadRequest", f"{key}: must be greater than or equal to 0")
        numbers[key] = value
    return _LogOptions(_is_true(query.get("follow")), numbers["tailLines"], numbers["limitBytes"])


def _tail(body: bytes, lines: int | None, limit: int | None) -> bytes:
    """The last ``lines`` lines of ``body`` (a partial last line counts), then ``limit`` bytes."""
    if lines is not None:
        parts = body.splitlines(keepends=True)
        body = b"".join(parts[-lines:]) if lines else b""
    if limit is not None:
        body = body[:limit]
    return body


def _aggregated(document: Obj, version: str) -> web.Response:
    media = f"application/json;g={discovery.AGGREGATED_GROUP};v={version};as=APIGroupDiscoveryList"
    return web.Response(text=json.dumps(document), headers={"Content-Type": media})


def _obj_key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


async def _with_idle_ticks(events: AsyncIterator[Any], every: float | None) -> AsyncIterator[Any]:
    """The events, and None whenever ``every`` seconds pass without one (never if None).

    The pending ``anext`` is never cancelled by a tick: cancelling it would end the
    store's watch generator.
    """
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(_next_or_none(events))
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                yield None
                continue
            event = pending.result()
            pending = None
            if event is None:
                return
            yield event
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.wait({pending})


class _WatchEncoder:
    """Turns store events into the watch lines of one Kubernetes watch request.

    Keeps what a selector-filtered watch needs: which objects the client currently sees
    (an object that stops matching is DELETED for the client, one that starts matching
    is ADDED, as the Kubernetes API server does), the last revision sent (for
    bookmarks) and whether the Table's column definitions went out yet.
    """

    def __init__(
        self,
        info: KindInfo,
        request: web.Request,
        table_api: str | None,
        since: int,
        visible: set[tuple[str, str]] | None,
    ) -> None:
        self._info = info
        self._version = request.match_info["version"]
        self._table_api = table_api
        self._include = request.query.get("includeObject", "Metadata")
        self._columns_sent = False
        # Objects the client sees now; None when that is unknown (a replay).
        self._visible = visible
        self._seen: set[tuple[str, str]] = set()
        self.last_revision = since
        self.bookmark_every = (
            BOOKMARK_SECONDS if _is_true(request.query.get("allowWatchBookmarks")) else None
        )
        timeout = request.query.get("timeoutSeconds", "")
        self.deadline: float | None = None
        if timeout:
            try:
                seconds = float(timeout)
            except ValueError:
                raise _Fail(400, "BadRequest", f'invalid timeoutSeconds "{timeout}"') from None
            self.deadline = asyncio.get_running_loop().time() + max(0.0, seconds)

    def line(self, type_: str, obj: Obj) -> bytes:
        if self._table_api is None:
            return _line({"type": type_, "object": obj})
        body = tables.table(
            self._info,
            [obj],
            table_api=self._table_api,
            resource_version=str((obj.get("metadata") or {}).get("resourceVersion", "")),
            include_object=self._include,
            with_columns=not self._columns_sent,
        )
        self._columns_sent = True
        return _line({"type": type_, "object": body})

    def event(self, type_: str, obj: Obj, revision: int, matches: Predicate) -> bytes | None:
        self.last_revision = revision
        key = _obj_key(obj)
        if self._visible is None:
            # Replaying from a resourceVersion: what the client saw then is unknown, so
            # matching objects keep the store's event types; one that stops matching
            # after this watch showed it is DELETED.
            if matches(obj):
                self._seen.add(key)
                return self.line(type_, obj)
            if key in self._seen and type_ != "DELETED":
                self._seen.discard(key)
                return self.line("DELETED", obj)
            return None
        was_visible = key in self._visible
        if type_ == "DELETED" or not matches(obj):
            if not was_visible:
                return None
            self._visible.discard(key)
            return self.line("DELETED", obj)
        self._visible.add(key)
        return self.line("MODIFIED" if was_visible else "ADDED", obj)

    def bookmark(self) -> bytes:
        obj = {
            "kind": self._info.kind,
            "apiVersion": self._info.api_version(self._version),
            "metadata": {"resourceVersion": str(self.last_revision)},
        }
        return _line({"type": "BOOKMARK", "object": obj})


class _Api:
    def __init__(
        self,
        store: StoreBackend,
        token: str,
        admit: Admit,
        snapshots: SnapshotSource,
        status: Callable[[], Obj],
        pod_log: Callable[[str, str], Path | None],
        peers: PeerAuthority | None = None,
        currency: StoreCurrency | None = None,
    ) -> None:
        self._peers = peers
        self._currency = currency
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
        if not self._public(request) and not self._authorized(request):
            refused = await self._peer_refused(request)
            if refused is not None:
                return refused
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

    @staticmethod
    def _public(request: web.Request) -> bool:
        if request.path in PUBLIC_PATHS or request.path in (CA_PATH, JOIN_PATH):
            return True  # the join authenticates its own requests (a token or a certificate)
        prefixes = request.config_dict.get(PUBLIC_PREFIXES, [])
        return any(request.path.startswith(p) for p in prefixes)

    async def _peer_refused(self, request: web.Request) -> web.Response | None:
        """None when a remote peer's certificate allows the request; the refusal otherwise.

        The check reads the peer's token from the store, off the loop: on a replica cut
        off from etcd it could take seconds, and the loop serves every other stream."""
        peers = self._peers
        peer = peers.peer(request) if peers is not None else None
        if peers is None or peer is None:
            return _Fail(401, "Unauthorized", "Unauthorized").response()
        try:
            await asyncio.to_thread(peers.check, request.method, request.path, peer)
        except PeerRefused as refused:
            return refused.response()
        except StoreError as exc:
            return _store_error(exc).response()
        return None

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
        in_namespace = "namespace" in info
        # A namespaced kind's list across namespaces is the one path without a namespace.
        across = request.method == "GET" and "name" not in info
        if in_namespace != kind.namespaced and not (kind.namespaced and across):
            raise _Fail(404, "NotFound", "the server could not find the requested resource")
        return kind

    @staticmethod
    def _namespace(request: web.Request) -> str:
        """The path's namespace; the cluster scope on a cluster-scoped kind's path."""
        return request.match_info.get("namespace", CLUSTER_SCOPE)

    @staticmethod
    async def _body(request: web.Request, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
        """The JSON (or, as Kubernetes allows, YAML) a body holds, within the input limits of
        :mod:`tcpmesh.api`: checked before it is parsed, so no body can exhaust the server.

        The one place request bodies are read: objects, patches (a JSON patch is a list) and
        the YAML of server-side apply.
        """
        if (request.content_length or 0) > max_bytes:  # refused before a byte is read
            problem = size_problem(request.content_length or 0, max_bytes, "the request body")
            raise _Fail(413, "RequestEntityTooLarge", str(problem))
        yaml_body = request.content_type in ("application/yaml", "application/x-yaml", APPLY_PATCH)
        try:
            raw = await request.read()
            load = load_yaml_body if yaml_body else load_json_body
            return load(raw, max_bytes=max_bytes)
        except web.HTTPRequestEntityTooLarge:
            problem = size_problem(MAX_INPUT_BYTES + 1, max_bytes, "the request body")
            raise _Fail(413, "RequestEntityTooLarge", str(problem)) from None
        except LimitExceeded as exc:
            reason = "RequestEntityTooLarge" if exc.too_large else "BadRequest"
            raise _Fail(413 if exc.too_large else 400, reason, str(exc)) from None
        except ValueError as exc:
            message = str(exc) if yaml_body else "the request body is not valid JSON"
            raise _Fail(400, "BadRequest", message) from None

    async def _json_object(self, request: web.Request, max_bytes: int = MAX_DOCUMENT_BYTES) -> Obj:
        body = await self._body(request, max_bytes)
        if not isinstance(body, dict):
            raise _Fail(400, "BadRequest", "the request body must be a JSON object")
        return body

    async def _object(self, request: web.Request, info: KindInfo, name: str | None) -> Obj:
        """The body as an object of the path's kind, namespace and name."""
        return self._placed(request, info, name, await self._json_object(request))

    @staticmethod
    def _placed(request: web.Request, info: KindInfo, name: str | None, obj: Obj) -> Obj:
        """``obj`` checked (and completed) against the path's kind, namespace and name."""
        version = request.match_info["version"]
        kind = obj.setdefault("kind", info.kind)
        api_version = obj.setdefault("apiVersion", info.api_version(version))
        if kind != info.kind or not info.accepts_api_version(api_version):
            message = f"{api_version}/{kind} does not belong at {resource_name(info)}"
            raise _Fail(400, "BadRequest", message)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _Fail(400, "BadRequest", "metadata must be a JSON object")
        if not info.namespaced:
            # Kubernetes clears the namespace of a cluster-scoped object (BeforeCreate).
            meta.pop("namespace", None)
            obj = _cluster_defaults(info, obj)
            meta = obj["metadata"]
            if name is not None and meta.setdefault("name", name) != name:
                raise _Fail(400, "BadRequest", _name_mismatch(meta["name"], name))
            return obj
        namespace = request.match_info["namespace"]
        if meta.setdefault("namespace", namespace) != namespace:
            message = (
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
            raise _Fail(400, "BadRequest", message)
        if name is not None and meta.setdefault("name", name) != name:
            raise _Fail(400, "BadRequest", _name_mismatch(meta["name"], name))
        return obj

    def _admitted(self, objects: list[Obj]) -> list[str]:
        """Runs admission; raises 422 with its errors, else returns its warnings."""
        errors, warnings = self._admit(objects)
        if errors:
            raise _invalid(errors)
        return warnings

    async def _stream(
        self,
        request: web.Request,
        lines: AsyncIterator[bytes],
        deadline: float | None = None,
        content_type: str = "application/x-ndjson",
        until: Callable[[], Awaitable[Any]] | None = None,
    ) -> web.StreamResponse:
        """Sends lines until they end, the client goes away, ``deadline``, what ``until()``
        returns is done or the server stops. ``until`` is called once the response is
        prepared (a coroutine made earlier would go unawaited when preparing fails)."""
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        stopping = asyncio.ensure_future(
            _first_of(self._stopping.wait(), until() if until is not None else None)
        )
        pending: asyncio.Future[bytes | None] | None = None
        try:
            while request.transport is not None and not request.transport.is_closing():
                if deadline is not None and loop.time() >= deadline:
                    break
                if pending is None:
                    pending = asyncio.ensure_future(_next_or_none(lines))
                waiting: set[asyncio.Future[Any]] = {pending, stopping}
                poll = STREAM_POLL_SECONDS
                if deadline is not None:
                    poll = max(0.0, min(poll, deadline - loop.time()))
                done, _ = await asyncio.wait(
                    waiting, timeout=poll, return_when=asyncio.FIRST_COMPLETED
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

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready unless this replica cannot reach its shared store (kube-apiserver's
        /readyz fails its etcd check the same way), so a balancer in front skips it."""
        if self._currency is not None and not self._currency.store_current:
            return web.Response(status=503, text="[-]store failed: unreachable\n")
        return web.Response(text="ok")

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response(discovery.version_info(__version__))

    async def discover_core(self, request: web.Request) -> web.Response:
        aggregated = discovery.aggregated_media_type(request.headers.get("Accept", ""))
        if aggregated is not None:
            return _aggregated(discovery.aggregated(True, aggregated), aggregated)
        return web.json_response(discovery.api_versions(request.host))

    async def discover_groups(self, request: web.Request) -> web.Response:
        aggregated = discovery.aggregated_media_type(request.headers.get("Accept", ""))
        if aggregated is not None:
            return _aggregated(discovery.aggregated(False, aggregated), aggregated)
        return web.json_response(discovery.api_group_list())

    async def discover_group(self, request: web.Request) -> web.Response:
        found = discovery.api_group(request.match_info["group"])
        if found is None:
            raise _Fail(404, "NotFound", "the server could not find the requested resource")
        return web.json_response(found)

    async def discover_resources(self, request: web.Request) -> web.Response:
        info = request.match_info
        found = discovery.api_resource_list(info.get("group", ""), info["version"])
        if found is None:
            raise _Fail(404, "NotFound", "the server could not find the requested resource")
        return web.json_response(found)

    async def openapi_v2(self, request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "")
        if "protobuf" in accept and "json" not in accept:
            # Older kubectl asks for gnostic's protobuf encoding only.
            from tcpmesh.apiserver import openapi_pb

            body = openapi_pb.encode(openapi.openapi_v2())
            return web.Response(body=body, headers={"Content-Type": openapi_pb.MEDIA_TYPE})
        return web.json_response(openapi.openapi_v2())

    async def openapi_v3_index(self, request: web.Request) -> web.Response:
        return web.json_response(openapi.openapi_v3_index())

    async def openapi_v3(self, request: web.Request) -> web.Response:
        document = openapi.openapi_v3(request.match_info["gv"])
        if document is None:
            raise _Fail(404, "NotFound", "the server could not find the requested resource")
        return web.json_response(document)

    async def list(self, request: web.Request) -> web.StreamResponse:
        info = self._kind(request)
        namespace = request.match_info.get("namespace")
        matches = _selector(request, info, namespace)
        table_api = tables.table_version(request.headers.get("Accept", ""))
        if _is_true(request.query.get("watch")):
            return await self._watch(request, info, namespace, matches, table_api)
        items, revision = self._store.list_with_revision(info.key, namespace)
        items = [o for o in items if matches(o)]
        if table_api is not None:
            return web.json_response(
                tables.table(
                    info,
                    items,
                    table_api=table_api,
                    resource_version=str(revision),
                    include_object=request.query.get("includeObject", "Metadata"),
                )
            )
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
        matches: Predicate,
        table_api: str | None,
    ) -> web.StreamResponse:
        text = request.query.get("resourceVersion", "")
        try:
            since = int(text) if text else 0
        except ValueError:
            raise _Fail(400, "BadRequest", f'invalid resourceVersion "{text}"') from None
        initial: list[Obj] = []
        if since == 0:
            # As in Kubernetes: no (or "0") resourceVersion starts with the current objects.
            current, since = self._store.list_with_revision(info.key, namespace)
            initial = [o for o in current if matches(o)]
        visible = {_obj_key(o) for o in initial} if text in ("", "0") else None
        watch = _WatchEncoder(info, request, table_api, since, visible)

        async def lines() -> AsyncIterator[bytes]:
            for obj in initial:
                yield watch.line("ADDED", obj)
            events = self._store.watch([info.key], since)
            try:
                async for event in _with_idle_ticks(events, watch.bookmark_every):
                    if event is None:
                        yield watch.bookmark()
                        continue
                    line = watch.event(event.type, event.object, event.revision, matches)
                    if line is not None:
                        yield line
            except Expired as exc:
                yield _line({"type": "ERROR", "object": _store_error(exc).status()})
            finally:
                await events.aclose()

        return await self._stream(request, lines(), watch.deadline, "application/json")

    async def get(self, request: web.Request) -> web.Response:
        info = self._kind(request)
        name = request.match_info["name"]
        obj = self._store.get(info.key, self._namespace(request), name)
        if obj is None:
            raise _not_found(info, name)
        table_api = tables.table_version(request.headers.get("Accept", ""))
        if table_api is not None:
            resource_version = str(obj["metadata"].get("resourceVersion", ""))
            return web.json_response(
                tables.table(
                    info,
                    [obj],
                    table_api=table_api,
                    resource_version=resource_version,
                    include_object=request.query.get("includeObject", "Metadata"),
                )
            )
        return web.json_response(obj)

    def _admit_one(self, request: web.Request, info: KindInfo, obj: Obj) -> _Admitted:
        """fieldValidation, then admission (Istio's and Kubernetes' checks): obj, warnings."""
        mode = _field_validation(request)
        unknown = openapi.unknown_fields(obj, info)
        warnings: list[str] = []
        if unknown and mode == "Strict":
            fields = ", ".join(f'unknown field "{openapi.render_path(p)}"' for p in unknown)
            version = request.match_info["version"]
            message = (
                f'{info.kind} in version "{version}" cannot be handled as a {info.kind}: '
                f"strict decoding error: {fields}"
            )
            raise _Fail(400, "BadRequest", message)
        if unknown:
            if mode == "Warn":
                warnings += [f'unknown field "{openapi.render_path(p)}"' for p in unknown]
            obj = openapi.without_fields(obj, unknown)
        errors, admitted = self._admit([obj])
        if errors:
            raise _invalid(errors, info, str(obj["metadata"].get("name", "")))
        return obj, warnings + admitted

    def _owned(self, request: web.Request, info: KindInfo, old: Obj | None, new: Obj) -> Obj:
        schema, defs = openapi.kind_schema(info)
        api_version = info.api_version(request.match_info["version"])
        return managed.record_update(
            old, new, _field_manager(request), schema, defs, api_version, _now()
        )

    def _write(self, request: web.Request, info: KindInfo, obj: Obj, live: Obj | None) -> Obj:
        """Create (``live`` None) or replace ``live`` by ``obj``, or only pretend (dryRun)."""
        name = str(obj["metadata"].get("name", ""))
        expected = obj["metadata"].get("resourceVersion") or None
        namespace = obj["metadata"].get("namespace", CLUSTER_SCOPE)
        if live is not None:
            errors = update_errors(live, obj)
            if errors:
                raise _invalid(errors, info, name)
        self._prepare_namespaces([obj], dry_run=_dry_run(request))
        with _object_errors(info, name):
            if _dry_run(request):
                if live is None and self._store.get(info.key, namespace, name):
                    raise AlreadyExists(name)
                return self._store.apply([obj], dry_run=True)[0].object
            if live is None:
                return self._store.create(obj)
            return self._store.replace(obj, expected_resource_version=expected)

    async def create(self, request: web.Request) -> web.Response:
        info = self._kind(request)
        obj = await self._object(request, info, None)
        obj, warnings = self._admit_one(request, info, obj)
        obj = self._owned(request, info, None, obj)
        created = self._write(request, info, obj, None)
        return _with_warnings(web.json_response(created, status=201), warnings)

    async def replace(self, request: web.Request) -> web.Response:
        info = self._kind(request)
        name = request.match_info["name"]
        obj = await self._object(request, info, name)
        live = self._live(info, request)
        obj, warnings = self._admit_one(request, info, obj)
        obj = self._owned(request, info, live, obj)
        replaced = self._write(request, info, obj, live)
        return _with_warnings(web.json_response(replaced), warnings)

    def _live(self, info: KindInfo, request: web.Request) -> Obj:
        name = request.match_info["name"]
        live = self._store.get(info.key, self._namespace(request), name)
        if live is None:
            raise _not_found(info, name)
        return live

    async def patch(self, request: web.Request) -> web.Response:
        info = self._kind(request)
        body = await self._body(request)
        for _ in range(PATCH_RETRIES):
            try:
                return self._patch_once(request, info, body)
            except _Retry:
                continue
        raise _object_conflict(info, request.match_info["name"])

    def _patch_once(self, request: web.Request, info: KindInfo, body: Any) -> web.Response:
        """One attempt: read, patch, check, write; _Retry when the object moved meanwhile."""
        name, namespace = request.match_info["name"], self._namespace(request)
        live = self._store.get(info.key, namespace, name)
        if request.content_type == APPLY_PATCH:
            new = self._applied(request, info, live, body)
        else:
            if live is None:
                raise _not_found(info, name)
            new = self._owned(request, info, live, _patched(request, info, live, body))
        new = self._placed(request, info, name, new)
        pinned = new["metadata"].get("resourceVersion")
        if live is not None and not pinned:
            new["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        new, warnings = self._admit_one(request, info, new)
        try:
            result = self._write(request, info, new, live)
        except _Fail as fail:
            # Another write came in between (or created the object): patch that one.
            if fail.reason in ("Conflict", "AlreadyExists") and not pinned:
                raise _Retry() from None
            raise
        status = 201 if live is None else 200
        return _with_warnings(web.json_response(result, status=status), warnings)

    def _applied(self, request: web.Request, info: KindInfo, live: Obj | None, config: Any) -> Obj:
        if not isinstance(config, dict):
            raise _Fail(400, "BadRequest", "the applied configuration must be an object")
        manager = request.query.get("fieldManager")
        if not manager:
            message = (
                "PatchOptions.meta.k8s.io is invalid: fieldManager: Required value: "
                "is required for apply patch"
            )
            raise _Fail(422, "Invalid", message)
        config = self._placed(request, info, request.match_info["name"], config)
        schema, defs = openapi.kind_schema(info)
        try:
            return managed.server_side_apply(
                live,
                config,
                manager,
                force=_is_true(request.query.get("force")),
                schema=schema,
                defs=defs,
                api_version=info.api_version(request.match_info["version"]),
                now=_now(),
            )
        except managed.ApplyConflicts as exc:
            causes = [
                {
                    "reason": "FieldManagerConflict",
                    "message": f'conflict with "{c.manager}"',
                    "field": c.field(),
                }
                for c in exc.conflicts
            ]
            raise _Fail(409, "Conflict", exc.message(), {"causes": causes}) from None

    async def replace_status(self, request: web.Request) -> web.Response:
        info = self._kind(request)
        name = request.match_info["name"]
        obj = await self._object(request, info, name)
        return web.json_response(self._write_status(request, info, obj))

    def _write_status(self, request: web.Request, info: KindInfo, obj: Obj) -> Obj:
        status = obj.get("status") or {}
        if not isinstance(status, dict):
            raise _Fail(400, "BadRequest", "status must be a JSON object")
        name = obj["metadata"]["name"]
        expected = obj["metadata"].get("resourceVersion") or None
        with _object_errors(info, name):
            if _dry_run(request):
                live = self._live(info, request)
                return {**live, "status": status}
            return self._store.update_status(
                info.key,
                obj["metadata"].get("namespace", CLUSTER_SCOPE),
                name,
                status,
                expected_resource_version=expected,
            )

    async def patch_status(self, request: web.Request) -> web.Response:
        info = self._kind(request)
        body = await self._body(request)
        live = self._live(info, request)
        new = _patched(request, info, live, body)
        new = self._placed(request, info, request.match_info["name"], new)
        if not new["metadata"].get("resourceVersion"):
            new["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        return web.json_response(self._write_status(request, info, new))

    # ------------------------------------------------------------------ scale

    def _scalable(self, request: web.Request) -> tuple[KindInfo, Obj]:
        info = self._kind(request)
        if info.kind != "Deployment":
            raise _Fail(404, "NotFound", "the server could not find the requested resource")
        return info, self._live(info, request)

    async def get_scale(self, request: web.Request) -> web.Response:
        _, live = self._scalable(request)
        return web.json_response(_scale(live))

    async def replace_scale(self, request: web.Request) -> web.Response:
        info, live = self._scalable(request)
        return web.json_response(
            self._rescale(request, info, live, await self._json_object(request))
        )

    async def patch_scale(self, request: web.Request) -> web.Response:
        info, live = self._scalable(request)
        body = await self._body(request)
        current = _scale(live)
        if request.content_type == JSON_PATCH:
            wanted = json_patch(current, body)
        else:
            wanted = merge_patch(current, body)
        return web.json_response(self._rescale(request, info, live, wanted))

    def _rescale(self, request: web.Request, info: KindInfo, live: Obj, scale: Any) -> Obj:
        replicas = (scale.get("spec") or {}).get("replicas") if isinstance(scale, dict) else None
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            message = (
                f'Scale.autoscaling "{live["metadata"]["name"]}" is invalid: spec.replicas: '
                "Invalid value: must be greater than or equal to 0"
            )
            raise _Fail(422, "Invalid", message)
        new = copy.deepcopy(live)
        new.setdefault("spec", {})["replicas"] = replicas
        expected = (scale.get("metadata") or {}).get("resourceVersion")
        new["metadata"]["resourceVersion"] = expected or live["metadata"]["resourceVersion"]
        new, _ = self._admit_one(request, info, new)
        new = self._owned(request, info, live, new)
        return _scale(self._write(request, info, new, live))

    # ------------------------------------------------------------------ delete

    async def delete(self, request: web.Request) -> web.Response:
        info = self._kind(request)
        name = request.match_info["name"]
        if _dry_run(request):
            return web.json_response(self._live(info, request))
        with _object_errors(info, name):
            deleted = self._delete(info, self._namespace(request), name)
        return web.json_response(deleted)

    def _delete(self, info: KindInfo, namespace: str, name: str) -> Obj:
        """Delete one object; a Namespace only turns Terminating (NamespaceController ends it)."""
        if info.key != namespaces.NAMESPACE_KEY:
            return self._store.delete(info.key, namespace, name)
        try:
            namespaces.check_deletable(name)
        except namespaces.NamespaceRefused as exc:
            raise _forbidden(exc, info, name) from None
        live = self._store.get(info.key, CLUSTER_SCOPE, name)
        if live is None:
            raise NotFound(name)
        if namespaces.is_terminating(live):
            return live
        marked, status = namespaces.terminating(live)
        self._store.replace(marked, expected_resource_version=live["metadata"]["resourceVersion"])
        return self._store.update_status(info.key, CLUSTER_SCOPE, name, status)

    def _prepare_namespaces(self, objects: builtins.list[Obj], *, dry_run: bool) -> None:
        """Before a write: refuse new objects in a Terminating namespace, keep a Terminating
        Namespace's deletionTimestamp, and create the Namespaces written into that do not
        exist (tcpmesh's rule; see apiserver.namespaces)."""
        for obj in objects:
            if kinds.for_object(obj).key == namespaces.NAMESPACE_KEY:
                live = self._store.get(namespaces.NAMESPACE_KEY, CLUSTER_SCOPE, _name(obj))
                stamp = ((live or {}).get("metadata") or {}).get("deletionTimestamp")
                if stamp:
                    obj["metadata"]["deletionTimestamp"] = stamp
        for name in namespaces.namespaces_of(objects):
            stored = self._store.get(namespaces.NAMESPACE_KEY, CLUSTER_SCOPE, name)
            if stored is None and not dry_run:
                with suppress(AlreadyExists):
                    self._store.create(namespaces.namespace_object(name))
            elif namespaces.is_terminating(stored) and any(
                self._is_new(o) for o in objects if _namespace_of(o) == name
            ):
                info = kinds.by_key(namespaces.NAMESPACE_KEY)
                raise _forbidden(namespaces.refuse_new_content(name), info, name)

    def _is_new(self, obj: Obj) -> bool:
        key = kinds.for_object(obj).key
        return self._store.get(key, _namespace_of(obj), _name(obj)) is None

    async def delete_collection(self, request: web.Request) -> web.Response:
        info = self._kind(request)
        namespace = self._namespace(request)
        matches = _selector(request, info, namespace if info.namespaced else None)
        items = [o for o in self._store.list(info.key, namespace) if matches(o)]
        deleted = []
        for obj in items:
            if _dry_run(request):
                deleted.append(obj)
                continue
            with suppress(NotFound):
                deleted.append(self._delete(info, namespace, obj["metadata"]["name"]))
        return web.json_response(
            {
                "apiVersion": info.api_version(request.match_info["version"]),
                "kind": f"{info.kind}List",
                "metadata": {"resourceVersion": str(self._store.revision)},
                "items": deleted,
            }
        )

    async def pod_log(self, request: web.Request) -> web.StreamResponse:
        """``pods/log``: the whole log, its last ``tailLines``, and with ``follow`` what comes.

        One log file holds every container's output across restarts, so ``previous`` is
        refused (it would need a file per container instance).
        """
        info = kinds.by_key("Pod")
        if request.match_info["version"] not in info.versions:
            raise _Fail(404, "NotFound", "the server could not find the requested resource")
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        pod = self._store.get(info.key, namespace, name)
        if pod is None:
            raise _not_found(info, name)
        options = _log_options(request, pod)
        path = self._pod_log(namespace, name)
        # A pod that has not written anything yet has an empty log, not a missing one.
        body = b""
        if path is not None:
            with suppress(FileNotFoundError):
                body = path.read_bytes()
        body = _tail(body, options.tail_lines, options.limit_bytes)
        if not options.follow:
            return web.Response(body=body, content_type="text/plain", charset="utf-8")
        offset = len(path.read_bytes()) if path is not None and path.exists() else 0

        async def chunks() -> AsyncIterator[bytes]:
            if body:
                yield body
            position = offset
            while self._store.get(info.key, namespace, name) is not None:
                current = self._pod_log(namespace, name)
                data = b""
                if current is not None:
                    with suppress(FileNotFoundError):
                        size = current.stat().st_size
                        if size < position:
                            position = 0  # rotated (copy-then-truncate): start over
                        with open(current, "rb") as f:
                            f.seek(position)
                            data = f.read()
                if data:
                    position += len(data)
                    yield data
                else:
                    await asyncio.sleep(LOG_POLL_SECONDS)

        return await self._stream(request, chunks(), None, "text/plain; charset=utf-8")

    # ------------------------------------------------------------------ tcpmesh API

    async def apply(self, request: web.Request) -> web.Response:
        body = await self._json_object(request, MAX_INPUT_BYTES)
        objects, dry_run = body.get("objects"), body.get("dryRun", False)
        if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
            raise _Fail(400, "BadRequest", "objects must be a list of JSON objects")
        if not isinstance(dry_run, bool):
            raise _Fail(400, "BadRequest", "dryRun must be true or false")
        errors = [e for e in map(_not_appliable, objects) if e]
        if errors:
            raise _invalid(errors)
        objects = [_scoped(o) for o in objects]
        warnings = self._admitted(objects)
        errors = [e for o in objects for e in self._update_errors(o)]
        if errors:
            raise _invalid(errors)
        self._prepare_namespaces(objects, dry_run=dry_run)
        results = self._store.apply(objects, dry_run=dry_run)
        summary = [
            {
                "apiVersion": r.object["apiVersion"],
                "kind": r.object["kind"],
                "namespace": r.object["metadata"].get("namespace", CLUSTER_SCOPE),
                "name": r.object["metadata"]["name"],
                "action": r.action,
            }
            for r in results
        ]
        response = web.json_response({"results": summary, "warnings": warnings})
        return _with_warnings(response, warnings)

    def _update_errors(self, obj: Obj) -> builtins.list[str]:
        live = self._store.get(kinds.for_object(obj).key, _namespace_of(obj), _name(obj))
        return [] if live is None else update_errors(live, obj)

    async def delete_many(self, request: web.Request) -> web.Response:
        """Deletes each object it can; missing ones are reported, not fatal (kubectl delete -f)."""
        body = await self._json_object(request, MAX_INPUT_BYTES)
        refs = body.get("objects")
        if not isinstance(refs, list) or not all(
            isinstance(r, dict)
            and isinstance(r.get("kind"), str)
            and isinstance(r.get("name"), str)
            for r in refs
        ):
            raise _Fail(
                400,
                "BadRequest",
                'objects must be a list of {"apiVersion", "kind", "namespace", "name"}',
            )
        infos: list[KindInfo] = []
        for ref in refs:
            try:
                infos.append(kinds.for_object(ref))
            except kinds.UnknownKind:
                raise _invalid([f'unknown kind "{ref["kind"]}"']) from None
        results = []
        for ref, info in zip(refs, infos, strict=True):
            namespace = (ref.get("namespace") or "default") if info.namespaced else CLUSTER_SCOPE
            result = {
                "apiVersion": info.api_version(info.versions[0]),
                "kind": info.kind,
                "namespace": namespace,
                "name": ref["name"],
            }
            try:
                self._delete(info, namespace, ref["name"])
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
        currency = self._currency
        if currency is not None and not currency.store_current:
            raise _unreachable()
        if _is_true(request.query.get("watch")):
            snapshots = self._snapshots.watch(node)

            async def lines() -> AsyncIterator[bytes]:
                ticked = _with_idle_ticks(snapshots, SNAPSHOT_TICK_SECONDS)
                try:
                    async for snapshot in ticked:
                        if snapshot is None:
                            yield b"\n"  # a tick: the proxy tells a live stream from a dead one
                            continue
                        # The process edge: one compact JSON text per line (NDJSON).
                        yield snapshot.to_json().encode() + b"\n"
                finally:
                    # The ticks first: their pending step of the watch must end before the
                    # watch itself is closed ("aclose(): generator is already running").
                    await _aclose(ticked)
                    await _aclose(snapshots)

            # The stream ends when this copy can no longer be vouched for (the proxy then
            # asks another replica rather than waiting here for a store that is away), and
            # when a peer's certificate is revoked.
            peers = self._peers
            peer = peers.peer(request) if peers is not None else None

            def ended() -> Awaitable[None]:
                lost = currency.store_lost() if currency is not None else None
                revoked = peers.until_revoked(peer) if peers and peer else None
                return _first_of(lost, revoked)

            return await self._stream(request, lines(), until=ended)
        snapshot = self._snapshots.current(node)
        if snapshot is None:
            raise _Fail(404, "NotFound", f'no snapshot for proxy "{node}"')
        return web.Response(text=snapshot.to_json(), content_type="application/json")


def _scoped(obj: Obj) -> Obj:
    """An applied object in its scope: a namespaced one in ``default`` unless it names one;
    a cluster-scoped one without a namespace (dropped, as Kubernetes drops it)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    info = kinds.for_object(obj)
    if not info.namespaced:
        scoped = {**obj, "metadata": {k: v for k, v in meta.items() if k != "namespace"}}
        return _cluster_defaults(info, scoped)
    if not meta.get("namespace"):
        return {**obj, "metadata": {**meta, "namespace": "default"}}
    return obj


def _cluster_defaults(info: KindInfo, obj: Obj) -> Obj:
    """What the API server writes on a new cluster-scoped object: a Namespace's label and
    phase, a GatewayClass's CRD default status (a stored object keeps its own status)."""
    if info.key == namespaces.NAMESPACE_KEY:
        return namespaces.as_stored(obj)
    if info.model is gatewayapi.GatewayClass:
        return gatewayapi.with_default_status(obj)
    return obj


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _namespace_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or CLUSTER_SCOPE)


def _forbidden(exc: namespaces.NamespaceRefused, info: KindInfo, name: str) -> _Fail:
    details = {
        "name": name,
        "kind": info.plural,
        "causes": [{"reason": exc.cause, "message": exc.message, "field": "metadata.namespace"}],
    }
    return _Fail(403, "Forbidden", exc.message, details)


def _not_appliable(obj: Obj) -> str | None:
    """Why the registry refuses this object for apply, if it does."""
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    name = (obj.get("metadata") or {}).get("name", "")
    try:
        info = kinds.for_object(obj)
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
