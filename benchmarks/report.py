"""How every benchmark script ends: its results as JSON on stdout and, with --out, in a file.

The machine's load after the run goes in too, so a reader can tell a quiet run from a
disturbed one without the log.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def finish(results: dict[str, Any], out: Path | None) -> int:
    """Print ``results`` (and write them to ``out``); the script's exit status."""
    results["loadavg_after"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    print(text)
    if out is not None:
        out.write_text(text + "\n")
    return 0
