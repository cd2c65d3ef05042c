"""`make chaos` in its quick mode: every kind of fault once or more under a mixed load, then
nothing lost, nothing done twice, the ledger intact (bench/chaos.py, docs/chaos.md)."""

from __future__ import annotations

import os

import pytest

from bench import chaos

pytestmark = [pytest.mark.slow, pytest.mark.chaos]


def test_faults_under_load_lose_nothing_and_do_nothing_twice() -> None:
    base = int(os.environ.get("THREADLINE_TEST_PORT_BASE", 24330)) + 200
    result = chaos.run(quick=True, name="chaos-test", base=base)

    assert set(result["faults_by_kind"]) == set(chaos.KINDS), result["faults"]
    assert result["accepted"]["referrals"] > 0
    assert result["accepted"]["contacts"] > 0
    assert result["lost"] == 0, result["checks"]
    assert result["duplicated_effects"] == 0, result["checks"]
    assert result["ledger_verified"], result["ledger_output"]
    assert result["unrecovered_faults"] == 0, result["faults"]
