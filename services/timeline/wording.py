"""What each event says in a chronology, in plain English for the MASH worker who reads it.

"Use chronologies and genograms (family trees). This is particularly important to help
understand complex and/or large families" (Derby). A line says when, what, which agency and who;
the structured facts beside it are what the pattern flags read.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.consent.events import ConsentWithdrawn
from services.referrals.contacts.events import (
    ChildProtectionPlanChanged,
    ContactRecorded,
    DomesticAbuseIncidentRecorded,
    LookedAfterStatusChanged,
    SchoolAttendanceConcernRecorded,
    UnscheduledCareAttendanceRecorded,
)
from services.referrals.events import (
    DeadlineMissed,
    ReferralAcknowledged,
    ReferralAckOverdue,
    ReferralAssessmentCompleted,
    ReferralAssessmentOverdue,
    ReferralDecided,
    ReferralDecisionOverdue,
    ReferralFeedbackOverdue,
    ReferralFeedbackSent,
    ReferralPhoneFollowUpDue,
    ReferralRated,
    ReferralReceived,
    ReferralReopened,
    ReportedChild,
)
from services.timeline.rows import EntryRow
from shared.calendar import LONDON

AGENCIES = {
    "school": "school",
    "health": "health",
    "police": "police",
    "local_authority": "local authority",
    "mash": "MASH",
}
RAISED_VIA = {"phone": "by telephone", "online": "online", "portal": "through the portal"}
DECISIONS = {
    "no_further_action": "no further action",
    "advice_and_signposting": "advice and signposting",
    "early_help": "early help",
    "section_17_assessment": "a child in need assessment (section 17)",
    "section_47_strategy_discussion": "a strategy discussion (section 47)",
    "already_open_to_a_worker": "already open to a worker",
}
SETTINGS = {
    "emergency_department": "A&E",
    "urgent_treatment_centre": "an urgent treatment centre",
    "walk_in_centre": "a walk-in centre",
    "minor_injuries_unit": "a minor injuries unit",
}
ATTENDANCE = {
    "persistent_absence": "Persistent absence from school",
    "missing_education": "Missing from education",
    "suspension": "Suspended from school",
    "permanent_exclusion": "Permanently excluded from school",
}
RELATIONSHIPS = {
    "mother": "mother",
    "father": "father",
    "non_resident_parent": "non-resident parent",
    "step_parent": "step-parent",
    "partner_of_parent": "partner of a parent",
    "sibling": "sibling",
    "half_sibling": "half-sibling",
    "grandparent": "grandparent",
    "other": "family member",
}


def words(slug: str) -> str:
    return slug.replace("_", " ")


def when(moment: datetime) -> str:
    return moment.astimezone(LONDON).strftime("%-d %B %Y at %H:%M")


def name_of(child: ReportedChild) -> str:
    if child.given_names:
        return f"{child.given_names} {child.family_name}"
    if child.unborn_expected_date is not None:
        return f"unborn baby {child.family_name}"
    return f"a child {child.family_name}"


def _list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _contact(email: str | None, phone: str | None) -> str | None:
    found = [value for value in (phone, email) if value]
    return " · ".join(found) or None


def referral_entries(event: ReferralReceived) -> list[EntryRow]:
    agency = AGENCIES.get(event.referrer_agency, words(event.referrer_agency))
    organisation = event.referrer_organisation_name or event.referrer_organisation_code
    categories = [words(c) for c in event.concern_categories]
    who = (
        f"{event.referrer_name}, {event.referrer_role}"
        if event.referrer_name and event.referrer_role
        else event.referrer_name
    )
    facts: dict[str, Any] = {
        "reference": event.reference,
        "categories": list(event.concern_categories),
        "immediate_risk": event.immediate_risk,
        "raised_via": event.raised_via,
    }
    base = (
        f"Concerns: {_list(categories)}. "
        f"Raised {RAISED_VIA.get(event.raised_via, event.raised_via)}"
        f"{'; the referrer said the child is at immediate risk' if event.immediate_risk else ''}."
    )
    names = {child.subject_id: name_of(child) for child in event.children}
    rows = []
    for child in event.children:
        others = [names[c.subject_id] for c in event.children if c.subject_id != child.subject_id]
        also = f" Also about {_list(others)}." if others else ""
        unborn = child.date_of_birth is None and child.unborn_expected_date is not None
        rows.append(
            EntryRow(
                subject_id=child.subject_id,
                occurred_at=event.received_at,
                kind="referral",
                title=(
                    f"{'Pre-birth referral' if unborn else 'Referral'} {event.reference} "
                    f"from {agency} ({organisation})"
                ),
                summary=base + also,
                agency=event.referrer_agency,
                organisation_code=event.referrer_organisation_code,
                who=who,
                contact=_contact(event.referrer_email, event.referrer_phone),
                source_type="referral",
                source_id=event.referral_id,
                source_reference=event.reference,
                facts={**facts, "subject_role": "child", "unborn": unborn},
            )
        )
    for member in event.family_members:
        related = [
            f"{RELATIONSHIPS.get(r.relationship, words(r.relationship))} of "
            f"{names.get(r.child_subject_id, 'a child')}"
            for r in member.relationships
        ]
        rows.append(
            EntryRow(
                subject_id=member.subject_id,
                occurred_at=event.received_at,
                kind="referral",
                title=f"Named in referral {event.reference} from {agency} ({organisation})",
                summary=f"Named as {_list(related) or 'a family member'}. {base}",
                agency=event.referrer_agency,
                organisation_code=event.referrer_organisation_code,
                who=who,
                contact=_contact(event.referrer_email, event.referrer_phone),
                source_type="referral",
                source_id=event.referral_id,
                source_reference=event.reference,
                facts={**facts, "subject_role": "family_member"},
            )
        )
    return rows


@dataclass(frozen=True)
class Lifecycle:
    """A referral's step, written once and repeated for each child it is about."""

    occurred_at: datetime
    kind: str
    title: str
    summary: str
    who: str | None
    facts: dict[str, Any]

    def row(self, subject_id: uuid.UUID, referral_id: uuid.UUID, reference: str) -> EntryRow:
        return EntryRow(
            subject_id=subject_id,
            occurred_at=self.occurred_at,
            kind=self.kind,
            title=self.title.format(reference=reference),
            summary=self.summary,
            agency="mash",
            organisation_code="MASH",
            who=self.who,
            source_type="referral",
            source_id=referral_id,
            source_reference=reference,
            facts=self.facts,
        )


