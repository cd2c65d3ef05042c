"""The agency API's request and response bodies (never the ORM models).

The referring organisation and its kind of agency come from the access token, not the body: an
agency cannot post a referral in another organisation's name.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.disclosures import Override
from shared.identifiers import UPN, NHSNumber, UKPostcode
from shared.schemas import RequestModel

Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Narrative = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20000)]
Verbatim = Annotated[str, StringConstraints(min_length=1, max_length=20000)]  # never trimmed
Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Phone = Annotated[str, StringConstraints(max_length=40, pattern=r"^\+?[0-9 ()-]{6,40}$")]
SchoolURN = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]


def _not_in_future(value: date) -> date:
    if value > date.today():
        raise ValueError("must not be in the future")
    return value


PastDate = Annotated[date, AfterValidator(_not_in_future)]


class AgencyKind(StrEnum):
    SCHOOL = "school"
    HEALTH = "health"
    POLICE = "police"
    LOCAL_AUTHORITY = "local_authority"
    MASH = "mash"
    OTHER = "other"


class RaisedVia(StrEnum):
    PHONE = "phone"
    ONLINE = "online"
    PORTAL = "portal"


class ConcernCategory(StrEnum):
    NEGLECT = "neglect"
    PHYSICAL_ABUSE = "physical_abuse"
    EMOTIONAL_ABUSE = "emotional_abuse"
    SEXUAL_ABUSE = "sexual_abuse"
    CHILD_SEXUAL_EXPLOITATION = "child_sexual_exploitation"
    CHILD_CRIMINAL_EXPLOITATION = "child_criminal_exploitation"
    DOMESTIC_ABUSE = "domestic_abuse"
    PARENTAL_MENTAL_HEALTH = "parental_mental_health"
    SUBSTANCE_MISUSE = "substance_misuse"
    MISSING_FROM_HOME = "missing_from_home"
    MISSING_FROM_EDUCATION = "missing_from_education"
    ONLINE_HARM = "online_harm"
    SELF_HARM = "self_harm"
    FGM = "fgm"
    RADICALISATION = "radicalisation"
    OTHER = "other"


class Sex(StrEnum):
    FEMALE = "female"
    MALE = "male"
    INDETERMINATE = "indeterminate"
    NOT_KNOWN = "not_known"


class Relationship(StrEnum):
    MOTHER = "mother"
    FATHER = "father"
    NON_RESIDENT_PARENT = "non_resident_parent"
    STEP_PARENT = "step_parent"
    PARTNER_OF_PARENT = "partner_of_parent"
    SIBLING = "sibling"
    HALF_SIBLING = "half_sibling"
    GRANDPARENT = "grandparent"
    OTHER = "other"


class Rag(StrEnum):
    RED = "red"
    AMBER = "amber"
    GREEN = "green"


class Decision(StrEnum):
    """The type of response (Working Together to Safeguard Children 2023)."""

    NO_FURTHER_ACTION = "no_further_action"
    ADVICE_AND_SIGNPOSTING = "advice_and_signposting"
    EARLY_HELP = "early_help"
    SECTION_17 = "section_17_assessment"
    SECTION_47_STRATEGY = "section_47_strategy_discussion"
    ALREADY_OPEN = "already_open_to_a_worker"


class ConsentStatus(StrEnum):
    AGREED = "agreed"
    REFUSED = "refused"
    NOT_ASKED = "not_asked"


class Strict(RequestModel):
    """Unknown fields are refused (422 naming them), so a misspelt field is never silently lost."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ReferrerIn(Strict):
    organisation_name: Text200
    name: Text200
    role: Text200
    email: Email | None = None
    phone: Phone | None = None
    raised_via: RaisedVia

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        if self.email is None and self.phone is None:
            raise ValueError("give an email or a phone number, so the MASH can reach the referrer")
        return self


class AddressIn(Strict):
    lines: list[Text200] = Field(min_length=1, max_length=4)
    town: Text200 | None = None
    postcode: UKPostcode | None = None


