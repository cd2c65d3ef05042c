"""What Threadline says to whom: each kind of message as a draft, its text in plain English.

Pure: no I/O. A draft names its recipient and, when it carries personal data out of the sender's
hands, the disclosure it needs (the consent service decides it before anything is sent).

"Language that cares" (Salford, seed 002): say what happened, what to do, whom to call; no
jargon where a plain word will do.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from shared.calendar import LONDON

# The kinds of message (also the routing file's and the preferences' vocabulary).
REFERRAL_ACKNOWLEDGED = "referral.acknowledged"
REFERRAL_DECIDED = "referral.decided"
REFERRAL_FEEDBACK = "referral.feedback"
REFERRAL_OVERDUE = "referral.overdue"
REFERRAL_PHONE_CONFIRMATION = "referral.phone_confirmation"
DEADLINE_MISSED = "deadline.missed"
ENCOMPASS_NOTICE = "encompass.notice"
ENCOMPASS_ESCALATION = "encompass.escalation"
CPIS_ALERT = "cpis.alert"
CPIS_ANSWER = "cpis.answer"
CONSENT_WITHDRAWN = "consent.withdrawn"
KINDS = (
    REFERRAL_ACKNOWLEDGED,
    REFERRAL_DECIDED,
    REFERRAL_FEEDBACK,
    REFERRAL_OVERDUE,
    REFERRAL_PHONE_CONFIRMATION,
    DEADLINE_MISSED,
    ENCOMPASS_NOTICE,
    ENCOMPASS_ESCALATION,
    CPIS_ALERT,
    CPIS_ANSWER,
    CONSENT_WITHDRAWN,
)
# Kinds the recipient is asked to acknowledge.
TO_ACKNOWLEDGE = frozenset({ENCOMPASS_NOTICE, CPIS_ALERT})


@dataclass(frozen=True)
class Party:
    organisation: str
    agency: str
    role: str
    name: str | None = None


@dataclass(frozen=True)
class Disclosure:
    """The ICO request-template fields a message's disclosure is asked with (subjects aside)."""

    purpose: str
    data_categories: tuple[str, ...]
    lawful_basis: str
    why_consent_not_sought: str
    necessity: str
    minimisation: str
    special_category: bool = False
    article9_condition: str | None = None
    schedule1_condition: str | None = None
    paragraph18_reason: str | None = None

    def request(self, sender: Party, recipient: Party, agreement_id: str) -> dict[str, Any]:
        """The decision point's request body, without ``subject_ids`` (added when asking)."""
        automated = {"name": "Threadline notifications", "role": "automated notification"}
        return {
            "requester": {
                "organisation_code": sender.organisation,
                "agency": sender.agency,
                "name": "Threadline notifications",
                "role": f"on behalf of {sender.organisation}",
            },
            "recipient": {
                "agency": recipient.agency,
                "organisation_code": recipient.organisation,
                **({"user": recipient.name} if recipient.name else {}),
            },
            "data_categories": list(self.data_categories),
            "special_category": self.special_category,
            "purpose": self.purpose,
            "lawful_basis": self.lawful_basis,
            "article9_condition": self.article9_condition,
            "schedule1_condition": self.schedule1_condition,
            "paragraph18_reason": self.paragraph18_reason,
            "consent": {"sought": False, "why_not_sought": self.why_consent_not_sought},
            "necessity_and_proportionality": self.necessity,
            "data_minimisation": self.minimisation,
            "agreement_id": agreement_id,
            "decided_by": automated,
        }


@dataclass(frozen=True)
class Draft:
    kind: str
    dedupe_key: str
    recipient: Party
    sender: Party
    title: str
    body: str
    source_event_id: uuid.UUID | None = None
    referral_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None
    reference: str | None = None
    subject_ids: tuple[uuid.UUID, ...] = ()
    person_id: uuid.UUID | None = None
    disclosure: Disclosure | None = None
    details: dict[str, Any] = field(default_factory=dict)
    deliver_by: datetime | None = None
    acknowledge_by: datetime | None = None


# -- how times and facts read -------------------------------------------------------------------


def when(moment: datetime) -> str:
    """A time as a person in England reads it: '18:40 on Friday 23 October 2026'; a working-day
    deadline (local midnight) as 'the end of Monday 23 November 2026'."""
    local = moment.astimezone(LONDON)
    if local.time() == time(0, 0):
        return (local - timedelta(days=1)).strftime("the end of %A %-d %B %Y")
    return local.strftime("%H:%M on %A %-d %B %Y")


def day(value: date) -> str:
    return value.strftime("%-d %B %Y")


def child_name(facts: dict[str, Any]) -> str:
    given = facts.get("given_names") or ""
    return f"{given} {facts.get('family_name', '')}".strip() or "the child"


DECISIONS = {
    "no_further_action": "no further action by children's social care",
    "advice_and_signposting": "advice and signposting to other services",
    "early_help": "an offer of early help to the family",
    "section_17_assessment": (
        "an assessment of the child's needs by children's social care (section 17)"
    ),
    "section_47_strategy_discussion": (
        "a strategy discussion, because there may be a risk of significant harm (section 47)"
    ),
    "already_open_to_a_worker": "passing your referral to the social worker who already works "
    "with the family",
}

