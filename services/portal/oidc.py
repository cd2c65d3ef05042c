"""Signing people in with OpenID Connect: authorization code flow with PKCE (S256), using authlib
for the OAuth 2.0 messages and joserfc (as the APIs do) to verify the ID token."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.oauth2.rfc6749.parameters import (  # type: ignore[import-untyped]
    prepare_grant_uri,
)
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from services.portal.sessions import PendingSignIn, Person
from services.portal.settings import PortalSettings
from shared.auth import signature_keys
from shared.logging import get_logger

log = get_logger(__name__)

ID_TOKEN_ALGORITHMS = ("Ed25519", "EdDSA", "ES256", "RS256")
METADATA_SECONDS = 600.0


class SignInFailed(Exception):
    """The sign-in could not be completed; the person is told to try again."""


@dataclass(frozen=True)
class SignedIn:
    person: Person
    access_token: str
    expires_in: int


class OpenIDClient:
    """The portal as a confidential client of the OpenID provider."""

    def __init__(self, settings: PortalSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self._http = http
        self._metadata: dict[str, Any] | None = None
        self._fetched_at = 0.0

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._fetched_at > METADATA_SECONDS:
            response = await self._http.get(
                f"{self.settings.identity_issuer}/.well-known/openid-configuration"
            )
            response.raise_for_status()
            document = response.json()
            if document.get("issuer") != self.settings.identity_issuer:
                raise SignInFailed("the provider's discovery document names another issuer")
            if "S256" not in document.get("code_challenge_methods_supported", []):
                raise SignInFailed("the provider does not support PKCE with S256")
            self._metadata, self._fetched_at = document, time.monotonic()
        return self._metadata

    async def authorization_url(self, pending: PendingSignIn) -> str:
        metadata = await self.metadata()
        endpoint: str = metadata["authorization_endpoint"]
        # Browsers may reach the provider at another address than the portal does (containers).
        endpoint = endpoint.replace(
            self.settings.identity_issuer, self.settings.identity_public_url, 1
        )
        uri: str = prepare_grant_uri(
            endpoint,
            self.settings.client_id,
            "code",
            redirect_uri=self.settings.redirect_uri,
            scope="openid profile",
            state=pending.state,
            nonce=pending.nonce,
            code_challenge=create_s256_code_challenge(pending.code_verifier),
            code_challenge_method="S256",
        )
        return uri

    async def complete(self, pending: PendingSignIn, code: str) -> SignedIn:
        """Exchange the code (with the PKCE verifier) and check the ID token."""
        metadata = await self.metadata()
        response = await self._http.post(
            metadata["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.settings.redirect_uri,
                "code_verifier": pending.code_verifier,
            },
            auth=(self.settings.client_id, self.settings.client_secret),
        )
        if response.status_code != 200:
            log.info("portal.code_refused", status=response.status_code, body=response.text[:200])
            raise SignInFailed("the provider refused the code")
        tokens = response.json()
        claims = await self._verified_id_token(tokens.get("id_token"), pending.nonce)
        try:
            person = Person(
                username=str(claims["preferred_username"]),
                name=str(claims["name"]),
                role=str(claims["roles"][0]),
                organisation_code=str(claims["org"]),
                organisation_name=str(claims.get("org_name") or claims["org"]),
            )
        except (KeyError, IndexError, TypeError) as error:
            raise SignInFailed(f"the ID token lacks a claim: {error}") from error
        return SignedIn(
            person=person,
            access_token=str(tokens["access_token"]),
            expires_in=int(tokens.get("expires_in", 900)),
        )

    async def _verified_id_token(self, token: object, nonce: str) -> dict[str, Any]:
        if not isinstance(token, str):
            raise SignInFailed("the provider sent no ID token")
        metadata = await self.metadata()
        keys = await self._http.get(metadata["jwks_uri"])
        keys.raise_for_status()
        try:
            decoded = jwt.decode(token, signature_keys(keys.json()), algorithms=ID_TOKEN_ALGORITHMS)
            JWTClaimsRegistry(
                leeway=30,
                iss={"essential": True, "value": self.settings.identity_issuer},
                aud={"essential": True, "value": self.settings.client_id},
                exp={"essential": True},
                iat={"essential": True},
                sub={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as error:
            raise SignInFailed(f"the ID token is not valid: {error}") from error
        return dict(decoded.claims)