class SchoolIn(Strict):
    urn: SchoolURN | None = None
    name: Text200 | None = None

    @model_validator(mode="after")
    def _named(self) -> Self:
        if self.urn is None and self.name is None:
            raise ValueError("give the school's URN or its name")
        return self


class UnbornIn(Strict):
    expected_date: date = Field(description="Expected date of delivery")

    @model_validator(mode="after")
    def _plausible(self) -> Self:
        days_ahead = (self.expected_date - date.today()).days
        if not -31 <= days_ahead <= 300:
            raise ValueError("an expected date must fall within the next ten months")
        return self


class SubjectIn(Strict):
    """A child as an agency describes them, in a referral or a contact."""

    given_names: Text200 | None = Field(
        default=None, description="May be absent for an unborn child"
    )
    family_name: Text200
    other_names: list[Text200] = Field(default_factory=list, max_length=10)
    date_of_birth: PastDate | None = None
    estimated_age_years: int | None = Field(default=None, ge=0, le=17)
    unborn: UnbornIn | None = None
    sex: Sex = Sex.NOT_KNOWN
    nhs_number: NHSNumber | None = None
    upn: UPN | None = None
    address: AddressIn | None = None
    school: SchoolIn | None = None

    @model_validator(mode="after")
    def _age_and_name(self) -> Self:
        given = [
            name
            for name, value in (
                ("date_of_birth", self.date_of_birth),
                ("estimated_age_years", self.estimated_age_years),
                ("unborn", self.unborn),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of date_of_birth, estimated_age_years or unborn"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.unborn is None and self.given_names is None:
            raise ValueError("given_names is required for a child who has been born")
        if self.unborn is not None and (self.upn is not None or self.school is not None):
            raise ValueError("an unborn child cannot have a UPN or a school")
        return self

    def columns(self) -> dict[str, Any]:
        """The values of ``models.SubjectColumns`` for this child."""
        return {
            "given_names": self.given_names,
            "family_name": self.family_name,
            "other_names": list(self.other_names),
            "date_of_birth": self.date_of_birth,
            "estimated_age_years": self.estimated_age_years,
            "unborn_expected_date": self.unborn.expected_date if self.unborn else None,
            "sex": self.sex.value,
            "nhs_number": self.nhs_number,
            "upn": self.upn,
            "address_lines": list(self.address.lines) if self.address else [],
            "town": self.address.town if self.address else None,
            "postcode": self.address.postcode if self.address else None,
            "school_urn": self.school.urn if self.school else None,
            "school_name": self.school.name if self.school else None,
        }


class ChildIn(SubjectIn):
    own_words: Verbatim | None = Field(
        default=None, description="What the child said, verbatim, in the child's own words"
    )


class RelationshipIn(Strict):
    child: int = Field(ge=0, description="Index of the child in `children`")
    relationship: Relationship
    parental_responsibility: bool
    lives_with_child: bool


class FamilyMemberIn(Strict):
    given_names: Text200
    family_name: Text200
    other_names: list[Text200] = Field(default_factory=list, max_length=10)
    date_of_birth: PastDate | None = None
    sex: Sex = Sex.NOT_KNOWN
    nhs_number: NHSNumber | None = None
    address: AddressIn | None = None
    phone: Phone | None = None
    relationships: list[RelationshipIn] = Field(min_length=1, max_length=20)


class ConcernIn(Strict):
    categories: list[ConcernCategory] = Field(min_length=1, max_length=16)
    what_happened: Narrative
    actions_taken: Narrative | None = Field(
        default=None, description="What the referrer has already done"
    )
    immediate_risk: bool = Field(description="Is any child at immediate risk of harm?")

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("each concern category may be given once")
        return self


class PartyConsent(Strict):
    status: ConsentStatus
    why_not_asked: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None

    @model_validator(mode="after")
    def _reason(self) -> Self:
        if self.status is ConsentStatus.NOT_ASKED and not self.why_not_asked:
            raise ValueError(
                "say why consent was not asked (e.g. asking would put the child at risk)"
            )
        if self.status is not ConsentStatus.NOT_ASKED and self.why_not_asked:
            raise ValueError("why_not_asked is only for status not_asked")
        return self


class ChildConsent(PartyConsent):
    competent: bool = Field(description="Is the child competent to consent for themselves?")


class ConsentIn(Strict):
    parents: PartyConsent
    child: ChildConsent | None = Field(
        default=None, description="Required when any child is competent to consent"
    )


class ReferralCreate(Strict):
    referrer: ReferrerIn
    children: list[ChildIn] = Field(min_length=1, max_length=20)
    family_members: list[FamilyMemberIn] = Field(default_factory=list, max_length=30)
    concern: ConcernIn
    consent: ConsentIn

    @field_validator("family_members")
    @classmethod
    def _relationships_name_real_children(
        cls, members: list[FamilyMemberIn], info: ValidationInfo
    ) -> list[FamilyMemberIn]:
        children = info.data.get("children")
        if children is None:
            return members  # the children failed validation; that error is reported already
        for member_index, member in enumerate(members):
            for relation_index, relation in enumerate(member.relationships):
                if relation.child >= len(children):
                    raise ValueError(
                        f"[{member_index}].relationships[{relation_index}].child is "
                        f"{relation.child}, but children are numbered 0 to {len(children) - 1}"
                    )
        return members


# -- responses -------------------------------------------------------------------------------


class ChildOut(BaseModel):
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
    own_words: str | None


class DeadlineOut(BaseModel):
    kind: str
    started_at: datetime
    due_at: datetime
    status: str  # pending | met | met_late | missed | cancelled
    met_at: datetime | None
    missed_at: datetime | None
    cancelled_at: datetime | None


class FeedbackOut(BaseModel):
    id: int
    given_at: datetime
    given_by: str
    message: str | None  # None once every child's key has been destroyed (erasure)
    # The consent service's decision to share it (None for feedback given before decisions).
    disclosure_decision_id: UUID | None = None


class ActionOut(BaseModel):
    id: int
    action: str
    at: datetime
    by: str
    by_organisation: str
    value: str | None
    text: str | None


class ReferralSummary(BaseModel):
    id: UUID
    reference: str
    status: str
    received_at: datetime
    referrer_organisation_code: str
    concern_categories: list[str]
    immediate_risk: bool
    children: int
    rag: str | None
    decision: str | None
    deadlines: list[DeadlineOut]


class ReferralOut(BaseModel):
    id: UUID
    reference: str
    status: str
    received_at: datetime
    acknowledgement_due_at: datetime
    acknowledged_at: datetime | None
    referrer_organisation_code: str
    referrer_agency: str
    concern_categories: list[str]
    what_happened: str | None
    actions_taken: str | None
    immediate_risk: bool
    consent: ConsentIn
    children: list[ChildOut]
    family_members: list[FamilyMemberIn]
    rag: str | None = Field(description="Shown to the MASH only")
    decision: str | None
    decided_at: datetime | None
    assessment_completed_at: datetime | None
    feedback: list[FeedbackOut]
    deadlines: list[DeadlineOut]
    history: list[ActionOut] | None = Field(
        description="Every MASH action with its reason; shown to the MASH only"
    )


Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)]


class AcknowledgementIn(Strict):
    acknowledged_by: Text200


class RatingIn(Strict):
    rag: Rag
    reason: Reason
    rated_by: Text200


class DecisionIn(Strict):
    decision: Decision
    reason: Reason = Field(description="Why; for no further action, say why it is safe to close")
    decided_by: Text200


class FeedbackIn(Strict):
    message: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)]
    given_by: Text200
    override: Override | None = Field(
        default=None,
        description="Share despite a refusal or withdrawal of consent that covers this feedback: "
        "the basis, the reason and (by the partnership's policy) the approving manager",
    )


class AssessmentCompletionIn(Strict):
    completed_by: Text200


class ReopenIn(Strict):
    reason: Reason
    reopened_by: Text200


class ReferralPage(BaseModel):
    items: list[ReferralSummary]
    next_cursor: str | None
