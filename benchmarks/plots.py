"""The plots in docs/benchmarks.md, from the JSON the benchmarks wrote.

    benchmarks/.venv/bin/python benchmarks/plots.py [--runs 8]

- ``docs/images/bench-ratios.png``: each metric of ``bench.py`` as a ratio to Envoy's
  median in the same run, for tcpmesh, HAProxy and nginx, over the last ``--runs`` runs in
  ``benchmarks/results/`` (one point per run; a hollow marker: the run was disturbed by
  other load on the machine), with the issue's target for tcpmesh as a dashed line;
- ``docs/images/control-scale.png``: ``control_scale.py``'s curves against the number of
  VirtualServices (``benchmarks/results/control-scale.json``), log-log with a line of
  slope 1 (linear cost) for reference, the apply cost before the incremental rebuild
  (``control-scale-full-rebuild.json``, the 2026-12-02 01:50 run) and the first
  incremental run's, which timed the gateway's Snapshot only
  (``control-scale-gateway-only.json``, 05:00);
- ``docs/images/control-scale-envoy.png``: ``control_scale.py --envoy-only``'s curves
  (``control-scale-envoy.json``): apply -> Envoy ACK and Envoy's first push against the
  number of VirtualServices, with the apply -> ACK before the push sent only what changed
  (``control-scale-envoy-before.json``, the 2026-12-02 05:00-05:30 runs).

matplotlib (in the benchmark's own venv, installed by run.sh); it reads no tcpmesh code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
IMAGES = HERE.parent / "docs" / "images"
# bench.py's summary keys, their titles, and the target for tcpmesh (ratio to Envoy).
METRICS = [
    ("new_conns_rps", "new connections/s", 1.0, "≥"),
    ("keepalive_rps", "keep-alive requests/s", 1.0, "≥"),
    ("throughput", "single-stream throughput", 1.0, "≥"),
    ("rtt_p99", "64 B round trip p99", 1.2, "≤"),
    ("idle_kib", "memory per idle connection", 0.25, "≤"),
]
PROXIES = [("tcpmesh", "o", "tab:blue"), ("haproxy", "s", "tab:green"), ("nginx", "^", "tab:red")]


def bench_runs(limit: int) -> list[dict[str, Any]]:
    files = sorted(p for p in RESULTS.glob("2*.json"))
    return [json.loads(p.read_text()) for p in files[-limit:]]


def disturbed(run: dict[str, Any], proxy: str) -> bool:
    return any(r.get("proxy") == proxy and r.get("disturbed") for r in run.get("runs", []))


def plot_ratios(runs: list[dict[str, Any]], out: Path) -> None:
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.6), sharex=True)
    labels = [r["date"].replace(" UTC", "") for r in runs]
    xs = list(range(len(runs)))
    for ax, (key, title, target, sense) in zip(axes, METRICS, strict=True):
        for proxy, marker, color in PROXIES:
            points = [
                (x, run["summary"].get(proxy, {}).get(key, {}).get("vs_envoy"), run)
                for x, run in zip(xs, runs, strict=True)
            ]
            shown = [(x, y, run) for x, y, run in points if y is not None]
            if not shown:
                continue
            ax.plot([x for x, _, _ in shown], [y for _, y, _ in shown], color=color, lw=1)
            for x, y, run in shown:
                hollow = disturbed(run, proxy)
                ax.plot(x, y, marker, color=color, mfc="none" if hollow else color)
            ax.plot([], [], marker, color=color, label=proxy)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.axhline(target, color="tab:blue", ls="--", lw=1, label=f"target {sense} {target}x")
        ax.set_title(f"{title}\n(÷ Envoy, same run)", fontsize=10)
        ax.set_xticks(xs, labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle("Ratio to Envoy per run (hollow: run disturbed by other load)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


SCALE_CURVES = [
    ("build_gateway_cpu_ms", "full build_snapshot, gateway (CPU ms)", "-"),
    ("build_node_proxy_cpu_ms", "full build_snapshot, node proxy (CPU ms)", "-"),
    ("xds_encode_cpu_ms", "xDS protobuf encode of everything (CPU ms)", "-"),
    ("apply_to_effect_cpu_ms_p50", "apply → in effect, gateway + node proxy (CPU ms, p50)", "-"),
    ("apply_to_effect_cpu_ms_p99", "apply → in effect, gateway + node proxy (CPU ms, p99)", "-"),
    ("build_cpu_ms_p99", "  of it: the control plane's two builds (CPU ms, p99)", "--"),
    ("dataplane_parse_cpu_ms_p99", "  of it: the two proxies' JSON parse (CPU ms, p99)", "--"),
    ("apply_to_effect_ms_p99", "apply → in effect (wall ms, p99)", "-."),
]
# The same benchmark before the incremental rebuild (every apply rebuilt everything), and
# the first incremental run, which timed the gateway's Snapshot only, in one process.
BEFORE = ("apply_to_effect_cpu_ms_p50", "before: apply → in effect, full rebuild (CPU ms)")
GATEWAY_ONLY = ("apply_to_effect_cpu_ms_p99", "05:00 run: gateway's Snapshot only (CPU ms, p99)")


def plot_scale(
    data: dict[str, Any],
    before: dict[str, Any] | None,
    gateway_only: dict[str, Any] | None,
    out: Path,
) -> None:
    sizes = sorted(data["sizes"], key=int)
    ns = [int(n) for n in sizes]
    fig, (ax, mem) = plt.subplots(1, 2, figsize=(13, 5.2))
    for key, title, style in SCALE_CURVES:
        _curve(ax, data, key, title, "o" + style)
    if before is not None:
        _curve(ax, before, BEFORE[0], BEFORE[1], "x:")
    if gateway_only is not None:
        _curve(ax, gateway_only, GATEWAY_ONLY[0], GATEWAY_ONLY[1], "+:")
    if ns:
        first = data["sizes"][sizes[0]].get("build_gateway_cpu_ms") or 1.0
        ax.plot(ns, [first * n / ns[0] for n in ns], "k:", lw=0.8, label="linear (slope 1)")
    ax.axhline(100, color="tab:red", ls="--", lw=1, label="100 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("VirtualServices (each with a Service, DestinationRule, 2 pods, Endpoints)")
    ax.set_ylabel("ms")
    ax.legend(fontsize=6.5)
    ax.set_title("Control plane cost against size", fontsize=10)
    for key, title in (
        ("typed_bytes_per_object", "typed object (tracemalloc)"),
        ("control_plane_rss_bytes_per_object", "control plane RSS growth (copy, cache, Snapshot)"),
    ):
        pts = [(int(n), data["sizes"][n].get(key)) for n in sizes]
        pts = [(n, y / 1024) for n, y in pts if y]
        mem.plot([n for n, _ in pts], [y for _, y in pts], "o-", label=title)
    mem.set_xscale("log")
    mem.set_ylim(bottom=0)
    mem.set_xlabel("VirtualServices")
    mem.set_ylabel("KiB per stored object")
    mem.legend(fontsize=7)
    mem.set_title("Memory per object", fontsize=10)
    fig.suptitle(f"control_scale.py ({data.get('note', '')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _linear(ax: Any, data: dict[str, Any], key: str) -> None:
    """A line of slope 1 through the curve's largest point: linear cost, for reference."""
    pts = [(int(n), row[key]) for n, row in data["sizes"].items() if row.get(key)]
    if pts:
        top, y = max(pts)
        ns = sorted(n for n, _ in pts)
        ax.plot(ns, [y * n / top for n in ns], "k:", lw=0.8, label="linear (slope 1)")