def _in_time(within: bool) -> str:
    return "within its deadline" if within else "after its deadline had passed"


def acknowledged(event: ReferralAcknowledged) -> Lifecycle:
    return Lifecycle(
        event.acknowledged_at,
        "referral_acknowledged",
        "MASH acknowledged referral {reference}",
        f"Acknowledged to the referrer {_in_time(event.within_deadline)}.",
        event.acknowledged_by,
        {"within_deadline": event.within_deadline},
    )


def rated(event: ReferralRated) -> Lifecycle:
    return Lifecycle(
        event.rated_at,
        "referral_rated",
        "MASH rated referral {reference} " + event.rag.upper(),
        f"RAG rating: {event.rag.upper()}. The reason is in the referral record.",
        event.rated_by,
        {"rag": event.rag},
    )


def decided(event: ReferralDecided) -> Lifecycle:
    decision = DECISIONS.get(event.decision, words(event.decision))
    return Lifecycle(
        event.decided_at,
        "referral_decided",
        "MASH decided referral {reference}: " + decision,
        f"Decision: {decision}, made {_in_time(event.within_deadline)}."
        + (
            f" The assessment is due by {when(event.assessment_due_at)}."
            if event.assessment_due_at
            else ""
        ),
        event.decided_by,
        {"decision": event.decision, "within_deadline": event.within_deadline},
    )


def feedback(event: ReferralFeedbackSent) -> Lifecycle:
    return Lifecycle(
        event.sent_at,
        "referral_feedback",
        "Feedback on referral {reference} sent to the referrer",
        f"The referrer ({event.referrer_organisation_code}) was told the outcome "
        f"{_in_time(event.within_deadline)}.",
        None,
        {"within_deadline": event.within_deadline},
    )


def assessment_completed(event: ReferralAssessmentCompleted) -> Lifecycle:
    return Lifecycle(
        event.completed_at,
        "assessment_completed",
        "Assessment completed (referral {reference})",
        f"The assessment was completed {_in_time(event.within_deadline)}.",
        None,
        {"within_deadline": event.within_deadline},
    )


