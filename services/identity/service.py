"""Granting access tokens to agencies' clients: which scopes and audiences, signed how.

The refusals are authlib's RFC 6749 §5.2 errors, which the endpoint renders as OAuth expects.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from authlib.oauth2.rfc6749 import errors as oauth  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.jwk import OKPKey

from services.identity.clients import Client
from services.identity.keys import ALGORITHM
from shared.clock import Clock


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


class TokenIssuer:
    """Mints access tokens (RFC 9068 JWTs) signed with the provider's key."""

    def __init__(self, issuer: str, key: OKPKey, lifetime: timedelta, clock: Clock) -> None:
        self.issuer = issuer
        self._key = key
        self._lifetime = lifetime
        self._clock = clock

    @property
    def jwks(self) -> dict[str, Any]:
        """The public half of the signing key, as a JWK Set."""
        return {"keys": [self._key.as_dict(private=False)]}

    def grant(self, client: Client, *, scope: str | None, audiences: Sequence[str]) -> IssuedToken:
        """A token for ``client``: the scopes asked for (all of its own by default) and the
        audiences asked for (all of its own by default), never more than it is allowed."""
        granted = " ".join(_granted_scopes(client, scope))
        audience = _granted_audiences(client, audiences)
        now = int(self._clock.now().timestamp())
        lifetime = int(self._lifetime.total_seconds())
        claims = {
            "iss": self.issuer,
            "sub": client.client_id,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            "client_id": client.client_id,
            "scope": granted,
            "org": client.organisation_code,
            "agency": client.agency,
        }
        header = {"alg": ALGORITHM, "kid": self._key.kid, "typ": "at+jwt"}
        token = jwt.encode(header, claims, self._key, algorithms=[ALGORITHM])
        return IssuedToken(access_token=token, expires_in=lifetime, scope=granted)


def _granted_scopes(client: Client, requested: str | None) -> list[str]:
    wanted = set(requested.split()) if requested and requested.strip() else set(client.scopes)
    if not wanted <= client.scopes:
        raise oauth.InvalidScopeError(description="the client may not ask for some of these scopes")
    return sorted(wanted)


def _granted_audiences(client: Client, requested: Sequence[str]) -> list[str]:
    if not requested:
        return list(client.audiences)
    if not set(requested) <= set(client.audiences):
        raise oauth.OAuth2Error(
            error="invalid_target",  # RFC 8707 §2
            description="the client may not ask for a token for some of these audiences",
        )
    return list(dict.fromkeys(requested))
