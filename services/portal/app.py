"""The portal's app: pages, sign-in, sessions and their protections; no database, no Kafka."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.portal import dpo, endpoints, links, people, pupils, timeline
from services.portal.api import ApiError, Apis
from services.portal.endpoints import Forbidden, NotSignedIn, problem_page
from services.portal.oidc import OpenIDClient
from services.portal.sessions import SessionStore
from services.portal.settings import PortalSettings
from shared import web
from shared.http import BodyLimitMiddleware, CorrelationMiddleware
from shared.logging import configure_logging, get_logger

log = get_logger(__name__)


def create_app(settings: PortalSettings | None = None, *, configure_logs: bool = True) -> FastAPI:
    settings = settings or PortalSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if configure_logs:
            configure_logging("portal", settings.log_level, settings.log_json)
        async with httpx.AsyncClient(
            timeout=settings.api_timeout_seconds, follow_redirects=False
        ) as http:
            app.state.apis = Apis(settings, http)
            app.state.oidc = OpenIDClient(settings, http)
            log.info("service.started", service="portal", port=settings.port, url=settings.url)
            yield
        log.info("service.stopped", service="portal")

    app = FastAPI(
        title="Threadline portal",
        description="Pages for school DSLs, MASH staff and DPOs (no API of its own).",
        version="1.0.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.sessions = SessionStore(idle_seconds=settings.session_idle_minutes * 60)
    app.add_middleware(web.SecurityHeadersMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(CorrelationMiddleware)
    app.include_router(endpoints.router)
    app.include_router(people.router)
    app.include_router(links.router)
    app.include_router(dpo.router)
    app.include_router(timeline.router)
    app.include_router(pupils.router)
    web.mount_assets(app)
    _install_error_pages(app)
    return app


def _install_error_pages(app: FastAPI) -> None:
    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, error: NotSignedIn) -> Response:
        if request.method == "GET":
            return RedirectResponse(f"/?{error.reason}=1", status_code=303)
        return problem_page(
            request,
            401,
            "You have been signed out",
            "You were signed out, so what you sent has not been saved. Sign in and try again.",
            sign_in=True,
        )

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, error: Forbidden) -> Response:
        return problem_page(request, 403, "You cannot see this page", error.detail)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> Response:
        if error.status == 401:
            return problem_page(
                request,
                401,
                "You have been signed out",
                "Your sign-in has ended. Sign in again to carry on.",
                sign_in=True,
            )
        if error.status in {403, 404}:
            return problem_page(
                request,
                404,
                "Page not found",
                "There is nothing here that you can see. Check the address, or go back.",
            )
        log.warning("portal.api_error", status=error.status, detail=error.detail)
        return problem_page(
            request,
            503,
            "Sorry, there is a problem with the service",
            "Try again later. Nothing you sent has been lost if you saw no confirmation: "
            "you can send it again.",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 404:
            return problem_page(
                request, 404, "Page not found", "Check the address, or go back to the start."
            )
        if error.status_code == 413:
            return problem_page(request, 413, "What you sent is too large", str(error.detail))
        return problem_page(request, error.status_code, "There is a problem", str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, error: RequestValidationError) -> Response:
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) for e in error.errors())
        if request.url.path in {"/healthz", "/readyz"}:
            return JSONResponse({"detail": fields}, status_code=400)
        return problem_page(
            request, 400, "There is a problem with the address", f"Check these parts: {fields}."
        )
