"""The ``tcpmesh`` command: kubectl and istioctl habits in one program.

Every command turns expected failures into one readable line on stderr and a non-zero
exit; a traceback is shown only with TCPMESH_DEBUG=1.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from tcpmesh.api import InvalidInput, kinds
from tcpmesh.apiserver.client import ApiClient, ApiError, OutcomeUnknown, Unreachable
from tcpmesh.cli import lifecycle, printers
from tcpmesh.cli.inputs import InputError, load_manifests, load_manifests_by_source
from tcpmesh.cli.jsonpath import JsonPathError, compile_template
from tcpmesh.store import object_kind_key

F = TypeVar("F", bound=Callable[..., Any])

# `up --relay`, `gateway join --relay`: dataplane.splice.RelayMode's values (not imported
# here: the CLI loads the data plane only where it runs it).
RELAY_CHOICES = ("auto", "splice", "copy")
RELAY_HELP = (
    "How the built-in data plane moves bytes: auto (copy, then splice(2) once a read "
    "fills 64 KiB), splice (zero-copy from the first byte) or copy (through user space)."
)
# `up --engine`, `gateway join --engine`: dataplane.native.EngineMode's values.
ENGINE_CHOICES = ("auto", "native", "python")
ENGINE_HELP = (
    "Which code moves the built-in data plane's plain TCP connections: native (the C "
    "extension built at install), python, or auto (native when it was built)."
)


class Context:
    def __init__(self, state_dir: Path, namespace: str | None) -> None:
        self.state_dir = state_dir
        self.namespace = namespace

    def client(self) -> ApiClient:
        return ApiClient.from_state_dir(self.state_dir)

    def ns(self, local: str | None) -> str:
        return local or self.namespace or "default"


# Exit codes: 0 done, 1 refused or failed (nothing changed), 2 bad usage (click's),
# 3 unknown: a write was sent and the connection was lost before the answer.
EXIT_UNKNOWN = 3


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def _given(param: str) -> bool:
    """Whether the user named ``param`` on the command line (not its default or env var)."""
    source = click.get_current_context().get_parameter_source(param)
    return source is click.core.ParameterSource.COMMANDLINE


def friendly_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InvalidInput as exc:
            fail("\n".join(exc.messages))
        except (InputError, JsonPathError) as exc:
            fail(str(exc))
        except ApiError as exc:
            fail(f"Error from server ({exc.reason}): {exc.message}")
        except Unreachable as exc:
            fail(f"error: {exc}")
        except OutcomeUnknown as exc:
            fail(f"unknown: {exc}; check with `tcpmesh get ...`", EXIT_UNKNOWN)
        except (RuntimeError, TimeoutError, OSError) as exc:
            if os.environ.get("TCPMESH_DEBUG"):
                traceback.print_exc()
            fail(f"error: {exc}")

    return wrapper  # type: ignore[return-value]


namespace_option = click.option(
    "-n", "--namespace", "namespace", default=None, help="The namespace of the objects."
)
# `up` and `gateway join` run the same data plane: one flag, one default, one variable.
relay_option = click.option(
    "--relay",
    type=click.Choice(RELAY_CHOICES),
    default="auto",
    show_default=True,
    envvar="TCPMESH_RELAY",
    show_envvar=True,
    help=RELAY_HELP,
)
engine_option = click.option(
    "--engine",
    type=click.Choice(ENGINE_CHOICES),
    default="auto",
    show_default=True,
    envvar="TCPMESH_ENGINE",
    show_envvar=True,
    help=ENGINE_HELP,
)


def _engine_for(dataplane: str, engine: str) -> str:
    """The engine the built-in plane's workers will use (auto resolved here, so that
    status names it); exits in one line for a choice that cannot be had."""
    from importlib.util import find_spec

    if dataplane == "envoy":
        if _given("engine") and engine != "auto":
            fail(f"error: --engine {engine}: only the built-in data plane has an engine choice")
        return "auto"
    built = find_spec("tcpmesh.dataplane._engine") is not None
    if engine == "native" and not built:
        fail(
            "error: --engine native: the C extension tcpmesh.dataplane._engine is not built "
            "(reinstall with gcc and Python's headers, or use --engine python)"
        )
    if engine == "auto":
        return "native" if built else "python"
    return engine


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the mesh keeps its state [env TCPMESH_STATE_DIR; default ~/.local/state/tcpmesh].",
)
@namespace_option
@click.version_option(package_name="tcpmesh")
@click.pass_context
def cli(ctx: click.Context, state_dir: Path | None, namespace: str | None) -> None:
    """A service mesh for TCP traffic that speaks the Istio networking API."""
    ctx.obj = Context(state_dir or lifecycle.default_state_dir(), namespace)


pass_context = click.make_pass_decorator(Context)


# ---------------------------------------------------------------- lifecycle


@cli.command()
@click.option(
    "-f", "--filename", "files", multiple=True, help="Apply these once the mesh is ready."
)
@click.option("--dataplane", type=click.Choice(["python", "envoy"]), default="python")
@click.option("--address", default="127.0.0.1", show_default=True, help="Gateway address.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Data plane processes.")
@relay_option
@engine_option
@click.option(
    "--max-pods",
    type=click.IntRange(min=1),
    default=None,
    help="The most pods the mesh runs [default 110, the kubelet's maxPods].",
)
@click.option("--detach", is_flag=True, help="Return once the mesh is ready.")
@click.option(
    "--store",
    default=None,
    metavar="sqlite|etcd://HOST:PORT[,...]",
    help="Where state lives: SQLite in the state directory (default) or an etcd cluster.",
)
@click.option(
    "--bind-address",
    default=None,
    help="Also serve the API here, for other hosts: gateways and workloads join there.",
)
@click.option(
    "--advertise-address",
    default=None,
    help="Where other hosts reach the API [default: --bind-address; with 0.0.0.0, this "
    "host's address on its default route].",
)
@click.option(
    "--secure-port",
    type=click.IntRange(0, 65535),
    default=6443,
    show_default=True,
    help="The port on --bind-address (0: any free one).",
)
@click.option(
    "--xds-port",
    type=click.IntRange(0, 65535),
    default=15012,
    show_default=True,
    help="ADS (mTLS) on --bind-address, for Envoy gateways of other hosts (0: any free one).",
)
@click.option(
    "--gateway-replicas",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Local replicas of the default ingress gateway (0: joined hosts only).",
)
@click.option(
    "--cluster-signing-duration",
    default="1h",
    show_default=True,
    help="The life of the client certificate a joined host gets (renewed at 2/3).",
)
@pass_context
@friendly_errors
def up(
    ctx: Context,
    files: tuple[str, ...],
    dataplane: str,
    address: str,
    workers: int | None,
    relay: str,
    engine: str,
    max_pods: int | None,
    detach: bool,
    store: str | None,
    bind_address: str | None,
    advertise_address: str | None,
    secure_port: int,
    xds_port: int,
    gateway_replicas: int,
    cluster_signing_duration: str,
) -> None:
    """Start the local mesh: API server, store, runtime, control plane and ingress gateway."""
    from tcpmesh.mesh import Mesh, MeshConfig
    from tcpmesh.store import StoreError, check_store_spec

    try:
        check_store_spec(store)
    except StoreError as exc:
        fail(f"error: {exc}")

    if dataplane == "envoy" and _given("relay") and relay != "auto":
        fail(f"error: --relay {relay}: only the built-in data plane has a relay choice")
    engine = _engine_for(dataplane, engine)
    if dataplane == "envoy":
        from tcpmesh.xds import missing_envoy_support

        missing = missing_envoy_support()
        if missing is not None:
            fail(f"error: --dataplane envoy: {missing}")
    problem = lifecycle.unusable_address(address)
    if problem is not None:
        fail(f"error: --address {address}: {problem}")
    objects, warnings = load_manifests(files, ctx.namespace) if files else ([], [])
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)
    config = MeshConfig(
        ctx.state_dir, address, workers, dataplane, store=None if store == "sqlite" else store
    )
    if max_pods is not None:
        config = dataclasses.replace(config, max_pods=max_pods)
    if dataplane == "python":
        config = dataclasses.replace(config, relay=relay, engine=engine)
    config = dataclasses.replace(
        config,
        bind_address=bind_address,
        advertise_address=_advertised(bind_address, advertise_address),
        secure_port=secure_port,
        xds_port=xds_port,
        gateway_replicas=gateway_replicas,
        signing_seconds=_signing_seconds(cluster_signing_duration),
    )
    if lifecycle.running_client(ctx.state_dir) is not None:
        fail(f"error: tcpmesh is already running from {ctx.state_dir}")
    if detach:
        client, _ = lifecycle.start_detached(config)
        if objects:
            _print_apply_results(client.apply(objects, dry_run=False), dry_run=False)
        for line in lifecycle.summarize(client.status()):
            click.echo(line)
        return

    def apply_files(mesh: Mesh) -> list[str]:
        results = mesh.store.apply(objects) if objects else []
        return [_apply_line(r.object, r.action, False) for r in results]

    lifecycle.run_foreground(config, apply_files)


def _advertised(bind: str | None, given: str | None) -> str | None:
    """The checked --advertise-address (see lifecycle.advertise_address); exits on bad
    input, naming the flag."""
    if bind is None:
        if given is not None:
            fail("error: --advertise-address: needs --bind-address (the API listens on loopback)")
        return None
    if not lifecycle.is_ip(bind):
        fail(f"error: --bind-address {bind}: not an IP address")
    if given is not None and not lifecycle.is_ip(given):
        fail(f"error: --advertise-address {given}: not an IP address")
    if given is not None and ipaddress.ip_address(given).is_unspecified:
        fail(f"error: --advertise-address {given}: other hosts cannot dial it; give this host's")
    advertised = lifecycle.advertise_address(bind, given)
    if advertised is None:
        fail(
            f"error: --bind-address {bind}: this host has no default route to take the "
            "address other hosts reach it at from; give --advertise-address"
        )
    return advertised


def _signing_seconds(text: str) -> float:
    from tcpmesh.api.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        fail(f"error: --cluster-signing-duration {text}: {exc}")
    if seconds < 10:
        fail(f"error: --cluster-signing-duration {text}: at least 10s")
    return seconds


@cli.command()
@pass_context
@friendly_errors
def down(ctx: Context) -> None:
    """Stop the local mesh; the state directory is kept."""
    pid = lifecycle.stop_mesh(ctx.state_dir)
    if pid is None:
        click.echo(f"tcpmesh is not running (state directory {ctx.state_dir})")
    else:
        click.echo(f"tcpmesh stopped (pid {pid}); state kept in {ctx.state_dir}")


@cli.command()
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@pass_context
@friendly_errors
def status(ctx: Context, output: str) -> None:
    """What runs, where, and whether it is healthy."""
    client = lifecycle.running_client(ctx.state_dir)
    if client is None:
        fail(
            f"tcpmesh is not running (state directory {ctx.state_dir}); start it with `tcpmesh up`"
        )
    state = client.status()
    if output == "json":
        click.echo(json.dumps(state, indent=2))
        return
    for line in lifecycle.summarize(state):
        click.echo(line)
    from tcpmesh.xds import status_lines

    for line in status_lines(state.get("xds")):
        click.echo(line)
    rows = [
        [
            p["namespace"],
            p["name"],
            "1/1" if p["ready"] else "0/1",
            p["phase"],
            str(p["restarts"]),
            p["podIP"] or "<none>",
        ]
        for p in state["pods"]
    ]
    click.echo(
        printers.format_columns(["NAMESPACE", "POD", "READY", "STATUS", "RESTARTS", "IP"], rows)
    )
    if not state.get("gatewayReady") and state.get("gatewayReplicas") != 0:
        sys.exit(1)


@cli.command("kubeconfig")
@click.option("--path", "path_only", is_flag=True, help="Print the file's path, not its content.")
@pass_context
@friendly_errors
def kubeconfig_command(ctx: Context, path_only: bool) -> None:
    """The kubeconfig of the running mesh (HTTPS, the mesh's CA, its token), for kubectl.

    export KUBECONFIG=$(tcpmesh kubeconfig --path)
    """
    from tcpmesh.apiserver.kubeconfig import kubeconfig_path

    path = kubeconfig_path(ctx.state_dir)
    if lifecycle.running_client(ctx.state_dir) is None or not path.exists():
        fail(
            f"error: tcpmesh is not running (state directory {ctx.state_dir}); "
            "start it with `tcpmesh up`"
        )
    click.echo(str(path) if path_only else path.read_text(encoding="utf-8"), nl=path_only)


# ---------------------------------------------------------------- objects


def _apply_line(result: dict[str, Any], action: str, dry_run: bool) -> str:
    """``virtualservice.networking.istio.io/x configured``; ``result`` has apiVersion and kind."""
    name = result.get("name") or result["metadata"]["name"]
    qualified = _qualified(kinds.for_object(result))
    return f"{qualified}/{name} {action}{' (dry run)' if dry_run else ''}"


def _qualified(info: kinds.KindInfo) -> str:
    """kubectl's resource.group spelling, e.g. ``virtualservice.networking.istio.io``."""
    return f"{info.singular}.{info.group}" if info.group else info.singular


def _how_to_check(objects: list[dict[str, Any]], done: str) -> str:
    """The ``tcpmesh get`` commands that show whether ``objects`` were ``done``."""
    by_namespace: dict[tuple[str, str], list[str]] = {}
    for obj in objects:
        info = kinds.for_object(obj)
        namespace = obj["metadata"].get("namespace") or "default"
        by_namespace.setdefault((namespace, info.plural), []).append(obj["metadata"]["name"])
    commands = [
        f"tcpmesh get {plural} {' '.join(names) if len(names) <= 5 else ''}".rstrip()
        + f" -n {namespace}"
        for (namespace, plural), names in sorted(by_namespace.items())
    ]
    return f"the {len(objects)} objects may or may not have been {done}; check with: " + (
        "; ".join(commands)
    )


def _print_apply_results(response: dict[str, Any], dry_run: bool) -> None:
    for warning in response.get("warnings", []):
        click.echo(f"Warning: {warning}", err=True)
    for result in response["results"]:
        click.echo(_apply_line(result, result["action"], dry_run))


@cli.command()
@click.option("-f", "--filename", "files", multiple=True, required=True, help="FILE, DIR or -.")
@namespace_option
@click.option("--dry-run", is_flag=True, help="Validate and show what would change; write nothing.")
@pass_context
@friendly_errors
def apply(ctx: Context, files: tuple[str, ...], namespace: str | None, dry_run: bool) -> None:
    """Create or update objects; every document is validated before any is written."""
    objects, warnings = load_manifests(files, namespace or ctx.namespace)
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)
    if not objects:
        fail("error: no objects passed to apply")
    try:
        response = ctx.client().apply(objects, dry_run=dry_run)
    except OutcomeUnknown as exc:
        fail(f"unknown: {exc}; {_how_to_check(objects, 'applied')}", EXIT_UNKNOWN)
    response["warnings"] = [w for w in response.get("warnings", []) if w not in warnings]
    _print_apply_results(response, dry_run)


