from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class TokenResponse(BaseModel):
    """RFC 6749 §5.1."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a token type, not a secret)
    expires_in: int
    scope: str
    id_token: str | None = None


class TokenError(BaseModel):
    """RFC 6749 §5.2: the token endpoint answers errors in OAuth's shape, not as problem details,
    because that is what OAuth client libraries read."""

    error: str
    error_description: str | None = None


class ServerMetadata(BaseModel):
    """RFC 8414 authorization server metadata (also served as the OpenID discovery document)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    grant_types_supported: list[str]
    response_types_supported: list[str]
    code_challenge_methods_supported: list[str]
    subject_types_supported: list[str]
    id_token_signing_alg_values_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    scopes_supported: list[str]
    claims_supported: list[str]
