"""The linking service on a real PostgreSQL: subjects of referrals and contacts become person
records resolved to persons; the review queue; merge and unmerge; households; the API the MASH
uses, who may use it, and that every read is recorded."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.linking import consumers
from services.linking.app import create_app
from services.linking.models import (
    AccessRecord,
    HouseholdMember,
    PersonRecord,
    Relationship,
    ReviewItem,
    plumbing,
)
from services.referrals.contacts.events import (
    DomesticAbuseIncidentRecorded,
    ReportedAdult,
    ReportedChildPresent,
    UnscheduledCareAttendanceRecorded,
)
from services.referrals.events import (
    ReferralReceived,
    ReportedChild,
    ReportedFamilyMember,
    ReportedRelationship,
)
from shared.context import TraceContext
from shared.db import Database
from shared.events.envelope import Envelope, envelope_for
from shared.events.registry import Event
from shared.identifiers import nhs_check_digit
from tests.support.apps import linking_settings, serving
from tests.support.tokens import MASH_LINKING, SCHOOL, bearer

RECEIVED = datetime(2026, 11, 9, 10, 0, tzinfo=UTC)


def unique_family() -> str:
    """A family name no other test uses (tests share one database)."""
    letters = "".join(chr(ord("a") + int(c, 16) % 26) for c in uuid.uuid4().hex[:8])
    return f"Test{letters}"


def unique_postcode(area: str) -> str:
    """A postcode no other test uses (the blocking keys include the postcode)."""
    digits = uuid.uuid4().int
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    return (
        f"{area}{digits % 20 + 1} {digits // 20 % 10}"
        f"{letters[digits // 200 % 20]}{letters[digits // 4000 % 20]}"
    )


def nhs_number(seed: int) -> str:
    stem = f"{seed:09d}"[-9:]
    while nhs_check_digit(stem) is None:
        stem = f"{int(stem) + 1:09d}"
    return f"{stem}{nhs_check_digit(stem)}"


def child(family: str, given: str = "Maya", **fields: Any) -> ReportedChild:
    values: dict[str, Any] = {
        "subject_id": uuid.uuid4(),
        "given_names": given,
        "family_name": family,
        "date_of_birth": date(2016, 5, 4),
        "sex": "female",
        "postcode": "DE1 2AB",
    }
    values.update(fields)
    return ReportedChild(**values)


def referral(
    children: list[ReportedChild], family_members: list[ReportedFamilyMember] | None = None
) -> ReferralReceived:
    return ReferralReceived(
        referral_id=uuid.uuid4(),
        reference=f"REF-{uuid.uuid4().hex[:6]}",
        received_at=RECEIVED,
        referrer_agency="school",
        referrer_organisation_code="100001",
        raised_via="portal",
        concern_categories=["neglect"],
        children=children,
        family_members=family_members or [],
        acknowledgement_due_at=RECEIVED + timedelta(days=1),
    )


def police_incident(
    children: list[ReportedChild], adults: list[ReportedAdult]
) -> DomesticAbuseIncidentRecorded:
    """A domestic-abuse incident at which these children (as new subjects) were present."""
    return DomesticAbuseIncidentRecorded(
        contact_id=uuid.uuid4(),
        received_at=RECEIVED,
        contributor_agency="police",
        contributor_organisation_code="DEMO-PF",
        occurred_at=RECEIVED,
        incident_reference="INC-1",
        risk_level="high",
        force_code="DEMO",
        officer_name="PC Test",
        officer_collar_number="123",
        subjects=[
            ReportedChildPresent(**present.model_dump(), witnessed=True, injured=False)
            for present in children
        ],
        adults=adults,
    )


async def attend_a_and_e(database: Database, patient: ReportedChild) -> None:
    """An A&E attendance of this child, consumed by linking."""
    attendance = UnscheduledCareAttendanceRecorded(
        contact_id=uuid.uuid4(),
        received_at=RECEIVED,
        contributor_agency="health",
        contributor_organisation_code="RDEMO",
        attended_at=RECEIVED,
        setting="emergency_department",
        hospital_site_code="RDEMO01",
        injury=True,
        safeguarding_concern=True,
        subjects=[patient],
    )
    async with database.transaction() as session:
        await consumers.unscheduled_care(session, attendance, envelope(attendance))


def envelope(event: Event) -> Envelope:
    return envelope_for(
        event, service="referrals", trace=TraceContext(correlation_id="test"), now=RECEIVED
    )


async def receive(database: Database, event: ReferralReceived) -> None:
    async with database.transaction() as session:
        await consumers.referral_received(session, event, envelope(event))


async def records_of(database: Database, *subjects: uuid.UUID) -> list[PersonRecord]:
    async with database.transaction() as session:
        result = await session.execute(
            select(PersonRecord).where(PersonRecord.subject_id.in_(subjects))
        )
        found = {record.subject_id: record for record in result.scalars()}
    return [found[subject] for subject in subjects]


async def events_about(database: Database, event_type: str, **data: str) -> list[dict[str, Any]]:
    async with database.transaction() as session:
        result = await session.execute(
            select(plumbing.outbox.c.data)
            .where(plumbing.outbox.c.event_type == event_type)
            .order_by(plumbing.outbox.c.seq)
        )
        rows = [dict(row[0]) for row in result.all()]
    return [row for row in rows if all(row.get(k) == v for k, v in data.items())]


@pytest.fixture
async def api(database_url: str, bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = linking_settings(database_url, bootstrap, consumers_enabled=False)
    async with serving(create_app(settings, configure_logs=False), headers=MASH_LINKING) as client:
        yield client


# Subjects become persons ---------------------------------------------------------------------


async def test_each_subject_becomes_a_person_record_and_subject_linked_is_announced(
    database: Database,
) -> None:
    family = unique_family()
    maya = child(family, nhs_number=nhs_number(912_000_001))
    await receive(database, referral([maya]))
    (record,) = await records_of(database, maya.subject_id)
    assert record.link_method == "new_person"
    assert record.source_type == "referral"
    assert record.nhs_number == maya.nhs_number
    (linked,) = await events_about(database, "subject.linked", subject_id=str(maya.subject_id))
    assert linked["person_id"] == str(record.person_id)
    assert linked["method"] == "new_person"


async def test_the_same_child_from_another_agency_links_by_nhs_number(
    database: Database,
) -> None:
    family = unique_family()
    number = nhs_number(912_000_101)
    first = child(family, nhs_number=number)
    # The police spell her name differently and know a new family name.
    second = child(f"{family}-Okafor", given="Maia", nhs_number=number, postcode=None)
    await receive(database, referral([first]))
    await receive(database, referral([second]))
    one, two = await records_of(database, first.subject_id, second.subject_id)
    assert two.person_id == one.person_id
    assert two.link_method == "nhs_number"
    assert two.match_probability == 1.0


async def test_without_identifiers_a_nickname_and_a_wrong_digit_still_link(
    database: Database,
) -> None:
    family = unique_family()
    first = child(family, given="Elizabeth", date_of_birth=date(2014, 3, 12))
    second = child(family, given="Lizzie", date_of_birth=date(2014, 3, 12))
    await receive(database, referral([first]))
    await receive(database, referral([second]))
    one, two = await records_of(database, first.subject_id, second.subject_id)
    assert two.person_id == one.person_id
    assert two.link_method == "probabilistic"
    assert two.match_probability >= 0.99
    assert {e["comparison"] for e in two.link_evidence} >= {"given_name", "date_of_birth"}


async def test_twins_in_one_referral_are_two_persons_and_siblings(database: Database) -> None:
    family = unique_family()
    oliver = child(family, given="Oliver", sex="male", date_of_birth=date(2019, 1, 1))
    amelia = child(family, given="Amelia", date_of_birth=date(2019, 1, 1))
    await receive(database, referral([oliver, amelia]))
    a, b = await records_of(database, oliver.subject_id, amelia.subject_id)
    assert a.person_id != b.person_id
    async with database.transaction() as session:
        kinds = set(
            (
                await session.execute(
                    select(Relationship.kind).where(
                        Relationship.person_id == a.person_id,
                        Relationship.related_person_id == b.person_id,
                    )
                )
            ).scalars()
        )
    assert kinds == {"sibling"}


async def test_an_unborn_child_named_before_birth_joins_the_born_child(database: Database) -> None:
    family = unique_family()
    unborn = child(
        family,
        given="Baby",
        date_of_birth=None,
        unborn_expected_date=date(2026, 3, 1),
        sex="not_known",
    )
    born = child(family, given="Ava", date_of_birth=date(2026, 2, 20))
    await receive(database, referral([unborn]))
    await receive(database, referral([born]))
    before, after = await records_of(database, unborn.subject_id, born.subject_id)
    assert after.person_id == before.person_id
    assert before.expected_date == date(2026, 3, 1)


async def test_a_redelivered_referral_adds_nothing(database: Database) -> None:
    family = unique_family()
    maya = child(family)
    event = referral([maya])
    await receive(database, event)
    await receive(database, event)
    assert len(await events_about(database, "subject.linked", subject_id=str(maya.subject_id))) == 1


async def test_the_family_section_becomes_relationships_and_a_household(
    database: Database,
) -> None:
    family = unique_family()
    maya = child(family, given="Maya")
    leo = child(family, given="Leo", date_of_birth=date(2021, 7, 7), sex="male")
    mother = ReportedFamilyMember(
        subject_id=uuid.uuid4(),
        given_names="Sarah",
        family_name=family,
        date_of_birth=date(1990, 2, 1),
        sex="female",
        relationships=[
            ReportedRelationship(
                child_subject_id=c.subject_id,
                relationship="mother",
                parental_responsibility=True,
                lives_with_child=True,
            )
            for c in (maya, leo)
        ],
    )

    def father(given: str, of: ReportedChild) -> ReportedFamilyMember:
        return ReportedFamilyMember(
            subject_id=uuid.uuid4(),
            given_names=given,
            family_name=unique_family(),
            sex="male",
            relationships=[
                ReportedRelationship(
                    child_subject_id=of.subject_id,
                    relationship="non_resident_parent",
                    parental_responsibility=True,
                    lives_with_child=False,
                )
            ],
        )

    mayas_father, leos_father = father("Dean", maya), father("Gary", leo)
    await receive(database, referral([maya, leo], [mother, mayas_father, leos_father]))
    m, lo, mum, dad = await records_of(
        database, maya.subject_id, leo.subject_id, mother.subject_id, mayas_father.subject_id
    )
    async with database.transaction() as session:
        relationships = {
            (r.person_id, r.related_person_id): r.kind
            for r in (await session.execute(select(Relationship))).scalars()
            if r.person_id in {m.person_id, lo.person_id, mum.person_id, dad.person_id}
        }
        members = {
            row.person_id: row.role
            for row in (
                await session.execute(
                    select(HouseholdMember).where(
                        HouseholdMember.person_id.in_(
                            [m.person_id, lo.person_id, mum.person_id, dad.person_id]
                        )
                    )
                )
            ).scalars()
        }
    assert relationships[(mum.person_id, m.person_id)] == "parent"
    assert relationships[(dad.person_id, m.person_id)] == "non_resident_parent"
    # Each has a father the other does not: they share only their mother.
    assert relationships[(m.person_id, lo.person_id)] == "half_sibling"
    assert members == {m.person_id: "child", lo.person_id: "child", mum.person_id: "adult"}
    (update,) = [
        e
        for e in await events_about(database, "household.updated")
        if {x["person_id"] for x in e["members"]} == {str(p) for p in members}
    ]
    assert len(update["relationships"]) >= 3


async def test_contact_subjects_and_adults_at_an_incident_are_linked(database: Database) -> None:
    family = unique_family()
    number = nhs_number(912_000_301)
    maya = child(family, nhs_number=number)
    await receive(database, referral([maya]))
    incident = police_incident(
        [child(family, nhs_number=number)],
        [ReportedAdult(given_names="Sarah", family_name=family, role="victim")],
    )
    async with database.transaction() as session:
        await consumers.domestic_abuse_incident(session, incident, envelope(incident))
    (first,) = await records_of(database, maya.subject_id)
    (present,) = await records_of(database, incident.subjects[0].subject_id)
    assert present.person_id == first.person_id
    assert present.source_type == "contact"
    # An event recorded before adults had subject ids: the contact and position stand for one.
    adult = uuid.uuid5(incident.contact_id, "adult:0")
    (victim,) = await records_of(database, adult)
    assert victim.role == "adult"


async def test_adults_at_an_incident_link_to_the_family_and_join_the_childrens_household(
    database: Database,
) -> None:
    family, postcode = unique_family(), unique_postcode("DE")
    home = ["14 Test Road"]
    maya = child(family, postcode=postcode, address_lines=home)
    mother = ReportedFamilyMember(
        subject_id=uuid.uuid4(),
        given_names="Sarah",
        family_name=family,
        date_of_birth=date(1990, 2, 1),
        sex="female",
        nhs_number=nhs_number(912_000_777),
        address_lines=home,
        postcode=postcode,
        relationships=[
            ReportedRelationship(
                child_subject_id=maya.subject_id,
                relationship="mother",
                parental_responsibility=True,
                lives_with_child=True,
            )
        ],
    )
    await receive(database, referral([maya], [mother]))
    (first_mum,) = await records_of(database, mother.subject_id)
    assert first_mum.nhs_number == mother.nhs_number
    assert first_mum.address == "14 Test Road"

    # Months later the police attend an incident at the home: Maya, a half-brother linking has
    # not met, their mother, her new partner who lives there, and a visitor who does not.
    theo = child(
        unique_family(),
        given="Theo",
        date_of_birth=date(2019, 1, 3),
        postcode=postcode,
        address_lines=home,
    )

    def adult(given: str, family: str, role: str, lines: list[str], **more: Any) -> ReportedAdult:
        return ReportedAdult(
            subject_id=uuid.uuid4(),
            given_names=given,
            family_name=family,
            role=role,
            address_lines=lines,
            postcode=postcode,
            **more,
        )

    victim = adult("Sarah", family, "victim", home, date_of_birth=date(1990, 2, 1), sex="female")
    partner = adult("Dean", unique_family(), "suspect", home, sex="male")
    visitor = adult("Kim", unique_family(), "other", ["2 Other Street"])
    again = maya.model_copy(update={"subject_id": uuid.uuid4()})
    incident = police_incident([again, theo], [victim, partner, visitor])
    async with database.transaction() as session:
        await consumers.domestic_abuse_incident(session, incident, envelope(incident))
    sarah, dean, kim = await records_of(
        database, victim.subject_id, partner.subject_id, visitor.subject_id
    )
    # The victim is the referral's mother (same name, date of birth and home).
    assert sarah.person_id == first_mum.person_id
    (maya_again,) = await records_of(database, incident.subjects[0].subject_id)
    (theo_record,) = await records_of(database, theo.subject_id)
    async with database.transaction() as session:
        households = {
            row.person_id: row.household_id
            for row in (
                await session.execute(
                    select(HouseholdMember).where(
                        HouseholdMember.person_id.in_(
                            [
                                sarah.person_id,
                                dean.person_id,
                                kim.person_id,
                                maya_again.person_id,
                                theo_record.person_id,
                            ]
                        )
                    )
                )
            ).scalars()
        }
    household = households[maya_again.person_id]
    assert households[sarah.person_id] == household
    assert households[dean.person_id] == household
    assert households[theo_record.person_id] == household
    assert kim.person_id not in households


# The API -------------------------------------------------------------------------------------


async def resolve_at(api: httpx.AsyncClient, child: ReportedChild, home: str) -> dict[str, Any]:
    """Resolve ``child`` (name, date of birth, sex) as recorded at ``home``."""
    query = {
        "given_names": child.given_names,
        "family_name": child.family_name,
        "date_of_birth": child.date_of_birth.isoformat(),  # type: ignore[union-attr]
        "sex": child.sex,
        "postcode": home,
    }
    return (await api.post("/v1/persons/resolve", json=query)).json()  # type: ignore[no-any-return]


def assert_linked_by_a_move(answer: dict[str, Any], person_id: uuid.UUID) -> None:
    assert (answer["band"], answer["person_id"]) == ("link", str(person_id))
    evidence = {e["comparison"]: e for e in answer["candidates"][0]["evidence"]}
    assert evidence["residence"]["level"] == "different homes, joined by a move of the household"


async def test_a_move_the_household_is_known_to_have_made_joins_a_childs_old_and_new_homes(
    api: httpx.AsyncClient, database: Database
) -> None:
    """Olivia Smith, a common name, at a new home: alone that is a near miss (review). Once
    her brother's records show the family moved there, it is where Olivia lived too."""
    old_home, new_home = unique_postcode("DE"), unique_postcode("DE")
    born = date(2010 + uuid.uuid4().int % 6, 1 + uuid.uuid4().int % 12, 1 + uuid.uuid4().int % 28)
    brother_nhs = nhs_number(uuid.uuid4().int % 10**9)
    olivia = child("Smith", given="Olivia", date_of_birth=born, postcode=old_home)
    leo = child(
        "Smith",
        given="Leo",
        sex="male",
        date_of_birth=date(2019, 2, 2),
        postcode=old_home,
        nhs_number=brother_nhs,
    )
    await receive(database, referral([olivia, leo]))
    (first,) = await records_of(database, olivia.subject_id)
    assert (await resolve_at(api, olivia, new_home))["band"] != "link"
    # A&E sees Leo at the new home: his NHS number makes him one person at both homes.
    await attend_a_and_e(
        database, leo.model_copy(update={"subject_id": uuid.uuid4(), "postcode": new_home})
    )
    assert_linked_by_a_move(await resolve_at(api, olivia, new_home), first.person_id)


