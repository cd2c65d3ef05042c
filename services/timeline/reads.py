"""Reading the chronology: a person, their household, their entries, flags and agencies.

A person's chronology is the entries of every subject linked to them (and to any person merged
into them); the household view adds the entries of every member of their households, each
labelled with whose it is, and shows an event that named several of them once.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.timeline import flags as flag_rules
from services.timeline.models import SCHEMA
from services.timeline.settings import TimelineSettings

#: How many merges a read follows (a merged person merged again) before it gives up.
MAX_REDIRECTS = 10
#: Agencies seen within this long count as working with the family now.
CURRENT_AGENCY_DAYS = 365

INVERSE = {
    "parent": "child",
    "non_resident_parent": "child",
    "step_parent": "step-child",
    "partner_of_parent": "child of partner",
    "grandparent": "grandchild",
    "sibling": "sibling",
    "half_sibling": "half-sibling",
    "household_member": "household member",
    "other_relative": "relative",
}
ROLES = {
    "referral": "Referrer",
    "domestic_abuse_incident": "Police officer in the case",
    "unscheduled_care": "Hospital (unscheduled care)",
    "school_attendance": "School",
    "child_protection_plan": "Children's social care (child protection plan)",
    "looked_after": "Children's social care (looked after)",
    "referral_acknowledged": "MASH",
    "referral_rated": "MASH",
    "referral_decided": "MASH",
    "referral_reopened": "MASH",
}

_REDIRECTS = text(
    f"SELECT merged_person_id, survivor_person_id FROM {SCHEMA}.redirects"
    " WHERE merged_person_id = ANY(CAST(:ids AS uuid[])) AND active"
)
_MERGED_INTO = text(
    f"SELECT merged_person_id, survivor_person_id FROM {SCHEMA}.redirects"
    " WHERE survivor_person_id = ANY(CAST(:ids AS uuid[])) AND active"
)
#: Whether anything is recorded about person ``:id`` (its records, or a household's picture).
_IS_KNOWN = (
    f"(EXISTS (SELECT 1 FROM {SCHEMA}.records WHERE person_id = :id)"
    f" OR EXISTS (SELECT 1 FROM {SCHEMA}.household_members WHERE person_id = :id))"
)
_KNOWN = text(f"SELECT {_IS_KNOWN}")
#: Everyone in the households of the persons the caller's WHERE names (as ``m.person_id``), with
#: the relationships as text, decoded once per household rather than once per member.
_MEMBERS = (
    f"SELECT m.household_id, other.person_id, other.role, h.relationships::text AS relationships"
    f" FROM {SCHEMA}.household_members m"
    f" JOIN {SCHEMA}.household_members other ON other.household_id = m.household_id"
    f" JOIN {SCHEMA}.households h ON h.household_id = m.household_id"
)
_HOUSEHOLD = text(f"{_MEMBERS} WHERE m.person_id = ANY(CAST(:ids AS uuid[]))")
_PEOPLE = text(
    "SELECT DISTINCT ON (r.person_id) r.person_id, s.given_names, s.family_name,"
    " s.date_of_birth, s.unborn_expected_date, s.sex, s.role"
    f" FROM {SCHEMA}.records r JOIN {SCHEMA}.subjects s ON s.subject_id = r.subject_id"
    " WHERE r.person_id = ANY(CAST(:ids AS uuid[]))"
    " ORDER BY r.person_id, s.seen_at DESC, s.subject_id"
)
_SCHOOLS = text(
    "SELECT DISTINCT ON (s.school_urn) s.school_urn, s.seen_at"
    f" FROM {SCHEMA}.records r JOIN {SCHEMA}.subjects s ON s.subject_id = r.subject_id"
    " WHERE r.person_id = ANY(CAST(:ids AS uuid[])) AND s.school_urn IS NOT NULL"
    " ORDER BY s.school_urn, s.seen_at DESC"
)
_SUBJECTS = text(
    f"SELECT subject_id FROM {SCHEMA}.records"
    " WHERE person_id = ANY(CAST(:ids AS uuid[])) AND subject_id IS NOT NULL"
)


@dataclass
class PersonView:
    person_id: uuid.UUID
    display_name: str
    date_of_birth: date | None
    unborn_expected_date: date | None
    sex: str
    role: str
    merged_into: uuid.UUID | None = None


@dataclass
class Member:
    person: PersonView
    role: str
    relationship: str  # to the person whose chronology it is


@dataclass
class Scope:
    """Whose chronology a read covers: the person (and everyone merged into them) and, for the
    household view, the members of their households."""

    person: PersonView
    persons: list[uuid.UUID]  # the person and the persons merged into them
    members: list[Member] = field(default_factory=list)
    relationships: list[dict[str, Any]] = field(default_factory=list)
    owner: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # any id → canonical id

    def canonical_ids(self, include_household: bool) -> list[uuid.UUID]:
        ids = list(self.persons)
        if include_household:
            ids += [m.person.person_id for m in self.members]
            ids += [pid for pid, canon in self.owner.items() if canon != self.person.person_id]
        return list(dict.fromkeys(ids))


def display_name(row: Any) -> str:
    if row.given_names:
        return f"{row.given_names} {row.family_name}"
    if row.unborn_expected_date is not None and row.date_of_birth is None:
        return f"Unborn baby {row.family_name}"
    return f"{row.family_name} (first name not known)"


async def canonical_many(
    session: AsyncSession, person_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """Each id → the person it is now (itself, or the survivor of the merges it went into)."""
    found = {pid: pid for pid in person_ids}
    for _ in range(MAX_REDIRECTS):
        current = list(set(found.values()))
        rows = (await session.execute(_REDIRECTS, {"ids": current})).all()
        if not rows:
            break
        step = {row.merged_person_id: row.survivor_person_id for row in rows}
        found = {pid: step.get(now, now) for pid, now in found.items()}
    return found


async def merged_into_many(
    session: AsyncSession, person_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """Every person merged (transitively) into one of ``person_ids`` → that one; and each of
    ``person_ids`` → itself."""
    owner = {pid: pid for pid in person_ids}
    frontier = list(person_ids)
    for _ in range(MAX_REDIRECTS):
        rows = (await session.execute(_MERGED_INTO, {"ids": frontier})).all()
        frontier = []
        for row in rows:
            if row.merged_person_id not in owner:
                owner[row.merged_person_id] = owner[row.survivor_person_id]
                frontier.append(row.merged_person_id)
        if not frontier:
            break
    return owner


@dataclass
class HouseholdRow:
    household_id: uuid.UUID
    person_id: uuid.UUID
    role: str
    relationships: str  # the household's relationships, as JSON text


#: A read's first round trip: the person's households, whether the person is known, whether
#: anyone involved was ever merged, and the subjects held for the person and for the others in
#: their households (which is all a read without merges needs to ask the decision point).
_LOOK = text(
    f"WITH hh AS ({_MEMBERS} WHERE m.person_id = :id),"
    " involved AS (SELECT CAST(:id AS uuid) AS person_id UNION SELECT person_id FROM hh)"
    " SELECT (SELECT json_agg(hh)::text FROM hh) AS households,"
    f" {_IS_KNOWN} AS known,"
    f" EXISTS (SELECT 1 FROM {SCHEMA}.redirects WHERE active"
    " AND (merged_person_id IN (SELECT person_id FROM involved)"
    " OR survivor_person_id IN (SELECT person_id FROM involved))) AS redirected,"
    f" ARRAY(SELECT subject_id FROM {SCHEMA}.records WHERE person_id = :id"
    " AND subject_id IS NOT NULL) AS own_subjects,"
    f" ARRAY(SELECT r.subject_id FROM {SCHEMA}.records r"
    " WHERE r.person_id IN (SELECT person_id FROM hh WHERE person_id <> :id)"
    " AND r.subject_id IS NOT NULL) AS member_subjects"
)


@dataclass
class Look:
    """What a read's first round trip finds (``_LOOK``)."""

    person_id: uuid.UUID
    household_rows: list[HouseholdRow]
    known: bool
    redirected: bool
    own_subjects: list[uuid.UUID]
    member_subjects: list[uuid.UUID]

    @property
    def simple(self) -> bool:
        """Known, and no one involved was ever merged: every id is its own person."""
        return self.known and not self.redirected

    def ids(self, include_household: bool) -> list[uuid.UUID]:
        """The persons whose entries a read without merges shows (as ``Scope.canonical_ids``)."""
        ids = [self.person_id]
        if include_household:
            ids += [row.person_id for row in self.household_rows]
        return list(dict.fromkeys(ids))

    def subjects(self, include_household: bool) -> list[uuid.UUID]:
        return self.own_subjects + (self.member_subjects if include_household else [])


