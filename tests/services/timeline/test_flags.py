"""Each pattern flag: raised when its pattern is there, silent when it is not, explained in words
with the entries that raised it, and configurable."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.timeline import flags
from services.timeline.flags import Line
from services.timeline.settings import TimelineSettings

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
ME = uuid.uuid4()
SETTINGS = TimelineSettings()


def line(kind: str, days: float, person: uuid.UUID = ME, **facts: Any) -> Line:
    decision = facts.pop("decision", None)
    decided_after = facts.pop("decided_after", None)
    return Line(
        entry_id=uuid.uuid4(),
        person_id=person,
        occurred_at=T0 + timedelta(days=days),
        kind=kind,
        facts=facts,
        decision=decision,
        decided_at=T0 + timedelta(days=days + decided_after) if decided_after else None,
        source_id=uuid.uuid4(),
    )


def codes(lines: list[Line], siblings: list[Line] | None = None, unborn: bool = False) -> set:
    return {f.code for f in flags.evaluate(lines, siblings or [], SETTINGS, unborn=unborn)}


def test_three_contacts_in_twelve_months_and_not_across_fourteen() -> None:
    close = [
        line("referral", 0),
        line("domestic_abuse_incident", 100),
        line("unscheduled_care", 300),
    ]
    raised = flags.repeat_contacts(close, SETTINGS)
    assert raised is not None
    assert raised.entry_ids == [entry.entry_id for entry in close]
    assert "3 referrals or contacts between 5 January 2026 and 1 November 2026" in (
        raised.explanation
    )
    apart = [line("referral", 0), line("referral", 200), line("referral", 420)]
    assert flags.repeat_contacts(apart, SETTINGS) is None
    # lifecycle lines are not contacts
    steps = [line("referral", 0), line("referral_decided", 1), line("referral_feedback", 2)]
    assert flags.repeat_contacts(steps, SETTINGS) is None
    # and the threshold is the partnership's to set
    stricter = TimelineSettings(flag_repeat_contacts=4)
    assert flags.repeat_contacts(close, stricter) is None


def test_unscheduled_care_at_different_hospitals_within_six_months() -> None:
    two_sites = [
        line("unscheduled_care", 0, hospital="RTG01"),
        line("unscheduled_care", 90, hospital="RK5BC"),
    ]
    raised = flags.unscheduled_care(two_sites, SETTINGS)
    assert raised is not None and "RK5BC, RTG01" in raised.explanation
    same_site = [
        line("unscheduled_care", 0, hospital="RTG01"),
        line("unscheduled_care", 30, hospital="RTG01"),
    ]
    assert flags.unscheduled_care(same_site, SETTINGS) is None
    too_far = [
        line("unscheduled_care", 0, hospital="RTG01"),
        line("unscheduled_care", 200, hospital="RK5BC"),
    ]
    assert flags.unscheduled_care(too_far, SETTINGS) is None


def test_domestic_abuse_with_the_child_present() -> None:
    incidents = [
        line("domestic_abuse_incident", 0, child_present=True, risk_level="standard"),
        line("domestic_abuse_incident", 40, child_present=True, risk_level="high"),
    ]
    raised = flags.domestic_abuse(incidents, SETTINGS)
    assert raised is not None
    assert raised.title == "Domestic abuse with the child present (2 incidents)"
    assert "1 assessed as high risk" in raised.explanation
    assert flags.domestic_abuse([line("referral", 0)], SETTINGS) is None


def test_repeated_missing_episodes_from_referrals_and_school() -> None:
    episodes = [
        line("referral", 0, categories=["missing_from_home"]),
        line("school_attendance", 60, attendance_kind="missing_education"),
    ]
    assert flags.repeat_missing(episodes, SETTINGS) is not None
    assert flags.repeat_missing(episodes[:1], SETTINGS) is None
    other = [line("referral", 0, categories=["neglect"]), line("referral", 10, categories=["fgm"])]
    assert flags.repeat_missing(other, SETTINGS) is None


def test_closed_with_no_further_action_then_referred_again_within_three_months() -> None:
    closed = line("referral", 0, reference="R1", decision="no_further_action", decided_after=2)
    again = line("referral", 60, reference="R2")
    raised = flags.closed_then_referred([closed, again], SETTINGS)
    assert raised is not None and raised.entry_ids == [closed.entry_id, again.entry_id]
    assert "Referral R1 was closed with no further action" in raised.explanation
    late = line("referral", 200, reference="R3")
    assert flags.closed_then_referred([closed, late], SETTINGS) is None
    helped = line("referral", 0, reference="R4", decision="early_help", decided_after=2)
    assert flags.closed_then_referred([helped, again], SETTINGS) is None


def test_a_prebirth_concern_where_an_older_sibling_has_a_protection_history() -> None:
    brother = uuid.uuid4()
    prebirth = [line("referral", 100, unborn=True)]
    plan = [line("child_protection_plan", 0, brother, change="started")]
    assert codes(prebirth, plan, unborn=True) == {"prebirth_sibling_protection_history"}
    assert codes(prebirth, plan, unborn=False) == set()
    strategy = [
        line("referral", 0, brother, decision="section_47_strategy_discussion", decided_after=1)
    ]
    assert "prebirth_sibling_protection_history" in codes(prebirth, strategy, unborn=True)
    assert codes(prebirth, [line("referral", 0, brother)], unborn=True) == set()
