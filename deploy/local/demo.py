"""A small synthetic demo partnership, posted through the public API like any agency would.

Every name here is invented. Each agency authenticates with its own demo client of the
development identity provider (config/identity/dev-clients.toml). Each referral carries a fixed
Idempotency-Key, so seeding twice creates nothing new.
"""

from __future__ import annotations

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
