"""The referrals service: the agency API, its outbox relay and deadline timers, and a consumer of
the consent service's retention decisions (crypto-shredding expired narratives)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fastapi import FastAPI

from services.referrals import consumers, endpoints, service
from services.referrals.contacts import endpoints as contact_endpoints
from services.referrals.models import data_keys, plumbing
from services.referrals.policy import load_policy
from services.referrals.settings import ReferralsSettings
from shared.calendar import WorkingDayCalendar, load_calendars
from shared.clock import Clock
from shared.crypto import MasterKeyring, Vault
from shared.service import ServiceDefinition, create_service_app

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
) -> FastAPI:
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
    return app
