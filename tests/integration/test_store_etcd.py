"""What only the etcd backend has: transaction limits, TLS and auth, members that fail."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.store import StoreError, WatchEvent, open_store
from tests.etcd_cluster import Cluster, etcd_cluster, make_members

pytestmark = pytest.mark.integration


def service(name: str, annotation: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if annotation:
        meta["annotations"] = {"note": annotation}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"ports": []}}


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


def _prefix() -> str:
    return f"/t{uuid.uuid4().hex[:12]}"


def test_an_apply_over_the_transaction_limit_is_refused_whole(
    etcd: Cluster, tmp_path: Path
) -> None:
    store = open_store(etcd.url(_prefix()), tmp_path)
    try:
        revision = store.revision
        with pytest.raises(StoreError, match=r"129 objects.*--max-txn-ops=128"):
            store.apply([service(f"s{i}") for i in range(129)])
        assert store.list("Service") == [] and store.revision == revision
        # 128 is still one transaction: one revision for all of them.
        results = store.apply([service(f"s{i}") for i in range(128)])
        assert {r.object["metadata"]["resourceVersion"] for r in results} == {str(store.revision)}
    finally:
        store.close()


def test_an_apply_over_the_request_size_limit_is_refused_whole(
    etcd: Cluster, tmp_path: Path
) -> None:
    store = open_store(etcd.url(_prefix()), tmp_path)
    try:
        big = "x" * (800 * 1024)
        with pytest.raises(StoreError, match=r"--max-request-bytes=1572864"):
            store.apply([service("a", big), service("b", big)])
        assert store.list("Service") == []
        store.apply([service("a", big)])  # one of them fits
        assert [s["metadata"]["name"] for s in store.list("Service")] == ["a"]
    finally:
        store.close()


def test_a_server_with_lower_limits_refuses_with_its_own_message(tmp_path: Path) -> None:
    [member] = make_members(tmp_path, 1)
    member.tls_args = ["--max-txn-ops=4"]
    cluster = Cluster([member])
    try:
        member.start(cluster.initial_cluster)
        cluster.wait_healthy()
        store = open_store(cluster.url(), tmp_path)
        try:
            with pytest.raises(StoreError, match="too many operations in txn request"):
                store.apply([service(f"s{i}") for i in range(5)])
            assert store.list("Service") == []
        finally:
            store.close()
        # Told the server's limit, the store refuses before sending, naming it.
        told = open_store(cluster.url("/p?max-txn-ops=4"), tmp_path)
        try:
            with pytest.raises(StoreError, match=r"--max-txn-ops=4\)"):
                told.apply([service(f"s{i}") for i in range(5)])
            assert len(told.apply([service(f"s{i}") for i in range(4)])) == 4
        finally:
            told.close()
    finally:
        cluster.stop()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _make_pki(directory: Path, ip: str) -> None:
    """A CA, a server certificate for ``ip`` and a client certificate (openssl, EC keys)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", str(directory / "ca.key"),
        "-out", str(directory / "ca.crt"), "-days", "1", "-subj", "/CN=tcpmesh-test-ca",
    )  # fmt: skip
    for name, ext in (
        ("server", f"subjectAltName=IP:{ip}"),
        ("client", "basicConstraints=CA:FALSE"),
    ):
        (directory / f"{name}.ext").write_text(ext + "\n")
        _openssl(
            "req", *ec, "-keyout", str(directory / f"{name}.key"),
            "-out", str(directory / f"{name}.csr"), "-subj", f"/CN={name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(directory / f"{name}.csr"),
            "-CA", str(directory / "ca.crt"), "-CAkey", str(directory / "ca.key"),
            "-CAcreateserial", "-days", "1", "-out", str(directory / f"{name}.crt"),
            "-extfile", str(directory / f"{name}.ext"),
        )  # fmt: skip


