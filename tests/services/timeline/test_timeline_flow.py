"""End to end on real Kafka and PostgreSQL, every service in process: a police incident and two
school referrals about a family reach the timeline through the topics and the linking service;
the MASH worker reads the child's chronology (with the sibling's referral beside it), the
summary with its flags and agencies, the genogram and the printable chronology; every read is a
disclosure decided by the consent service and written in its ledger; a refused one is a 403."""

from __future__ import annotations

import asyncio
import copy
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import text

from services.linking.app import create_app as create_linking
from services.referrals.app import create_app as create_referrals
from services.timeline.app import create_app as create_timeline
from services.timeline.schemas import TimelineOut
from shared.db import Database
from shared.identifiers import nhs_check_digit
from tests.services.consent_support import consent_app, platform_token
from tests.services.factories import referral_body
from tests.support.apps import (
    linking_settings,
    referrals_settings,
    serving,
    timeline_settings,
)
from tests.support.tokens import MASH, MASH_TIMELINE, SCHOOL, bearer

POLICE = bearer(organisation="DEMO-PF", agency="police", scopes="contacts:write")
NOW = datetime.now(UTC).replace(microsecond=0)
T = TypeVar("T")


def nhs_number() -> str:
    while True:
        stem = f"{random.randint(400_000_000, 499_999_999)}"
        digit = nhs_check_digit(stem)
        if digit is not None:
            return f"{stem}{digit}"


