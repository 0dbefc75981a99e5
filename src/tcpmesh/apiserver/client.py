"""A small synchronous client of the API server, for the CLI (stdlib only)."""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tcpmesh.api import kinds
from tcpmesh.api.kinds import KindInfo
from tcpmesh.apiserver.credentials import client_ssl_context, read_credentials

Obj = dict[str, Any]

DEFAULT_TIMEOUT = 10.0


def _kind_info(kind: str) -> KindInfo:
    """A kind key (``Gateway.gateway.networking.k8s.io``) exactly, else what a user types."""
    try:
        return kinds.by_key(kind)
    except kinds.UnknownKind:
        return kinds.resolve(kind)


class ApiError(Exception):
    """The server answered with an error (a Kubernetes Status when it is ours)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class Unreachable(Exception):
    """No API server to talk to: nothing listens, or no credentials."""


class OutcomeUnknown(Exception):
    """A write was sent whole, then the connection was lost before the answer came.

    The server may have committed it or not; like Kubernetes clients, the CLI must say
    so rather than report a failure (a retry of a create would then fail with "already
    exists", and a user told "error" would not look).
    """


class ApiClient:
    """Talks to the API at ``url``; an https URL is verified against ``ca_file`` only."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ca_file: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._token = token
        handlers: list[urllib.request.BaseHandler] = [
            # The API is local; an http_proxy in the environment must not get in the way.
            urllib.request.ProxyHandler({})
        ]
        if self.url.startswith("https:"):
            context: ssl.SSLContext = client_ssl_context(ca_file)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def from_state_dir(cls, state_dir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> ApiClient:
        creds = read_credentials(state_dir)
        if creds is None:
            raise Unreachable(
                f"the mesh is not running (no API credentials in {state_dir}); "
                "start it with `tcpmesh up`"
            )
        ca_file = Path(creds.ca_file) if creds.ca_file else None
        return cls(creds.url, creds.token, timeout=timeout, ca_file=ca_file)

    # ------------------------------------------------------------------ resources

    def healthz(self) -> bool:
        with self._open("GET", "/healthz", timeout=self.timeout) as resp:
            return bytes(resp.read()).strip() == b"ok"

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> list[Obj]:
        info = _kind_info(kind)
        query = {"labelSelector": _selector(label_selector)} if label_selector else {}
        items: list[Obj] = self._json("GET", _path(info, namespace, query=query))["items"]
        return items

    def get(self, kind: str, namespace: str, name: str) -> Obj:
        return self._json("GET", _path(_kind_info(kind), namespace, name))

    def create(self, obj: Obj) -> Obj:
        info = kinds.for_object(obj)
        return self._json("POST", _path(info, _namespace(obj)), obj)

    def replace(self, obj: Obj) -> Obj:
        """PUT; fails with a 409 ApiError if ``metadata.resourceVersion`` is stale."""
        info = kinds.for_object(obj)
        return self._json("PUT", _path(info, _namespace(obj), obj["metadata"]["name"]), obj)

    def update_status(self, obj: Obj) -> Obj:
        info = kinds.for_object(obj)
        path = _path(info, _namespace(obj), obj["metadata"]["name"]) + "/status"
        return self._json("PUT", path, obj)

    def delete(self, kind: str, namespace: str, name: str) -> Obj:
        return self._json("DELETE", _path(_kind_info(kind), namespace, name))

    def apply(self, objects: Sequence[Obj], dry_run: bool = False) -> Obj:
        """``{"results": [{"kind","namespace","name","action"}], "warnings": [...]}``."""
        return self._json("POST", "/tcpmesh/v1/apply", {"objects": objects, "dryRun": dry_run})

    def delete_many(self, objects: Sequence[Obj]) -> Obj:
        """Accepts whole objects or ``{"kind","namespace","name"}`` references.

        Returns ``{"results": [{"kind","namespace","name","action"}]}`` where action is
        "deleted" or "not found" (then with the server's "message").
        """
        refs = []
        for obj in objects:
            meta = obj.get("metadata", obj)
            ref = {"kind": obj["kind"], "namespace": meta.get("namespace"), "name": meta["name"]}
            if obj.get("apiVersion"):
                ref["apiVersion"] = obj["apiVersion"]
            refs.append(ref)
        return self._json("POST", "/tcpmesh/v1/delete", {"objects": refs})

    def watch(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Generator[Obj, None, None]:
        """``{"type", "object"}`` events; without a resource_version, ADDED for each object first.

        ``timeout`` bounds the wait for each event (None: wait forever).
        """
        query = {"watch": "true"}
        if resource_version is not None:
            query["resourceVersion"] = resource_version
        if label_selector:
            query["labelSelector"] = _selector(label_selector)
        path = _path(_kind_info(kind), namespace, query=query)
        return self._lines(path, timeout)

    # ------------------------------------------------------------------ tcpmesh

    def status(self) -> Obj:
        return self._json("GET", "/tcpmesh/v1/status")

    def pod_log(self, namespace: str, name: str) -> str:
        path = _path(kinds.by_key("Pod"), namespace, name) + "/log"
        with self._open("GET", path, timeout=self.timeout) as resp:
            return bytes(resp.read()).decode("utf-8", "replace")

    def snapshot(self, node: str) -> Obj | None:
        """The current snapshot of proxy ``namespace/pod``, None if it has none."""
        try:
            return self._json("GET", _snapshot_path(node))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def watch_snapshots(
        self, node: str, *, timeout: float | None = None
    ) -> Generator[Obj, None, None]:
        """Each new snapshot of proxy ``namespace/pod``, the current one first."""
        return self._lines(_snapshot_path(node) + "?watch=true", timeout)

    # ------------------------------------------------------------------ plumbing

    def _open(
        self, method: str, path: str, body: Any = None, *, timeout: float | None
    ) -> http.client.HTTPResponse:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if data is not None else {}),
            },
        )
        try:
            resp: http.client.HTTPResponse = self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise _api_error(exc.code, exc.reason, exc.read()) from None
        except urllib.error.URLError as exc:
            # urllib wraps what fails while connecting and sending: the request is not
            # complete on the server, so nothing can have been done.
            raise self._unreachable(exc) from None
        except (OSError, http.client.HTTPException) as exc:
            # Sent whole, then no answer: a read changed nothing, a write may have.
            raise self._lost(method, exc) from None
        return resp

    def _json(self, method: str, path: str, body: Any = None) -> Obj:
        with self._open(method, path, body, timeout=self.timeout) as resp:
            try:
                result: Obj = json.loads(resp.read())
                return result
            except (OSError, http.client.HTTPException) as exc:
                raise self._lost(method, exc) from None

    def _lost(self, method: str, exc: BaseException) -> Exception:
        if method == "GET":
            return self._unreachable(exc)
        reason = str(exc) or type(exc).__name__
        return OutcomeUnknown(
            f"the connection to the tcpmesh API at {self.url} was lost after the request was "
            f"sent ({reason}); the outcome is unknown"
        )

    def _lines(self, path: str, timeout: float | None) -> Generator[Obj, None, None]:
        resp = self._open("GET", path, timeout=timeout)

        def lines() -> Generator[Obj, None, None]:
            with resp:
                while True:
                    try:
                        line = resp.readline()
                    except (OSError, http.client.HTTPException) as exc:
                        raise self._unreachable(exc) from None
                    if not line:
                        return
                    if line.strip():
                        yield json.loads(line)

        return lines()

    def _unreachable(self, exc: BaseException) -> Unreachable:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return Unreachable(
            f"cannot reach the tcpmesh API at {self.url} ({reason}); "
            "is the mesh running (`tcpmesh up`)?"
        )


def _api_error(status: int, phrase: str, body: bytes) -> ApiError:
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("kind") == "Status":
        return ApiError(status, str(data.get("reason", phrase)), str(data.get("message", "")))
    return ApiError(status, phrase, text.strip() or phrase)


def _path(
    info: KindInfo,
    namespace: str | None,
    name: str | None = None,
    *,
    query: Mapping[str, str] | None = None,
) -> str:
    quote = urllib.parse.quote
    path = info.api_path(
        None if namespace is None else quote(namespace, safe=""),
        None if name is None else quote(name, safe=""),
    )
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def _namespace(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("namespace") or "default")


def _selector(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items())


def _snapshot_path(node: str) -> str:
    namespace, _, pod = node.partition("/")
    quote = urllib.parse.quote
    return f"/tcpmesh/v1/snapshots/{quote(namespace, safe='')}/{quote(pod, safe='')}"
