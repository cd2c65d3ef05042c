"""A stack of real service processes for the attack suites: the test stack's PostgreSQL and
Kafka, every service as its own process, trusting the test issuer as well as the stack's own
development identity provider, so that tests/support/tokens.py mints tokens they accept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from deploy.local.stack import Stack
from tests.support.tokens import ISSUER, test_issuer

#: The API services schemathesis drives (identity and portal are tried by their own tests).
APIS = ("referrals", "consent", "notifications", "linking", "timeline")


@contextmanager
def processes(stack: Stack, services: tuple[str, ...] = ("identity", *APIS)) -> Iterator[Stack]:
    """Run ``services`` as processes on the stack's service ports; stop them afterwards."""
    trusted = [
        {"issuer": stack.url("identity"), "jwks_uri": f"{stack.url('identity')}/jwks.json"},
        test_issuer().model_dump(exclude_none=True),
    ]
    before = dict(stack.extra_env)
    stack.extra_env.update(
        {
            "THREADLINE_AUTH_ISSUERS": json.dumps(trusted),
            # schemathesis sends thousands of requests from one client: the rate limit is tried
            # by its own test, not tripped here.
            "THREADLINE_RATE_LIMIT_PER_SECOND": "100000",
            "THREADLINE_RATE_LIMIT_BURST": "100000",
        }
    )
    try:
        stack.start_services(services)
        yield stack
    finally:
        for service in reversed(services):
            stack.stop_service(service)
        stack.extra_env.clear()
        stack.extra_env.update(before)  # the session's stack is shared with later tests


__all__ = ["APIS", "ISSUER", "processes"]
