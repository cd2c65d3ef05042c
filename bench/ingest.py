"""Sustained referral intake, measured on its own stack of real processes.

What it measures (issue: ``make bench`` → ``bench/results/ingest.json``):

- **intake**: concurrent authenticated clients POST realistic referrals (two children, three
  family members related to both, 1-2 KB of narrative) to the referrals service for 60 s
  (15 s with ``--quick``); accepted referrals per second and API latency p50/p99. The load comes
  from ``wrk`` (C, a Lua script rotating pre-built bodies and tokens), because a Python client
  would take a core of the two this machine has;
- **end to end**: a separate probe posts one referral a second during the load and polls
  ``notifications.inbox_items`` until the notifications consumer has written its row; plus the
  same latency for *every* referral of the run from server-side timestamps, split into
  request → published to Kafka → consumed, and the backlog's drain time after the load stops;
- **ceiling**: the same rows (referral, 2 children, 3 family members, 6 relationships, 2 data
  keys, 5 sealed texts, an outbox row, a timer row: 21 rows) inserted straight into PostgreSQL
  with asyncpg, one transaction per referral, into a copy of the referrals tables;
- **where the CPU goes**: CPU per process (services, PostgreSQL backends by service, Kafka,
  wrk, this process) during the load, and a py-spy profile of the referrals (and
  notifications) process, summarised in ``bench/results/ingest-profile.txt``.

Environment overrides: ``THREADLINE_BENCH_INGEST_PORT_BASE`` (default 24390),
``THREADLINE_BENCH_INGEST_CONNECTIONS`` (one number skips the sweep; a comma list sweeps those),
``THREADLINE_BENCH_INGEST_SECONDS`` (main run length), ``THREADLINE_BENCH_INGEST_CEILING_SECONDS``,
``THREADLINE_BENCH_INGEST_CEILING_CONNECTIONS``, ``THREADLINE_BENCH_INGEST_PROFILE=0`` (no py-spy),
``THREADLINE_BENCH_INGEST_IDEMPOTENCY=0`` (send no Idempotency-Key).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from deploy.local.stack import Stack
from services.catalogue import MIGRATED, SERVICES
from shared.db import asyncpg_dsn
from shared.identifiers import (
    nhs_check_digit,
    normalise_nhs_number,
    normalise_postcode,
    upn_check_letter,
)
from shared.ids import uuid7
from shared.kafka import ensure_topics
from shared.migrations import upgrade

BASE = int(os.environ.get("THREADLINE_BENCH_INGEST_PORT_BASE", 24390))
RESULTS = Path(__file__).parent / "results"
PROFILE_FILE = RESULTS / "ingest-profile.txt"
CLIENTS = ("oakfield-primary", "brookside-primary", "demo-nhs-trust", "demo-police")
TARGETS = {"referrals_per_s": 1000.0, "api_p99_ms": 150.0, "e2e_p99_ms": 1000.0}
CEILING_SCHEMA = "ingest_ceiling"
CEILING_TABLES = (
    "referrals",
    "referral_children",
    "family_members",
    "family_relationships",
    "referral_texts",
    "data_keys",
    "outbox",
    "timers",
)
ROWS_PER_REFERRAL = 1 + 2 + 3 + 6 + 2 + 5 + 1 + 1  # see _ceiling_transaction
BENCH_APP = "bench-ingest"
INTAKE_SERVICES = ("identity", "referrals", "notifications")
WRK_INSTALL = "apt-get install -y wrk   (Debian/Ubuntu; `make bench` does it)"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"THREADLINE_BENCH_INGEST_{name}", default)


# -- realistic bodies --------------------------------------------------------------------------

FEMALE = ["Maya", "Isla", "Amelia", "Ava", "Freya", "Lily", "Ivy", "Sophia", "Grace", "Evie"]
MALE = ["Leo", "Noah", "Oliver", "Arthur", "Theo", "Jack", "Harry", "Alfie", "Oscar", "Finley"]
ADULT_F = ["Sarah", "Kerry", "Donna", "Leanne", "Michelle", "Joanne", "Claire", "Gemma"]
ADULT_M = ["Darren", "Lee", "Craig", "Wayne", "Jason", "Mark", "Stuart", "Dean"]
FAMILY = ["Exampleton", "Testfamily", "Samplewood", "Mockridge", "Placeholder", "Benchley"]
STREETS = ["Test Street", "Sample Road", "Example Close", "Demo Avenue", "Mock Lane"]
TOWNS = ["Derby", "Nottingham", "Leicester", "Sheffield", "Chesterfield"]
OUTWARD = ["DE1", "DE22", "NG7", "NG1", "LE2", "S10", "S41", "M1", "B33", "LS6", "SW1A", "EC1A"]
INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
CATEGORIES = [
    "neglect",
    "domestic_abuse",
    "emotional_abuse",
    "physical_abuse",
    "parental_mental_health",
    "substance_misuse",
    "missing_from_education",
]
CLIENT_REFERRERS: dict[str, dict[str, str]] = {
    "oakfield-primary": {
        "organisation_name": "Oakfield Primary School",
        "name": "Jo Teacher",
        "role": "Designated Safeguarding Lead",
        "email": "dsl@oakfield.example.org",
        "raised_via": "portal",
    },
    "brookside-primary": {
        "organisation_name": "Brookside Primary School",
        "name": "Sam Head",
        "role": "Deputy Designated Safeguarding Lead",
        "email": "safeguarding@brookside.example.org",
        "raised_via": "portal",
    },
    "demo-nhs-trust": {
        "organisation_name": "Demo General Hospital NHS Trust",
        "name": "Dr Alex Placeholder",
        "role": "Paediatric liaison nurse",
        "email": "safeguarding@demo-hospital.example.nhs.uk",
        "raised_via": "online",
    },
    "demo-police": {
        "organisation_name": "Demo County Police",
        "name": "PC Sam Example",
        "role": "Officer in the case",
        "phone": "01632 960 001",
        "raised_via": "phone",
    },
}
SENTENCES = [
    "{child} arrived at school this morning without a coat and said {pronoun} had not eaten "
    "since lunchtime yesterday.",
    "Staff noticed that {child} and {sibling} have worn the same clothes for most of the week "
    "and both smelt strongly of smoke.",
    "When asked about the bruise on {possessive} forearm, {child} first said {pronoun} fell off "
    "a scooter and later said it happened when {adult} grabbed {object} on the stairs.",
    "{child} told the class teacher that there was shouting at home again last night and that "
    "{pronoun} hid under the bed with {sibling} until it stopped.",
    "Attendance has fallen to 78% this term, with most absences on Mondays and no reason given "
    "by the family.",
    "{adult} was seen at the school gate on Tuesday appearing unsteady and smelling of alcohol; "
    "{sibling} was collected late on three occasions this fortnight.",
    "A neighbour contacted the school office to say the children are often left alone in the "
    "evening and that the police were called to the address at the weekend.",
    "{child} has become withdrawn in class, no longer plays with friends at break time and has "
    "twice been found crying in the toilets.",
    "The school nurse reports that {sibling} has an untreated dental abscess and that two "
    "hospital appointments were missed.",
    "{child} said {pronoun} is scared to go home because {adult} 'gets angry when the money "
    "runs out' and breaks things.",
    "There is a history of concerns: a referral from the health visitor in 2023 about the "
    "home conditions was closed after an assessment.",
    "{adult} told the family support worker that {adult2} has moved back into the home, "
    "although there is a non-molestation order in place.",
]
ACTIONS = [
    "Spoke to {child} with the class teacher present and recorded what was said verbatim.",
    "Gave both children breakfast and a change of clothes from the school's supply.",
    "Checked the safeguarding record: two previous low-level concerns logged this term.",
    "Telephoned {adult} to arrange a meeting; the call was not answered and a message was left.",
    "Discussed with the head teacher, who agreed that a referral to the MASH is needed today.",
    "Informed the school nurse and asked her to follow up the missed health appointments.",
]
OWN_WORDS = [
    "Mummy's friend shouts at Mummy and I hide under the bed with {sibling}. I don't like it "
    "when he throws things.",
    "There wasn't any food again so I had crisps. {sibling} cried all night because he was hungry.",
    "I don't want to go home today. He said if I tell anyone I'll be taken away.",
]


def _nhs_number(rng: random.Random) -> str:
    while True:
        stem = f"{rng.randint(4, 7)}{rng.randrange(10**8):08d}"
        check = nhs_check_digit(stem)
        if check is None or len(set(stem)) == 1:
            continue
        digits = f"{stem}{check}"
        return f"{digits[:3]} {digits[3:6]} {digits[6:]}" if rng.random() < 0.5 else digits


def _upn(rng: random.Random) -> str:
    body = (
        f"{rng.randrange(201, 940):03d}{rng.randrange(2000, 7000):04d}"
        f"{rng.randrange(10, 24):02d}{rng.randrange(1000):03d}"
    )
    return upn_check_letter(body) + body


def _postcode(rng: random.Random) -> str:
    code = f"{rng.choice(OUTWARD)} {rng.randrange(10)}{rng.choice(INWARD_LETTERS)}"
    code += rng.choice(INWARD_LETTERS)
    return normalise_postcode(code)


def _birthday(rng: random.Random, years_ago: tuple[int, int]) -> str:
    today = date.today()
    days = rng.randrange(years_ago[0] * 365 + 10, years_ago[1] * 365)
    return (today - timedelta(days=days)).isoformat()


def _text(rng: random.Random, pool: list[str], low: int, high: int, names: dict[str, str]) -> str:
    """Sentences from ``pool`` until the text is between ``low`` and ``high`` characters."""
    while True:
        sentences: list[str] = []
        length = 0
        for sentence in rng.sample(pool, len(pool)):
            text = sentence.format(**names)
            if length + len(text) + 1 > high:
                continue
            sentences.append(text)
            length += len(text) + 1
            if length >= low:
                return " ".join(sentences)
        if length >= low * 0.8:
            return " ".join(sentences)


def referral_body(rng: random.Random, client_id: str) -> dict[str, Any]:
    """A realistic referral from ``client_id``: two children, three adults, 1-2 KB narrative."""
    family = rng.choice(FAMILY)
    girl, boy = rng.choice(FEMALE), rng.choice(MALE)
    mother, father, grandparent = rng.choice(ADULT_F), rng.choice(ADULT_M), rng.choice(ADULT_F)
    postcode = _postcode(rng)
    address = {
        "lines": [f"{rng.randrange(1, 200)} {rng.choice(STREETS)}"],
        "town": rng.choice(TOWNS),
        "postcode": postcode,
    }
    school = {"urn": f"{rng.randrange(100000, 150000)}", "name": "Oakfield Primary School"}
    names = {
        "child": girl,
        "sibling": boy,
        "adult": mother if rng.random() < 0.5 else f"{mother}'s partner",
        "adult2": father,
        "pronoun": "she",
        "possessive": "her",
        "object": "her",
    }
    children = [
        {
            "given_names": girl,
            "family_name": family,
            "date_of_birth": _birthday(rng, (7, 11)),
            "sex": "female",
            "nhs_number": _nhs_number(rng),
            "upn": _upn(rng),
            "address": address,
            "school": school,
            "own_words": rng.choice(OWN_WORDS).format(sibling=boy),
        },
        {
            "given_names": boy,
            "family_name": family,
            "other_names": [f"{boy}ie"],
            "date_of_birth": _birthday(rng, (4, 7)),
            "sex": "male",
            "nhs_number": _nhs_number(rng),
            "upn": _upn(rng),
            "address": address,
            "school": school,
        },
    ]

    def related(relationship: str, responsibility: bool, lives: bool) -> list[dict[str, Any]]:
        return [
            {
                "child": child,
                "relationship": relationship,
                "parental_responsibility": responsibility,
                "lives_with_child": lives,
            }
            for child in (0, 1)
        ]

    family_members = [
        {
            "given_names": mother,
            "family_name": family,
            "date_of_birth": _birthday(rng, (24, 40)),
            "sex": "female",
            "address": address,
            "phone": f"07700 9{rng.randrange(10000, 99999)}",
            "relationships": related("mother", True, True),
        },
        {
            "given_names": father,
            "family_name": rng.choice(FAMILY),
            "date_of_birth": _birthday(rng, (25, 45)),
            "sex": "male",
            "address": {
                "lines": [f"Flat {rng.randrange(1, 30)}", f"{rng.randrange(1, 90)} Mock Lane"],
                "town": rng.choice(TOWNS),
                "postcode": _postcode(rng),
            },
            "relationships": related("father", True, False),
        },
        {
            "given_names": grandparent,
            "family_name": family,
            "other_names": ["Nan"],
            "date_of_birth": _birthday(rng, (50, 70)),
            "sex": "female",
            "relationships": related("grandparent", False, False),
        },
    ]
    if rng.random() < 0.5:
        consent: dict[str, Any] = {"parents": {"status": "agreed"}}
    else:
        consent = {
            "parents": {
                "status": "not_asked",
                "why_not_asked": "Asking could increase the risk to the children and their mother.",
            }
        }
    return {
        "referrer": dict(CLIENT_REFERRERS[client_id]),
        "children": children,
        "family_members": family_members,
        "concern": {
            "categories": rng.sample(CATEGORIES, rng.randint(1, 3)),
            "what_happened": _text(rng, SENTENCES, 1100, 1900, names),
            "actions_taken": _text(rng, ACTIONS, 250, 520, names),
            "immediate_risk": rng.random() < 0.1,
        },
        "consent": consent,
    }


@dataclass
class Body:
    client_id: str
    data: dict[str, Any]
    json: str = field(init=False)

    def __post_init__(self) -> None:
        self.json = json.dumps(self.data, separators=(",", ":"))


def make_bodies(count: int, seed: int) -> list[Body]:
    rng = random.Random(seed)
    return [
        Body(CLIENTS[n % len(CLIENTS)], referral_body(rng, CLIENTS[n % len(CLIENTS)]))
        for n in range(count)
    ]


# -- small helpers ---------------------------------------------------------------------------


def _percentiles(samples: list[float], scale: float = 1000.0) -> dict[str, float | int]:
    """p50/p95/p99/max/mean of seconds, in milliseconds by default."""
    if not samples:
        return {"count": 0}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "count": len(ordered),
        "p50": round(at(0.50) * scale, 2),
        "p95": round(at(0.95) * scale, 2),
        "p99": round(at(0.99) * scale, 2),
        "max": round(ordered[-1] * scale, 2),
        "mean": round(statistics.fmean(ordered) * scale, 2),
    }


def _mark(value: float | None, target: float, *, at_least: bool) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if at_least else value <= target
    return "PASS" if ok else "MISS"


async def _connect(stack: Stack) -> asyncpg.Connection:
    return await asyncpg.connect(
        asyncpg_dsn(stack.database_url), server_settings={"application_name": BENCH_APP}
    )


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(f"bench ingest needs wrk (the HTTP load generator): {WRK_INSTALL}")
    return path


# -- the ceiling: the same rows straight into PostgreSQL -------------------------------------


async def _create_ceiling_schema(connection: asyncpg.Connection) -> None:
    """A copy of the referrals tables (columns, defaults, identities, indexes, checks, and the
    foreign keys among them), so the ceiling writes what the service writes without touching it.

    Foreign keys to tables outside the copy (say, to MASH actions) are left out: the ceiling
    leaves those columns NULL, as the service does for a new referral."""
    await connection.execute(f"DROP SCHEMA IF EXISTS {CEILING_SCHEMA} CASCADE")
    await connection.execute(f"CREATE SCHEMA {CEILING_SCHEMA}")
    await connection.execute(f"CREATE SEQUENCE {CEILING_SCHEMA}.referral_number_seq")
    for table in CEILING_TABLES:
        await connection.execute(
            f"CREATE TABLE {CEILING_SCHEMA}.{table} (LIKE referrals.{table} INCLUDING ALL)"
        )
    foreign_keys = await connection.fetch(
        """
        SELECT c.relname AS table_name, k.conname, pg_get_constraintdef(k.oid) AS definition
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_class r ON r.oid = k.confrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'referrals' AND k.contype = 'f' AND c.relname = ANY($1::text[])
          AND r.relname = ANY($1::text[])
        """,
        list(CEILING_TABLES),
    )
    for row in foreign_keys:
        definition = row["definition"].replace(
            "REFERENCES referrals.", f"REFERENCES {CEILING_SCHEMA}."
        )
        await connection.execute(
            f"ALTER TABLE {CEILING_SCHEMA}.{row['table_name']} "
            f'ADD CONSTRAINT "{row["conname"]}" {definition}'
        )


@dataclass
class CeilingPlan:
    """One body's rows, ready for asyncpg (ids are drawn per transaction)."""

    referral: tuple[Any, ...]
    children: list[tuple[Any, ...]]
    members: list[tuple[Any, ...]]
    relationships: list[tuple[int, int, str, bool, bool]]  # member index, child index, ...
    texts: list[tuple[int, str, bytes]]  # child index, kind, sealed bytes
    wrapped_keys: list[bytes]
    outbox_attributes: str
    outbox_data: str


