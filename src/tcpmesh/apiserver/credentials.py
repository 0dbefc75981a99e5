"""The API server's address and token in the state directory, like a kubeconfig."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

FILENAME = "apiserver.json"


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str
    pid: int


def new_token() -> str:
    return secrets.token_urlsafe(32)


def credentials_path(state_dir: Path) -> Path:
    return state_dir / FILENAME


def write_credentials(state_dir: Path, url: str, token: str, pid: int) -> Path:
    """Write the file with mode 0600, atomically: readers see the old file or the new one."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = credentials_path(state_dir)
    tmp = path.with_name(f".{FILENAME}.{os.getpid()}.tmp")
    # Created 0600 from the start so the token is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"url": url, "token": token, "pid": pid}, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # O_CREAT leaves an existing file's mode alone
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_credentials(state_dir: Path) -> Credentials | None:
    """The credentials, or None when the file is missing or unreadable as credentials."""
    try:
        data = json.loads(credentials_path(state_dir).read_text(encoding="utf-8"))
        return Credentials(url=str(data["url"]), token=str(data["token"]), pid=int(data["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_credentials(state_dir: Path, pid: int | None = None) -> None:
    """Remove the file if it still belongs to ``pid`` (default: this process).

    A newer server may have replaced it; its file must survive an older one's exit.
    """
    creds = read_credentials(state_dir)
    if creds is not None and creds.pid == (os.getpid() if pid is None else pid):
        credentials_path(state_dir).unlink(missing_ok=True)