async def look(session: AsyncSession, person_id: uuid.UUID) -> Look:
    row = (await session.execute(_LOOK, {"id": person_id})).one()
    households = [
        HouseholdRow(
            uuid.UUID(h["household_id"]), uuid.UUID(h["person_id"]), h["role"], h["relationships"]
        )
        for h in orjson.loads(row.households or "[]")
    ]
    return Look(
        person_id,
        households,
        row.known,
        row.redirected,
        list(row.own_subjects),
        list(row.member_subjects),
    )


async def scope(
    session: AsyncSession, person_id: uuid.UUID, *, include_household: bool
) -> Scope | None:
    # Most reads involve no merge at all: then one look (``_LOOK``) settles who is who, and
    # one more reads the people; a merge anywhere in view takes the general way.
    first = await look(session, person_id)
    if first.redirected:
        return await _scope_with_merges(session, person_id)
    if not first.known:
        return None
    return await assemble(session, first)


async def assemble(session: AsyncSession, first: Look) -> Scope:
    """The scope of a read whose first look found no merge (``Look.simple``)."""
    assert first.simple
    person_id = first.person_id
    return await _assemble(session, person_id, person_id, [person_id], first.household_rows, {})


async def _scope_with_merges(session: AsyncSession, person_id: uuid.UUID) -> Scope | None:
    survivor = (await canonical_many(session, [person_id]))[person_id]
    if not (await session.execute(_KNOWN, {"id": survivor})).scalar_one():
        return None
    owner = await merged_into_many(session, [survivor])
    persons = list(owner)
    household_rows = (await session.execute(_HOUSEHOLD, {"ids": persons})).all()
    relationships = _relationships(household_rows)
    current = await canonical_many(session, list({row.person_id for row in household_rows}))
    member_roles = _member_roles(household_rows, current, owner, survivor)
    for pid, member in (await merged_into_many(session, list(member_roles))).items():
        owner.setdefault(pid, member)
    return await _finish(session, person_id, survivor, persons, member_roles, relationships, owner)


