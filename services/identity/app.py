"""The development identity provider's app: no database, no Kafka, just keys and demo clients."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from fastapi import FastAPI

from services.identity import endpoints
from services.identity.authorization import AuthorizationStore
from services.identity.clients import load_clients
from services.identity.keys import load_or_create_signing_key
from services.identity.service import TokenIssuer
from services.identity.settings import IdentitySettings
from services.identity.users import load_users
from shared import web
from shared.clock import Clock, SystemClock
from shared.errors import install_error_handlers
from shared.http import BodyLimitMiddleware, CorrelationMiddleware
from shared.logging import configure_logging, get_logger

log = get_logger(__name__)


def create_app(
    settings: IdentitySettings | None = None,
    *,
    clock: Clock | None = None,
    configure_logs: bool = True,
) -> FastAPI:
    settings = settings or IdentitySettings()
    if settings.environment == "production":  # settings refuse too; this guards a changed copy
        raise RuntimeError("the development identity provider must not run in production")
    issuer = TokenIssuer(
        settings.issuer,
        load_or_create_signing_key(settings.signing_key_file),
        timedelta(seconds=settings.token_lifetime_seconds),
        clock or SystemClock(),
        user_lifetime=timedelta(seconds=settings.user_token_lifetime_seconds),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if configure_logs:
            configure_logging("identity", settings.log_level, settings.log_json)
        log.info("service.started", service="identity", port=settings.port, issuer=issuer.issuer)
        yield
        log.info("service.stopped", service="identity")

    app = FastAPI(
        title="Threadline development identity provider",
        description=(
            "OAuth2 client credentials for the demo agencies, and OpenID Connect sign-in (code "
            "flow with PKCE) for the demo people, for development and tests only. "
            "In production the services trust the agencies' own issuers."
        ),
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clients = load_clients(settings.clients_file)
    app.state.users = load_users(settings.users_file)
    app.state.authorizations = AuthorizationStore()
    app.state.token_issuer = issuer
    # The sign-in form's answer redirects to the client: CSP's form-action covers that redirect.
    app.add_middleware(
        web.SecurityHeadersMiddleware, form_action=app.state.clients.redirect_origins()
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=64 * 1024)
    app.add_middleware(CorrelationMiddleware)
    install_error_handlers(app)
    app.include_router(endpoints.router)
    web.mount_assets(app, required=False)
    return app
