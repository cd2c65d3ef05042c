"""Each service's OpenAPI document tells an integrator what its errors look like: problem
details (RFC 9457) for every 4xx and 5xx, the 401/403/429 of a bearer-token operation, and the
422 the validation handler really writes, checked here against a real refusal."""

from __future__ import annotations

from typing import Any

import pytest

from services.catalogue import SERVICES, app_module
from shared.errors import PROBLEM_JSON, PROBLEM_SCHEMAS
from tests.services.factories import referral_body
from tests.support.apps import referrals_settings, serving
from tests.support.tokens import SCHOOL

PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
API_SERVICES = [name for name in SERVICES if name not in {"identity", "portal"}]


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    ]


@pytest.mark.parametrize("service", API_SERVICES)
def test_every_error_response_is_documented_as_problem_details(service: str) -> None:
    module = app_module(service)
    app = module.create_app(configure_logs=False)
    schema = app.openapi()
    assert schema["components"]["schemas"]["Problem"] == PROBLEM_SCHEMAS["Problem"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    secured = 0
    for path, method, operation in _operations(schema):
        responses = operation["responses"]
        for status, response in responses.items():
            if status[0] in "45":
                assert response["content"] == PROBLEM, (service, path, method, status)
        if "security" in operation:
            secured += 1
            assert {"401", "429", "503"} <= responses.keys(), (service, path, method)
        if "requestBody" in operation:
            assert {"413", "422"} <= responses.keys(), (service, path, method)
    assert secured > 0, f"{service}: no operation declares its bearer token"


async def test_a_real_refusal_has_the_documented_shape(database_url: str, bootstrap: str) -> None:
    from services.referrals.app import create_app

    app = create_app(referrals_settings(database_url, bootstrap), configure_logs=False)
    schema = app.openapi()["components"]["schemas"]["Problem"]
    body = referral_body()
    body["children"][0]["nhs_number"] = "9434765918"  # fails the modulus 11 check
    async with serving(app, headers=SCHOOL) as api:
        refused = await api.post("/v1/referrals", json=body)
        unauthenticated = await api.get("/v1/referrals", headers={"Authorization": ""})
    for response in (refused, unauthenticated):
        assert response.headers["content-type"] == PROBLEM_JSON
        problem = response.json()
        assert set(schema["required"]) <= problem.keys() <= set(schema["properties"])
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["children[0].nhs_number"]
    assert unauthenticated.status_code == 401
