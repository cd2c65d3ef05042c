"""A small synthetic demo partnership, posted through the public API like any agency would.

Every name here is invented. Each referral carries a fixed Idempotency-Key, so seeding twice
creates nothing new.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

DEMO_REFERRALS: list[tuple[str, dict[str, Any]]] = [
    (
        "demo-0001-oakfield-primary",
        {
            "referrer": {
                "agency": "school",
                "organisation_code": "100001",
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
                },
                {"given_names": "Noah", "family_name": "Testfamily", "date_of_birth": "2019-09-02"},
            ],
            "concern": {
                "categories": ["neglect"],
                "summary": "Both children have arrived hungry and in the same clothes all week.",
            },
        },
    ),
    (
        "demo-0002-county-police",
        {
            "referrer": {
                "agency": "police",
                "organisation_code": "DEMO-PF",
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
                "summary": "Attended a domestic incident overnight; the child was present.",
            },
        },
    ),
    (
        "demo-0003-general-hospital",
        {
            "referrer": {
                "agency": "health",
                "organisation_code": "RDEMO",
                "organisation_name": "Demo General Hospital NHS Trust",
                "name": "Dr Alex Placeholder",
                "role": "Paediatric registrar",
                "email": "safeguarding@demo-hospital.example.nhs.uk",
                "raised_via": "online",
            },
            "children": [
                {"given_names": "Isla", "family_name": "Mockridge", "date_of_birth": "2023-01-30"}
            ],
            "concern": {
                "categories": ["physical_abuse"],
                "summary": "Bruising inconsistent with the explanation given; second attendance.",
            },
        },
    ),
]


def seed(referrals_url: str, notifications_url: str, *, wait_seconds: float = 30.0) -> list[str]:
    """Post the demo referrals, acknowledge the first, and wait until the inbox shows them."""
    lines: list[str] = []
    references: list[str] = []
    with httpx.Client(timeout=10.0) as client:
        for key, body in DEMO_REFERRALS:
            response = client.post(
                f"{referrals_url}/v1/referrals", json=body, headers={"Idempotency-Key": key}
            )
            response.raise_for_status()
            referral = response.json()
            references.append(referral["reference"])
            state = "created" if response.status_code == 201 else "already there"
            lines.append(f"referral {referral['reference']} ({state}) id={referral['id']}")
            if key.startswith("demo-0001"):
                ack = client.post(
                    f"{referrals_url}/v1/referrals/{referral['id']}/acknowledge",
                    json={"acknowledged_by": "Demo MASH worker"},
                )
                if ack.status_code not in (200, 409):
                    ack.raise_for_status()
        deadline = time.monotonic() + wait_seconds
        while True:
            inbox = client.get(f"{notifications_url}/v1/inbox", params={"limit": 200}).json()
            seen = {item["referral_reference"] for item in inbox["items"]}
            if set(references) <= seen or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        lines.append(f"MASH inbox: {inbox['total']} item(s)")
    return lines
