"""The contacts API as an agency integrator meets it: each type of contact is accepted and
announced with its own event; what is refused and why; who may read what; a refusal writes
nothing."""

from __future__ import annotations

import copy
import importlib.util
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from deploy.local.stack import Stack
from services.referrals import migrations
from services.referrals.app import create_app
from services.referrals.contacts.models import Contact, ContactSubject, ContactText
from services.referrals.models import AccessRecord, data_keys, plumbing
from shared.db import Database
from tests.support.apps import referrals_settings, serving
from tests.support.tokens import MASH, bearer

POLICE = bearer(organisation="DEMO-PF", agency="police", scopes="contacts:write")
OTHER_FORCE = bearer(organisation="OTHER-PF", agency="police", scopes="contacts:write")
HEALTH = bearer(organisation="RDEMO", agency="health", scopes="contacts:write")
SCHOOL = bearer(organisation="100001", agency="school", scopes="contacts:write")
LOCAL_AUTHORITY = bearer(organisation="DEMO-LA", agency="local_authority", scopes="contacts:write")

# Validation of dates uses the real calendar, as for referrals.
NOW = datetime.now(UTC).replace(microsecond=0)
LAST_NIGHT = (NOW - timedelta(hours=14)).isoformat().replace("+00:00", "Z")
TOMORROW = (NOW + timedelta(days=1)).isoformat().replace("+00:00", "Z")
TODAY = date.today()
WEEKS_AGO = (TODAY - timedelta(weeks=6)).isoformat()
DAYS_AGO = (TODAY - timedelta(days=3)).isoformat()
NEXT_WEEK = (TODAY + timedelta(days=7)).isoformat()
IN_TWO_MONTHS = (TODAY + timedelta(days=60)).isoformat()

INCIDENT = "Officers heard shouting from the street; Maya and Leo were hiding upstairs."
COMPLAINT = "Fall from a climbing frame, per mother; bruising to the upper arm."
ABSENCE = "Maya has missed most Mondays since half term; her mother does not answer calls."

MAYA = {
    "given_names": "Maya",
    "family_name": "Exampleton",
    "date_of_birth": "2016-05-04",
    "sex": "female",
    "nhs_number": "943 476 5919",
    "upn": "L938200124001",
    "address": {"lines": ["1 Test Street"], "town": "Derby", "postcode": "de1 1aa"},
    "school": {"urn": "100001", "name": "Oakfield Primary School"},
}
LEO = {"given_names": "Leo", "family_name": "Exampleton", "estimated_age_years": 4}
UNBORN = {"family_name": "Exampleton", "unborn": {"expected_date": IN_TWO_MONTHS}}


def police_incident() -> dict[str, Any]:
    return {
        "type": "police_domestic_abuse_incident",
        "occurred_at": LAST_NIGHT,
        "incident_reference": "DEMO/2026/004512",
        "risk_level": "high",
        "officer": {"name": "PC Sam Officer", "collar_number": "ab1234"},
        "police_station": "Derby Central",
        "force_code": "30",
        "subjects": [
            {**MAYA, "witnessed": True, "injured": False},
            {**LEO, "witnessed": False, "injured": False},
        ],
        "adults": [
            {
                "given_names": "Sarah",
                "family_name": "Exampleton",
                "date_of_birth": "1990-02-01",
                "sex": "female",
                "role": "victim",
                "address": {"lines": ["1 Test Street"], "town": "Derby", "postcode": "de1 1aa"},
            },
            {"given_names": "Dean", "family_name": "Sample", "role": "suspect"},
        ],
        "narrative": INCIDENT,
    }


def care_attendance() -> dict[str, Any]:
    return {
        "type": "unscheduled_care_attendance",
        "attended_at": LAST_NIGHT,
        "setting": "emergency_department",
        "hospital_site_code": "rtg01",
        "presenting_complaint": COMPLAINT,
        "injury": True,
        "accompanied_by": "mother",
        "safeguarding_concern": True,
        "subjects": [copy.deepcopy(MAYA)],
    }


def attendance_concern() -> dict[str, Any]:
    return {
        "type": "school_attendance_concern",
        "kind": "persistent_absence",
        "period_start": WEEKS_AGO,
        "period_end": DAYS_AGO,
        "attendance_percentage": 81.5,
        "school_urn": "100001",
        "narrative": ABSENCE,
        "subjects": [copy.deepcopy(MAYA)],
    }


def protection_plan() -> dict[str, Any]:
    return {
        "type": "child_protection_plan",
        "change": "started",
        "effective_date": DAYS_AGO,
        "category": "neglect",
        "local_authority_code": "831",
        "subjects": [copy.deepcopy(MAYA), copy.deepcopy(LEO)],
    }