@cli.command()
@click.argument("kind", required=False)
@click.argument("names", nargs=-1)
@click.option("-f", "--filename", "files", multiple=True, help="Delete the objects in these files.")
@namespace_option
@click.option("--ignore-not-found", is_flag=True)
@pass_context
@friendly_errors
def delete(
    ctx: Context,
    kind: str | None,
    names: tuple[str, ...],
    files: tuple[str, ...],
    namespace: str | None,
    ignore_not_found: bool,
) -> None:
    """Delete objects named on the command line or in files."""
    client = ctx.client()
    targets: list[tuple[kinds.KindInfo, str, str]] = []
    if files:
        objects, _ = load_manifests(files, namespace or ctx.namespace)
        targets = [
            (kinds.for_object(o), o["metadata"].get("namespace", ""), o["metadata"]["name"])
            for o in objects
        ]
    elif kind and names:
        info = _resolve_kind(kind)
        targets = [(info, ctx.ns(namespace), name) for name in names]
    else:
        fail("error: give KIND NAME... or -f FILE")
    failed = False
    for info, ns, name in targets:
        try:
            client.delete(info.key, ns, name)
        except ApiError as exc:
            if exc.status == 404 and ignore_not_found:
                continue
            click.echo(f"Error from server ({exc.reason}): {exc.message}", err=True)
            failed = True
            continue
        click.echo(f'{_qualified(info)} "{name}" deleted')
    if failed:
        sys.exit(1)


