"""The console's HTTP side: its page, a session login, and a thin layer over the API.

Everything the console reads or writes goes through the mesh's own Kubernetes API (with
the mesh's token, which only this process holds; the browser holds a session cookie):
lists and watches, ``PUT`` with the resourceVersion the user opened (409 on a
concurrent change), and ``/tcpmesh/v1/apply`` for Create from YAML, after the same
client-side parsing ``tcpmesh apply`` does, so the messages are the same. Traffic
numbers come from the proxies' :15020 metrics, read the way ``tcpmesh top`` reads them.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from tcpmesh.api import InvalidInput, kinds, load_documents_with_warnings
from tcpmesh.console.sessions import COOKIE, CSRF_HEADER, Sessions, csrf_ok, same_origin
from tcpmesh.store import object_kind_key

Obj = dict[str, Any]
Traffic = Callable[[str], Awaitable[list[Obj]]]

# What the console lists, in the order it shows them.
LISTED_KINDS = (
    "Deployment",
    "Pod",
    "Service",
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
    "Rollout",
)
SOURCE = "console"
STATIC = resources.files("tcpmesh.console") / "static"
WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")


class ApiFailure(Exception):
    def __init__(self, status: int, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.status, self.messages = status, messages


class Upstream:
    """The mesh's API, called with the mesh's token."""

    def __init__(
        self, url: Callable[[], str], token: str, ssl_context: ssl.SSLContext | None
    ) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """Known once the API listens: the console is mounted before that."""
        return self._url().rstrip("/")

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, path: str, body: Any = None) -> Obj:
        async with self.session().request(
            method, self.url + path, json=body, ssl=self._ssl
        ) as resp:
            doc: Obj = await resp.json(content_type=None)
            if resp.status >= 400:
                raise ApiFailure(resp.status, _status_messages(doc))
            return doc

    async def watch(self, path: str) -> AsyncIterator[Obj]:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self.session().get(
            self.url + path, params={"watch": "true"}, ssl=self._ssl, timeout=timeout
        ) as resp:
            if resp.status >= 400:
                raise ApiFailure(resp.status, [f"watch {path}: HTTP {resp.status}"])
            async for line in resp.content:
                if line.strip():
                    event: Obj = json.loads(line)
                    yield event


SESSIONS = web.AppKey("sessions", Sessions)
UPSTREAM = web.AppKey("upstream", Upstream)
TRAFFIC: web.AppKey[Traffic] = web.AppKey("traffic")
PREFIX = web.AppKey("prefix", str)


def _status_messages(doc: Obj) -> list[str]:
    """The messages of a Kubernetes Status; an Invalid one lists each cause."""
    causes = (doc.get("details") or {}).get("causes") or []
    messages = [str(c.get("message")) for c in causes if c.get("message")]
    return messages or [str(doc.get("message") or doc)]


# ---------------------------------------------------------------- sessions and guards


def _sid(request: web.Request) -> str | None:
    return request.cookies.get(COOKIE)


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Sessions for /api/*, CSRF and origin checks for every write (login included)."""
    path, prefix = request.path, request.app[PREFIX]
    if request.method in WRITE_METHODS and not same_origin(
        request.headers.get("Origin"), request.scheme, request.host
    ):
        return _error(403, "cross-site request refused")
    if path == prefix + "/api/login" or not path.startswith(prefix + "/api/"):
        return await handler(request)
    session = request.app[SESSIONS].get(_sid(request))
    if session is None:
        return _error(401, "not logged in: open the console with the mesh's token")
    if request.method in WRITE_METHODS and not csrf_ok(session, request.headers.get(CSRF_HEADER)):
        return _error(403, "missing or wrong CSRF token")
    return await handler(request)


def _error(status: int, *messages: str) -> web.Response:
    return web.json_response({"errors": list(messages)}, status=status)


