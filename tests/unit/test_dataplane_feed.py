"""The sans-IO parts of the snapshot feed: NDJSON framing and the credentials file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcpmesh.dataplane.feed import LineSplitter, SnapshotFeed


def test_line_splitter_reassembles_lines_across_chunks() -> None:
    s = LineSplitter()
    assert s.feed(b'{"a":') == []
    assert s.feed(b'1}\n{"b"') == [b'{"a":1}']
    assert s.feed(b":2}\n\n") == [b'{"b":2}', b""]


def test_line_splitter_refuses_endless_lines() -> None:
    s = LineSplitter(max_line=8)
    with pytest.raises(ValueError):
        s.feed(b"x" * 9)


def test_credentials_come_from_the_state_dir_first(tmp_path: Path) -> None:
    fixed = SnapshotFeed("http://127.0.0.1:1", "fixed", "ns/pod", state_dir=tmp_path)
    creds = fixed._credentials()
    assert creds is not None and (creds.url, creds.token) == ("http://127.0.0.1:1", "fixed")
    (tmp_path / "apiserver.json").write_text(
        json.dumps({"url": "http://127.0.0.1:8443", "token": "t0k", "pid": 1})
    )
    creds = fixed._credentials()
    assert creds is not None and (creds.url, creds.token) == ("http://127.0.0.1:8443", "t0k")
    assert SnapshotFeed(None, None, "ns/pod", state_dir=tmp_path / "none")._credentials() is None
