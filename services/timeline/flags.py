"""Pattern flags: what a chronology shows when its entries are read together.

"Each referral was treated as a different episode and the evidence was not looked at altogether"
(Star Hobson review). Each flag is configurable (``THREADLINE_TIMELINE_FLAG_*``), says in words
why it was raised, and names the entries that raised it, so that the worker can check it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.timeline.rows import CONTACT_KINDS
from services.timeline.settings import TimelineSettings
from shared.calendar import LONDON

MISSING_CATEGORIES = frozenset({"missing_from_home", "missing_from_education"})
#: Decisions and contacts that mean a child has a protection history.
PROTECTION_DECISIONS = frozenset({"section_47_strategy_discussion"})


@dataclass(frozen=True)
class Line:
    """What a flag needs of one chronology entry."""

    entry_id: uuid.UUID
    person_id: uuid.UUID
    occurred_at: datetime
    kind: str
    facts: dict[str, Any]
    decision: str | None = None
    decided_at: datetime | None = None
    source_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Flag:
    code: str
    title: str
    explanation: str
    entry_ids: list[uuid.UUID] = field(default_factory=list)


def _day(moment: datetime) -> str:
    return moment.astimezone(LONDON).strftime("%-d %B %Y")


def _window(lines: Sequence[Line], count: int, days: int) -> list[Line] | None:
    """The first run of ``count`` lines (sorted by time) that fall within ``days``, widened to
    every line inside that window, or None."""
    ordered = sorted(lines, key=lambda line: (line.occurred_at, line.entry_id))
    span = timedelta(days=days)
    for start in range(len(ordered) - count + 1):
        end = start + count - 1
        if ordered[end].occurred_at - ordered[start].occurred_at <= span:
            while (
                end + 1 < len(ordered)
                and ordered[end + 1].occurred_at - ordered[start].occurred_at <= span
            ):
                end += 1
            return ordered[start : end + 1]
    return None


def _months(days: int) -> str:
    months = round(days / 30.4)
    return "twelve months" if months == 12 else f"{months} months"


def repeat_contacts(lines: Sequence[Line], settings: TimelineSettings) -> Flag | None:
    contacts = [
        line
        for line in lines
        if line.kind in CONTACT_KINDS and line.facts.get("subject_role", "child") == "child"
    ]
    found = _window(contacts, settings.flag_repeat_contacts, settings.flag_repeat_contacts_days)
    if found is None:
        return None
    kinds = sorted({line.kind.replace("_", " ") for line in found})
    return Flag(
        "repeat_contacts",
        f"{len(found)} contacts in {_months(settings.flag_repeat_contacts_days)}",
        f"{len(found)} referrals or contacts between {_day(found[0].occurred_at)} and "
        f"{_day(found[-1].occurred_at)} ({', '.join(kinds)}). Read them together: a new "
        "concern may be one more in a pattern, not a first.",
        [line.entry_id for line in found],
    )


def unscheduled_care(lines: Sequence[Line], settings: TimelineSettings) -> Flag | None:
    visits = sorted(
        (line for line in lines if line.kind == "unscheduled_care"),
        key=lambda line: (line.occurred_at, line.entry_id),
    )
    span = timedelta(days=settings.flag_unscheduled_care_days)
    for start, first in enumerate(visits):
        window = [v for v in visits[start:] if v.occurred_at - first.occurred_at <= span]
        hospitals = {str(v.facts.get("hospital")) for v in window}
        if len(window) >= settings.flag_unscheduled_care and len(hospitals) >= 2:
            return Flag(
                "unscheduled_care_different_hospitals",
                f"{len(window)} unscheduled-care attendances at {len(hospitals)} hospitals",
                f"Attended unscheduled care {len(window)} times between "
                f"{_day(window[0].occurred_at)} and {_day(window[-1].occurred_at)} at "
                f"different sites "
                f"({', '.join(sorted(hospitals))}). Families who move between A&E departments can "
                "keep each one from seeing the whole picture.",
                [v.entry_id for v in window],
            )
    return None


def domestic_abuse(lines: Sequence[Line], settings: TimelineSettings) -> Flag | None:
    incidents = [
        line
        for line in lines
        if line.kind == "domestic_abuse_incident" and line.facts.get("child_present")
    ]
    if len(incidents) < settings.flag_domestic_abuse:
        return None
    incidents.sort(key=lambda line: (line.occurred_at, line.entry_id))
    high = sum(1 for line in incidents if line.facts.get("risk_level") == "high")
    count = len(incidents)
    return Flag(
        "domestic_abuse_child_present",
        "Domestic abuse with the child present" + (f" ({count} incidents)" if count > 1 else ""),
        f"The police recorded {count} domestic abuse incident{'s' if count > 1 else ''} at "
        f"which this child was present, the latest on {_day(incidents[-1].occurred_at)}"
        + (f"; {high} assessed as high risk" if high else "")
        + ".",
        [line.entry_id for line in incidents],
    )


def repeat_missing(lines: Sequence[Line], settings: TimelineSettings) -> Flag | None:
    episodes = [
        line
        for line in lines
        if (line.kind == "referral" and MISSING_CATEGORIES & set(line.facts.get("categories", [])))
        or (
            line.kind == "school_attendance"
            and line.facts.get("attendance_kind") == "missing_education"
        )
    ]
    found = _window(episodes, settings.flag_missing, settings.flag_missing_days)
    if found is None:
        return None
    return Flag(
        "repeat_missing",
        f"Missing {len(found)} times in {_months(settings.flag_missing_days)}",
        f"{len(found)} episodes of going missing from home or education between "
        f"{_day(found[0].occurred_at)} and {_day(found[-1].occurred_at)}. Repeated missing "
        "episodes can be a sign of exploitation.",
        [line.entry_id for line in found],
    )


def closed_then_referred(lines: Sequence[Line], settings: TimelineSettings) -> Flag | None:
    referrals = sorted(
        (line for line in lines if line.kind == "referral"),
        key=lambda line: (line.occurred_at, line.entry_id),
    )
    span = timedelta(days=settings.flag_nfa_rereferral_days)
    for closed in referrals:
        if closed.decision != "no_further_action" or closed.decided_at is None:
            continue
        for later in referrals:
            if later.source_id == closed.source_id or later.occurred_at < closed.decided_at:
                continue
            if later.occurred_at - closed.decided_at <= span:
                return Flag(
                    "closed_then_referred_again",
                    "Closed with no further action, then referred again",
                    f"Referral {closed.facts.get('reference')} was closed with no further action "
                    f"on {_day(closed.decided_at)}; referral {later.facts.get('reference')} "
                    f"followed on {_day(later.occurred_at)}, within "
                    f"{_months(settings.flag_nfa_rereferral_days)}.",
                    [closed.entry_id, later.entry_id],
                )
    return None


def prebirth_sibling_history(
    lines: Sequence[Line], sibling_lines: Sequence[Line], *, unborn: bool
) -> Flag | None:
    if not unborn:
        return None
    prebirth = [line for line in lines if line.kind == "referral" and line.facts.get("unborn")]
    history = [
        line
        for line in sibling_lines
        if (line.kind == "child_protection_plan" and line.facts.get("change") == "started")
        or (line.kind == "referral" and line.decision in PROTECTION_DECISIONS)
    ]
    if not prebirth or not history:
        return None
    return Flag(
        "prebirth_sibling_protection_history",
        "Pre-birth concern, and an older sibling has a protection history",
        f"This unborn child is the subject of a pre-birth referral, and {len(history)} "
        "entr"
        + ("ies" if len(history) > 1 else "y")
        + " in an older sibling's history show child protection (a plan or a section 47 "
        "strategy discussion). Consider a pre-birth assessment.",
        [line.entry_id for line in prebirth + history],
    )


def evaluate(
    lines: Sequence[Line],
    sibling_lines: Sequence[Line],
    settings: TimelineSettings,
    *,
    unborn: bool,
) -> list[Flag]:
    found = [
        repeat_contacts(lines, settings),
        unscheduled_care(lines, settings),
        domestic_abuse(lines, settings),
        repeat_missing(lines, settings),
        closed_then_referred(lines, settings),
        prebirth_sibling_history(lines, sibling_lines, unborn=unborn),
    ]
    return [flag for flag in found if flag is not None]
