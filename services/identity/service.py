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

from services.identity.authorization import Grant
from services.identity.clients import Client
from services.identity.keys import ALGORITHM
from shared.clock import Clock


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    id_token: str | None = None


class TokenIssuer:
    """Mints access tokens (RFC 9068 JWTs) signed with the provider's key."""

    def __init__(
        self,
        issuer: str,
        key: OKPKey,
        lifetime: timedelta,
        clock: Clock,
        *,
        user_lifetime: timedelta | None = None,
    ) -> None:
        self.issuer = issuer
        self._key = key
        self._lifetime = lifetime
        self._user_lifetime = user_lifetime or lifetime
        self._clock = clock

    @property
    def jwks(self) -> dict[str, Any]:
        """The public half of the signing key, as a JWK Set."""
        return {"keys": [self._key.as_dict(private=False)]}

    def grant(self, client: Client, *, scope: str | None, audiences: Sequence[str]) -> IssuedToken:
        """A token for ``client``: the scopes asked for (all of its own by default) and the
        audiences asked for (all of its own by default), never more than it is allowed."""
        if client.organisation_code is None or client.agency is None:
            raise oauth.UnauthorizedClientError(
                description="this client may not use the client credentials grant"
            )
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

    def grant_for_user(self, client: Client, grant: Grant) -> IssuedToken:
        """An access token with which ``client`` acts for the person who signed in, and an ID
        token (OpenID Connect Core §2) that tells the client who that is.

        The access token names the person (``sub``), their organisation (``org``) and their kind
        of agency, with the scopes of their role: the APIs apply the organisation's rules to it
        exactly as to the organisation's own system. Its audiences are the services the role
        uses that the client may call.
        """
        user = grant.user
        now = int(self._clock.now().timestamp())
        lifetime = int(self._user_lifetime.total_seconds())
        audiences = [audience for audience in user.audiences if audience in client.audiences]
        if not audiences:
            raise oauth.InvalidScopeError(description="this client calls none of the role's APIs")
        scope = " ".join(sorted(user.scopes))
        common = {"iss": self.issuer, "sub": user.username, "iat": now}
        access_claims = {
            **common,
            "aud": audiences,
            "nbf": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            "client_id": client.client_id,
            "scope": scope,
            "org": user.organisation_code,
            "agency": user.agency,
            "roles": [user.role],
            "name": user.name,
        }
        id_claims: dict[str, Any] = {
            **common,
            "aud": client.client_id,
            "exp": now + lifetime,
            "auth_time": grant.auth_time,
            "name": user.name,
            "preferred_username": user.username,
            "roles": [user.role],
            "org": user.organisation_code,
            "org_name": user.organisation_name,
            "agency": user.agency,
        }
        if grant.request.nonce is not None:
            id_claims["nonce"] = grant.request.nonce
        access_token = jwt.encode(
            {"alg": ALGORITHM, "kid": self._key.kid, "typ": "at+jwt"},
            access_claims,
            self._key,
            algorithms=[ALGORITHM],
        )
        id_token = jwt.encode(
            {"alg": ALGORITHM, "kid": self._key.kid, "typ": "JWT"},
            id_claims,
            self._key,
            algorithms=[ALGORITHM],
        )
        return IssuedToken(
            access_token=access_token, expires_in=lifetime, scope=scope, id_token=id_token
        )


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
