"""How the APIs' values read on a page: plain words, London time, deadlines and their state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.portal.forms import CATEGORIES, RELATIONSHIPS

LONDON = ZoneInfo("Europe/London")

STATUS = {
    "received": "Waiting to be acknowledged",
    "acknowledged": "Acknowledged",
    "decided": "Decision made",
    "assessment_completed": "Assessment completed",
    "reopened": "Reopened",
}
STATUS_COLOUR = {
    "received": "blue",
    "acknowledged": "light-blue",
    "decided": "green",
    "assessment_completed": "grey",
    "reopened": "orange",
}
DEADLINE = {
    "acknowledgement": "Acknowledge",
    "decision": "Decide what happens next",
    "feedback": "Tell the referrer what happened",
    "phone_follow_up": "Referrer to confirm a phone referral in writing",
    "assessment": "Finish the assessment",
}
DEADLINE_STATUS = {
    "pending": "Due",
    "met": "Done on time",
    "met_late": "Done late",
    "missed": "Missed",
    "cancelled": "No longer needed",
}
DECISION = {
    "no_further_action": "No further action",
    "advice_and_signposting": "Advice and signposting",
    "early_help": "Early help",
    "section_17_assessment": "Assessment of a child in need (section 17)",
    "section_47_strategy_discussion": "Strategy discussion: child protection (section 47)",
    "already_open_to_a_worker": "Already working with a social worker",
}
RAG = {"red": ("Red", "red"), "amber": ("Amber", "yellow"), "green": ("Green", "green")}
CATEGORY = dict(CATEGORIES)
RELATIONSHIP = dict(RELATIONSHIPS)
CONSENT = {
    "agreed": "Agreed",
    "refused": "Did not agree",
    "not_asked": "Not asked",
}


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def when(value: str | datetime | None) -> str:
    """``22 November 2026 at 5:30pm`` in London time (GOV.UK style for dates and times)."""
    moment = parse_time(value) if isinstance(value, str) or value is None else value
    if moment is None:
        return ""
    local = moment.astimezone(LONDON)
    if (local.hour, local.minute, local.second) == (0, 0, 0):
        # A working-day deadline ends at midnight: say which day it is the end of.
        previous = (local - timedelta(seconds=1)).date()
        return f"the end of {previous.day} {previous.strftime('%B %Y')}"
    hour = local.strftime("%I").lstrip("0") or "12"
    clock = f"{hour}:{local.strftime('%M')}{local.strftime('%p').lower()}"
    return f"{local.day} {local.strftime('%B %Y')} at {clock}"


def day(value: str | None) -> str:
    if not value:
        return ""
    moment = datetime.fromisoformat(value)
    return f"{moment.day} {moment.strftime('%B %Y')}"


def next_deadline(referral: dict[str, Any]) -> dict[str, Any] | None:
    """The soonest deadline still running; of two due at once, the one done first in the
    order of work (acknowledge before deciding)."""
    order = list(DEADLINE)
    pending = [d for d in referral.get("deadlines", []) if d["status"] == "pending"]

    def key(deadline: dict[str, Any]) -> tuple[str, int]:
        kind = deadline["kind"]
        return deadline["due_at"], order.index(kind) if kind in order else len(order)

    return min(pending, key=key) if pending else None


def overdue(referral: dict[str, Any], now: datetime) -> bool:
    """A deadline was missed, or one still running is past due."""
    for deadline in referral.get("deadlines", []):
        if deadline["status"] == "missed":
            return True
        due = parse_time(deadline["due_at"])
        if deadline["status"] == "pending" and due is not None and due < now:
            return True
    return False


def feedback_given(referral: dict[str, Any]) -> bool:
    """Only feedback meets the feedback deadline, so a met one means feedback was given (the
    list's summaries carry deadlines, not the feedback itself)."""
    return any(
        d["kind"] == "feedback" and d["status"] in {"met", "met_late"}
        for d in referral.get("deadlines", [])
    )


def queue_order(referrals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Soonest running deadline first; referrals with none running last, newest first."""

    def key(referral: dict[str, Any]) -> tuple[int, str]:
        deadline = next_deadline(referral)
        if deadline is None:
            return (1, "")
        return (0, deadline["due_at"])

    ordered = sorted(referrals, key=lambda r: r["received_at"], reverse=True)
    return sorted(ordered, key=key)


def filters() -> dict[str, Any]:
    return {
        "when": when,
        "day": day,
        "status_text": lambda value: STATUS.get(value, value.replace("_", " ").capitalize()),
        "status_colour": lambda value: STATUS_COLOUR.get(value, "grey"),
        "deadline_text": lambda value: DEADLINE.get(value, value.replace("_", " ").capitalize()),
        "deadline_status": lambda value: DEADLINE_STATUS.get(value, value),
        "decision_text": lambda value: DECISION.get(value, value or ""),
        "category_text": lambda value: CATEGORY.get(value, value),
        "relationship_text": lambda value: RELATIONSHIP.get(value, value),
        "consent_text": lambda value: CONSENT.get(value, value),
        "rag_text": lambda value: RAG.get(value, (value, "grey"))[0] if value else "Not rated",
        "rag_colour": lambda value: RAG.get(value, (value, "grey"))[1] if value else "grey",
    }
