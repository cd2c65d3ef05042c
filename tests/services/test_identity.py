"""The development identity provider: client credentials for the demo agencies, and tokens that
every service's validator accepts."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import KeySet
from pydantic import ValidationError

from services.identity.app import create_app
from services.identity.settings import REPO_ROOT, IdentitySettings
from shared.auth import DEV_ISSUER, AuthError, IssuerConfig, TokenValidator

ISSUER = "http://identity.test"
OAKFIELD = ("oakfield-primary", "dev-secret-oakfield-primary")
MASH = ("demo-mash", "dev-secret-demo-mash")


@pytest.fixture
def settings(tmp_path: Path) -> IdentitySettings:
    return IdentitySettings(issuer=ISSUER, signing_key_file=tmp_path / "identity" / "key.pem")


@pytest.fixture
def app(settings: IdentitySettings) -> FastAPI:
    return create_app(settings, configure_logs=False)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield client


async def token_for(
    http: httpx.AsyncClient, credentials: tuple[str, str], **form: str
) -> dict[str, Any]:
    response = await http.post(
        "/oauth2/token", data={"grant_type": "client_credentials", **form}, auth=credentials
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_discovery_document_describes_a_client_credentials_provider(
    http: httpx.AsyncClient,
) -> None:
    document = (await http.get("/.well-known/openid-configuration")).json()
    assert document["issuer"] == ISSUER
    assert document["token_endpoint"] == f"{ISSUER}/oauth2/token"
    assert document["jwks_uri"] == f"{ISSUER}/jwks.json"
    assert document["grant_types_supported"] == ["client_credentials", "authorization_code"]
    assert document["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert {"referrals:write", "mash:triage", "consent:audit"} <= set(document["scopes_supported"])
    assert (await http.get("/.well-known/oauth-authorization-server")).json() == document


async def test_a_school_gets_a_token_with_basic_authentication(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=OAKFIELD
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "contacts:write referrals:read referrals:write"
    assert body["access_token"].count(".") == 2


async def test_a_client_may_authenticate_in_the_form_and_ask_for_fewer_scopes(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": MASH[0],
            "client_secret": MASH[1],
            "scope": "mash:triage",
            "audience": "threadline:notifications",
        },
    )
    assert response.status_code == 200
    assert response.json()["scope"] == "mash:triage"


async def test_the_token_verifies_with_the_published_keys_and_carries_the_claims(
    http: httpx.AsyncClient,
) -> None:
    jwks = (await http.get("/jwks.json")).json()
    assert [set(key) for key in jwks["keys"]] == [{"kty", "crv", "x", "kid", "alg", "use"}]
    access_token = (await token_for(http, MASH))["access_token"]

    token = jwt.decode(access_token, KeySet.import_key_set(jwks), algorithms=["Ed25519"])
    assert token.header == {
        "alg": "Ed25519",
        "kid": jwks["keys"][0]["kid"],
        "typ": "at+jwt",
    }
    claims = token.claims
    assert claims["iss"] == ISSUER
    assert claims["sub"] == claims["client_id"] == "demo-mash"
    assert claims["aud"] == [
        "threadline:referrals",
        "threadline:notifications",
        "threadline:linking",
        "threadline:timeline",
    ]
    assert (claims["org"], claims["agency"]) == ("MASH-DEMO", "mash")
    assert claims["scope"] == "mash:triage referrals:read"
    assert claims["exp"] - claims["iat"] == 900 and claims["nbf"] == claims["iat"]
    assert len(claims["jti"]) == 32


async def test_a_token_from_the_provider_is_accepted_by_a_services_validator(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    """The validator fetches the provider's keys from its jwks_uri, as a service would."""
    seen: list[str] = []

    async def identity_provider(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return await http.get(request.url.path)

    keys_client = httpx.AsyncClient(transport=httpx.MockTransport(identity_provider))
    validator = TokenValidator(
        [IssuerConfig(issuer=ISSUER, jwks_uri=f"{ISSUER}/jwks.json")],
        "threadline:referrals",
        http=keys_client,
    )
    access_token = (await token_for(http, OAKFIELD, scope="referrals:write"))["access_token"]
    principal = await validator.validate(access_token)
    assert (principal.subject, principal.organisation_code, principal.agency) == (
        "oakfield-primary",
        "100001",
        "school",
    )
    assert principal.scopes == frozenset({"referrals:write"})
    assert seen == ["/jwks.json"]

    consent = TokenValidator(
        [IssuerConfig(issuer=ISSUER, jwks=(await http.get("/jwks.json")).json())],
        "threadline:consent",
    )
    with pytest.raises(AuthError, match="aud"):  # a school's token is not for the consent service
        await consent.validate(access_token)
    await keys_client.aclose()


@pytest.mark.parametrize(
    "credentials",
    [
        ("oakfield-primary", "not-the-secret"),
        ("no-such-client", "dev-secret-oakfield-primary"),
        ("oakfield-primary", ""),
    ],
)
async def test_wrong_client_credentials_get_401_invalid_client(
    http: httpx.AsyncClient, credentials: tuple[str, str]
) -> None:
    response = await http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=credentials
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic ")


async def test_a_request_without_client_authentication_gets_401(http: httpx.AsyncClient) -> None:
    for data in (
        {"grant_type": "client_credentials"},
        {"grant_type": "client_credentials", "client_id": "oakfield-primary"},
    ):
        response = await http.post("/oauth2/token", data=data)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
    response = await http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic !!not-base64!!"},
    )
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