OWED = {
    "acknowledgement": "an acknowledgement that your referral was received",
    "decision": "to hear what the MASH has decided to do",
    "feedback": "feedback on what action is being taken",
    "assessment": "to hear that the assessment of the child's needs is complete",
}

DEADLINES = {
    "acknowledgement": "acknowledge the referral to the referrer",
    "decision": "decide the type of response",
    "feedback": "give the referrer feedback",
    "assessment": "complete the assessment",
    "phone_follow_up": "receive the referrer's written confirmation of a telephone referral",
}


# -- to referrers ---------------------------------------------------------------------------------


def chase_advice(reference: str, duty_telephone: str) -> str:
    return (
        f"Please follow this up: call the MASH duty line on {duty_telephone} and quote "
        f"{reference}. If you are still worried about the child, use your partnership's "
        "escalation procedure. If a child is in immediate danger, call 999."
    )


def acknowledged(reference: str, at: datetime, duty_telephone: str) -> tuple[str, str]:
    return (
        f"Your referral {reference} has been received",
        f"The MASH received and acknowledged your referral {reference} at {when(at)}. "
        "They will now decide what to do and tell you. If you do not receive feedback on the "
        f"referral within 3 working days, follow it up: call the MASH duty line on "
        f"{duty_telephone} and quote {reference}. If a child is in immediate danger, call 999.",
    )


def decided(reference: str, decision: str, at: datetime, duty_telephone: str) -> tuple[str, str]:
    plain = DECISIONS.get(decision, decision.replace("_", " "))
    return (
        f"The MASH has decided what to do about referral {reference}",
        f"At {when(at)} the MASH decided on {plain}. They will send you feedback on what is "
        "happening. Keep doing what you normally do to support the child, and tell the MASH "
        f"about anything new: call {duty_telephone} and quote {reference}.",
    )


def feedback_ready(reference: str, at: datetime, portal_url: str) -> tuple[str, str]:
    return (
        f"Feedback on your referral {reference}",
        f"The MASH wrote feedback on your referral {reference} at {when(at)}. Read it in "
        f"Threadline: {portal_url}/referrals. If anything in it worries you, or you have more "
        "to add, contact the MASH and quote the reference.",
    )


def overdue(reference: str, deadline: str, due: datetime, duty_telephone: str) -> tuple[str, str]:
    return (
        f"Referral {reference}: you should have heard from the MASH by now",
        f"You were due {OWED[deadline]} by {when(due)}, and it has not come. "
        + chase_advice(reference, duty_telephone),
    )


def phone_confirmation(reference: str, received: datetime) -> tuple[str, str]:
    return (
        f"Please confirm your telephone referral {reference} in writing",
        f"You made referral {reference} by telephone at {when(received)}. Please confirm it in "
        "writing now (in Threadline, or by secure e-mail to the MASH), quoting "
        f"{reference}, so that the MASH has your concern in your own words.",
    )


def missed(
    reference: str,
    deadline: str,
    due: datetime,
    referrer: str,
    held_by: str | None,
) -> tuple[str, str]:
    holder = (
        f"It is held by {held_by}."
        if held_by
        else "Nobody in the MASH has picked it up yet: it is in the triage queue."
    )
    return (
        f"Missed deadline: {DEADLINES.get(deadline, deadline)} for referral {reference}",
        f"The deadline to {DEADLINES.get(deadline, deadline)} for referral {reference} "
        f"(from {referrer}) was {when(due)}, and it has passed. {holder} Please make sure "
        "someone acts on it today.",
    )


# -- Operation Encompass ------------------------------------------------------------


def encompass_notice(
    facts: dict[str, Any], deliver_by: datetime, police: str, police_telephone: str | None
) -> tuple[str, str]:
    """What the school's DSL needs to support the child that day, and nothing more: who, when,
    whether the child saw or heard it or was hurt, whom to ask. No adult's name, no account of
    what happened, no risk grading."""
    name = child_name(facts)
    born = (
        f" (born {day(date.fromisoformat(facts['date_of_birth']))})"
        if facts.get("date_of_birth")
        else ""
    )
    occurred = datetime.fromisoformat(facts["occurred_at"])
    saw = (
        "The child saw or heard it."
        if facts.get("witnessed")
        else "The police do not think the child saw or heard it."
    )
    hurt = "The child was hurt." if facts.get("injured") else "The child was not hurt."
    ask = f"{police} on {police_telephone}" if police_telephone else f"{police}"
    return (
        f"Operation Encompass: {name} may need support today",
        f"The police were called to a domestic abuse incident at {when(occurred)} where "
        f"{name}{born} was present. {saw} {hurt}\n\n"
        f"Please make sure this reaches the child's key adult before {when(deliver_by)}, so that "
        "someone is ready to support them from the start of the school day. Be there for the "
        "child, and quietly notice how they are; do not question them about the incident. "
        "Record this notification in the child's safeguarding file. If you are worried about "
        "the child, follow your safeguarding procedures and refer to the MASH.\n\n"
        f"Acknowledge this notification in Threadline. For questions, contact {ask} and quote "
        f"incident {facts['incident_reference']}.",
    )


