"""A joined Envoy gateway, the parts without sockets: who may follow which node over
xDS, the bootstrap's mTLS ADS cluster, and handing a renewed certificate to Envoy."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from tcpmesh.apiserver.peers import PeerAuthority, PeerRefused
from tcpmesh.apiserver.pki import ensure_ca, issue_certificate, make_csr, read_csr, sign_client_csr
from tcpmesh.join import BootstrapToken, PeerAgent, PeerIdentity, peer_from_pem, token_object
from tcpmesh.join.envoy import SDS_FILE, EnvoyPlane
from tcpmesh.store import Store
from tcpmesh.xds import AdsTls, remote_bootstrap

GATEWAY = PeerIdentity("gateway", "istio-system", "edge", "h2")
WORKLOAD = PeerIdentity("workload", "default", "tcp-echo-v1", "vm1")
TOKEN = BootstrapToken("abcdef", "0123456789abcdef")


def _certificate(ca_dir: Path, identity: PeerIdentity, token_id: str = "abcdef") -> bytes:
    _, csr_pem = make_csr(identity.uri, "10.0.0.2")
    return sign_client_csr(
        ensure_ca(ca_dir),
        read_csr(csr_pem),
        uri=identity.uri,
        address="10.0.0.2",
        unit=f"token:{token_id}",
        ttl=datetime.timedelta(minutes=10),
    )


def test_a_pem_certificate_reads_as_the_same_peer(tmp_path: Path) -> None:
    peer = peer_from_pem(_certificate(tmp_path, GATEWAY))
    assert peer is not None
    assert (peer.identity, peer.addresses, peer.token_id) == (GATEWAY, ("10.0.0.2",), "abcdef")
    plain = issue_certificate(ensure_ca(tmp_path), "kubectl", [], client=True).cert_pem
    assert peer_from_pem(plain) is None


@pytest.fixture
def authority(tmp_path: Path) -> PeerAuthority:
    store = Store(tmp_path / "state.db")
    now = datetime.datetime.now(datetime.UTC)
    store.apply([token_object(TOKEN, datetime.timedelta(hours=1), now, "test")])
    return PeerAuthority(store, ensure_ca(tmp_path))


def test_xds_lets_a_gateway_follow_its_own_node_only(
    authority: PeerAuthority, tmp_path: Path
) -> None:
    mine = _certificate(tmp_path, GATEWAY)
    assert authority.authorize_xds(mine, "istio-system/edge-h2").token_id == "abcdef"
    with pytest.raises(PeerRefused, match="may not follow node istio-system/edge-h1"):
        authority.authorize_xds(mine, "istio-system/edge-h1")
    with pytest.raises(PeerRefused, match="may not follow node default/tcp-echo-v1-vm1"):
        authority.authorize_xds(_certificate(tmp_path, WORKLOAD), "default/tcp-echo-v1-vm1")


def test_xds_refuses_a_certificate_whose_token_was_deleted(
    authority: PeerAuthority, tmp_path: Path
) -> None:
    revoked = _certificate(tmp_path, GATEWAY, token_id="zzzzzz")
    with pytest.raises(PeerRefused, match="its bootstrap token was deleted") as refused:
        authority.authorize_xds(revoked, "istio-system/edge-h2")
    assert refused.value.code == 401


def _tls(tmp_path: Path) -> AdsTls:
    return AdsTls(tmp_path / "sds" / SDS_FILE, tmp_path / "sds", tmp_path / "ca.crt", ("10.0.0.1",))


def test_the_remote_bootstrap_speaks_mtls_to_every_server(tmp_path: Path) -> None:
    servers = [("10.0.0.1", 15012), ("10.0.0.3", 15012)]
    config = remote_bootstrap(
        "istio-system/edge-h2", "edge", servers, _tls(tmp_path), "10.0.0.2", 15021
    )
    (cluster,) = config["static_resources"]["clusters"]
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["address"] for e in endpoints] == [
        "10.0.0.1",
        "10.0.0.3",
    ]
    tls = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["alpn_protocols"] == ["h2"]
    (sds,) = tls["tls_certificate_sds_secret_configs"]
    source = sds["sds_config"]["path_config_source"]
    assert source == {
        "path": str(tmp_path / "sds" / SDS_FILE),
        "watched_directory": {"path": str(tmp_path / "sds")},
    }
    validation = tls["validation_context"]
    assert validation["trusted_ca"] == {"filename": str(tmp_path / "ca.crt")}
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.0.0.1"}}
    ]
    ads = config["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]
    assert ads["retry_policy"]["retry_back_off"]["max_interval"] == "0.5s"
    options = next(iter(cluster["typed_extension_protocol_options"].values()))
    assert options["explicit_http_config"]["http2_protocol_options"]["connection_keepalive"]


def test_a_server_named_by_host_name_is_resolved_and_matched_by_dns(tmp_path: Path) -> None:
    tls = AdsTls(tmp_path / "s.json", tmp_path, tmp_path / "ca.crt", ("cp.example",))
    config = remote_bootstrap("ns/p", "p", [("cp.example", 15012)], tls, "10.0.0.2", None)
    (cluster,) = config["static_resources"]["clusters"]
    assert cluster["type"] == "STRICT_DNS"
    context = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    assert context["validation_context"]["match_typed_subject_alt_names"][0]["san_type"] == "DNS"
    assert config["static_resources"]["listeners"] == []


def test_a_renewed_certificate_is_published_once_and_old_ones_pruned(tmp_path: Path) -> None:
    agent = PeerAgent(("https://10.0.0.1:6443",), GATEWAY, "10.0.0.2", tmp_path)
    plane = EnvoyPlane(agent, 15012, 15021, 1)
    ca = ensure_ca(tmp_path / "ca")
    published = []
    for _ in range(4):
        issued = issue_certificate(ca, "peer", [], client=True)
        agent.cert_path.parent.mkdir(parents=True, exist_ok=True)
        agent.key_path.write_bytes(issued.key_pem)
        agent.cert_path.write_bytes(issued.cert_pem)
        assert plane.publish() is True
        assert plane.publish() is False  # unchanged: nothing to hand over
        sds = json.loads((plane.sds_dir / SDS_FILE).read_text())
        secret = sds["resources"][0]["tls_certificate"]
        assert Path(secret["certificate_chain"]["filename"]).read_bytes() == issued.cert_pem
        assert Path(secret["private_key"]["filename"]).read_bytes() == issued.key_pem
        published.append(secret["certificate_chain"]["filename"])
    # The one in use and the one before it stay.
    assert sorted(str(p) for p in plane.sds_dir.glob("peer-*.crt")) == sorted(published[-2:])


def test_a_certificate_caught_without_its_new_key_is_not_published(tmp_path: Path) -> None:
    agent = PeerAgent(("https://10.0.0.1:6443",), GATEWAY, "10.0.0.2", tmp_path)
    plane = EnvoyPlane(agent, 15012, 15021, 1)
    ca = ensure_ca(tmp_path / "ca")
    first, second = (issue_certificate(ca, "peer", [], client=True) for _ in range(2))
    agent.cert_path.parent.mkdir(parents=True, exist_ok=True)
    agent.key_path.write_bytes(first.key_pem)
    agent.cert_path.write_bytes(second.cert_pem)
    assert plane.publish() is False
    assert not (plane.sds_dir / SDS_FILE).exists()
    agent.key_path.write_bytes(second.key_pem)
    assert plane.publish() is True