def _resolve_kind(name: str) -> kinds.KindInfo:
    try:
        return kinds.resolve(name)
    except kinds.UnknownKind:
        fail(f'error: the server doesn\'t have a resource type "{name}"')


@cli.command()
@click.argument("kind")
@click.argument("name", required=False)
@namespace_option
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("-o", "--output", default=None, help="wide, yaml, json, name or jsonpath=TEMPLATE.")
@pass_context
@friendly_errors
def get(
    ctx: Context,
    kind: str,
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    output: str | None,
) -> None:
    """Show objects, kubectl style (KIND may be a comma-separated list, or KIND/NAME)."""
    if "/" in kind and name is None:
        kind, name = kind.split("/", 1)
    infos = [_resolve_kind(k) for k in kind.split(",") if k]
    if name is not None and len(infos) != 1:
        fail("error: a NAME goes with exactly one KIND")
    template = None
    if output is not None and output.startswith("jsonpath="):
        template = compile_template(output.removeprefix("jsonpath="))
    elif output not in (None, "wide", "yaml", "json", "name"):
        fail(
            f'error: unable to match a printer suitable for the output format "{output}", '
            "allowed formats are: json,jsonpath,name,wide,yaml"
        )
    client = ctx.client()
    ns = None if all_namespaces else ctx.ns(namespace)
    found = [
        (
            info,
            [client.get(info.key, ctx.ns(namespace), name)] if name else client.list(info.key, ns),
        )
        for info in infos
    ]
    objects = [obj for _, objs in found for obj in objs]
    data: Any = (
        objects[0]
        if name
        else {
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": ""},
            "items": objects,
        }
    )
    if template is not None:
        click.echo(template.render(data), nl=False)
    elif output == "yaml":
        click.echo(printers.to_yaml(data), nl=False)
    elif output == "json":
        click.echo(printers.to_json(data))
    elif output == "name":
        for info, objs in found:
            for obj in objs:
                click.echo(f"{_qualified(info)}/{obj['metadata']['name']}")
    elif not objects:
        scoped = ns if any(info.namespaced for info in infos) else None
        click.echo(printers.no_resources_message(scoped), err=True)
    else:
        tables = [
            printers.print_table(info, objs, wide=output == "wide", all_namespaces=all_namespaces)
            for info, objs in found
            if objs
        ]
        click.echo("\n".join(tables), nl=False)