async def _assemble(
    session: AsyncSession,
    person_id: uuid.UUID,
    survivor: uuid.UUID,
    persons: list[uuid.UUID],
    household_rows: Sequence[Any],
    current: dict[uuid.UUID, uuid.UUID],
) -> Scope:
    """The scope when no redirect involves anyone in it: every id is its own person."""
    owner = {pid: pid for pid in persons}
    relationships = _relationships(household_rows)
    member_roles = _member_roles(household_rows, current, owner, survivor)
    return await _finish(session, person_id, survivor, persons, member_roles, relationships, owner)


def _relationships(household_rows: Sequence[Any]) -> list[dict[str, Any]]:
    relationships: list[dict[str, Any]] = []
    seen_households: set[uuid.UUID] = set()
    for row in household_rows:
        if row.household_id not in seen_households:
            seen_households.add(row.household_id)
            relationships += list(orjson.loads(row.relationships))
    return relationships


def _member_roles(
    household_rows: Sequence[Any],
    current: dict[uuid.UUID, uuid.UUID],
    owner: dict[uuid.UUID, uuid.UUID],
    survivor: uuid.UUID,
) -> dict[uuid.UUID, str]:
    member_roles: dict[uuid.UUID, str] = {}
    for row in household_rows:
        member = current.get(row.person_id, row.person_id)
        owner.setdefault(row.person_id, member)
        if member != survivor:
            member_roles.setdefault(member, row.role)
    return member_roles


async def _finish(
    session: AsyncSession,
    person_id: uuid.UUID,
    survivor: uuid.UUID,
    persons: list[uuid.UUID],
    member_roles: dict[uuid.UUID, str],
    relationships: list[dict[str, Any]],
    owner: dict[uuid.UUID, uuid.UUID],
) -> Scope:
    people = await _people(session, [survivor, *member_roles], owner)
    me = people.get(survivor) or PersonView(
        survivor, "Person not yet described", None, None, "", ""
    )
    if survivor != person_id:
        me.merged_into = survivor
    members = [
        Member(
            people.get(m) or PersonView(m, "Not yet described", None, None, "", role),
            role,
            relationship_to(survivor, m, relationships, owner),
        )
        for m, role in member_roles.items()
    ]
    members.sort(key=lambda m: (m.role != "adult", m.person.date_of_birth or date.max))
    return Scope(me, persons, members, relationships, owner)


