"""The timeline service: the MASH read model of every child's chronology, household, pattern
flags, agencies involved and genogram; each read decided by the consent service."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI

from services.timeline import endpoints
from services.timeline.consumers import registry
from services.timeline.models import plumbing
from services.timeline.settings import TimelineSettings
from shared.clock import Clock
from shared.disclosures import DisclosureClient, TokenSource
from shared.service import ServiceDefinition, create_service_app
from shared.tokens import ClientCredentials, platform_tokens

DEFINITION = ServiceDefinition(
    name="timeline",
    title="Threadline timeline API",
    description=(
        "One chronology per child, siblings beside it, patterns flagged: the MASH's read model "
        "of every referral and contact. Every read is a disclosure decided by the consent service."
    ),
    plumbing=plumbing,
    routers=[endpoints.router],
    consumers=registry,
)


def create_app(
    settings: TimelineSettings | None = None,
    *,
    clock: Clock | None = None,
    configure_logs: bool = True,
    disclosure_tokens: TokenSource | None = None,
    disclosure_http: httpx.AsyncClient | None = None,
) -> FastAPI:
    """``disclosure_tokens`` and ``disclosure_http`` replace the client-credentials token source
    and the HTTP client of the decision point (tests run the consent app in process)."""
    settings = settings or TimelineSettings()
    app = create_service_app(DEFINITION, settings, clock=clock, configure_logs=configure_logs)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        tokens = disclosure_tokens
        owned: ClientCredentials | None = None
        if tokens is None:
            owned = platform_tokens(settings)
            tokens = owned
        app.state.disclosures = DisclosureClient(
            settings.consent_url, token=tokens, http=disclosure_http
        )
        try:
            async with inner(app) as state:
                # Out of the collector's sight: everything the started process holds (modules,
                # the app, its pools). A household chronology allocates thousands of objects, so
                # full collections come often, and each walked the whole start-up heap: tens of
                # milliseconds of a read's time, more at its p99 (bench/timeline.py).
                gc.collect()
                gc.freeze()
                yield state
        finally:
            gc.unfreeze()
            await app.state.disclosures.aclose()
            if owned is not None:
                await owned.aclose()

    app.router.lifespan_context = lifespan
    return app
