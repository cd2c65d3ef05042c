"""The attack suites: results are written once the session ends (see results.py)."""

from __future__ import annotations

import pytest

from tests.security import results


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if "schemathesis" not in results.FINDINGS:
        return  # `make test` runs the fast suites only; the file is `make security`'s
    results.write()
    terminalreporter.write_sep("=", "security (bench/results/security.json)")
    terminalreporter.write_line(results.table())
