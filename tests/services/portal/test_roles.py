"""Each role is refused every other role's pages and actions, and can open its own: every page
of the portal, as every role, in a real browser through the real services.

The pages are read from the app's own routes, so a page added without saying who may see it
fails here."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from fastapi.routing import APIRoute
from playwright.async_api import Browser, expect

from services.portal.app import create_app
from services.portal.settings import PortalSettings
from tests.services.portal.conftest import PortalStack
from tests.services.portal.test_browser import Pages, signed_in

pytestmark = pytest.mark.timeout(300)

DSL = frozenset({"dsl"})
MASH = frozenset({"mash_worker", "mash_manager"})
MANAGER = frozenset({"mash_manager"})
DPO = frozenset({"dpo"})
PEOPLE = {"dsl": "dsl.oakfield", "mash_worker": "mash.worker", "mash_manager": "mash.manager"}
PEOPLE["dpo"] = "dpo"
UNKNOWN = uuid.UUID(int=1)

#: Every page: who may see it, an address of it, and what its owner gets there (404 for an
#: address of something that does not exist, which still proves the page was not refused).
PAGES: dict[str, tuple[frozenset[str], str, int]] = {
    "/referrals": (DSL, "/referrals", 200),
    "/referrals/new": (DSL, "/referrals/new", 200),
    "/referrals/{referral_id}": (DSL, f"/referrals/{UNKNOWN}", 404),
    "/notifications": (DSL, "/notifications", 200),
    "/notifications/{message_id}": (DSL, f"/notifications/{UNKNOWN}", 404),
    "/mash/queue": (MASH, "/mash/queue", 200),
    "/mash/referrals/{referral_id}": (MASH, f"/mash/referrals/{UNKNOWN}", 404),
    "/mash/referrals/{referral_id}/timeline": (MASH, f"/mash/referrals/{UNKNOWN}/timeline", 404),
    "/mash/escalations": (MANAGER, "/mash/escalations", 200),
    "/mash/people": (MASH, "/mash/people", 200),
    "/mash/people/{person_id}": (MASH, f"/mash/people/{UNKNOWN}", 404),
    "/mash/people/{person_id}/timeline": (MASH, f"/mash/people/{UNKNOWN}/timeline", 404),
    "/mash/people/{person_id}/genogram.svg": (MASH, f"/mash/people/{UNKNOWN}/genogram.svg", 404),
    "/mash/people/{person_id}/chronology": (MASH, f"/mash/people/{UNKNOWN}/chronology", 404),
    "/mash/links": (MASH, "/mash/links", 200),
    "/dpo": (DPO, "/dpo", 200),
    "/dpo/ledger": (DPO, "/dpo/ledger", 200),
    "/dpo/ledger/{sequence}": (DPO, "/dpo/ledger/999999999", 404),
    "/dpo/disclosures": (DPO, "/dpo/disclosures", 200),
    "/dpo/withdrawals": (DPO, "/dpo/withdrawals", 200),
    "/dpo/integrity": (DPO, "/dpo/integrity", 200),
    "/dpo/subjects": (DPO, "/dpo/subjects", 200),
    "/dpo/subjects/{subject_id}/export.{form}": (
        DPO,
        f"/dpo/subjects/{UNKNOWN}/export.json",
        200,
    ),
    "/dpo/retention": (DPO, "/dpo/retention", 200),
}
#: Every action (POST), and who may take it.
ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    "/referrals/new": (DSL, "/referrals/new"),
    "/notifications/{message_id}/acknowledge": (DSL, f"/notifications/{UNKNOWN}/acknowledge"),
    "/mash/referrals/{referral_id}/{action}": (MASH, f"/mash/referrals/{UNKNOWN}/decision"),
    "/mash/people": (MASH, "/mash/people"),
    "/mash/merges/{merge_id}/unmerge": (MASH, f"/mash/merges/{UNKNOWN}/unmerge"),
    "/mash/links/{review_id}": (MASH, f"/mash/links/{UNKNOWN}"),
    "/dpo/integrity": (DPO, "/dpo/integrity"),
}
#: Pages for everyone (signed in or not), and signing out.
PUBLIC = {"/", "/healthz", "/readyz", "/sign-in", "/auth/callback", "/signed-out", "/sign-out"}


def _routes(routes: list[Any]) -> list[APIRoute]:
    """The app's routes, through the routers it includes (the portal's have no prefixes)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found += _routes(route.original_router.routes)
    return found


def test_every_page_and_action_says_who_may_use_it() -> None:
    routes = _routes(create_app(PortalSettings()).routes)
    gets = {r.path for r in routes if "GET" in (r.methods or ())} - PUBLIC
    posts = {r.path for r in routes if "POST" in (r.methods or ())} - PUBLIC
    assert gets == set(PAGES), "declare who may see each page in PAGES"
    assert posts == set(ACTIONS), "declare who may take each action in ACTIONS"


async def test_each_role_is_refused_every_other_roles_pages_and_actions(
    browser: Browser, portal_stack: PortalStack, pages: Pages
) -> None:
    for role, username in PEOPLE.items():
        name = username.replace(".", "-")
        context, page = await signed_in(browser, portal_stack, pages, username, name)
        home = await page.content()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', home)
        assert csrf is not None, "the home page has the sign-out form"
        for template, (allowed, path, status) in PAGES.items():
            if role in allowed:
                if status == 200 and "{" not in template:
                    shown = await page.goto(path)
                    assert shown is not None and shown.status == 200, (role, path)
                    await pages.check(page, f"{name}{path.replace('/', '-')}")
                    continue
                answered = await context.request.get(path, max_redirects=0)
                assert answered.status == status, (role, path, answered.status)
                continue
            refused = await context.request.get(path, max_redirects=0)
            assert refused.status == 403, (role, path, refused.status)
            assert "You cannot see this page" in await refused.text()
        for template, (allowed, path) in ACTIONS.items():
            if role in allowed:
                continue
            # With the person's own, valid CSRF token: refused for the role, not the token.
            response = await context.request.post(
                path, form={"csrf_token": csrf.group(1)}, max_redirects=0
            )
            assert response.status == 403, (role, template, response.status)
            assert "This page is for other people" in await response.text()
        other = next(path for _, (allowed, path, _) in PAGES.items() if role not in allowed)
        await page.goto(other)
        await expect(page.get_by_role("heading", name="You cannot see this page")).to_be_visible()
        await pages.check(page, f"{name}-refused")
        await context.close()
