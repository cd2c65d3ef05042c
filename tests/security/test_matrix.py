"""The authorisation matrix: every route of every API service's OpenAPI, as every role of every
organisation, on objects of its own organisation, of another, and on none, against the policy
below. Cells, expected and actual outcomes are derived mechanically; a route the policy does not
name fails the suite, so a new route cannot slip past unreviewed.

A refusal must be the designed one: 401 without a valid token for this service (none, or another
service's audience), 403 without the scope, 404 for another organisation's object. An allowed
cell must get past authorisation (anything but 401/403, and no 404 for its own object); bodies are
empty (``{}``), so an allowed write is refused by validation and nothing is changed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.consent.app import create_app as consent_app
from services.linking.app import create_app as linking_app
from services.notifications.app import create_app as notifications_app
from services.referrals.app import create_app as referrals_app
from services.timeline.app import create_app as timeline_app
from tests.security import results
from tests.services.factories import referral_body
from tests.services.test_contacts_api import police_incident
from tests.support import apps
from tests.support.tokens import bearer

pytestmark = pytest.mark.timeout(600)

QUIET = {"relay_enabled": False, "timers_enabled": False, "consumers_enabled": False}
SERVICES = {
    "referrals": (referrals_app, apps.referrals_settings),
    "consent": (consent_app, apps.consent_settings),
    "notifications": (notifications_app, apps.notifications_settings),
    "linking": (linking_app, apps.linking_settings),
    "timeline": (timeline_app, apps.timeline_settings),
}
OPERATIONAL = {"/healthz", "/readyz", "/metrics"}


@dataclass(frozen=True)
class Role:
    """A kind of caller: its organisation, agency and scopes (its audience is the service's)."""

    organisation: str
    agency: str
    scopes: str


ROLES: dict[str, Role | None] = {
    "anonymous": None,
    "school": Role("100001", "school", "referrals:write referrals:read"),
    "other school": Role("100002", "school", "referrals:write referrals:read"),
    "police": Role("DEMO-PF", "police", "contacts:write"),
    "other police": Role("OTHER-PF", "police", "contacts:write"),
    "mash": Role("MASH-DEMO", "mash", "referrals:read mash:triage"),
    "consent recorder": Role("MASH-DEMO", "mash", "consent:write disclosures:decide"),
    "dpo": Role("DPO-DEMO", "dpo", "consent:audit"),
    "no scope": Role("100001", "school", "openid"),
}
#: Another service's token: the same caller, the wrong audience.
WRONG_AUDIENCE = "threadline:elsewhere"

ALL = frozenset({"*"})  # any authenticated caller of the service


@dataclass(frozen=True)
class Rule:
    """Who may call a route: any one of ``scopes``; for ``owned`` objects, only the recording
    organisation, or a holder of one of ``sees_all``."""

    scopes: frozenset[str]
    owned: str | None = None  # the kind of object in the path that belongs to an organisation
    sees_all: frozenset[str] = frozenset()


def rule(scopes: str, owned: str | None = None, sees_all: str = "") -> Rule:
    return Rule(frozenset(scopes.split()), owned, frozenset(sees_all.split()))


READ = "referrals:read mash:triage"
TRIAGE = "mash:triage"
AUDIT = "consent:audit"
#: The policy, reviewed by hand against docs/api.md: (service, method, path) → rule.
POLICY: dict[tuple[str, str, str], Rule] = {
    ("referrals", "POST", "/v1/referrals"): rule("referrals:write"),
    ("referrals", "GET", "/v1/referrals"): rule(READ),
    ("referrals", "GET", "/v1/referrals/{referral_id}"): rule(READ, "referral", TRIAGE),
    ("referrals", "POST", "/v1/referrals/{referral_id}/acknowledge"): rule(TRIAGE),
    ("referrals", "POST", "/v1/referrals/{referral_id}/rating"): rule(TRIAGE),
    ("referrals", "POST", "/v1/referrals/{referral_id}/decision"): rule(TRIAGE),
    ("referrals", "POST", "/v1/referrals/{referral_id}/feedback"): rule(TRIAGE),
    ("referrals", "POST", "/v1/referrals/{referral_id}/assessment-completion"): rule(TRIAGE),
    ("referrals", "POST", "/v1/referrals/{referral_id}/reopening"): rule(TRIAGE),
    ("referrals", "POST", "/v1/contacts"): rule("contacts:write"),
    ("referrals", "GET", "/v1/contacts/{contact_id}"): rule(
        "contacts:write mash:triage", "contact", TRIAGE
    ),
    ("consent", "POST", "/v1/disclosures/decide"): rule("disclosures:decide"),
    ("consent", "POST", "/v1/consents"): rule("consent:write"),
    ("consent", "POST", "/v1/consents/{consent_id}/withdraw"): rule("consent:write"),
    ("consent", "GET", "/v1/consents/{consent_id}"): rule("consent:write consent:audit"),
    ("consent", "GET", "/v1/dpo/decisions"): rule(AUDIT),
    ("consent", "GET", "/v1/dpo/ledger"): rule(AUDIT),
    ("consent", "GET", "/v1/dpo/withdrawals"): rule(AUDIT),
    ("consent", "GET", "/v1/dpo/integrity"): rule(AUDIT),
    ("consent", "GET", "/v1/dpo/verifications"): rule(AUDIT),
    ("consent", "GET", "/v1/dpo/retention-runs"): rule(AUDIT),
    ("consent", "GET", "/v1/dpo/subjects/{subject_id}/export"): rule(AUDIT),
    ("consent", "GET", "/v1/dpo/subjects/{subject_id}/export.html"): rule(AUDIT),
    ("notifications", "GET", "/v1/inbox"): rule(READ),
    # Messages are an organisation's own (addressed to it or sent for it): any caller with the
    # notifications audience, and only its organisation's messages.
    ("notifications", "GET", "/v1/messages"): rule("*"),
    ("notifications", "GET", "/v1/messages/{message_id}"): rule("*", "message"),
    ("notifications", "POST", "/v1/messages/{message_id}/acknowledge"): rule("*", "message"),
    ("notifications", "POST", "/v1/messages/{message_id}/retry"): rule("*", "message"),
    ("notifications", "GET", "/v1/dead-letters"): rule("*"),
    ("notifications", "POST", "/v1/dead-letters/{dead_letter_id}/resend"): rule("*", "dead letter"),
    ("notifications", "GET", "/v1/preferences"): rule("*"),
    ("notifications", "PUT", "/v1/preferences/{role}/{kind}"): rule("*"),
    ("notifications", "DELETE", "/v1/preferences/{role}/{kind}"): rule("*"),
    ("linking", "POST", "/v1/persons/resolve"): rule(TRIAGE),
    ("linking", "GET", "/v1/persons/search"): rule(TRIAGE),
    ("linking", "GET", "/v1/persons/{person_id}"): rule(TRIAGE),
    ("linking", "GET", "/v1/reviews"): rule(TRIAGE),
    ("linking", "POST", "/v1/reviews/{review_id}/accept"): rule(TRIAGE),
    ("linking", "POST", "/v1/reviews/{review_id}/reject"): rule(TRIAGE),
    ("linking", "POST", "/v1/merges"): rule(TRIAGE),
    ("linking", "POST", "/v1/merges/{merge_id}/unmerge"): rule(TRIAGE),
    ("linking", "GET", "/v1/households/{household_id}"): rule(TRIAGE),
    ("timeline", "GET", "/v1/persons/{person_id}/timeline"): rule(TRIAGE),
    ("timeline", "GET", "/v1/persons/{person_id}/summary"): rule(TRIAGE),
    ("timeline", "GET", "/v1/persons/{person_id}/genogram.svg"): rule(TRIAGE),
    ("timeline", "GET", "/v1/persons/{person_id}/chronology.html"): rule(TRIAGE),
}


def _token(role: Role, service: str, audience: str | None = None) -> dict[str, str]:
    return bearer(
        organisation=role.organisation,
        agency=role.agency,
        scopes=role.scopes,
        audience=audience or f"threadline:{service}",
        subject=f"{role.agency}-{role.organisation}",
    )


def _example(schema: dict[str, Any]) -> str:
    """A value for a path parameter, from its schema: the first of an enum, or of its type."""
    schema = schema.get("anyOf", [schema])[0]
    if "enum" in schema:
        return str(schema["enum"][0])
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    if schema.get("type") == "integer":
        return "1"
    return "x"


def _operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in app.openapi()["paths"].items()
        if path not in OPERATIONAL
        for method, operation in operations.items()
    ]


