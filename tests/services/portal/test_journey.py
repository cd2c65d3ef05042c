"""Issue 7's journey, end to end in a real browser through every real service: the police
reported a domestic abuse incident at Maya's home and Brookside school referred her little
brother Leo. Then Oakfield's DSL raises a concern about Maya and sees it acknowledged and then
the feedback; a MASH worker finds it in the queue, opens Maya's linked timeline (the police
incident and Leo's referral beside her own, the flags, the agencies, the family tree, the
printable chronology), decides and gives feedback; the DPO sees the disclosures those reads
produced and checks that the ledger is intact. A read the consent service refuses is explained.
Every page is screenshotted and checked with axe-core."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.services.consent_support import consent_body
from tests.services.portal.conftest import PortalStack
from tests.services.portal.test_browser import Pages, signed_in
from tests.services.timeline.test_timeline_flow import Family as TimelineFamily
from tests.services.timeline.test_timeline_flow import until
from tests.support.tokens import bearer

pytestmark = pytest.mark.timeout(420)


# The timeline tests' family: its surname, home and mother's birthday are drawn at random, so
# linking never joins it to another test's family.
Family = TimelineFamily


def mash_token(audience: str) -> dict[str, str]:
    return bearer(
        organisation="MASH-DEMO",
        agency="mash",
        scopes="referrals:read mash:triage",
        audience=audience,
    )


async def earlier_contacts(stack: PortalStack, family: Family) -> None:
    """The police incident, and Brookside school's referral of Leo."""
    police = bearer(organisation="DEMO-PF", agency="police", scopes="contacts:write")
    brookside = bearer(organisation="100002")
    async with httpx.AsyncClient() as http:
        incident = await http.post(
            f"{stack.referrals}/v1/contacts", json=family.incident(), headers=police
        )
        assert incident.status_code == 201, incident.text
        body = family.referral(family.leo())
        body["referrer"]["organisation_name"] = "Brookside Primary School"
        leo = await http.post(f"{stack.referrals}/v1/referrals", json=body, headers=brookside)
        assert leo.status_code == 201, leo.text


async def raise_concern_about_maya(page: Page, pages: Pages, family: Family) -> str:
    await page.get_by_role("link", name="Raise a concern").first.click()
    child = "#children-0-"
    await page.locator(child + "given_names").fill("Maya")
    await page.locator(child + "family_name").fill(family.name)
    for part, value in (("day", "4"), ("month", "5"), ("year", "2016")):
        await page.locator(f"{child}date_of_birth-{part}").fill(value)
    await page.locator(child + "sex").check()  # female
    await page.locator(child + "nhs_number").fill(family.maya_nhs)
    await page.locator(child + "address-lines-0").fill(family.address["lines"][0])
    await page.locator(child + "address-town").fill(family.address["town"])
    await page.locator(child + "address-postcode").fill(family.address["postcode"])
    await page.locator(child + "own_words").fill("Leo cries when they shout. I look after him.")
    brother = "#children-1-"
    await page.locator(brother + "given_names").fill("Leo")
    await page.locator(brother + "family_name").fill(family.name)
    for part, value in (("day", "12"), ("month", "9"), ("year", "2019")):
        await page.locator(f"{brother}date_of_birth-{part}").fill(value)
    await page.locator(brother + "sex-2").check()  # male
    await page.locator(brother + "address-lines-0").fill(family.address["lines"][0])
    await page.locator(brother + "address-town").fill(family.address["town"])
    await page.locator(brother + "address-postcode").fill(family.address["postcode"])
    await page.locator("#family_members-0-given_names").fill("Sarah")
    await page.locator("#family_members-0-family_name").fill(family.name)
    await page.locator("#family_members-0-relationship").select_option("mother")
    await page.locator("#family_members-0-parental_responsibility").check()
    await page.locator("#family_members-0-lives_with_child").check()
    await page.locator("#referrer-email").fill("dsl@oakfield.example.org")
    await page.get_by_label("Neglect").check()
    await page.get_by_label("Domestic abuse at home").check()
    await page.locator("#concern-what_happened").fill("Maya came in hungry and said it was loud.")
    await page.locator("#concern-immediate_risk-2").check()  # no
    await page.locator("#consent-parents-status-3").check()  # not asked
    await page.locator("#consent-parents-why_not_asked").fill("Asking could put Maya at risk.")
    await pages.check(page, "dsl-raise-concern-filled")
    await page.get_by_role("button", name="Send to the MASH").click()
    await expect(page.get_by_text("Concern sent to the MASH")).to_be_visible()
    await pages.check(page, "dsl-concern-sent")
    return (await page.locator(".govuk-panel__body strong").inner_text()).strip()


