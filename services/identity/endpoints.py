"""The provider's HTTP surface: discovery, the public keys, and the client credentials grant."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import parse_qs, unquote_plus

from authlib.oauth2.rfc6749 import errors as oauth  # type: ignore[import-untyped]
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from services.identity.clients import Client, ClientRegistry
from services.identity.schemas import ServerMetadata, TokenError, TokenResponse
from services.identity.service import TokenIssuer
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


IssuerDep = Annotated[TokenIssuer, Depends(_issuer)]
ClientsDep = Annotated[ClientRegistry, Depends(_clients)]


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
        token_endpoint=f"{issuer.issuer}/oauth2/token",
        jwks_uri=f"{issuer.issuer}/jwks.json",
        grant_types_supported=["client_credentials"],
        token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post"],
        scopes_supported=sorted({scope for client in clients for scope in client.scopes}),
    )


@router.get("/jwks.json", summary="The public keys that verify this provider's tokens")
async def jwks(issuer: IssuerDep) -> dict[str, Any]:
    return issuer.jwks


@router.post(
    "/oauth2/token",
    response_model=TokenResponse,
    summary="Client credentials grant (RFC 6749 §4.4)",
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
        if grant_type != "client_credentials":
            raise oauth.UnsupportedGrantTypeError(grant_type)
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
        access_token=issued.access_token, expires_in=issued.expires_in, scope=issued.scope
    )
    return JSONResponse(body.model_dump(), headers=NO_STORE)


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
