"""A pod container's log writer: the kubelet's rotation, done on the write side.

``python -S logwriter.py PATH MAX_BYTES MAX_FILES`` copies its standard input (the read
end of the container's stdout/stderr pipe) into ``PATH``, and rotates before a write
would take the file past ``MAX_BYTES``: ``PATH`` becomes ``PATH.1`` (``PATH.1`` becomes
``PATH.2``, and so on, ``MAX_FILES - 1`` older files at most) and a new ``PATH`` is
opened. No file ever exceeds the cap, whatever the write rate: a container that writes
faster than the disk takes blocks on its full pipe, as it would under the kubelet.

It is a process of its own, not a task of the mesh, so that a container's output still
goes somewhere when the mesh is gone: it outlives a crash of the mesh with the
container and ends when the container's last writer closes the pipe. It imports only the
standard library (run by path, without site), so it costs a few MiB per container.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

CHUNK = 1024 * 1024


def rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


class RotatingFile:
    """Appends to ``path``; before it would pass ``max_bytes``, shifts the older files."""

    def __init__(self, path: Path, max_bytes: int, max_files: int) -> None:
        self.path, self.max_bytes, self.max_files = path, max_bytes, max_files
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = self.max_bytes - self._size
            if room <= 0:
                self.rotate()
                continue
            written = os.write(self._fd, view[:room])
            self._size += written
            view = view[written:]

    def rotate(self) -> None:
        os.close(self._fd)
        for index in range(self.max_files - 1, 1, -1):
            older = rotated(self.path, index - 1)
            if older.exists():
                older.replace(rotated(self.path, index))
        if self.max_files > 1:
            self.path.replace(rotated(self.path, 1))
        else:
            self.path.unlink(missing_ok=True)
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        os.close(self._fd)


def copy(source: int, target: RotatingFile) -> None:
    while True:
        try:
            data = os.read(source, CHUNK)
        except InterruptedError:
            continue
        if not data:
            return
        target.write(data)


def main(argv: list[str]) -> int:
    # The container's signals are not ours: its group may get a SIGTERM, and the log
    # must still take what the container writes while it shuts down.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    path, max_bytes, max_files = Path(argv[0]), int(argv[1]), int(argv[2])
    target = RotatingFile(path, max_bytes, max_files)
    try:
        copy(0, target)
    finally:
        target.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
