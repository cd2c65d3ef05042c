"""MASH staff in a real browser, through the real referrals and linking services: two schools'
records of what may be one child reach the review queue; a MASH worker answers "the same
child", finds her, sees both records and undoes the join; another pair is kept apart. Every
page is screenshotted and checked with axe-core."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.services.factories import referral_body
from tests.services.linking.test_linking_service import unique_postcode
from tests.services.portal.conftest import PortalStack
from tests.services.portal.test_browser import Pages, signed_in
from tests.support.tokens import bearer

pytestmark = pytest.mark.timeout(240)

PER_PAGE = 5  # services/portal/links.py


def unique_family() -> str:
    """A family name no other test uses (tests share one database). No common prefix: linking
    compares family names by similarity, and "Portal…" against "Portal…" scored as the same
    name, so two tests' Harriets born on the same day at the same house number were linked."""
    return "".join(
        random.choice("bcdfghjklmnprstvwz") + random.choice("aeiou") for _ in range(4)
    ).title()


async def raise_pair(stack: PortalStack) -> str:
    """Two referrals of what may be one girl: a nickname, a birthday one digit off, another
    town (linking's review band, as its own review tests make it). Returns the family name."""
    family = unique_family()
    year, month, day = random.randint(2008, 2017), random.randint(1, 12), random.randint(1, 18)
    house = random.randint(1, 400)
    school = bearer()
    mother = {
        "given_names": "Sarah",
        "family_name": family,
        "date_of_birth": f"{1975 + uuid.uuid4().int % 20}-0{1 + uuid.uuid4().int % 9}-{day:02d}",
        "sex": "female",
        "relationships": [
            {
                "child": 0,
                "relationship": "mother",
                "parental_responsibility": True,
                "lives_with_child": True,
            }
        ],
    }
    children: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
        (
            {
                "given_names": "Amelia",
                "family_name": family,
                "date_of_birth": f"{year}-{month:02d}-{day:02d}",
                "sex": "female",
                "address": {
                    "lines": [f"{house} Mill Lane"],
                    "town": "Derby",
                    "postcode": unique_postcode("DE"),
                },
            },
            [mother],
        ),
        (
            {
                "given_names": "Millie",
                "family_name": family,
                "date_of_birth": f"{year}-{month:02d}-{day + 10:02d}",
                "sex": "female",
                "address": {
                    "lines": [f"{house} Canal Street"],
                    "town": "Nottingham",
                    "postcode": unique_postcode("NG"),
                },
            },
            [],
        ),
    ]
    async with httpx.AsyncClient() as http:
        for child, family_members in children:
            posted = await http.post(
                f"{stack.referrals}/v1/referrals",
                json=referral_body(children=[child], family_members=family_members),
                headers=school,
            )
            assert posted.status_code == 201, posted.text
    return family


async def open_reviews(stack: PortalStack) -> list[dict[str, Any]]:
    """The open review queue in the order the portal pages it."""
    found: list[dict[str, Any]] = []
    mash = bearer(
        organisation="MASH-DEMO", agency="mash", scopes="mash:triage", audience="threadline:linking"
    )
    async with httpx.AsyncClient() as http:
        while True:
            page = await http.get(
                f"{stack.linking}/v1/reviews",
                params={"status": "open", "limit": 200, "offset": len(found)},
                headers=mash,
            )
            assert page.status_code == 200, page.text
            found += page.json()["items"]
            if len(found) >= page.json()["total"] or not page.json()["items"]:
                return found


async def review_of(stack: PortalStack, family: str) -> tuple[str, int]:
    """The pair's review item (once linking has consumed both referrals) and its page."""
    for _ in range(120):
        queue = await open_reviews(stack)
        for index, item in enumerate(queue):
            if item["record"]["family_name"] == family and item["record"]["given_names"] in {
                "Amelia",
                "Millie",
            }:
                return item["id"], index // PER_PAGE + 1
        await asyncio.sleep(0.5)
    raise AssertionError(f"no review item for {family}")


async def answer(page: Page, stack: PortalStack, family: str, choice: str, note: str) -> None:
    review_id, number = await review_of(stack, family)
    await page.goto(f"/mash/links?page={number}")
    pair = page.locator("section", has=page.get_by_test_id(f"pair-{review_id}"))
    await pair.get_by_label(choice).check()
    await pair.get_by_label("Anything to note (optional)").fill(note)
    await pair.get_by_role("button", name="Save the answer").click()