def _d(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def ceiling_plan(body: Body) -> CeilingPlan:
    data = body.data
    referrer, concern, consent = data["referrer"], data["concern"], data["consent"]
    agency = {"demo-nhs-trust": "health", "demo-police": "police"}.get(body.client_id, "school")
    referral = (
        agency,
        body.client_id[:20],
        referrer["organisation_name"],
        body.client_id,
        referrer["name"],
        referrer["role"],
        referrer.get("email"),
        referrer.get("phone"),
        referrer["raised_via"],
        concern["categories"],
        concern["immediate_risk"],
        consent["parents"]["status"],
        consent["parents"].get("why_not_asked"),
        os.urandom(32).hex(),
    )
    children = []
    for position, child in enumerate(data["children"]):
        address = child.get("address") or {}
        school = child.get("school") or {}
        children.append(
            (
                position,
                child["given_names"],
                child["family_name"],
                child.get("other_names", []),
                _d(child.get("date_of_birth")),
                child.get("sex", "not_known"),
                normalise_nhs_number(child["nhs_number"]) if child.get("nhs_number") else None,
                child.get("upn"),
                address.get("lines", []),
                address.get("town"),
                address.get("postcode"),
                school.get("urn"),
                school.get("name"),
            )
        )
    members, relationships = [], []
    for position, member in enumerate(data["family_members"]):
        address = member.get("address") or {}
        members.append(
            (
                position,
                member["given_names"],
                member["family_name"],
                member.get("other_names", []),
                _d(member.get("date_of_birth")),
                member.get("sex", "not_known"),
                address.get("lines", []),
                address.get("town"),
                address.get("postcode"),
                member.get("phone"),
            )
        )
        for relation in member["relationships"]:
            relationships.append(
                (
                    position,
                    relation["child"],
                    relation["relationship"],
                    relation["parental_responsibility"],
                    relation["lives_with_child"],
                )
            )
    texts = []
    for index, child in enumerate(data["children"]):
        kinds = {
            "what_happened": concern["what_happened"],
            "actions_taken": concern["actions_taken"],
        }
        if child.get("own_words"):
            kinds["own_words"] = child["own_words"]
        for kind, plaintext in kinds.items():
            # 0x01 | nonce (12) | ciphertext | tag (16), as shared.crypto seals.
            texts.append((index, kind, os.urandom(1 + 12 + len(plaintext.encode()) + 16)))
    event_children = [
        {
            "subject_id": str(uuid7()),
            "given_names": row[1],
            "family_name": row[2],
            "other_names": row[3],
            "date_of_birth": str(row[4]),
            "estimated_age_years": None,
            "unborn_expected_date": None,
            "sex": row[5],
            "nhs_number": row[6],
            "upn": row[7],
            "postcode": row[10],
            "school_urn": row[11],
        }
        for row in children
    ]
    event_members = [
        {
            "subject_id": str(uuid7()),
            "given_names": row[1],
            "family_name": row[2],
            "other_names": row[3],
            "date_of_birth": str(row[4]),
            "sex": row[5],
            "postcode": row[8],
            "relationships": [
                {
                    "child_subject_id": event_children[r[1]]["subject_id"],
                    "relationship": r[2],
                    "parental_responsibility": r[3],
                    "lives_with_child": r[4],
                }
                for r in relationships
                if r[0] == row[0]
            ],
        }
        for row in members
    ]
    now = datetime.now(UTC).isoformat()
    event_data = {
        "referral_id": str(uuid7()),
        "reference": "TL-2026-000000",
        "received_at": now,
        "referrer_agency": agency,
        "referrer_organisation_code": body.client_id[:20],
        "raised_via": referrer["raised_via"],
        "concern_categories": concern["categories"],
        "immediate_risk": concern["immediate_risk"],
        "consent_parents": consent["parents"]["status"],
        "consent_child": None,
        "children": event_children,
        "family_members": event_members,
        "acknowledgement_due_at": now,
    }
    attributes = {
        "specversion": "1.0",
        "id": str(uuid7()),
        "type": "referral.received",
        "source": "/threadline/referrals",
        "subject": event_data["referral_id"],
        "time": now,
        "datacontenttype": "application/json",
        "correlationid": str(uuid.uuid4()),
        "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
    }
    return CeilingPlan(
        referral=referral,
        children=children,
        members=members,
        relationships=relationships,
        texts=texts,
        wrapped_keys=[os.urandom(61) for _ in children],
        outbox_attributes=json.dumps(attributes),
        outbox_data=json.dumps(event_data),
    )


S = CEILING_SCHEMA
SQL_REFERRAL = f"""
INSERT INTO {S}.referrals (id, reference, status, received_at, referrer_agency,
    referrer_organisation_code, referrer_organisation_name, referrer_client, referrer_name,
    referrer_role, referrer_email, referrer_phone, raised_via, concern_categories,
    immediate_risk, consent_parents, consent_parents_why_not_asked, acknowledgement_due_at,
    request_fingerprint)
VALUES ($1, 'TL-2026-' || lpad(nextval('{S}.referral_number_seq')::text, 6, '0'), 'received',
    now(), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, now() + interval '1 day',
    $15)
"""
SQL_CHILD = f"""
INSERT INTO {S}.referral_children (id, referral_id, position, given_names, family_name,
    other_names, date_of_birth, sex, nhs_number, upn, address_lines, town, postcode,
    school_urn, school_name)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
"""
SQL_DATA_KEY = f"""
INSERT INTO {S}.data_keys (subject_id, master_key_id, wrapped_key, created_at)
VALUES ($1, 'dev2026a', $2, now()) ON CONFLICT (subject_id) DO NOTHING
"""
SQL_MEMBER = f"""
INSERT INTO {S}.family_members (id, referral_id, position, given_names, family_name,
    other_names, date_of_birth, sex, address_lines, town, postcode, phone)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
"""
SQL_RELATION = f"""
INSERT INTO {S}.family_relationships (family_member_id, child_id, child_position, relationship,
    parental_responsibility, lives_with_child)
VALUES ($1, $2, $3, $4, $5, $6)
"""
SQL_TEXT = f"""
INSERT INTO {S}.referral_texts (referral_id, subject_id, kind, sealed, written_at)
VALUES ($1, $2, $3, $4, now())
"""
SQL_OUTBOX = f"""
INSERT INTO {S}.outbox (event_id, topic, partition_key, event_type, attributes, data)
VALUES ($1, 'threadline.referrals.v1', $2, 'referral.received', $3::jsonb, $4::jsonb)
"""
SQL_TIMER = f"""
INSERT INTO {S}.timers (id, kind, aggregate_id, due_at, payload, correlation_id)
VALUES ($1, 'referral.acknowledgement_due', $2, now() + interval '1 day', '{{}}'::jsonb, $3)
"""
SQL_NOTIFY = f"SELECT pg_notify('{S}_outbox', '')"


async def _ceiling_transaction(connection: asyncpg.Connection, plan: CeilingPlan) -> None:
    """One referral's 21 rows in one transaction, as the service writes them (no ORM)."""
    referral_id = uuid7()
    child_ids = [uuid7() for _ in plan.children]
    member_ids = [uuid7() for _ in plan.members]
    async with connection.transaction():
        await connection.execute(SQL_REFERRAL, referral_id, *plan.referral)
        await connection.executemany(
            SQL_CHILD, [(child_ids[row[0]], referral_id, *row) for row in plan.children]
        )
        await connection.executemany(
            SQL_DATA_KEY, list(zip(child_ids, plan.wrapped_keys, strict=True))
        )
        await connection.executemany(
            SQL_MEMBER, [(member_ids[row[0]], referral_id, *row) for row in plan.members]
        )
        await connection.executemany(
            SQL_RELATION,
            [(member_ids[m], child_ids[c], c, *rest) for m, c, *rest in plan.relationships],
        )
        await connection.executemany(
            SQL_TEXT, [(referral_id, child_ids[c], kind, sealed) for c, kind, sealed in plan.texts]
        )
        await connection.execute(
            SQL_OUTBOX, uuid7(), str(referral_id), plan.outbox_attributes, plan.outbox_data
        )
        await connection.execute(SQL_TIMER, uuid7(), str(referral_id), str(uuid7()))
        await connection.execute(SQL_NOTIFY)


def _array_literal(values: list[str]) -> str:
    """A PostgreSQL array literal of strings, for a text[] element inside unnest()."""
    quoted = ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values)
    return "{" + ",".join(quoted) + "}"