async def test_two_persons_records_that_match_on_their_own_show_the_households_move(
    api: httpx.AsyncClient, database: Database
) -> None:
    """Olivia Smith at a new home again, but this time nobody is one person at both homes: her
    brother's record at the new home was only a near miss for his record at the old one, so
    he is two persons. Two persons' records at the two homes that match well on their own show
    the move too (as in a batch's second pass), and Olivia's old record links."""
    old_home, new_home = unique_postcode("DE"), unique_postcode("DE")
    olivia = child(
        "Smith",
        given="Olivia",
        date_of_birth=date(2010 + uuid.uuid4().int % 6, 1 + uuid.uuid4().int % 12, 14),
        postcode=old_home,
    )
    oliver = child(
        "Smith",
        given="Oliver",
        sex="male",
        date_of_birth=date(2017 + uuid.uuid4().int % 4, 1 + uuid.uuid4().int % 12, 9),
        postcode=old_home,
    )
    await receive(database, referral([olivia, oliver]))
    (first,) = await records_of(database, olivia.subject_id)
    assert (await resolve_at(api, olivia, new_home))["band"] != "link"
    oliver_there = oliver.model_copy(update={"subject_id": uuid.uuid4(), "postcode": new_home})
    await attend_a_and_e(database, oliver_there)
    old, new = await records_of(database, oliver.subject_id, oliver_there.subject_id)
    assert new.person_id != old.person_id  # no one person is at both homes
    assert (new.match_probability or 0) >= 0.5  # but the two records match on their own
    assert_linked_by_a_move(await resolve_at(api, olivia, new_home), first.person_id)


