"""``tcpmesh token``, ``tcpmesh gateway join`` and ``tcpmesh workload join``: peers on
other hosts (tcpmesh.join), as kubeadm's ``token`` and ``join`` verbs work."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tcpmesh.api.durations import parse_duration

if TYPE_CHECKING:
    from tcpmesh.join import TokenScope

ALL_SERVERS_HELP = "API servers to try in turn, comma-separated (any replica will do)."


def token_create(
    client: object,
    ttl: str,
    description: str,
    gateway: str | None = None,
    workload_group: str | None = None,
) -> list[str]:
    """Create a token, scoped to one gateway Deployment or WorkloadGroup (``NS/NAME``) if
    given; the lines to print (the token, then how to join with it)."""
    from tcpmesh.apiserver.client import ApiClient
    from tcpmesh.join import BootstrapToken, token_object

    assert isinstance(client, ApiClient)
    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    lifetime = datetime.timedelta(seconds=seconds) if seconds > 0 else None
    token = BootstrapToken.generate()
    now = datetime.datetime.now(datetime.UTC)
    client.create(
        token_object(token, lifetime, now, description, token_scope(gateway, workload_group))
    )
    return [str(token)]


def token_scope(gateway: str | None, workload_group: str | None) -> TokenScope | None:
    """The scope ``--gateway`` or ``--workload-group`` asks for (at most one of them)."""
    from tcpmesh.join import TokenError, TokenScope

    if gateway is not None and workload_group is not None:
        raise click.UsageError("--gateway and --workload-group exclude each other")
    try:
        if gateway is not None:
            return TokenScope.parse("gateway", gateway)
        if workload_group is not None:
            return TokenScope.parse("workload", workload_group)
    except TokenError as exc:
        hint = "--gateway" if gateway is not None else "--workload-group"
        raise click.BadParameter(str(exc), param_hint=hint) from None
    return None


def parse_servers(text: str) -> tuple[str, ...]:
    servers = tuple(s.strip().rstrip("/") for s in text.split(",") if s.strip())
    for server in servers:
        if not server.startswith("https://"):
            raise click.BadParameter(f"{server}: expected https://HOST:PORT", param_hint="--server")
    if not servers:
        raise click.BadParameter("at least one https://HOST:PORT", param_hint="--server")
    return servers


def default_node() -> str:
    """This host's name as a DNS-1123 label (the kubelet's node name is its hostname)."""
    return socket.gethostname().split(".", 1)[0].lower()


def run_join(
    role: str,
    state_dir: Path,
    *,
    servers: str,
    token: str,
    ca_cert_hash: str | None,
    ca_file: Path | None,
    namespace: str,
    name: str,
    node: str | None,
    address: str,
    workers: int = 1,
    dataplane: str = "python",
    xds_port: int = 15012,
    relay: str = "auto",
    engine: str = "auto",
) -> int:
    """Build the agent from the flags and run the gateway or workload until stopped."""
    from tcpmesh.join import (
        GatewayOptions,
        IdentityError,
        JoinError,
        PeerAgent,
        PeerIdentity,
        run_gateway,
        run_workload,
    )
    from tcpmesh.statedir import make_private, private_umask

    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, os.environ.get("TCPMESH_LOG_LEVEL", "INFO").upper(), logging.INFO),
        format="%(asctime)s join %(levelname)s %(message)s",
    )
    try:
        identity = PeerIdentity(
            "gateway" if role == "gateway" else "workload", namespace, name, node or default_node()
        )
    except IdentityError as exc:
        raise click.UsageError(str(exc)) from None
    private_umask()
    make_private(state_dir)
    agent = PeerAgent(
        parse_servers(servers),
        identity,
        address,
        state_dir,
        token=token,
        ca_cert_hash=ca_cert_hash,
        ca_file=ca_file,
    )
    runner = (
        run_gateway(
            agent,
            GatewayOptions(
                workers, relay=relay, engine=engine, dataplane=dataplane, xds_port=xds_port
            ),
        )
        if role == "gateway"
        else run_workload(agent)
    )
    try:
        return asyncio.run(runner)
    except (JoinError, ConnectionError) as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
