"""Events for contacts, one type per kind of contact, on ``threadline.contacts.v1`` (see
docs/events.md).

Like ``referral.received`` they carry what linking and the chronology need (the children's
names, dates of birth, identifiers, address and school; the structured facts), never the
narrative: that stays sealed in the referrals service.
"""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from services.referrals.events import ReportedChild
from shared.events import Event, Topic


class ReportedChildPresent(ReportedChild):
    """A child present at a domestic-abuse incident."""

    witnessed: bool
    injured: bool


class ReportedAdult(BaseModel):
    """An adult involved in a domestic-abuse incident, as the police described them.

    ``subject_id`` is assigned by the contacts service when it records the contact (as a
    referral's subjects are); it is ``None`` only on events recorded before adults had one.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    subject_id: UUID | None = None
    given_names: str
    family_name: str
    date_of_birth: date | None = None
    sex: str = "not_known"
    role: str  # victim | suspect | other
    address_lines: list[str] = []
    town: str | None = None
    postcode: str | None = None


class AllocatedWorker(BaseModel):
    """Whom to call about a child on a plan or looked after (CP-IS)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    team: str | None = None
    telephone: str | None = None
    email: str | None = None


class ContactRecorded(Event):
    """What every contact event says: which contact, from whom, received when."""

    contact_id: UUID
    received_at: datetime
    contributor_agency: str
    contributor_organisation_code: str


class DomesticAbuseIncidentRecorded(
    ContactRecorded,
    type="contact.domestic_abuse_incident_recorded",
    topic=Topic.CONTACTS,
    key="contact_id",
    producer="referrals",
):
    """The police recorded a domestic-abuse incident at which children were present."""

    occurred_at: datetime
    incident_reference: str
    risk_level: str  # DASH: standard | medium | high
    force_code: str
    police_station: str | None = None
    officer_name: str
    officer_collar_number: str
    subjects: list[ReportedChildPresent]
    adults: list[ReportedAdult] = []


class UnscheduledCareAttendanceRecorded(
    ContactRecorded,
    type="contact.unscheduled_care_attendance_recorded",
    topic=Topic.CONTACTS,
    key="contact_id",
    producer="referrals",
):
    """A child attended unscheduled care (A&E, urgent treatment centre, walk-in, minor injuries)."""

    attended_at: datetime
    setting: str
    hospital_site_code: str
    injury: bool
    accompanied_by: str | None = None
    safeguarding_concern: bool
    subjects: list[ReportedChild]


class SchoolAttendanceConcernRecorded(
    ContactRecorded,
    type="contact.school_attendance_concern_recorded",
    topic=Topic.CONTACTS,
    key="contact_id",
    producer="referrals",
):
    """A school is concerned about a child's absence, missing education, suspension or exclusion."""

    kind: str  # persistent_absence | missing_education | suspension | permanent_exclusion
    period_start: date
    period_end: date | None = None
    attendance_percentage: float | None = None
    school_urn: str
    subjects: list[ReportedChild]


class ChildProtectionPlanChanged(
    ContactRecorded,
    type="contact.child_protection_plan_changed",
    topic=Topic.CONTACTS,
    key="contact_id",
    producer="referrals",
):
    """A child-protection plan started or ended."""

    change: str  # started | ended
    effective_date: date
    category: str
    local_authority_code: str
    allocated_worker: AllocatedWorker | None = None
    subjects: list[ReportedChild]


class LookedAfterStatusChanged(
    ContactRecorded,
    type="contact.looked_after_status_changed",
    topic=Topic.CONTACTS,
    key="contact_id",
    producer="referrals",
):
    """A child started or stopped being looked after by a local authority."""

    change: str  # started | ended
    effective_date: date
    legal_status: str
    placement_type: str | None = None
    local_authority_code: str
    allocated_worker: AllocatedWorker | None = None
    subjects: list[ReportedChild]