async def _people(
    session: AsyncSession, ids: Sequence[uuid.UUID], owner: dict[uuid.UUID, uuid.UUID]
) -> dict[uuid.UUID, PersonView]:
    all_ids = [pid for pid, canon in owner.items() if canon in set(ids)] + list(ids)
    rows = (await session.execute(_PEOPLE, {"ids": list(dict.fromkeys(all_ids))})).all()
    found: dict[uuid.UUID, PersonView] = {}
    for row in rows:
        canon = owner.get(row.person_id, row.person_id)
        if canon in found and row.person_id != canon:
            continue  # the survivor's own records name them
        found[canon] = PersonView(
            canon,
            display_name(row),
            row.date_of_birth,
            row.unborn_expected_date,
            row.sex,
            row.role,
        )
    return found


def relationship_to(
    person: uuid.UUID,
    member: uuid.UUID,
    relationships: Sequence[dict[str, Any]],
    owner: dict[uuid.UUID, uuid.UUID],
) -> str:
    def canon(value: str) -> uuid.UUID:
        pid = uuid.UUID(value)
        return owner.get(pid, pid)

    for r in relationships:
        if canon(r["person_id"]) == member and canon(r["related_person_id"]) == person:
            return str(r["kind"]).replace("_", " ")
    for r in relationships:
        if canon(r["person_id"]) == person and canon(r["related_person_id"]) == member:
            return INVERSE.get(r["kind"], "relative")
    return "household member"


@dataclass
class Filters:
    date_from: date | None = None
    date_to: date | None = None
    agencies: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()


#: The columns of an entry row, in order (``entries_out`` unpacks them by position: reading a
#: row's fields by name cost more than building the entry).
ENTRY_COLUMNS = (
    "entry_id",
    "event_id",
    "occurred_at",
    "kind",
    "title",
    "summary",
    "agency",
    "organisation_code",
    "who",
    "contact",
    "source_type",
    "source_id",
    "source_reference",
    "facts",
    "person_ids",
    "entry_ids",
    "rag",
    "decision",
    "decided_at",
    "deadlines",
)
_OWN = ENTRY_COLUMNS[:13]  # the entry's own columns but the facts
# The deadlines as text: orjson decodes them several times faster than the driver's json.loads.
_REFERRAL = "ref.rag, ref.decision, ref.decided_at, ref.deadlines::text AS deadlines"


def _entries_sql(filters: Filters, *, facts: bool = True, one_per_event: bool = False) -> str:
    where = ["r.person_id = ANY(CAST(:ids AS uuid[]))"]
    if filters.date_from:
        where.append("e.occurred_at >= :date_from")
    if filters.date_to:
        where.append("e.occurred_at < :date_to")
    if filters.agencies:
        where.append("e.agency = ANY(CAST(:agencies AS text[]))")
    if filters.kinds:
        where.append("e.kind = ANY(CAST(:kinds AS text[]))")
    columns = ", ".join(f"e.{c}" for c in _OWN) + (", e.facts" if facts else ", NULL AS facts")
    held = f"{SCHEMA}.records r JOIN {SCHEMA}.entries e ON e.subject_id = r.subject_id"
    condition = " AND ".join(where)
    if not one_per_event:
        return (
            f"SELECT {columns}, ARRAY[r.person_id] AS person_ids, ARRAY[e.entry_id] AS entry_ids,"
            f" {_REFERRAL} FROM {held} LEFT JOIN {SCHEMA}.referrals ref"
            f" ON ref.referral_id = e.source_id AND e.kind = 'referral'"
            f" WHERE {condition} ORDER BY e.occurred_at, e.entry_id"
        )
    # An event that named several people in view (a police incident naming two children and
    # their mother) is one row, carrying whose entries it holds in the order they were read;
    # sending each person's copy of the same text would double what a household read moves.
    return (
        f"SELECT {', '.join(f'x.{c}' for c in ENTRY_COLUMNS[:16])}, {_REFERRAL}"
        f" FROM (SELECT {columns}, array_agg(r.person_id) OVER w AS person_ids,"
        " NULL::uuid[] AS entry_ids, row_number() OVER w AS nth"
        f" FROM {held} WHERE {condition}"
        " WINDOW w AS (PARTITION BY e.event_id ORDER BY e.occurred_at, e.entry_id"
        " ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) x"
        f" LEFT JOIN {SCHEMA}.referrals ref ON ref.referral_id = x.source_id"
        " AND x.kind = 'referral'"
        " WHERE x.nth = 1 ORDER BY x.occurred_at, x.entry_id"
    )


