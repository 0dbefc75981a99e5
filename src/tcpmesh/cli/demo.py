"""``tcpmesh demo``: the seed's TCP traffic-shifting walkthrough, each step a real command.

Every step prints the command it runs and then runs exactly that command as a separate
process, so what the demo shows is what a user typing it would get.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import click

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "tcp-echo"


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Narrator:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.env = {**os.environ, "TCPMESH_STATE_DIR": str(state_dir)}

    def step(self, title: str, text: str) -> None:
        click.echo()
        click.secho(title, bold=True)
        click.echo(text)

    def run(self, *args: str, check: bool = True) -> str:
        click.secho("$ tcpmesh " + shlex.join(args), fg="cyan")
        result = subprocess.run(
            [sys.executable, "-m", "tcpmesh", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.stdout:
            click.echo(result.stdout, nl=not result.stdout.endswith("\n"))
        if result.stderr:
            click.echo(result.stderr, err=True, nl=not result.stderr.endswith("\n"))
        if check and result.returncode != 0:
            raise DemoFailed(f"`tcpmesh {shlex.join(args)}` exited with {result.returncode}")
        return result.stdout.strip()


class DemoFailed(RuntimeError):
    pass


def run_demo(state_dir: Path, *, keep: bool) -> int:
    from tcpmesh.cli.lifecycle import running_client

    narrator = Narrator(state_dir)
    started_here = running_client(state_dir) is None
    try:
        narrator.step(
            "Step 0: start the local mesh",
            "API server, store, runtime, control plane and the default ingress gateway "
            "istio-system/istio-ingressgateway (labelled istio: ingressgateway).",
        )
        if started_here:
            narrator.run("up", "--detach")
        else:
            narrator.run("status")
        narrator.step(
            "Step 1: deploy the two versions of tcp-echo and the tcp-echo Service",
            'v1 answers "one <line>", v2 answers "two <line>".',
        )
        narrator.run("apply", "-f", _display_path(SAMPLES / "tcp-echo-deployments.yaml"))
        narrator.run("apply", "-f", _display_path(SAMPLES / "tcp-echo-service.yaml"))
        narrator.run("get", "pods", "-o", "wide")
        narrator.step(
            "Step 2: route all traffic to v1",
            "The Gateway opens port 31400 on the ingress gateway; the VirtualService sends "
            "every connection to subset v1; the DestinationRule defines v1 and v2.",
        )
        narrator.run("apply", "-f", _display_path(SAMPLES / "tcp-echo-all-v1.yaml"))
        narrator.step(
            "Step 3: the ingress gateway service",
            "tcpmesh created it with Istio's demo-profile ports, 31400 among them.",
        )
        narrator.run("-n", "istio-system", "get", "service", "istio-ingressgateway")
        narrator.step("Step 4: verify", "Find the gateway address and port as the seed does:")
        host = narrator.run(
            "-n",
            "istio-system",
            "get",
            "service",
            "istio-ingressgateway",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        )
        port = narrator.run(
            "-n",
            "istio-system",
            "get",
            "service",
            "istio-ingressgateway",
            "-o",
            'jsonpath={.spec.ports[?(@.name=="tcp")].port}',
        )
        click.echo(f"INGRESS_HOST={host} INGRESS_PORT={port}")
        click.echo('Every connection must answer "one":')
        narrator.run("send", f"{host}:{port}", "-c", "20", "--expect", "v1=100")
        narrator.step(
            "Step 5: shift 20% of the traffic to v2",
            "New connections are split 80/20; connections already open keep their version.",
        )
        narrator.run("apply", "-f", _display_path(SAMPLES / "tcp-echo-20-v2.yaml"))
        narrator.run("send", f"{host}:{port}", "-c", "10")
        click.echo("Ten connections are a small sample; 1000 test the split properly:")
        narrator.run("send", f"{host}:{port}", "-c", "1000", "--expect", "v1=80,v2=20")
        narrator.step("Done", "The traffic-shifting walkthrough ran end to end.")
        return 0
    except DemoFailed as exc:
        click.secho(f"demo failed: {exc}", fg="red", err=True)
        return 1
    finally:
        if started_here and not keep:
            narrator.step("Clean up", "Stop the mesh this demo started (the state is kept).")
            narrator.run("down", check=False)
