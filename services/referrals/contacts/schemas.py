"""The contacts API's request and response bodies (never the ORM models).

Each type of contact has its own schema, chosen by ``type``. The contributing organisation and its
kind of agency come from the access token, not the body. Narratives (what the officer saw, the
presenting complaint, the school's account) are sealed when stored and never put on an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    Field,
    RootModel,
    StringConstraints,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)

from services.referrals.schemas import (
    AddressIn,
    Email,
    PastDate,
    SchoolURN,
    Sex,
    Strict,
    SubjectIn,
    Text200,
)

#: Agency systems' clocks drift: an instant this far ahead of ours is not "in the future".
CLOCK_SKEW = timedelta(minutes=5)

Summary = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
IncidentReference = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9/_.-]{0,39}$")
]
CollarNumber = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z0-9]{1,10}$")
]
ForceCode = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{2}$")]
OdsSiteCode = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z0-9]{3,5}$")
]
LocalAuthorityCode = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{3}$")]


def _instant_not_in_future(value: datetime) -> datetime:
    if value > datetime.now(UTC) + CLOCK_SKEW:
        raise ValueError("must not be in the future")
    return value.astimezone(UTC)


PastInstant = Annotated[AwareDatetime, AfterValidator(_instant_not_in_future)]


class ContactType(StrEnum):
    POLICE_DOMESTIC_ABUSE_INCIDENT = "police_domestic_abuse_incident"
    UNSCHEDULED_CARE_ATTENDANCE = "unscheduled_care_attendance"
    SCHOOL_ATTENDANCE_CONCERN = "school_attendance_concern"
    CHILD_PROTECTION_PLAN = "child_protection_plan"
    LOOKED_AFTER_STATUS = "looked_after_status"


class DashRiskLevel(StrEnum):
    """The DASH risk assessment's grading of the incident."""

    STANDARD = "standard"
    MEDIUM = "medium"
    HIGH = "high"


class AdultRole(StrEnum):
    VICTIM = "victim"
    SUSPECT = "suspect"
    OTHER = "other"


class CareSetting(StrEnum):
    EMERGENCY_DEPARTMENT = "emergency_department"
    URGENT_TREATMENT_CENTRE = "urgent_treatment_centre"
    WALK_IN_CENTRE = "walk_in_centre"
    MINOR_INJURIES_UNIT = "minor_injuries_unit"


class AttendanceConcernKind(StrEnum):
    PERSISTENT_ABSENCE = "persistent_absence"
    MISSING_EDUCATION = "missing_education"
    SUSPENSION = "suspension"
    PERMANENT_EXCLUSION = "permanent_exclusion"


class StatusChange(StrEnum):
    STARTED = "started"
    ENDED = "ended"


class PlanCategory(StrEnum):
    NEGLECT = "neglect"
    PHYSICAL_ABUSE = "physical_abuse"
    EMOTIONAL_ABUSE = "emotional_abuse"
    SEXUAL_ABUSE = "sexual_abuse"
    MULTIPLE = "multiple"


class LegalStatus(StrEnum):
    SECTION_20 = "section_20"
    CARE_ORDER = "care_order"
    INTERIM_CARE_ORDER = "interim_care_order"
    PLACEMENT_ORDER = "placement_order"
    POLICE_PROTECTION = "police_protection"
    EMERGENCY_PROTECTION_ORDER = "emergency_protection_order"


class PlacementType(StrEnum):
    FOSTER_CARE = "foster_care"
    KINSHIP_CARE = "kinship_care"
    CHILDRENS_HOME = "childrens_home"
    SECURE_CHILDRENS_HOME = "secure_childrens_home"
    PLACED_WITH_PARENTS = "placed_with_parents"
    SUPPORTED_ACCOMMODATION = "supported_accommodation"
    PLACED_FOR_ADOPTION = "placed_for_adoption"
    OTHER = "other"


# -- the children a contact is about ---------------------------------------------------------


class ContactSubjectIn(SubjectIn):
    """A child the contact is about, described as in a referral (a contact has no own words)."""


class ChildPresentIn(ContactSubjectIn):
    """A child present at a domestic-abuse incident."""

    witnessed: bool = Field(description="Did the child see or hear the incident?")
    injured: bool


def _born(subjects: list[Any], what: str) -> None:
    for index, subject in enumerate(subjects):
        if subject.unborn is not None:
            raise ValueError(f"[{index}] is an unborn child, who cannot {what}")


# -- the structured facts of each type (stored, announced, returned) -------------------------


class OfficerIn(Strict):
    name: Text200
    collar_number: CollarNumber


