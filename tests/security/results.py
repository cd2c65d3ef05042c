"""The attack suites' findings, gathered as they run and written to bench/results/security.json
(with a short table) at the end of a session that ran the schemathesis suite (`make security`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deploy.local.stack import REPO_ROOT

RESULTS_FILE = REPO_ROOT / "bench" / "results" / "security.json"
FINDINGS: dict[str, dict[str, Any]] = {}


def record(section: str, **counts: Any) -> None:
    """Add ``counts`` to ``section``: numbers are summed, anything else replaced."""
    found = FINDINGS.setdefault(section, {})
    for key, value in counts.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            found[key] = found.get(key, 0) + value
        elif isinstance(value, dict) and isinstance(found.get(key), dict):
            for name, number in value.items():
                found[key][name] = found[key].get(name, 0) + number
        else:
            found[key] = value


def describe(section: str, **values: Any) -> None:
    """Set facts about ``section`` (its settings), replacing rather than summing."""
    FINDINGS.setdefault(section, {}).update(values)


def table() -> str:
    rows = []
    for section, counts in FINDINGS.items():
        tried = counts.get("tried", counts.get("cases", ""))
        bad = counts.get("unexpected", counts.get("failures", ""))
        rows.append(f"{section:<28} {tried!s:>8} {bad!s:>11}")
    return "\n".join([f"{'suite':<28} {'tried':>8} {'unexpected':>11}", *rows])


def write(path: Path = RESULTS_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(FINDINGS, indent=2, sort_keys=True) + "\n")