async def login(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        token = str(body["token"])
    except (ValueError, KeyError, TypeError):
        return _error(400, 'send {"token": "..."} as JSON')
    made = request.app[SESSIONS].login(token)
    if made is None:
        return _error(401, "wrong token")
    sid, session = made
    response = web.json_response({"csrfToken": session.csrf})
    response.set_cookie(
        COOKIE,
        sid,
        path=request.app[PREFIX] + "/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def logout(request: web.Request) -> web.Response:
    request.app[SESSIONS].logout(_sid(request))
    response = web.json_response({})
    response.del_cookie(COOKIE, path=request.app[PREFIX] + "/")
    return response


async def session_info(request: web.Request) -> web.Response:
    session = request.app[SESSIONS].get(_sid(request))
    assert session is not None  # the guard let it through
    return web.json_response({"csrfToken": session.csrf, "kinds": list(LISTED_KINDS)})


# ---------------------------------------------------------------- objects


async def namespaces(request: web.Request) -> web.Response:
    found: set[str] = {"default"}
    for kind in LISTED_KINDS:
        doc = await request.app[UPSTREAM].call("GET", kinds.by_key(kind).api_path(None))
        found.update(o["metadata"].get("namespace", "default") for o in doc.get("items", []))
    return web.json_response({"namespaces": sorted(found)})


async def watch(request: web.Request) -> web.StreamResponse:
    """One Server-Sent Events stream for every listed kind of a namespace (a browser
    allows few connections per host, so the watches are multiplexed here)."""
    namespace = request.query.get("namespace", "default")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)
    upstream = request.app[UPSTREAM]

    async def follow(kind: str) -> None:
        path = kinds.by_key(kind).api_path(namespace)
        try:
            async for event in upstream.watch(path):
                doc = {"kind": kind, "type": event.get("type"), "object": event.get("object")}
                await queue.put(f"data: {json.dumps(doc)}\n\n".encode())
        except (aiohttp.ClientError, ApiFailure, ValueError) as exc:
            doc = {"kind": kind, "type": "ERROR", "message": str(exc)}
            await queue.put(f"data: {json.dumps(doc)}\n\n".encode())

    tasks = [asyncio.create_task(follow(kind)) for kind in LISTED_KINDS]
    try:
        await response.write(b": watching\n\n")
        while True:
            try:
                chunk = await asyncio.wait_for(queue.get(), 15.0)
            except TimeoutError:
                chunk = b": keep-alive\n\n"
            await response.write(chunk)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        for task in tasks:
            task.cancel()
    return response


def _info(request: web.Request) -> kinds.KindInfo:
    try:
        return kinds.by_key(request.match_info["kind"])
    except kinds.UnknownKind:
        raise web.HTTPNotFound() from None


async def get_yaml(request: web.Request) -> web.Response:
    info = _info(request)
    m = request.match_info
    try:
        obj = await request.app[UPSTREAM].call("GET", info.api_path(m["namespace"], m["name"]))
    except ApiFailure as exc:
        return _error(exc.status, *exc.messages)
    text = yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)
    return web.json_response({"yaml": text, "resourceVersion": obj["metadata"]["resourceVersion"]})


def _parse(text: str, namespace: str) -> list[Obj]:
    """Documents as ``tcpmesh apply`` reads them (InvalidInput with its messages)."""
    docs, _ = load_documents_with_warnings(text, SOURCE, namespace)
    return docs


async def put_yaml(request: web.Request) -> web.Response:
    """Replace one object with edited YAML, at the resourceVersion it was opened at."""
    info = _info(request)
    m = request.match_info
    body = await request.json()
    try:
        docs = _parse(str(body.get("yaml", "")), m["namespace"])
    except InvalidInput as exc:
        return _error(422, *exc.messages)
    if len(docs) != 1 or object_kind_key(docs[0]) != info.key:
        return _error(422, f"{SOURCE}: the YAML must be one {info.kind}")
    obj = docs[0]
    meta = obj.setdefault("metadata", {})
    if meta.get("name") != m["name"] or meta.get("namespace", m["namespace"]) != m["namespace"]:
        return _error(422, f"{SOURCE}: metadata.name and namespace cannot change here")
    meta["resourceVersion"] = str(body.get("resourceVersion") or "")
    try:
        saved = await request.app[UPSTREAM].call(
            "PUT", info.api_path(m["namespace"], m["name"]), obj
        )
    except ApiFailure as exc:
        return _error(exc.status, *exc.messages)
    return web.json_response({"resourceVersion": saved["metadata"]["resourceVersion"]})