async def entry_rows(
    session: AsyncSession,
    ids: Sequence[uuid.UUID],
    filters: Filters,
    *,
    facts: bool = True,
    one_per_event: bool = False,
) -> list[Any]:
    """The entries of ``ids``, oldest first, each row with ``person_ids`` (whose entries they
    are, not yet canonical) and ``entry_ids`` (theirs, in the same order). ``one_per_event``
    gives an event once however many of ``ids`` it named (as the household view shows it),
    without ``entry_ids``; otherwise each person's entry is its own row. ``facts=False``
    leaves out the structured facts (only the flags read them): decoding a JSON document per
    row is a good part of a household chronology's time."""
    params: dict[str, Any] = {"ids": list(ids)}
    if filters.date_from:
        params["date_from"] = datetime.combine(filters.date_from, datetime.min.time()).astimezone()
    if filters.date_to:
        params["date_to"] = datetime.combine(
            filters.date_to + timedelta(days=1), datetime.min.time()
        ).astimezone()
    if filters.agencies:
        params["agencies"] = list(filters.agencies)
    if filters.kinds:
        params["kinds"] = list(filters.kinds)
    sql = _entries_sql(filters, facts=facts, one_per_event=one_per_event)
    numbered = {name: f"${n}" for n, name in enumerate(params, start=1)}
    sql = _PARAMETER.sub(lambda match: numbered[match.group(1)], sql)
    # The driver's own rows (asyncpg records, read by position or by name), in the session's
    # transaction: SQLAlchemy's row objects cost a household read more than a millisecond.
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    return list(await driver.fetch(sql, *params.values()))


_PARAMETER = re.compile(r"(?<!:):(ids|date_from|date_to|agencies|kinds)\b")