@cli.command()
@click.argument("kind")
@click.argument("name")
@namespace_option
@pass_context
@friendly_errors
def describe(ctx: Context, kind: str, name: str, namespace: str | None) -> None:
    """An object, its status and the routes it produces."""
    from tcpmesh.cli.describe import describe_object

    info = _resolve_kind(kind)
    client = ctx.client()
    obj = client.get(info.key, ctx.ns(namespace), name)
    click.echo(describe_object(client, info, obj), nl=False)


@cli.command()
@click.option("-f", "--filename", "files", multiple=True, help="Also analyze these files.")
@namespace_option
@click.option("-A", "--all-namespaces", is_flag=True)
@pass_context
@friendly_errors
def analyze(
    ctx: Context, files: tuple[str, ...], namespace: str | None, all_namespaces: bool
) -> None:
    """istioctl-analyze-style checks across resources; exit 1 on errors."""
    from tcpmesh.analysis import analyze as run_analysis
    from tcpmesh.analysis import format_message
    from tcpmesh.mesh import MeshConfig, default_gateway_objects

    objects: dict[tuple[str, str, str], dict[str, Any]] = {}
    client = lifecycle.running_client(ctx.state_dir)
    if client is not None:
        for info in kinds.KINDS:
            for obj in client.list(info.key, None):
                objects[_object_key(obj)] = obj
    elif not files:
        fail(f"error: nothing to analyze: tcpmesh is not running ({ctx.state_dir}) and no -f given")
    else:
        # What `tcpmesh up` would create, so files are analyzed as they would be applied.
        from tcpmesh.control import builtin_gateway_classes

        created = [*default_gateway_objects(MeshConfig(ctx.state_dir)), *builtin_gateway_classes()]
        for obj in created:
            objects[_object_key(obj)] = obj
    sources: dict[tuple[str, str, str], str] = {}
    if files:
        for source, loaded, _ in load_manifests_by_source(files, namespace or ctx.namespace):
            for obj in loaded:
                objects[_object_key(obj)] = obj
                sources[_object_key(obj)] = source
    scope = None if all_namespaces or not (namespace or ctx.namespace) else ctx.ns(namespace)
    messages = [
        m for m in run_analysis(objects.values(), sources) if scope is None or m.namespace == scope
    ]
    for message in messages:
        click.echo(format_message(message))
    if not messages:
        where = f"namespace: {scope}" if scope else "all namespaces"
        click.echo(f"\u2714 No validation issues found when analyzing {where}.")
    if any(m.is_error for m in messages):
        sys.exit(1)


