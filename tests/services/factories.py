"""Request bodies for tests: valid by default, each field overridable."""

from __future__ import annotations

import copy
from typing import Any


def referral_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "referrer": {
            "agency": "school",
            "organisation_code": "123456",
            "organisation_name": "Hillside Academy",
            "name": "Jo Teacher",
            "role": "Designated Safeguarding Lead",
            "email": "dsl@hillside.example.org",
            "raised_via": "portal",
        },
        "children": [
            {"given_names": "Maya", "family_name": "Exampleton", "date_of_birth": "2016-05-04"},
        ],
        "concern": {
            "categories": ["neglect", "domestic_abuse"],
            "summary": "Maya said there was shouting at home again and she had no breakfast.",
        },
    }
    body = copy.deepcopy(body)
    body.update(overrides)
    return body
