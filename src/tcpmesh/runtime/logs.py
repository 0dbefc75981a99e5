"""Pod log files, rotated by size as the kubelet rotates container logs.

Pod processes write straight into their log file (opened with O_APPEND), so rotation is
copy-then-truncate: the writer keeps its descriptor and its next write lands at the start
of the emptied file. Lines written between the copy and the truncation are lost, the same
trade-off logrotate's ``copytruncate`` makes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

# The kubelet's defaults: containerLogMaxSize 10Mi, containerLogMaxFiles 5.
MAX_BYTES = 10 * 1024 * 1024
MAX_FILES = 5


def rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def rotate_if_large(path: Path, max_bytes: int = MAX_BYTES, max_files: int = MAX_FILES) -> bool:
    """Keep ``path`` under ``max_bytes``, with ``max_files - 1`` older files beside it."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for index in range(max_files - 1, 1, -1):
        older = rotated(path, index - 1)
        if older.exists():
            older.replace(rotated(path, index))
    shutil.copyfile(path, rotated(path, 1))
    os.truncate(path, 0)
    return True


def all_files(path: Path) -> Iterator[Path]:
    """The log file and its rotated copies."""
    yield path
    yield from path.parent.glob(f"{path.name}.*")


def remove(path: Path) -> None:
    for file in list(all_files(path)):
        file.unlink(missing_ok=True)
