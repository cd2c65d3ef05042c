"""Request bodies for tests: valid by default, each field overridable."""

from __future__ import annotations

import copy
from typing import Any

WHAT_HAPPENED = "Maya said there was shouting at home again and she had no breakfast."
OWN_WORDS = "Mummy's friend shouts at Mummy and I hide under the bed with Leo."


def referral_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "referrer": {
            "organisation_name": "Oakfield Primary School",
            "name": "Jo Teacher",
            "role": "Designated Safeguarding Lead",
            "email": "dsl@oakfield.example.org",
            "raised_via": "portal",
        },
        "children": [
            {
                "given_names": "Maya",
                "family_name": "Exampleton",
                "date_of_birth": "2016-05-04",
                "sex": "female",
                "nhs_number": "943 476 5919",
                "upn": "L938200124001",
                "address": {"lines": ["1 Test Street"], "town": "Derby", "postcode": "de1 1aa"},
                "school": {"urn": "100001", "name": "Oakfield Primary School"},
                "own_words": OWN_WORDS,
            },
            {"given_names": "Leo", "family_name": "Exampleton", "estimated_age_years": 4},
        ],
        "family_members": [
            {
                "given_names": "Sarah",
                "family_name": "Exampleton",
                "date_of_birth": "1990-02-01",
                "sex": "female",
                "relationships": [
                    {
                        "child": 0,
                        "relationship": "mother",
                        "parental_responsibility": True,
                        "lives_with_child": True,
                    },
                    {
                        "child": 1,
                        "relationship": "mother",
                        "parental_responsibility": True,
                        "lives_with_child": True,
                    },
                ],
            }
        ],
        "concern": {
            "categories": ["neglect", "domestic_abuse"],
            "what_happened": WHAT_HAPPENED,
            "actions_taken": "Spoke to Maya with the class teacher present; gave her breakfast.",
            "immediate_risk": False,
        },
        "consent": {
            "parents": {
                "status": "not_asked",
                "why_not_asked": "Asking could increase the risk to Maya and her mother.",
            }
        },
    }
    body = copy.deepcopy(body)
    body.update(overrides)
    return body
