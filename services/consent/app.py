"""The consent service. Today it runs the shared plumbing and health checks; the ledger, the
decision point and the DPO's audit views are built in the consent-ledger issue."""

from __future__ import annotations

from fastapi import FastAPI

from services.consent.models import plumbing
from services.consent.settings import ConsentSettings
from shared.clock import Clock
from shared.service import ServiceDefinition, create_service_app

DEFINITION = ServiceDefinition(
    name="consent",
    title="Threadline consent API",
    description="The consent and disclosure ledger (lawful basis of every disclosure).",
    plumbing=plumbing,
)


def create_app(
    settings: ConsentSettings | None = None,
    *,
    clock: Clock | None = None,
    configure_logs: bool = True,
) -> FastAPI:
    return create_service_app(
        DEFINITION, settings or ConsentSettings(), clock=clock, configure_logs=configure_logs
    )
