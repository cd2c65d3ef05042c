"""The authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636), S256 only.

Pending sign-ins and issued codes live in this process's memory: the development provider runs
as one process, a code lives for a minute and is used once. A provider run as several processes
would keep them in a shared store instead.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from authlib.oauth2.rfc6749 import errors as oauth  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]

from services.identity.users import User

#: RFC 7636 §4.1 and §4.2: 43-128 unreserved characters (a challenge is 43 base64url ones).
PKCE_VALUE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
#: state and nonce are echoed back; keep them printable and short.
OPAQUE_VALUE = re.compile(r"^[\x21-\x7e]{1,512}$")
SIGN_IN_SECONDS = 600.0
CODE_SECONDS = 60.0
MAX_PENDING = 10_000


@dataclass(frozen=True)
class AuthorizationRequest:
    """A client's request that a person sign in, checked and waiting for them to do so."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str


@dataclass(frozen=True)
class Grant:
    """What a code stands for: who signed in, for which client and request."""

    request: AuthorizationRequest
    user: User
    auth_time: int


class AuthorizationStore:
    """Pending sign-ins (by an unguessable id in the login form) and codes, each used once."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending: dict[str, tuple[AuthorizationRequest, float]] = {}
        self._codes: dict[str, tuple[Grant, float]] = {}

    def begin(self, request: AuthorizationRequest) -> str:
        self._expire()
        if len(self._pending) >= MAX_PENDING:
            raise oauth.OAuth2Error(
                error="temporarily_unavailable", description="too many sign-ins in progress"
            )
        sign_in_id = secrets.token_urlsafe(32)
        self._pending[sign_in_id] = (request, self._clock() + SIGN_IN_SECONDS)
        return sign_in_id

    def pending(self, sign_in_id: str) -> AuthorizationRequest | None:
        entry = self._pending.get(sign_in_id)
        if entry is None or entry[1] < self._clock():
            return None
        return entry[0]

    def complete(self, sign_in_id: str, user: User, auth_time: int) -> tuple[str, Grant]:
        """The code for a finished sign-in; the sign-in itself cannot be used again."""
        request, _ = self._pending.pop(sign_in_id)
        code = secrets.token_urlsafe(32)
        grant = Grant(request=request, user=user, auth_time=auth_time)
        self._codes[code] = (grant, self._clock() + CODE_SECONDS)
        return code, grant

    def redeem(
        self, code: str, *, client_id: str, redirect_uri: str | None, verifier: str
    ) -> Grant:
        """The grant a code stands for, once. Every check fails the same way (invalid_grant)."""
        self._expire()
        entry = self._codes.pop(code, None)  # used once, even when a check below fails
        if entry is None:
            raise oauth.InvalidGrantError(description="the code is not valid (or was used)")
        grant, _ = entry
        if grant.request.client_id != client_id:
            raise oauth.InvalidGrantError(description="the code was issued to another client")
        if redirect_uri != grant.request.redirect_uri:
            raise oauth.InvalidGrantError(description="redirect_uri does not match the request")
        if not PKCE_VALUE.match(verifier):
            raise oauth.InvalidRequestError(description="code_verifier is not a valid verifier")
        if not secrets.compare_digest(
            create_s256_code_challenge(verifier), grant.request.code_challenge
        ):
            raise oauth.InvalidGrantError(description="code_verifier does not match the challenge")
        return grant

    def _expire(self) -> None:
        now = self._clock()
        for store in (self._pending, self._codes):
            for key in [key for key, (_, until) in store.items() if until < now]:
                del store[key]