async def test_a_mash_worker_checks_records_finds_a_child_and_undoes_a_join(
    browser: Browser, portal_stack: PortalStack, pages: Pages
) -> None:
    same, different = await raise_pair(portal_stack), await raise_pair(portal_stack)
    context, page = await signed_in(browser, portal_stack, pages, "mash.worker", "mash")

    # The queue: each pair side by side, with what each field says.
    review_id, number = await review_of(portal_stack, same)
    await page.get_by_role("link", name="Records to check").click()
    await expect(page.get_by_role("heading", name="Records to check", level=1)).to_be_visible()
    await page.goto(f"/mash/links?page={number}")
    pair = page.locator("section", has=page.get_by_test_id(f"pair-{review_id}"))
    await expect(pair.get_by_role("heading", name="Are these the same child?")).to_be_visible()
    table = pair.get_by_test_id(f"pair-{review_id}")
    await expect(table).to_contain_text("Amelia")
    await expect(table).to_contain_text("Millie")
    await expect(table.locator("tr", has_text="First name")).to_contain_text(
        "One is a short form or nickname of the other"
    )
    await expect(table.locator("tr", has_text="Last name")).to_contain_text("The same")
    await expect(table.locator("tr", has_text="Postcode")).to_contain_text("different children")
    await pages.check(page, "links-queue")

    # No answer: the error summary names the question, on this pair.
    await pair.get_by_role("button", name="Save the answer").click()
    summary = page.locator(".govuk-error-summary")
    await expect(summary).to_contain_text("Select whether these are the same child")
    await expect(page).to_have_title(re.compile("^Error: Records to check"))
    await pages.check(page, "links-queue-error")
    await summary.get_by_role("link").click()

    await answer(page, portal_stack, same, "Yes, the same child", "Same school nurse, same mum.")
    await expect(page.get_by_text("Saved: the records are now one child")).to_be_visible()
    await answer(page, portal_stack, different, "No, different children", "Cousins.")
    await expect(page.get_by_text("Saved: the records stay apart")).to_be_visible()
    await pages.check(page, "links-answered")
    await page.get_by_role("link", name="Answered: the same child").click()
    await expect(page.get_by_role("heading", name="Answered: the same child")).to_be_visible()
    await pages.check(page, "links-answered-same")

    # Find the child: one person now, with both schools' records and her mother.
    await page.get_by_role("link", name="Find a child").click()
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator(".govuk-error-summary")).to_contain_text(
        "Enter a name, a date of birth, an NHS number or a pupil number"
    )
    await pages.check(page, "find-a-child-error")
    await page.get_by_label("First name").fill("Amelia")
    await page.get_by_label("Last name").fill(same)
    await page.get_by_role("button", name="Search").click()
    found = page.get_by_test_id("people-found")
    await expect(found).to_contain_text("Millie")  # both names under one person
    await pages.check(page, "find-a-child-results")
    await found.get_by_role("link", name=f"Amelia {same}").first.click()
    await expect(page.get_by_test_id("person-name")).to_contain_text(same)
    records = page.get_by_test_id("records")
    await expect(records.locator("tbody tr")).to_have_count(2)
    await expect(page.get_by_test_id("history")).to_contain_text(
        "Joined: A person at the MASH checked and said they are the same"
    )
    await expect(page.get_by_test_id("family")).to_contain_text(f"Sarah {same}")
    await expect(page.get_by_test_id("family")).to_contain_text("Parent")
    await pages.check(page, "person")

    # A join made by mistake is undone, with the reason.
    merge = page.get_by_test_id("merge").filter(has_text="Same school nurse")
    await merge.get_by_role("button", name="Separate them again").click()
    await expect(page.locator(".govuk-error-summary")).to_contain_text(
        "Say why these are not the same person"
    )
    await pages.check(page, "person-unmerge-error")
    merge = page.get_by_test_id("merge").filter(has_text="Same school nurse")
    await merge.get_by_role("textbox").fill("Millie is her cousin: a different birthday.")
    await merge.get_by_role("button", name="Separate them again").click()
    await expect(page.get_by_text("Done: the records are separate people again")).to_be_visible()
    await expect(page.get_by_test_id("records").locator("tbody tr")).to_have_count(1)
    await expect(page.get_by_test_id("merge")).to_contain_text("Millie is her cousin")
    await pages.check(page, "person-unmerged")
    await context.close()


