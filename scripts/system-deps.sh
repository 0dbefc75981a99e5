#!/usr/bin/env bash
# Install the system packages the tests need (real clients and servers: chromium, prometheus,
# etcd, iproute2, ...). Each part of the suite declares its own in scripts/system-deps/*.sh,
# sourced here in name order; each may call `need_apt PACKAGE...`, which installs only what
# is missing. Needs root (CI and this project's machines run as root); elsewhere it says what
# it would install and goes on, and the tests that need a missing tool fail with its name.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
apt_updated=0
need_apt() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "system-deps: not root; the tests need: ${missing[*]}" >&2
        return 0
    fi
    if [ "$apt_updated" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
for part in "$root"/scripts/system-deps/*.sh; do
    [ -e "$part" ] || continue
    # shellcheck source=/dev/null
    source "$part"
done
