#!/usr/bin/env bash
# A benchmark backend, run as a tcpmesh pod (a Deployment whose container has `command:`).
# It binds the pod's own loopback address ($POD_IP) and stays in the foreground, so the
# runtime owns its pid and stops it with the pod.
#
#   backend.sh http NAME PORT   nginx answering every request with "NAME\n" (tiny, fast)
#   backend.sh sockperf PORT    sockperf server (TCP), the far end of the ping-pong test
#   backend.sh iperf3 PORT      iperf3 server, the far end of the throughput test
set -euo pipefail
ip="${POD_IP:?POD_IP is not set: run this as a tcpmesh pod}"
kind="${1:?usage: backend.sh http NAME PORT | sockperf PORT | iperf3 PORT}"
shift
case "$kind" in
http)
    name="$1" port="$2"
    # Under the mesh's state directory, which the benchmark removes when it ends.
    dir="${TCPMESH_STATE_DIR:-${TMPDIR:-/tmp}}/bench-nginx/${POD_NAME:-$$}"
    mkdir -p "$dir"
    # One process (master_process off) so the pod's pid is nginx itself; idle client
    # connections are kept for minutes so the memory test can hold thousands open.
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process off;
pid $dir/nginx.pid;
error_log stderr warn;
worker_rlimit_nofile 20000;
events { worker_connections 20000; multi_accept on; }
http {
    access_log off;
    default_type text/plain;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    client_header_timeout 600s;
    server {
        listen $ip:$port backlog=4096;
        location / { return 200 "$name\n"; }
    }
}
EOF
    exec nginx -e stderr -p "$dir" -c "$dir/nginx.conf"
    ;;
sockperf)
    exec sockperf server --tcp -i "$ip" -p "$1"
    ;;
iperf3)
    exec iperf3 --server --bind "$ip" --port "$1"
    ;;
*)
    echo "backend.sh: unknown backend kind $kind" >&2
    exit 2
    ;;
esac