def _object_key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return object_kind_key(obj), meta.get("namespace") or "default", meta["name"]


@cli.command()
@click.argument("pod")
@namespace_option
@pass_context
@friendly_errors
def logs(ctx: Context, pod: str, namespace: str | None) -> None:
    """A pod's output."""
    click.echo(ctx.client().pod_log(ctx.ns(namespace), pod.removeprefix("pod/")), nl=False)


@cli.command("proxy-config")
@click.argument("what", type=click.Choice(["listeners", "clusters", "endpoints"]))
@click.argument("pod", required=False)
@namespace_option
@click.option("-o", "--output", type=click.Choice(["short", "json"]), default="short")
@pass_context
@friendly_errors
def proxy_config(
    ctx: Context, what: str, pod: str | None, namespace: str | None, output: str
) -> None:
    """A gateway proxy's listeners, clusters or endpoints (the built-in proxy or Envoy).

    POD is NAME or NAME.NAMESPACE (default: the ingress gateway pod; namespace
    istio-system).
    """
    from tcpmesh.control import INGRESS_GATEWAY_SELECTOR, labels_match
    from tcpmesh.runtime.images import builtin_image
    from tcpmesh.xds import proxyconfig

    client = ctx.client()
    ns = namespace or ctx.namespace
    if pod is not None and ns is None and "." in pod:
        pod, ns = pod.split(".", 1)
    ns = ns or "istio-system"
    if pod is None:
        gateways = [
            p
            for p in client.list("Pod", ns)
            if labels_match(INGRESS_GATEWAY_SELECTOR, p["metadata"].get("labels") or {})
        ]
        if not gateways:
            fail(f"error: no gateway pod in namespace {ns}; name one")
        pod = str(gateways[0]["metadata"]["name"])
    pod = pod.removeprefix("pod/")
    containers = (client.get("Pod", ns, pod).get("spec") or {}).get("containers") or [{}]
    image = builtin_image(str(containers[0].get("image") or ""))
    table: tuple[list[str], list[list[str]]]
    data: Any
    if image is not None and image.name == "envoy":
        from tcpmesh.xds import read_admin_address

        admin = read_admin_address(ctx.state_dir, ns, pod)
        if admin is None:
            fail(f"error: Envoy of pod {ns}/{pod} has no admin interface yet")
        if what == "endpoints":
            clusters = proxyconfig.fetch_admin(admin, "/clusters?format=json")
            table = proxyconfig.envoy_endpoints(clusters)
            data = proxyconfig.envoy_endpoints_json(clusters)
        else:
            dump = proxyconfig.fetch_admin(admin, "/config_dump")
            if what == "listeners":
                table = proxyconfig.envoy_listeners(dump)
                data = proxyconfig.envoy_listeners_json(dump)
            else:
                table = proxyconfig.envoy_clusters(dump)
                data = proxyconfig.envoy_clusters_json(dump)
    else:
        from tcpmesh.control import Snapshot

        raw = client.snapshot(f"{ns}/{pod}")
        if raw is None:
            fail(f"error: no configuration for proxy {ns}/{pod}")
        snapshot = Snapshot.from_dict(raw)
        table = {
            "listeners": proxyconfig.snapshot_listeners,
            "clusters": proxyconfig.snapshot_clusters,
            "endpoints": proxyconfig.snapshot_endpoints,
        }[what](snapshot)
        data = proxyconfig.snapshot_json(snapshot, what)
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(printers.format_columns(*table))


