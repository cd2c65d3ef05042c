"""Who is calling: OAuth2 bearer tokens (JWTs) from configured issuers, checked against those
issuers' published keys, and the FastAPI dependencies every service uses to require them.

Each agency (a school, an NHS trust, a police force, a local authority, a MASH team) is an OAuth2
client of an identity provider; in production that is the agency's own issuer, configured here by
its issuer URL and its JWK Set. A token is trusted only after its signature verifies with a key
that its issuer publishes and that it names by ``kid``; keys a token points at itself (``jku``,
``x5u``, ``jwk``, ``x5c``) are never fetched nor used.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, get_args

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from joserfc import jws, jwt
from joserfc.errors import ExpiredTokenError, JoseError, MissingClaimError
from joserfc.jwk import JWKRegistry, Key, KeySet
from joserfc.jws import JWSRegistry
from joserfc.jwt import JWTClaimsRegistry
from pydantic import BaseModel, ConfigDict, model_validator

from shared.errors import document_problems, problem
from shared.logging import get_logger
from shared.ratelimit import RateLimiter

log = get_logger(__name__)

#: Who may hold a token (the ``agency`` claim); policies are written in these words.
Agency = Literal["school", "health", "police", "local_authority", "mash", "dpo"]
AGENCIES: Final = frozenset(get_args(Agency))
#: The development identity provider (services/identity) with its default settings.
DEV_ISSUER: Final = "http://127.0.0.1:8100"
#: Ed25519 is RFC 9864's name for EdDSA over Ed25519 (joserfc warns that "EdDSA" is deprecated).
DEFAULT_ALGORITHMS: Final = ("Ed25519", "EdDSA", "ES256", "RS256")
JWKS_CACHE_SECONDS: Final = 600.0
JWKS_REFETCH_SECONDS: Final = 60.0
#: After a failed first fetch there are no keys at all, so try again sooner than a refetch.
JWKS_RETRY_SECONDS: Final = 5.0
MAX_TOKEN_LENGTH: Final = 16_384

_SYMMETRIC = frozenset({"none", "HS256", "HS384", "HS512"})
_KEY_LOCATORS = frozenset({"jku", "x5u", "jwk", "x5c"})
#: Extensions we do not implement; "b64": false would change what the signature covers.
_UNSUPPORTED_HEADERS = frozenset({"crit", "b64"})
_PRIVATE_KEY_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: an agency's client now, a person within it later."""

    subject: str
    issuer: str
    organisation_code: str
    agency: str
    scopes: frozenset[str]
    token_id: str | None

    def has(self, scope: str) -> bool:
        return scope in self.scopes


class IssuerConfig(BaseModel):
    """An issuer we trust, and where its signature keys come from: a URL or an inline JWK Set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str
    jwks_uri: str | None = None
    jwks: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> IssuerConfig:
        if (self.jwks_uri is None) == (self.jwks is None):
            raise ValueError(f"issuer {self.issuer!r} needs exactly one of jwks_uri and jwks")
        return self


class AuthError(Exception):
    """The caller is not authenticated: rendered as 401 with a Bearer challenge (RFC 6750).

    ``error`` is None when the request carried no bearer token at all; RFC 6750 §3.1 then wants a
    bare challenge without an error code.
    """

    def __init__(self, description: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(description)
        self.description = description
        self.error = error


class Forbidden(Exception):
    """The caller is authenticated but holds none of the scopes the request needs (403)."""

    def __init__(self, scopes: Sequence[str]) -> None:
        self.scopes = tuple(scopes)
        self.description = "this request needs one of the scopes: " + " ".join(self.scopes)
        super().__init__(self.description)


class IssuerUnavailable(Exception):
    """The issuer's keys could not be fetched: not the caller's fault, so 503 rather than 401."""


class _IssuerKeys:
    """One issuer's signature keys.

    Fetched keys are kept for ten minutes. A token naming an unknown ``kid`` triggers one early
    refetch, at most once a minute, so that an issuer can rotate its keys without a restart and a
    stream of forged ``kid``s cannot make us hammer it. When a refresh fails the old keys stay.
    """

    def __init__(
        self,
        config: IssuerConfig,
        download: Callable[[str], Awaitable[KeySet]],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self._download = download
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        if config.jwks is not None:
            self._keys = signature_keys(config.jwks)

    async def containing(self, kid: str) -> KeySet:
        """The issuer's key set, once it is known to hold ``kid``."""
        if self.config.jwks is not None:
            if self._keys is None or not _holds(self._keys, kid):
                raise AuthError("the token's key id (kid) is not one of its issuer's keys")
            return self._keys
        async with self._lock:
            now = self._clock()
            expired = self._keys is None or now - self._fetched_at >= JWKS_CACHE_SECONDS
            if expired and self._may_fetch(now):
                await self._refresh(now)
            if (self._keys is None or not _holds(self._keys, kid)) and self._may_fetch(now):
                await self._refresh(now)
            if self._keys is None:
                raise IssuerUnavailable(self.config.issuer)
            if not _holds(self._keys, kid):
                raise AuthError("the token's key id (kid) is not one of its issuer's keys")
            return self._keys

    def _may_fetch(self, now: float) -> bool:
        if self._attempted_at is None:
            return True
        pause = JWKS_REFETCH_SECONDS if self._keys is not None else JWKS_RETRY_SECONDS
        return now - self._attempted_at >= pause

    async def _refresh(self, now: float) -> None:
        assert self.config.jwks_uri is not None
        self._attempted_at = now
        try:
            keys = await self._download(self.config.jwks_uri)
        except (httpx.HTTPError, ValueError) as error:
            log.warning(
                "auth.jwks_unavailable",
                issuer=self.config.issuer,
                jwks_uri=self.config.jwks_uri,
                error=repr(error),
            )
            return
        self._keys = keys
        self._fetched_at = now
        log.info("auth.jwks_fetched", issuer=self.config.issuer, kids=_kids(keys))


