"""The portal without a browser: sessions and their timeout, the referral form's mapping to the
API and back, the pages a signed-out visitor gets, and the production guard."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from starlette.datastructures import FormData

from services.portal.app import create_app
from services.portal.forms import FormErrors, api_errors, field_id, field_order, parse_referral_form
from services.portal.sessions import Person, SessionStore
from services.portal.settings import PortalSettings
from shared.auth import IssuerConfig
from tests.support.apps import serving

PERSON = Person("dsl.oakfield", "Priya Demo", "dsl", "100001", "Oakfield Primary School")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_after_the_idle_timeout_and_before_its_token_expires() -> None:
    clock = Clock()
    store = SessionStore(idle_seconds=600, clock=clock)
    session = store.create(PERSON, "token", expires_in=3600)
    clock.now += 599
    assert store.get(session.id) is session  # and touched: idle time starts again
    clock.now += 599
    assert store.get(session.id) is session
    clock.now += 601
    assert store.get(session.id) is None
    assert store.get(session.id) is None  # forgotten, not revived

    session = store.create(PERSON, "token", expires_in=900)
    for _ in range(3):
        clock.now += 285
        assert store.get(session.id) is session
    clock.now += 20  # 875 s: within 30 s of the token's expiry
    assert store.get(session.id) is None


def test_each_session_has_its_own_random_id_and_csrf_token() -> None:
    store = SessionStore(idle_seconds=600)
    first, second = (store.create(PERSON, "token", 900) for _ in range(2))
    assert first.id != second.id and first.csrf_token != second.csrf_token
    assert len(first.id) >= 40 and len(first.csrf_token) >= 40


def test_a_sign_in_can_be_finished_once() -> None:
    store = SessionStore(idle_seconds=600)
    key, pending = store.begin_sign_in()
    assert store.finish_sign_in(key) == pending
    assert store.finish_sign_in(key) is None


@pytest.mark.parametrize(
    ("api_field", "form_field"),
    [
        ("children[0].nhs_number", "children-0-nhs_number"),
        ("children[1]", "children-1-given_names"),
        ("children[0].address.postcode", "children-0-address-postcode"),
        ("children[2].unborn.expected_date", "children-2-date_of_birth"),
        ("family_members[1].relationships[0].relationship", "family_members-1-relationship"),
        ("referrer", "referrer-email"),
        ("consent.parents", "consent-parents-status"),
        ("concern.categories[3]", "concern-categories"),
        ("body", "referrer-name"),
    ],
)
def test_an_api_error_lands_on_the_field_that_caused_it(api_field: str, form_field: str) -> None:
    assert field_id(api_field, field_order()) == form_field


def test_api_errors_are_said_in_plain_words() -> None:
    errors = FormErrors()
    api_errors(
        [
            {"field": "children[0].nhs_number", "message": "fails the NHS number check digit"},
            {"field": "referrer", "message": "give an email or a phone number"},
            {"field": "concern.what_happened", "message": "some rule we have no words for"},
        ],
        errors,
        field_order(),
    )
    assert errors.by_field["children-0-nhs_number"].startswith("Enter a real NHS number")
    assert "email address or a phone number" in errors.by_field["referrer-email"]
    assert errors.summary(field_order())[0]["href"] == "#referrer-email"  # page order


def form(**fields: str | list[str]) -> FormData:
    items: list[tuple[str, str]] = []
    for name, value in fields.items():
        for one in value if isinstance(value, list) else [value]:
            items.append((name.replace("__", "-"), one))
    return FormData(items)


def test_the_form_becomes_the_api_body_with_the_school_from_the_session() -> None:
    words = "  he said 'don't tell'\n\nand ran off  "
    parsed = parse_referral_form(
        form(
            referrer__name="Priya Demo",
            referrer__role="DSL",
            referrer__phone="01632 960 123",
            children__0__given_names="Maya",
            children__0__family_name="Exampleton",
            children__0__estimated_age_years="9",
            children__0__own_words=words,
            children__1__given_names="Leo",
            children__1__family_name="Exampleton",
            children__1__date_of_birth__day="2",
            children__1__date_of_birth__month="9",
            children__1__date_of_birth__year="2019",
            family_members__0__given_names="Sarah",
            family_members__0__family_name="Exampleton",
            family_members__0__relationship="mother",
            family_members__0__parental_responsibility="yes",
            family_members__0__lives_with_child="no",
            concern__categories=["neglect", "domestic_abuse"],
            concern__what_happened="Shouting at home.",
            concern__immediate_risk="no",
            consent__parents__status="agreed",
        ),
        organisation_code="100001",
        organisation_name="Oakfield Primary School",
    )
    assert not parsed.errors, parsed.errors.by_field
    body = parsed.body
    assert body["children"][0]["own_words"] == words  # verbatim, never trimmed
    assert body["children"][0]["school"] == {"urn": "100001", "name": "Oakfield Primary School"}
    assert body["children"][1]["date_of_birth"] == "2019-09-02"
    assert body["family_members"][0]["relationships"] == [
        {
            "child": 0,
            "relationship": "mother",
            "parental_responsibility": True,
            "lives_with_child": False,
        },
        {
            "child": 1,
            "relationship": "mother",
            "parental_responsibility": True,
            "lives_with_child": False,
        },
    ]
    assert body["referrer"]["raised_via"] == "portal"
    assert body["consent"] == {"parents": {"status": "agreed"}}


def test_an_impossible_date_is_an_error_at_the_date() -> None:
    parsed = parse_referral_form(
        form(
            children__0__given_names="Maya",
            children__0__date_of_birth__day="31",
            children__0__date_of_birth__month="2",
            children__0__date_of_birth__year="2016",
        ),
        organisation_code="100001",
        organisation_name="Oakfield Primary School",
    )
    assert parsed.errors.by_field["children-0-date_of_birth"].startswith("Date of birth must be")


def test_production_refuses_the_development_client_secret_and_plain_http() -> None:
    with pytest.raises(ValidationError) as refused:
        PortalSettings(
            environment="production",
            database_url="postgresql+asyncpg://db.example/threadline",
            kafka_bootstrap_servers="kafka.example:9092",
            auth_issuers=[
                IssuerConfig(issuer="https://idp.example", jwks_uri="https://idp.example/jwks")
            ],
            identity_issuer="https://idp.example",
            url="http://portal.internal:8105",
        )
    message = str(refused.value)
    assert "THREADLINE_PORTAL_CLIENT_SECRET" in message
    assert "THREADLINE_PORTAL_PUBLIC_URL must be https" in message


async def test_signed_out_visitors_are_sent_to_the_start_and_posts_are_refused() -> None:
    app = create_app(PortalSettings(environment="test"), configure_logs=False)
    async with serving(app) as http:
        start = await http.get("/")
        assert start.status_code == 200 and "Sign in" in start.text
        policy = start.headers["content-security-policy"]
        assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
        nonce = policy.split("'nonce-")[1].split("'")[0]
        assert f'<script nonce="{nonce}">' in start.text  # GOV.UK's one inline script
        assert start.headers["cache-control"] == "no-store"

        page = await http.get("/referrals")
        assert page.status_code == 303 and page.headers["location"] == "/?signed_out=1"
        stale = await http.get("/mash/queue", headers={"Cookie": "threadline_session=made-up"})
        assert stale.status_code == 303 and stale.headers["location"] == "/?timed_out=1"
        posted = await http.post("/referrals/new", data={"csrf_token": "x"})
        assert posted.status_code == 401 and "You have been signed out" in posted.text

        callback = await http.get("/auth/callback", params={"code": "c", "state": "s"})
        assert callback.status_code == 400 and "could not sign you in" in callback.text
        assets = await http.get("/govuk/govuk-frontend.min.css")
        assert assets.status_code == 200
        missing = await http.get("/no-such-page")
        assert missing.status_code == 404 and "Page not found" in missing.text