async def until(check: Callable[[], Awaitable[T | None]], timeout: float = 60.0) -> T:
    """Wait until ``check`` returns something, and return it."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"still {found!r} after {timeout} s")
        await asyncio.sleep(0.25)


class Family:
    """A family of its own (unique surname and NHS numbers), so that no other test's records
    link to it in the shared database."""

    def __init__(self) -> None:
        # Nothing shared with another family: linking compares surnames by similarity, so a
        # common prefix, address or birthday would join two test families' mothers.
        letters = "".join(
            random.choice("bcdfghjklmnprstvwz") + random.choice("aeiou") for _ in range(4)
        )
        self.name = letters.title()
        self.maya_nhs = nhs_number()
        self.leo_nhs = nhs_number()
        self.mother = {
            "given_names": "Sarah",
            "family_name": self.name,
            "date_of_birth": f"19{random.randint(75, 99)}-{random.randint(1, 12):02d}-"
            f"{random.randint(1, 28):02d}",
            "sex": "female",
        }
        self.address = {
            "lines": [f"{random.randint(1, 300)} {self.name} Road"],
            "town": "Derby",
            "postcode": f"DE{random.randint(1, 24)} {random.randint(1, 9)}"
            f"{random.choice('ABDEFGHJLNPQRSTUWXYZ')}{random.choice('ABDEFGHJLNPQRSTUWXYZ')}",
        }

    def maya(self) -> dict[str, Any]:
        return {
            "given_names": "Maya",
            "family_name": self.name,
            "date_of_birth": "2016-05-04",
            "sex": "female",
            "nhs_number": self.maya_nhs,
            "address": self.address,
            "school": {"urn": "100001", "name": "Oakfield Primary School"},
        }

    def leo(self) -> dict[str, Any]:
        return {
            "given_names": "Leo",
            "family_name": self.name,
            "date_of_birth": "2019-09-12",
            "sex": "male",
            "nhs_number": self.leo_nhs,
            "address": self.address,
        }

    def referral(self, child: dict[str, Any]) -> dict[str, Any]:
        body = referral_body()
        body["children"] = [child]
        mother = copy.deepcopy(self.mother)
        mother["address"] = self.address
        mother["relationships"] = [
            {
                "child": 0,
                "relationship": "mother",
                "parental_responsibility": True,
                "lives_with_child": True,
            }
        ]
        body["family_members"] = [mother]
        return body

    def incident(self) -> dict[str, Any]:
        return {
            "type": "police_domestic_abuse_incident",
            "occurred_at": (NOW - timedelta(days=20)).isoformat().replace("+00:00", "Z"),
            "incident_reference": f"DEMO/2026/{random.randint(10000, 99999)}",
            "risk_level": "high",
            "officer": {"name": "PC Sam Officer", "collar_number": "ab1234"},
            "police_station": "Derby Central",
            "force_code": "30",
            "subjects": [
                {**self.maya(), "witnessed": True, "injured": False},
                {**self.leo(), "witnessed": False, "injured": False},
            ],
            "adults": [
                {
                    "given_names": "Sarah",
                    "family_name": self.name,
                    "date_of_birth": self.mother["date_of_birth"],
                    "role": "victim",
                }
            ],
            "narrative": "Officers heard shouting; the children were hiding upstairs.",
        }


@pytest.fixture
async def apis(
    database_url: str, bootstrap: str, tmp_path: Path
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    referrals = create_referrals(
        referrals_settings(database_url, bootstrap, timers_enabled=False), configure_logs=False
    )
    linking = create_linking(linking_settings(database_url, bootstrap), configure_logs=False)
    consent = consent_app(database_url, bootstrap, tmp_path)
    async with (
        serving(referrals) as referrals_api,
        serving(linking) as linking_api,
        serving(consent) as consent_api,
    ):
        timeline = create_timeline(
            timeline_settings(database_url, bootstrap),
            configure_logs=False,
            disclosure_tokens=platform_token,
            disclosure_http=consent_api,
        )
        async with serving(timeline, headers=MASH_TIMELINE) as timeline_api:
            yield {
                "referrals": referrals_api,
                "linking": linking_api,
                "consent": consent_api,
                "timeline": timeline_api,
            }


def _names(entry: dict[str, Any]) -> list[str]:
    return [p["name"].split()[0] for p in entry["people"]]


async def _person_of(database: Database, subject_id: str) -> uuid.UUID | None:
    async with database.transaction() as session:
        found = await session.execute(
            text("SELECT person_id FROM timeline.records WHERE subject_id = :s"),
            {"s": uuid.UUID(subject_id)},
        )
        return found.scalar_one_or_none()


async def test_a_mash_worker_reads_one_chronology_with_the_household_beside_it(
    apis: dict[str, httpx.AsyncClient], database: Database
) -> None:
    referrals, timeline = apis["referrals"], apis["timeline"]
    family = Family()

    incident = await referrals.post("/v1/contacts", json=family.incident(), headers=POLICE)
    assert incident.status_code == 201, incident.text
    leo_referral = await referrals.post(
        "/v1/referrals", json=family.referral(family.leo()), headers=SCHOOL
    )
    assert leo_referral.status_code == 201, leo_referral.text
    maya_referral = await referrals.post(
        "/v1/referrals", json=family.referral(family.maya()), headers=SCHOOL
    )
    assert maya_referral.status_code == 201, maya_referral.text
    referral = maya_referral.json()
    maya_subject = referral["children"][0]["subject_id"]

    maya = await until(lambda: _person_of(database, maya_subject), timeout=60)
    assert maya is not None
    url = f"/v1/persons/{maya}/timeline"

    async def own_entries() -> list[dict[str, Any]] | None:
        response = await timeline.get(url)
        if response.status_code != 200:
            return None
        kinds = {e["kind"] for e in response.json()["entries"]}
        return (
            response.json()["entries"] if {"referral", "domestic_abuse_incident"} <= kinds else None
        )

    entries = await until(own_entries, timeout=60)
    assert entries is not None
    incident_entry = next(e for e in entries if e["kind"] == "domestic_abuse_incident")
    assert incident_entry["agency"] == "police"
    assert "PC Sam Officer" in incident_entry["who"]
    assert "witnessed it" in incident_entry["summary"]
    assert incident_entry["relationship"] == "this person"
    own_referral = next(e for e in entries if e["kind"] == "referral")
    assert own_referral["source"]["reference"] == referral["reference"]
    assert own_referral["source"]["path"] == f"/v1/referrals/{referral['id']}"
    assert own_referral["contact"] == "dsl@oakfield.example.org"
    assert own_referral["deadlines"][0]["name"] == "acknowledgement"
    assert own_referral["deadlines"][0]["met"] is None
    # the narrative and the child's own words never reach the timeline
    assert "breakfast" not in str(entries) and "hide under the bed" not in str(entries)
    assert [e["occurred_at"] for e in entries] == sorted(e["occurred_at"] for e in entries)

    # The household view: Leo's referral beside Maya's, labelled with whose it is.
    async def with_sibling() -> dict[str, Any] | None:
        response = await timeline.get(url, params={"include": "household"})
        body = response.json()
        leo = [
            e
            for e in body.get("entries", [])
            if e["kind"] == "referral" and _names(e) == ["Leo", "Sarah"]
        ]
        return body if leo else None

    household = await until(with_sibling, timeout=60)
    TimelineOut.model_validate(household)  # the shape the OpenAPI document promises
    assert household is not None and household["household_included"]
    # Leo's referral named Leo and his mother: one line, Leo first, with how each is related
    leo_entry = next(
        e for e in household["entries"] if e["kind"] == "referral" and _names(e)[0] == "Leo"
    )
    assert leo_entry["whose"].startswith("Leo")
    assert leo_entry["relationship"] in {"sibling", "half-sibling", "household member"}
    assert {p["relationship"] for p in leo_entry["people"]} >= {"parent"}
    # the police incident named both children: shown once, with both names
    incidents = [e for e in household["entries"] if e["kind"] == "domestic_abuse_incident"]
    assert len(incidents) == 1
    assert {p["name"].split()[0] for p in incidents[0]["people"]} >= {"Maya", "Leo"}

    # the police recorded the mother as the victim: her line is the same event, shown once
    async def mother_in_incident() -> bool:
        body = (
            await timeline.get(
                url, params={"include": "household", "kind": "domestic_abuse_incident"}
            )
        ).json()
        return any(p["name"].startswith("Sarah") for e in body["entries"] for p in e["people"])

    assert await until(mother_in_incident, timeout=30)

    # Filters.
    police_only = await timeline.get(url, params={"agency": "police"})
    assert {e["agency"] for e in police_only.json()["entries"]} == {"police"}
    kinds_only = await timeline.get(url, params={"kind": "referral"})
    assert {e["kind"] for e in kinds_only.json()["entries"]} == {"referral"}
    future = (NOW + timedelta(days=30)).date().isoformat()
    assert (await timeline.get(url, params={"from": future})).json()["count"] == 0
    backwards = await timeline.get(url, params={"from": future, "to": "2020-01-01"})
    assert backwards.status_code == 422

    # Each read says where its time went (the decision was asked while the entries were read).
    timed = await timeline.get(url, params={"include": "household"})
    steps = dict(part.split(";dur=") for part in timed.headers["Server-Timing"].split(", "))
    assert set(steps) == {"scope", "rows", "prepare", "decision", "waited", "total"}
    assert all(float(ms) >= 0 for ms in steps.values())

    # The summary: flags explained, agencies involved with how to reach them, the household.
    answered = await timeline.get(f"/v1/persons/{maya}/summary")
    assert "decision;dur=" in answered.headers["Server-Timing"]
    summary = answered.json()
    codes = {flag["code"] for flag in summary["flags"]}
    assert "domestic_abuse_child_present" in codes
    da = next(f for f in summary["flags"] if f["code"] == "domestic_abuse_child_present")
    assert incident_entry["entry_id"] in da["entry_ids"] and "high risk" in da["explanation"]
    agencies = {a["agency"]: a for a in summary["agencies"]}
    assert agencies["police"]["name"].startswith("PC Sam Officer")
    assert agencies["police"]["contact"] == "Derby Central"
    assert agencies["school"]["contact"] == "dsl@oakfield.example.org"
    assert any(m["display_name"].startswith("Leo") for m in summary["household"])
    assert any(m["display_name"].startswith("Sarah") for m in summary["household"])

    svg = await timeline.get(f"/v1/persons/{maya}/genogram.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert f"Maya {family.name}" in svg.text and f"Sarah {family.name}" in svg.text
    printable = await timeline.get(f"/v1/persons/{maya}/chronology.html")
    assert printable.status_code == 200
    assert f"Chronology: Maya {family.name}" in printable.text
    assert "OFFICIAL-SENSITIVE" in printable.text

    # The MASH acts on the referral; the chronology shows the deadline met and the decision.
    referral_url = f"/v1/referrals/{referral['id']}"
    acknowledged = await referrals.post(
        f"{referral_url}/acknowledge", json={"acknowledged_by": "Ali MASH"}, headers=MASH
    )
    assert acknowledged.status_code == 200, acknowledged.text

    async def met() -> dict[str, Any] | None:
        body = (await timeline.get(url, params={"kind": "referral"})).json()
        entry = next(e for e in body["entries"] if e["source"]["id"] == referral["id"])
        return entry if entry["deadlines"][0]["met"] is True else None

    assert await until(met, timeout=30)
    lifecycle = (await timeline.get(url, params={"kind": "referral_acknowledged"})).json()
    assert lifecycle["entries"][0]["who"] == "Ali MASH"

    # Every read was a disclosure in the ledger (purpose MASH triage), and logged here.
    async with database.transaction() as session:
        decisions = (
            await session.execute(
                text(
                    "SELECT count(*) FROM consent.ledger WHERE kind = 'disclosure.decided'"
                    " AND subject_ids @> ARRAY[CAST(:s AS uuid)]"
                    " AND purpose = 'mash_triage'"
                ),
                {"s": maya_subject},
            )
        ).scalar_one()
        logged = (
            await session.execute(
                text(
                    "SELECT count(*) FROM timeline.access_log WHERE person_id = :p"
                    " AND outcome = 'allowed' AND decision_id IS NOT NULL"
                ),
                {"p": maya},
            )
        ).scalar_one()
    assert decisions >= 5 and logged >= 5


async def test_reads_are_refused_without_the_role_or_a_decision_to_share(
    apis: dict[str, httpx.AsyncClient], database: Database
) -> None:
    referrals, timeline = apis["referrals"], apis["timeline"]
    family = Family()
    posted = await referrals.post(
        "/v1/referrals", json=family.referral(family.maya()), headers=SCHOOL
    )
    assert posted.status_code == 201, posted.text
    subject = posted.json()["children"][0]["subject_id"]
    person = await until(lambda: _person_of(database, subject), timeout=60)
    url = f"/v1/persons/{person}/timeline"
    assert (await timeline.get(url)).status_code == 200

    assert (await timeline.get(url, headers={"Authorization": ""})).status_code == 401
    school = bearer(scopes="referrals:read", audience="threadline:timeline")
    assert (await timeline.get(url, headers=school)).status_code == 403
    assert (await timeline.get(f"/v1/persons/{uuid.uuid4()}/timeline")).status_code == 404

    # The police hold no agreement to read the MASH's chronology: the decision point says no,
    # the reason is given, and the refusal is recorded.
    police = bearer(
        organisation="DEMO-PF",
        agency="police",
        scopes="mash:triage",
        audience="threadline:timeline",
    )
    refused = await timeline.get(url, headers=police)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"].startswith("not shared:")
    async with database.transaction() as session:
        outcome = (
            await session.execute(
                text(
                    "SELECT outcome FROM timeline.access_log WHERE person_id = :p"
                    " AND organisation_code = 'DEMO-PF'"
                ),
                {"p": person},
            )
        ).scalar_one()
    assert outcome == "refused"
