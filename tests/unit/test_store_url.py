"""Reading ``--store etcd://...``: endpoints, prefix, TLS files, auth, limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcpmesh.store import EtcdConfig, StoreError, check_store_spec, parse_etcd_url


def test_endpoints_prefix_and_defaults() -> None:
    config = parse_etcd_url("etcd://h1:2379,10.0.0.2:2379,[::1]:2379")
    assert config == EtcdConfig(endpoints=(("h1", 2379), ("10.0.0.2", 2379), ("::1", 2379)))
    assert config.prefix == "/tcpmesh"
    assert (config.max_txn_ops, config.max_request_bytes) == (128, 1572864)
    assert parse_etcd_url("etcd://h1:2379/team/a/").prefix == "/team/a"


def test_tls_auth_and_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    url = (
        f"etcd://h:1/p?ca={tmp_path}/ca.crt&cert={tmp_path}/c.crt&key={tmp_path}/c.key"
        f"&user=mesh&password-file={tmp_path}/pw&max-txn-ops=64&max-request-bytes=1000"
    )
    config = parse_etcd_url(url)
    assert (config.ca, config.cert, config.key) == (
        tmp_path / "ca.crt",
        tmp_path / "c.crt",
        tmp_path / "c.key",
    )
    assert (config.user, config.password) == ("mesh", "s3cret")
    assert (config.max_txn_ops, config.max_request_bytes) == (64, 1000)
    # The password never shows in the description used in messages.
    assert "s3cret" not in config.describe() and config.describe() == "etcd://h:1/p"
    monkeypatch.setenv("TCPMESH_ETCD_PASSWORD", "from-env")
    assert parse_etcd_url("etcd://h:1?user=mesh").password == "from-env"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("etcd://", "expected etcd://HOST:PORT"),
        ("etcd://h1", "'h1' is not HOST:PORT"),
        ("etcd://h1:99999", "'h1:99999' is not HOST:PORT"),
        ("etcd://h1:1?max-txn-ops=0", "max-txn-ops='0' is not a positive integer"),
        ("etcd://h1:1?key=k.pem", "cert= and key= go together"),
        ("etcd://h1:1?cert=c&key=k", "a client certificate needs ca="),
        ("etcd://h1:1?user=mesh", "user=mesh needs password-file="),
        ("etcd://h1:1?password-file=/nonexistent/pw", "cannot read /nonexistent/pw"),
        ("etcd://h1:1?pasword=x", "unknown option 'pasword'"),
    ],
)
def test_bad_urls_say_what_is_wrong(
    url: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TCPMESH_ETCD_PASSWORD", raising=False)
    with pytest.raises(StoreError, match=message.replace("?", r"\?")):
        parse_etcd_url(url)


def test_sqlite_is_the_default() -> None:
    assert check_store_spec(None) is None
    assert check_store_spec("sqlite") is None
    with pytest.raises(StoreError, match="expected sqlite or etcd://"):
        check_store_spec("redis://h:1")