def _curve(ax: Any, data: dict[str, Any], key: str, title: str, style: str) -> None:
    sizes = sorted(data["sizes"], key=int)
    pts = [(int(n), data["sizes"][n].get(key)) for n in sizes]
    pts = [(n, y) for n, y in pts if y]
    if pts:
        ax.plot([n for n, _ in pts], [y for _, y in pts], style, label=title)


ENVOY_CURVES = [
    ("envoy_apply_to_ack_cpu_ms_p50", "apply → Envoy ACK, control-plane CPU p50", "-"),
    ("envoy_apply_to_ack_cpu_ms_p99", "apply → Envoy ACK, control-plane CPU p99", "--"),
    ("envoy_apply_to_ack_ms_p50", "apply → Envoy ACK, wall p50", "-."),
    ("envoy_apply_to_ack_ms_p99", "apply → Envoy ACK, wall p99", ":"),
]
FIRST_PUSH_CURVES = [
    ("envoy_first_snapshot_acked_ms", "first push, wall (stream to last ACK)", "-"),
    ("envoy_first_push_server_cpu_ms", "first push, control-plane CPU", "--"),
    ("envoy_first_push_envoy_cpu_ms", "Envoy's CPU (start + first push)", "-."),
]


def plot_envoy_scale(data: dict[str, Any], before: dict[str, Any] | None, out: Path) -> None:
    fig, (ax, first) = plt.subplots(1, 2, figsize=(13, 5.2))
    for key, title, style in ENVOY_CURVES:
        _curve(ax, data, key, title, "o" + style)
    if before is not None:
        _curve(ax, before, ENVOY_CURVES[0][0], "CPU p50 before (whole sets per push)", "x:")
        _curve(ax, before, ENVOY_CURVES[1][0], "CPU p99 before", "+:")
    _linear(ax, data, ENVOY_CURVES[0][0])
    ax.axhline(100, color="tab:red", ls="--", lw=1, label="100 ms")
    for axis, title in ((ax, "Apply → Envoy ACK (one weight flip)"), (first, "First push")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("VirtualServices (each with a Service, DestinationRule, 2 pods)")
        axis.set_ylabel("ms")
        axis.set_title(title, fontsize=10)
    for key, title, style in FIRST_PUSH_CURVES:
        _curve(first, data, key, title, "o" + style)
    ax.legend(fontsize=6.5)
    first.legend(fontsize=6.5)
    fig.suptitle(f"control_scale.py --envoy-only ({data.get('note', '')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=8, help="bench.py runs to show (the last)")
    args = p.parse_args(argv)
    IMAGES.mkdir(parents=True, exist_ok=True)
    runs = bench_runs(args.runs)
    if runs:
        plot_ratios(runs, IMAGES / "bench-ratios.png")
        print(f"wrote {IMAGES / 'bench-ratios.png'} ({len(runs)} runs)")
    scale = RESULTS / "control-scale.json"
    if scale.exists():
        old, gateway_only = (
            json.loads(path.read_text()) if path.exists() else None
            for path in (
                RESULTS / "control-scale-full-rebuild.json",
                RESULTS / "control-scale-gateway-only.json",
            )
        )
        plot_scale(json.loads(scale.read_text()), old, gateway_only, IMAGES / "control-scale.png")
        print(f"wrote {IMAGES / 'control-scale.png'}")
    envoy = RESULTS / "control-scale-envoy.json"
    envoy_before = RESULTS / "control-scale-envoy-before.json"
    if envoy.exists():
        old = json.loads(envoy_before.read_text()) if envoy_before.exists() else None
        plot_envoy_scale(json.loads(envoy.read_text()), old, IMAGES / "control-scale-envoy.png")
        print(f"wrote {IMAGES / 'control-scale-envoy.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
