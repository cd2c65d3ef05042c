"""A small synthetic demo partnership, posted through the public API like any agency would.

Every name here is invented. Each agency authenticates with its own demo client of the
development identity provider (config/identity/dev-clients.toml). Each referral carries a fixed
Idempotency-Key, so seeding twice creates nothing new.
"""

from __future__ import annotations

import json
import os
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx

# The demo clients' secrets; in a container the file is at THREADLINE_IDENTITY_CLIENTS_FILE.
CLIENTS_FILE = Path(
    os.environ.get(
        "THREADLINE_IDENTITY_CLIENTS_FILE",
        Path(__file__).resolve().parents[2] / "config" / "identity" / "dev-clients.toml",
    )
)


def _consent_not_asked(reason: str) -> dict[str, Any]:
    return {"parents": {"status": "not_asked", "why_not_asked": reason}}


DEMO_REFERRALS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "demo-0001-oakfield-primary",
        "oakfield-primary",
        {
            "referrer": {
                "organisation_name": "Oakfield Primary School (demo)",
                "name": "Priya Demo",
                "role": "Designated Safeguarding Lead",
                "email": "dsl@oakfield.example.org",
                "raised_via": "portal",
            },
            "children": [
                {
                    "given_names": "Amelia",
                    "family_name": "Testfamily",
                    "date_of_birth": "2017-03-14",
                    "sex": "female",
                    "school": {"urn": "100001"},
                    "own_words": "There wasn't any food again so I had crisps.",
                },
                {
                    "given_names": "Noah",
                    "family_name": "Testfamily",
                    "date_of_birth": "2019-09-02",
                    "sex": "male",
                    "school": {"urn": "100001"},
                },
            ],
            "family_members": [
                {
                    "given_names": "Kerry",
                    "family_name": "Testfamily",
                    "relationships": [
                        {
                            "child": child,
                            "relationship": "mother",
                            "parental_responsibility": True,
                            "lives_with_child": True,
                        }
                        for child in (0, 1)
                    ],
                }
            ],
            "concern": {
                "categories": ["neglect"],
                "what_happened": (
                    "Both children have arrived hungry and in the same clothes all week."
                ),
                "actions_taken": "Breakfast club place offered; spoke with mum at pick-up.",
                "immediate_risk": False,
            },
            "consent": {"parents": {"status": "agreed"}},
        },
    ),
    (
        "demo-0002-county-police",
        "demo-police",
        {
            "referrer": {
                "organisation_name": "Demo County Police",
                "name": "PC Sam Example",
                "role": "Officer in the case",
                "phone": "01632 960 001",
                "raised_via": "phone",
            },
            "children": [
                {"given_names": "Leo", "family_name": "Samplewood", "date_of_birth": "2014-06-21"}
            ],
            "concern": {
                "categories": ["domestic_abuse"],
                "what_happened": "Attended a domestic incident overnight; the child was present.",
                "immediate_risk": False,
            },
            "consent": _consent_not_asked("Telling the parents could put the mother at risk."),
        },
    ),
    (
        "demo-0003-general-hospital",
        "demo-nhs-trust",
        {
            "referrer": {
                "organisation_name": "Demo General Hospital NHS Trust",
                "name": "Dr Alex Placeholder",
                "role": "Paediatric registrar",
                "email": "safeguarding@demo-hospital.example.nhs.uk",
                "raised_via": "online",
            },
            "children": [
                {
                    "given_names": "Isla",
                    "family_name": "Mockridge",
                    "date_of_birth": "2023-01-30",
                    "nhs_number": "943 476 5919",
                }
            ],
            "concern": {
                "categories": ["physical_abuse"],
                "what_happened": (
                    "Bruising inconsistent with the explanation given; second attendance."
                ),
                "immediate_risk": True,
            },
            "consent": _consent_not_asked("A section 47 concern: consent is not sought first."),
        },
    ),
]


def _secrets() -> dict[str, str]:
    with CLIENTS_FILE.open("rb") as file:
        return {client["client_id"]: client["secret"] for client in tomllib.load(file)["clients"]}


