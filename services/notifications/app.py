"""The notifications service: consumes referral events into the MASH inbox."""

from __future__ import annotations

from fastapi import FastAPI

from services.notifications import endpoints
from services.notifications.consumers import registry
from services.notifications.models import plumbing
from services.notifications.settings import NotificationsSettings
from shared.clock import Clock
from shared.service import ServiceDefinition, create_service_app

DEFINITION = ServiceDefinition(
    name="notifications",
    title="Threadline notifications API",
    description="The MASH inbox: new referrals to acknowledge and escalations of missed deadlines.",
    plumbing=plumbing,
    routers=[endpoints.router],
    consumers=registry,
)


def create_app(
    settings: NotificationsSettings | None = None,
    *,
    clock: Clock | None = None,
    configure_logs: bool = True,
) -> FastAPI:
    return create_service_app(
        DEFINITION, settings or NotificationsSettings(), clock=clock, configure_logs=configure_logs
    )
