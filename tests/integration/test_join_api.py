"""The API's side of joining, over real TLS on loopback: a token for a certificate, what a
peer certificate may and may not do, renewal, and revocation by deleting the token."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tcpmesh.apiserver import create_app
from tcpmesh.apiserver.peers import REVOCATION_CHECK_SECONDS, PeerAuthority
from tcpmesh.apiserver.pki import ensure_ca, server_ssl_context
from tcpmesh.control import ControlPlane
from tcpmesh.join import (
    BootstrapToken,
    JoinError,
    PeerAgent,
    PeerIdentity,
    TokenScope,
    token_object,
)
from tcpmesh.store import Store

pytestmark = pytest.mark.integration

GROUP = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "WorkloadGroup",
    "metadata": {"name": "tcp-echo-v1", "namespace": "default"},
    "spec": {
        "metadata": {"labels": {"app": "tcp-echo", "version": "v1"}},
        "template": {"ports": {"tcp": 9000}},
        "probe": {"tcpSocket": {"port": 9000}},
    },
}
IDENTITY = PeerIdentity("workload", "default", "tcp-echo-v1", "vm1")


@asynccontextmanager
async def api(tmp_path: Path) -> AsyncIterator[tuple[str, Store, BootstrapToken]]:
    """An API with peers enabled on 127.0.0.1 (SQLite), and a valid bootstrap token."""
    store = Store(tmp_path / "store.db")
    token = BootstrapToken.generate()
    now = datetime.datetime.now(datetime.UTC)
    store.apply([GROUP, token_object(token, datetime.timedelta(minutes=5), now, "test")])
    control = ControlPlane(store)
    await control.start()
    authority = PeerAuthority(store, ensure_ca(tmp_path), cert_ttl=datetime.timedelta(seconds=30))
    app = create_app(
        store,
        "admin-token",
        admit=lambda objects: ([], []),
        snapshots=control,
        status=lambda: {},
        pod_log=lambda namespace, name: None,
        peers=authority,
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tls = server_ssl_context(tmp_path, ["127.0.0.1"], verify_clients=True)
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}", store, token
    finally:
        await runner.cleanup()
        await control.stop()
        store.close()


def _agent(url: str, tmp_path: Path, token: str) -> PeerAgent:
    return PeerAgent(
        (url,),
        IDENTITY,
        "127.0.0.1",
        tmp_path / "agent",
        token=token,
        ca_file=tmp_path / "pki" / "ca.crt",
    )


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def test_a_token_buys_a_certificate_that_registers_only_its_own_entry(tmp_path: Path) -> None:
    async def body() -> None:
        async with api(tmp_path) as (url, store, token):
            agent = _agent(url, tmp_path, str(token))
            await agent.bootstrap()
            answer = await agent.heartbeat(True)
            assert answer["probe"] == {"tcpSocket": {"port": 9000}}
            entry = store.get("WorkloadEntry", "default", "tcp-echo-v1-vm1")
            assert entry is not None and entry["spec"]["address"] == "127.0.0.1"
            assert entry["status"]["conditions"] == [{"type": "Healthy", "status": "True"}]
            context = agent.ssl_context()
            async with aiohttp.ClientSession() as session:
                for path in (
                    "/api/v1/namespaces/istio-system/secrets",
                    "/tcpmesh/v1/snapshots/istio-system/istio-ingressgateway-vm1",
                ):
                    async with session.get(url + path, ssl=context) as resp:
                        assert resp.status == 403, path
                        assert IDENTITY.uri in (await resp.json())["message"]
            await agent.leave()
            assert store.get("WorkloadEntry", "default", "tcp-echo-v1-vm1") is None

    run(body())


def test_renewal_needs_no_token_and_deleting_the_token_revokes(tmp_path: Path) -> None:
    async def body() -> None:
        async with api(tmp_path) as (url, store, token):
            agent = _agent(url, tmp_path, str(token))
            await agent.bootstrap()
            first = agent.cert_path.read_bytes()
            agent.token = ""
            await agent.renew()
            assert agent.cert_path.read_bytes() != first
            await agent.heartbeat(False)
            store.delete("Secret", "istio-system", f"bootstrap-token-{token.token_id}")
            with pytest.raises(JoinError, match="401: certificate revoked"):
                await agent.heartbeat(False)

    run(body())


def test_a_wrong_token_gets_no_certificate(tmp_path: Path) -> None:
    async def body() -> None:
        async with api(tmp_path) as (url, _store, token):
            wrong = BootstrapToken(token.token_id, "0" * 16)
            with pytest.raises(JoinError, match="401: token: unknown or wrong"):
                await _agent(url, tmp_path, str(wrong)).bootstrap()

    run(body())


GATEWAY_A = PeerIdentity("gateway", "istio-system", "edge-a", "h1")
GATEWAY_B = PeerIdentity("gateway", "istio-system", "edge-b", "h1")


def _scoped(store: Store, scope: TokenScope) -> BootstrapToken:
    token = BootstrapToken.generate()
    now = datetime.datetime.now(datetime.UTC)
    store.apply([token_object(token, datetime.timedelta(minutes=5), now, "scoped", scope)])
    return token


def _peer(url: str, tmp_path: Path, identity: PeerIdentity, token: BootstrapToken) -> PeerAgent:
    return PeerAgent(
        (url,),
        identity,
        "127.0.0.1",
        tmp_path / f"agent-{identity.name}",
        token=str(token),
        ca_file=tmp_path / "pki" / "ca.crt",
    )


def test_a_token_for_gateway_a_cannot_join_as_b_nor_as_a_workload(tmp_path: Path) -> None:
    async def body() -> None:
        async with api(tmp_path) as (url, store, _token):
            token = _scoped(store, TokenScope.parse("gateway", "istio-system/edge-a"))
            for identity in (GATEWAY_B, IDENTITY):
                with pytest.raises(
                    JoinError, match=r"403: token \w+ is for gateway/\S+/edge-a only"
                ):
                    await _peer(url, tmp_path, identity, token).bootstrap()
            await _peer(url, tmp_path, GATEWAY_A, token).bootstrap()
            group_token = _scoped(store, TokenScope.parse("workload", "default/tcp-echo-v1"))
            with pytest.raises(JoinError, match=r"403: token \w+ is for workload/\S+/tcp-echo-v1 "):
                await _peer(url, tmp_path, GATEWAY_A, group_token).bootstrap()
            await _peer(url, tmp_path, IDENTITY, group_token).bootstrap()

    run(body())


async def _stream_lines(session: aiohttp.ClientSession, url: str, context: object) -> int:
    """Follow the stream until the server ends it; the lines (ticks) it sent."""
    lines = 0
    async with session.get(url, params={"watch": "true"}, ssl=context) as resp:
        assert resp.status == 200
        async for _ in resp.content:
            lines += 1
    return lines


def test_deleting_the_token_ends_the_open_snapshot_stream_and_refuses_the_next(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with api(tmp_path) as (url, store, _token):
            token = _scoped(store, TokenScope.parse("gateway", "istio-system/edge-a"))
            agent = _peer(url, tmp_path, GATEWAY_A, token)
            await agent.bootstrap()
            snapshots = f"{url}/tcpmesh/v1/snapshots/{GATEWAY_A.node_id}"
            context = agent.ssl_context()
            async with aiohttp.ClientSession() as session:
                following = asyncio.ensure_future(_stream_lines(session, snapshots, context))
                await asyncio.sleep(1.5)
                assert not following.done(), "a valid peer's stream stays open"
                store.delete("Secret", "istio-system", f"bootstrap-token-{token.token_id}")
                deleted = asyncio.get_running_loop().time()
                ticks = await asyncio.wait_for(following, REVOCATION_CHECK_SECONDS + 2)
                ended = asyncio.get_running_loop().time() - deleted
                assert ticks >= 1 and ended <= REVOCATION_CHECK_SECONDS + 1.0, ended
                async with session.get(snapshots, ssl=context) as resp:
                    assert resp.status == 401
                    assert "bootstrap token was deleted" in (await resp.json())["message"]

    run(body())
