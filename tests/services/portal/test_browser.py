"""The portal in a real browser, end to end through the real services: a DSL raises a concern,
the MASH acknowledges, rates, decides and gives feedback, and the DSL sees it. Every page is
screenshotted to test-results/portal/ and checked with axe-core (no serious or critical
violations). A POST without the CSRF token is refused. (Each role is refused the others' pages:
test_roles.py.)"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect
from sqlalchemy import text

from shared.db import Database
from tests.services.factories import referral_body
from tests.services.portal.conftest import AXE, PortalStack

pytestmark = pytest.mark.timeout(240)

CHILD_WORDS = "Mummy's friend shouts and I hide under the bed with Leo.  I'm scared"


class Pages:
    """Screenshots and accessibility checks of every page a test visits."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.axe = AXE.read_text()
        self.count = 0

    async def check(self, page: Page, name: str) -> None:
        self.count += 1
        await page.screenshot(
            path=str(self.directory / f"{self.count:02d}-{name}.png"), full_page=True
        )
        if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
            await page.evaluate(self.axe)
        result: dict[str, Any] = await page.evaluate(
            "async () => await axe.run(document, {resultTypes: ['violations']})"
        )
        serious = [
            f"{violation['id']} ({violation['impact']}): {violation['help']} "
            f"at {[node['target'] for node in violation['nodes']][:3]}"
            for violation in result["violations"]
            if violation["impact"] in {"serious", "critical"}
        ]
        assert not serious, f"{name}: accessibility violations: {serious}"


@pytest.fixture(scope="module")
def pages(screenshots: Path) -> Pages:
    return Pages(screenshots)