class AdultIn(Strict):
    given_names: Text200
    family_name: Text200
    date_of_birth: PastDate | None = None
    sex: Sex = Sex.NOT_KNOWN
    role: AdultRole
    address: AddressIn | None = Field(
        default=None, description="Where the adult lives, if the police know it"
    )


class DomesticAbuseIncident(Strict):
    occurred_at: PastInstant
    incident_reference: IncidentReference
    risk_level: DashRiskLevel
    officer: OfficerIn
    police_station: Text200 | None = None
    force_code: ForceCode = Field(description="Home Office police force code (two digits)")
    adults: Sequence[AdultIn] = Field(default_factory=list, max_length=20)


class UnscheduledCareAttendance(Strict):
    attended_at: PastInstant
    setting: CareSetting
    hospital_site_code: OdsSiteCode = Field(description="ODS code of the site attended")
    injury: bool
    accompanied_by: Text200 | None = Field(default=None, description="e.g. mother, neighbour")
    safeguarding_concern: bool


class SchoolAttendanceConcern(Strict):
    kind: AttendanceConcernKind
    period_start: PastDate
    period_end: date | None = Field(
        default=None, description="Only a suspension's end may be in the future"
    )
    attendance_percentage: float | None = Field(default=None, ge=0, le=100)
    school_urn: SchoolURN

    @field_validator("period_end")
    @classmethod
    def _period(cls, end: date | None, info: ValidationInfo) -> date | None:
        if end is None:
            return end
        start = info.data.get("period_start")
        if start is not None and end < start:
            raise ValueError("must not be before period_start")
        if end > date.today() and info.data.get("kind") is not AttendanceConcernKind.SUSPENSION:
            raise ValueError("must not be in the future (only a suspension's end is known ahead)")
        return end


Telephone = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9][0-9 ()-]{5,23}$")
]


class AllocatedWorker(Strict):
    """Whom to call about the child: the allocated social worker and their team (CP-IS)."""

    name: Text200
    team: Text200 | None = None
    telephone: Telephone | None = None
    email: Email | None = None


class ChildProtectionPlan(Strict):
    change: StatusChange
    effective_date: PastDate
    category: PlanCategory
    local_authority_code: LocalAuthorityCode = Field(
        description="The DfE three-digit number of the local authority that holds the plan"
    )
    allocated_worker: AllocatedWorker | None = Field(
        default=None, description="Whom health professionals should call about the child"
    )


class LookedAfterStatus(Strict):
    change: StatusChange
    effective_date: PastDate
    legal_status: LegalStatus
    placement_type: PlacementType | None = Field(
        default=None, validate_default=True, description="Required when the status starts"
    )
    local_authority_code: LocalAuthorityCode = Field(
        description="The DfE three-digit number of the local authority looking after the child"
    )
    allocated_worker: AllocatedWorker | None = Field(
        default=None, description="Whom health professionals should call about the child"
    )

    @field_validator("placement_type")
    @classmethod
    def _placed(cls, placement: PlacementType | None, info: ValidationInfo) -> PlacementType | None:
        if placement is None and info.data.get("change") is StatusChange.STARTED:
            raise ValueError("is required when a child starts to be looked after")
        return placement


# -- requests --------------------------------------------------------------------------------


class DomesticAbuseIncidentIn(DomesticAbuseIncident):
    type: Literal[ContactType.POLICE_DOMESTIC_ABUSE_INCIDENT]
    subjects: list[ChildPresentIn] = Field(min_length=1, max_length=20)
    narrative: Summary = Field(description="What the officers found; sealed, never on an event")


class UnscheduledCareAttendanceIn(UnscheduledCareAttendance):
    type: Literal[ContactType.UNSCHEDULED_CARE_ATTENDANCE]
    subjects: list[ContactSubjectIn] = Field(min_length=1, max_length=20)
    presenting_complaint: ShortText = Field(description="Sealed, never on an event")

    @field_validator("subjects")
    @classmethod
    def _attended(cls, subjects: list[ContactSubjectIn]) -> list[ContactSubjectIn]:
        _born(subjects, "attend unscheduled care")
        return subjects


class SchoolAttendanceConcernIn(SchoolAttendanceConcern):
    type: Literal[ContactType.SCHOOL_ATTENDANCE_CONCERN]
    subjects: list[ContactSubjectIn] = Field(min_length=1, max_length=20)
    narrative: Summary | None = Field(default=None, description="Sealed, never on an event")

    @field_validator("subjects")
    @classmethod
    def _pupils(cls, subjects: list[ContactSubjectIn]) -> list[ContactSubjectIn]:
        _born(subjects, "be a pupil")
        return subjects


