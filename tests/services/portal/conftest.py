"""The portal's test stack: the real identity provider, consent, referrals, notifications,
linking, timeline and portal as processes (a browser needs real ports), on the session's
PostgreSQL and Kafka; and a headless Debian Chromium driven by Playwright.

The services trust the stack's identity provider and also the tests' own issuer
(``tests/support/tokens.py``), so a test can act as an agency system with scopes no demo client
has (a school recording and withdrawing consent, for the DPO's pages)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy.local.stack import REPO_ROOT, Stack
from tests.support.tokens import test_issuer

PORTAL_PROCESSES = (
    "identity",
    "consent",
    "referrals",
    "notifications",
    "linking",
    "timeline",
    "portal",
)
CHROMIUM = os.environ.get("THREADLINE_CHROMIUM", "/usr/bin/chromium")
AXE = REPO_ROOT / "services" / "portal" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO_ROOT / "test-results" / "portal"


@dataclass(frozen=True)
class PortalStack:
    portal: str
    identity: str
    referrals: str
    notifications: str
    consent: str
    linking: str
    timeline: str


@pytest.fixture(scope="package")
def portal_stack(stack: Stack) -> Iterator[PortalStack]:
    """Started for the portal's tests and stopped after them: the services' processes join the
    consumer groups that in-process tests elsewhere use, so they must not outlive this package."""
    identity = stack.url("identity")
    issuers = [
        {"issuer": identity, "jwks_uri": f"{identity}/jwks.json"},
        test_issuer().model_dump(exclude_none=True),
    ]
    env = {
        "THREADLINE_LOG_JSON": "true",
        "THREADLINE_TIMERS_POLL_SECONDS": "0.5",
        "THREADLINE_AUTH_ISSUERS": json.dumps(issuers),
    }
    try:
        for name in PORTAL_PROCESSES:
            stack.start_service(name, env)
        for name in PORTAL_PROCESSES:
            stack.wait_service_ready(name, timeout=90)
        yield PortalStack(
            portal=stack.url("portal"),
            identity=stack.url("identity"),
            referrals=stack.url("referrals"),
            notifications=stack.url("notifications"),
            consent=stack.url("consent"),
            linking=stack.url("linking"),
            timeline=stack.url("timeline"),
        )
    finally:
        for name in reversed(PORTAL_PROCESSES):
            stack.stop_service(name)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


@pytest.fixture(scope="module")
def pages(screenshots: Path, request: pytest.FixtureRequest) -> Any:
    """Screenshots and axe-core checks, into a folder named after the test module."""
    from tests.services.portal.test_browser import Pages

    directory = screenshots / request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    directory.mkdir(exist_ok=True)
    return Pages(directory)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-sync",
                "--disable-domain-reliability",
                "--no-first-run",
                "--metrics-recording-only",
            ],
        )
        try:
            yield chromium
        finally:
            await chromium.close()
