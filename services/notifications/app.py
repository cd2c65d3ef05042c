"""The notifications service: the MASH inbox, and every message Threadline owes someone,
decided by the consent service and delivered to the portal inbox, by e-mail and by webhook."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from fastapi import FastAPI

from services.notifications import endpoints, routing
from services.notifications.alerts import Setup
from services.notifications.channels import EmailChannel, WebhookChannel, decision_client
from services.notifications.consumers import build_registry, timer_handlers
from services.notifications.delivery import Dispatcher
from services.notifications.models import plumbing
from services.notifications.settings import NotificationsSettings
from shared.calendar import load_calendars
from shared.clock import Clock, SystemClock
from shared.disclosures import Decide
from shared.service import ServiceDefinition, ServiceRuntime, create_service_app

DEFINITION = ServiceDefinition(
    name="notifications",
    title="Threadline notifications API",
    description=(
        "The MASH inbox, and the messages Threadline sends: to referrers, to MASH managers, to "
        "schools (Operation Encompass), to social workers and clinicians (CP-IS), and notices "
        "of consent withdrawn; each decided by the consent service before it goes."
    ),
    plumbing=plumbing,
    routers=[endpoints.router, endpoints.messages_router],
)
DEFAULT_CALENDAR = "config/calendars/england.toml"


def create_app(
    settings: NotificationsSettings | None = None,
    *,
    clock: Clock | None = None,
    configure_logs: bool = True,
    decide: Decide | None = None,
) -> FastAPI:
    """``decide``: the decision point (tests pass the consent app's own client); by default a
    DisclosureClient to ``consent_url`` with client-credentials tokens."""
    settings = settings or NotificationsSettings()
    clock = clock or SystemClock()
    _, school_days = load_calendars(Path(settings.calendar_file or DEFAULT_CALENDAR))
    setup = Setup(
        routing=routing.load(Path(settings.routing_file)),
        school_days=school_days,
        settings=settings,
        clock=clock,
    )

    async def dispatch(runtime: ServiceRuntime) -> None:
        webhook = WebhookChannel(settings, setup.routing)
        async with contextlib.AsyncExitStack() as resources:
            resources.push_async_callback(webhook.aclose)
            decider = decide
            if decider is None:
                client, tokens = decision_client(settings)
                resources.push_async_callback(tokens.aclose)
                resources.push_async_callback(client.aclose)
                decider = client.decide
            dispatcher = Dispatcher(
                runtime.database,
                routing=setup.routing,
                settings=settings,
                clock=runtime.clock,
                decide=decider,
                email=EmailChannel(settings),
                webhook=webhook,
            )
            await dispatcher.run()

    definition = dataclasses.replace(
        DEFINITION,
        consumers=build_registry(setup),
        timer_handlers=timer_handlers(setup),
        workers={"dispatcher": dispatch},
    )
    app = create_service_app(definition, settings, clock=clock, configure_logs=configure_logs)
    app.state.setup = setup
    return app