class ChildProtectionPlanIn(ChildProtectionPlan):
    """A plan may start before birth, so an unborn child is accepted."""

    type: Literal[ContactType.CHILD_PROTECTION_PLAN]
    subjects: list[ContactSubjectIn] = Field(min_length=1, max_length=20)


class LookedAfterStatusIn(LookedAfterStatus):
    type: Literal[ContactType.LOOKED_AFTER_STATUS]
    subjects: list[ContactSubjectIn] = Field(min_length=1, max_length=20)

    @field_validator("subjects")
    @classmethod
    def _in_care(cls, subjects: list[ContactSubjectIn]) -> list[ContactSubjectIn]:
        _born(subjects, "be looked after")
        return subjects


ContactIn = (
    DomesticAbuseIncidentIn
    | UnscheduledCareAttendanceIn
    | SchoolAttendanceConcernIn
    | ChildProtectionPlanIn
    | LookedAfterStatusIn
)

_SCHEMAS: dict[ContactType, type[Strict]] = {
    ContactType.POLICE_DOMESTIC_ABUSE_INCIDENT: DomesticAbuseIncidentIn,
    ContactType.UNSCHEDULED_CARE_ATTENDANCE: UnscheduledCareAttendanceIn,
    ContactType.SCHOOL_ATTENDANCE_CONCERN: SchoolAttendanceConcernIn,
    ContactType.CHILD_PROTECTION_PLAN: ChildProtectionPlanIn,
    ContactType.LOOKED_AFTER_STATUS: LookedAfterStatusIn,
}


class _Typed(BaseModel):
    type: ContactType


def _by_type(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validate with the schema ``type`` names, so that errors name fields as sent
    (``subjects[0].upn``, not ``police_domestic_abuse_incident.subjects[0].upn``) and an unknown
    type is an error on ``type`` that lists the known ones."""
    if not isinstance(value, dict):
        return handler(value)
    return _SCHEMAS[_Typed.model_validate(value).type].model_validate(value)


class ContactCreate(
    RootModel[Annotated[ContactIn, Field(discriminator="type"), WrapValidator(_by_type)]]
):
    """A contact of any type; ``type`` chooses its schema."""


# -- responses -------------------------------------------------------------------------------


class ContactSubjectOut(BaseModel):
    subject_id: UUID
    given_names: str | None
    family_name: str
    other_names: list[str]
    date_of_birth: date | None
    estimated_age_years: int | None
    unborn_expected_date: date | None
    sex: Sex
    nhs_number: str | None
    upn: str | None
    postcode: str | None
    school_urn: str | None
    school_name: str | None


class ChildPresentOut(ContactSubjectOut):
    witnessed: bool
    injured: bool


class Recorded(BaseModel):
    """Who contributed the contact, and when it was received (from the token and the clock)."""

    id: UUID
    received_at: datetime
    organisation_code: str
    agency: str


class AdultOut(AdultIn):
    subject_id: UUID | None = Field(
        default=None,
        description="Assigned when the contact was recorded (None only for contacts recorded "
        "before adults had one)",
    )


class DomesticAbuseIncidentOut(DomesticAbuseIncident, Recorded):
    type: Literal[ContactType.POLICE_DOMESTIC_ABUSE_INCIDENT]
    adults: Sequence[AdultOut]
    subjects: list[ChildPresentOut]
    narrative: str | None = Field(description="None once every child's copy has been erased")


class UnscheduledCareAttendanceOut(UnscheduledCareAttendance, Recorded):
    type: Literal[ContactType.UNSCHEDULED_CARE_ATTENDANCE]
    subjects: list[ContactSubjectOut]
    presenting_complaint: str | None


class SchoolAttendanceConcernOut(SchoolAttendanceConcern, Recorded):
    type: Literal[ContactType.SCHOOL_ATTENDANCE_CONCERN]
    subjects: list[ContactSubjectOut]
    narrative: str | None


class ChildProtectionPlanOut(ChildProtectionPlan, Recorded):
    type: Literal[ContactType.CHILD_PROTECTION_PLAN]
    subjects: list[ContactSubjectOut]


class LookedAfterStatusOut(LookedAfterStatus, Recorded):
    type: Literal[ContactType.LOOKED_AFTER_STATUS]
    subjects: list[ContactSubjectOut]


class ContactOut(
    RootModel[
        Annotated[
            DomesticAbuseIncidentOut
            | UnscheduledCareAttendanceOut
            | SchoolAttendanceConcernOut
            | ChildProtectionPlanOut
            | LookedAfterStatusOut,
            Field(discriminator="type"),
        ]
    ]
):
    """A contact as stored, its narrative opened."""