ENCOMPASS_REASONS = {
    "school_unknown": "we do not know which school the child attends",
    "not_in_school": "the child is not in school (for example, they are educated at home or "
    "missing education)",
}


def encompass_to_local_authority(
    facts: dict[str, Any], deliver_by: datetime, reason: str, police: str
) -> tuple[str, str]:
    _, body = encompass_notice(facts, deliver_by, police, None)
    why = ENCOMPASS_REASONS[reason]
    return (
        f"Operation Encompass: no school to tell about {child_name(facts)}",
        f"This notice is sent to the education safeguarding team because {why}. Please find "
        "out where the child is being educated and make sure an adult who knows them is told "
        f"before {when(deliver_by)}.\n\n" + body,
    )


def encompass_escalation(
    school: str, school_telephone: str | None, deliver_by: datetime, message_id: uuid.UUID
) -> tuple[str, str]:
    call = f" on {school_telephone}" if school_telephone else ""
    return (
        f"Operation Encompass: {school} has not acknowledged a police notification",
        f"A police notification about a pupil of {school} was due to be acknowledged by the "
        f"school's designated safeguarding lead before registration at {when(deliver_by)}, and "
        f"it has not been. Please call the school{call} now and ask the DSL to read "
        f"notification {message_id} in Threadline.",
    )


# -- CP-IS ----------------------------------------------------------------------


PLACES = {
    "emergency_department": "an emergency department (A&E)",
    "urgent_treatment_centre": "an urgent treatment centre",
    "walk_in_centre": "a walk-in centre",
    "minor_injuries_unit": "a minor injuries unit",
}

STATUSES = {
    "child_protection_plan": "has a child protection plan",
    # "In care" rather than "looked after" or "LAC" (Language that cares, Salford, seed 002).
    "looked_after": "is in the care of the local authority",
}


def whom_to_call(
    worker: dict[str, Any] | None, team: str, team_telephone: str | None, out_of_hours: str
) -> str:
    parts = []
    if worker and worker.get("name"):
        named = worker["name"]
        if worker.get("team"):
            named += f" ({worker['team']})"
        if worker.get("telephone"):
            named += f" on {worker['telephone']}"
        parts.append(f"the allocated social worker, {named}")
    if team_telephone:
        parts.append(f"{team} on {team_telephone}")
    else:
        parts.append(team)
    return " or ".join(parts) + f"; out of hours, the emergency duty team on {out_of_hours}"


def cpis_alert(
    facts: dict[str, Any], statuses: list[str], hospital: str, call_back: str | None
) -> tuple[str, str]:
    name = child_name(facts)
    held = " and ".join(STATUSES[s] for s in statuses)  # "has a plan and is looked after"
    attended = datetime.fromisoformat(facts["attended_at"])
    place = PLACES.get(facts["setting"], facts["setting"].replace("_", " "))
    injury = "with an injury" if facts.get("injury") else "not for an injury"
    concern = (
        " The clinicians recorded a safeguarding concern."
        if facts.get("safeguarding_concern")
        else ""
    )
    call = f" on {call_back}" if call_back else ""
    return (
        f"{name} attended {place}",
        f"{name}, who {held}, attended {place} at {hospital} at {when(attended)}, "
        f"{injury}.{concern} The attending clinicians have been told that you are involved.\n\n"
        f"Please consider what this means for the child's plan, and contact the hospital{call} "
        "if you need to know more or have something they should know.",
    )


def cpis_answer(
    facts: dict[str, Any], statuses: list[str], since: date, who: str
) -> tuple[str, str]:
    name = child_name(facts)
    held = " and ".join(STATUSES[s] for s in statuses)
    return (
        f"{name} {held}",
        f"{name} {held} (since {day(since)}). Children's social care know the child; "
        f"please talk to them about this attendance: call {who}. Their social worker has been "
        "told that the child attended.",
    )


# -- consent withdrawals ------------------------------------------------------------


def consent_withdrawn(
    withdrawn_at: datetime, earlier: list[tuple[uuid.UUID, str, datetime]], mash_telephone: str
) -> tuple[str, str]:
    listed = "\n".join(
        f'- "{title}" ({when(at)}, notification {mid})' for mid, title, at in earlier
    )
    return (
        "Consent to share information has been withdrawn",
        f"At {when(withdrawn_at)} consent to share information about a child you were told about "
        f"was withdrawn. It concerns:\n{listed}\n\nDo not share this information further on the "
        "strength of that consent. Keep what you hold as your records policy says. If you "
        "believe it still needs to be shared to keep a child safe, you must have another lawful "
        f"basis: talk to your data protection lead or the MASH ({mash_telephone}) first.",
    )
