"""Console sessions: the mesh's token is exchanged once for a cookie, and every
state-changing request must prove it comes from the console's own page.

Three checks, each sufficient against a cross-site POST on its own:
- the session cookie is ``HttpOnly`` (no script reads it) and ``SameSite=Strict`` (a
  browser never sends it on a request started by another site);
- every POST/PUT/DELETE carries ``X-CSRF-Token``, a per-session secret the page got from
  the login answer (a form on another site cannot set headers; a script there cannot
  read our answers);
- an ``Origin`` header, when the browser sends one, must be this server's own.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

COOKIE = "tcpmesh_console"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 1000


@dataclass
class Session:
    csrf: str
    expires: float


class Sessions:
    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._sessions: dict[str, Session] = {}

    def login(self, token: str, now: float | None = None) -> tuple[str, Session] | None:
        """A new session for the right token, None for any other."""
        if not hmac.compare_digest(token.strip().encode(), self._token):
            return None
        now = time.time() if now is None else now
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].expires)
            del self._sessions[oldest]
        sid = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), now + SESSION_SECONDS)
        self._sessions[sid] = session
        return sid, session

    def get(self, sid: str | None, now: float | None = None) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        now = time.time() if now is None else now
        if session is None or session.expires < now:
            return None
        return session

    def logout(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def _expire(self, now: float) -> None:
        for sid in [k for k, s in self._sessions.items() if s.expires < now]:
            del self._sessions[sid]


def csrf_ok(session: Session, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(header.encode(), session.csrf.encode())


def same_origin(origin: str | None, scheme: str, host: str) -> bool:
    """No Origin (a same-origin GET in some browsers) passes; any other must be ours."""
    return origin is None or origin == f"{scheme}://{host}"