SQL_ONE_STATEMENT = f"""
WITH
ref AS (
  INSERT INTO {S}.referrals (id, reference, status, received_at, referrer_agency,
      referrer_organisation_code, referrer_organisation_name, referrer_client, referrer_name,
      referrer_role, referrer_email, referrer_phone, raised_via, concern_categories,
      immediate_risk, consent_parents, consent_parents_why_not_asked, acknowledgement_due_at,
      request_fingerprint)
  VALUES ($1, 'TL-2026-' || lpad(nextval('{S}.referral_number_seq')::text, 6, '0'), 'received',
      now(), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
      now() + interval '1 day', $15)),
ch AS (
  INSERT INTO {S}.referral_children (id, referral_id, position, given_names, family_name,
      other_names, date_of_birth, sex, nhs_number, upn, address_lines, town, postcode,
      school_urn, school_name)
  SELECT t.id, $1, t.position, t.given, t.family, t.other::varchar(200)[], t.dob, t.sex, t.nhs,
      t.upn, t.lines::varchar(200)[], t.town, t.postcode, t.urn, t.school
  FROM unnest($16::uuid[], $17::int[], $18::text[], $19::text[], $20::text[], $21::date[],
      $22::text[], $23::text[], $24::text[], $25::text[], $26::text[], $27::text[], $28::text[],
      $29::text[])
      AS t(id, position, given, family, other, dob, sex, nhs, upn, lines, town, postcode, urn,
           school)),
dk AS (
  INSERT INTO {S}.data_keys (subject_id, master_key_id, wrapped_key, created_at)
  SELECT t.subject, 'dev2026a', t.wrapped, now() FROM unnest($16::uuid[], $30::bytea[])
      AS t(subject, wrapped)
  ON CONFLICT (subject_id) DO NOTHING),
fm AS (
  INSERT INTO {S}.family_members (id, referral_id, position, given_names, family_name,
      other_names, date_of_birth, sex, address_lines, town, postcode, phone)
  SELECT t.id, $1, t.position, t.given, t.family, t.other::varchar(200)[], t.dob, t.sex,
      t.lines::varchar(200)[], t.town, t.postcode, t.phone
  FROM unnest($31::uuid[], $32::int[], $33::text[], $34::text[], $35::text[], $36::date[],
      $37::text[], $38::text[], $39::text[], $40::text[], $41::text[])
      AS t(id, position, given, family, other, dob, sex, lines, town, postcode, phone)),
fr AS (
  INSERT INTO {S}.family_relationships (family_member_id, child_id, child_position,
      relationship, parental_responsibility, lives_with_child)
  SELECT * FROM unnest($42::uuid[], $43::uuid[], $44::int[], $45::text[], $46::bool[],
      $47::bool[])),
tx AS (
  INSERT INTO {S}.referral_texts (referral_id, subject_id, kind, sealed, written_at)
  SELECT $1, t.subject, t.kind, t.sealed, now()
  FROM unnest($48::uuid[], $49::text[], $50::bytea[]) AS t(subject, kind, sealed)),
ob AS (
  INSERT INTO {S}.outbox (event_id, topic, partition_key, event_type, attributes, data)
  VALUES ($51, 'threadline.referrals.v1', $1::text, 'referral.received', $52::jsonb,
      $53::jsonb)),
tm AS (
  INSERT INTO {S}.timers (id, kind, aggregate_id, due_at, payload, correlation_id)
  VALUES ($54, 'referral.acknowledgement_due', $1::text, now() + interval '1 day',
      '{{}}'::jsonb, $55))
SELECT pg_notify('{S}_outbox', '')
"""


def _one_statement_arguments(plan: CeilingPlan) -> list[Any]:
    """The arrays of ``SQL_ONE_STATEMENT`` that do not change per transaction (cached)."""
    cached: list[Any] | None = getattr(plan, "_arrays", None)
    if cached is None:
        c, m, r, t = plan.children, plan.members, plan.relationships, plan.texts
        cached = [
            [row[0] for row in c],
            [row[1] for row in c],
            [row[2] for row in c],
            [_array_literal(row[3]) for row in c],
            [row[4] for row in c],
            [row[5] for row in c],
            [row[6] for row in c],
            [row[7] for row in c],
            [_array_literal(row[8]) for row in c],
            [row[9] for row in c],
            [row[10] for row in c],
            [row[11] for row in c],
            [row[12] for row in c],
            plan.wrapped_keys,
            [row[0] for row in m],
            [row[1] for row in m],
            [row[2] for row in m],
            [_array_literal(row[3]) for row in m],
            [row[4] for row in m],
            [row[5] for row in m],
            [_array_literal(row[6]) for row in m],
            [row[7] for row in m],
            [row[8] for row in m],
            [row[9] for row in m],
            [row[1] for row in r],
            [row[2] for row in r],
            [row[3] for row in r],
            [row[4] for row in r],
            [kind for _, kind, _ in t],
            [sealed for _, _, sealed in t],
        ]
        object.__setattr__(plan, "_arrays", cached)
    return cached


async def _ceiling_one_statement(connection: asyncpg.Connection, plan: CeilingPlan) -> None:
    """The same 21 rows in a single statement (data-modifying CTEs): one round trip, and the
    statement is its own transaction (autocommit)."""
    referral_id = uuid7()
    child_ids = [uuid7() for _ in plan.children]
    member_ids = [uuid7() for _ in plan.members]
    a = _one_statement_arguments(plan)
    await connection.execute(
        SQL_ONE_STATEMENT,
        referral_id,
        *plan.referral,
        child_ids,
        *a[0:13],
        a[13],
        member_ids,
        *a[14:24],
        [member_ids[row[0]] for row in plan.relationships],
        [child_ids[row[1]] for row in plan.relationships],
        *a[24:28],
        [child_ids[c] for c, _, _ in plan.texts],
        a[28],
        a[29],
        uuid7(),
        plan.outbox_attributes,
        plan.outbox_data,
        uuid7(),
        str(uuid7()),
    )


CEILING_VARIANTS = {
    "statements": (
        _ceiling_transaction,
        "BEGIN; INSERT referral (reference from nextval); executemany children, data keys "
        "(ON CONFLICT DO NOTHING), family members, relationships, sealed texts; INSERT outbox "
        "(jsonb); INSERT timer; pg_notify; COMMIT: about 10 round trips, the service's shape "
        "without the ORM",
    ),
    "one_statement": (
        _ceiling_one_statement,
        "the same rows in one statement of data-modifying CTEs over unnest() arrays, "
        "autocommit: 1 round trip per referral",
    ),
}


async def run_ceiling(
    stack: Stack, bodies: list[Body], seconds: float, connections: int
) -> dict[str, Any]:
    admin = await _connect(stack)
    await _create_ceiling_schema(admin)
    plans = [ceiling_plan(body) for body in bodies]
    workers = [await _connect(stack) for _ in range(connections)]
    variants: dict[str, Any] = {}
    for name, (transaction, description) in CEILING_VARIANTS.items():
        latencies: list[float] = []
        done = 0

        async def work(connection: asyncpg.Connection, offset: int, deadline: float) -> None:
            nonlocal done
            n = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await transaction(connection, plans[n % len(plans)])  # noqa: B023
                latencies.append(time.perf_counter() - started)  # noqa: B023
                done += 1
                n += 1

        # A short warm-up fills the statement caches and the tables' first pages.
        warm = time.perf_counter() + 1.0
        await asyncio.gather(*(work(c, i * 7, warm) for i, c in enumerate(workers)))
        done, latencies[:] = 0, []
        cpu = CpuSampler(stack, extra={"bench (asyncpg client)": os.getpid()})
        cpu.set_backends(await backend_apps(admin))
        cpu.sample()
        started = time.perf_counter()
        deadline = started + seconds
        sampling = asyncio.create_task(cpu.run(interval=1.0))
        await asyncio.gather(*(work(c, i * 7, deadline) for i, c in enumerate(workers)))
        elapsed = time.perf_counter() - started
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        cpu.sample()
        variants[name] = {
            "method": description,
            "seconds": round(elapsed, 3),
            "referrals": done,
            "referrals_per_s": round(done / elapsed, 1),
            "table_rows_per_s": round(done * ROWS_PER_REFERRAL / elapsed, 1),
            "transaction_ms": _percentiles(latencies),
            "cpu": cpu.report(),
        }
    stored = await admin.fetchval(f"SELECT count(*) FROM {CEILING_SCHEMA}.referrals")
    rows = await admin.fetchval(
        "SELECT "
        + " + ".join(f"(SELECT count(*) FROM {CEILING_SCHEMA}.{t})" for t in CEILING_TABLES)
    )
    sizes = await admin.fetchrow(
        f"SELECT avg(pg_column_size(data))::int AS data, avg(pg_column_size(attributes))::int "
        f"AS attributes FROM {CEILING_SCHEMA}.outbox"
    )
    sealed = await admin.fetchval(
        f"SELECT avg(length(sealed))::int FROM {CEILING_SCHEMA}.referral_texts"
    )
    for connection in (*workers, admin):
        await connection.close()
    best = max(variants, key=lambda name: variants[name]["referrals_per_s"])
    return {
        "where": (
            f"a copy of the referrals tables ({CEILING_SCHEMA}.*: same columns, indexes, checks "
            "and foreign keys among them), written before the services start, on the same "
            "PostgreSQL (fsync and synchronous_commit on), one transaction per referral"
        ),
        "connections": connections,
        "rows_per_referral": ROWS_PER_REFERRAL,
        "rows_per_referral_stored": round(rows / max(1, stored), 2),
        "variants": variants,
        "best": best,
        "referrals_per_s": variants[best]["referrals_per_s"],
        "table_rows_per_s": variants[best]["table_rows_per_s"],
        "outbox_bytes": {"data": sizes["data"], "attributes": sizes["attributes"]},
        "sealed_text_bytes_mean": sealed,
    }