async def subject_ids(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    return list((await session.execute(_SUBJECTS, {"ids": list(ids)})).scalars().all())


def _facts(row: Any) -> dict[str, Any]:
    facts = row["facts"]
    return json.loads(facts) if isinstance(facts, str) else dict(facts or {})


_DEADLINE_ORDER = ["acknowledgement", "written_follow_up", "decision", "feedback", "assessment"]


def deadlines(held: dict[str, Any] | str | None) -> list[dict[str, Any]]:
    """A referral's deadlines (its ``deadlines`` column) in the order they fall due."""
    if not held:
        return []
    due: dict[str, Any] = orjson.loads(held) if isinstance(held, str) else held
    order = _DEADLINE_ORDER
    out = []
    for name in sorted(due, key=lambda n: order.index(n) if n in order else len(order)):
        value = due[name]
        out.append(
            {
                "name": name,
                "due_at": value.get("due_at"),
                "met_at": value.get("met_at"),
                "met": value.get("met"),
            }
        )
    return out


def entries_out(rows: Sequence[Any], scope: Scope, *, household: bool) -> list[dict[str, Any]]:
    """Rows as the API gives them, labelled with whose they are. In the household view an event
    is shown once however many people in it it named (rows read ``one_per_event`` already are),
    listing them: the person whose chronology it is first, then children, then adults."""
    me = scope.person.person_id
    owner_of = scope.owner
    unknown = ("someone in the household", "household member")
    people = {me: (scope.person.display_name, "this person")} | {
        m.person.person_id: (m.person.display_name, m.relationship) for m in scope.members
    }
    adults = {m.person.person_id for m in scope.members if m.role == "adult"}
    grouped: dict[uuid.UUID, tuple[Any, list[uuid.UUID]]] = {}
    ordered: list[tuple[Any, list[uuid.UUID]]] = []
    merged = any(pid != canon for pid, canon in owner_of.items())
    for row in rows:
        owners = [owner_of.get(pid, pid) for pid in row[14]] if merged else list(row[14])
        if household:
            seen = grouped.get(row[1])  # event_id
            if seen is not None:
                seen[1].extend(owners)
                continue
            grouped[row[1]] = seen = (row, owners)
            ordered.append(seen)
        else:
            ordered.append((row, owners))
    out: list[dict[str, Any]] = []
    labelled: dict[tuple[uuid.UUID, ...], tuple[Any, str, str, list[dict[str, Any]]]] = {}
    for row, owners in ordered:
        (
            entry_id,
            _,
            occurred_at,
            kind,
            title,
            summary,
            agency,
            organisation_code,
            who,
            contact,
            source_type,
            source_id,
            source_reference,
            _,
            _,
            _,
            rag,
            decision,
            _,
            held,
        ) = row
        key = tuple(owners)
        labels = labelled.get(key)
        if labels is None:  # the same people label many entries: worked out once
            if len(owners) > 1:
                owners = list(dict.fromkeys(owners))
                owners.sort(key=lambda pid: (pid != me, pid in adults))
            named = [(pid, *people.get(pid, unknown)) for pid in owners]
            labels = labelled[key] = (
                named[0][0],
                named[0][1] if len(named) == 1 else ", ".join(n[1] for n in named),
                named[0][2],
                [{"person_id": pid, "name": n, "relationship": r} for pid, n, r in named],
            )
        first, whose, relationship, listed = labels
        out.append(
            {
                "entry_id": entry_id,
                "person_id": first,
                "whose": whose,
                "relationship": relationship,
                "people": listed,  # shared by the entries naming the same people: read-only
                "occurred_at": occurred_at,
                "kind": kind,
                "title": title,
                "summary": summary,
                "agency": agency,
                "organisation_code": organisation_code,
                "who": who,
                "contact": contact,
                "rag": rag,
                "decision": decision,
                "deadlines": deadlines(held),
                "source": {
                    "type": source_type,
                    "id": source_id,
                    "reference": source_reference,
                    "path": _source_path(source_type, source_id),
                },
            }
        )
    return out


def _source_path(source_type: str, source_id: uuid.UUID) -> str | None:
    if source_type == "referral":
        return f"/v1/referrals/{source_id}"
    if source_type == "contact":
        return f"/v1/contacts/{source_id}"
    return None


def lines_of(rows: Sequence[Any], scope: Scope) -> list[flag_rules.Line]:
    """One line per person's entry. The rows must be each person's own (``one_per_event``
    false): the facts differ between the people an event named (a child, a family member)."""
    lines = []
    for row in rows:
        person_ids = row["person_ids"]
        if len(person_ids) != 1:
            raise ValueError("the flags read each person's entry: read with one_per_event=False")
        lines.append(
            flag_rules.Line(
                entry_id=row["entry_id"],
                person_id=scope.owner.get(person_ids[0], person_ids[0]),
                occurred_at=row["occurred_at"],
                kind=row["kind"],
                facts=_facts(row),
                decision=row["decision"],
                decided_at=row["decided_at"],
                source_id=row["source_id"],
            )
        )
    return lines


def flags(rows: Sequence[Any], scope: Scope, settings: TimelineSettings) -> list[flag_rules.Flag]:
    me = scope.person.person_id
    lines = lines_of(rows, scope)
    own = [line for line in lines if line.person_id == me]
    siblings = {
        m.person.person_id
        for m in scope.members
        if m.role == "child" and m.relationship in {"sibling", "half-sibling", "household member"}
    }
    sibling_lines = [line for line in lines if line.person_id in siblings]
    unborn = scope.person.date_of_birth is None and scope.person.unborn_expected_date is not None
    return flag_rules.evaluate(own, sibling_lines, settings, unborn=unborn)


async def agencies(
    session: AsyncSession, rows: Sequence[Any], scope: Scope, now: datetime
) -> list[dict[str, Any]]:
    """Who is working with this child and family, newest first, from the entries."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["occurred_at"]):
        kind, agency, organisation_code = row["kind"], row["agency"], row["organisation_code"]
        if row["source_type"] == "consent" or kind == "deadline_missed":
            continue
        key = (agency, organisation_code)
        current = found.get(key)
        if current is None or row["occurred_at"] >= current["last_seen_at"]:
            found[key] = {
                "agency": agency,
                "organisation_code": organisation_code,
                "role": ROLES.get(kind, agency.replace("_", " ").capitalize()),
                "name": row["who"] or (current or {}).get("name"),
                "contact": row["contact"] or (current or {}).get("contact"),
                "last_seen_at": row["occurred_at"],
            }
    schools = (await session.execute(_SCHOOLS, {"ids": scope.persons})).all()
    for school in schools:
        key = ("school", school.school_urn)
        if key not in found:
            found[key] = {
                "agency": "school",
                "organisation_code": school.school_urn,
                "role": "The child's school",
                "name": f"School URN {school.school_urn}",
                "contact": None,
                "last_seen_at": school.seen_at,
            }
    horizon = now - timedelta(days=CURRENT_AGENCY_DAYS)
    out = sorted(found.values(), key=lambda a: a["last_seen_at"], reverse=True)
    for agency in out:
        agency["current"] = agency["last_seen_at"] >= horizon
    return out
