#!/usr/bin/env bash
# Create .venv beside the sources and install tcpmesh into it (editable), with EXTRAS if given.
# Needs only python3 (3.11+) with venv and pip, which a fresh machine has.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tcpmesh needs Python 3.11 or newer")'
if [ ! -x "$root/.venv/bin/python" ]; then
    "$python" -m venv "$root/.venv"
fi
"$root/.venv/bin/python" -m pip install --quiet --upgrade pip
spec="$root"
[ -n "$extras" ] && spec="$root[$extras]"
"$root/.venv/bin/python" -m pip install --quiet --editable "$spec"
