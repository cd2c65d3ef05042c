"""Helpers of the consent tests: a running consent app, request bodies, the superuser's view."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from deploy.local.stack import REPO_ROOT
from services.consent.app import create_app
from shared.db import asyncpg_dsn
from shared.disclosures import Decide, DisclosureClient
from tests.support.apps import consent_settings, serving
from tests.support.tokens import bearer, token

AGREEMENT = "demo-mash-isa-2026"
SCHOOL_ASKS = bearer(
    organisation="100001",
    agency="school",
    scopes="disclosures:decide consent:write",
    audience="threadline:consent",
)
MASH_ASKS = bearer(
    organisation="MASH-DEMO",
    agency="mash",
    scopes="disclosures:decide consent:write",
    audience="threadline:consent",
)
DPO = bearer(
    organisation="DEMO-LA",
    agency="dpo",
    scopes="consent:audit",
    audience="threadline:consent",
    subject="dpo-person",
)


def consent_app(database_url: str, bootstrap: str, tmp: Path, **overrides: Any) -> FastAPI:
    overrides = {
        "agreements_file": str(REPO_ROOT / "config" / "consent" / "agreements.toml"),
        **overrides,
    }
    settings = consent_settings(
        database_url,
        bootstrap,
        retention_file=str(REPO_ROOT / "config" / "consent" / "retention.toml"),
        checkpoint_dir=str(tmp / "checkpoints"),
        checkpoint_key_file=str(tmp / "checkpoint-key.pem"),
        **overrides,
    )
    return create_app(settings, configure_logs=False)


@asynccontextmanager
async def consent_api(
    database_url: str, bootstrap: str, tmp: Path, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(consent_app(database_url, bootstrap, tmp, **overrides)) as client:
        yield client


async def platform_token() -> str:
    """The platform client's token at the consent service (it decides on others' behalf)."""
    return token(
        organisation="THREADLINE",
        agency="mash",
        scopes="disclosures:decide disclosures:delegate",
        audience="threadline:consent",
        subject="threadline-platform",
    )


def decision_point(consent_api: httpx.AsyncClient) -> Decide:
    """The consent app's decision point, asked as the platform client (over its ASGI app)."""
    return DisclosureClient("http://testserver", platform_token, http=consent_api).decide


def disclosure(subjects: list[uuid.UUID] | None = None, **overrides: Any) -> dict[str, Any]:
    """A school asking to share a concern with the MASH: valid, every template field filled."""
    body: dict[str, Any] = {
        "requester": {
            "organisation_code": "100001",
            "agency": "school",
            "name": "Jo Teacher",
            "role": "Designated Safeguarding Lead",
        },
        "recipient": {"agency": "mash", "organisation_code": "MASH-DEMO"},
        "subject_ids": [str(s) for s in (subjects or [uuid.uuid4()])],
        "data_categories": ["concern_details", "attendance"],
        "special_category": False,
        "purpose": "safeguarding_referral",
        "lawful_basis": "public_task",
        "consent": {
            "sought": False,
            "why_not_sought": "Asking could increase the risk to the child.",
        },
        "necessity_and_proportionality": "The MASH needs the concern to decide on a response.",
        "data_minimisation": "Only the concern and attendance, not the full pupil record.",
        "agreement_id": AGREEMENT,
        "decided_by": {"name": "Jo Teacher", "role": "Designated Safeguarding Lead"},
    }
    body = copy.deepcopy(body)
    body.update(overrides)
    return body


def consent_body(subject: uuid.UUID, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject_id": str(subject),
        "grantor_kind": "person_with_parental_responsibility",
        "grantor_subject_id": str(uuid.uuid4()),
        "grantor_description": "mother",
        "status": "given",
        "data_categories": ["*"],
        "recipients": ["mash", "local_authority"],
        "purposes": ["safeguarding_referral"],
        "obtained_how": "in person at the school office",
        "obtained_at": "2026-01-05T09:00:00Z",
        "obtained_by": {"name": "Jo Teacher", "role": "Designated Safeguarding Lead"},
        "evidence_reference": "school MIS note 4411",
    }
    body.update(overrides)
    return body


@asynccontextmanager
async def superuser(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The database superuser, with triggers off (``session_replication_role = replica``): the
    one actor who can change ledger rows, and whose changes verify must catch."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute("SET session_replication_role = replica")
        yield connection
    finally:
        await connection.close()


async def head(database_url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        value = await connection.fetchval("SELECT coalesce(max(sequence), 0) FROM consent.ledger")
        return int(value)
    finally:
        await connection.close()