def test_the_policy_names_every_route_and_only_routes_that_exist() -> None:
    db, broker = "postgresql+asyncpg://nobody@127.0.0.1:1/none", "127.0.0.1:1"
    routes = set()
    for service, (create_app, settings) in SERVICES.items():
        app = create_app(settings(db, broker, **QUIET), configure_logs=False)
        routes |= {(service, method, path) for method, path, _ in _operations(app)}
    assert routes - POLICY.keys() == set(), "routes without a reviewed rule in POLICY"
    assert POLICY.keys() - routes == set(), "rules in POLICY for routes that no longer exist"


@dataclass
class Objects:
    """Objects recorded by each organisation, for the owner dimension."""

    by_kind: dict[str, dict[str, str]]


async def _objects(client: httpx.AsyncClient) -> Objects:
    referrals: dict[str, str] = {}
    for role in ("school", "other school"):
        owner = ROLES[role]
        assert owner is not None
        created = await client.post(
            "/v1/referrals", json=referral_body(), headers=_token(owner, "referrals")
        )
        assert created.status_code == 201, created.text
        referrals[owner.organisation] = created.json()["id"]
    contacts: dict[str, str] = {}
    for role in ("police", "other police"):
        owner = ROLES[role]
        assert owner is not None
        created = await client.post(
            "/v1/contacts", json=police_incident(), headers=_token(owner, "referrals")
        )
        assert created.status_code == 201, created.text
        contacts[owner.organisation] = created.json()["id"]
    return Objects({"referral": referrals, "contact": contacts})