VERIFIED_CACHE_SIZE: Final = 10_000
VERIFIED_TTL: Final = 60.0  # seconds a verified signature is trusted without checking again


class TokenValidator:
    """Checks a bearer token and returns who it names, or raises ``AuthError``."""

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        audience: str,
        *,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        leeway_seconds: int = 30,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not issuers:
            raise ValueError("a TokenValidator needs at least one issuer")
        if not audience:
            raise ValueError("a TokenValidator needs its audience")
        names = [config.issuer for config in issuers]
        if len(set(names)) != len(names):
            raise ValueError("each issuer may be configured once")
        _check_algorithms(algorithms)
        self.audience = audience
        self.algorithms = tuple(algorithms)
        # RFC 7515 §4: header parameters we do not understand are ignored (``crit`` is refused).
        self._signatures = JWSRegistry(algorithms=self.algorithms, strict_check_header=False)
        self._clock = clock or time.time
        self._http = http
        self._owns_http = http is None
        self._issuers = {
            config.issuer: _IssuerKeys(config, self._download, self._clock) for config in issuers
        }
        self._claims = {
            config.issuer: JWTClaimsRegistry(
                now=self._now,
                leeway=leeway_seconds,
                iss={"essential": True, "value": config.issuer},
                aud={"essential": True, "value": audience},
                exp={"essential": True},
                iat={"essential": True},
                sub={"essential": True},
                org={"essential": True},
                agency={"essential": True, "values": sorted(AGENCIES)},
                scope={"essential": True},
            )
            for config in issuers
        }
        self._leeway = leeway_seconds
        # Tokens that verified lately, with who they name: an agency's client sends the same
        # token with every request until it expires, and verifying its signature and claims
        # again each time is most of the cost of authentication. Of the checks, only ``exp``
        # can turn from passing to failing as time goes on (``nbf`` and ``iat`` only ever
        # pass once they have), so a hit checks ``exp`` exactly as the claims registry does and
        # takes the rest as already checked. A hit is trusted for at most VERIFIED_TTL seconds,
        # so a key withdrawn from the issuer's set stops being honoured as quickly as the key
        # set itself is refreshed.
        self._verified: OrderedDict[str, tuple[Principal, float, float]] = OrderedDict()

    async def validate(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires, verified_at = cached
            now = self._clock()
            if now - verified_at < VERIFIED_TTL and expires > int(now) - self._leeway:
                return principal
            del self._verified[token]  # and checked again below, which names what failed
        header, unverified = _read_unverified(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthError("the token's signing algorithm (alg) is not accepted")
        if _KEY_LOCATORS & header.keys():
            raise AuthError(
                "the token names its own key (jku, x5u, jwk or x5c); "
                "keys are taken only from the issuer's configured key set"
            )
        if _UNSUPPORTED_HEADERS & header.keys():
            raise AuthError("the token uses header extensions (crit, b64) that are not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("the token does not name its key (kid)")
        issuer = unverified.get("iss")
        keys = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if keys is None:
            raise AuthError("the token's issuer (iss) is not trusted here")
        key_set = await keys.containing(kid)
        try:
            verified = jwt.decode(token, key_set, registry=self._signatures)
        except (JoseError, ValueError, TypeError, RecursionError) as error:
            raise AuthError("the signature does not verify with the issuer's key") from error
        principal = self._principal(keys.config.issuer, verified.claims)
        self._verified[token] = (principal, verified.claims["exp"], self._clock())
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    def _principal(self, issuer: str, claims: dict[str, Any]) -> Principal:
        try:
            self._claims[issuer].validate(claims)
        except ExpiredTokenError as error:
            raise AuthError("the token has expired") from error
        except MissingClaimError as error:
            raise AuthError(f"the token lacks required claims: {error.claim}") from error
        except JoseError as error:
            claim = getattr(error, "claim", "a claim")
            raise AuthError(f"the token's {claim} claim is not valid here") from error
        subject, organisation, agency, scope = (
            claims["sub"],
            claims["org"],
            claims["agency"],
            claims["scope"],
        )
        if not all(isinstance(value, str) for value in (subject, organisation, agency, scope)):
            raise AuthError("the token's sub, org, agency and scope claims must be strings")
        token_id = claims.get("jti")
        return Principal(
            subject=subject,
            issuer=issuer,
            organisation_code=organisation,
            agency=agency,
            scopes=frozenset(scope.split()),
            token_id=token_id if isinstance(token_id, str) else None,
        )

    def _now(self) -> int:
        return int(self._clock())

    async def _download(self, uri: str) -> KeySet:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5.0, follow_redirects=False)
        response = await self._http.get(uri, headers={"Accept": "application/json"})
        response.raise_for_status()
        return signature_keys(response.json())

    async def aclose(self) -> None:
        """Close the HTTP client this validator made for itself (not one it was given)."""
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None


def signature_keys(document: object) -> KeySet:
    """The usable keys of a JWK Set: public, asymmetric, for signatures, each with a ``kid``.

    Anything else (symmetric keys, encryption keys, keys without an id, private members published
    by mistake) is left out, so a key set can never turn a public key into an HMAC secret.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set")
    keys: list[Key] = []
    for entry in document["keys"]:
        if not isinstance(entry, Mapping) or entry.get("kty") not in {"RSA", "EC", "OKP"}:
            continue
        if not isinstance(entry.get("kid"), str) or entry.get("use", "sig") != "sig":
            continue
        public = {name: value for name, value in entry.items() if name not in _PRIVATE_KEY_MEMBERS}
        try:
            keys.append(JWKRegistry.import_key(public))
        except (JoseError, ValueError, TypeError) as error:
            log.warning("auth.jwk_ignored", kid=entry["kid"], error=repr(error))
    if not keys:
        raise ValueError("the JWK Set holds no usable signature keys")
    return KeySet(keys)


def _check_algorithms(algorithms: Sequence[str]) -> None:
    if not algorithms:
        raise ValueError("at least one signing algorithm must be allowed")
    for name in algorithms:
        if name in _SYMMETRIC:
            raise ValueError(f"{name} is not allowed: tokens must be signed with an asymmetric key")
        if name not in JWSRegistry.algorithms:
            raise ValueError(f"{name} is not a JWS algorithm joserfc knows")


def _read_unverified(token: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims before any check: used only to choose the issuer and key, never trusted."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise AuthError("the bearer token is not a JWT")
    try:
        compact = jws.extract_compact(token.encode("ascii"))
        header = compact.headers()
        payload = _json_object(compact.payload)
    except (JoseError, ValueError, TypeError, RecursionError) as error:
        raise AuthError("the bearer token is not a compact JWS (a signed JWT)") from error
    return dict(header), payload


def _json_object(payload: bytes | None) -> dict[str, Any]:
    if payload is None:
        raise ValueError("no payload")
    value = json.loads(payload)
    if not isinstance(value, dict):
        raise ValueError("the claims are not a JSON object")
    return value


def _holds(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys)


def _kids(keys: KeySet) -> list[str]:
    return [str(key.kid) for key in keys]


# FastAPI wiring


def install_auth(app: FastAPI, validator: TokenValidator) -> None:
    """Make ``validator`` the app's, and render refusals as problem details with a challenge."""
    app.state.token_validator = validator

    @app.exception_handler(AuthError)
    async def _unauthenticated(_: Request, error: AuthError) -> JSONResponse:
        log.info("auth.refused", status=401, reason=error.description)
        response = problem(401, "Unauthenticated", error.description)
        response.headers["WWW-Authenticate"] = _challenge(error.error, error.description)
        return response

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, error: Forbidden) -> JSONResponse:
        log.info("auth.refused", status=403, reason=error.description)
        response = problem(403, "Forbidden", error.description, required_scopes=list(error.scopes))
        response.headers["WWW-Authenticate"] = _challenge(
            "insufficient_scope", error.description, scope=" ".join(error.scopes)
        )
        return response

    @app.exception_handler(IssuerUnavailable)
    async def _issuer_unavailable(_: Request, error: IssuerUnavailable) -> JSONResponse:
        response = problem(
            503,
            "Service unavailable",
            "The keys of the token's issuer cannot be fetched just now; retry shortly.",
        )
        response.headers["Retry-After"] = str(int(JWKS_RETRY_SECONDS))
        return response


_PRINCIPAL_KEY: Final = "threadline.principal"


async def current_principal(request: Request) -> Principal:
    """The caller named by the request's bearer token; 401 when it has none or it is not valid.

    Worked out once per request (kept in the ASGI scope), however many dependencies ask."""
    known: Principal | None = request.scope.get(_PRINCIPAL_KEY)
    if known is not None:
        return known
    validator: TokenValidator = request.app.state.token_validator
    principal = await validator.validate(_bearer_token(request.headers.get("authorization")))
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        wait = limiter.take(f"{principal.issuer}|{principal.subject}")
        if wait is not None:
            raise HTTPException(
                429,
                f"This client is sending more than {limiter.rate:g} requests a second; "
                f"retry after {wait} s.",
                headers={"Retry-After": str(wait)},
            )
    request.scope[_PRINCIPAL_KEY] = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_scope(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting a caller that holds any one of ``scopes``; 403 otherwise.

    ``Annotated[Principal, Depends(require_scope("referrals:write"))]``
    """
    if not scopes:
        raise ValueError("require_scope needs at least one scope")

    # The request itself, not ``CurrentPrincipal``: one dependency to solve instead of two,
    # on the path of every call (FastAPI's solving was a tenth of the decision point's CPU).
    async def principal_with_scope(request: Request) -> Principal:
        principal = await current_principal(request)
        if not any(principal.has(scope) for scope in scopes):
            raise Forbidden(scopes)
        return principal

    return principal_with_scope


def _bearer_token(authorization: str | None) -> str:
    if not authorization or not authorization.strip():
        raise AuthError("the request carries no bearer token", error=None)
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError("the Authorization header must use the Bearer scheme", error=None)
    token = credentials.strip()
    if not token or len(token.split()) != 1:  # split() scans in C: a token is ~1 KB
        raise AuthError("the Authorization header does not hold one bearer token")
    return token


def _challenge(error: str | None, description: str, *, scope: str | None = None) -> str:
    """A ``WWW-Authenticate: Bearer`` value; parameters are quoted-string safe by construction."""
    if error is None:
        return "Bearer"
    parameters = [f'error="{error}"', f'error_description="{_header_safe(description)}"']
    if scope is not None:
        parameters.append(f'scope="{_header_safe(scope)}"')
    return "Bearer " + ", ".join(parameters)


def _header_safe(text: str) -> str:
    """RFC 6750 §3: only %x20-21 / %x23-5B / %x5D-7E inside these quoted strings."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "'" for c in text)


def _needs_principal(dependant: Any) -> bool:
    return any(
        sub.call is current_principal
        or getattr(sub.call, "__name__", "") == "principal_with_scope"
        or _needs_principal(sub)
        for sub in dependant.dependencies
    )


def _needs_scope(dependant: Any) -> bool:
    return any(
        getattr(sub.call, "__name__", "") == "principal_with_scope" or _needs_scope(sub)
        for sub in dependant.dependencies
    )


def declare_bearer_security(app: FastAPI, routers: Sequence[Any]) -> None:
    """Say in the app's OpenAPI which operations need a bearer token (those that depend on
    :func:`current_principal`), so that clients, the docs' "Authorize" button and schemathesis's
    ``ignored_auth`` check know; the rule itself is enforced by the dependency, not by this."""
    from fastapi.openapi.utils import get_openapi
    from fastapi.routing import APIRoute

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
            routes = [route for router in routers for route in router.routes]
            secured: set[tuple[str, str]] = set()
            scoped: set[tuple[str, str]] = set()
            for route in routes:
                if isinstance(route, APIRoute) and _needs_principal(route.dependant):
                    operations = schema["paths"].get(route.path_format, {})
                    for method in route.methods or ():
                        if method.lower() in operations:
                            operations[method.lower()]["security"] = [{"bearer": []}]
                            secured.add((route.path_format, method.lower()))
                            if _needs_scope(route.dependant):
                                scoped.add((route.path_format, method.lower()))
            document_problems(schema, secured, scoped)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
