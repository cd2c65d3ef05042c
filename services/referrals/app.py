"""The referrals service: the agency API, its outbox relay and deadline timers, and a consumer of
the consent service's retention decisions (crypto-shredding expired narratives)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.referrals import consumers, endpoints, service
from services.referrals.contacts import endpoints as contact_endpoints
from services.referrals.models import data_keys, plumbing
from services.referrals.policy import load_policy
from services.referrals.settings import ReferralsSettings
from shared.calendar import WorkingDayCalendar, load_calendars
from shared.clock import Clock
from shared.crypto import MasterKeyring, Vault
from shared.disclosures import Decide, DisclosureClient
from shared.service import ServiceDefinition, create_service_app
from shared.tokens import platform_tokens

DEFINITION = ServiceDefinition(
    name="referrals",
    title="Threadline referrals API",
    description=(
        "Agencies raise safeguarding concerns about children here. Every referral is "
        "acknowledged within one working day or escalated to the MASH manager."
    ),
    plumbing=plumbing,
    routers=[endpoints.router, contact_endpoints.router],
    timer_handlers={service.DEADLINE_TIMER: service.deadline_missed},
)


def create_app(
    settings: ReferralsSettings | None = None,
    *,
    clock: Clock | None = None,
    configure_logs: bool = True,
    decide: Decide | None = None,
) -> FastAPI:
    """``decide``: the consent service's decision point, which feedback to a referrer asks
    (tests pass the consent app's own client); by default a DisclosureClient to
    ``consent_url`` with the platform client's tokens."""
    settings = settings or ReferralsSettings()
    vault = Vault(MasterKeyring.from_setting(settings.master_keys), data_keys)
    definition = dataclasses.replace(DEFINITION, consumers=consumers.registry_for(vault))
    app = create_service_app(definition, settings, clock=clock, configure_logs=configure_logs)
    if settings.calendar_file:
        working_days, _ = load_calendars(Path(settings.calendar_file))
    else:
        working_days = WorkingDayCalendar()
    app.state.working_days = working_days
    app.state.vault = vault
    app.state.policy = load_policy(Path(settings.policy_file) if settings.policy_file else None)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with contextlib.AsyncExitStack() as resources:
            app.state.decide = decide
            if decide is None:
                tokens = platform_tokens(settings)
                resources.push_async_callback(tokens.aclose)
                client = DisclosureClient(settings.consent_url, token=tokens)
                resources.push_async_callback(client.aclose)
                app.state.decide = client.decide
            async with inner(app) as state:
                yield state

    app.router.lifespan_context = lifespan
    return app