@dataclass(frozen=True)
class Cell:
    service: str
    method: str
    path: str
    role: str
    owner: str  # "own", "other", "none" (no such object) or "-" (no object in the path)
    expected: str  # "allowed", "401", "403", "404"


def _expected(service: str, rule: Rule, role_name: str, owner: str) -> str:
    role = ROLES.get(role_name)
    if role is None:  # anonymous, or another service's audience
        return "401"
    if rule.scopes != ALL and not rule.scopes & set(role.scopes.split()):
        return "403"
    if owner == "other" and not rule.sees_all & set(role.scopes.split()):
        return "404"
    return "allowed"


def _outcome(status: int, expected: str, owner: str) -> str:
    if status in (401, 403):
        return str(status)
    if status == 404 and (expected == "404" or owner != "none"):
        return "404"
    return "allowed"


@asynccontextmanager
async def every_service(
    database_url: str, bootstrap: str, **overrides: Any
) -> AsyncIterator[dict[str, tuple[FastAPI, httpx.AsyncClient]]]:
    """Every API service in-process (no relay, consumers or timers): its app and a client."""
    async with AsyncExitStack() as stack:
        running = {}
        for service, (create_app, settings) in SERVICES.items():
            settings_ = settings(database_url, bootstrap, **QUIET, **overrides)
            app = create_app(settings_, configure_logs=False)
            running[service] = (app, await stack.enter_async_context(apps.serving(app)))
        yield running


@pytest.fixture(scope="module")
async def running(database_url: str, bootstrap: str) -> AsyncIterator[dict[str, Any]]:
    async with every_service(database_url, bootstrap) as clients:
        yield clients


