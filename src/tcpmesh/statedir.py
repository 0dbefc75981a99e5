"""The state directory is private: 0700, and every file in it 0600.

It holds the store (Secrets among the objects, once TLS credentials are stored), the API
token, pod logs and pid files; other local users must read none of it. The mesh sets a
umask of 077 before it creates anything, so the files of every component and of every
pod process are created private, and :func:`make_private` repairs a directory an older
version (or another tool) left readable.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077


def make_private(state_dir: Path) -> None:
    """Create ``state_dir`` if needed; set the modes of it and everything in it."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
    state_dir.chmod(DIRECTORY_MODE)
    for root, dirs, files in os.walk(state_dir):
        for name in dirs:
            _chmod(Path(root, name), DIRECTORY_MODE)
        for name in files:
            _chmod(Path(root, name), FILE_MODE)


def _chmod(path: Path, mode: int) -> None:
    # Symbolic links are left alone (chmod would follow them out of the directory);
    # a file removed meanwhile needs no mode.
    if path.is_symlink():
        return
    with contextlib.suppress(FileNotFoundError):
        path.chmod(mode)


def private_umask() -> int:
    """Set the umask that keeps new files private; returns the previous one."""
    return os.umask(UMASK)
