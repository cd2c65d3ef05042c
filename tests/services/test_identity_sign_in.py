"""The development identity provider signs people in: OpenID Connect code flow with PKCE (S256
only), an ID token for the portal, and access tokens that the APIs accept on the person's behalf
with their organisation and the scopes of their role."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import KeySet

from services.identity.app import create_app
from services.identity.settings import REPO_ROOT, IdentitySettings
from services.identity.users import load_users
from shared.auth import IssuerConfig, TokenValidator

ISSUER = "http://identity.test"
PORTAL = ("threadline-portal", "dev-secret-threadline-portal")
CALLBACK = "http://127.0.0.1:54321/auth/callback"  # loopback: any port (RFC 8252 §7.3)


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    settings = IdentitySettings(issuer=ISSUER, signing_key_file=tmp_path / "key.pem")
    return create_app(settings, configure_logs=False)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield client


def authorize_params(verifier: str, **overrides: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": PORTAL[0],
        "redirect_uri": CALLBACK,
        "scope": "openid profile",
        "state": "state-123",
        "nonce": "nonce-456",
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
        **overrides,
    }


async def sign_in(
    http: httpx.AsyncClient, username: str, password: str = "demo-password", **overrides: str
) -> tuple[httpx.Response, str]:
    verifier = generate_token(64)
    page = await http.get("/authorize", params=authorize_params(verifier, **overrides))
    assert page.status_code == 200, page.text
    match = re.search(r'name="sign_in_id" value="([^"]+)"', page.text)
    assert match
    response = await http.post(
        "/authorize",
        data={"sign_in_id": match.group(1), "username": username, "password": password},
    )
    return response, verifier


async def code_for(http: httpx.AsyncClient, username: str) -> tuple[str, str]:
    response, verifier = await sign_in(http, username)
    assert response.status_code == 303, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["state"] == ["state-123"] and query["iss"] == [ISSUER]
    return query["code"][0], verifier


async def redeem(http: httpx.AsyncClient, code: str, verifier: str, **form: str) -> httpx.Response:
    return await http.post(
        "/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "code_verifier": verifier,
            **form,
        },
        auth=PORTAL,
    )


async def claims(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set((await http.get("/jwks.json")).json())
    decoded: dict[str, Any] = jwt.decode(token, keys, algorithms=["Ed25519"]).claims
    return decoded


async def test_the_discovery_document_describes_code_flow_with_pkce(
    http: httpx.AsyncClient,
) -> None:
    document = (await http.get("/.well-known/openid-configuration")).json()
    assert document["authorization_endpoint"] == f"{ISSUER}/authorize"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["response_types_supported"] == ["code"]


async def test_a_dsl_signs_in_and_the_tokens_carry_their_school_and_role(
    http: httpx.AsyncClient, app: FastAPI
) -> None:
    code, verifier = await code_for(http, "dsl.oakfield")
    response = await redeem(http, code, verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    identity = await claims(http, body["id_token"])
    assert identity["aud"] == PORTAL[0]
    assert identity["nonce"] == "nonce-456"
    assert identity["roles"] == ["dsl"] and identity["org"] == "100001"
    assert identity["org_name"] == "Oakfield Primary School"
    # The referrals API accepts the access token as the school, with the DSL's scopes.
    validator = TokenValidator(
        [IssuerConfig(issuer=ISSUER, jwks=(await http.get("/jwks.json")).json())],
        "threadline:referrals",
    )
    principal = await validator.validate(body["access_token"])
    assert principal.organisation_code == "100001" and principal.agency == "school"
    assert principal.scopes == {"referrals:read", "referrals:write"}
    assert principal.subject == "dsl.oakfield"


async def test_a_mash_worker_gets_triage_scope(http: httpx.AsyncClient) -> None:
    code, verifier = await code_for(http, "mash.worker")
    access = await claims(http, (await redeem(http, code, verifier)).json()["access_token"])
    assert access["org"] == "MASH-DEMO" and access["agency"] == "mash"
    assert set(access["scope"].split()) == {"referrals:read", "mash:triage"}
    assert "threadline:notifications" in access["aud"]


async def test_a_code_is_used_once(http: httpx.AsyncClient) -> None:
    code, verifier = await code_for(http, "dsl.oakfield")
    assert (await redeem(http, code, verifier)).status_code == 200
    again = await redeem(http, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_a_wrong_verifier_is_refused_and_spends_the_code(http: httpx.AsyncClient) -> None:
    code, verifier = await code_for(http, "dsl.oakfield")
    wrong = await redeem(http, code, generate_token(64))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert (await redeem(http, code, verifier)).status_code == 400


async def test_a_missing_verifier_or_another_redirect_uri_is_refused(
    http: httpx.AsyncClient,
) -> None:
    code, verifier = await code_for(http, "dsl.oakfield")
    missing = await http.post(
        "/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
        auth=PORTAL,
    )
    assert missing.status_code == 400 and "code_verifier" in missing.json()["error_description"]
    code, verifier = await code_for(http, "dsl.oakfield")
    other = await redeem(http, code, verifier, redirect_uri="http://127.0.0.1:1/auth/callback")
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"


async def test_plain_pkce_or_none_is_sent_back_as_an_error(http: httpx.AsyncClient) -> None:
    for method in ("plain", ""):
        response = await http.get(
            "/authorize", params=authorize_params(generate_token(64), code_challenge_method=method)
        )
        assert response.status_code == 303
        query = parse_qs(urlsplit(response.headers["location"]).query)
        assert query["error"] == ["invalid_request"] and query["state"] == ["state-123"]


async def test_an_unregistered_redirect_uri_is_never_redirected_to(
    http: httpx.AsyncClient,
) -> None:
    for uri in ("https://evil.example/auth/callback", "http://127.0.0.1:8105/elsewhere"):
        response = await http.get(
            "/authorize", params=authorize_params(generate_token(64), redirect_uri=uri)
        )
        assert response.status_code == 400 and "location" not in response.headers
        assert "not one this service registered" in response.text


async def test_a_wrong_password_shows_the_form_again_with_an_error(
    http: httpx.AsyncClient,
) -> None:
    response, _ = await sign_in(http, "dsl.oakfield", password="not-the-password")
    assert response.status_code == 400
    assert "govuk-error-summary" in response.text
    assert "The sign-in name or password is not right" in response.text
    assert "content-security-policy" in response.headers


async def test_agency_clients_may_not_use_the_code_flow_nor_the_portal_client_credentials(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get(
        "/authorize", params=authorize_params(generate_token(64), client_id="oakfield-primary")
    )
    assert page.status_code == 400
    refused = await http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=PORTAL
    )
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"


def test_a_user_whose_role_does_not_fit_their_organisation_is_refused(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text(
        '[[users]]\nusername = "odd"\npassword = "demo-password"\nname = "Odd"\n'
        'role = "mash_worker"\norganisation_code = "100001"\n'
        'organisation_name = "Oakfield Primary School"\nagency = "school"\n'
    )
    with pytest.raises(ValueError, match="a mash_worker belongs to a mash organisation"):
        load_users(users)


def test_the_demo_users_have_the_scopes_of_their_roles() -> None:
    registry = load_users(REPO_ROOT / "config" / "identity" / "dev-users.toml")
    assert registry.authenticate("dsl.oakfield", "demo-password") is not None
    assert registry.authenticate("dsl.oakfield", "wrong-password") is None
    assert registry.authenticate("nobody", "demo-password") is None
    roles = {user.username: (user.role, user.scopes) for user in registry}
    assert roles["dsl.oakfield"] == ("dsl", {"referrals:write", "referrals:read"})
    assert roles["mash.manager"] == ("mash_manager", {"referrals:read", "mash:triage"})
    assert roles["dpo"] == ("dpo", {"consent:audit"})