# ---------------------------------------------------------------- traffic


@cli.command()
@click.argument("target", metavar="HOST:PORT")
@click.option("-c", "--count", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--message", default=None, help="The line to send [default: the current date].")
@click.option("--expect", default=None, help="Expected split, e.g. v1=80,v2=20.")
@click.option(
    "--alpha", type=click.FloatRange(min=0, max=1, min_open=True), default=1e-6, show_default=True
)
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True
)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@friendly_errors
def send(
    target: str,
    count: int,
    concurrency: int,
    message: str | None,
    expect: str | None,
    alpha: float,
    timeout: float,
    output: str,
) -> None:
    """Open N connections, send a line on each, and count the replies by their first word."""
    from tcpmesh.cli import send as send_module

    code = send_module.main(
        target,
        count=count,
        concurrency=concurrency,
        message=message,
        expect=expect,
        alpha=alpha,
        timeout=timeout,
        output=output,
    )
    sys.exit(code)


@cli.group()
def rollout() -> None:
    """Drive a Rollout: progressive delivery with TCP gates."""


_ROLLOUT_HELP = {
    "promote": "Skip the current pause or analysis step.",
    "abort": "Put 100% back on stable at once.",
    "retry": "Start an aborted Rollout again from its first step.",
    "pause": "Hold the Rollout where it is (spec.paused).",
    "resume": "Continue a paused Rollout (also after an inconclusive analysis).",
}


