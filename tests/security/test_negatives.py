"""Attacks on every service's edge, route by route from each service's OpenAPI: bad tokens (forged,
``alg=none``, HMAC with a guessed secret, wrong audience, expired, unknown key, a key the token
points at itself with ``jku``), oversized bodies (413), floods (429 with ``Retry-After``), webhook
replays against the Standard Webhooks receiver, the portal's CSRF and security headers, and a
database dump that must not hold a child's words or a referral's narrative in plain text."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import OctKey, OKPKey

from deploy.local.stack import Stack
from services.notifications import webhooks
from services.portal.app import create_app as portal_app
from services.portal.endpoints import CSRF_FIELD, SESSION_COOKIE
from services.portal.sessions import Person
from services.portal.settings import PortalSettings
from tests.security import results
from tests.security.test_matrix import (
    OPERATIONAL,
    POLICY,
    QUIET,
    ROLES,
    SERVICES,
    Role,
    every_service,
)
from tests.services.factories import OWN_WORDS, WHAT_HAPPENED, referral_body
from tests.services.test_contacts_api import police_incident
from tests.support import apps
from tests.support.tokens import _KEY, ISSUER, bearer

pytestmark = pytest.mark.timeout(600)

MAX_BODY = 4096
BURST = 3


def _claims(service: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "sub": "client-100001",
        "aud": f"threadline:{service}",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "scope": "referrals:write referrals:read contacts:write mash:triage consent:write "
        "consent:audit disclosures:decide",
        "org": "MASH-DEMO",
        "agency": "mash",
        **changes,
    }


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


_ATTACKER = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)


def _signed(header: dict[str, Any], claims: dict[str, Any], key: Any = _KEY) -> str:
    return jwt.encode(header, claims, key, algorithms=[header["alg"]])


def forged(service: str) -> str:
    """Our issuer's kid, signed with another key."""
    return _signed({"alg": "Ed25519", "kid": _KEY.kid}, _claims(service), _ATTACKER)


def alg_none(service: str) -> str:
    return f"{_b64({'alg': 'none', 'kid': _KEY.kid})}.{_b64(_claims(service))}."


def hmac_guess(service: str) -> str:
    """HS256 keyed with the issuer's public key (the classic algorithm confusion)."""
    public = json.dumps(_KEY.as_dict(private=False)).encode()
    return _signed({"alg": "HS256", "kid": _KEY.kid}, _claims(service), OctKey.import_key(public))


def wrong_audience(service: str) -> str:
    return _signed({"alg": "Ed25519", "kid": _KEY.kid}, _claims(service, aud="threadline:other"))


def expired(service: str) -> str:
    past = int(time.time()) - 3600
    changes = {"iat": past - 600, "nbf": past - 600, "exp": past}
    return _signed({"alg": "Ed25519", "kid": _KEY.kid}, _claims(service, **changes))


def unknown_kid(service: str) -> str:
    return _signed({"alg": "Ed25519", "kid": "not-a-key-of-ours"}, _claims(service), _ATTACKER)


def foreign_jku(service: str) -> str:
    header = {"alg": "Ed25519", "kid": "attacker", "jku": "https://attacker.example/jwks.json"}
    return _signed(header, _claims(service), _ATTACKER)


NEGATIVES: dict[str, Callable[[str], str]] = {
    "forged signature": forged,
    "alg none": alg_none,
    "HS256 with the public key": hmac_guess,
    "wrong audience": wrong_audience,
    "expired": expired,
    "unknown kid": unknown_kid,
    "foreign jku": foreign_jku,
}


def _path(path: str) -> str:
    return (
        path.replace("{role}", "referrer")
        .replace("{kind}", "referral.feedback")
        .format_map(_AnyId())
    )


class _AnyId(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return str(uuid.uuid4())


@pytest.fixture(scope="module")
async def limited(database_url: str, bootstrap: str) -> AsyncIterator[dict[str, Any]]:
    """Every API service with a small body limit and rate (so both are cheap to hit)."""
    limits = {"max_body_bytes": MAX_BODY, "rate_limit_per_second": 0.05, "rate_limit_burst": BURST}
    async with every_service(database_url, bootstrap, **limits) as running:
        yield running


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path not in OPERATIONAL
        for method in operations
    ]


