"""Bearer tokens: only a token signed by a configured issuer's own key, for us, in date, passes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, FastAPI
from joserfc import jwt
from joserfc.jwk import OKPKey

from shared.auth import (
    AuthError,
    CurrentPrincipal,
    IssuerConfig,
    IssuerUnavailable,
    Principal,
    TokenValidator,
    install_auth,
    require_scope,
)
from shared.errors import install_error_handlers

ISSUER = "https://idp.oakfield.example"
JWKS_URI = f"{ISSUER}/jwks.json"
ATTACKER_JWKS = "https://attacker.example/jwks.json"
AUDIENCE = "threadline:referrals"
NOW = 1_800_000_000.0


def new_key() -> OKPKey:
    return OKPKey.generate_key(
        "Ed25519", parameters={"alg": "Ed25519", "use": "sig"}, private=True, auto_kid=True
    )


def jwks_of(*keys: OKPKey) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


def claims(**changes: Any) -> dict[str, Any]:
    """Good claims for a school's client; a change to None removes the claim."""
    values: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "oakfield-primary",
        "aud": [AUDIENCE],
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 600,
        "jti": uuid.uuid4().hex,
        "scope": "referrals:write referrals:read",
        "org": "100001",
        "agency": "school",
    }
    values.update(changes)
    return {name: value for name, value in values.items() if value is not None}


def sign(key: OKPKey, payload: dict[str, Any] | None = None, **header: Any) -> str:
    protected = {"alg": "Ed25519", "kid": key.kid, **header}
    return jwt.encode(protected, payload or claims(), key, algorithms=["Ed25519"])


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign_by_hand(key: OKPKey, header: dict[str, Any], payload: dict[str, Any]) -> str:
    """For headers joserfc itself would refuse to produce."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    private_key = key.private_key
    assert isinstance(private_key, Ed25519PrivateKey)
    return f"{signing_input}.{b64(private_key.sign(signing_input.encode()))}"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class KeyServer:
    """The issuer's JWKS endpoint (and an attacker's), recording every request made to them."""

    def __init__(self, *keys: OKPKey) -> None:
        self.keys = list(keys)
        self.attacker_keys: list[OKPKey] = []
        self.failing = False
        self.requests: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(str(request.url))
        if str(request.url) == JWKS_URI and not self.failing:
            return httpx.Response(200, json=jwks_of(*self.keys))
        if str(request.url) == ATTACKER_JWKS:
            return httpx.Response(200, json=jwks_of(*self.attacker_keys))
        return httpx.Response(503)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


@pytest.fixture
def key() -> OKPKey:
    return new_key()


@pytest.fixture
def validator(key: OKPKey) -> TokenValidator:
    issuer = IssuerConfig(issuer=ISSUER, jwks=jwks_of(key))
    return TokenValidator([issuer], AUDIENCE, clock=lambda: NOW)


async def test_a_valid_token_names_the_caller_and_its_scopes(
    validator: TokenValidator, key: OKPKey
) -> None:
    payload = claims(jti="token-1")
    principal = await validator.validate(sign(key, payload))
    assert principal == Principal(
        subject="oakfield-primary",
        issuer=ISSUER,
        organisation_code="100001",
        agency="school",
        scopes=frozenset({"referrals:write", "referrals:read"}),
        token_id="token-1",
    )
    assert principal.has("referrals:write") and not principal.has("mash:triage")


async def test_a_single_audience_may_be_a_string_and_clocks_may_differ_by_the_leeway(
    validator: TokenValidator, key: OKPKey
) -> None:
    payload = claims(aud=AUDIENCE, exp=int(NOW) - 20, iat=int(NOW) + 20, nbf=int(NOW) + 20)
    assert (await validator.validate(sign(key, payload))).subject == "oakfield-primary"


def _unsigned(key: OKPKey) -> str:
    return f"{b64({'alg': 'none', 'kid': key.kid})}.{b64(claims())}."


def _hmac_with_public_key(key: OKPKey) -> str:
    """The classic confusion: HS256 keyed with the issuer's public key, which anyone has."""
    signing_input = f"{b64({'alg': 'HS256', 'kid': key.kid})}.{b64(claims())}"
    secret = key.as_pem(private=False)
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def _hmac_with_jwk_x(key: OKPKey) -> str:
    signing_input = f"{b64({'alg': 'HS256', 'kid': key.kid})}.{b64(claims())}"
    secret = str(key.as_dict(private=False)["x"]).encode()
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


