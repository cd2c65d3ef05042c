"""Who is signed in: server-side sessions, kept in this process's memory.

The browser holds only an opaque, random session id (an HttpOnly, Secure, SameSite=Lax cookie);
the access token, the person's name and role and the CSRF token stay on the server, so nothing a
page's script or a stolen cookie jar could read reveals a token. The cost: a restart signs
everyone out, and the portal runs as one process (a shared store would be needed for more).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_SESSIONS = 50_000
SIGN_IN_SECONDS = 600.0


@dataclass
class Person:
    """The signed-in person, from their ID token."""

    username: str
    name: str
    role: str
    organisation_code: str
    organisation_name: str

    @property
    def is_mash(self) -> bool:
        return self.role in {"mash_worker", "mash_manager"}


@dataclass
class Session:
    id: str
    person: Person
    access_token: str = field(repr=False)
    csrf_token: str = field(repr=False)
    expires_at: float
    last_seen: float


@dataclass(frozen=True)
class PendingSignIn:
    """A sign-in that left for the identity provider: what must come back with it."""

    state: str
    nonce: str
    code_verifier: str = field(repr=False)
    started: float


class SessionStore:
    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._sign_ins: dict[str, PendingSignIn] = {}

    # -- sign-ins in flight ------------------------------------------------------------------

    def begin_sign_in(self) -> tuple[str, PendingSignIn]:
        self._expire()
        key = secrets.token_urlsafe(32)
        pending = PendingSignIn(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(64),
            started=self._clock(),
        )
        self._sign_ins[key] = pending
        return key, pending

    def finish_sign_in(self, key: str) -> PendingSignIn | None:
        """The pending sign-in, once (a replayed callback finds nothing)."""
        pending = self._sign_ins.pop(key, None)
        if pending is None or self._clock() - pending.started > SIGN_IN_SECONDS:
            return None
        return pending

    # -- sessions ------------------------------------------------------------------------------

    def create(self, person: Person, access_token: str, expires_in: int) -> Session:
        """A new session with a new id (never one the browser offered: no session fixation)."""
        self._expire()
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda session: session.last_seen)
            del self._sessions[oldest.id]
        now = self._clock()
        session = Session(
            id=secrets.token_urlsafe(32),
            person=person,
            access_token=access_token,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=now + expires_in - 30,  # end before the token does
            last_seen=now,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session, touched; None (and forgotten) when it has been idle too long or
        its access token is about to expire."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self.idle_seconds or now >= session.expires_at:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if now - s.last_seen > self.idle_seconds]:
            del self._sessions[key]
        for key in [k for k, p in self._sign_ins.items() if now - p.started > SIGN_IN_SECONDS]:
            del self._sign_ins[key]
