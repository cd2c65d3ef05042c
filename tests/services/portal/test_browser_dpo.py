"""The data protection officer in a real browser, through the real consent service: a school's
system records consents, a refusal and a withdrawal and asks the decision point to share; the
retention job runs on its timer; the DPO finds each decision in the ledger and its filters,
sees the disclosures without consent and the override, the withdrawal and the decision it
changed, checks the ledger's integrity, downloads a subject access export and reads the
retention runs. Every page is screenshotted and checked with axe-core."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect
from sqlalchemy import insert

from services.consent.jobs import RETENTION_TIMER
from services.consent.models import plumbing as consent_plumbing
from shared.db import Database
from tests.services.consent_support import consent_body, disclosure
from tests.services.portal.conftest import PortalStack
from tests.services.portal.test_browser import Pages, signed_in
from tests.support.tokens import bearer

pytestmark = pytest.mark.timeout(240)

APPROVER = {"name": "Sam Manager", "role": "MASH team manager"}
WHY_NOT_ASKED = "Asking the family could put the child at more risk tonight."


class School:
    """A school's own system on the consent API: records consent and asks before sharing."""

    def __init__(self, http: httpx.AsyncClient, consent: str) -> None:
        self.http, self.consent = http, consent
        self.headers = bearer(
            organisation="100001",
            agency="school",
            scopes="disclosures:decide consent:write",
            audience="threadline:consent",
        )

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(f"{self.consent}{path}", json=body, headers=self.headers)
        assert response.status_code in {200, 201}, response.text
        return dict(response.json())