def reopened(event: ReferralReopened) -> Lifecycle:
    return Lifecycle(
        event.reopened_at,
        "referral_reopened",
        "Referral {reference} reopened",
        f"Reopened; a new decision is due by {when(event.decision_due_at)} and feedback by "
        f"{when(event.feedback_due_at)}.",
        event.reopened_by,
        {},
    )


MISSED_TITLES: dict[type, tuple[str, str]] = {
    ReferralAckOverdue: ("acknowledgement", "Referral {reference} not acknowledged in time"),
    ReferralDecisionOverdue: ("decision", "No decision on referral {reference} in time"),
    ReferralFeedbackOverdue: ("feedback", "No feedback to the referrer on {reference} in time"),
    ReferralAssessmentOverdue: ("assessment", "Assessment for referral {reference} overdue"),
    ReferralPhoneFollowUpDue: (
        "written_follow_up",
        "Written follow-up of telephone referral {reference} due",
    ),
}


def missed(event: DeadlineMissed | ReferralAckOverdue) -> tuple[str, Lifecycle]:
    name, title = MISSED_TITLES[type(event)]
    due = getattr(event, "due_at", None) or getattr(event, "acknowledgement_due_at", None)
    return name, Lifecycle(
        event.detected_at,
        "deadline_missed",
        title,
        f"The {words(name)} was due by {when(due)}; the MASH manager was told."
        if due
        else "The MASH manager was told.",
        None,
        {"deadline": name},
    )


def _contact_row(
    event: ContactRecorded,
    *,
    subject_id: uuid.UUID,
    occurred_at: datetime,
    kind: str,
    title: str,
    summary: str,
    facts: dict[str, Any],
    who: str | None = None,
    contact: str | None = None,
    source_reference: str | None = None,
) -> EntryRow:
    return EntryRow(
        subject_id=subject_id,
        occurred_at=occurred_at,
        kind=kind,
        title=title,
        summary=summary,
        agency=event.contributor_agency,
        organisation_code=event.contributor_organisation_code,
        source_type="contact",
        source_id=event.contact_id,
        who=who,
        contact=contact,
        source_reference=source_reference,
        facts=facts,
    )


