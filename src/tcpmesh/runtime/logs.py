"""Pod log files, bounded as the kubelet bounds container logs: 10 MiB, five files.

A container's stdout and stderr go into a pipe whose reader is a small log writer
process per container (:mod:`tcpmesh.runtime.logwriter`). The writer rotates before a
write would pass the cap, so no file ever grows beyond it, however fast the container
writes (copy-then-truncate from outside cannot promise that: a chatty pod outran it by
gigabytes). The writer outlives a crash of the mesh together with its container.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from tcpmesh.runtime import logwriter

# The kubelet's defaults: containerLogMaxSize 10Mi, containerLogMaxFiles 5.
MAX_BYTES = 10 * 1024 * 1024
MAX_FILES = 5


def writer_argv(path: Path, max_bytes: int = MAX_BYTES, max_files: int = MAX_FILES) -> list[str]:
    """The log writer's command line: run by path without site, so it starts small."""
    script = str(Path(logwriter.__file__).resolve())
    return [sys.executable, "-S", script, str(path), str(max_bytes), str(max_files)]


def all_files(path: Path) -> Iterator[Path]:
    """The log file and its rotated copies."""
    yield path
    yield from path.parent.glob(f"{path.name}.*")


def remove(path: Path) -> None:
    for file in list(all_files(path)):
        file.unlink(missing_ok=True)
