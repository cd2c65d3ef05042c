"""What a service that serves pages to people needs: GOV.UK Design System templates and assets,
and the security headers every page carries (the portal, and the development provider's sign-in).

GOV.UK Frontend comes from the npm registry (``services/portal/package.json``, installed by
``make install`` with ``npm ci``); its Jinja macros from ``govuk-frontend-jinja`` (PyPI).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    PrefixLoader,
    select_autoescape,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
#: Where `npm ci` put the portal's packages; a container image sets it to where it copied them.
NODE_MODULES: Final = Path(
    os.environ.get(
        "THREADLINE_PORTAL_NODE_MODULES", REPO_ROOT / "services" / "portal" / "node_modules"
    )
)
GOVUK_FRONTEND: Final = NODE_MODULES / "govuk-frontend" / "dist" / "govuk"
PORTAL_STATIC: Final = REPO_ROOT / "services" / "portal" / "static"


def templates(directory: Path) -> Jinja2Templates:
    """Templates from ``directory``, which may use every GOV.UK Frontend Jinja macro; autoescaped,
    undefined variables render empty (the GOV.UK macros rely on that), whitespace trimmed."""
    environment = Environment(
        loader=ChoiceLoader(
            [
                FileSystemLoader(directory),
                # The macros import each other as "govuk_frontend_jinja/…".
                PrefixLoader({"govuk_frontend_jinja": PackageLoader("govuk_frontend_jinja")}),
            ]
        ),
        autoescape=select_autoescape(("html",), default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return Jinja2Templates(env=environment)


def mount_assets(app: FastAPI, *, required: bool = True) -> None:
    """GOV.UK Frontend's CSS and JavaScript under /govuk, its fonts and images under /assets
    (where its CSS looks for them), and the portal's own scripts under /static.

    Not ``required`` (the development provider's sign-in page): without the assets the page is
    served unstyled, still usable.
    """
    if not GOVUK_FRONTEND.is_dir():
        if not required:
            return
        raise RuntimeError(
            f"GOV.UK Frontend is not installed at {GOVUK_FRONTEND}: run `make install`"
        )
    app.mount("/assets", StaticFiles(directory=GOVUK_FRONTEND / "assets"), name="assets")
    app.mount("/govuk", StaticFiles(directory=GOVUK_FRONTEND), name="govuk")
    app.mount("/static", StaticFiles(directory=PORTAL_STATIC), name="static")


class SecurityHeadersMiddleware:
    """Every response gets a strict Content-Security-Policy (scripts only from this origin or with
    the request's nonce, no inline styles), framing refused, no MIME sniffing, no referrer beyond
    the origin, and HSTS. The nonce is ``request.state.csp_nonce``, for the GOV.UK template's one
    inline script. Pages are not cached: they hold case data."""

    def __init__(self, app: ASGIApp, *, form_action: tuple[str, ...] = ()) -> None:
        self.app = app
        self.form_action = " ".join(("'self'", *form_action))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(18)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        static = scope["path"].startswith(("/assets/", "/govuk/", "/static/"))
        policy = (
            "default-src 'self'; "
            f"script-src 'self' 'nonce-{nonce}'; "
            "style-src 'self'; "
            "img-src 'self' data:; "
            "font-src 'self'; "
            "connect-src 'self'; "
            "object-src 'none'; "
            "base-uri 'none'; "
            f"form-action {self.form_action}; "
            "frame-ancestors 'none'"
        )
        headers = [
            (b"content-security-policy", policy.encode()),
            (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        if not static:
            headers.append((b"cache-control", b"no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *(header for header in headers if header[0] not in present),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
