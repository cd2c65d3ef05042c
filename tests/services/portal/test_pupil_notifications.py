"""The DSL's "notifications about my pupils" page in a real browser, end to end through the real
services as processes: the police record a domestic abuse incident; linking finds the child's
school from the school's own referral; the consent service decides the disclosure; the DSL sees
the notice, reads it and acknowledges it; another school's DSL sees nothing. Screenshots go to
test-results/portal/, and axe-core finds no serious or critical violation."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect

from deploy.local.stack import REPO_ROOT
from tests.services.notifications.support import (
    linked_in_notifications,
    police_incident,
    referral_about,
    unique_child,
)
from tests.services.portal.conftest import PortalStack
from tests.services.portal.test_browser import Pages, signed_in
from tests.support.kafka import eventually

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pages(screenshots: Path) -> Pages:
    return Pages(screenshots)


def _client_token(identity: str, client_id: str) -> dict[str, str]:
    with (REPO_ROOT / "config" / "identity" / "dev-clients.toml").open("rb") as file:
        secrets = {c["client_id"]: c["secret"] for c in tomllib.load(file)["clients"]}
    response = httpx.post(
        f"{identity}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secrets[client_id]),
        timeout=10,
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_the_dsl_reads_and_acknowledges_a_police_notification_about_a_pupil(
    portal_stack: PortalStack, browser: Browser, pages: Pages, database_url: str
) -> None:
    stack = portal_stack
    school = _client_token(stack.identity, "oakfield-primary")
    police = _client_token(stack.identity, "demo-police")
    child = unique_child(school_urn="100001")
    async with httpx.AsyncClient(timeout=10) as http:
        referred = await http.post(
            f"{stack.referrals}/v1/referrals", json=referral_about(child), headers=school
        )
        assert referred.status_code == 201, referred.text
        occurred = (datetime.now(UTC) - timedelta(hours=2)).isoformat().replace("+00:00", "Z")
        police_view = {k: v for k, v in child.items() if k != "school"}

        async def sent() -> list[dict[str, Any]]:
            found = await http.get(
                f"{stack.notifications}/v1/messages",
                params={"box": "sent", "kind": "encompass.notice"},
                headers=police,
            )
            return [
                m
                for m in found.json()["items"]
                if m["contact_id"] == contact_id and m["status"] == "delivered"
            ]

        # The school's record places the child once it is linked: the police contact comes
        # after that, as it would in life.
        await linked_in_notifications(
            database_url, [c["subject_id"] for c in referred.json()["children"]]
        )
        incident = await http.post(
            f"{stack.referrals}/v1/contacts",
            json=police_incident([police_view], occurred),
            headers=police,
        )
        assert incident.status_code == 201, incident.text
        contact_id = incident.json()["id"]
        await eventually(sent, timeout=60)
        [notice] = await sent()
        assert notice["recipient"]["organisation_code"] == "100001"

    name = f"{child['given_names']} {child['family_name']}"
    context, page = await signed_in(browser, stack, pages, "dsl.oakfield", "pupils-dsl")
    try:
        await page.get_by_role("link", name="Notifications about your pupils").click()
        await expect(
            page.get_by_role("heading", name="Notifications about your pupils")
        ).to_be_visible()
        waiting = page.get_by_test_id("waiting")
        await expect(waiting).to_contain_text(f"Operation Encompass: {name} may need support today")
        await pages.check(page, "pupils-dsl-notifications")

        await waiting.get_by_role("link", name=f"Operation Encompass: {name}").click()
        await expect(
            page.get_by_role("heading", name=f"Operation Encompass: {name}")
        ).to_be_visible()
        await expect(page.get_by_text("do not question them about the incident")).to_be_visible()
        await expect(page.get_by_text("Demo Police Force").first).to_be_visible()
        # What the school needs that day and nothing more.
        body = await page.locator("main").inner_text()
        for word in ("Victimson", "Suspectson", "shouting", "hiding upstairs"):
            assert word not in body
        await pages.check(page, "pupils-dsl-notification")

        await page.get_by_role(
            "button", name="I have read this and will make sure the child is supported"
        ).click()
        await expect(page.get_by_text("You have acknowledged this notification")).to_be_visible()
        await expect(page.get_by_text("by Priya Demo")).to_be_visible()
        await pages.check(page, "pupils-dsl-acknowledged")

        await page.get_by_role("link", name="Back to notifications about your pupils").click()
        await expect(page.get_by_test_id("earlier")).to_contain_text(name)
        assert name not in await page.locator("main").get_by_test_id("waiting").all_inner_texts()
    finally:
        await context.close()

    # Another school's DSL sees nothing of it.
    context, page = await signed_in(browser, stack, pages, "dsl.brookside", "pupils-other-dsl")
    try:
        await page.goto("/notifications")
        await expect(
            page.get_by_role("heading", name="Notifications about your pupils")
        ).to_be_visible()
        # Other tests' incidents may have reached Brookside's own pupils; this one did not.
        assert name not in await page.locator("main").inner_text()
        await pages.check(page, "pupils-other-dsl-notifications")
        missing = await page.goto(f"/notifications/{notice['id']}")
        assert missing is not None and missing.status == 404
    finally:
        await context.close()
