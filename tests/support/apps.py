"""Running service apps in-process (lifespan and all: relay, consumers, timers) for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from deploy.local.stack import REPO_ROOT
from services.consent.settings import ConsentSettings
from services.linking.settings import LinkingSettings
from services.notifications.settings import NotificationsSettings
from services.referrals.settings import ReferralsSettings
from services.timeline.settings import TimelineSettings
from tests.support.tokens import test_issuer

CALENDAR = str(REPO_ROOT / "config" / "calendars" / "england.toml")


def _common(database_url: str, bootstrap: str, overrides: dict[str, Any]) -> dict[str, Any]:
    return {
        "environment": "test",
        "database_url": database_url,
        "kafka_bootstrap_servers": bootstrap,
        "relay_poll_seconds": 0.5,
        "timers_poll_seconds": 0.2,
        "consumer_backoff_seconds": 0.05,
        "calendar_file": CALENDAR,
        "auth_issuers": [test_issuer()],
        **overrides,
    }


# Nothing listens on the discard port: a test that gives a service no decision point, mail
# server or identity provider of its own must never reach a developer's stack.
NOWHERE = "http://127.0.0.1:9"


def referrals_settings(database_url: str, bootstrap: str, **overrides: Any) -> ReferralsSettings:
    isolated = {"consent_url": NOWHERE, "identity_url": NOWHERE, **overrides}
    return ReferralsSettings(**_common(database_url, bootstrap, isolated))


def notifications_settings(
    database_url: str, bootstrap: str, **overrides: Any
) -> NotificationsSettings:
    isolated = {
        "consent_url": NOWHERE,
        "identity_url": NOWHERE,
        "smtp_port": 9,
        "delivery_poll_seconds": 0.2,
        **overrides,
    }
    return NotificationsSettings(**_common(database_url, bootstrap, isolated))


def linking_settings(database_url: str, bootstrap: str, **overrides: Any) -> LinkingSettings:
    return LinkingSettings(**_common(database_url, bootstrap, overrides))


def timeline_settings(database_url: str, bootstrap: str, **overrides: Any) -> TimelineSettings:
    return TimelineSettings(**_common(database_url, bootstrap, overrides))


def consent_settings(database_url: str, bootstrap: str, **overrides: Any) -> ConsentSettings:
    return ConsentSettings(**_common(database_url, bootstrap, overrides))


@asynccontextmanager
async def serving(
    app: FastAPI, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan (its workers start) and give an HTTP client bound to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers or {}
        ) as client:
            yield client
