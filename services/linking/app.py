"""The linking service: resolves every subject of every referral and contact to a person, and
persons to households; the review queue, merge and unmerge for the MASH."""

from __future__ import annotations

from fastapi import FastAPI

from services.linking import endpoints
from services.linking.consumers import Engine, registry
from services.linking.models import plumbing
from services.linking.settings import LinkingSettings
from shared.clock import Clock
from shared.service import ServiceDefinition, create_service_app

DEFINITION = ServiceDefinition(
    name="linking",
    title="Threadline linking API",
    description=(
        "Record linkage: one child, one household, every agency's contacts together. "
        "Resolve and search persons, the link-review queue, merge and unmerge."
    ),
    plumbing=plumbing,
    routers=[endpoints.router],
    consumers=registry,
)


def create_app(
    settings: LinkingSettings | None = None,
    *,
    clock: Clock | None = None,
    configure_logs: bool = True,
) -> FastAPI:
    settings = settings or LinkingSettings()
    Engine.configure(settings)  # loads the model now: a bad model file stops the start
    return create_service_app(DEFINITION, settings, clock=clock, configure_logs=configure_logs)