async def signed_in(
    browser: Browser, stack: PortalStack, pages: Pages, username: str, name: str
) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(base_url=stack.portal)
    page = await context.new_page()
    await page.goto("/")
    await pages.check(page, f"{name}-start")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Sign in to Threadline")).to_be_visible()
    await pages.check(page, f"{name}-identity-sign-in")
    await page.get_by_label("Sign-in name").fill(username)
    await page.get_by_role("textbox", name="Password").fill("demo-password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text("Signed in as")).to_be_visible()
    return context, page


async def raise_concern(page: Page, pages: Pages) -> str:
    await page.get_by_role("link", name="Raise a concern").first.click()
    await expect(page.get_by_role("heading", name="Raise a concern about a child")).to_be_visible()
    await pages.check(page, "dsl-raise-concern")

    # A first go with mistakes: every one is named in the summary and at its field.
    await page.locator("#children-0-given_names").fill("Maya")
    await page.locator("#children-0-family_name").fill("Exampleton")
    await page.locator("#children-0-date_of_birth-day").fill("4")
    await page.locator("#children-0-date_of_birth-month").fill("5")
    await page.locator("#children-0-date_of_birth-year").fill("2016")
    await page.locator("#children-0-nhs_number").fill("943 476 5918")  # wrong check digit
    await page.locator("#referrer-email").fill("dsl@oakfield.example.org")
    await page.locator("#concern-what_happened").fill("Maya said there was shouting again.")
    await page.get_by_role("button", name="Send to the MASH").click()
    summary = page.locator(".govuk-error-summary")
    await expect(summary).to_be_visible()
    await expect(summary).to_contain_text("Say whether any child is in danger right now")
    await expect(page).to_have_title(re.compile("^Error: "))
    await pages.check(page, "dsl-raise-concern-errors-from-the-form")

    await expect(summary).to_contain_text("Select what the concern is about")
    await expect(page.locator("#concern-categories-error")).to_be_visible()
    # What was typed is kept.
    await expect(page.locator("#concern-what_happened")).to_have_value(
        "Maya said there was shouting again."
    )

    # Fix what the form checks; the API then refuses the NHS number, shown at the field.
    await page.locator("#concern-immediate_risk-2").check()  # "No"
    await page.get_by_label("Neglect").check()
    await page.get_by_label("Domestic abuse at home").check()
    await page.locator("#consent-parents-status-3").check()  # not asked
    await page.locator("#consent-parents-why_not_asked").fill("Asking could put Maya at risk.")
    await page.get_by_role("button", name="Send to the MASH").click()
    await expect(summary).to_contain_text("Enter a real NHS number")
    await expect(page.locator("#children-0-nhs_number-error")).to_be_visible()
    await pages.check(page, "dsl-raise-concern-errors-from-the-api")

    await page.locator("#children-0-nhs_number").fill("943 476 5919")
    await page.locator("#children-0-own_words").fill(CHILD_WORDS)
    await page.locator("#family_members-0-given_names").fill("Sarah")
    await page.locator("#family_members-0-family_name").fill("Exampleton")
    await page.locator("#family_members-0-relationship").select_option("mother")
    await page.locator("#family_members-0-parental_responsibility").check()
    await page.locator("#family_members-0-lives_with_child").check()
    await page.get_by_role("button", name="Send to the MASH").click()
    await expect(page.get_by_text("Concern sent to the MASH")).to_be_visible()
    await pages.check(page, "dsl-concern-sent")
    reference = (await page.locator(".govuk-panel__body strong").inner_text()).strip()
    assert re.fullmatch(r"[A-Z0-9-]+", reference), reference
    # The child's words are kept exactly as typed, double space and all.
    assert (
        await page.locator(".threadline-own-words")
        .filter(has_text="hide under the bed")
        .first.inner_text()
        == CHILD_WORDS
    )
    await expect(page.get_by_text("Mother of Maya, lives with them")).to_be_visible()
    return reference


async def test_a_concern_from_a_school_to_the_mash_and_back(
    browser: Browser, portal_stack: PortalStack, pages: Pages
) -> None:
    dsl, dsl_page = await signed_in(browser, portal_stack, pages, "dsl.oakfield", "dsl")
    await expect(dsl_page.get_by_role("heading", name="Your school's referrals")).to_be_visible()
    await pages.check(dsl_page, "dsl-referrals")
    reference = await raise_concern(dsl_page, pages)
    await dsl_page.get_by_role("link", name="Your school's referrals").first.click()
    await expect(dsl_page.get_by_role("link", name=reference, exact=True)).to_be_visible()
    await pages.check(dsl_page, "dsl-referrals-with-the-new-one")

    mash, mash_page = await signed_in(browser, portal_stack, pages, "mash.worker", "mash")
    await expect(mash_page.get_by_role("heading", name="Triage queue")).to_be_visible()
    row = mash_page.locator("tr", has=mash_page.get_by_role("link", name=reference, exact=True))
    await expect(row).to_contain_text("Acknowledge")
    await pages.check(mash_page, "mash-queue")
    await row.get_by_role("link", name=reference, exact=True).click()
    await expect(mash_page.get_by_role("heading", name=reference)).to_be_visible()
    await pages.check(mash_page, "mash-referral")

    await mash_page.get_by_role("button", name="Acknowledge the referral").click()
    await expect(mash_page.get_by_text("Referral acknowledged")).to_be_visible()
    await pages.check(mash_page, "mash-referral-acknowledged")

    # Feedback before a decision: the API's 409 is shown at the form, in its words.
    await mash_page.locator("#feedback_message").fill("Too early.")
    await mash_page.get_by_role("button", name="Send feedback").click()
    await expect(mash_page.locator(".govuk-error-summary")).to_contain_text("decide first")
    await expect(mash_page.locator("#feedback_message")).to_have_value("Too early.")

    await mash_page.get_by_role("button", name="Save the rating").click()  # nothing chosen
    await expect(mash_page.locator(".govuk-error-summary")).to_contain_text("Select a rating")
    await pages.check(mash_page, "mash-referral-rating-errors")
    await mash_page.locator("#rag-2").check()  # amber
    await mash_page.locator("#rating_reason").fill("Repeated shouting; no injuries seen.")
    await mash_page.get_by_role("button", name="Save the rating").click()
    await expect(mash_page.get_by_test_id("rag")).to_have_text("Amber")

    await mash_page.get_by_label("Early help").check()
    await mash_page.locator("#decision_reason").fill("Family known to early help; consent.")
    await mash_page.get_by_role("button", name="Save the decision").click()
    await expect(mash_page.get_by_test_id("decision")).to_have_text("Early help")
    await pages.check(mash_page, "mash-referral-decided")

    feedback = "We have offered the family early help. Please keep telling us what Maya says."
    form = mash_page.locator("form[action$='/feedback']")
    form_action = await form.get_attribute("action") or ""
    sent_form = {
        name: await form.locator(f"input[name={name}]").input_value()
        for name in ("csrf_token", "idempotency_key")
    }
    await mash_page.locator("#feedback_message").fill(feedback)
    await mash_page.get_by_role("button", name="Send feedback").click()
    await expect(mash_page.get_by_text("Feedback sent")).to_be_visible()
    await pages.check(mash_page, "mash-referral-feedback-sent")
    # The same form sent again (a resubmission, or a double click past the button's guard)
    # gives the feedback once: the form carries its own Idempotency-Key.
    again = await mash_page.context.request.post(
        form_action,
        form={**sent_form, "feedback_message": feedback},
        max_redirects=0,
    )
    assert again.status == 303, (form_action, again.status)

    await dsl_page.reload()
    await expect(
        dsl_page.locator("tr", has=dsl_page.get_by_role("link", name=reference, exact=True))
    ).to_contain_text("Read the feedback")
    await dsl_page.get_by_role("link", name=reference, exact=True).click()
    await expect(dsl_page.get_by_test_id("status")).to_have_text("Decision made")
    await expect(dsl_page.get_by_test_id("acknowledged")).not_to_contain_text("Not yet")
    await expect(dsl_page.get_by_test_id("feedback")).to_contain_text(feedback)
    assert (await dsl_page.get_by_test_id("feedback").inner_text()).count(feedback) == 1
    await pages.check(dsl_page, "dsl-referral-with-feedback")

    # Another school's DSL cannot open it, even with the address.
    other, other_page = await signed_in(browser, portal_stack, pages, "dsl.brookside", "other")
    await other_page.goto(dsl_page.url)
    await expect(other_page.get_by_role("heading", name="Page not found")).to_be_visible()
    await expect(other_page.get_by_role("link", name=reference, exact=True)).to_have_count(0)
    await pages.check(other_page, "other-school-refused")
    for context in (dsl, mash, other):
        await context.close()


async def test_a_post_without_the_csrf_token_is_refused_and_sign_out_ends_the_session(
    browser: Browser, portal_stack: PortalStack, pages: Pages
) -> None:
    context, page = await signed_in(browser, portal_stack, pages, "dsl.oakfield", "csrf")
    cookies = {cookie["name"]: cookie for cookie in await context.cookies()}
    session = cookies["threadline_session"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Lax"

    forged = await page.request.post(
        "/referrals/new", form={"concern-what_happened": "forged"}, max_redirects=0
    )
    assert forged.status == 403
    assert "did not come from this service" in await forged.text()
    wrong = await page.request.post(
        "/referrals/new", form={"csrf_token": "not-the-token"}, max_redirects=0
    )
    assert wrong.status == 403

    response = await page.goto("/referrals")
    assert response is not None
    headers = response.headers
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["strict-transport-security"].startswith("max-age=")
    assert headers["referrer-policy"] == "same-origin"

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="You have signed out")).to_be_visible()
    await pages.check(page, "signed-out")
    response = await page.goto("/referrals")
    assert response is not None and page.url.endswith("/?signed_out=1")
    await context.close()