# Each forgery, and the reason it must be refused for (not merely some reason).
FORGERIES: dict[str, tuple[Callable[[OKPKey], str], str]] = {
    "alg none": (_unsigned, "algorithm"),
    "HS256 keyed with the public key PEM": (_hmac_with_public_key, "algorithm"),
    "HS256 keyed with the JWK x": (_hmac_with_jwk_x, "algorithm"),
    "wrong audience": (lambda key: sign(key, claims(aud=["threadline:consent"])), "aud"),
    "wrong audience as a string": (lambda key: sign(key, claims(aud="threadline:consent")), "aud"),
    "untrusted issuer": (lambda key: sign(key, claims(iss="https://idp.evil.example")), "issuer"),
    "expired beyond the leeway": (lambda key: sign(key, claims(exp=int(NOW) - 31)), "expired"),
    "not yet valid": (lambda key: sign(key, claims(nbf=int(NOW) + 120)), "nbf"),
    "issued in the future": (lambda key: sign(key, claims(iat=int(NOW) + 120)), "iat"),
    "unknown kid": (lambda key: sign(key, kid="not-a-key-of-this-issuer"), "kid"),
    "no kid": (
        lambda key: jwt.encode({"alg": "Ed25519"}, claims(), key, algorithms=["Ed25519"]),
        "kid",
    ),
    "attacker key with a valid kid": (lambda key: sign(new_key(), kid=key.kid), "signature"),
    "tampered claims": (
        lambda key: (lambda parts: f"{parts[0]}.{b64(claims(org='100002'))}.{parts[2]}")(
            sign(key).split(".")
        ),
        "signature",
    ),
    "unknown agency": (lambda key: sign(key, claims(agency="wizard")), "agency"),
    "empty organisation": (lambda key: sign(key, claims(org="")), "org"),
    "organisation not a string": (lambda key: sign(key, claims(org=100001)), "org"),
    "critical extension": (
        lambda key: sign_by_hand(
            key, {"alg": "Ed25519", "kid": key.kid, "crit": ["nonce"], "nonce": "1"}, claims()
        ),
        "crit",
    ),
}


@pytest.mark.parametrize(("forge", "reason"), FORGERIES.values(), ids=FORGERIES.keys())
async def test_forged_or_unfit_tokens_are_refused(
    validator: TokenValidator, key: OKPKey, forge: Callable[[OKPKey], str], reason: str
) -> None:
    with pytest.raises(AuthError, match=reason):
        await validator.validate(forge(key))


@pytest.mark.parametrize("claim", ["iss", "aud", "exp", "iat", "sub", "org", "agency", "scope"])
async def test_a_token_missing_a_required_claim_is_refused(
    validator: TokenValidator, key: OKPKey, claim: str
) -> None:
    with pytest.raises(AuthError, match="issuer" if claim == "iss" else f"lacks .*{claim}"):
        await validator.validate(sign(key, claims(**{claim: None})))


GARBAGE = [
    "",
    "garbage",
    "a.b",
    "a.b.c",
    "....",
    "é.é.é",
    "e30.e30.",
    f"{b64({'alg': 'Ed25519', 'kid': 'k'})}.{b64(b'[1, 2]')}.AA",
    f"{b64({'alg': 'Ed25519', 'kid': 'k'})}.{b64(b'[' * 10_000)}.AA",
    f"{b64(b'not json')}.{b64(claims())}.AA",
    "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d",  # a JWE, not a JWS
    "x" * 100_000,
]


@pytest.mark.parametrize("token", GARBAGE)
async def test_garbage_is_refused_as_unauthenticated_never_as_a_crash(
    validator: TokenValidator, token: str
) -> None:
    with pytest.raises(AuthError, match=r"not a JWT|not a compact JWS"):
        await validator.validate(token)


@pytest.mark.parametrize("parameter", ["jku", "x5u", "jwk", "x5c"])
async def test_keys_named_by_the_token_itself_are_never_fetched_nor_trusted(
    parameter: str, key: OKPKey
) -> None:
    attacker = new_key()
    server = KeyServer(key)
    server.attacker_keys = [attacker]
    locators: dict[str, Any] = {
        "jku": ATTACKER_JWKS,
        "x5u": "https://attacker.example/cert.pem",
        "jwk": attacker.as_dict(private=False),
        "x5c": ["MIIBattacker"],
    }
    validator = TokenValidator(
        [IssuerConfig(issuer=ISSUER, jwks_uri=JWKS_URI)], AUDIENCE, http=server.client()
    )
    for signer in (attacker, key):  # neither the attacker's key nor even the issuer's own
        token = sign(signer, claims(), **{parameter: locators[parameter]})
        with pytest.raises(AuthError, match="names its own key"):
            await validator.validate(token)
    assert not [url for url in server.requests if "attacker.example" in url]


