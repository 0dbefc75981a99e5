#!/usr/bin/env bash
# Set up, then run the seed's TCP traffic-shifting scenario end to end on the built-in data plane.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
exec "$root/.venv/bin/tcpmesh" demo "$@"