async def test_the_dpo_audits_the_ledger_in_the_portal(
    browser: Browser, portal_stack: PortalStack, pages: Pages, database: Database
) -> None:
    without, overridden, withdrawn = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    started = datetime.now(UTC)
    async with httpx.AsyncClient() as http:
        school = School(http, portal_stack.consent)
        shared = await school.post(
            "/v1/disclosures/decide",
            disclosure([without], consent={"sought": False, "why_not_sought": WHY_NOT_ASKED}),
        )
        assert shared["decision"] == "share" and shared["consent_status"] == "not_recorded"
        await school.post("/v1/consents", consent_body(overridden, status="refused"))
        override = await school.post(
            "/v1/disclosures/decide",
            disclosure(
                [overridden],
                consent={"sought": True},
                override={
                    "basis": "vital_interests",
                    "reason": "Injuries seen today; sharing cannot wait for agreement.",
                    "approved_by": APPROVER,
                },
            ),
        )
        assert override["consent_overridden"] is True
        given = await school.post("/v1/consents", consent_body(withdrawn))
        await school.post(
            f"/v1/consents/{given['id']}/withdraw",
            {"withdrawn_by": {"name": "P Parent", "role": "father"}, "reason": "changed mind"},
        )
        refused = await school.post(
            "/v1/disclosures/decide", disclosure([withdrawn], consent={"sought": True})
        )
        assert refused["decision"] == "do_not_share"
        assert refused["consent_status"] == "withdrawn"

        # The retention job, on its own timer, made due now.
        async with database.transaction() as session:
            await session.execute(
                insert(consent_plumbing.timers).values(
                    id=uuid.uuid4(),
                    kind=RETENTION_TIMER,
                    aggregate_id=RETENTION_TIMER,
                    due_at=datetime.now(UTC) - timedelta(seconds=1),
                )
            )
        dpo_token = bearer(
            organisation="DEMO-LA",
            agency="dpo",
            scopes="consent:audit",
            audience="threadline:consent",
        )
        for _ in range(60):
            runs = await http.get(
                f"{portal_stack.consent}/v1/dpo/retention-runs", headers=dpo_token
            )
            if any(datetime.fromisoformat(r["ran_at"]) >= started for r in runs.json()["runs"]):
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError("the retention job did not run")

    context, page = await signed_in(browser, portal_stack, pages, "dpo", "dpo")
    await expect(page.get_by_role("heading", name="Consent and disclosures")).to_be_visible()
    await expect(page.get_by_test_id("last-retention-run")).to_be_visible()
    await pages.check(page, "overview")

    # The ledger, newest first, and filtered to one person.
    await page.get_by_role("link", name="Ledger", exact=True).click()
    entries = page.get_by_test_id("entries")
    await expect(entries.locator("tbody tr").first).to_contain_text(str(refused["ledger_sequence"]))
    await pages.check(page, "ledger")
    await page.get_by_text("Filter the ledger").click()
    await page.get_by_label("Person's reference").fill("not a reference")
    await page.locator("#from-day").fill("31")
    await page.locator("#from-month").fill("2")
    await page.locator("#from-year").fill("2026")
    await page.get_by_role("button", name="Show entries").click()
    summary = page.locator(".govuk-error-summary")
    await expect(summary).to_contain_text("Enter the person's reference as it is shown")
    await expect(summary).to_contain_text("The start date must be a real date")
    await pages.check(page, "ledger-filter-errors")
    await page.get_by_label("Person's reference").fill(str(withdrawn))
    today = datetime.now(UTC)
    for name, value in (("day", today.day), ("month", today.month), ("year", today.year)):
        await page.locator(f"#from-{name}").fill(str(value))
    await page.get_by_role("button", name="Show entries").click()
    rows = page.get_by_test_id("entries").locator("tbody tr")
    await expect(rows).to_have_count(3)  # consent recorded, withdrawn, decision not to share
    await expect(rows.nth(0)).to_contain_text("Not shared")
    await expect(rows.nth(1)).to_contain_text("Consent withdrawn")
    await pages.check(page, "ledger-one-person")
    await page.get_by_label("What was recorded").select_option("disclosure.decided")
    await page.get_by_role("button", name="Show entries").click()
    await expect(rows).to_have_count(1)

    # Without consent: the decision, and why consent was not asked.
    await page.get_by_role("link", name="Without consent").click()
    listed = page.get_by_test_id("entries")
    await expect(listed).to_contain_text(str(shared["ledger_sequence"]))
    await pages.check(page, "without-consent")
    # The entry's own link (a subject id's link may start with the same digit).
    await listed.locator(f"a[href='/dpo/ledger/{shared['ledger_sequence']}']").click()
    entry = page.get_by_test_id("entry")
    await expect(entry).to_contain_text(WHY_NOT_ASKED)
    await expect(entry).to_contain_text("Public task (Article 6(1)(e))")
    await expect(entry).to_contain_text("Jo Teacher")
    await pages.check(page, "ledger-entry")

    await page.get_by_role("link", name="Without consent").click()
    await page.get_by_role("link", name="Shared although consent was refused or withdrawn").click()
    overrides = page.get_by_test_id("entries")
    await expect(overrides.locator("tbody tr").first).to_contain_text("Consent overridden")
    await expect(overrides).to_contain_text(str(override["ledger_sequence"]))
    await pages.check(page, "overrides")

    # The withdrawal, and the later decision it changed.
    await page.get_by_role("link", name="Withdrawals").click()
    withdrawal = page.get_by_test_id("withdrawal").filter(has_text=str(withdrawn))
    await expect(withdrawal).to_contain_text("changed mind")
    await expect(withdrawal).to_contain_text(f"Entry {refused['ledger_sequence']}")
    await pages.check(page, "withdrawals")

    # Integrity: check the whole ledger now; the check is recorded and shown.
    await page.get_by_role("link", name="Integrity").click()
    await page.get_by_role("button", name="Check the whole ledger").click()
    await expect(page.get_by_text("Checked: the result is below")).to_be_visible()
    latest = page.get_by_test_id("verification").first
    await expect(latest).to_contain_text("Intact")
    await expect(latest).to_contain_text("The whole ledger")
    await pages.check(page, "integrity")

    # Subject access: what is held, and the export downloaded.
    await page.get_by_role("link", name="Subject access").click()
    await page.get_by_label("Person's reference").fill("8d0c")
    await page.get_by_role("button", name="Find what is held").click()
    await expect(page.locator(".govuk-error-summary")).to_be_visible()
    await page.get_by_label("Person's reference").fill(str(withdrawn))
    await page.get_by_role("button", name="Find what is held").click()
    await expect(page.get_by_test_id("export-summary")).to_contain_text("Ledger entries")
    await pages.check(page, "subject-access")
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download as data (JSON)").click()
    download = await download_info.value
    assert download.suggested_filename == f"subject-access-{withdrawn}.json"
    exported = json.loads(Path(await download.path()).read_text())
    assert exported["subject_id"] == str(withdrawn)
    assert {e["kind"] for e in exported["ledger_entries"]} == {
        "consent.recorded",
        "consent.withdrawn",
        "disclosure.decided",
    }
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download as a document").click()
    document = Path(await (await download_info.value).path()).read_text()
    assert document.startswith("<!doctype html>") and str(withdrawn) in document

    # Retention: the policy and the run the timer just made.
    await page.get_by_role("link", name="Retention").click()
    await expect(page.get_by_test_id("policy")).to_contain_text("years after the last referral")
    await expect(page.get_by_test_id("retention-runs")).to_be_visible()
    await pages.check(page, "retention")
    await context.close()