@rollout.command("status")
@click.argument("name")
@namespace_option
@click.option("-w", "--watch", "follow", is_flag=True, help="Print each step until done.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None)
@pass_context
@friendly_errors
def rollout_status(
    ctx: Context, name: str, namespace: str | None, follow: bool, timeout: float | None
) -> None:
    """A Rollout's phase, step, weights and gates; --watch follows it (exit 1 if Degraded)."""
    from tcpmesh.cli import rollout as rollout_cli

    client, ns = ctx.client(), ctx.ns(namespace)
    name = name.removeprefix("rollout/")
    if not follow:
        obj = client.get("Rollout", ns, name)
        click.echo("\n".join(rollout_cli.summary(obj)))
        return
    phase = None
    try:
        for line, obj in rollout_cli.watch(lambda: client.get("Rollout", ns, name), name, timeout):
            click.echo(line)
            phase = (obj.get("status") or {}).get("phase")
    except rollout_cli.RolloutCommandError as exc:
        fail(str(exc))
    if phase != "Healthy":
        sys.exit(1)


def _rollout_action(action: str) -> None:
    @rollout.command(action, help=_ROLLOUT_HELP[action])
    @click.argument("name")
    @namespace_option
    @pass_context
    @friendly_errors
    def command(ctx: Context, name: str, namespace: str | None) -> None:
        from tcpmesh.cli import rollout as rollout_cli

        try:
            line = rollout_cli.request(
                ctx.client(), ctx.ns(namespace), name.removeprefix("rollout/"), action
            )
        except rollout_cli.RolloutCommandError as exc:
            fail(str(exc))
        click.echo(line)


for _action in _ROLLOUT_HELP:
    _rollout_action(_action)


@cli.command()
@click.argument("target", metavar="vs/NAME")
@namespace_option
@click.option(
    "--over",
    metavar="DURATION",
    default=None,
    help="Spread the closes over this long, with jitter [default: the VirtualService's, or 30s].",
)
@click.option(
    "--max-share",
    metavar="P",
    default=None,
    help="Close at most this share of the open connections, e.g. 25% [default: 100%].",
)
@pass_context
@friendly_errors
def rebalance(
    ctx: Context, target: str, namespace: str | None, over: str | None, max_share: str | None
) -> None:
    """Move the fewest open connections needed to bring each version to its weight."""
    from tcpmesh.cli import rebalance as rebalance_cli

    try:
        name = rebalance_cli.vs_name(target)
        rebalance_cli.check_settings(over, max_share)
    except rebalance_cli.RebalanceError as exc:
        fail(str(exc))
    click.echo(rebalance_cli.request(ctx.client(), ctx.ns(namespace), name, over, max_share))


@cli.command()
@click.argument("target", metavar="[vs/NAME]", required=False)
@namespace_option
@click.option("--once", is_flag=True, help="Print one reading over --window and exit.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option(
    "--window",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds over which shares and rates are observed.",
)
@click.option(
    "--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True, help="Refresh."
)
@pass_context
@friendly_errors
def top(
    ctx: Context,
    target: str | None,
    namespace: str | None,
    once: bool,
    output: str,
    window: float,
    interval: float,
) -> None:
    """Live per-route, per-destination view: weight, observed share, active, rates, failures."""
    from rich.console import Console

    from tcpmesh.cli import top as top_module
    from tcpmesh.telemetry import Sampler

    name = None
    if target is not None:
        kind, sep, name = target.partition("/")
        if not sep or not name or _resolve_kind(kind).kind != "VirtualService":
            fail(f"error: top takes vs/NAME, not {target!r}")
    ns = ctx.ns(namespace)
    sampler = Sampler(ctx.client(), name, ns)
    if name is not None:
        routes, _ = sampler.read()
        if not routes:
            fail(f'error: no proxy serves a route of VirtualService "{name}" in namespace "{ns}"')
    if once or output == "json":
        document = top_module.once(sampler, window)
        if output == "json":
            click.echo(json.dumps(document, indent=2))
        else:
            Console().print(top_module.table(document, document["errors"]))
        return
    try:
        top_module.live(sampler, window, interval, Console())
    except KeyboardInterrupt:
        return


@cli.command("console")
@click.option("--with-token", is_flag=True, help="Print a login link that carries the token.")
@click.option("--no-browser", is_flag=True, help="Do not open a browser.")
@pass_context
@friendly_errors
def console_command(ctx: Context, with_token: bool, no_browser: bool) -> None:
    """Print the web console's URL and open a browser where one exists."""
    from tcpmesh.apiserver.credentials import read_credentials
    from tcpmesh.console import console_url

    creds = read_credentials(ctx.state_dir)
    if creds is None or lifecycle.running_client(ctx.state_dir) is None:
        fail(
            f"error: tcpmesh is not running (state directory {ctx.state_dir}); "
            "start it with `tcpmesh up`"
        )
    url = console_url(creds.url)
    # The token travels in the fragment: browsers never send it, servers never log it.
    login = f"{url}#token={creds.token}"
    click.echo(url)
    if with_token:
        click.echo(login)
    if not no_browser and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        import webbrowser

        webbrowser.open(login)


@cli.command()
@click.option("--keep", is_flag=True, help="Leave the mesh and the sample running at the end.")
@pass_context
@friendly_errors
def demo(ctx: Context, keep: bool) -> None:
    """The seed's TCP traffic-shifting walkthrough, end to end, narrated."""
    from tcpmesh.cli.demo import run_demo

    sys.exit(run_demo(ctx.state_dir, keep=keep))


# ---------------------------------------------------------------- peers on other hosts


@cli.group()
def token() -> None:
    """Bootstrap tokens for `gateway join` and `workload join` (stored hashed)."""


@token.command("create")
@click.option("--ttl", default="24h", show_default=True, help="Lifetime; 0 never expires.")
@click.option("--description", default="", help="What the token is for.")
@click.option("--print-join-command", is_flag=True, help="Print the join flags as well.")
@click.option("--gateway", metavar="NS/NAME", help="Only for hosts of this gateway Deployment.")
@click.option(
    "--workload-group", metavar="NS/NAME", help="Only for workloads of this WorkloadGroup."
)
@pass_context
@friendly_errors
def token_create(
    ctx: Context,
    ttl: str,
    description: str,
    print_join_command: bool,
    gateway: str | None,
    workload_group: str | None,
) -> None:
    """Create a token and print it. Without --gateway or --workload-group it bootstraps
    any gateway or workload host."""
    from tcpmesh.apiserver.pki import ca_cert_path, ca_public_key_hash
    from tcpmesh.cli import join

    client = ctx.client()
    lines = join.token_create(client, ttl, description, gateway, workload_group)
    if print_join_command:
        from cryptography import x509

        listen = client.status().get("listen")
        if not listen:
            fail("error: this mesh does not listen for other hosts; start it with --bind-address")
        cert = x509.load_pem_x509_certificate(ca_cert_path(ctx.state_dir).read_bytes())
        lines = [f"--server {listen} --token {lines[0]} --ca-cert-hash {ca_public_key_hash(cert)}"]
    click.echo("\n".join(lines))


@token.command("list")
@pass_context
@friendly_errors
def token_list(ctx: Context) -> None:
    """The tokens: id, expiry, scope, description (never the secret)."""
    from tcpmesh import join as tokens

    rows = [("TOKEN-ID", "EXPIRES", "SCOPE", "DESCRIPTION")]
    for obj in ctx.client().list("Secret", tokens.TOKEN_NAMESPACE):
        if obj.get("type") != tokens.TOKEN_TYPE:
            continue
        expires = tokens.expiration(obj)
        token_id = obj["metadata"]["name"].removeprefix(tokens.TOKEN_PREFIX)
        try:
            scope = str(tokens.scope_of(obj) or "any")
        except tokens.TokenError:
            scope = "unreadable"
        when = expires.isoformat() if expires else "never"
        rows.append((token_id, when, scope, tokens.description(obj)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        click.echo("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@token.command("delete")
@click.argument("token_ids", nargs=-1, required=True)
@pass_context
@friendly_errors
def token_delete(ctx: Context, token_ids: tuple[str, ...]) -> None:
    """Revoke tokens, and every certificate issued against them."""
    from tcpmesh import join as tokens

    client = ctx.client()
    for token_id in token_ids:
        client.delete("Secret", tokens.TOKEN_NAMESPACE, tokens.secret_name(token_id.split(".")[0]))
        click.echo(f'bootstrap token "{token_id.split(".")[0]}" deleted')


_join_options = [
    click.option(
        "--server", "servers", required=True, help="https://HOST:PORT[,...]: any replica."
    ),
    click.option("--token", default="", help="A bootstrap token (`tcpmesh token create`)."),
    click.option("--ca-cert-hash", default=None, help="sha256:... of the mesh CA's public key."),
    click.option(
        "--certificate-authority",
        "ca_file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="The mesh's CA certificate (instead of --ca-cert-hash).",
    ),
    click.option("--address", required=True, help="This host's address (the peer's IP)."),
    click.option("--node-name", "node", default=None, help="This host's name [hostname]."),
]


def join_options(func: F) -> F:
    for option in reversed(_join_options):
        func = option(func)
    return func


@cli.group()
def gateway() -> None:
    """Gateways on other hosts."""


@gateway.command("join")
@join_options
@click.option("--gateway", "name", required=True, help="The gateway Deployment to serve.")
@click.option(
    "--dataplane", type=click.Choice(["python", "envoy"]), default="python", show_default=True
)
@click.option(
    "--xds-port",
    type=click.IntRange(1, 65535),
    default=15012,
    show_default=True,
    help="With --dataplane envoy: the servers' ADS port (their `up --xds-port`).",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@relay_option
@engine_option
@namespace_option
@pass_context
def gateway_join(ctx: Context, /, **flags: Any) -> None:
    """Run a gateway on this host for a gateway Deployment of a running mesh."""
    from tcpmesh.cli.join import run_join

    if flags["dataplane"] == "envoy" and _given("relay") and flags["relay"] != "auto":
        fail(f"error: --relay {flags['relay']}: only the built-in data plane has a relay choice")
    flags["engine"] = _engine_for(flags["dataplane"], flags["engine"])
    if flags["dataplane"] == "envoy":
        from tcpmesh.xds import missing_envoy_support

        missing = missing_envoy_support()
        if missing is not None:
            fail(f"error: --dataplane envoy: {missing}")
    flags["namespace"] = flags["namespace"] or ctx.namespace or "istio-system"
    sys.exit(run_join("gateway", ctx.state_dir, **flags))


@cli.group()
def workload() -> None:
    """Workloads on other hosts (Istio's WorkloadGroup auto-registration)."""


@workload.command("join")
@join_options
@click.option("--group", "name", required=True, help="The WorkloadGroup this host belongs to.")
@namespace_option
@pass_context
def workload_join(ctx: Context, /, **flags: Any) -> None:
    """Register this host as a WorkloadEntry of a WorkloadGroup until stopped."""
    from tcpmesh.cli.join import run_join

    flags["namespace"] = ctx.ns(flags["namespace"])
    sys.exit(run_join("workload", ctx.state_dir, **flags))


def main() -> None:
    cli(prog_name="tcpmesh")
