"""The provider's HTTP surface: discovery, the public keys, the client credentials grant, and
sign-in for people (OpenID Connect authorization code flow with PKCE, S256 only)."""

from __future__ import annotations

import base64
import binascii
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, unquote_plus, urlencode

from authlib.oauth2.rfc6749 import errors as oauth  # type: ignore[import-untyped]
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.identity.authorization import (
    OPAQUE_VALUE,
    PKCE_VALUE,
    AuthorizationRequest,
    AuthorizationStore,
)
from services.identity.clients import Client, ClientRegistry
from services.identity.schemas import ServerMetadata, TokenError, TokenResponse
from services.identity.service import IssuedToken, TokenIssuer
from services.identity.users import UserRegistry
from shared import web
from shared.logging import get_logger

log = get_logger(__name__)
router = APIRouter(tags=["identity"])

MAX_FORM_BYTES = 8_192
FORM = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def _issuer(request: Request) -> TokenIssuer:
    issuer: TokenIssuer = request.app.state.token_issuer
    return issuer


async def _clients(request: Request) -> ClientRegistry:
    clients: ClientRegistry = request.app.state.clients
    return clients


async def _users(request: Request) -> UserRegistry:
    users: UserRegistry = request.app.state.users
    return users


async def _authorizations(request: Request) -> AuthorizationStore:
    store: AuthorizationStore = request.app.state.authorizations
    return store


IssuerDep = Annotated[TokenIssuer, Depends(_issuer)]
ClientsDep = Annotated[ClientRegistry, Depends(_clients)]
UsersDep = Annotated[UserRegistry, Depends(_users)]
AuthorizationsDep = Annotated[AuthorizationStore, Depends(_authorizations)]
pages = web.templates(Path(__file__).parent / "templates")


@router.get("/healthz", tags=["operations"], summary="Liveness: the process is serving")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"], summary="Readiness: always, it depends on nothing")
async def readyz() -> dict[str, Any]:
    return {"status": "ready", "checks": {}}


@router.get(
    "/.well-known/openid-configuration",
    response_model=ServerMetadata,
    summary="Discovery document",
)
@router.get(
    "/.well-known/oauth-authorization-server",
    response_model=ServerMetadata,
    summary="Authorization server metadata (RFC 8414)",
)
async def server_metadata(issuer: IssuerDep, clients: ClientsDep) -> ServerMetadata:
    return ServerMetadata(
        issuer=issuer.issuer,
        authorization_endpoint=f"{issuer.issuer}/authorize",
        token_endpoint=f"{issuer.issuer}/oauth2/token",
        jwks_uri=f"{issuer.issuer}/jwks.json",
        grant_types_supported=["client_credentials", "authorization_code"],
        response_types_supported=["code"],
        code_challenge_methods_supported=["S256"],
        subject_types_supported=["public"],
        id_token_signing_alg_values_supported=["Ed25519", "EdDSA"],
        token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post"],
        scopes_supported=sorted({scope for client in clients for scope in client.scopes}),
        claims_supported=[
            "sub",
            "name",
            "preferred_username",
            "roles",
            "org",
            "org_name",
            "agency",
            "nonce",
        ],
    )


@router.get("/jwks.json", summary="The public keys that verify this provider's tokens")
async def jwks(issuer: IssuerDep) -> dict[str, Any]:
    return issuer.jwks


@router.post(
    "/oauth2/token",
    response_model=TokenResponse,
    summary="Client credentials (RFC 6749 §4.4) and authorization code with PKCE (§4.1, RFC 7636)",
    responses={
        400: {"model": TokenError, "description": "invalid_request, unsupported_grant_type, …"},
        401: {"model": TokenError, "description": "invalid_client"},
    },
)
async def token(request: Request, issuer: IssuerDep, clients: ClientsDep) -> JSONResponse:
    try:
        form = await _form(request)
        client = _authenticate(request, form, clients)
        grant_type = _single(form, "grant_type")
        if grant_type is None:
            raise oauth.InvalidRequestError(description="grant_type is required")
        if grant_type not in {"client_credentials", "authorization_code"}:
            raise oauth.UnsupportedGrantTypeError(grant_type)
        if not client.may_use(grant_type):
            raise oauth.UnauthorizedClientError(
                description=f"this client may not use the {grant_type} grant"
            )
        if grant_type == "authorization_code":
            issued = _redeem_code(request, form, client, issuer)
        else:
            issued = issuer.grant(
                client,
                scope=_single(form, "scope"),
                audiences=[*form.get("audience", []), *form.get("resource", [])],
            )
    except oauth.OAuth2Error as error:
        log.info("identity.token_refused", error=error.error)
        status, body, headers = error()
        headers = {name: value for name, value in headers if name.lower() != "content-type"}
        return JSONResponse(body, status_code=status, headers=headers)
    log.info("identity.token_issued", client_id=client.client_id, scope=issued.scope)
    body = TokenResponse(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        scope=issued.scope,
        id_token=issued.id_token,
    )
    return JSONResponse(body.model_dump(exclude_none=True), headers=NO_STORE)