async def test_every_cell_of_the_matrix_gets_the_designed_answer(
    running: dict[str, Any],
) -> None:
    objects = await _objects(running["referrals"][1])
    tried, unexpected_success, wrong_refusal = 0, [], []
    for service, (app, client) in running.items():
        for method, path, operation in _operations(app):
            rule = POLICY[(service, method, path)]
            parameters = {
                p["name"]: p for p in operation.get("parameters", []) if p["in"] == "path"
            }
            owners = ["-"]
            if parameters:
                owners = ["none"]
                if rule.owned in objects.by_kind:
                    owners = ["own", "other", "none"]
            for role_name in [*ROLES, "wrong audience"]:
                role = ROLES.get(role_name, ROLES["school"] if role_name != "anonymous" else None)
                for owner in owners:
                    values = {name: _example(p["schema"]) for name, p in parameters.items()}
                    if owner in ("own", "other") and role is not None and rule.owned:
                        made = objects.by_kind[rule.owned]
                        mine = made.get(role.organisation)
                        theirs = next(v for k, v in made.items() if k != role.organisation)
                        if owner == "own" and mine is None:
                            continue  # this role records no such object
                        (name,) = parameters
                        values[name] = mine if owner == "own" else theirs
                    url = path.format(**values)
                    headers: dict[str, str] = {}
                    if role_name == "wrong audience":
                        assert role is not None
                        headers = _token(role, service, WRONG_AUDIENCE)
                    elif role is not None:
                        headers = _token(role, service)
                    body = {} if "requestBody" in operation else None
                    response = await client.request(method, url, json=body, headers=headers)
                    assert response.status_code < 500, (service, method, url, response.text)
                    cell = Cell(
                        service, method, path, role_name, owner,
                        _expected(service, rule, role_name, owner),
                    )  # fmt: skip
                    actual = _outcome(response.status_code, cell.expected, owner)
                    tried += 1
                    if cell.expected != "allowed" and actual == "allowed":
                        unexpected_success.append((cell, response.status_code))
                    elif actual != cell.expected:
                        wrong_refusal.append((cell, response.status_code, response.text[:200]))
    results.record(
        "authorisation matrix",
        tried=tried,
        unexpected=len(unexpected_success),
        wrong_refusals=len(wrong_refusal),
        routes=len(POLICY),
        roles=len(ROLES) + 1,
    )
    assert unexpected_success == []
    assert wrong_refusal == []


def _declared_scopes(dependant: Any) -> frozenset[str] | None:
    """The scopes a route's ``require_scope`` dependency admits (None when it has none)."""
    for sub in dependant.dependencies:
        closure = dict(
            zip(sub.call.__code__.co_freevars, sub.call.__closure__ or (), strict=True)
        ) if hasattr(sub.call, "__code__") else {}  # fmt: skip
        if "scopes" in closure:
            return frozenset(closure["scopes"].cell_contents)
        found = _declared_scopes(sub)
        if found is not None:
            return found
    return None


def test_the_policy_scopes_are_the_ones_the_code_requires() -> None:
    """Read from each route's dependencies, so a scope changed in code without the policy
    (or the other way round) fails here rather than passing the matrix by accident."""
    from fastapi.routing import APIRoute

    db, broker = "postgresql+asyncpg://nobody@127.0.0.1:1/none", "127.0.0.1:1"
    differ = []
    for service, (create_app, settings) in SERVICES.items():
        app = create_app(settings(db, broker, **QUIET), configure_logs=False)
        for router in app.state.definition.routers:
            for route in router.routes:
                if not isinstance(route, APIRoute):
                    continue
                declared = _declared_scopes(route.dependant) or ALL
                for method in route.methods:
                    rule = POLICY[(service, method, route.path_format)]
                    if rule.scopes != declared:
                        differ.append((service, method, route.path, rule.scopes, declared))
    assert differ == []