async def apply(request: web.Request) -> web.Response:
    """Create from YAML: every document is checked before any is written."""
    body = await request.json()
    namespace = str(body.get("namespace") or "default")
    try:
        docs = _parse(str(body.get("yaml", "")), namespace)
    except InvalidInput as exc:
        return _error(422, *exc.messages)
    if not docs:
        return _error(422, "error: no objects passed to apply")
    try:
        result = await request.app[UPSTREAM].call("POST", "/tcpmesh/v1/apply", {"objects": docs})
    except ApiFailure as exc:
        return _error(exc.status, *exc.messages)
    return web.json_response(result)


async def split(request: web.Request) -> web.Response:
    """Set the weights of one tcp route of a VirtualService (one PUT, validated as any)."""
    m = request.match_info
    body = await request.json()
    info = kinds.by_key("VirtualService")
    path = info.api_path(m["namespace"], m["name"])
    upstream = request.app[UPSTREAM]
    try:
        index, weights = int(body["route"]), [int(w) for w in body["weights"]]
        obj = await upstream.call("GET", path)
        route = obj["spec"]["tcp"][index]["route"]
    except (KeyError, IndexError, TypeError, ValueError):
        return _error(422, "route or weights do not fit this VirtualService")
    except ApiFailure as exc:
        return _error(exc.status, *exc.messages)
    if len(weights) != len(route):
        return _error(422, f"route has {len(route)} destinations, got {len(weights)} weights")
    if body.get("resourceVersion"):
        obj["metadata"]["resourceVersion"] = str(body["resourceVersion"])
    for dest, weight in zip(route, weights, strict=True):
        dest["weight"] = weight
    try:
        saved = await upstream.call("PUT", path, obj)
    except ApiFailure as exc:
        return _error(exc.status, *exc.messages)
    return web.json_response({"resourceVersion": saved["metadata"]["resourceVersion"]})


async def traffic(request: web.Request) -> web.Response:
    namespace = request.query.get("namespace", "default")
    try:
        routes = await request.app[TRAFFIC](namespace)
    except (OSError, ValueError, ApiFailure) as exc:
        return _error(502, f"cannot read the proxies' metrics: {exc}")
    return web.json_response({"routes": routes})


# ---------------------------------------------------------------- the page


async def index(_: web.Request) -> web.Response:
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    return web.Response(
        text=page,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
            "X-Frame-Options": "DENY",
        },
    )


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    types = {".js": "text/javascript", ".css": "text/css"}
    suffix = name[name.rfind(".") :] if "." in name else ""
    entry = STATIC / name
    if "/" in name or suffix not in types or not entry.is_file():
        raise web.HTTPNotFound()
    return web.Response(text=entry.read_text(encoding="utf-8"), content_type=types[suffix])


def create_console(
    prefix: str,
    api_url: Callable[[], str],
    token: str,
    traffic_source: Traffic,
    ssl_context: ssl.SSLContext | None = None,
) -> web.Application:
    """The console as an aiohttp sub-application, to be mounted at ``prefix``."""
    app = web.Application(middlewares=[guard])
    app[PREFIX] = prefix.rstrip("/")
    app[SESSIONS] = Sessions(token)
    upstream = Upstream(api_url, token, ssl_context)
    app[UPSTREAM] = upstream
    app[TRAFFIC] = traffic_source

    async def close(_: web.Application) -> None:
        await upstream.close()

    app.on_cleanup.append(close)
    r = app.router
    r.add_get("/", index)
    r.add_get("/static/{name}", static)
    r.add_post("/api/login", login)
    r.add_post("/api/logout", logout)
    r.add_get("/api/session", session_info)
    r.add_get("/api/namespaces", namespaces)
    r.add_get("/api/watch", watch)
    r.add_get("/api/traffic", traffic)
    r.add_post("/api/apply", apply)
    r.add_get("/api/objects/{kind}/{namespace}/{name}", get_yaml)
    r.add_put("/api/objects/{kind}/{namespace}/{name}", put_yaml)
    r.add_put("/api/split/{namespace}/{name}", split)
    return app