async def test_pages_work_without_javascript(
    browser: Browser, portal_stack: PortalStack, pages: Pages
) -> None:
    context = await browser.new_context(base_url=portal_stack.portal, java_script_enabled=False)
    page = await context.new_page()
    await page.goto("/sign-in")
    await page.get_by_label("Sign-in name").fill("dsl.oakfield")
    await page.get_by_role("textbox", name="Password").fill("demo-password")
    await page.get_by_role("button", name="Sign in").click()
    await page.goto("/referrals/new")
    await page.get_by_role("button", name="Send to the MASH").click()
    await expect(page.locator(".govuk-error-summary")).to_contain_text("Tell us what happened")
    await context.close()


async def _client_token(identity: str, client_id: str) -> dict[str, str]:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{identity}/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, f"dev-secret-{client_id}"),
        )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_a_missed_deadline_reaches_the_manager_and_the_school(
    browser: Browser, portal_stack: PortalStack, pages: Pages, database: Database
) -> None:
    """The school's system raises a concern; its acknowledgement deadline is moved into the past
    (the real timer then fires, as it would at the end of the working day); the manager sees the
    escalation, the queue marks it overdue, and the school's DSL is told they may chase."""
    school = await _client_token(portal_stack.identity, "oakfield-primary")
    mash = await _client_token(portal_stack.identity, "demo-mash")
    async with httpx.AsyncClient() as http:
        posted = await http.post(
            f"{portal_stack.referrals}/v1/referrals", json=referral_body(), headers=school
        )
        assert posted.status_code == 201, posted.text
        referral_id, reference = posted.json()["id"], posted.json()["reference"]
        async with database.transaction() as session:
            moved = await session.execute(
                text(
                    "UPDATE referrals.referral_deadlines SET due_at = now() - interval '1 minute'"
                    " WHERE referral_id = :id AND kind = 'acknowledgement' RETURNING id"
                ),
                {"id": referral_id},
            )
            deadline_id = str(moved.scalar_one())
            await session.execute(
                text(
                    "UPDATE referrals.timers SET due_at = now() - interval '1 minute'"
                    " WHERE aggregate_id = :deadline"
                ),
                {"deadline": deadline_id},
            )
        escalated: list[dict[str, Any]] = []
        for _ in range(120):
            inbox = await http.get(
                f"{portal_stack.notifications}/v1/inbox",
                params={"referral_id": referral_id, "audience": "mash_manager"},
                headers=mash,
            )
            escalated = inbox.json()["items"]
            if escalated:
                break
            await asyncio.sleep(0.5)
        assert [item["kind"] for item in escalated] == ["acknowledgement_overdue"]

    manager, page = await signed_in(browser, portal_stack, pages, "mash.manager", "manager")
    row = page.locator("tr", has=page.get_by_role("link", name=reference, exact=True))
    await expect(row).to_contain_text("Overdue")
    await page.get_by_role("link", name="Escalations").click()
    await expect(page.get_by_test_id("escalations")).to_contain_text(reference)
    await pages.check(page, "manager-escalations")

    dsl, dsl_page = await signed_in(browser, portal_stack, pages, "dsl.oakfield", "chase")
    notice = dsl_page.locator("li", has_text=reference)
    await expect(notice.first).to_be_visible()
    late = dsl_page.locator("tr", has=dsl_page.get_by_role("link", name=reference, exact=True))
    await expect(late).to_contain_text("Late")
    await pages.check(dsl_page, "dsl-things-to-follow-up")
    for context in (manager, dsl):
        await context.close()