async def test_a_concern_from_school_through_the_linked_timeline_to_the_dpo(
    browser: Browser, portal_stack: PortalStack, pages: Pages
) -> None:
    family = Family()
    await earlier_contacts(portal_stack, family)

    # The DSL raises a concern about Maya (and names her brother Leo).
    dsl, dsl_page = await signed_in(browser, portal_stack, pages, "dsl.oakfield", "dsl")
    reference = await raise_concern_about_maya(dsl_page, pages, family)
    await expect(dsl_page.get_by_test_id("acknowledged")).to_contain_text("Not yet")
    concern_url = dsl_page.url

    # The MASH worker finds it in the queue and acknowledges it.
    mash, page = await signed_in(browser, portal_stack, pages, "mash.worker", "mash")
    row = page.locator("tr", has=page.get_by_role("link", name=reference, exact=True))
    await expect(row).to_contain_text("Waiting to be acknowledged")
    await pages.check(page, "mash-queue")
    await row.get_by_role("link", name=reference, exact=True).click()
    referral_url = page.url
    await page.get_by_role("button", name="Acknowledge the referral").click()
    await expect(page.get_by_text("Referral acknowledged")).to_be_visible()

    # The DSL sees it acknowledged.
    await dsl_page.goto(concern_url)
    await expect(dsl_page.get_by_test_id("acknowledged")).not_to_contain_text("Not yet")
    await pages.check(dsl_page, "dsl-concern-acknowledged")

    # Maya's linked timeline, once linking and the timeline have caught up with the events.
    referral_id = referral_url.rstrip("/").rsplit("/", 1)[-1]
    async with httpx.AsyncClient() as http:
        referral = (
            await http.get(
                f"{portal_stack.referrals}/v1/referrals/{referral_id}",
                headers=mash_token("threadline:referrals"),
            )
        ).json()
        maya_subject = referral["children"][0]["subject_id"]

        async def maya_person() -> str | None:
            found = await http.get(
                f"{portal_stack.linking}/v1/persons/search",
                params={"nhs_number": family.maya_nhs},
                headers=mash_token("threadline:linking"),
            )
            for person in found.json().get("persons", []):
                held = await http.get(
                    f"{portal_stack.linking}/v1/persons/{person['person_id']}",
                    headers=mash_token("threadline:linking"),
                )
                if maya_subject in {r["subject_id"] for r in held.json()["records"]}:
                    return str(person["person_id"])
            return None

        person_id = await until(maya_person, timeout=90)

        async def caught_up() -> bool:
            answer = await http.get(
                f"{portal_stack.timeline}/v1/persons/{person_id}/timeline",
                params={"include": "household"},
                headers=mash_token("threadline:timeline"),
            )
            if answer.status_code != 200:
                return False
            entries = answer.json()["entries"]
            kinds = {(e["kind"], e["whose"].split()[0]) for e in entries}
            return {("domestic_abuse_incident", "Maya"), ("referral", "Leo")} <= kinds and any(
                e["kind"] == "referral" and e["source"]["reference"] == reference for e in entries
            )

        await until(caught_up, timeout=90)

    await page.get_by_role("link", name=re.compile("timeline, with their family")).click()
    await expect(page.get_by_role("heading", name="Whose timeline?")).to_be_visible()
    await pages.check(page, "mash-whose-timeline")
    await page.get_by_test_id("children").get_by_role("link", name=f"Maya {family.name}").click()
    await expect(page.get_by_test_id("timeline-name")).to_contain_text(f"Maya {family.name}")
    chronology = page.get_by_test_id("chronology")
    police = chronology.get_by_test_id("entry").filter(has_text="Police: domestic abuse incident")
    await expect(police).to_contain_text("PC Sam Officer")
    sibling = chronology.get_by_test_id("entry").filter(has_text="(100002)").first
    await expect(sibling.locator(".govuk-tag--purple")).to_contain_text(f"Leo {family.name}")
    await expect(sibling).to_contain_text("sibling")
    own = chronology.get_by_test_id("entry").filter(has_text=reference).first
    await expect(own).to_be_visible()
    await expect(page.get_by_test_id("flags")).to_contain_text("high risk")
    agencies = page.get_by_test_id("agencies")
    await expect(agencies).to_contain_text("Police")
    await expect(agencies).to_contain_text("Derby Central")
    await expect(page.get_by_test_id("household")).to_contain_text(f"Leo {family.name}")
    genogram = page.get_by_test_id("genogram")
    await expect(genogram).to_be_visible()
    # the tree is an image fetched after the page: wait for it to load, then check it drew
    await page.wait_for_function(
        "() => { const image = document.querySelector('[data-testid=genogram]');"
        " return image !== null && image.complete && image.naturalWidth > 0; }",
        timeout=20_000,
    )
    await pages.check(page, "mash-timeline")

    # Only the police: the filter keeps the household and the incident.
    await page.get_by_text("Show only some of it").click()
    await page.locator("#agency-3").check()  # police
    await page.get_by_role("button", name="Show", exact=True).click()
    await expect(page.get_by_test_id("chronology").get_by_test_id("entry")).to_have_count(1)
    await pages.check(page, "mash-timeline-police-only")

    # The printable chronology, for the strategy meeting.
    printable = await mash.new_page()
    response = await printable.goto(f"/mash/people/{person_id}/chronology")
    assert response is not None and response.status == 200
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    await expect(
        printable.get_by_role("heading", name=f"Chronology: Maya {family.name}")
    ).to_be_visible()
    await expect(printable.get_by_text("OFFICIAL-SENSITIVE")).to_be_visible()
    await pages.check(printable, "mash-printable-chronology")
    await printable.close()

    # Back to the referral: decide, and tell the school.
    await page.goto(referral_url)
    await page.get_by_label("Early help").check()
    await page.locator("#decision_reason").fill("Known to police; early help with the family.")
    await page.get_by_role("button", name="Save the decision").click()
    await expect(page.get_by_test_id("decision")).to_have_text("Early help")
    feedback = "We have offered the family early help. Please tell us if Maya says more."
    await page.locator("#feedback_message").fill(feedback)
    await page.get_by_role("button", name="Send feedback").click()
    await expect(page.get_by_text("Feedback sent")).to_be_visible()
    await pages.check(page, "mash-referral-feedback-sent")

    # The DSL reads the feedback.
    await dsl_page.goto(concern_url)
    await expect(dsl_page.get_by_test_id("feedback")).to_contain_text(feedback)
    await pages.check(dsl_page, "dsl-concern-feedback")

    # The DPO: the timeline reads are in the ledger, shared without consent, with their basis;
    # and the ledger is intact.
    dpo, dpo_page = await signed_in(browser, portal_stack, pages, "dpo", "dpo")
    await dpo_page.goto(
        f"/dpo/ledger?subject_id={maya_subject}&purpose=mash_triage&kind=disclosure.decided"
    )
    reads = dpo_page.get_by_test_id("entries").locator("tbody tr")
    await expect(reads.first).to_contain_text("MASH triage: reading a child's timeline")
    await expect(reads.first).to_contain_text("Shared")
    assert await reads.count() >= 3  # the summary, the chronology and the family tree
    await pages.check(dpo_page, "dpo-timeline-reads")
    await reads.first.get_by_role("link").first.click()
    await expect(dpo_page.get_by_test_id("entry")).to_contain_text("Reading the chronology")
    await pages.check(dpo_page, "dpo-timeline-read-entry")
    # Other services' decisions (notifications' messages to the referrer) may be newer, so the
    # page of disclosures without consent is searched, not read from its top.
    await dpo_page.get_by_role("link", name="Without consent").click()
    await expect(dpo_page.get_by_test_id("entries")).to_contain_text(
        "MASH triage: reading a child's timeline"
    )
    await dpo_page.get_by_role("link", name="Integrity").click()
    await dpo_page.get_by_role("button", name="Check the whole ledger").click()
    await expect(dpo_page.get_by_test_id("verification").first).to_contain_text("Intact")
    await pages.check(dpo_page, "dpo-ledger-intact")
    for context in (dsl, mash, dpo):
        await context.close()