async def test_another_grant_type_gets_400_unsupported_grant_type(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "/oauth2/token",
        data={"grant_type": "password", "username": "a", "password": "b"},
        auth=OAKFIELD,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


async def test_a_scope_beyond_the_clients_gets_400_invalid_scope(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "referrals:read mash:triage"},
        auth=OAKFIELD,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


async def test_an_audience_beyond_the_clients_gets_400_invalid_target(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "resource": "threadline:consent"},
        auth=OAKFIELD,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"


async def test_malformed_token_requests_get_400_invalid_request(http: httpx.AsyncClient) -> None:
    repeated = await http.post(
        "/oauth2/token",
        content="grant_type=client_credentials&grant_type=client_credentials",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=OAKFIELD,
    )
    as_json = await http.post(
        "/oauth2/token", json={"grant_type": "client_credentials"}, auth=OAKFIELD
    )
    two_methods = await http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_secret": OAKFIELD[1]},
        auth=OAKFIELD,
    )
    missing_grant = await http.post("/oauth2/token", data={}, auth=OAKFIELD)
    for response in (repeated, as_json, two_methods, missing_grant):
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"


async def test_health_and_readiness_need_nothing(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).json()["status"] == "ready"


def test_the_signing_key_is_made_once_private_and_kept(settings: IdentitySettings) -> None:
    first = create_app(settings, configure_logs=False).state.token_issuer.jwks
    mode = stat.S_IMODE(settings.signing_key_file.stat().st_mode)
    assert mode == 0o600
    assert create_app(settings, configure_logs=False).state.token_issuer.jwks == first
    assert [path.name for path in settings.signing_key_file.parent.iterdir()] == ["key.pem"]


def test_relative_paths_are_taken_from_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ISSUER", "HOST", "PORT", "CLIENTS_FILE", "SIGNING_KEY_FILE"):
        monkeypatch.delenv(f"THREADLINE_IDENTITY_{name}", raising=False)
        monkeypatch.delenv(f"THREADLINE_{name}", raising=False)
    settings = IdentitySettings()
    assert settings.clients_file == REPO_ROOT / "config" / "identity" / "dev-clients.toml"
    assert settings.signing_key_file == REPO_ROOT / "var" / "identity" / "signing-key.pem"
    assert settings.issuer == DEV_ISSUER


def test_it_refuses_to_start_in_production(
    monkeypatch: pytest.MonkeyPatch, settings: IdentitySettings
) -> None:
    monkeypatch.setenv("THREADLINE_DATABASE_URL", "postgresql+asyncpg://db.example/threadline")
    monkeypatch.setenv("THREADLINE_KAFKA_BOOTSTRAP_SERVERS", "kafka-1.example:9092")
    monkeypatch.setenv("THREADLINE_ENVIRONMENT", "production")
    monkeypatch.setenv(
        "THREADLINE_AUTH_ISSUERS",
        '[{"issuer": "https://idp.example", "jwks_uri": "https://idp.example/jwks.json"}]',
    )
    with pytest.raises(ValidationError, match="must not run in production"):
        IdentitySettings()
    with pytest.raises(RuntimeError, match="must not run in production"):
        create_app(settings.model_copy(update={"environment": "production"}))