# -- CPU per process ---------------------------------------------------------------------------


def _short_name(cmdline: list[str], name: str) -> str:
    text = " ".join(cmdline) or name
    if name == "postgres" or text.startswith("postgres:") or "/bin/postgres " in text:
        return "postgres (other instances: tests, dev stack)"
    if name == "java" or text.startswith("/usr/bin/java"):
        return "java (other Kafka instances: tests, dev stack)"
    if "pytest" in text:
        return "pytest (other sessions' test runs)"
    if "deploy.local.cli serve" in text:
        return "services of other stacks"
    return text[:70]


def _all_cpu() -> dict[int, tuple[float, str, float]]:
    """CPU seconds (user + system), a short name and the start time of every process."""
    found: dict[int, tuple[float, str, float]] = {}
    for process in psutil.process_iter(["name", "cmdline", "cpu_times", "create_time"]):
        times = process.info["cpu_times"]
        if times is None:
            continue
        name = _short_name(process.info["cmdline"] or [], process.info["name"] or "?")
        found[process.pid] = (times.user + times.system, name, process.info["create_time"] or 0)
    return found


class CpuSampler:
    """CPU seconds per group of processes over a window, from psutil.

    Groups: each service process, PostgreSQL backends by application_name (so by service),
    PostgreSQL's own background processes, Kafka, wrk, py-spy, this process, and "other"
    (the rest of the machine: busy time minus everything named, which includes the kernel's
    softirq work for loopback TCP and anything else running on the machine, listed by name).
    """

    def __init__(self, stack: Stack, extra: dict[str, int] | None = None) -> None:
        self.stack = stack
        self.extra = dict(extra or {})
        self.started_wall = time.time()
        self.started = time.perf_counter()
        self.ended = self.started
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._group: dict[int, str] = {}
        self._backend_app: dict[int, str] = {}
        self._system_first = psutil.cpu_times()
        self._system_last = self._system_first
        self._everything_first = {pid: used for pid, (used, _, _) in _all_cpu().items()}
        self._everything_last: dict[int, tuple[float, str]] = {}
        self._samples = 0

    def add(self, name: str, pid: int) -> None:
        self.extra[name] = pid

    def set_backends(self, pid_to_app: dict[int, str]) -> None:
        self._backend_app.update(pid_to_app)

    def _postmaster(self) -> int | None:
        try:
            return int((self.stack.postgres.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _processes(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for service in SERVICES:
            # The API process (and its uvicorn workers, with WORKERS > 1), then the process of
            # its relay, consumers and timers when those run separately (`threadline work`).
            for name, group in ((service, service), (f"{service}-work", f"{service} (work)")):
                pid = self.stack.service_pid(name)
                if pid is None:
                    continue
                found[pid] = f"service: {group}"
                with contextlib.suppress(psutil.Error):
                    for child in psutil.Process(pid).children(recursive=True):
                        found[child.pid] = f"service: {group}"
        kafka = self.stack.kafka.pid()
        if kafka is not None:
            found[kafka] = "kafka (JVM)"
        for name, pid in self.extra.items():
            found[pid] = name
        postmaster = self._postmaster()
        if postmaster is not None:
            found[postmaster] = "postgres: background"
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(postmaster).children():
                    app = self._backend_app.get(child.pid)
                    if app is not None:
                        found[child.pid] = f"postgres: backends of {app or 'unnamed clients'}"
                    else:
                        title = " ".join(child.cmdline()[:1])
                        background = not title.startswith("postgres: threadline")
                        found[child.pid] = (
                            "postgres: background" if background else "postgres: other backends"
                        )
        return found

    def sample(self) -> None:
        for pid, group in self._processes().items():
            try:
                process = psutil.Process(pid)
                times = process.cpu_times()
                used = times.user + times.system
                created = process.create_time()
            except psutil.Error:
                continue
            if pid not in self._first:
                # A process born during the window counts from zero; one older, from now.
                self._first[pid] = 0.0 if self._samples and created >= self.started_wall else used
            self._last[pid] = used
            self._group[pid] = group
        self._system_last = psutil.cpu_times()
        self.ended = time.perf_counter()
        self._samples += 1
        # Everything else too, each sample, so that short-lived processes (another session's
        # test run, say) are seen before they exit.
        for pid, (used, name, created) in _all_cpu().items():
            if pid not in self._everything_first:
                self._everything_first[pid] = 0.0 if created >= self.started_wall else used
            self._everything_last[pid] = (used, name)

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.sample()

    def report(self) -> dict[str, Any]:
        seconds = max(1e-9, self.ended - self.started)
        per_group: dict[str, float] = defaultdict(float)
        for pid, used in self._last.items():
            per_group[self._group[pid]] += max(0.0, used - self._first[pid])
        first, last = self._system_first, self._system_last
        fields = ("user", "nice", "system", "irq", "softirq", "steal", "iowait")
        system = {
            name: round((getattr(last, name, 0.0) - getattr(first, name, 0.0)) / seconds, 3)
            for name in fields
        }
        busy = sum(value for name, value in system.items() if name != "iowait") * seconds
        named = sum(per_group.values())
        per_group["other (rest of the machine)"] = max(0.0, busy - named)
        untracked: dict[str, float] = defaultdict(float)
        for pid, (used, name) in self._everything_last.items():
            if pid not in self._last:
                untracked[name] += max(0.0, used - self._everything_first.get(pid, used))
        cores = psutil.cpu_count() or 1
        groups = {
            name: {
                "cpu_seconds": round(value, 2),
                "cores": round(value / seconds, 3),
                "share_of_machine_pct": round(100 * value / seconds / cores, 1),
            }
            for name, value in sorted(per_group.items(), key=lambda item: -item[1])
        }
        return {
            "window_s": round(seconds, 2),
            "machine_cores": cores,
            "machine_busy_cores": round(busy / seconds, 3),
            "machine_busy_pct": round(100 * busy / seconds / cores, 1),
            "machine_cores_by_kind": system,
            "groups": groups,
            "other_processes_top": [
                {"cores": round(used / seconds, 3), "processes": name}
                for name, used in sorted(untracked.items(), key=lambda item: -item[1])[:8]
                if used / seconds >= 0.005
            ],
        }


# -- wrk -----------------------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- Generated by bench/ingest.py: POST pre-built referral bodies, each with its client's token.
local bodies = {
%(bodies)s
}
local auths = {
%(auths)s
}
local path = "/v1/referrals"
local run_tag = "%(tag)s"
local use_keys = %(use_keys)s
local counter = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  counter = tid * 7919
end

function request()
  counter = counter + 1
  local i = (counter %% #bodies) + 1
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = auths[i]}
  if use_keys then
    headers["Idempotency-Key"] = run_tag .. "-" .. tid .. "-" .. counter
  end
  return wrk.format("POST", path, headers, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%%.0f,"requests":%%.0f,"bytes":%%.0f,"connect_errors":%%.0f,' ..
    '"read_errors":%%.0f,"write_errors":%%.0f,"non_2xx_3xx":%%.0f,"timeouts":%%.0f,' ..
    '"latency_us":{"min":%%.0f,"mean":%%.1f,"stdev":%%.1f,"max":%%.0f,"p50":%%.0f,' ..
    '"p75":%%.0f,"p90":%%.0f,"p99":%%.0f,"p999":%%.0f}}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


def write_wrk_script(path: Path, bodies: list[Body], tokens: dict[str, str], tag: str) -> None:
    use_keys = _env("IDEMPOTENCY", "1") != "0"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        WRK_SCRIPT
        % {
            "bodies": ",\n".join(f"[==[{body.json}]==]" for body in bodies),
            "auths": ",\n".join(f'"{tokens[body.client_id]}"' for body in bodies),
            "tag": tag,
            "use_keys": "true" if use_keys else "false",
        }
    )


def wrk_command(wrk: str, script: Path, url: str, connections: int, seconds: float) -> list[str]:
    """wrk with its Lua script: at most two threads (two cores), 10 s timeout, latency kept."""
    return [
        wrk,
        "-t",
        str(min(2, connections)),
        "-c",
        str(connections),
        "-d",
        f"{round(seconds)}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]


async def start_wrk(
    wrk: str, script: Path, url: str, connections: int, seconds: float
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *wrk_command(wrk, script, url, connections, seconds),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def finish_wrk(process: asyncio.subprocess.Process, log: Path) -> dict[str, Any]:
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    log.write_text(text)  # noqa: ASYNC240 - a small file, once per run
    match = re.search(r"^WRKJSON (\{.*\})$", text, re.MULTILINE)
    if process.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed (exit {process.returncode}); output in {log}:\n{text}")
    report: dict[str, Any] = json.loads(match.group(1))
    seconds = report["duration_us"] / 1e6
    accepted = report["requests"] - report["non_2xx_3xx"]
    report["seconds"] = round(seconds, 3)
    report["accepted"] = accepted
    report["accepted_per_s"] = round(accepted / seconds, 1)
    report["latency_ms"] = {k: round(v / 1000, 2) for k, v in report.pop("latency_us").items()}
    return report


# -- the stack's side: tokens, counts, the probe ----------------------------------------------


class Tokens:
    """One access token per demo client from the stack's identity service, renewed early."""

    def __init__(self, identity_url: str) -> None:
        self.identity_url = identity_url
        self.headers: dict[str, str] = {}
        self.expires_at = 0.0

    async def refresh(self, *, needed_for: float = 0.0) -> dict[str, str]:
        if time.monotonic() + needed_for + 60 < self.expires_at:
            return self.headers
        async with httpx.AsyncClient(timeout=10.0) as client:
            lifetimes = []
            for client_id in CLIENTS:
                response = await client.post(
                    f"{self.identity_url}/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    auth=(client_id, f"dev-secret-{client_id}"),
                )
                response.raise_for_status()
                token = response.json()
                self.headers[client_id] = f"Bearer {token['access_token']}"
                lifetimes.append(float(token.get("expires_in", 900)))
        self.expires_at = time.monotonic() + min(lifetimes)
        if needed_for + 60 > min(lifetimes):
            raise RuntimeError(f"tokens live {min(lifetimes)} s, less than a run ({needed_for} s)")
        return self.headers


COUNTS_SQL = """
SELECT (SELECT count(*) FROM referrals.referrals) AS accepted,
       (SELECT count(*) FROM referrals.outbox WHERE published_at IS NULL) AS unpublished,
       (SELECT count(*) FROM notifications.inbox_items WHERE kind = 'new_referral') AS consumed
"""


async def counts(connection: asyncpg.Connection) -> dict[str, int]:
    row = await connection.fetchrow(COUNTS_SQL)
    return dict(row)


async def wait_drained(connection: asyncpg.Connection, limit: float) -> float | None:
    """Seconds until every accepted referral has its inbox item (None: not within timeout)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        now = await counts(connection)
        if now["consumed"] >= now["accepted"] and now["unpublished"] == 0:
            return time.perf_counter() - started
        await asyncio.sleep(0.05)
    return None


class Probe:
    """Posts one referral a second and times each until its inbox item exists."""

    def __init__(self, stack: Stack, bodies: list[Body], tokens: Tokens) -> None:
        self.url = stack.url("referrals") + "/v1/referrals"
        self.stack = stack
        self.bodies = bodies
        self.tokens = tokens
        self.api: list[float] = []
        self.e2e: list[float] = []  # from the POST's response to the inbox row
        self.e2e_from_send: list[float] = []
        self.failures: list[str] = []
        self.outstanding: dict[uuid.UUID, tuple[float, float]] = {}
        self.posted = 0
        self.accepted = 0
        self.in_flight = 0

    async def post_loop(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Start one probe POST every ``interval`` seconds, however long each takes."""
        in_flight: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=60.0) as client:
            n = 0
            while not stop.is_set():
                task = asyncio.create_task(
                    self._post_one(client, self.bodies[n % len(self.bodies)])
                )
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                n += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _post_one(self, client: httpx.AsyncClient, body: Body) -> None:
        self.in_flight += 1
        try:
            headers = {
                "Authorization": (await self.tokens.refresh())[body.client_id],
                "Content-Type": "application/json",
                "Idempotency-Key": f"probe-{uuid.uuid4().hex}",
            }
            sent = time.perf_counter()
            try:
                response = await client.post(self.url, content=body.json, headers=headers)
            except httpx.HTTPError as error:
                self.failures.append(repr(error))
                return
            answered = time.perf_counter()
            self.posted += 1
            self.api.append(answered - sent)
            if response.status_code == 201:
                self.accepted += 1
                self.outstanding[uuid.UUID(response.json()["id"])] = (sent, answered)
            else:
                self.failures.append(f"{response.status_code}: {response.text[:200]}")
        finally:
            self.in_flight -= 1

    async def watch_loop(self, stop: asyncio.Event, poll: float = 0.01) -> None:
        """Poll the inbox for outstanding referrals until stopped and none is left."""
        connection = await _connect(self.stack)
        try:
            while not (stop.is_set() and not self.outstanding and not self.in_flight):
                if self.outstanding:
                    found = await connection.fetch(
                        "SELECT referral_id FROM notifications.inbox_items "
                        "WHERE referral_id = ANY($1::uuid[])",
                        list(self.outstanding),
                    )
                    seen = time.perf_counter()
                    for row in found:
                        sent, answered = self.outstanding.pop(row["referral_id"])
                        self.e2e.append(seen - answered)
                        self.e2e_from_send.append(seen - sent)
                await asyncio.sleep(poll)
        finally:
            await connection.close()

    def report(self) -> dict[str, Any]:
        return {
            "posted": self.posted,
            "accepted": self.accepted,
            "unresolved": len(self.outstanding),
            "failures": self.failures[:10],
            "failure_count": len(self.failures),
            "api_ms": _percentiles(self.api),
            "e2e_ms": _percentiles(self.e2e),
            "e2e_from_send_ms": _percentiles(self.e2e_from_send),
            "e2e_samples_ms": [round(value * 1000, 1) for value in self.e2e],
        }


SERVER_E2E_SQL = """
WITH t AS (
  SELECT extract(epoch FROM o.published_at - r.received_at) AS to_kafka,
         extract(epoch FROM i.processed_at - o.published_at) AS to_consumer,
         extract(epoch FROM i.processed_at - r.received_at) AS total
  FROM referrals.referrals r
  JOIN notifications.inbox_items ii ON ii.referral_id = r.id AND ii.kind = 'new_referral'
  JOIN referrals.outbox o ON o.event_id = ii.source_event_id
  JOIN notifications.inbox i ON i.event_id = ii.source_event_id
  WHERE r.received_at >= $1 AND r.received_at < $2
)
SELECT count(*) AS n,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY total) AS total_p50,
  percentile_cont(0.99) WITHIN GROUP (ORDER BY total) AS total_p99,
  max(total) AS total_max,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY to_kafka) AS kafka_p50,
  percentile_cont(0.99) WITHIN GROUP (ORDER BY to_kafka) AS kafka_p99,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY to_consumer) AS consumer_p50,
  percentile_cont(0.99) WITHIN GROUP (ORDER BY to_consumer) AS consumer_p99
FROM t
"""


async def server_side_e2e(
    connection: asyncpg.Connection, start: datetime, end: datetime
) -> dict[str, Any]:
    row = await connection.fetchrow(SERVER_E2E_SQL, start, end)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(float(value) * 1000, 1)

    return {
        "what": (
            "every referral received in the main run: referrals.received_at (request handling "
            "starts) → referrals.outbox.published_at (relay marked it sent) → "
            "notifications.inbox.processed_at (consumer transaction started)"
        ),
        "referrals": row["n"],
        "total_ms": {
            "p50": ms(row["total_p50"]),
            "p99": ms(row["total_p99"]),
            "max": ms(row["total_max"]),
        },
        "received_to_published_ms": {"p50": ms(row["kafka_p50"]), "p99": ms(row["kafka_p99"])},
        "published_to_consumed_ms": {
            "p50": ms(row["consumer_p50"]),
            "p99": ms(row["consumer_p99"]),
        },
    }


# -- the profile -------------------------------------------------------------------------------

THIRD_PARTY = {
    "sqlalchemy", "asyncpg", "pydantic", "pydantic_core", "fastapi", "starlette", "uvicorn",
    "h11", "joserfc", "cryptography", "structlog", "aiokafka", "anyio", "greenlet",
    "prometheus_client", "httpx", "httpcore", "typing_extensions", "annotated_types", "kafka",
    "cloudevents", "dateutil",
}  # fmt: skip
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

DEEPEST = "@deepest"
IDLE_LEAVES = frozenset(
    {"Condition.wait", "Event.wait", "EpollSelector.select", "Queue.get", "sleep", "Thread.join"}
)

# What a referrals sample is *for*: the first rule (in this order) that matches any frame of
# the stack names it. More specific work comes first, so e.g. JSON parsing inside JWT
# verification counts as JWT verification, not as body parsing.
PURPOSE_RULES: list[tuple[str, str, str | None]] = [
    ("outbox relay (claim, publish to Kafka, mark)", "shared/outbox.py", "OutboxRelay."),
    ("timer scheduler (poll due timers)", "shared/timers.py", "TimerScheduler."),
    ("Kafka consumer runner", "shared/consumer.py", "ConsumerRunner."),
    ("readiness/metrics endpoints", "shared/service.py", "ServiceRuntime."),
    ("auth: JWT parse + signature verification", "shared/auth.py", None),
    ("seal: data-key SELECT/INSERT (+ key wrap)", "shared/crypto.py", "Vault._data_key"),
    ("seal: AES-GCM encrypt", "shared/crypto.py", "Vault.seal"),
    ("response: open sealed texts (AES-GCM decrypt)", "services/referrals/", "open_texts"),
    ("response: build ReferralOut (pydantic)", "services/referrals/endpoints.py", "referral_out"),
    ("fingerprint: model_dump + json.dumps + sha256", "services/referrals/", "fingerprint"),
    ("outbox append: envelope + INSERT + pg_notify", "shared/outbox.py", "append"),
    ("event: build ReferralReceived (pydantic)", "services/referrals/", "_received_event"),
    ("timer schedule: INSERT", "shared/timers.py", "schedule"),
    ("ORM: add referral/children/family + 3 flushes", "services/referrals/repository.py",
     "ReferralRepository.add"),
    ("ORM: add sealed texts + flush", "services/referrals/repository.py", "add_texts"),
    ("ORM: reload referral (SELECT + 3 selectin loads)", "services/referrals/repository.py",
     "ReferralRepository.get"),
    ("ORM: SELECT nextval (reference)", "services/referrals/repository.py", "next_number"),
    ("ORM: idempotency-key lookup", "services/referrals/repository.py", "by_idempotency_key"),
    ("savepoint (begin_nested)", "sqlalchemy/", "begin_nested"),
    ("transaction: open / COMMIT (session scope)", "shared/db.py", "transaction"),
    ("transaction: open / COMMIT (session scope)", "shared/service.py", "session_scope"),
    ("response: serialize (pydantic + JSON)", "fastapi/routing.py", "serialize_response"),
    ("response: serialize (pydantic + JSON)", "fastapi/", "jsonable_encoder"),
    ("response: serialize (pydantic + JSON)", "starlette/responses.py", "render"),
    ("request body: pydantic validation", "fastapi/dependencies/utils.py", "request_body_to_args"),
    ("request body: pydantic validation", "fastapi/", "_validate_value"),
    ("request body: read + JSON decode", "json/", "loads"),
    ("request body: read + JSON decode", "starlette/requests.py", "body"),
    ("sync dependencies run in anyio's thread pool", "starlette/", "run_in_threadpool"),
    ("sync dependencies run in anyio's thread pool", "anyio/", None),
    ("FastAPI dependency resolution", "fastapi/dependencies/utils.py", "solve_dependencies"),
    ("logging (structlog)", "structlog/", None),
    # Anything else in the service's own code, named by its deepest frame (e.g. deadlines).
    (DEEPEST, "services/referrals/", None),
    ("correlation-id middleware", "shared/http.py", None),
    ("error handlers", "shared/errors.py", None),
    ("FastAPI/Starlette routing + middleware", "fastapi/", None),
    ("FastAPI/Starlette routing + middleware", "starlette/", None),
    ("HTTP protocol: uvicorn + h11 parse/write", "uvicorn/", None),
    ("HTTP protocol: uvicorn + h11 parse/write", "h11/", None),
    ("Kafka client internals (aiokafka)", "aiokafka/", None),
    ("asyncio event loop (scheduling, sockets)", "asyncio/", None),
]  # fmt: skip

NOTIFICATIONS_RULES: list[tuple[str, str, str | None]] = [
    ("outbox relay", "shared/outbox.py", "OutboxRelay."),
    ("timer scheduler", "shared/timers.py", "TimerScheduler."),
    ("consumer: decode envelope/event", "shared/events/", None),
    ("consumer: handler (build + INSERT inbox item)", "services/notifications/", None),
    ("consumer: inbox INSERT + transaction + commit", "shared/consumer.py", "Runner._apply"),
    ("consumer: fetch + commit offsets", "shared/consumer.py", None),
    ("Kafka client internals (aiokafka)", "aiokafka/", None),
    ("HTTP (uvicorn/starlette)", "uvicorn/", None),
    ("asyncio event loop", "asyncio/", None),
]  # fmt: skip


def _parse_frame(frame: str) -> tuple[str, str]:
    match = FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["func"], match["file"]


def _package(file: str) -> str:
    top = file.split("/", 1)[0].removesuffix(".py")
    if top == "sqlalchemy":
        part = file.split("/")[1] if "/" in file else ""
        return f"sqlalchemy.{part}" if part in ("orm", "sql", "engine", "ext", "dialects") else top
    if top in ("services", "shared"):
        return "threadline (services/, shared/)"
    if top in THIRD_PARTY:
        return top
    return f"stdlib: {top}" if top else "unknown"


THREAD = re.compile(r"^thread \((?P<tid>\d+)\): (?P<name>.*)$")


def _stack_label(frames: list[tuple[str, str]], rules: list[tuple[str, str, str | None]]) -> str:
    if not frames:
        return "unreadable sample (no Python frames)"
    for name, file_part, func_part in rules:
        hits = [
            (func, file)
            for func, file in frames
            if file_part in file and (func_part is None or func_part in func)
        ]
        if hits:
            if name == DEEPEST:
                func, file = hits[-1]
                return f"{func} ({file}), not matched above"
            return name
    root_func, root_file = frames[0]
    if root_file.startswith("sqlalchemy/"):
        # SQLAlchemy's asyncio layer runs the sync ORM inside a greenlet, whose frames do not
        # link back to the awaiting coroutine: the caller (which repository call) is not visible.
        if root_func.startswith(("Session.", "TransactionalContext.")):
            return f"SQLAlchemy sync layer in a greenlet, caller not visible: {root_func}"
        return "SQLAlchemy sync layer in a greenlet, stack only partly read"
    if root_file.startswith("asyncpg/"):
        return "asyncpg, stack only partly read"
    return f"other: {root_func} ({root_file})"


def summarise_profile(raw: Path, rules: list[tuple[str, str, str | None]]) -> dict[str, Any]:
    stacks: list[tuple[str, list[tuple[str, str]], int]] = []
    for line in raw.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        frames_text, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        parts = frames_text.split(";")
        thread = "MainThread"
        match = THREAD.match(parts[0])
        if match is not None:
            thread, parts = match["name"], parts[1:]
        frames = [_parse_frame(frame) for frame in parts if frame.strip()]
        stacks.append((thread, frames, n))
    purpose: Counter[str] = Counter()
    library: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    idle = unreadable = 0
    for thread, frames, n in stacks:
        if not frames:
            unreadable += n  # --nonblocking reads can race the interpreter: no frames at all
            continue
        if frames[-1][0] in IDLE_LEAVES:
            idle += n  # py-spy's idle detection misses some waits here: drop them by their leaf
            continue
        threads[re.sub(r"[ _-]?\d+$", "", thread)] += n
        if thread != "MainThread":
            leaf = frames[-1][0] if frames else "?"
            purpose[f"thread {re.sub(r'[ _-]?[0-9]+$', '', thread)!r}: {leaf}"] += n
        else:
            purpose[_stack_label(frames, rules)] += n
        if not frames:
            continue
        leaf_func, leaf_file = frames[-1]
        library[_package(leaf_file)] += n
        self_time[f"{leaf_func} ({leaf_file})"] += n
        for key in {f"{func} ({file})" for func, file in frames}:
            inclusive[key] += n
    sqlalchemy = sum(n for key, n in library.items() if key.startswith("sqlalchemy"))
    total = sum(threads.values())

    def pct(counter: Counter[str], top: int) -> list[tuple[str, float]]:
        return [(key, round(100 * n / total, 1)) for key, n in counter.most_common(top)]

    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "unreadable_samples_dropped": unreadable,
        "threads_pct": pct(threads, 10),
        "by_purpose_pct": pct(purpose, 60),
        "by_package_self_pct": pct(library, 25),
        "sqlalchemy_self_pct": round(100 * sqlalchemy / max(1, total), 1),
        "top_self_pct": pct(self_time, 30),
        "top_inclusive_pct": pct(inclusive, 50),
    }


def format_profile(name: str, summary: dict[str, Any], meta: dict[str, Any]) -> str:
    expected = max(1, meta["rate"] * meta["seconds"])
    lines = [
        f"== {name} ==",
        f"py-spy record --threads --nonblocking --rate {meta['rate']} for {meta['seconds']} s "
        "during the main "
        f"load ({meta['connections']} connections): {summary['samples']} samples of threads on "
        f"CPU out of {expected} ticks (≈ {summary['samples'] / expected:.2f} cores of Python; "
        f"{summary['idle_samples_dropped']} samples of threads waiting on a lock, a queue or "
        f"epoll and {summary['unreadable_samples_dropped']} unreadable samples were dropped).",
        "Percentages are of those samples, i.e. of this process's Python CPU time (time inside C "
        "extensions such as pydantic-core, asyncpg's protocol or OpenSSL counts for the Python "
        "line that called them).",
        "",
        "-- threads: " + ", ".join(f"{key} {value}%" for key, value in summary["threads_pct"]),
        "",
        "-- what the CPU is spent for (first matching rule, see PURPOSE_RULES in bench/ingest.py;",
        "   SQLAlchemy's sync layer runs in greenlets whose callers py-spy cannot see, so those",
        "   samples are labelled by the Session method that was running)",
    ]
    lines += [f"{value:6.1f}%  {key}" for key, value in summary["by_purpose_pct"]]
    lines += [
        "",
        f"-- self time by package (the leaf frame's); SQLAlchemy, all modules: "
        f"{summary['sqlalchemy_self_pct']}%",
    ]
    lines += [f"{value:6.1f}%  {key}" for key, value in summary["by_package_self_pct"]]
    lines += ["", "-- top functions, self time"]
    lines += [f"{value:6.1f}%  {key}" for key, value in summary["top_self_pct"]]
    lines += ["", "-- top functions, inclusive time (on the stack)"]
    lines += [f"{value:6.1f}%  {key}" for key, value in summary["top_inclusive_pct"]]
    return "\n".join(lines) + "\n"


def py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


# -- the load ------------------------------------------------------------------------------------


async def backend_apps(connection: asyncpg.Connection) -> dict[int, str]:
    rows = await connection.fetch(
        "SELECT pid, application_name FROM pg_stat_activity WHERE backend_type = 'client backend'"
    )
    return {row["pid"]: row["application_name"] for row in rows}


async def measure_load(
    stack: Stack,
    *,
    wrk: str,
    bodies: list[Body],
    probe_bodies: list[Body],
    tokens: Tokens,
    connections: int,
    seconds: float,
    label: str,
    work_dir: Path,
    profile: bool,
    probe: bool,
) -> dict[str, Any]:
    """One wrk run, with (optionally) the e2e probe, CPU sampling and py-spy beside it."""
    url = stack.url("referrals")
    headers = await tokens.refresh(needed_for=seconds + 120)
    script = work_dir / f"wrk-{label}.lua"
    write_wrk_script(script, bodies, headers, f"{label}-{int(time.time())}")
    db = await _connect(stack)
    before = await counts(db)
    batching_before = await group_commit_stats(url)
    started_at = datetime.now(UTC)
    process = await start_wrk(wrk, script, url, connections, seconds)
    cpu = CpuSampler(stack, extra={"wrk (load generator)": process.pid})
    cpu.add("bench (probe, sampler)", os.getpid())
    cpu.set_backends(await backend_apps(db))
    cpu.sample()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    series: list[dict[str, Any]] = []

    async def sample_loop() -> None:
        t0 = time.perf_counter()
        while True:
            await asyncio.sleep(1.0)
            cpu.set_backends(await backend_apps(db))
            cpu.sample()
            series.append({"t": round(time.perf_counter() - t0, 1), **(await counts(db))})

    tasks.append(asyncio.create_task(sample_loop()))
    prober = Probe(stack, probe_bodies, tokens) if probe else None
    if prober is not None:
        posting = asyncio.create_task(prober.post_loop(stop))
        watcher = asyncio.create_task(prober.watch_loop(stop))
    spies: dict[str, tuple[asyncio.subprocess.Process, Path]] = {}
    spy = py_spy() if profile else None
    spy_seconds = max(3, int(seconds) - 6)
    spy_rate = 50
    if spy is not None:
        await asyncio.sleep(3.0)  # past the ramp-up
        for service in ("referrals", "notifications"):
            pid = stack.service_pid(service)
            if pid is None:
                continue
            out = work_dir / f"profile-{service}.raw"
            spies[service] = (
                await asyncio.create_subprocess_exec(
                    spy, "record", "--pid", str(pid), "--rate", str(spy_rate), "--threads",
                    "--nonblocking", "--duration", str(spy_seconds), "--format", "raw",
                    "-o", str(out),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                ),
                out,
            )  # fmt: skip
            cpu.add(f"py-spy (profiling {service})", spies[service][0].pid)
    report = await finish_wrk(process, work_dir / f"wrk-{label}.txt")
    ended_at = datetime.now(UTC)
    batching_after = await group_commit_stats(url)
    cpu.sample()
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    at_end = await counts(db)
    spy_output: dict[str, Any] = {}
    for service, (spy_process, out) in spies.items():
        text, _ = await spy_process.communicate()
        spy_output[service] = {"raw": out, "log": text.decode(errors="replace")[-500:]}
    drain = await wait_drained(db, limit=300.0)
    if prober is not None:
        # Probe POSTs still in flight when the load stopped finish, then are watched to the end.
        for task in (posting, watcher):
            with contextlib.suppress(TimeoutError):  # what is left is reported as unresolved
                await asyncio.wait_for(task, timeout=60.0)
    after = await counts(db)
    server_e2e = await server_side_e2e(db, started_at, ended_at)
    real_sizes = await db.fetchrow(
        "SELECT avg(pg_column_size(data))::int AS data, "
        "avg(pg_column_size(attributes))::int AS attributes FROM referrals.outbox"
    )
    rows_written = await rows_per_referral(db)
    await db.close()
    result: dict[str, Any] = {
        "label": label,
        "connections": connections,
        "wrk_threads": min(2, connections),
        "wrk": report,
        "accepted_per_s": report["accepted_per_s"],
        "api_ms": report["latency_ms"],
        "db_counts": {"before": before, "at_load_end": at_end, "after_drain": after},
        "db_accepted_during_load": at_end["accepted"] - before["accepted"],
        "backlog_at_load_end": {
            "outbox_unpublished": at_end["unpublished"],
            "not_yet_in_inbox": at_end["accepted"] - at_end["consumed"],
        },
        "backlog_drain_s": None if drain is None else round(drain, 3),
        "server_e2e": server_e2e,
        "outbox_bytes": dict(real_sizes),
        "service_rows_per_referral": rows_written,
        "cpu": cpu.report(),
        "series": series,
        "group_commit": _batching(batching_before, batching_after),
    }
    if prober is not None:
        result["probe"] = prober.report()
    if spy_output:
        result["profile"] = {
            "rate_hz": spy_rate,
            "seconds": spy_seconds,
            "raw_files": {k: str(v["raw"]) for k, v in spy_output.items()},
            "_raw": {k: v["raw"] for k, v in spy_output.items()},
            "log": {k: v["log"] for k, v in spy_output.items()},
        }
    return result


async def group_commit_stats(url: str) -> dict[str, float]:
    """The referral intake writer's counters from /metrics (of whichever worker answers)."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        text = (await client.get(f"{url}/metrics")).text
    stats: dict[str, float] = {}
    for line in text.splitlines():
        if 'writer="referral-intake"' not in line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        for key in ("batches_total", "items_total", "largest_batch"):
            if name.startswith(f"threadline_group_commit_{key}"):
                stats[key] = float(value)
    return stats


def _batching(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    batches = after.get("batches_total", 0.0) - before.get("batches_total", 0.0)
    items = after.get("items_total", 0.0) - before.get("items_total", 0.0)
    return {
        "note": "one worker's writer (with several workers, the one /metrics reached)",
        "transactions": int(batches),
        "referrals": int(items),
        "mean_referrals_per_transaction": round(items / batches, 1) if batches else None,
        "largest": int(after.get("largest_batch", 0.0)),
    }


async def rows_per_referral(connection: asyncpg.Connection) -> dict[str, float]:
    """Rows in each referrals table per referral so far: what the service writes per POST."""
    tables = await connection.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'referrals' ORDER BY tablename"
    )
    referrals = await connection.fetchval("SELECT count(*) FROM referrals.referrals") or 1
    rows: dict[str, float] = {}
    for table in tables:
        name = table["tablename"]
        count = await connection.fetchval(f'SELECT count(*) FROM referrals."{name}"')
        if count:
            rows[name] = round(count / referrals, 2)
    rows["total"] = round(sum(rows.values()), 2)
    return rows


def choose_connections(sweep: list[dict[str, Any]]) -> int:
    """Most accepted/s with p99 within target; if none meets it, the fewest connections within
    10% of the best throughput (more connections would only queue; 10% is this shared
    machine's run-to-run noise)."""
    within = [run for run in sweep if run["api_ms"]["p99"] <= TARGETS["api_p99_ms"]]
    if within:
        return int(max(within, key=lambda run: run["accepted_per_s"])["connections"])
    best = max(run["accepted_per_s"] for run in sweep)
    close = [run for run in sweep if run["accepted_per_s"] >= 0.90 * best]
    return int(min(close, key=lambda run: run["connections"])["connections"])


async def warm_up(stack: Stack, bodies: list[Body], tokens: Tokens, n: int = 20) -> None:
    """Connections, caches, JWKS and the consumer group's first join, before anything counts."""
    headers = await tokens.refresh()
    url = stack.url("referrals") + "/v1/referrals"
    async with httpx.AsyncClient(timeout=30.0) as client:
        for i in range(n):
            body = bodies[i % len(bodies)]
            response = await client.post(
                url,
                content=body.json,
                headers={
                    "Authorization": headers[body.client_id],
                    "Content-Type": "application/json",
                    "Idempotency-Key": f"warmup-{uuid.uuid4().hex}",
                },
            )
            if response.status_code != 201:
                raise RuntimeError(
                    f"warm-up referral refused: {response.status_code} {response.text}"
                )
    db = await _connect(stack)
    try:
        if await wait_drained(db, limit=120.0) is None:
            raise RuntimeError("warm-up referrals never reached the notifications inbox")
    finally:
        await db.close()


LOG_LINE = re.compile(
    r"^(?P<app>[^|\n]*)\|(?P<pid>\d+)\| LOG:  (?:statement|execute [^:]*): (?P<sql>.*)$"
)
LOG_ANY = re.compile(r"^[^|\n]*\|\d+\| ")


def _statement_kind(sql: str) -> str:
    words = sql.split(None, 1)
    word = words[0].upper().rstrip(";") if words else "?"
    if word in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"):
        return word
    for special in ("pg_notify", "nextval", "pg_try_advisory_lock"):
        if special in sql:
            return f"SELECT {special}"
    match = re.search(r"\bFROM\s+(\w+\.\w+)", sql) if word == "SELECT" else None
    if match is None:
        match = re.search(r"\b(?:INTO|UPDATE|FROM)\s+(\w+\.\w+)", sql)
    if match is None:
        match = re.search(r"\b((?:referrals|notifications|consent)\.\w+)", sql)
    return f"{word} {match.group(1)}" if match else word


def _transaction_role(kinds: list[str]) -> str:
    if set(kinds) <= {"BEGIN", "ROLLBACK"}:
        # SQLAlchemy's asyncpg dialect pings a pooled connection (pool_pre_ping=True) with
        # BEGIN; ";" (not logged, empty); ROLLBACK: three round trips per checkout.
        return "pool pre-ping on checkout (BEGIN, empty query, ROLLBACK)"
    joined = " ".join(kinds)
    if "INSERT referrals.referrals" in joined:
        return "POST /v1/referrals request"
    if "UPDATE referrals.outbox" in joined or "UPDATE notifications.outbox" in joined:
        return "outbox relay"
    if "INSERT notifications.inbox" in joined:
        return "notifications consumer"
    if ".timers" in joined:
        return "timer scheduler"
    return "other: " + ", ".join(sorted(set(kinds)))[:120]


def parse_statement_log(text: str, posts: int) -> dict[str, Any]:
    """Group logged statements into transactions per backend, and count them per POST."""
    statements: list[tuple[str, int, str]] = []
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match is not None:
            statements.append((match["app"], int(match["pid"]), match["sql"]))
        elif statements and not LOG_ANY.match(line):
            app, pid, sql = statements[-1]
            statements[-1] = (app, pid, sql + " " + line.strip())  # a continuation line
    open_transactions: dict[int, tuple[str, list[str]]] = {}
    closed: list[tuple[str, list[str]]] = []
    for app, pid, sql in statements:
        if not app.startswith("threadline-"):
            continue
        kind = _statement_kind(sql)
        if kind == "BEGIN":
            if pid in open_transactions:
                closed.append(open_transactions.pop(pid))
            open_transactions[pid] = (app, [kind])
        elif pid in open_transactions:
            open_transactions[pid][1].append(kind)
            if kind in ("COMMIT", "ROLLBACK"):
                closed.append(open_transactions.pop(pid))
        else:
            closed.append((app, [kind]))  # autocommit
    closed.extend(open_transactions.values())
    roles: dict[str, dict[str, Any]] = {}
    for app, kinds in closed:
        role = f"{app.removeprefix('threadline-')}: {_transaction_role(kinds)}"
        entry = roles.setdefault(role, {"transactions": 0, "statements": 0, "kinds": Counter()})
        entry["transactions"] += 1
        entry["statements"] += len(kinds)
        entry["kinds"].update(kinds)
    per_post = max(1, posts)
    return {
        role: {
            "transactions_per_post": round(entry["transactions"] / per_post, 2),
            "statements_per_post": round(entry["statements"] / per_post, 2),
            "statements_per_transaction": round(entry["statements"] / entry["transactions"], 1),
            "kinds_per_post": {
                kind: round(count / per_post, 2) for kind, count in entry["kinds"].most_common()
            },
        }
        for role, entry in sorted(roles.items(), key=lambda item: -item[1]["statements"])
    }


async def statement_anatomy(
    stack: Stack, bodies: list[Body], tokens: Tokens, posts: int = 20
) -> dict[str, Any]:
    """POST ``posts`` referrals one at a time with PostgreSQL logging every statement: the SQL
    each POST costs (and the relay's and consumer's share), and the latency with no queue."""
    log = stack.log_dir / "postgres.log"
    admin = await _connect(stack)
    latencies: list[float] = []
    try:
        await admin.execute("ALTER SYSTEM SET log_statement = 'all'")
        await admin.execute("ALTER SYSTEM SET log_line_prefix = '%a|%p| '")
        await admin.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(1.0)
        offset = log.stat().st_size
        headers = await tokens.refresh()
        url = stack.url("referrals") + "/v1/referrals"
        async with httpx.AsyncClient(timeout=30.0) as client:
            for n in range(posts):
                body = bodies[n % len(bodies)]
                started = time.perf_counter()
                response = await client.post(
                    url,
                    content=body.json,
                    headers={
                        "Authorization": headers[body.client_id],
                        "Content-Type": "application/json",
                        "Idempotency-Key": f"anatomy-{uuid.uuid4().hex}",
                    },
                )
                latencies.append(time.perf_counter() - started)
                if response.status_code != 201:
                    raise RuntimeError(f"referral refused: {response.status_code} {response.text}")
                await asyncio.sleep(0.05)
        await wait_drained(admin, limit=60.0)
        await asyncio.sleep(0.5)
    finally:
        await admin.execute("ALTER SYSTEM RESET log_statement")
        await admin.execute("ALTER SYSTEM RESET log_line_prefix")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()
    await asyncio.sleep(0.5)
    with log.open("rb") as file:
        file.seek(offset)
        text = file.read().decode(errors="replace")
    return {
        "posts": posts,
        "unloaded_api_ms": _percentiles(latencies),
        "sql_per_post": parse_statement_log(text, posts),
    }


async def run_load(stack: Stack, *, wrk: str, quick: bool, work_dir: Path) -> dict[str, Any]:
    tokens = Tokens(stack.url("identity"))
    bodies = make_bodies(96, seed=1)
    probe_bodies = make_bodies(16, seed=2)
    await warm_up(stack, probe_bodies, tokens)
    anatomy = await statement_anatomy(stack, probe_bodies, tokens)
    seconds = float(_env("SECONDS", "15" if quick else "60"))
    configured = _env("CONNECTIONS", "16" if quick else "8,16,32,64")
    candidates = [int(part) for part in configured.split(",") if part.strip()]
    sweep: list[dict[str, Any]] = []
    if len(candidates) > 1:
        db = await _connect(stack)
        for connections in candidates:
            run = await measure_load(
                stack, wrk=wrk, bodies=bodies, probe_bodies=probe_bodies, tokens=tokens,
                connections=connections, seconds=10, label=f"sweep-c{connections}",
                work_dir=work_dir, profile=False, probe=False,
            )  # fmt: skip
            sweep.append(
                {
                    "connections": connections,
                    "accepted_per_s": run["accepted_per_s"],
                    "api_ms": run["api_ms"],
                    "non_2xx": run["wrk"]["non_2xx_3xx"],
                    "socket_errors": run["wrk"]["connect_errors"]
                    + run["wrk"]["read_errors"]
                    + run["wrk"]["write_errors"]
                    + run["wrk"]["timeouts"],
                    "backlog_drain_s": run["backlog_drain_s"],
                    "server_e2e_ms": run["server_e2e"]["total_ms"],
                    "received_to_published_ms": run["server_e2e"]["received_to_published_ms"],
                    "referrals_cpu_cores": run["cpu"]["groups"]
                    .get("service: referrals", {})
                    .get("cores"),
                }
            )
            await wait_drained(db, limit=120.0)
        await db.close()
        chosen = choose_connections(sweep)
    else:
        chosen = candidates[0]
    main = await measure_load(
        stack, wrk=wrk, bodies=bodies, probe_bodies=probe_bodies, tokens=tokens,
        connections=chosen, seconds=seconds, label="main", work_dir=work_dir,
        profile=_env("PROFILE", "1") != "0", probe=True,
    )  # fmt: skip
    sizes = [len(body.json) for body in bodies]
    narrative = [
        len(body.data["concern"]["what_happened"]) + len(body.data["concern"]["actions_taken"])
        for body in bodies
    ]
    return {
        "bodies": {
            "distinct": len(bodies),
            "json_bytes": {
                "min": min(sizes), "mean": round(statistics.fmean(sizes)), "max": max(sizes),
            },
            "narrative_chars": {
                "min": min(narrative), "mean": round(statistics.fmean(narrative)),
                "max": max(narrative),
            },
            "shape": "2 children (NHS number, UPN, address, school; own_words for one), "
            "3 family members each related to both children, what_happened 1.1-1.9 KB, "
            "actions_taken 0.25-0.5 KB",
            "idempotency_key": "unique per request" if _env("IDEMPOTENCY", "1") != "0" else "none",
            "clients": list(CLIENTS),
        },
        "anatomy": anatomy,
        "sweep": sweep,
        "chosen_connections": chosen,
        "main": main,
    }  # fmt: skip


# -- the benchmark -------------------------------------------------------------------------------


def _stack() -> Stack:
    # fsync stays on: measure as a real deployment runs.
    return Stack.isolated("ingest", base_port=BASE, durable=True)


def run(*, quick: bool = False) -> dict[str, Any]:
    wrk = require_wrk()
    # This measures capacity, not the per-client limit (100 requests/s by default): four clients
    # at 1,000 referrals/s would each be over it.
    os.environ.setdefault("THREADLINE_RATE_LIMIT_PER_SECOND", "1000000")
    os.environ.setdefault("THREADLINE_RATE_LIMIT_BURST", "1000000")
    # As docs/operations.md advises under load: the referrals API processes serve requests only,
    # and a `threadline work referrals` process beside them runs the outbox relay and timers, so
    # the relay never waits behind requests on the API's event loop. Measured 23 November 2026
    # at 8 connections: received → published p50 340 ms in one process, 46 ms with two.
    os.environ.setdefault("THREADLINE_REFERRALS_BACKGROUND", "separate")
    stack = _stack()
    work_dir = stack.state_dir / "bench"
    stack.stop_services()
    stack.wipe()
    shutil.rmtree(stack.log_dir, ignore_errors=True)
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    stack.start_infrastructure()
    try:
        for service in MIGRATED:
            upgrade(service, stack.database_url)
        asyncio.run(ensure_topics(stack.kafka.bootstrap_servers))
        ceiling = asyncio.run(
            run_ceiling(
                stack,
                make_bodies(96, seed=1),
                seconds=float(_env("CEILING_SECONDS", "5" if quick else "15")),
                connections=int(_env("CEILING_CONNECTIONS", "8")),
            )
        )
        # Intake and the downstream consumer that the end-to-end time is measured to. The other
        # consumers of referral.received (consent records, linking) would share these two cores
        # and are measured by their own benchmarks (bench/consent.py, bench/linking.py).
        stack.start_services(INTAKE_SERVICES)
        load = asyncio.run(run_load(stack, wrk=wrk, quick=quick, work_dir=work_dir))
    finally:
        stack.stop_services()
        stack.stop_infrastructure()
    return build_result(load, ceiling, quick=quick)


def code_version() -> dict[str, Any]:
    """Which code was measured: the commit, and the files that differed from it (the working
    tree is measured as it is, including others' uncommitted changes)."""
    import subprocess

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=Path(__file__).parents[1], capture_output=True, text=True
        )
        return result.stdout.rstrip("\n")

    changed = git("status", "--porcelain", "--", "services", "shared", "deploy", "config")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted_changes": [line[3:] for line in changed.splitlines()],
    }


def build_result(load: dict[str, Any], ceiling: dict[str, Any], *, quick: bool) -> dict[str, Any]:
    main = load["main"]
    probe = main.get("probe", {})
    e2e = probe.get("e2e_ms", {})
    cpu = main["cpu"]
    profile_meta = main.pop("profile", None)
    profile_text = ""
    if profile_meta is not None:
        parts = []
        for service, raw in profile_meta.pop("_raw").items():
            if not raw.exists():
                parts.append(
                    f"== {service} ==\npy-spy wrote nothing: {profile_meta['log'][service]}\n"
                )
                continue
            rules = PURPOSE_RULES if service == "referrals" else NOTIFICATIONS_RULES
            summary = summarise_profile(raw, rules)
            meta = {"rate": profile_meta["rate_hz"], "seconds": profile_meta["seconds"],
                    "connections": main["connections"]}  # fmt: skip
            parts.append(format_profile(f"{service} service process", summary, meta))
            profile_meta[f"{service}_by_purpose_pct"] = summary["by_purpose_pct"][:15]
        header = (
            f"bench/ingest.py profile, {datetime.now(UTC).isoformat(timespec='seconds')}, "
            f"{'quick' if quick else 'full'} run; raw stacks in var/ingest/bench/profile-*.raw\n"
            "CPU per process during the same load (1.00 core = one of the machine's cores):\n"
            + "".join(
                f"  {group['cores']:5.2f} cores {group['share_of_machine_pct']:5.1f}%  {name}\n"
                for name, group in cpu["groups"].items()
            )
            + f"  machine busy: {cpu['machine_busy_cores']:.2f} of {cpu['machine_cores']} cores\n\n"
        )
        profile_text = header + "\n".join(parts)
        RESULTS.mkdir(parents=True, exist_ok=True)
        PROFILE_FILE.write_text(profile_text)
        profile_meta["summary_file"] = str(PROFILE_FILE.relative_to(PROFILE_FILE.parents[2]))
    rate = main["accepted_per_s"]
    api = main["api_ms"]
    e2e_p99 = e2e.get("p99")
    ceiling_rate = ceiling["referrals_per_s"]
    table: dict[str, tuple[Any, str]] = {
        "accepted referrals/s": (
            rate,
            f"referrals/s   target ≥ {TARGETS['referrals_per_s']:.0f}  "
            f"{_mark(rate, TARGETS['referrals_per_s'], at_least=True)}",
        ),
        "API latency p50": (api["p50"], "ms"),
        "API latency p99": (
            api["p99"],
            f"ms            target ≤ {TARGETS['api_p99_ms']:.0f}  "
            f"{_mark(api['p99'], TARGETS['api_p99_ms'], at_least=False)}",
        ),
        "end to end (POST → inbox row) p50": (e2e.get("p50"), "ms"),
        "end to end (POST → inbox row) p99": (
            e2e_p99,
            f"ms            target ≤ {TARGETS['e2e_p99_ms']:.0f}  "
            f"{_mark(e2e_p99, TARGETS['e2e_p99_ms'], at_least=False)}",
        ),
        "end to end, from sending the POST, p99": (
            probe.get("e2e_from_send_ms", {}).get("p99"),
            "ms",
        ),
        "every referral (server): received → relay marked sent p50": (
            main["server_e2e"]["received_to_published_ms"]["p50"],
            "ms",
        ),
        "every referral (server): received → consumed p99": (
            main["server_e2e"]["total_ms"]["p99"],
            "ms",
        ),
        "backlog drain after the load": (main["backlog_drain_s"], "s"),
        "ceiling: raw PostgreSQL inserts": (ceiling_rate, "referrals/s"),
        "ceiling: raw PostgreSQL table rows": (ceiling["table_rows_per_s"], "rows/s"),
        "intake as share of ceiling": (round(100 * rate / ceiling_rate, 1), "%"),
        "connections (wrk)": (main["connections"], "count"),
        "non-2xx responses + socket errors": (
            main["wrk"]["non_2xx_3xx"]
            + main["wrk"]["connect_errors"]
            + main["wrk"]["read_errors"]
            + main["wrk"]["write_errors"]
            + main["wrk"]["timeouts"],
            "count",
        ),
        "duration": (main["wrk"]["seconds"], "s"),
    }
    for name in (
        "service: referrals",
        "service: referrals (work)",
        "service: notifications",
        "kafka (JVM)",
        "wrk (load generator)",
    ):
        group = cpu["groups"].get(name)
        if group is not None:
            table[f"CPU {name}"] = (group["cores"], "cores")
    postgres = sum(g["cores"] for n, g in cpu["groups"].items() if n.startswith("postgres"))
    table["CPU postgres (all processes)"] = (round(postgres, 2), "cores")
    other = cpu["groups"].get("other (rest of the machine)", {}).get("cores", 0.0)
    table["CPU rest of the machine (not this stack)"] = (other, "cores")
    table["CPU machine busy"] = (cpu["machine_busy_cores"], f"of {cpu['machine_cores']} cores")
    warnings = []
    if other > 0.15:
        warnings.append(
            f"other processes took {other:.2f} cores during the main run "
            f"({', '.join(p['processes'] for p in cpu['other_processes_top'][:3])}): "
            "the machine was shared, so throughput is understated; run again on a quiet machine"
        )
    for name, variant in ceiling["variants"].items():
        taken = variant["cpu"]["groups"].get("other (rest of the machine)", {}).get("cores", 0.0)
        if taken > 0.15:
            warnings.append(
                f"other processes took {taken:.2f} cores during the {name} ceiling: it is "
                "understated"
            )
    same = [run for run in load["sweep"] if run["connections"] == main["connections"]]
    if same and same[0]["accepted_per_s"]:
        # The sweep ran the same load without the probe and py-spy: what they may cost.
        main["vs_sweep_same_connections_pct"] = round(
            100 * (rate / same[0]["accepted_per_s"] - 1), 1
        )
    for warning in warnings:
        print(f"ingest: warning: {warning}", file=sys.stderr)
    accepted = max(1, main["db_accepted_during_load"])
    cpu_ms_per_referral = {
        name: round(group["cpu_seconds"] * 1000 / accepted, 2)
        for name, group in cpu["groups"].items()
    }
    main["cpu_ms_per_referral"] = cpu_ms_per_referral
    table["CPU per referral, referrals processes"] = (
        round(
            sum(
                cpu_ms_per_referral.get(name, 0.0)
                for name in ("service: referrals", "service: referrals (work)")
            ),
            2,
        ),
        "ms",
    )
    request = load["anatomy"]["sql_per_post"].get("referrals: POST /v1/referrals request")
    if request is not None:
        table["SQL statements per POST (incl. BEGIN/COMMIT)"] = (
            request["statements_per_post"],
            "count",
        )
    batching = main.get("group_commit", {})
    if batching.get("mean_referrals_per_transaction") is not None:
        table["referrals per intake transaction (group commit)"] = (
            batching["mean_referrals_per_transaction"],
            "mean",
        )
    table["API latency, one client, no queue, p50"] = (
        load["anatomy"]["unloaded_api_ms"]["p50"],
        "ms",
    )
    return {
        "benchmark": "ingest",
        "mode": "quick" if quick else "full",
        "referrals_per_s": rate,
        "api_p50_ms": api["p50"],
        "api_p99_ms": api["p99"],
        "e2e_p50_ms": e2e.get("p50"),
        "e2e_p99_ms": e2e_p99,
        "ceiling_rows_per_s": ceiling_rate,
        "ceiling_table_rows_per_s": ceiling["table_rows_per_s"],
        "duration_s": main["wrk"]["seconds"],
        "targets": {
            "referrals_per_s": f">= {TARGETS['referrals_per_s']:.0f}",
            "api_p99_ms": f"<= {TARGETS['api_p99_ms']:.0f}",
            "e2e_p99_ms": f"<= {TARGETS['e2e_p99_ms']:.0f}",
        },
        "verdict": {
            "referrals_per_s": _mark(rate, TARGETS["referrals_per_s"], at_least=True),
            "api_p99_ms": _mark(api["p99"], TARGETS["api_p99_ms"], at_least=False),
            "e2e_p99_ms": _mark(e2e_p99, TARGETS["e2e_p99_ms"], at_least=False),
        },
        "warnings": warnings,
        "connections": main["connections"],
        "non_2xx": main["wrk"]["non_2xx_3xx"],
        "services_running": list(INTAKE_SERVICES),
        "background": {
            service: os.environ.get(f"THREADLINE_{service.upper()}_BACKGROUND", "in-process")
            for service in INTAKE_SERVICES
        },
        "load_generator": "wrk 4.1 (-t 2, keep-alive, Lua script rotating pre-built bodies and "
        "per-client bearer tokens, a unique Idempotency-Key per request)",
        "code": code_version(),
        "bodies": load["bodies"],
        "per_post": load["anatomy"],
        "sweep": load["sweep"],
        "intake": main,
        "ceiling": ceiling,
        "profile": profile_meta,
        "table": table,
    }