async def test_resolve_returns_the_person_and_ranked_candidates_with_evidence(
    api: httpx.AsyncClient, database: Database
) -> None:
    family = unique_family()
    maya = child(family, given="Elizabeth", date_of_birth=date(2013, 9, 9))
    await receive(database, referral([maya]))
    (record,) = await records_of(database, maya.subject_id)
    response = await api.post(
        "/v1/persons/resolve",
        json={"given_names": "Liz", "family_name": family, "date_of_birth": "2013-09-09"},
    )
    assert response.status_code == 200, response.text
    # Where the time went, for operators: each step in milliseconds, within the total.
    steps = {
        name: float(value)
        for name, value in (
            part.split(";dur=") for part in response.headers["Server-Timing"].split(", ")
        )
    }
    assert set(steps) == {"resolve", "access", "total"}
    assert 0 < steps["resolve"] + steps["access"] <= steps["total"]
    body = response.json()
    assert body["band"] == "link"
    assert body["person_id"] == str(record.person_id)
    top = body["candidates"][0]
    assert top["match_probability"] >= 0.99
    assert {e["comparison"]: e["level"] for e in top["evidence"]}["given_name"] == "nickname"


async def test_resolve_refuses_a_bad_identifier_naming_the_field(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/persons/resolve", json={"family_name": "Smith", "nhs_number": "943 476 5918"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert any(e["field"] == "nhs_number" for e in response.json()["errors"])


async def test_resolve_needs_something_to_match_on(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/persons/resolve", json={"sex": "female"})
    assert response.status_code == 422


async def test_only_the_mash_may_resolve_or_search(api: httpx.AsyncClient) -> None:
    school = bearer(audience="threadline:linking", scopes="referrals:read")
    response = await api.post("/v1/persons/resolve", json={"family_name": "Smith"}, headers=school)
    assert response.status_code == 403
    wrong_audience = await api.get("/v1/persons/search?family_name=Smith", headers=SCHOOL)
    assert wrong_audience.status_code == 401


async def test_search_finds_persons_and_every_disclosure_is_recorded(
    api: httpx.AsyncClient, database: Database
) -> None:
    family = unique_family()
    maya = child(family, given="Maya", date_of_birth=date(2016, 5, 4))
    await receive(database, referral([maya]))
    (record,) = await records_of(database, maya.subject_id)
    response = await api.get(
        "/v1/persons/search", params={"family_name": family, "date_of_birth": "2016-05-04"}
    )
    assert response.status_code == 200, response.text
    persons = response.json()["persons"]
    assert persons[0]["person_id"] == str(record.person_id)
    assert persons[0]["names"] == [f"Maya {family}"]
    person = await api.get(f"/v1/persons/{record.person_id}")
    assert person.status_code == 200
    assert person.json()["records"][0]["link_method"] == "new_person"
    async with database.transaction() as session:
        logged = await session.scalar(
            select(func.count())
            .select_from(AccessRecord)
            .where(AccessRecord.object_id == str(record.person_id))
        )
    assert logged == 2  # the search result and the read


async def test_an_unknown_person_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get(f"/v1/persons/{uuid.uuid4()}")
    assert response.status_code == 404


# Review queue, merge and unmerge -------------------------------------------------------------


async def _review_pair(database: Database) -> tuple[PersonRecord, PersonRecord, ReviewItem]:
    """Two records of the review band: a nickname of a common name (the nickname level is
    weighed by the names' frequencies: Hattie for the rarer Harriet would link), a date of
    birth one digit off, another town."""
    family = unique_family()
    # Dates of their own too: other tests' Millies must not outrank this pair's.
    year, day = 2008 + uuid.uuid4().int % 8, 1 + uuid.uuid4().int % 18
    first = child(
        family, given="Amelia", date_of_birth=date(year, 3, day), postcode=unique_postcode("DE")
    )
    second = child(
        family,
        given="Millie",
        date_of_birth=date(year, 3, day + 10),
        postcode=unique_postcode("NG"),
    )
    await receive(database, referral([first]))
    await receive(database, referral([second]))
    one, two = await records_of(database, first.subject_id, second.subject_id)
    async with database.transaction() as session:
        item = (
            await session.execute(
                select(ReviewItem).where(
                    ReviewItem.record_id == two.id,
                    ReviewItem.candidate_person_id == one.person_id,
                )
            )
        ).scalar_one()
    return one, two, item


async def test_a_review_band_record_is_its_own_person_with_a_review_item(
    api: httpx.AsyncClient, database: Database
) -> None:
    one, two, item = await _review_pair(database)
    assert two.person_id != one.person_id
    assert item.candidate_person_id == one.person_id
    queue = await api.get("/v1/reviews", params={"limit": 200})
    assert queue.status_code == 200
    (shown,) = [i for i in queue.json()["items"] if i["id"] == str(item.id)]
    assert shown["record"]["given_names"] == "Millie"
    assert shown["candidate_record"]["given_names"] == "Amelia"
    evidence = {e["comparison"]: e for e in shown["evidence"]}
    assert evidence["date_of_birth"]["level"] == "one digit different or two transposed"
    assert evidence["residence"]["weight"] < 0
    required = await events_about(database, "link.review_required", review_id=str(item.id))
    assert len(required) == 1


async def test_accepting_a_review_merges_and_unmerging_restores(
    api: httpx.AsyncClient, database: Database
) -> None:
    one, two, item = await _review_pair(database)
    accepted = await api.post(f"/v1/reviews/{item.id}/accept", json={"note": "same school"})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"
    moved, _ = await records_of(database, two.subject_id, one.subject_id)
    assert moved.person_id == one.person_id
    again = await api.post(f"/v1/reviews/{item.id}/reject", json={})
    assert again.status_code == 409
    (merged,) = await events_about(database, "persons.merged", merged_person_id=str(two.person_id))
    assert merged["survivor_person_id"] == str(one.person_id)
    linked = await events_about(database, "subject.linked", record_id=str(two.id))
    assert [e["method"] for e in linked] == ["new_person", "review_accepted"]

    person = (await api.get(f"/v1/persons/{one.person_id}")).json()
    assert len(person["records"]) == 2
    (merge,) = person["merges"]
    undone = await api.post(f"/v1/merges/{merge['id']}/unmerge", json={"reason": "not her"})
    assert undone.status_code == 200, undone.text
    back, stays = await records_of(database, two.subject_id, one.subject_id)
    assert back.person_id == two.person_id
    assert stays.person_id == one.person_id
    assert await events_about(database, "persons.unmerged", merge_id=merge["id"])
    twice = await api.post(f"/v1/merges/{merge['id']}/unmerge", json={"reason": "again"})
    assert twice.status_code == 409
    history = (await api.get(f"/v1/persons/{two.person_id}")).json()["history"]
    assert [h["action"] for h in history] == ["linked", "merged", "unmerged"]


async def test_rejecting_a_review_keeps_them_apart(
    api: httpx.AsyncClient, database: Database
) -> None:
    one, two, item = await _review_pair(database)
    rejected = await api.post(f"/v1/reviews/{item.id}/reject", json={"note": "twins"})
    assert rejected.status_code == 200
    assert rejected.json()["decided_by"] == "client-MASH-DEMO"
    still, _ = await records_of(database, two.subject_id, one.subject_id)
    assert still.person_id == two.person_id
    assert await events_about(database, "link.review_decided", decision="rejected")


async def test_a_merge_by_hand_moves_the_household_and_refuses_a_merged_person(
    api: httpx.AsyncClient, database: Database
) -> None:
    one, two, _ = await _review_pair(database)
    body = {
        "survivor_person_id": str(one.person_id),
        "merged_person_id": str(two.person_id),
        "reason": "confirmed with the school",
    }
    merged = await api.post("/v1/merges", json=body)
    assert merged.status_code == 201, merged.text
    again = await api.post("/v1/merges", json=body)
    assert again.status_code == 409
    itself = await api.post("/v1/merges", json={**body, "merged_person_id": str(one.person_id)})
    assert itself.status_code == 409
    old = (await api.get(f"/v1/persons/{two.person_id}")).json()
    assert old["status"] == "merged"
    assert old["merged_into"] == str(one.person_id)
    # Each referral put the child in a household; the survivor is now in both, in place of the
    # merged person.
    households = (await api.get(f"/v1/persons/{one.person_id}")).json()["households"]
    assert len(households) == 2
    for household in households:
        members = (await api.get(f"/v1/households/{household}")).json()["members"]
        assert {m["person_id"] for m in members} == {str(one.person_id)}


async def test_a_child_first_seen_at_a_familys_postcode_joins_their_household(
    database: Database,
) -> None:
    family = unique_family()
    postcode = unique_postcode("DE")
    maya = child(family, postcode=postcode)
    await receive(database, referral([maya]))
    # A&E sees her younger brother, never referred: same family name, same postcode.
    brother = child(
        family, given="Noah", sex="male", date_of_birth=date(2023, 1, 9), postcode=postcode
    )
    await attend_a_and_e(database, brother)
    first, second = await records_of(database, maya.subject_id, brother.subject_id)
    assert second.person_id != first.person_id
    async with database.transaction() as session:
        households = {
            row.person_id: row.household_id
            for row in (
                await session.execute(
                    select(HouseholdMember).where(
                        HouseholdMember.person_id.in_([first.person_id, second.person_id])
                    )
                )
            ).scalars()
        }
    assert households[second.person_id] == households[first.person_id]