async def test_a_token_is_checked_with_its_own_issuers_keys_only() -> None:
    ours, theirs = new_key(), new_key()
    validator = TokenValidator(
        [
            IssuerConfig(issuer=ISSUER, jwks=jwks_of(ours)),
            IssuerConfig(issuer="https://idp.police.example", jwks=jwks_of(theirs)),
        ],
        AUDIENCE,
        clock=lambda: NOW,
    )
    police = claims(iss="https://idp.police.example", org="DEMO-PF", agency="police")
    assert (await validator.validate(sign(theirs, police))).organisation_code == "DEMO-PF"
    with pytest.raises(AuthError, match="kid"):  # the police key, claiming to be our issuer
        await validator.validate(sign(theirs, claims()))


async def test_a_rotated_key_is_accepted_after_one_refetch_and_refetches_are_throttled() -> None:
    old, new = new_key(), new_key()
    server, clock = KeyServer(old), Clock()
    validator = TokenValidator(
        [IssuerConfig(issuer=ISSUER, jwks_uri=JWKS_URI)],
        AUDIENCE,
        http=server.client(),
        clock=clock,
    )
    await validator.validate(sign(old))
    await validator.validate(sign(old))
    assert len(server.requests) == 1  # cached

    server.keys = [old, new]
    with pytest.raises(AuthError):  # fetched less than a minute ago: no refetch yet
        await validator.validate(sign(new))
    assert len(server.requests) == 1

    clock.now += 61
    fresh = claims(iat=int(clock.now), nbf=int(clock.now), exp=int(clock.now) + 600)
    assert (await validator.validate(sign(new, fresh))).subject == "oakfield-primary"
    assert len(server.requests) == 2

    for _ in range(5):  # a stream of made-up kids costs at most one fetch a minute
        with pytest.raises(AuthError):
            await validator.validate(sign(new, fresh, kid="made-up"))
    assert len(server.requests) == 2
    clock.now += 61
    with pytest.raises(AuthError):
        await validator.validate(sign(new, fresh, kid="made-up"))
    assert len(server.requests) == 3


async def test_a_token_verified_once_is_not_verified_again_but_its_claims_always_are() -> None:
    key = new_key()
    server, clock = KeyServer(key), Clock()
    validator = TokenValidator(
        [IssuerConfig(issuer=ISSUER, jwks_uri=JWKS_URI)],
        AUDIENCE,
        http=server.client(),
        clock=clock,
    )
    token = sign(key, claims(exp=int(NOW) + 3600))
    await validator.validate(token)
    server.keys = [new_key()]  # the issuer withdraws the key …
    clock.now += 30
    assert (await validator.validate(token)).subject == "oakfield-primary"  # … the cache holds,
    clock.now += 31  # verified again after 60 s, but the key set is itself cached for 10 min:
    assert (await validator.validate(token)).subject == "oakfield-primary"
    clock.now += 540  # the key set is refetched, the key is gone, and so is the token's
    with pytest.raises(AuthError):
        await validator.validate(token)
    assert len(server.requests) == 2

    server.keys = [key]
    validator = TokenValidator(
        [IssuerConfig(issuer=ISSUER, jwks_uri=JWKS_URI)],
        AUDIENCE,
        http=server.client(),
        clock=clock,
    )
    token = sign(key, claims(iat=int(clock.now), nbf=int(clock.now), exp=int(clock.now) + 20))
    first = await validator.validate(token)
    clock.now += 20 + 29  # past exp, but within the 30 s leeway: still good, from the cache
    assert await validator.validate(token) is first
    clock.now += 1  # exp + leeway: expired while still in the cache, as the registry would say
    with pytest.raises(AuthError, match="expired"):
        await validator.validate(token)


async def test_keys_are_refetched_after_ten_minutes() -> None:
    key = new_key()
    server, clock = KeyServer(key), Clock()
    validator = TokenValidator(
        [IssuerConfig(issuer=ISSUER, jwks_uri=JWKS_URI)],
        AUDIENCE,
        http=server.client(),
        clock=clock,
    )
    await validator.validate(sign(key))
    clock.now += 601
    later = claims(iat=int(clock.now), nbf=int(clock.now), exp=int(clock.now) + 600)
    await validator.validate(sign(key, later))
    assert len(server.requests) == 2