@pytest.fixture(scope="module")
def secure_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One member with TLS, client certificates required, and etcd auth on."""
    base = tmp_path_factory.mktemp("secure-etcd")
    [member] = make_members(base, 1)
    _make_pki(base, member.address)
    member.scheme = "https"
    member.tls_args = [
        f"--cert-file={base / 'server.crt'}",
        f"--key-file={base / 'server.key'}",
        f"--trusted-ca-file={base / 'ca.crt'}",
        "--client-cert-auth",
    ]
    tls = f"ca={base / 'ca.crt'}&cert={base / 'client.crt'}&key={base / 'client.key'}"
    ctl = [f"--cacert={base / 'ca.crt'}", f"--cert={base / 'client.crt'}"]
    ctl += [f"--key={base / 'client.key'}"]
    cluster = Cluster([member], query=tls, ctl_args=ctl)
    try:
        member.start(cluster.initial_cluster)
        cluster.wait_healthy()
        cluster.etcdctl("user", "add", "root:rootpw")
        cluster.etcdctl("user", "add", "mesh:meshpw")
        cluster.etcdctl("role", "add", "mesh")
        cluster.etcdctl("role", "grant-permission", "mesh", "--prefix=true", "readwrite", "/mesh/")
        cluster.etcdctl("user", "grant-role", "mesh", "mesh")
        cluster.etcdctl("auth", "enable")
        (base / "mesh.pw").write_text("meshpw\n")
        (base / "wrong.pw").write_text("nope\n")
        yield cluster
    finally:
        cluster.stop()


def test_tls_and_auth_to_etcd(secure_etcd: Cluster, tmp_path: Path) -> None:
    base = Path(secure_etcd.query.split("ca=")[1].split("&")[0]).parent
    user = f"&user=mesh&password-file={base / 'mesh.pw'}"
    store = open_store(secure_etcd.url("/mesh") + user, tmp_path)
    try:
        created = store.create(service("a"))
        assert store.get("Service", "default", "a") == created

        async def watch_one() -> WatchEvent:
            events = store.watch(["Service"], since=int(created["metadata"]["resourceVersion"]))
            try:
                pending = asyncio.ensure_future(anext(events))
                await asyncio.sleep(0.2)
                store.create(service("b"))
                return await asyncio.wait_for(pending, timeout=10)
            finally:
                await events.aclose()

        assert asyncio.run(watch_one()).object["metadata"]["name"] == "b"
    finally:
        store.close()
    # The same user outside its prefix is refused by etcd, and the store says so.
    outside = open_store(secure_etcd.url("/other") + user, tmp_path)
    try:
        with pytest.raises(StoreError, match="etcd refused access to /other"):
            outside.create(service("a"))
    finally:
        outside.close()
    wrong = f"&user=mesh&password-file={base / 'wrong.pw'}"
    with pytest.raises(StoreError, match="etcd authentication failed"):
        open_store(secure_etcd.url("/mesh") + wrong, tmp_path)
    # Without a password etcd (auth on) refuses even a read.
    anonymous = open_store(secure_etcd.url("/mesh"), tmp_path)
    try:
        with pytest.raises(StoreError):
            anonymous.list("Service")
    finally:
        anonymous.close()


def test_a_token_lost_with_a_restart_is_replaced_by_logging_in_again(
    secure_etcd: Cluster, tmp_path: Path
) -> None:
    base = Path(secure_etcd.query.split("ca=")[1].split("&")[0]).parent
    user = f"&user=mesh&password-file={base / 'mesh.pw'}"
    store = open_store(secure_etcd.url("/mesh/restart") + user, tmp_path)
    try:
        store.create(service("before"))
        # etcd's simple tokens live in the member's memory: a restart forgets them all.
        [member] = secure_etcd.members
        member.stop()
        member.start(secure_etcd.initial_cluster)
        secure_etcd.wait_healthy()
        store.create(service("after"))
        assert [s["metadata"]["name"] for s in store.list("Service")] == ["after", "before"]
    finally:
        store.close()


def test_applies_and_watches_survive_a_killed_member(tmp_path: Path) -> None:
    with etcd_cluster(tmp_path, count=3) as cluster:
        store = open_store(cluster.url(), tmp_path)
        try:
            since = store.revision

            async def main() -> list[WatchEvent]:
                events = store.watch(["Service"], since=since)
                try:
                    seen: list[WatchEvent] = []
                    for i in range(3):
                        store.create(service(f"before{i}"))
                    seen += [await asyncio.wait_for(anext(events), 10) for _ in range(3)]
                    # Kill the member this client talks to, the hardest one to lose.
                    used = store.connection.client.endpoint_in_use.netloc
                    [victim] = [m for m in cluster.members if m.endpoint == used]
                    victim.kill()
                    for i in range(3):
                        store.apply([service(f"after{i}")])
                    seen += [await asyncio.wait_for(anext(events), 20) for _ in range(3)]
                    return seen
                finally:
                    await events.aclose()

            seen = asyncio.run(main())
            names = [e.object["metadata"]["name"] for e in seen]
            assert names == ["before0", "before1", "before2", "after0", "after1", "after2"]
            revisions = [e.revision for e in seen]
            assert revisions == sorted(set(revisions))
            assert len(store.list("Service")) == 6
        finally:
            store.close()