def contact_entries(
    event: DomesticAbuseIncidentRecorded
    | UnscheduledCareAttendanceRecorded
    | SchoolAttendanceConcernRecorded
    | ChildProtectionPlanChanged
    | LookedAfterStatusChanged,
) -> list[EntryRow]:
    rows: list[EntryRow] = []
    if isinstance(event, DomesticAbuseIncidentRecorded):
        adults = [f"{words(a.role)} {a.given_names} {a.family_name}".strip() for a in event.adults]
        children = {c.subject_id: name_of(c) for c in event.subjects}
        for present_child in event.subjects:
            present = "witnessed it" if present_child.witnessed else "was present"
            rows.append(
                _contact_row(
                    event,
                    subject_id=present_child.subject_id,
                    occurred_at=event.occurred_at,
                    kind="domestic_abuse_incident",
                    title=f"Police: domestic abuse incident, {event.risk_level} risk (DASH)",
                    summary=(
                        f"{name_of(present_child)} {present}"
                        f"{' and was injured' if present_child.injured else ''}. "
                        f"Incident {event.incident_reference}, {when(event.occurred_at)}."
                        + (f" Adults involved: {_list(adults)}." if adults else "")
                        + (
                            " Other children present: "
                            + _list(
                                [n for s, n in children.items() if s != present_child.subject_id]
                            )
                            + "."
                            if len(children) > 1
                            else ""
                        )
                    ),
                    who=f"{event.officer_name} (collar number {event.officer_collar_number})",
                    contact=event.police_station,
                    source_reference=event.incident_reference,
                    facts={
                        "risk_level": event.risk_level,
                        "witnessed": present_child.witnessed,
                        "injured": present_child.injured,
                        "child_present": True,
                    },
                )
            )
        for adult in event.adults:
            adult_id = adult.subject_id
            if adult_id is None:
                continue
            rows.append(
                _contact_row(
                    event,
                    subject_id=adult_id,
                    occurred_at=event.occurred_at,
                    kind="domestic_abuse_incident",
                    title=f"Police: domestic abuse incident, {event.risk_level} risk (DASH)",
                    summary=(
                        f"Recorded as {words(adult.role)}. Incident {event.incident_reference}, "
                        f"{when(event.occurred_at)}. Children present: "
                        f"{_list(list(children.values()))}."
                    ),
                    who=f"{event.officer_name} (collar number {event.officer_collar_number})",
                    contact=event.police_station,
                    source_reference=event.incident_reference,
                    facts={"risk_level": event.risk_level, "adult_role": adult.role},
                )
            )
    elif isinstance(event, UnscheduledCareAttendanceRecorded):
        setting = SETTINGS.get(event.setting, words(event.setting))
        for child in event.subjects:
            rows.append(
                _contact_row(
                    event,
                    subject_id=child.subject_id,
                    occurred_at=event.attended_at,
                    kind="unscheduled_care",
                    title=f"Health: attended {setting} ({event.hospital_site_code})",
                    summary=(
                        f"{'With an injury' if event.injury else 'No injury recorded'}"
                        + (f"; came with {event.accompanied_by}" if event.accompanied_by else "")
                        + (
                            "; staff raised a safeguarding concern"
                            if event.safeguarding_concern
                            else ""
                        )
                        + "."
                    ),
                    who=event.hospital_site_code,
                    facts={
                        "hospital": event.hospital_site_code,
                        "setting": event.setting,
                        "injury": event.injury,
                        "safeguarding_concern": event.safeguarding_concern,
                    },
                )
            )
    elif isinstance(event, SchoolAttendanceConcernRecorded):
        title = ATTENDANCE.get(event.kind, words(event.kind).capitalize())
        period = event.period_start.strftime("%-d %B %Y") + (
            f" to {event.period_end.strftime('%-d %B %Y')}" if event.period_end else " onwards"
        )
        for child in event.subjects:
            rows.append(
                _contact_row(
                    event,
                    subject_id=child.subject_id,
                    occurred_at=event.received_at,
                    kind="school_attendance",
                    title=f"School: {title.lower()}",
                    summary=f"{title} from {period}"
                    + (
                        f"; attendance {event.attendance_percentage:g}%"
                        if event.attendance_percentage is not None
                        else ""
                    )
                    + ".",
                    who=f"School URN {event.school_urn}",
                    facts={"attendance_kind": event.kind, "school_urn": event.school_urn},
                )
            )
    elif isinstance(event, ChildProtectionPlanChanged):
        for child in event.subjects:
            rows.append(
                _contact_row(
                    event,
                    subject_id=child.subject_id,
                    occurred_at=datetime.combine(
                        event.effective_date, datetime.min.time(), tzinfo=LONDON
                    ),
                    kind="child_protection_plan",
                    title=f"Child protection plan {event.change} ({words(event.category)})",
                    summary=(
                        f"A child protection plan under the category {words(event.category)} "
                        f"{event.change} on {event.effective_date.strftime('%-d %B %Y')}."
                    ),
                    who=f"Local authority {event.local_authority_code}",
                    facts={"change": event.change, "category": event.category},
                )
            )
    elif isinstance(event, LookedAfterStatusChanged):
        for child in event.subjects:
            started = event.change == "started"
            rows.append(
                _contact_row(
                    event,
                    subject_id=child.subject_id,
                    occurred_at=datetime.combine(
                        event.effective_date, datetime.min.time(), tzinfo=LONDON
                    ),
                    kind="looked_after",
                    title="Became looked after" if started else "Stopped being looked after",
                    summary=(
                        f"Legal status {words(event.legal_status)}"
                        + (
                            f"; placement {words(event.placement_type)}"
                            if event.placement_type
                            else ""
                        )
                        + f"; from {event.effective_date.strftime('%-d %B %Y')}."
                    ),
                    who=f"Local authority {event.local_authority_code}",
                    facts={"change": event.change, "legal_status": event.legal_status},
                )
            )
    return rows


def consent_withdrawn(event: ConsentWithdrawn) -> EntryRow:
    return EntryRow(
        subject_id=event.subject_id,
        occurred_at=event.withdrawn_at,
        kind="consent_withdrawn",
        title="Consent withdrawn",
        summary=(
            f"Consent to share {_list([words(c) for c in event.data_categories])} with "
            f"{_list([words(r) for r in event.recipients])} was withdrawn (by the "
            f"{words(event.withdrawn_by_role)}). Later sharing needs another lawful basis."
        ),
        agency="consent",
        organisation_code="DPO",
        source_type="consent",
        source_id=event.consent_id,
        facts={"purposes": list(event.purposes)},
    )
