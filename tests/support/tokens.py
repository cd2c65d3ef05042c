"""Access tokens for service tests: a test issuer with its own Ed25519 key, trusted through an
inline JWKS, so tests need no identity provider running (the identity service has its own)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from joserfc import jwt
from joserfc.jwk import OKPKey

from shared.auth import IssuerConfig

ISSUER = "https://issuer.test.threadline"
_KEY = OKPKey.generate_key(
    "Ed25519", parameters={"alg": "Ed25519", "use": "sig"}, private=True, auto_kid=True
)


def test_issuer() -> IssuerConfig:
    return IssuerConfig(issuer=ISSUER, jwks={"keys": [_KEY.as_dict(private=False)]})


def token(
    *,
    organisation: str = "100001",
    agency: str = "school",
    scopes: str = "referrals:write referrals:read",
    audience: str | list[str] = "threadline:referrals",
    subject: str | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "sub": subject or f"client-{organisation}",
        "aud": audience,
        "iat": now,
        "nbf": now,
        # An hour: module-level tokens are made at collection, and the whole suite must finish
        # with them still valid.
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
        "scope": scopes,
        "org": organisation,
        "agency": agency,
        **claims,
    }
    return jwt.encode({"alg": "Ed25519", "kid": _KEY.kid}, payload, _KEY, algorithms=["Ed25519"])


def bearer(**kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(**kwargs)}"}


SCHOOL = bearer()
OTHER_SCHOOL = bearer(organisation="100002")
MASH = bearer(
    organisation="MASH-DEMO",
    agency="mash",
    scopes="referrals:read mash:triage",
    audience=["threadline:referrals", "threadline:notifications"],
)
# The MASH as the linking service sees it (its own audience).
MASH_LINKING = bearer(
    organisation="MASH-DEMO", agency="mash", scopes="mash:triage", audience="threadline:linking"
)