async def test_every_bad_token_is_refused_on_every_route(limited: dict[str, Any]) -> None:
    tried, refused, accepted = 0, 0, []
    for service, (app, client) in limited.items():
        for method, path in _routes(app):
            for name, make in NEGATIVES.items():
                headers = {"Authorization": f"Bearer {make(service)}"}
                body = {} if method in ("POST", "PUT") else None
                response = await client.request(method, _path(path), json=body, headers=headers)
                tried += 1
                challenge = response.headers.get("www-authenticate", "")
                if response.status_code == 401 and challenge.startswith("Bearer"):
                    refused += 1
                else:
                    accepted.append((service, method, path, name, response.status_code))
    results.record(
        "token negatives",
        tried=tried,
        refused=refused,
        unexpected=len(accepted),
        kinds=sorted(NEGATIVES),
    )
    assert accepted == []


async def test_every_body_over_the_limit_is_refused_with_413(limited: dict[str, Any]) -> None:
    tried, wrong = 0, []
    oversized = {"padding": "x" * (MAX_BODY * 2)}
    for service, (app, client) in limited.items():
        for method, path in _routes(app):
            if method not in ("POST", "PUT"):
                continue
            response = await client.request(method, _path(path), json=oversized)
            tried += 1
            if response.status_code != 413:
                wrong.append((service, method, path, response.status_code))
    results.record("oversized bodies", tried=tried, unexpected=len(wrong))
    assert tried >= 20 and wrong == []


async def test_a_flood_from_one_client_gets_429_with_retry_after(limited: dict[str, Any]) -> None:
    tried, wrong = 0, []
    for service, (app, client) in limited.items():
        (method, path) = next((m, p) for m, p in _routes(app) if m == "GET")
        rule = POLICY[(service, method, path)]
        role = next(
            r
            for r in ROLES.values()
            if r is not None and (rule.scopes == {"*"} or rule.scopes & set(r.scopes.split()))
        )
        headers = bearer(
            organisation=role.organisation,
            agency=role.agency,
            scopes=role.scopes,
            audience=f"threadline:{service}",
            subject=f"flood-{service}",
        )
        answers = [await client.get(_path(path), headers=headers) for _ in range(BURST + 3)]
        tried += 1
        limited_answers = [a for a in answers if a.status_code == 429]
        if not limited_answers or not all(
            a.headers.get("retry-after", "").isdigit() and int(a.headers["retry-after"]) >= 1
            for a in limited_answers
        ):
            wrong.append((service, path, [a.status_code for a in answers]))
        other = await client.get(_path(path), headers={**headers, **_other_client(role, service)})
        if other.status_code == 429:
            wrong.append((service, path, "another client was limited too"))
    results.record("rate limits", tried=tried, unexpected=len(wrong))
    assert wrong == []


def _other_client(role: Role, service: str) -> dict[str, str]:
    return bearer(
        organisation=role.organisation,
        agency=role.agency,
        scopes=role.scopes,
        audience=f"threadline:{service}",
        subject=f"another-{service}",
    )


async def test_a_replayed_or_tampered_webhook_is_not_applied() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    applied: list[str] = []

    async def apply(webhook: webhooks.VerifiedWebhook) -> None:
        applied.append(webhook.webhook_id)

    receiver = webhooks.receiver_app(webhooks.WebhookVerifier([secret]), apply)
    transport = httpx.ASGITransport(app=receiver)
    body = json.dumps({"type": "referral.feedback_sent", "referral_id": str(uuid.uuid4())})
    now = int(time.time())
    attempts = {
        "fresh": (webhooks.headers([secret], "msg_1", now, body.encode()), body, 200),
        "replay": (webhooks.headers([secret], "msg_1", now, body.encode()), body, 200),
        "old timestamp": (
            webhooks.headers([secret], "msg_2", now - 3600, body.encode()),
            body,
            401,
        ),
        "tampered body": (
            webhooks.headers([secret], "msg_3", now, body.encode()),
            body.replace("feedback", "decided"),
            401,
        ),
        "another secret": (
            webhooks.headers(
                ["whsec_" + base64.b64encode(b"z" * 32).decode()], "msg_4", now, body.encode()
            ),
            body,
            401,
        ),
        "unsigned": ({"webhook-id": "msg_5", "webhook-timestamp": str(now)}, body, 400),
    }
    wrong = []
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        for name, (headers, content, status) in attempts.items():
            response = await client.post("/", content=content, headers=headers)
            if response.status_code != status:
                wrong.append((name, response.status_code))
    results.record(
        "webhook replays", tried=len(attempts), applied=len(applied), unexpected=len(wrong)
    )
    assert wrong == [] and applied == ["msg_1"]