def looked_after() -> dict[str, Any]:
    return {
        "type": "looked_after_status",
        "change": "started",
        "effective_date": DAYS_AGO,
        "legal_status": "interim_care_order",
        "placement_type": "foster_care",
        "local_authority_code": "831",
        "subjects": [copy.deepcopy(LEO)],
    }


BODIES: dict[str, Callable[[], dict[str, Any]]] = {
    "police": police_incident,
    "health": care_attendance,
    "school": attendance_concern,
    "cpp": protection_plan,
    "lac": looked_after,
}


@pytest.fixture
async def api(database_url: str, bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    # No timer scheduler: on the real clock it would fire deadlines that earlier tests' referrals
    # left pending in the shared database, adding outbox rows while a test counts them.
    app = create_app(
        referrals_settings(database_url, bootstrap, timers_enabled=False), configure_logs=False
    )
    async with serving(app) as client:
        yield client


async def post(
    api: httpx.AsyncClient, body: Any, token: dict[str, str] = POLICE, **headers: str
) -> httpx.Response:
    return await api.post("/v1/contacts", json=body, headers={**token, **headers})


async def written(database: Database) -> tuple[int, ...]:
    """Rows in contacts, their subjects and texts, data keys and the outbox."""
    async with database.transaction() as session:
        return tuple(
            [
                int(await session.scalar(select(func.count()).select_from(table)))
                for table in (Contact, ContactSubject, ContactText, data_keys, plumbing.outbox)
            ]
        )


async def events_of(database: Database, contact_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    async with database.transaction() as session:
        rows = await session.execute(
            select(
                plumbing.outbox.c.event_type, plumbing.outbox.c.topic, plumbing.outbox.c.data
            ).where(plumbing.outbox.c.partition_key == contact_id)
        )
        return [(event_type, topic, data) for event_type, topic, data in rows]


@pytest.mark.parametrize(
    ("body", "token", "agency", "event_type", "sealed"),
    [
        (
            police_incident,
            POLICE,
            "police",
            "contact.domestic_abuse_incident_recorded",
            {"narrative": INCIDENT},
        ),
        (
            care_attendance,
            HEALTH,
            "health",
            "contact.unscheduled_care_attendance_recorded",
            {"presenting_complaint": COMPLAINT},
        ),
        (
            attendance_concern,
            SCHOOL,
            "school",
            "contact.school_attendance_concern_recorded",
            {"narrative": ABSENCE},
        ),
        (
            protection_plan,
            LOCAL_AUTHORITY,
            "local_authority",
            "contact.child_protection_plan_changed",
            {},
        ),
        (
            looked_after,
            LOCAL_AUTHORITY,
            "local_authority",
            "contact.looked_after_status_changed",
            {},
        ),
    ],
    ids=["police", "health", "school", "cpp", "lac"],
)
async def test_each_type_of_contact_is_stored_and_announced_with_its_own_event(
    api: httpx.AsyncClient,
    database: Database,
    body: Callable[[], dict[str, Any]],
    token: dict[str, str],
    agency: str,
    event_type: str,
    sealed: dict[str, str],
) -> None:
    posted = body()
    response = await post(api, posted, token)
    assert response.status_code == 201, response.text
    contact = response.json()
    assert response.headers["location"] == f"/v1/contacts/{contact['id']}"
    assert contact["type"] == posted["type"]
    assert contact["agency"] == agency  # from the token, not the body
    assert len(contact["subjects"]) == len(posted["subjects"])
    for kind, text in sealed.items():
        assert contact[kind] == text  # opened for the response

    read = await api.get(f"/v1/contacts/{contact['id']}", headers=token)
    assert read.status_code == 200
    assert read.json() == contact

    [(announced, topic, data)] = await events_of(database, contact["id"])
    assert (announced, topic) == (event_type, "threadline.contacts.v1")
    assert data["contact_id"] == contact["id"]
    assert data["contributor_agency"] == agency
    assert [s["subject_id"] for s in data["subjects"]] == [
        s["subject_id"] for s in contact["subjects"]
    ]
    for kind, text in sealed.items():
        assert kind not in data
        assert text not in str(data)


async def test_a_police_incident_keeps_who_was_present_and_normalises_identifiers(
    api: httpx.AsyncClient, database: Database
) -> None:
    contact = (await post(api, police_incident())).json()
    maya, leo = contact["subjects"]
    assert (maya["nhs_number"], maya["upn"], maya["postcode"]) == (
        "9434765919",
        "L938200124001",
        "DE1 1AA",
    )
    assert (maya["witnessed"], leo["witnessed"]) == (True, False)
    assert contact["officer"]["collar_number"] == "AB1234"
    assert contact["organisation_code"] == "DEMO-PF"
    [(_, _, data)] = await events_of(database, contact["id"])
    assert data["risk_level"] == "high"
    assert data["subjects"][0]["witnessed"] is True
    assert data["subjects"][0]["school_urn"] == "100001"
    assert [adult["role"] for adult in data["adults"]] == ["victim", "suspect"]


async def test_each_adult_at_an_incident_gets_a_subject_id_and_the_event_carries_addresses(
    api: httpx.AsyncClient, database: Database
) -> None:
    contact = (await post(api, police_incident())).json()
    sarah, dean = contact["adults"]
    assert uuid.UUID(sarah["subject_id"]) != uuid.UUID(dean["subject_id"])
    assert sarah["address"]["postcode"] == "DE1 1AA"
    [(_, _, data)] = await events_of(database, contact["id"])
    announced = data["adults"]
    assert [a["subject_id"] for a in announced] == [sarah["subject_id"], dean["subject_id"]]
    assert (announced[0]["sex"], announced[0]["address_lines"], announced[0]["postcode"]) == (
        "female",
        ["1 Test Street"],
        "DE1 1AA",
    )
    assert (announced[1]["sex"], announced[1]["address_lines"], announced[1]["postcode"]) == (
        "not_known",
        [],
        None,
    )
    assert (data["subjects"][0]["address_lines"], data["subjects"][0]["town"]) == (
        ["1 Test Street"],
        "Derby",
    )
    # Reading it again gives the same ids: they are stored, not derived on each read.
    again = (await api.get(f"/v1/contacts/{contact['id']}", headers=MASH)).json()
    assert [a["subject_id"] for a in again["adults"]] == [sarah["subject_id"], dean["subject_id"]]


async def test_the_migration_gives_adults_recorded_before_subject_ids_the_id_linking_derived(
    api: httpx.AsyncClient, database: Database
) -> None:
    backfill = _migration("0006_subject_details_for_linking").backfill_adult_subject_ids
    contact = (await post(api, police_incident())).json()
    contact_id = uuid.UUID(contact["id"])
    async with database.transaction() as session:
        # As stored before adults had subject ids.
        row = await session.get(Contact, contact_id)
        assert row is not None
        row.details = row.details | {
            "adults": [
                {k: v for k, v in adult.items() if k != "subject_id"}
                for adult in row.details["adults"]
            ]
        }
    async with database.transaction() as session:
        connection = await session.connection()
        assert await connection.run_sync(backfill) >= 1
        assert await connection.run_sync(backfill) == 0  # nothing left to do
    again = (await api.get(f"/v1/contacts/{contact_id}", headers=MASH)).json()
    assert [a["subject_id"] for a in again["adults"]] == [
        str(uuid.uuid5(contact_id, "adult:0")),
        str(uuid.uuid5(contact_id, "adult:1")),
    ]


def _migration(name: str) -> Any:
    path = Path(migrations.__file__).parent / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_edge_cases_each_type_allows_are_accepted(api: httpx.AsyncClient) -> None:
    suspension = attendance_concern() | {"kind": "suspension", "period_end": NEXT_WEEK}
    assert (await post(api, suspension, SCHOOL)).status_code == 201
    ended = looked_after() | {"change": "ended"}
    del ended["placement_type"]
    assert (await post(api, ended, LOCAL_AUTHORITY)).status_code == 201
    pre_birth = protection_plan() | {"subjects": [UNBORN]}
    response = await post(api, pre_birth, LOCAL_AUTHORITY)
    assert response.status_code == 201, response.text
    assert response.json()["subjects"][0]["unborn_expected_date"] == IN_TWO_MONTHS
    no_narrative = attendance_concern()
    del no_narrative["narrative"]
    response = await post(api, no_narrative, SCHOOL)
    assert response.status_code == 201
    assert response.json()["narrative"] is None


def _subject(b: dict[str, Any], **changes: object) -> None:
    b["subjects"][0].update(changes)


@pytest.mark.parametrize(
    ("kind", "change", "field", "rule"),
    [
        ("police", lambda b: b.update(type="social_media_post"), "type", "looked_after_status"),
        ("police", lambda b: b.pop("type"), "type", "required"),
        ("police", lambda b: b.update(occurred_at=TOMORROW), "occurred_at", "future"),
        (
            "police",
            lambda b: b.update(occurred_at="2026-01-01T22:00:00"),
            "occurred_at",
            "timezone",
        ),
        ("police", lambda b: b.update(risk_level="very_high"), "risk_level", "'medium'"),
        (
            "police",
            lambda b: b["officer"].update(collar_number="12 34"),
            "officer.collar_number",
            "pattern",
        ),
        ("police", lambda b: b.update(force_code="Derbyshire"), "force_code", "pattern"),
        ("police", lambda b: b["adults"][0].update(role="bystander"), "adults[0].role", "victim"),
        (
            "police",
            lambda b: b["adults"][0]["address"].update(postcode="DE1"),
            "adults[0].address.postcode",
            "5 to 7",
        ),
        ("police", lambda b: b["adults"][1].update(sex="yes"), "adults[1].sex", "female"),
        (
            "police",
            lambda b: b["adults"][1].update(subject_id=str(uuid.uuid4())),
            "adults[1].subject_id",
            "not a field",
        ),
        (
            "police",
            lambda b: b["subjects"][0].pop("witnessed"),
            "subjects[0].witnessed",
            "required",
        ),
        ("police", lambda b: _subject(b, own_words="Hi"), "subjects[0].own_words", "not a field"),
        (
            "police",
            lambda b: _subject(b, nhs_number="943 476 5910"),
            "subjects[0].nhs_number",
            "modulus 11",
        ),
        ("police", lambda b: b.pop("narrative"), "narrative", "required"),
        ("police", lambda b: b.update(subjects=[]), "subjects", "at least 1"),
        ("police", lambda b: b.update(setting="emergency_department"), "setting", "not a field"),
        ("health", lambda b: b.update(setting="gp_surgery"), "setting", "emergency_department"),
        ("health", lambda b: b.update(hospital_site_code="R"), "hospital_site_code", "pattern"),
        ("health", lambda b: b.update(attended_at=TOMORROW), "attended_at", "future"),
        (
            "health",
            lambda b: b.update(presenting_complaint="x" * 501),
            "presenting_complaint",
            "500",
        ),
        ("health", lambda b: b.pop("injury"), "injury", "required"),
        ("health", lambda b: b.update(subjects=[UNBORN]), "subjects", "unborn child"),
        (
            "health",
            lambda b: b["subjects"][0]["address"].update(postcode="NOT A CODE"),
            "subjects[0].address.postcode",
            "such as SW1A 1AA",
        ),
        ("school", lambda b: b.update(kind="truancy"), "kind", "persistent_absence"),
        (
            "school",
            lambda b: b.update(attendance_percentage=101),
            "attendance_percentage",
            "less than or equal to 100",
        ),
        ("school", lambda b: b.update(school_urn="12345"), "school_urn", "pattern"),
        (
            "school",
            lambda b: b.update(period_end=(TODAY - timedelta(weeks=7)).isoformat()),
            "period_end",
            "before period_start",
        ),
        ("school", lambda b: b.update(period_end=NEXT_WEEK), "period_end", "future"),
        ("school", lambda b: b.update(period_start=NEXT_WEEK), "period_start", "future"),
        ("school", lambda b: _subject(b, upn="M938200124001"), "subjects[0].upn", "check letter"),
        ("cpp", lambda b: b.update(change="paused"), "change", "started"),
        ("cpp", lambda b: b.update(category="bullying"), "category", "neglect"),
        ("cpp", lambda b: b.update(effective_date="last tuesday"), "effective_date", "date"),
        ("cpp", lambda b: b.update(local_authority_code="83"), "local_authority_code", "pattern"),
        (
            "cpp",
            lambda b: _subject(b, estimated_age_years=9),
            "subjects[0]",
            "exactly one of date_of_birth, estimated_age_years or unborn",
        ),
        ("lac", lambda b: b.update(legal_status="section_21"), "legal_status", "section_20"),
        ("lac", lambda b: b.pop("placement_type"), "placement_type", "required when"),
        ("lac", lambda b: b.update(effective_date=NEXT_WEEK), "effective_date", "future"),
        ("lac", lambda b: b.update(subjects=[UNBORN]), "subjects", "looked after"),
    ],
)
async def test_invalid_fields_are_refused_by_name_and_rule_and_nothing_is_written(
    api: httpx.AsyncClient,
    database: Database,
    kind: str,
    change: Callable[[dict[str, Any]], object],
    field: str,
    rule: str,
) -> None:
    body = BODIES[kind]()
    change(body)
    before = await written(database)
    response = await post(api, body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    errors = {error["field"]: error["message"] for error in problem["errors"]}
    assert field in errors, problem
    assert rule in errors[field], errors[field]
    assert field in problem["detail"]
    assert await written(database) == before


async def test_a_body_that_is_not_an_object_is_refused_naming_the_body(
    api: httpx.AsyncClient, database: Database
) -> None:
    before = await written(database)
    for body in ([police_incident()], "police_domestic_abuse_incident"):
        response = await post(api, body)
        assert response.status_code == 422, response.text
        assert [error["field"] for error in response.json()["errors"]] == ["body"]
    assert await written(database) == before


async def test_a_retry_with_the_same_idempotency_key_creates_nothing_new(
    api: httpx.AsyncClient, database: Database
) -> None:
    key = f"demo-pf-{uuid.uuid4()}"
    first = await post(api, police_incident(), **{"Idempotency-Key": key})
    assert first.status_code == 201
    before = await written(database)
    again = await post(api, police_incident(), **{"Idempotency-Key": key})
    assert again.status_code == 200
    assert again.headers["location"] == first.headers["location"]
    assert again.json() == first.json()
    assert await written(database) == before

    other = police_incident() | {"risk_level": "medium"}
    reused = await post(api, other, **{"Idempotency-Key": key})
    assert reused.status_code == 409
    assert reused.json()["contact_id"] == first.json()["id"]
    assert await written(database) == before
    # Keys belong to an organisation: another force may use the same one.
    theirs = await post(api, police_incident(), OTHER_FORCE, **{"Idempotency-Key": key})
    assert theirs.status_code == 201


async def test_no_token_or_a_token_without_contacts_write_is_refused_before_anything_is_written(
    api: httpx.AsyncClient, database: Database
) -> None:
    before = await written(database)
    missing = await api.post("/v1/contacts", json=police_incident())
    assert missing.status_code == 401
    referrals_only = bearer(
        organisation="DEMO-PF", agency="police", scopes="referrals:write referrals:read"
    )
    no_scope = await post(api, police_incident(), referrals_only)
    assert no_scope.status_code == 403
    assert "contacts:write" in no_scope.headers["www-authenticate"]
    assert await written(database) == before


async def test_only_the_contributing_organisation_and_the_mash_read_a_contact_and_reads_are_logged(
    api: httpx.AsyncClient, database: Database
) -> None:
    contact = (await post(api, police_incident())).json()
    url = f"/v1/contacts/{contact['id']}"

    theirs = await api.get(url, headers=OTHER_FORCE)
    assert theirs.status_code == 404  # not 403: another force learns nothing, not even that
    missing = await api.get(f"/v1/contacts/{uuid.uuid4()}", headers=OTHER_FORCE)
    assert theirs.json()["title"] == missing.json()["title"] == "Not found"
    assert (await api.get(url, headers=POLICE)).status_code == 200
    by_mash = await api.get(url, headers=MASH)
    assert by_mash.status_code == 200
    assert by_mash.json()["narrative"] == INCIDENT
    no_scope = bearer(organisation="DEMO-PF", agency="police", scopes="referrals:read")
    assert (await api.get(url, headers=no_scope)).status_code == 403

    async with database.transaction() as session:
        records = (
            await session.execute(
                select(
                    AccessRecord.organisation_code, AccessRecord.outcome, AccessRecord.object_type
                )
                .where(AccessRecord.object_id == contact["id"])
                .order_by(AccessRecord.id)
            )
        ).all()
    assert records == [
        ("OTHER-PF", "refused", "contact"),
        ("DEMO-PF", "allowed", "contact"),
        ("MASH-DEMO", "allowed", "contact"),
    ]


async def test_the_database_holds_no_plaintext_narrative(
    api: httpx.AsyncClient, database: Database, stack: Stack
) -> None:
    markers = {
        "police": (POLICE, "narrative", f"Incident {uuid.uuid4()}: a kitchen knife was seen"),
        "health": (HEALTH, "presenting_complaint", f"Complaint {uuid.uuid4()}: a burn"),
        "school": (SCHOOL, "narrative", f"Absence {uuid.uuid4()}: seen at the shops"),
    }
    for kind, (token, field, marker) in markers.items():
        response = await post(api, BODIES[kind]() | {field: marker}, token)
        assert response.status_code == 201, response.text
        async with database.transaction() as session:
            copies = await session.scalar(
                select(func.count())
                .select_from(ContactText)
                .where(ContactText.contact_id == uuid.UUID(response.json()["id"]))
            )
        assert copies == len(response.json()["subjects"])  # one sealed copy per child
    dump = stack.postgres.dump(stack.database)
    assert "DEMO/2026/004512" in dump  # the dump is real and holds the contacts
    for _, _, marker in markers.values():
        assert marker not in dump