def _token(client: httpx.Client, identity_url: str, client_id: str) -> dict[str, str]:
    response = client.post(
        f"{identity_url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, _secrets()[client_id]),
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def seed(
    identity_url: str, referrals_url: str, notifications_url: str, *, wait_seconds: float = 30.0
) -> list[str]:
    """Post the demo referrals, acknowledge the first, and wait until the inbox shows them."""
    lines: list[str] = []
    references: list[str] = []
    with httpx.Client(timeout=10.0) as client:
        mash = _token(client, identity_url, "demo-mash")
        for key, client_id, body in DEMO_REFERRALS:
            response = client.post(
                f"{referrals_url}/v1/referrals",
                json=body,
                headers={**_token(client, identity_url, client_id), "Idempotency-Key": key},
            )
            if response.is_error:
                raise RuntimeError(f"demo referral {key} refused: {response.text}")
            referral = response.json()
            references.append(referral["reference"])
            state = "created" if response.status_code == 201 else "already there"
            lines.append(f"referral {referral['reference']} ({state}) from {client_id}")
            if key.startswith("demo-0001"):
                ack = client.post(
                    f"{referrals_url}/v1/referrals/{referral['id']}/acknowledge",
                    json={"acknowledged_by": "Demo MASH worker"},
                    headers=mash,
                )
                if ack.status_code not in (200, 409):
                    ack.raise_for_status()
        deadline = time.monotonic() + wait_seconds
        while True:
            inbox = client.get(
                f"{notifications_url}/v1/inbox", params={"limit": 200}, headers=mash
            ).json()
            seen = {item["referral_reference"] for item in inbox["items"]}
            if set(references) <= seen or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        lines.append(f"MASH inbox: {inbox['total']} item(s)")
    return lines


# Linking demo -------------------------------------------------------------------------------

# Which demo client speaks for which agency of the synthetic partnership.
AGENCY_CLIENTS = {
    "school": "oakfield-primary",
    "health": "demo-nhs-trust",
    "police": "demo-police",
    "social_care": "demo-local-authority",
}
LINKING_DEMO_HOUSEHOLDS = 12
AGENCY_ORDER = ("school", "health", "police")


def linking_referrals(
    households: int = LINKING_DEMO_HOUSEHOLDS,
) -> list[tuple[str, str, dict[str, Any]]]:
    """Referrals about families of the synthetic partnership (services/linking/synthetic.py):
    each household's children referred by two or three agencies, each spelling them its own way
    (nicknames, typos, missing identifiers), so the linking service has people to join up."""
    from datetime import date

    from services.linking.synthetic import generate

    partnership = generate(4_000, seed=2026)
    by_person: dict[str, list[Any]] = {}
    for generated in partnership.records:
        by_person.setdefault(generated.person_id, []).append(generated)
    chosen = [
        h
        for h in partnership.households
        if any(p.role == "child" and p.dob.year >= 2012 for p in h.members)
    ][:households]
    referrals: list[tuple[str, str, dict[str, Any]]] = []
    for number, household in enumerate(chosen):
        children = [
            p for p in household.members if p.role == "child" and 2012 <= p.dob.year <= 2025
        ]
        mother = household.members[0]
        for agency in AGENCY_ORDER:
            subjects = []
            for person in children:
                seen = [
                    g.record
                    for g in by_person.get(person.person_id, [])
                    if g.record.date_of_birth and g.record.date_of_birth < date.today()
                ]
                if not seen:
                    continue
                record = seen[AGENCY_ORDER.index(agency) % len(seen)]
                address = household.address_on(date.today())[0]
                subjects.append(
                    {
                        "given_names": record.given_names or person.given.title(),
                        "family_name": record.family_name or person.family.title(),
                        "date_of_birth": record.date_of_birth.isoformat(),
                        "sex": person.sex,
                        **({"nhs_number": record.nhs_number} if record.nhs_number else {}),
                        **({"upn": record.upn} if record.upn and agency == "school" else {}),
                        "address": {
                            "lines": [address.line.split(",")[0]],
                            "town": address.line.split(", ")[-1],
                            "postcode": address.postcode,
                        },
                    }
                )
            if not subjects:
                continue
            body: dict[str, Any] = {
                "referrer": {
                    "organisation_name": f"Demo {agency.replace('_', ' ')}",
                    "name": "Demo Referrer",
                    "role": "Safeguarding lead",
                    "email": "safeguarding@demo.example.org",
                    "raised_via": "portal",
                },
                "children": subjects,
                "family_members": [
                    {
                        "given_names": mother.given.title(),
                        "family_name": mother.family.title(),
                        "date_of_birth": mother.dob.isoformat(),
                        "sex": "female",
                        "relationships": [
                            {
                                "child": index,
                                "relationship": "mother",
                                "parental_responsibility": True,
                                "lives_with_child": True,
                            }
                            for index in range(len(subjects))
                        ],
                    }
                ],
                "concern": {
                    "categories": ["neglect"],
                    "what_happened": "Synthetic demo concern for the linking demonstration.",
                    "immediate_risk": False,
                },
                "consent": {"parents": {"status": "agreed"}},
            }
            referrals.append((f"demo-link-{number:03d}-{agency}", AGENCY_CLIENTS[agency], body))
    return referrals


def seed_linking(
    identity_url: str, referrals_url: str, linking_url: str, *, wait_seconds: float = 60.0
) -> list[str]:
    """Post the linking demo's referrals and wait until the linking service has their people."""
    lines: list[str] = []
    with httpx.Client(timeout=10.0) as client:
        posted = 0
        for key, client_id, body in linking_referrals():
            response = client.post(
                f"{referrals_url}/v1/referrals",
                json=body,
                headers={**_token(client, identity_url, client_id), "Idempotency-Key": key},
            )
            if response.is_error:
                raise RuntimeError(f"linking demo referral {key} refused: {response.text}")
            posted += 1
        mash = _token(client, identity_url, "demo-mash")
        deadline = time.monotonic() + wait_seconds
        reviews: dict[str, Any] = {"total": 0}
        while time.monotonic() < deadline:
            response = client.get(f"{linking_url}/v1/reviews", headers=mash)
            if response.status_code == 200:
                reviews = response.json()
                break
            time.sleep(0.5)
        lines.append(
            f"linking: {posted} referrals about {LINKING_DEMO_HOUSEHOLDS} synthetic families; "
            f"{reviews['total']} open review item(s) at {linking_url}/v1/reviews"
        )
    return lines


def partnership_section(name: str) -> str:
    """The demo routing file's ``[partnership]`` table under another name, as TOML: for the
    tests' and benchmarks' own routing files, which add their own organisations."""
    path = Path(__file__).resolve().parents[2] / "config" / "notifications" / "routing.toml"
    table = {**tomllib.loads(path.read_text(encoding="utf-8"))["partnership"], "name": name}
    lines = [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(["[partnership]", *lines]) + "\n"