PORTAL_PEOPLE = {
    "dsl": Person("dsl.oakfield", "Priya Demo", "dsl", "100001", "Oakfield Primary School"),
    "mash_worker": Person("mash.worker", "Sam Demo", "mash_worker", "MASH-DEMO", "MASH"),
    "mash_manager": Person("mash.manager", "Alex Demo", "mash_manager", "MASH-DEMO", "MASH"),
    "dpo": Person("dpo", "Dee Demo", "dpo", "DPO-DEMO", "Data protection"),
}
CSRF_REFUSAL = "did not come from this service"
HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


async def test_the_portal_refuses_forms_without_its_csrf_token_and_sends_its_headers() -> None:
    app = portal_app(PortalSettings(environment="test"), configure_logs=False)
    posts = [p for m, p in _routes(app) if m == "POST" and p != "/sign-out"]
    pages = [p for m, p in _routes(app) if m == "GET"]
    tried, wrong, reached_csrf = 0, [], set()
    async with apps.serving(app) as http:
        for role, person in PORTAL_PEOPLE.items():
            session = app.state.sessions.create(person, "token", 900)
            cookie = {"Cookie": f"{SESSION_COOKIE}={session.id}"}
            for path in posts:
                url = _path(path).replace("{action}", "acknowledge").replace("{sequence}", "1")
                for form in ({}, {CSRF_FIELD: "guessed"}):
                    response = await http.post(url, data=form, headers=cookie)
                    tried += 1
                    if response.status_code != 403:
                        wrong.append((role, path, form, response.status_code))
                    elif CSRF_REFUSAL in response.text:
                        reached_csrf.add(path)
        # Each form's own role got as far as the CSRF check (the others are refused by role).
        wrong += [("no role reached the CSRF check", path) for path in set(posts) - reached_csrf]
        for path in pages:
            url = _path(path).replace("{form}", "json").replace("{sequence}", "1")
            response = await http.get(url)
            policy = response.headers.get("content-security-policy", "")
            missing = [k for k, v in HEADERS.items() if response.headers.get(k) != v]
            if (
                missing
                or "'unsafe-inline'" in policy
                or "frame-ancestors 'none'" not in policy
                or "max-age=" not in response.headers.get("strict-transport-security", "")
            ):
                wrong.append(("headers", path, missing))
    results.record(
        "portal csrf and headers",
        tried=tried + len(pages),
        csrf_refusals_tried=tried,
        pages_checked=len(pages),
        unexpected=len(wrong),
    )
    assert wrong == []


async def test_a_database_dump_holds_no_narrative_or_childs_words(
    stack: Stack, database_url: str, bootstrap: str
) -> None:
    marker = uuid.uuid4().hex
    narrative = f"{WHAT_HAPPENED} {marker}-narrative"
    own_words = f"{OWN_WORDS} {marker}-words"
    body = referral_body()
    body["concern"]["what_happened"] = narrative
    body["children"][0]["own_words"] = own_words
    incident = police_incident()
    settings = apps.referrals_settings(database_url, bootstrap, **QUIET)
    create_app = SERVICES["referrals"][0]
    school, police = ROLES["school"], ROLES["police"]
    assert school is not None and police is not None
    async with apps.serving(create_app(settings, configure_logs=False)) as client:
        created = await client.post(
            "/v1/referrals",
            json=body,
            headers=bearer(organisation=school.organisation, scopes=school.scopes),
        )
        assert created.status_code == 201, created.text
        contact = await client.post(
            "/v1/contacts",
            json=incident,
            headers=bearer(organisation=police.organisation, agency="police", scopes=police.scopes),
        )
        assert contact.status_code == 201, contact.text
    dump = stack.postgres.dump(stack.database)
    secrets = [marker, WHAT_HAPPENED, OWN_WORDS, *_narratives(incident)]
    found = [text[:40] for text in secrets if text in dump]
    results.record(
        "database dump",
        tried=len(secrets),
        dump_bytes=len(dump),
        unexpected=len(found),
    )
    assert found == []


def _narratives(incident: dict[str, Any]) -> list[str]:
    """The free-text fields of a contact of at least 40 characters (its narratives)."""
    texts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and len(value) >= 40:
            texts.append(value)

    walk(incident)
    return texts
