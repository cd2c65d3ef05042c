"""The consent service: the hash-chained ledger of consents, withdrawals and disclosure
decisions, the decision point every service asks before disclosing, and the DPO's audit views."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from services.consent import agreements, checkpoints, endpoints, retention
from services.consent.consumers import build_registry
from services.consent.jobs import Jobs
from services.consent.models import plumbing
from services.consent.settings import ConsentSettings
from services.consent.writer import LedgerWriter
from shared.clock import Clock
from shared.db import Database
from shared.service import ServiceDefinition, ServiceRuntime, create_service_app

DEFINITION = ServiceDefinition(
    name="consent",
    title="Threadline consent API",
    description=(
        "The consent and disclosure ledger: every disclosure is decided here and recorded with "
        "its lawful basis in a tamper-evident, hash-chained ledger the DPO can audit."
    ),
    plumbing=plumbing,
    routers=[endpoints.router],
)


def create_app(
    settings: ConsentSettings | None = None,
    *,
    clock: Clock | None = None,
    configure_logs: bool = True,
) -> FastAPI:
    settings = settings or ConsentSettings()
    sharing = agreements.load(Path(settings.agreements_file))
    policy = retention.load(Path(settings.retention_file))
    signing_key = checkpoints.load_or_create_signing_key(
        Path(settings.checkpoint_key_file), create=settings.environment != "production"
    )
    jobs = Jobs(
        signing_key=signing_key,
        checkpoint_dir=Path(settings.checkpoint_dir),
        checkpoint_every=timedelta(seconds=settings.checkpoint_interval_seconds),
        policy=policy,
        retention_every=timedelta(seconds=settings.retention_interval_seconds),
    )
    definition = dataclasses.replace(
        DEFINITION,
        consumers=build_registry(sharing.referral_consent),
        timer_handlers=jobs.handlers(),
        database_role=settings.database_role,
    )
    app = create_service_app(definition, settings, clock=clock, configure_logs=configure_logs)
    app.state.agreements = sharing
    app.state.retention_policy = policy
    app.state.checkpoint_public_key = signing_key.public_key()
    service_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        """The service's own lifespan, plus the ledger writer (stopped first, so what it holds
        commits before the database goes)."""
        async with service_lifespan(app) as state:
            runtime: ServiceRuntime = app.state.runtime
            # The writer's own small pool, without a ping per checkout: it is one round trip of
            # every group commit, and the writer retries a batch whose connection broke.
            ledger_database = Database(
                settings.database_url,
                pool_size=2,
                application_name="threadline-consent-ledger",
                role=settings.database_role,
                pre_ping=False,
            )
            writer = LedgerWriter(
                ledger_database, runtime.clock.now, max_batch=settings.ledger_batch_max
            )
            app.state.ledger_writer = writer
            try:
                yield state
            finally:
                await writer.stop()
                await ledger_database.dispose()

    app.router.lifespan_context = lifespan
    app.add_middleware(LockHolderFirst)
    return app


class LockHolderFirst:
    """Outermost: an API request (``/v1/…``) is taken up only when this process's ledger writer
    does not hold the chain lock (``LedgerWriter.turn``). Health and metrics are answered at
    once, even while a writer waits on a database that has stopped answering."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            writer: LedgerWriter | None = getattr(scope["app"].state, "ledger_writer", None)
            if writer is not None:
                await writer.turn()
        await self.app(scope, receive, send)
