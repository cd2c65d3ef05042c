"""What one request, and one client, may cost: 413 for an oversized body, 429 for a flood."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from services.referrals.app import create_app
from services.referrals.models import Referral
from shared.db import Database
from shared.ratelimit import RateLimiter
from tests.services.factories import referral_body
from tests.support.apps import referrals_settings, serving
from tests.support.tokens import OTHER_SCHOOL, SCHOOL


@pytest.fixture
async def api(database_url: str, bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = referrals_settings(
        database_url,
        bootstrap,
        max_body_bytes=4096,
        rate_limit_per_second=0.05,  # one token per 20 s: a slow machine cannot refill mid-test
        rate_limit_burst=3,
        relay_enabled=False,
        timers_enabled=False,
    )
    async with serving(create_app(settings, configure_logs=False)) as client:
        yield client


async def referrals(database: Database) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Referral)))


async def test_a_body_over_the_limit_is_refused_whether_declared_or_streamed(
    api: httpx.AsyncClient, database: Database
) -> None:
    before = await referrals(database)
    body = referral_body()
    body["concern"]["what_happened"] = "x" * 5000  # valid for the schema, too big for this service
    declared = await api.post("/v1/referrals", json=body, headers=SCHOOL)
    assert declared.status_code == 413
    assert declared.headers["content-type"] == "application/problem+json"
    assert "4096 bytes" in declared.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000  # no Content-Length: counted as it arrives

    streamed = await api.post(
        "/v1/referrals",
        content=chunks(),
        headers={**SCHOOL, "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    assert await referrals(database) == before


async def test_a_client_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected(
    api: httpx.AsyncClient,
) -> None:
    answers = [(await api.get("/v1/referrals", headers=SCHOOL)).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    refused = await api.get("/v1/referrals", headers=SCHOOL)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["title"] == "Too many requests"
    assert (await api.get("/v1/referrals", headers=OTHER_SCHOOL)).status_code == 200
    assert (await api.get("/healthz")).status_code == 200  # unauthenticated probes are not limited


def test_the_bucket_refills_at_its_rate_and_says_how_long_to_wait() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 2, clock=lambda: now[0])
    assert [limiter.take("a"), limiter.take("a")] == [None, None]
    assert limiter.take("a") == 1  # half a second to the next token, rounded up
    now[0] += 0.5
    assert limiter.take("a") is None
    assert limiter.take("b") is None  # another client's bucket is its own
    now[0] += 10
    assert [limiter.take("a"), limiter.take("a"), limiter.take("a")] == [None, None, 1]