async def test_unreachable_keys_are_the_issuers_fault_and_old_keys_stay_in_use() -> None:
    key = new_key()
    server, clock = KeyServer(key), Clock()
    server.failing = True
    validator = TokenValidator(
        [IssuerConfig(issuer=ISSUER, jwks_uri=JWKS_URI)],
        AUDIENCE,
        http=server.client(),
        clock=clock,
    )
    with pytest.raises(IssuerUnavailable):
        await validator.validate(sign(key))

    server.failing = False
    clock.now += 6
    await validator.validate(sign(key))
    server.failing = True
    clock.now += 601
    later = claims(iat=int(clock.now), nbf=int(clock.now), exp=int(clock.now) + 600)
    assert (await validator.validate(sign(key, later))).subject == "oakfield-primary"


def test_symmetric_algorithms_and_ambiguous_issuers_are_refused_when_configured() -> None:
    inline = IssuerConfig(issuer=ISSUER, jwks=jwks_of(new_key()))
    for algorithms in (["HS256"], ["none"], ["Ed25519", "HS512"], []):
        with pytest.raises(ValueError):
            TokenValidator([inline], AUDIENCE, algorithms=algorithms)
    with pytest.raises(ValueError, match="exactly one"):
        IssuerConfig(issuer=ISSUER)
    with pytest.raises(ValueError, match="exactly one"):
        IssuerConfig(issuer=ISSUER, jwks_uri=JWKS_URI, jwks=jwks_of(new_key()))
    symmetric_only = {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]}
    with pytest.raises(ValueError, match="no usable signature keys"):
        TokenValidator([IssuerConfig(issuer=ISSUER, jwks=symmetric_only)], AUDIENCE)


# The FastAPI dependencies

CanWriteReferrals = Annotated[Principal, Depends(require_scope("referrals:write"))]


def protected_app(validator: TokenValidator) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install_auth(app, validator)

    @app.post("/v1/referrals")
    async def create_referral(principal: CanWriteReferrals) -> dict[str, str]:
        return {"organisation": principal.organisation_code}

    @app.get("/v1/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        return {"subject": principal.subject}

    return app


async def call(
    app: FastAPI, method: str, path: str, authorization: str | None = None
) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://referrals.test") as http:
        return await http.request(method, path, headers=headers)


async def test_a_request_without_a_token_gets_401_and_a_bearer_challenge(
    validator: TokenValidator,
) -> None:
    app = protected_app(validator)
    for authorization in (None, "Basic b2FrZmllbGQ6c2VjcmV0"):
        response = await call(app, "POST", "/v1/referrals", authorization)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/problem+json"


async def test_a_bad_token_gets_401_invalid_token(validator: TokenValidator, key: OKPKey) -> None:
    app = protected_app(validator)
    for authorization in ("Bearer garbage", "Bearer ", f"Bearer {sign(new_key(), kid=key.kid)}"):
        response = await call(app, "GET", "/v1/me", authorization)
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer error="invalid_token", error_description="')
        assert response.json()["status"] == 401


async def test_a_token_without_the_scope_gets_403_insufficient_scope(
    validator: TokenValidator, key: OKPKey
) -> None:
    reader = sign(key, claims(scope="referrals:read"))
    response = await call(protected_app(validator), "POST", "/v1/referrals", f"Bearer {reader}")
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="referrals:write"' in challenge
    assert response.json()["required_scopes"] == ["referrals:write"]


async def test_a_token_with_the_scope_is_let_through(
    validator: TokenValidator, key: OKPKey
) -> None:
    app = protected_app(validator)
    response = await call(app, "POST", "/v1/referrals", f"Bearer {sign(key)}")
    assert response.status_code == 200
    assert response.json() == {"organisation": "100001"}
    response = await call(app, "GET", "/v1/me", f"bearer {sign(key)}")
    assert response.json() == {"subject": "oakfield-primary"}


async def test_unreachable_issuer_keys_give_503_not_401(key: OKPKey) -> None:
    server = KeyServer(key)
    server.failing = True
    validator = TokenValidator(
        [IssuerConfig(issuer=ISSUER, jwks_uri=JWKS_URI)], AUDIENCE, http=server.client()
    )
    response = await call(protected_app(validator), "GET", "/v1/me", f"Bearer {sign(key)}")
    assert response.status_code == 503
    assert "retry-after" in response.headers
