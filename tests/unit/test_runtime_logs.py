"""Pod logs rotate by size and keep a bounded number of older files."""

from __future__ import annotations

from pathlib import Path

from tcpmesh.runtime import logs


def test_small_log_is_left_alone(tmp_path: Path) -> None:
    log = tmp_path / "pod.log"
    log.write_bytes(b"x" * 100)
    assert not logs.rotate_if_large(log, max_bytes=100)
    assert log.read_bytes() == b"x" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pod.log"]


def test_large_log_is_copied_then_truncated_and_appends_continue(tmp_path: Path) -> None:
    log = tmp_path / "pod.log"
    with open(log, "ab") as writer:  # a pod process holds its log like this
        writer.write(b"a" * 101)
        writer.flush()
        assert logs.rotate_if_large(log, max_bytes=100)
        writer.write(b"next\n")
        writer.flush()
    assert (tmp_path / "pod.log.1").read_bytes() == b"a" * 101
    assert log.read_bytes() == b"next\n"


def test_only_max_files_are_kept(tmp_path: Path) -> None:
    log = tmp_path / "pod.log"
    for generation in range(6):
        log.write_bytes(str(generation).encode() * 200)
        assert logs.rotate_if_large(log, max_bytes=100, max_files=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pod.log", "pod.log.1", "pod.log.2"]
    assert (tmp_path / "pod.log.1").read_bytes() == b"5" * 200
    assert (tmp_path / "pod.log.2").read_bytes() == b"4" * 200


def test_remove_deletes_rotated_copies(tmp_path: Path) -> None:
    log = tmp_path / "pod.log"
    for name in ("pod.log", "pod.log.1", "pod.log.2", "other.log"):
        (tmp_path / name).write_text(name)
    logs.remove(log)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.log"]
