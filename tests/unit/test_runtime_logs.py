"""Pod logs rotate on the write side: no file ever passes the cap, whatever the rate."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tcpmesh.runtime import logs
from tcpmesh.runtime.logwriter import RotatingFile


def sizes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir())}


def test_a_write_that_would_pass_the_cap_rotates_first_and_splits(tmp_path: Path) -> None:
    log = tmp_path / "pod.log"
    target = RotatingFile(log, max_bytes=100, max_files=3)
    target.write(b"a" * 60)
    target.write(b"b" * 60)  # 40 fit, 20 go to the next file
    target.close()
    assert (tmp_path / "pod.log.1").read_bytes() == b"a" * 60 + b"b" * 40
    assert log.read_bytes() == b"b" * 20


def test_only_max_files_are_kept_and_none_is_over_the_cap(tmp_path: Path) -> None:
    log = tmp_path / "pod.log"
    target = RotatingFile(log, max_bytes=100, max_files=3)
    for generation in range(10):
        target.write(str(generation).encode() * 100)
    target.write(b"x" * 150)
    target.close()
    assert sizes(tmp_path) == {"pod.log": 50, "pod.log.1": 100, "pod.log.2": 100}
    assert (tmp_path / "pod.log.2").read_bytes() == b"9" * 100
    assert (tmp_path / "pod.log.1").read_bytes() == b"x" * 100


def test_it_continues_a_file_it_finds(tmp_path: Path) -> None:
    log = tmp_path / "pod.log"
    log.write_bytes(b"o" * 90)
    target = RotatingFile(log, max_bytes=100, max_files=2)
    target.write(b"n" * 20)
    target.close()
    assert sizes(tmp_path) == {"pod.log": 10, "pod.log.1": 100}


def test_the_writer_process_copies_a_pipe_until_it_closes(tmp_path: Path) -> None:
    log = tmp_path / "pod.log"
    argv = logs.writer_argv(log, max_bytes=1000, max_files=5)
    writer = subprocess.Popen(argv, stdin=subprocess.PIPE)
    assert writer.stdin is not None
    for i in range(100):
        writer.stdin.write(f"line {i:03}\n".encode())  # 9 bytes each
    writer.stdin.close()
    assert writer.wait(30) == 0
    assert sizes(tmp_path) == {"pod.log": 900}
    assert log.read_bytes().endswith(b"line 099\n")
    # It is private, like everything in the state directory.
    assert os.stat(log).st_mode & 0o077 == 0


def test_remove_deletes_rotated_copies(tmp_path: Path) -> None:
    log = tmp_path / "pod.log"
    for name in ("pod.log", "pod.log.1", "pod.log.2", "other.log"):
        (tmp_path / name).write_text(name)
    logs.remove(log)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.log"]