async def test_a_timeline_the_consent_service_refuses_is_explained(
    browser: Browser, portal_stack: PortalStack, pages: Pages
) -> None:
    """Maya's parent refused consent to the MASH reading her chronology; nothing overrides it,
    so the MASH worker is told why, kindly, and that it was recorded."""
    family = Family()
    school = bearer()
    async with httpx.AsyncClient() as http:
        body = family.referral(family.maya())
        posted = await http.post(
            f"{portal_stack.referrals}/v1/referrals", json=body, headers=school
        )
        assert posted.status_code == 201, posted.text
        referral = posted.json()
        refusal = consent_body(
            uuid.UUID(referral["children"][0]["subject_id"]),
            status="refused",
            grantor_description="Maya's mother",
            recipients=["mash"],
            purposes=["mash_triage"],
        )
        recorded = await http.post(
            f"{portal_stack.consent}/v1/consents",
            json=refusal,
            headers=bearer(scopes="consent:write", audience="threadline:consent", agency="school"),
        )
        assert recorded.status_code == 201, recorded.text

        async def refused_by_the_timeline() -> bool:
            person = await http.post(
                f"{portal_stack.linking}/v1/persons/resolve",
                json={"family_name": family.name, "nhs_number": family.maya_nhs},
                headers=mash_token("threadline:linking"),
            )
            found = person.json().get("person_id")
            if not found:
                return False
            answer = await http.get(
                f"{portal_stack.timeline}/v1/persons/{found}/summary",
                headers=mash_token("threadline:timeline"),
            )
            return answer.status_code == 403

        await until(refused_by_the_timeline, timeout=90)

    context, page = await signed_in(browser, portal_stack, pages, "mash.worker", "refused")
    response = await page.goto(f"/mash/referrals/{referral['id']}/timeline")
    assert response is not None and response.status == 403
    await expect(page.get_by_role("heading", name="This timeline cannot be shown")).to_be_visible()
    await expect(page.locator(".govuk-inset-text")).to_contain_text("refused")
    await pages.check(page, "mash-timeline-refused")
    await context.close()