def _redeem_code(
    request: Request, form: dict[str, list[str]], client: Client, issuer: TokenIssuer
) -> IssuedToken:
    code, verifier = _single(form, "code"), _single(form, "code_verifier")
    if not code:
        raise oauth.InvalidRequestError(description="code is required")
    if not verifier:
        raise oauth.InvalidRequestError(description="code_verifier is required (PKCE)")
    store: AuthorizationStore = request.app.state.authorizations
    grant = store.redeem(
        code,
        client_id=client.client_id,
        redirect_uri=_single(form, "redirect_uri"),
        verifier=verifier,
    )
    log.info("identity.user_signed_in", client_id=client.client_id, user=grant.user.username)
    return issuer.grant_for_user(client, grant)


# -- sign-in for people -----------------------------------------------------------------------


@router.get(
    "/authorize",
    summary="Start a sign-in (OpenID Connect authorization code flow, PKCE S256 required)",
    response_class=HTMLResponse,
)
async def authorize(
    request: Request,
    clients: ClientsDep,
    authorizations: AuthorizationsDep,
    client_id: Annotated[str | None, Query(max_length=64)] = None,
    redirect_uri: Annotated[str | None, Query(max_length=2000)] = None,
    response_type: Annotated[str | None, Query(max_length=64)] = None,
    scope: Annotated[str | None, Query(max_length=1000)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    nonce: Annotated[str | None, Query(max_length=512)] = None,
    code_challenge: Annotated[str | None, Query(max_length=128)] = None,
    code_challenge_method: Annotated[str | None, Query(max_length=16)] = None,
) -> Response:
    """RFC 6749 §4.1.2.1: an unknown client or redirect URI is told to the person, never
    redirected to; every other problem goes back to the client's redirect URI."""
    client = clients.get(client_id) if client_id else None
    if client is None or not client.may_use("authorization_code"):
        return _problem_page(
            request, "Sign-in link not valid", "The service that sent you here is not known."
        )
    if redirect_uri is None or not client.redirects_to(redirect_uri):
        return _problem_page(
            request,
            "Sign-in link not valid",
            "The address to return to is not one this service registered.",
        )
    if state is not None and not OPAQUE_VALUE.match(state):
        return _problem_page(request, "Sign-in link not valid", "The sign-in link is damaged.")
    try:
        if response_type != "code":
            raise oauth.UnsupportedResponseTypeError(response_type or "(none)")
        requested = set((scope or "").split())
        if "openid" not in requested:
            raise oauth.InvalidScopeError(description="the openid scope is required")
        if not requested <= client.scopes:
            raise oauth.InvalidScopeError(description="the client may not ask for these scopes")
        if code_challenge is None or not PKCE_VALUE.match(code_challenge):
            raise oauth.InvalidRequestError(description="a PKCE code_challenge is required")
        if code_challenge_method != "S256":
            raise oauth.InvalidRequestError(description="code_challenge_method must be S256")
        if nonce is not None and not OPAQUE_VALUE.match(nonce):
            raise oauth.InvalidRequestError(description="nonce is not valid")
        sign_in_id = authorizations.begin(
            AuthorizationRequest(
                client_id=client.client_id,
                redirect_uri=redirect_uri,
                scope=" ".join(sorted(requested)),
                state=state,
                nonce=nonce,
                code_challenge=code_challenge,
            )
        )
    except oauth.OAuth2Error as error:
        log.info("identity.authorize_refused", client_id=client.client_id, error=error.error)
        parameters = {"error": error.error, "error_description": error.description or ""}
        return _back_to_client(request, redirect_uri, parameters, state)
    return _sign_in_page(request, client, sign_in_id)


@router.post("/authorize", summary="The sign-in form", response_class=HTMLResponse)
async def sign_in(
    request: Request,
    clients: ClientsDep,
    users: UsersDep,
    authorizations: AuthorizationsDep,
) -> Response:
    form = await request.form()
    sign_in_id, username, password = (
        str(form.get(name, ""))[:512] for name in ("sign_in_id", "username", "password")
    )
    pending = authorizations.pending(sign_in_id)
    client = clients.get(pending.client_id) if pending is not None else None
    if pending is None or client is None:
        return _problem_page(
            request,
            "Your sign-in has timed out",
            "Go back to the service you were using and start again.",
            status_code=400,
        )
    user = users.authenticate(username, password)
    if user is None:
        log.info("identity.sign_in_refused", client_id=client.client_id)
        error = (
            "Enter your sign-in name"
            if not username.strip()
            else "The sign-in name or password is not right"
        )
        return _sign_in_page(request, client, sign_in_id, username=username, error=error)
    code, _ = authorizations.complete(sign_in_id, user, int(time.time()))
    return _back_to_client(request, pending.redirect_uri, {"code": code}, pending.state)


def _sign_in_page(
    request: Request, client: Client, sign_in_id: str, *, username: str = "", error: str = ""
) -> Response:
    return pages.TemplateResponse(
        request,
        "sign_in.html",
        {
            "client_name": client.name,
            "sign_in_id": sign_in_id,
            "username": username,
            "error": error,
        },
        status_code=400 if error else 200,
        headers=NO_STORE,
    )


def _problem_page(request: Request, title: str, detail: str, *, status_code: int = 400) -> Response:
    return pages.TemplateResponse(
        request, "problem.html", {"title": title, "detail": detail}, status_code=status_code
    )


def _back_to_client(
    request: Request, redirect_uri: str, parameters: dict[str, str], state: str | None
) -> Response:
    """303 to the client with the result; ``iss`` too (RFC 9207), against mix-up attacks."""
    issuer: TokenIssuer = request.app.state.token_issuer
    query = {**parameters, **({"state": state} if state is not None else {}), "iss": issuer.issuer}
    separator = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(f"{redirect_uri}{separator}{urlencode(query)}", status_code=303)


async def _form(request: Request) -> dict[str, list[str]]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM:
        raise oauth.InvalidRequestError(description=f"the body must be {FORM}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise oauth.InvalidRequestError(description="the body is too large")
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except ValueError as error:  # bad UTF-8, or too many fields
        raise oauth.InvalidRequestError(description="the body is not a valid form") from error


def _single(form: dict[str, list[str]], name: str) -> str | None:
    """RFC 6749 §3.2: parameters must not be repeated."""
    values = form.get(name, [])
    if len(values) > 1:
        raise oauth.InvalidRequestError(description=f"the {name} parameter is repeated")
    return values[0] if values else None


def _authenticate(request: Request, form: dict[str, list[str]], clients: ClientRegistry) -> Client:
    """client_secret_basic or client_secret_post (RFC 6749 §2.3.1), never both at once."""
    authorization = request.headers.get("authorization")
    form_id, form_secret = _single(form, "client_id"), _single(form, "client_secret")
    if authorization is not None:
        if form_secret is not None:
            raise oauth.InvalidRequestError(description="use one client authentication method")
        client_id, secret = _basic_credentials(authorization)
    elif form_id is not None and form_secret is not None:
        client_id, secret = form_id, form_secret
    else:
        raise _invalid_client("client authentication is required")
    client = clients.authenticate(client_id, secret)
    if client is None:
        raise _invalid_client("client authentication failed")
    return client


def _basic_credentials(authorization: str) -> tuple[str, str]:
    """HTTP Basic, where id and secret are form-urlencoded first (RFC 6749 §2.3.1)."""
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client("the Authorization header must use the Basic scheme")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as error:
        raise _invalid_client("the Basic credentials are not valid base64") from error
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise _invalid_client("the Basic credentials have no secret")
    return unquote_plus(client_id), unquote_plus(secret)


def _invalid_client(description: str) -> Exception:
    """401 with a ``WWW-Authenticate: Basic`` challenge (RFC 6749 §5.2)."""
    error: Exception = oauth.InvalidClientError(description=description, status_code=401)
    return error
