"""schemathesis against every API service's OpenAPI, as real processes with real tokens: its
examples, coverage, fuzzing and stateful phases (links inferred from the schemas), with the checks
an attacker's view needs. Target: no server error, no ignored auth, no use after free, every
negative (schema-violating) request rejected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.stack import REPO_ROOT, Stack
from tests.security import results
from tests.security.stack import processes
from tests.support.tokens import token

pytestmark = [pytest.mark.security, pytest.mark.timeout(3600)]

CHECKS = ("not_a_server_error", "ignored_auth", "use_after_free", "negative_data_rejection")
#: The failure each check reports, counted (as 0 too) in the results.
KINDS = ("ServerError", "IgnoredAuth", "UseAfterFree", "AcceptedNegativeData")
#: Test cases per operation and phase; `THREADLINE_SECURITY_EXAMPLES` raises it for a longer run.
EXAMPLES = int(os.environ.get("THREADLINE_SECURITY_EXAMPLES", "25"))
SEED = int(os.environ.get("THREADLINE_SECURITY_SEED", "20261122"))

#: Who each run is: a caller holding every scope the service's routes admit, with its audience
#: (None: no token; the identity provider's endpoints are how a caller gets one).
RUNS: dict[str, tuple[str, dict[str, object] | None]] = {
    "identity": ("identity", None),
    "referrals (school)": (
        "referrals",
        {"scopes": "referrals:write referrals:read contacts:write"},
    ),
    "referrals (mash)": (
        "referrals",
        {"organisation": "MASH-DEMO", "agency": "mash", "scopes": "referrals:read mash:triage"},
    ),
    "consent": (
        "consent",
        {
            "organisation": "MASH-DEMO",
            "agency": "mash",
            "scopes": "disclosures:decide consent:write consent:audit",
            "audience": "threadline:consent",
        },
    ),
    "notifications": (
        "notifications",
        {"scopes": "referrals:read", "audience": "threadline:notifications"},
    ),
    "linking": (
        "linking",
        {
            "organisation": "MASH-DEMO",
            "agency": "mash",
            "scopes": "mash:triage",
            "audience": "threadline:linking",
        },
    ),
    "timeline": (
        "timeline",
        {
            "organisation": "MASH-DEMO",
            "agency": "mash",
            "scopes": "mash:triage",
            "audience": "threadline:timeline",
        },
    ),
}


def _command(url: str, bearer: str | None, report: Path) -> list[str]:
    authorization = ["--header", f"Authorization: Bearer {bearer}"] if bearer else []
    return [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{url}/openapi.json",
        *authorization,
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--exclude-path-regex",
        "^/(healthz|readyz|metrics)$",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--request-timeout",
        "30",
    ]


def test_schemathesis_finds_no_failure_in_any_service(stack: Stack, tmp_path: Path) -> None:
    with processes(stack):
        running = {}
        for run, (service, claims) in RUNS.items():
            bearer = None
            if claims is not None:
                audience = claims.get("audience", f"threadline:{service}")
                bearer = token(**{**claims, "audience": audience})  # type: ignore[arg-type]
            report = tmp_path / f"{service}-{len(running)}.json"
            log = (tmp_path / f"{service}-{len(running)}.log").open("wb")
            process = subprocess.Popen(
                _command(stack.url(service), bearer, report),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
            running[run] = (process, report, Path(log.name))
        reports = {}
        for run, (process, report, log) in running.items():
            process.wait(timeout=3000)
            assert report.exists(), f"schemathesis wrote no report for {run}:\n{log.read_text()}"
            reports[run] = (json.loads(report.read_text()), log)

    failures: dict[str, list[str]] = {}
    for run, (report, log) in reports.items():
        found = {failure["type"]: failure["count"] for failure in report["failures"]}
        kinds = {kind: found.get(kind, 0) for kind in KINDS} | found
        results.record(
            "schemathesis",
            operations=report["operations"]["tested"],
            cases=report["test_cases"]["generated"],
            failures=sum(kinds.values()),
            errors=len(report["errors"]),
            failures_by_kind=kinds,
        )
        results.describe(
            "schemathesis", checks=list(CHECKS), examples_per_operation=EXAMPLES, seed=SEED
        )
        results.record("schemathesis", runs={run: 1})
        if any(kinds.values()) or report["errors"]:
            failures[run] = [str(kinds), str(report["errors"])[:2000], log.read_text()[-6000:]]
    assert not failures, json.dumps(failures, indent=1)