async def test_the_search_and_the_review_queue_work_without_javascript(
    browser: Browser, portal_stack: PortalStack
) -> None:
    family = await raise_pair(portal_stack)
    review_id, number = await review_of(portal_stack, family)
    context = await browser.new_context(base_url=portal_stack.portal, java_script_enabled=False)
    page = await context.new_page()
    await page.goto("/sign-in")
    await page.get_by_label("Sign-in name").fill("mash.worker")
    await page.get_by_role("textbox", name="Password").fill("demo-password")
    await page.get_by_role("button", name="Sign in").click()
    await page.goto("/mash/people")
    await page.get_by_label("First name").fill("Millie")
    await page.get_by_label("Last name").fill(family)
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_test_id("people-found")).to_contain_text(f"Millie {family}")
    await page.goto(f"/mash/links?page={number}")
    pair = page.locator("section", has=page.get_by_test_id(f"pair-{review_id}"))
    await pair.get_by_label("No, different children").check()
    await pair.get_by_role("button", name="Save the answer").click()
    await expect(page.get_by_text("Saved: the records stay apart")).to_be_visible()
    await context.close()


async def test_feedback_a_refusal_of_consent_covers_is_not_sent_until_a_manager_approves(
    browser: Browser, portal_stack: PortalStack, pages: Pages
) -> None:
    """The mother refused consent to the MASH telling the school more: the consent service's
    decision point refuses the feedback, the page says why and that nothing was sent, and the
    override asks for its basis, reason and the approving manager before it goes."""
    school = bearer()
    mash = bearer(organisation="MASH-DEMO", agency="mash", scopes="referrals:read mash:triage")
    async with httpx.AsyncClient(base_url=portal_stack.referrals, timeout=30) as api:
        created = await api.post("/v1/referrals", json=referral_body(), headers=school)
        assert created.status_code == 201, created.text
        referral = created.json()
        rid = referral["id"]
        for action, body in (
            ("acknowledge", {"acknowledged_by": "Sam"}),
            ("decision", {"decision": "early_help", "reason": "Family help.", "decided_by": "Sam"}),
        ):
            done = await api.post(f"/v1/referrals/{rid}/{action}", json=body, headers=mash)
            assert done.status_code == 200, done.text
    refusal = {
        "subject_id": referral["children"][0]["subject_id"],
        "grantor_kind": "person_with_parental_responsibility",
        "grantor_description": "mother",
        "status": "refused",
        "data_categories": ["*"],
        "recipients": ["school"],
        "purposes": ["referral_feedback"],
        "obtained_how": "by telephone to the MASH",
        "obtained_at": "2026-01-05T09:00:00Z",
        "obtained_by": {"name": "Sam Duty", "role": "MASH social worker"},
    }
    async with httpx.AsyncClient(base_url=portal_stack.consent, timeout=30) as consent:
        recorded = await consent.post(
            "/v1/consents",
            json=refusal,
            headers=bearer(
                organisation="MASH-DEMO",
                agency="mash",
                scopes="consent:write",
                audience="threadline:consent",
            ),
        )
        assert recorded.status_code == 201, recorded.text

    context, page = await signed_in(browser, portal_stack, pages, "mash.worker", "mash-consent")
    await page.goto(f"/mash/referrals/{rid}")
    await page.locator("#feedback_message").fill("Early help is offered to the family.")
    await page.get_by_role("button", name="Send feedback").click()
    summary = page.locator(".govuk-error-summary")
    await expect(summary).to_contain_text(
        "The feedback was not sent: a parent or the child has refused consent"
    )
    await expect(page.locator("#override_reason")).to_be_visible()  # the override is opened
    await expect(page.locator("#feedback_message")).to_have_value(
        "Early help is offered to the family."
    )
    await pages.check(page, "mash-feedback-refused")

    await page.get_by_label("Public task").check()
    await page.locator("#override_reason").fill("The school must support Maya's early help plan.")
    await page.get_by_role("button", name="Send feedback").click()
    await expect(summary).to_contain_text("Enter the name of the manager who approved it")
    await pages.check(page, "mash-feedback-override-incomplete")

    await page.locator("#override_approved_by").fill("Pat Manager")
    await page.get_by_role("button", name="Send feedback").click()
    await expect(
        page.get_by_text("Feedback sent to the person who raised the concern")
    ).to_be_visible()
    async with httpx.AsyncClient(base_url=portal_stack.referrals, timeout=30) as api:
        seen = (await api.get(f"/v1/referrals/{rid}", headers=school)).json()
    [feedback] = seen["feedback"]
    assert feedback["message"] == "Early help is offered to the family."
    assert feedback["disclosure_decision_id"]
    await context.close()
