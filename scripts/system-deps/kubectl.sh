#!/usr/bin/env bash
# kubectl 1.20 (Debian's kubernetes-client) for the old-client tests, unpacked into the
# repository's ignored .cache/ -- never installed: the package would replace the image's
# /usr/bin/kubectl (a dispatcher bundling 1.27-1.33 that the other tests use).
# Sourced by scripts/system-deps.sh; also runnable on its own (the tests run it when the
# binary is missing).
kubectl_old_fetch() {
    local root dest tmp
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    dest="$root/.cache/kubectl-1.20"
    [ -x "$dest/usr/bin/kubectl" ] && return 0
    tmp="$(mktemp -d)"
    if ! (cd "$tmp" && apt-get download -qq kubernetes-client >/dev/null 2>&1); then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        (cd "$tmp" && apt-get download -qq kubernetes-client >/dev/null 2>&1)
    fi
    mkdir -p "$dest.partial"
    dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$dest.partial"
    rm -rf "$tmp" "$dest"
    mv "$dest.partial" "$dest"
}
kubectl_old_fetch
